DROP INDEX IF EXISTS apply_operations_target_key;
ALTER TABLE apply_operations
    DROP COLUMN IF EXISTS holds_target,
    DROP COLUMN IF EXISTS environment,
    DROP COLUMN IF EXISTS database_name;
ALTER TABLE applies
    DROP COLUMN IF EXISTS requested_by,
    DROP COLUMN IF EXISTS max_attempts,
    DROP COLUMN IF EXISTS max_concurrency;
