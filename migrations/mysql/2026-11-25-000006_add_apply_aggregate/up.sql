-- The apply aggregate (spec apply-aggregate.md):
-- * applies.max_concurrency (NULL = unlimited), applies.max_attempts (the retry budget, moved here from
--   the worker's claim options) and applies.requested_by;
-- * apply_operations.database_name and .environment, copied from the apply at creation and never
--   changed, and apply_operations.holds_target: 1 while the operation holds its target (the triple
--   database_name, environment, deployment), NULL once it no longer does. The unique key
--   apply_operations_target_key on (database_name, environment, deployment, holds_target) lets one
--   operation at a time hold a target: NULLs never collide.
-- Every step is guarded or idempotent, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies' AND COLUMN_NAME = 'max_attempts') = 0,
    'ALTER TABLE applies ADD COLUMN max_concurrency BIGINT NULL, ADD COLUMN max_attempts INT NOT NULL DEFAULT 10, ADD COLUMN requested_by VARCHAR(255) NOT NULL DEFAULT ''''',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'holds_target') = 0,
    'ALTER TABLE apply_operations ADD COLUMN database_name VARCHAR(255) NOT NULL DEFAULT '''', ADD COLUMN environment VARCHAR(255) NOT NULL DEFAULT '''', ADD COLUMN holds_target BOOLEAN NULL',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
-- Copy the apply's names; an operation whose apply is gone holds nothing. A failed operation holds its
-- target while its apply has an unsettled operation left.
UPDATE apply_operations o
  LEFT JOIN applies a ON a.id = o.apply_id
  LEFT JOIN (SELECT apply_id,
                    SUM(state NOT IN ('completed', 'failed', 'cancelled', 'reverted')) AS unsettled
               FROM apply_operations GROUP BY apply_id) u ON u.apply_id = o.apply_id
   SET o.database_name = COALESCE(a.database_name, ''),
       o.environment = COALESCE(a.environment, ''),
       o.holds_target = CASE
           WHEN a.id IS NULL THEN NULL
           WHEN o.state IN ('completed', 'cancelled', 'reverted') THEN NULL
           WHEN o.state = 'failed' AND u.unsettled = 0 THEN NULL
           ELSE 1 END;
-- Two operations holding one target cannot both keep it: fail with the list, before the key is built.
SET @applyops_clash = (
    SELECT GROUP_CONCAT(CONCAT(database_name, '/', environment, '/', deployment, ' by operations ', ids)
                        SEPARATOR '; ')
      FROM (SELECT database_name, environment, deployment, GROUP_CONCAT(id ORDER BY id) AS ids
              FROM apply_operations WHERE holds_target = 1
             GROUP BY database_name, environment, deployment HAVING COUNT(*) > 1) clashes);
SET @applyops_ddl = IF(@applyops_clash IS NULL, 'DO 0',
    CONCAT('SIGNAL SQLSTATE ''45000'' SET MESSAGE_TEXT = ',
           QUOTE(LEFT(CONCAT('targets held twice: ', @applyops_clash), 128))));
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND INDEX_NAME = 'apply_operations_target_key') = 0,
    'CREATE UNIQUE INDEX apply_operations_target_key ON apply_operations (database_name, environment, deployment, holds_target)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
