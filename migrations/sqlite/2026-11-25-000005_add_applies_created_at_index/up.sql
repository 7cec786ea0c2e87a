-- applies_created_at_id_idx (SQLite tree); see the MySQL tree.
CREATE INDEX IF NOT EXISTS applies_created_at_id_idx ON applies (created_at, id);
