-- Back to VIRTUAL generated columns.
ALTER TABLE apply_control_requests
    DROP INDEX apply_control_requests_pending_key,
    DROP COLUMN pending_scope,
    ADD COLUMN pending_scope BIGINT AS (IF(status = 'pending', COALESCE(apply_operation_id, 0), NULL)) VIRTUAL
        AFTER completed_at,
    ADD UNIQUE KEY apply_control_requests_pending_key (apply_id, kind, pending_scope);
ALTER TABLE apply_operations
    DROP INDEX apply_operations_claim_idx,
    DROP COLUMN claimable,
    ADD COLUMN claimable BOOLEAN AS (lease_token = '' AND state IN (
        'pending', 'stopped', 'paused', 'failed_retryable',
        'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
        'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
        'preparing_branch', 'applying_branch_changes', 'validating_branch',
        'creating_deploy_request', 'validating_deploy_request')) VIRTUAL,
    ADD KEY apply_operations_claim_idx (claimable, created_at, id);
