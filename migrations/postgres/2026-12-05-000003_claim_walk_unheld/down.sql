-- Back to a claim walk over held and unheld rows alike (the expiries cleared on settled operations
-- stay cleared: no claim reads them).
DROP INDEX IF EXISTS apply_operations_lease_expiry_idx;
DROP INDEX IF EXISTS apply_operations_claim_idx;
ALTER TABLE apply_operations DROP COLUMN IF EXISTS claimable;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
    'pending', 'stopped', 'paused', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) STORED;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
