DROP INDEX apply_operations_external_id_key ON apply_operations;
ALTER TABLE apply_operations DROP COLUMN external_id, DROP COLUMN engine_state;
