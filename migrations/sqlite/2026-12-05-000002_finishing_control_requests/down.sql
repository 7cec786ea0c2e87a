DROP INDEX apply_operations_claim_idx;
ALTER TABLE apply_operations DROP COLUMN claimable;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
    'pending', 'stopped', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) VIRTUAL;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
ALTER TABLE apply_operations DROP COLUMN failure_seq;
ALTER TABLE applies DROP COLUMN failure_seq;
ALTER TABLE apply_control_requests DROP COLUMN result;
ALTER TABLE apply_control_requests DROP COLUMN releases_through;
ALTER TABLE apply_control_requests DROP COLUMN requested_by;
