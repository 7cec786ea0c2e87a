DROP INDEX IF EXISTS apply_operations_copy_walk_idx;
DROP INDEX IF EXISTS apply_operations_cutover_walk_idx;
DROP INDEX IF EXISTS apply_operations_copy_scope_idx;
DROP INDEX IF EXISTS apply_operations_cutover_scope_idx;
ALTER TABLE apply_operations DROP COLUMN copy_walk;
ALTER TABLE apply_operations DROP COLUMN cutover_walk;
ALTER TABLE apply_operations DROP COLUMN copy_claim;
ALTER TABLE apply_operations DROP COLUMN cutover_claim;
CREATE INDEX IF NOT EXISTS apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
CREATE INDEX IF NOT EXISTS apply_operations_scope_claim_idx
    ON apply_operations (claimable, deployment, created_at, id);
