-- Control requests that finish what they start (PostgreSQL tree); see the MySQL tree for the columns
-- and the backfill.
-- * apply_control_requests.requested_by, .releases_through and .result; applies.failure_seq and
--   apply_operations.failure_seq.
-- * claimable now includes 'paused'. A generated column's expression cannot be changed in place on
--   PostgreSQL 15, so it is dropped and added again (at the end of the table, as in the MySQL tree)
--   with its index, guarded on its expression, so running this again after the next migration (which
--   redefines it again, still with 'paused') changes nothing.
-- * Backfill, idempotent as in the MySQL tree: failed and reverted operations are numbered in claim
--   order per apply and each apply gets its last number; every release (pending or completed) gets
--   releases_through = its apply's number and a pending one is completed; leases left on pending,
--   stopped, paused and failed_retryable operations are cleared.
ALTER TABLE apply_control_requests
    ADD COLUMN IF NOT EXISTS requested_by VARCHAR(255) COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS releases_through BIGINT NULL,
    ADD COLUMN IF NOT EXISTS result TEXT COLLATE "C" NULL;
ALTER TABLE applies ADD COLUMN IF NOT EXISTS failure_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apply_operations ADD COLUMN IF NOT EXISTS failure_seq BIGINT NULL;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'apply_operations'
                      AND column_name = 'claimable' AND generation_expression LIKE '%paused%') THEN
        DROP INDEX IF EXISTS apply_operations_claim_idx;
        ALTER TABLE apply_operations DROP COLUMN IF EXISTS claimable;
        ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
            'pending', 'stopped', 'paused', 'failed_retryable',
            'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
            'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
            'preparing_branch', 'applying_branch_changes', 'validating_branch',
            'creating_deploy_request', 'validating_deploy_request')) STORED;
        CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
    END IF;
END
$$;
UPDATE apply_operations o
   SET failure_seq = f.seq
  FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY apply_id ORDER BY created_at, id) AS seq
          FROM apply_operations WHERE state IN ('failed', 'reverted')) f
 WHERE f.id = o.id AND o.failure_seq IS NULL;
UPDATE applies a
   SET failure_seq = f.seq
  FROM (SELECT apply_id, MAX(failure_seq) AS seq FROM apply_operations GROUP BY apply_id) f
 WHERE f.apply_id = a.id AND f.seq IS NOT NULL AND a.failure_seq < f.seq;
UPDATE apply_control_requests r
   SET releases_through = a.failure_seq,
       completed_at = COALESCE(r.completed_at, now() AT TIME ZONE 'UTC'),
       status = 'completed'
  FROM applies a
 WHERE a.id = r.apply_id
   AND r.kind = 'release' AND r.status IN ('pending', 'completed') AND r.releases_through IS NULL;
UPDATE apply_operations
   SET lease_owner = '', lease_token = '', lease_acquired_at = NULL, lease_expires_at = NULL
 WHERE state IN ('pending', 'stopped', 'paused', 'failed_retryable') AND lease_token <> '';
