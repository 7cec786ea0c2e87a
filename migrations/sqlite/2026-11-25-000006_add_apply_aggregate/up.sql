-- The apply aggregate (SQLite tree); see the MySQL tree. A SQLite migration runs in one transaction.
ALTER TABLE applies ADD COLUMN max_concurrency BIGINT NULL;
ALTER TABLE applies ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 10;
ALTER TABLE applies ADD COLUMN requested_by VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE apply_operations ADD COLUMN database_name VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE apply_operations ADD COLUMN environment VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE apply_operations ADD COLUMN holds_target BOOLEAN NULL;
UPDATE apply_operations
   SET database_name = COALESCE((SELECT a.database_name FROM applies a WHERE a.id = apply_operations.apply_id), ''),
       environment = COALESCE((SELECT a.environment FROM applies a WHERE a.id = apply_operations.apply_id), ''),
       holds_target = CASE
           WHEN NOT EXISTS (SELECT 1 FROM applies a WHERE a.id = apply_operations.apply_id) THEN NULL
           WHEN state IN ('completed', 'cancelled', 'reverted') THEN NULL
           WHEN state = 'failed' AND NOT EXISTS (
               SELECT 1 FROM apply_operations s
                WHERE s.apply_id = apply_operations.apply_id
                  AND s.state NOT IN ('completed', 'failed', 'cancelled', 'reverted')) THEN NULL
           ELSE 1 END;
CREATE UNIQUE INDEX apply_operations_target_key
    ON apply_operations (database_name, environment, deployment, holds_target);
