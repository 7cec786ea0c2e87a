-- Held rows out of the claim walk (worker contract revision 2, point 14):
-- * claimable is 1 only for an operation in a claimable state that nobody holds (lease_token empty):
--   apply_operations_claim_idx (claimable, created_at, id) then holds only unheld rows, and a claim
--   walking it never reads past operations under a lease;
-- * apply_operations_lease_expiry_idx (lease_expires_at) is how a claim finds expired leases
--   (recovery), before the walk;
-- * a settled operation keeps its holder's token and owner but not an expiry, so the expiry index
--   holds only leases of operations still in flight.
-- The generated column is dropped and added again with its index in one ALTER, guarded on its
-- expression, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'claimable'
        AND GENERATION_EXPRESSION LIKE '%lease_token%') = 0,
    'ALTER TABLE apply_operations
        DROP INDEX apply_operations_claim_idx,
        DROP COLUMN claimable,
        ADD COLUMN claimable BOOLEAN AS (lease_token = '''' AND state IN (
            ''pending'', ''stopped'', ''paused'', ''failed_retryable'',
            ''running'', ''running_degraded'', ''resuming'', ''waiting_for_deploy'', ''waiting_for_cutover'',
            ''recovering'', ''cutting_over'', ''revert_window'', ''reverting'', ''skipping_revert'',
            ''preparing_branch'', ''applying_branch_changes'', ''validating_branch'',
            ''creating_deploy_request'', ''validating_deploy_request'')) VIRTUAL,
        ADD KEY apply_operations_claim_idx (claimable, created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND INDEX_NAME = 'apply_operations_lease_expiry_idx') = 0,
    'CREATE INDEX apply_operations_lease_expiry_idx ON apply_operations (lease_expires_at)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
UPDATE apply_operations SET lease_expires_at = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted') AND lease_expires_at IS NOT NULL;
