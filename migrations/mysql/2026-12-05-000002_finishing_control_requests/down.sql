-- Back to revision 1: paused leaves the claimable column, the latch and request columns go.
ALTER TABLE apply_operations
    DROP INDEX apply_operations_claim_idx,
    DROP COLUMN claimable,
    ADD COLUMN claimable BOOLEAN AS (state IN (
        'pending', 'stopped', 'failed_retryable',
        'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
        'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
        'preparing_branch', 'applying_branch_changes', 'validating_branch',
        'creating_deploy_request', 'validating_deploy_request')) VIRTUAL,
    ADD KEY apply_operations_claim_idx (claimable, created_at, id),
    DROP COLUMN failure_seq;
ALTER TABLE applies DROP COLUMN failure_seq;
ALTER TABLE apply_control_requests DROP COLUMN result, DROP COLUMN releases_through, DROP COLUMN requested_by;
