DROP INDEX applies_created_at_id_idx ON applies;
