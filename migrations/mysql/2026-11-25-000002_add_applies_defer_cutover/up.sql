-- applies.defer_cutover: when true, automatic cutover is off and each cutover of a barrier or
-- parallel operation waits for an operator's cutover request. Re-runnable like the previous migration.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies' AND COLUMN_NAME = 'defer_cutover') = 0,
    'ALTER TABLE applies ADD COLUMN defer_cutover BOOLEAN NOT NULL DEFAULT FALSE',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
