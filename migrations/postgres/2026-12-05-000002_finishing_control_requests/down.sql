-- Back to revision 1: paused leaves the claimable column (dropped and added again, at the end of the
-- table, as in the MySQL tree), the latch and request columns go.
DROP INDEX IF EXISTS apply_operations_claim_idx;
ALTER TABLE apply_operations
    DROP COLUMN IF EXISTS claimable,
    DROP COLUMN IF EXISTS failure_seq;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
    'pending', 'stopped', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) STORED;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
ALTER TABLE applies DROP COLUMN IF EXISTS failure_seq;
ALTER TABLE apply_control_requests
    DROP COLUMN IF EXISTS result,
    DROP COLUMN IF EXISTS releases_through,
    DROP COLUMN IF EXISTS requested_by;
