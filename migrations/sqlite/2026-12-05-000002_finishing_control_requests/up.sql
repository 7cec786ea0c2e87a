-- Control requests that finish what they start (SQLite tree); see the MySQL tree.
ALTER TABLE apply_control_requests ADD COLUMN requested_by VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE apply_control_requests ADD COLUMN releases_through BIGINT NULL;
ALTER TABLE apply_control_requests ADD COLUMN result TEXT NULL;
ALTER TABLE applies ADD COLUMN failure_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE apply_operations ADD COLUMN failure_seq BIGINT NULL;
DROP INDEX apply_operations_claim_idx;
ALTER TABLE apply_operations DROP COLUMN claimable;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
    'pending', 'stopped', 'paused', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) VIRTUAL;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
UPDATE apply_operations
   SET failure_seq = (SELECT COUNT(*) FROM apply_operations f
                       WHERE f.apply_id = apply_operations.apply_id
                         AND f.state IN ('failed', 'reverted')
                         AND (f.created_at < apply_operations.created_at
                              OR (f.created_at = apply_operations.created_at AND f.id <= apply_operations.id)))
 WHERE state IN ('failed', 'reverted');
UPDATE applies
   SET failure_seq = COALESCE((SELECT MAX(failure_seq) FROM apply_operations o WHERE o.apply_id = applies.id), 0);
UPDATE apply_control_requests
   SET releases_through = (SELECT a.failure_seq FROM applies a WHERE a.id = apply_control_requests.apply_id),
       completed_at = COALESCE(completed_at, strftime('%Y-%m-%d %H:%M:%f', 'now')),
       status = 'completed'
 WHERE kind = 'release' AND status IN ('pending', 'completed');
UPDATE apply_operations
   SET lease_owner = '', lease_token = '', lease_acquired_at = NULL, lease_expires_at = NULL
 WHERE state IN ('pending', 'stopped', 'paused', 'failed_retryable') AND lease_token <> '';
