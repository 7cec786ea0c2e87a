DROP INDEX IF EXISTS apply_operations_external_id_key;
ALTER TABLE apply_operations
    DROP COLUMN IF EXISTS external_id,
    DROP COLUMN IF EXISTS engine_state;
