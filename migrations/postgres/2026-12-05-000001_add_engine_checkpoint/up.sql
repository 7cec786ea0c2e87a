-- The copy engine's checkpoint (PostgreSQL tree); see the MySQL tree. engine_state is BYTEA (BLOB in the
-- MySQL tree; the store refuses more than 65,535 bytes before any SQL). external_id is unique across
-- operations (apply_operations_external_id_key; NULLs never collide).
ALTER TABLE apply_operations
    ADD COLUMN IF NOT EXISTS engine_state BYTEA NULL,
    ADD COLUMN IF NOT EXISTS external_id VARCHAR(255) COLLATE "C" NULL;
CREATE UNIQUE INDEX IF NOT EXISTS apply_operations_external_id_key ON apply_operations (external_id);
