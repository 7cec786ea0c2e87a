SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND COLUMN_NAME = 'copy_claim') = 1,
    'ALTER TABLE apply_operations
        ADD KEY apply_operations_claim_idx (claimable, created_at, id),
        ADD KEY apply_operations_scope_claim_idx (claimable, deployment, created_at, id),
        DROP INDEX apply_operations_copy_walk_idx,
        DROP INDEX apply_operations_cutover_walk_idx,
        DROP INDEX apply_operations_copy_scope_idx,
        DROP INDEX apply_operations_cutover_scope_idx,
        DROP COLUMN copy_walk,
        DROP COLUMN cutover_walk,
        DROP COLUMN copy_claim,
        DROP COLUMN cutover_claim',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
