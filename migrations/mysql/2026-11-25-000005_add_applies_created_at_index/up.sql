-- applies_created_at_id_idx serves applies::list: newest first by (created_at, id), with keyset
-- pagination (`created_at < ? OR (created_at = ? AND id < ?)`), read backwards without a filesort.
-- Re-runnable: created only when missing (MySQL 8 has no CREATE INDEX IF NOT EXISTS).
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies'
        AND INDEX_NAME = 'applies_created_at_id_idx') = 0,
    'CREATE INDEX applies_created_at_id_idx ON applies (created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
