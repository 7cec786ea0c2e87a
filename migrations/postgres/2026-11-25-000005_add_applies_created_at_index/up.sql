-- applies_created_at_id_idx (PostgreSQL tree): applies::list, newest first by (created_at, id) with
-- keyset pagination, read backwards off the index; see the MySQL tree.
CREATE INDEX IF NOT EXISTS applies_created_at_id_idx ON applies (created_at, id);
