-- The two indexed generated columns become STORED (they were VIRTUAL): apply_operations.claimable
-- (in apply_operations_claim_idx) and apply_control_requests.pending_scope (in
-- apply_control_requests_pending_key). To purge an old entry of an index on a VIRTUAL column,
-- InnoDB's purge threads open the table and compute the column again; on MariaDB 10.11 the memory
-- they allocate for that (outside Memory_used) piled up under the claims' write rate: a Galera node
-- grew by 1 GB in seconds (jemalloc heap profile: alloc_root under InnoDB's purge tasks). A STORED
-- value is read from the row instead. Each is dropped and added again with its index in one ALTER,
-- guarded on the column being VIRTUAL, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND COLUMN_NAME = 'claimable' AND EXTRA LIKE '%VIRTUAL%') = 1,
    'ALTER TABLE apply_operations
        DROP INDEX apply_operations_claim_idx,
        DROP COLUMN claimable,
        ADD COLUMN claimable BOOLEAN AS (lease_token = '''' AND state IN (
            ''pending'', ''stopped'', ''paused'', ''failed_retryable'',
            ''running'', ''running_degraded'', ''resuming'', ''waiting_for_deploy'', ''waiting_for_cutover'',
            ''recovering'', ''cutting_over'', ''revert_window'', ''reverting'', ''skipping_revert'',
            ''preparing_branch'', ''applying_branch_changes'', ''validating_branch'',
            ''creating_deploy_request'', ''validating_deploy_request'')) STORED,
        ADD KEY apply_operations_claim_idx (claimable, created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_control_requests'
        AND COLUMN_NAME = 'pending_scope' AND EXTRA LIKE '%VIRTUAL%') = 1,
    'ALTER TABLE apply_control_requests
        DROP INDEX apply_control_requests_pending_key,
        DROP COLUMN pending_scope,
        ADD COLUMN pending_scope BIGINT AS (IF(status = ''pending'', COALESCE(apply_operation_id, 0), NULL)) STORED
            AFTER completed_at,
        ADD UNIQUE KEY apply_control_requests_pending_key (apply_id, kind, pending_scope)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
