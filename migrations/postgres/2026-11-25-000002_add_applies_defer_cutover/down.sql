ALTER TABLE applies DROP COLUMN IF EXISTS defer_cutover;
