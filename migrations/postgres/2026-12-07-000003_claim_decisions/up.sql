-- The claim rules are decided when an apply is written (PostgreSQL tree); see the MySQL tree.
-- copy_claim and cutover_claim store what each claim does with the row (NULL: never; 'undecided', the
-- default: a row written outside the store). copy_walk / cutover_walk are STORED generated BOOLEANs,
-- TRUE for an unheld row (empty lease token) that the claim takes; they read only plain columns
-- (PostgreSQL refuses a generated column that reads another). Each claim walks its own index, with a
-- deployment between for scoped claims; the old walk indexes on claimable go. Existing rows get
-- 'undecided' from the default; settled ones are set to NULL at once.
ALTER TABLE apply_operations
    ADD COLUMN IF NOT EXISTS copy_claim VARCHAR(16) COLLATE "C" NULL DEFAULT 'undecided',
    ADD COLUMN IF NOT EXISTS cutover_claim VARCHAR(16) COLLATE "C" NULL DEFAULT 'undecided',
    ADD COLUMN IF NOT EXISTS copy_walk BOOLEAN
        GENERATED ALWAYS AS (lease_token = '' AND copy_claim IS NOT NULL) STORED,
    ADD COLUMN IF NOT EXISTS cutover_walk BOOLEAN
        GENERATED ALWAYS AS (lease_token = '' AND cutover_claim IS NOT NULL) STORED;
CREATE INDEX IF NOT EXISTS apply_operations_copy_walk_idx
    ON apply_operations (copy_walk, created_at, id);
CREATE INDEX IF NOT EXISTS apply_operations_cutover_walk_idx
    ON apply_operations (cutover_walk, created_at, id);
CREATE INDEX IF NOT EXISTS apply_operations_copy_scope_idx
    ON apply_operations (copy_walk, deployment, created_at, id);
CREATE INDEX IF NOT EXISTS apply_operations_cutover_scope_idx
    ON apply_operations (cutover_walk, deployment, created_at, id);
DROP INDEX IF EXISTS apply_operations_claim_idx;
DROP INDEX IF EXISTS apply_operations_scope_claim_idx;
UPDATE apply_operations SET copy_claim = NULL, cutover_claim = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted')
   AND (copy_claim IS NOT NULL OR cutover_claim IS NOT NULL);
