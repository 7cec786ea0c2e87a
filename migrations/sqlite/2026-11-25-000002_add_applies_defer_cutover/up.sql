-- applies.defer_cutover (SQLite tree); see the MySQL tree.
ALTER TABLE applies ADD COLUMN defer_cutover BOOLEAN NOT NULL DEFAULT FALSE;
