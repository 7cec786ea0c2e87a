-- The claim rules are decided when an apply is written (see the MySQL tree): copy_claim and
-- cutover_claim store what each claim does with the row ('undecided' for rows written outside the
-- store), and copy_walk / cutover_walk (VIRTUAL, as `claimable` is here) key the claims' walks.
ALTER TABLE apply_operations ADD COLUMN copy_claim VARCHAR(16) DEFAULT 'undecided';
ALTER TABLE apply_operations ADD COLUMN cutover_claim VARCHAR(16) DEFAULT 'undecided';
ALTER TABLE apply_operations ADD COLUMN copy_walk BOOLEAN
    GENERATED ALWAYS AS (lease_token = '' AND copy_claim IS NOT NULL) VIRTUAL;
ALTER TABLE apply_operations ADD COLUMN cutover_walk BOOLEAN
    GENERATED ALWAYS AS (lease_token = '' AND cutover_claim IS NOT NULL) VIRTUAL;
CREATE INDEX apply_operations_copy_walk_idx ON apply_operations (copy_walk, created_at, id);
CREATE INDEX apply_operations_cutover_walk_idx ON apply_operations (cutover_walk, created_at, id);
CREATE INDEX apply_operations_copy_scope_idx
    ON apply_operations (copy_walk, deployment, created_at, id);
CREATE INDEX apply_operations_cutover_scope_idx
    ON apply_operations (cutover_walk, deployment, created_at, id);
DROP INDEX IF EXISTS apply_operations_claim_idx;
DROP INDEX IF EXISTS apply_operations_scope_claim_idx;
UPDATE apply_operations SET copy_claim = NULL, cutover_claim = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted');
