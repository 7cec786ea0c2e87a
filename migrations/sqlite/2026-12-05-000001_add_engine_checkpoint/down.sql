DROP INDEX apply_operations_external_id_key;
ALTER TABLE apply_operations DROP COLUMN external_id;
ALTER TABLE apply_operations DROP COLUMN engine_state;
