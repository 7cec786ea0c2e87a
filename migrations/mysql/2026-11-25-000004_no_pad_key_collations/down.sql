-- Back to the PAD SPACE utf8mb4_bin the tables were created with.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> 'utf8mb4_bin') > 0,
    CONCAT('ALTER TABLE applies CONVERT TO CHARACTER SET utf8mb4 COLLATE ', 'utf8mb4_bin'),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> 'utf8mb4_bin') > 0,
    CONCAT('ALTER TABLE apply_operations CONVERT TO CHARACTER SET utf8mb4 COLLATE ', 'utf8mb4_bin'),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'tasks' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> 'utf8mb4_bin') > 0,
    CONCAT('ALTER TABLE tasks CONVERT TO CHARACTER SET utf8mb4 COLLATE ', 'utf8mb4_bin'),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_control_requests' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> 'utf8mb4_bin') > 0,
    CONCAT('ALTER TABLE apply_control_requests CONVERT TO CHARACTER SET utf8mb4 COLLATE ', 'utf8mb4_bin'),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
