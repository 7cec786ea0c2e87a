-- The apply aggregate (PostgreSQL tree); see the MySQL tree. applies gets max_concurrency,
-- max_attempts and requested_by; apply_operations gets database_name and environment (copied from the
-- apply) and holds_target (TRUE while the operation holds its target, NULL once it does not), with the
-- unique key apply_operations_target_key on (database_name, environment, deployment, holds_target):
-- NULLs never collide, so one operation at a time holds a target.
ALTER TABLE applies
    ADD COLUMN IF NOT EXISTS max_concurrency BIGINT NULL,
    ADD COLUMN IF NOT EXISTS max_attempts INTEGER NOT NULL DEFAULT 10,
    ADD COLUMN IF NOT EXISTS requested_by VARCHAR(255) COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE apply_operations
    ADD COLUMN IF NOT EXISTS database_name VARCHAR(255) COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS environment VARCHAR(255) COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS holds_target BOOLEAN NULL;
-- Copy the apply's names; an operation whose apply is gone holds nothing. A failed operation holds its
-- target while its apply has an unsettled operation left. (The self-join gives the LEFT JOIN to applies
-- that PostgreSQL's UPDATE … FROM cannot put on the updated table itself.)
UPDATE apply_operations o
   SET database_name = COALESCE(a.database_name, ''),
       environment = COALESCE(a.environment, ''),
       holds_target = CASE
           WHEN a.id IS NULL THEN NULL
           WHEN o.state IN ('completed', 'cancelled', 'reverted') THEN NULL
           WHEN o.state = 'failed' AND NOT EXISTS (
               SELECT 1 FROM apply_operations s
                WHERE s.apply_id = o.apply_id
                  AND s.state NOT IN ('completed', 'failed', 'cancelled', 'reverted')) THEN NULL
           ELSE TRUE END
  FROM apply_operations this
  LEFT JOIN applies a ON a.id = this.apply_id
 WHERE this.id = o.id;
-- Two operations holding one target cannot both keep it: fail with the list, in the MySQL tree's words,
-- before the key is built (the whole migration then rolls back).
DO $$
DECLARE
    clashes TEXT;
BEGIN
    SELECT string_agg(database_name || '/' || environment || '/' || deployment || ' by operations ' || ids,
                      '; ' ORDER BY database_name, environment, deployment)
      INTO clashes
      FROM (SELECT database_name, environment, deployment, string_agg(id::TEXT, ',' ORDER BY id) AS ids
              FROM apply_operations WHERE holds_target
             GROUP BY database_name, environment, deployment HAVING COUNT(*) > 1) held_twice;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'targets held twice: %', clashes;
    END IF;
END
$$;
CREATE UNIQUE INDEX IF NOT EXISTS apply_operations_target_key
    ON apply_operations (database_name, environment, deployment, holds_target);
