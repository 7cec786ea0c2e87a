-- Every text column compares exactly, as SQLite's BINARY collation does: NO PAD binary collations.
--
-- utf8mb4_bin (the tables' first collation) is PAD SPACE: 'east' = 'east ' is true on MySQL/MariaDB and
-- false on SQLite, so a lookup by deployment or identifier, and the lease fence's token and owner
-- comparison, matched rows on one backend that they did not match on the other. Under a NO PAD
-- collation trailing spaces are significant, so every comparison of a stored key (deployment,
-- identifier, lease owner and token, states and kinds) means the same on every backend.
--
-- MariaDB (10.2+) names it utf8mb4_nopad_bin; MySQL 8.0 names it utf8mb4_0900_bin. Each table is
-- converted by one ALTER (all or nothing), run through PREPARE only while one of its text columns still
-- has another collation, so a run cut off half-way can be repeated.
SET @applyops_collation = IF(VERSION() LIKE '%MariaDB%', 'utf8mb4_nopad_bin', 'utf8mb4_0900_bin');
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> @applyops_collation) > 0,
    CONCAT('ALTER TABLE applies CONVERT TO CHARACTER SET utf8mb4 COLLATE ', @applyops_collation),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> @applyops_collation) > 0,
    CONCAT('ALTER TABLE apply_operations CONVERT TO CHARACTER SET utf8mb4 COLLATE ', @applyops_collation),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'tasks' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> @applyops_collation) > 0,
    CONCAT('ALTER TABLE tasks CONVERT TO CHARACTER SET utf8mb4 COLLATE ', @applyops_collation),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_control_requests' AND COLLATION_NAME IS NOT NULL
        AND COLLATION_NAME <> @applyops_collation) > 0,
    CONCAT('ALTER TABLE apply_control_requests CONVERT TO CHARACTER SET utf8mb4 COLLATE ', @applyops_collation),
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
