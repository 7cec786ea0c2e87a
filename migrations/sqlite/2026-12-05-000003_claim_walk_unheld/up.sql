-- Held rows out of the claim walk (SQLite tree); see the MySQL tree.
DROP INDEX apply_operations_claim_idx;
ALTER TABLE apply_operations DROP COLUMN claimable;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (lease_token = '' AND state IN (
    'pending', 'stopped', 'paused', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) VIRTUAL;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
CREATE INDEX apply_operations_lease_expiry_idx ON apply_operations (lease_expires_at);
UPDATE apply_operations SET lease_expires_at = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted') AND lease_expires_at IS NOT NULL;
