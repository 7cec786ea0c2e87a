-- applies.defer_cutover (PostgreSQL tree); see the MySQL tree.
ALTER TABLE applies ADD COLUMN IF NOT EXISTS defer_cutover BOOLEAN NOT NULL DEFAULT FALSE;
