-- apply_operations (SQLite tree): policies, retry counter, lease and the generated claimable column.
-- See the MySQL tree for why. SQLite can add a VIRTUAL generated column with ALTER TABLE.
ALTER TABLE apply_operations ADD COLUMN cutover_policy VARCHAR(32) NOT NULL DEFAULT 'rolling';
ALTER TABLE apply_operations ADD COLUMN on_failure VARCHAR(32) NOT NULL DEFAULT 'halt';
ALTER TABLE apply_operations ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE apply_operations ADD COLUMN lease_owner VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE apply_operations ADD COLUMN lease_token VARCHAR(64) NOT NULL DEFAULT '';
ALTER TABLE apply_operations ADD COLUMN lease_acquired_at TIMESTAMP NULL;
ALTER TABLE apply_operations ADD COLUMN lease_expires_at TIMESTAMP NULL;
ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
    'pending', 'stopped', 'failed_retryable',
    'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
    'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
    'preparing_branch', 'applying_branch_changes', 'validating_branch',
    'creating_deploy_request', 'validating_deploy_request')) VIRTUAL;
CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
