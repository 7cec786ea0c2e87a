DROP INDEX IF EXISTS applies_created_at_id_idx;
