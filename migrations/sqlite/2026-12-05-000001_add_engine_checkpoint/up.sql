-- The copy engine's checkpoint (SQLite tree); see the MySQL tree.
ALTER TABLE apply_operations ADD COLUMN engine_state BLOB NULL;
ALTER TABLE apply_operations ADD COLUMN external_id VARCHAR(255) NULL;
CREATE UNIQUE INDEX apply_operations_external_id_key ON apply_operations (external_id);
