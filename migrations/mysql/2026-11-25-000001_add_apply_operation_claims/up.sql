-- apply_operations: what the worker contract needs (the worker contract): the policies that
-- order a rollout, the retry counter and the lease.
--
-- * claimable is generated from state: 1 for the states a claim can take (pending, stopped,
--   failed_retryable and the active states), 0 for the rest. apply_operations_claim_idx on
--   (claimable, created_at, id) lets the claim query walk only live rows, oldest first, with no
--   filesort: a plain (state, created_at, id) index cannot, because the claim reads many states at
--   once and their ranges are not in (created_at, id) order together. VIRTUAL: nothing is stored per
--   row but the index entry. No NOT NULL: MariaDB does not accept it on a generated column.
-- * The ALTER is one statement, so it is all or nothing. It runs through PREPARE only when
--   lease_token is missing: MySQL commits DDL at once, so a runner cut off before diesel recorded the
--   version can run this again (MySQL 8 has no ADD COLUMN IF NOT EXISTS).
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'lease_token') = 0,
    'ALTER TABLE apply_operations
        ADD COLUMN cutover_policy VARCHAR(32) NOT NULL DEFAULT ''rolling'',
        ADD COLUMN on_failure VARCHAR(32) NOT NULL DEFAULT ''halt'',
        ADD COLUMN attempt INT NOT NULL DEFAULT 0,
        ADD COLUMN lease_owner VARCHAR(255) NOT NULL DEFAULT '''',
        ADD COLUMN lease_token VARCHAR(64) NOT NULL DEFAULT '''',
        ADD COLUMN lease_acquired_at DATETIME(6) NULL,
        ADD COLUMN lease_expires_at DATETIME(6) NULL,
        ADD COLUMN claimable BOOLEAN AS (state IN (
            ''pending'', ''stopped'', ''failed_retryable'',
            ''running'', ''running_degraded'', ''resuming'', ''waiting_for_deploy'', ''waiting_for_cutover'',
            ''recovering'', ''cutting_over'', ''revert_window'', ''reverting'', ''skipping_revert'',
            ''preparing_branch'', ''applying_branch_changes'', ''validating_branch'',
            ''creating_deploy_request'', ''validating_deploy_request'')) VIRTUAL,
        ADD KEY apply_operations_claim_idx (claimable, created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
