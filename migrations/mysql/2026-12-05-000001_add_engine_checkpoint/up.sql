-- The copy engine's checkpoint (worker contract revision 2, point 15):
-- * apply_operations.engine_state: NULL or up to 65,535 bytes (BLOB), opaque to the store: where the
--   copy engine resumes after a recovery claim;
-- * apply_operations.external_id: NULL or the remote system's id for this operation, unique across
--   operations (apply_operations_external_id_key; NULLs never collide).
-- Guarded, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'external_id') = 0,
    'ALTER TABLE apply_operations ADD COLUMN engine_state BLOB NULL, ADD COLUMN external_id VARCHAR(255) NULL',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND INDEX_NAME = 'apply_operations_external_id_key') = 0,
    'CREATE UNIQUE INDEX apply_operations_external_id_key ON apply_operations (external_id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
