-- claimable goes first: PostgreSQL refuses to drop a column a generated column reads.
DROP INDEX IF EXISTS apply_operations_claim_idx;
ALTER TABLE apply_operations
    DROP COLUMN IF EXISTS claimable,
    DROP COLUMN IF EXISTS lease_expires_at,
    DROP COLUMN IF EXISTS lease_acquired_at,
    DROP COLUMN IF EXISTS lease_token,
    DROP COLUMN IF EXISTS lease_owner,
    DROP COLUMN IF EXISTS attempt,
    DROP COLUMN IF EXISTS on_failure,
    DROP COLUMN IF EXISTS cutover_policy;
