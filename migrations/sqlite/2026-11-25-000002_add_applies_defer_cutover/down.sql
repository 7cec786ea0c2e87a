ALTER TABLE applies DROP COLUMN defer_cutover;
