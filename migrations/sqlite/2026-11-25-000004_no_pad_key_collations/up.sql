-- SQLite's BINARY collation already compares exactly (NO PAD): trailing spaces are significant.
-- Nothing to change; the version exists so both trees carry the same migrations.
SELECT 1;
