-- The walk indexes on claimable come back; the claim decisions and their walk columns go (the
-- generated ones first: PostgreSQL refuses to drop a column a generated column reads).
CREATE INDEX IF NOT EXISTS apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
CREATE INDEX IF NOT EXISTS apply_operations_scope_claim_idx
    ON apply_operations (claimable, deployment, created_at, id);
DROP INDEX IF EXISTS apply_operations_copy_walk_idx;
DROP INDEX IF EXISTS apply_operations_cutover_walk_idx;
DROP INDEX IF EXISTS apply_operations_copy_scope_idx;
DROP INDEX IF EXISTS apply_operations_cutover_scope_idx;
ALTER TABLE apply_operations
    DROP COLUMN IF EXISTS copy_walk,
    DROP COLUMN IF EXISTS cutover_walk,
    DROP COLUMN IF EXISTS copy_claim,
    DROP COLUMN IF EXISTS cutover_claim;
