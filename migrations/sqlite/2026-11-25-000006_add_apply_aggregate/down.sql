DROP INDEX apply_operations_target_key;
ALTER TABLE apply_operations DROP COLUMN holds_target;
ALTER TABLE apply_operations DROP COLUMN environment;
ALTER TABLE apply_operations DROP COLUMN database_name;
ALTER TABLE applies DROP COLUMN requested_by;
ALTER TABLE applies DROP COLUMN max_attempts;
ALTER TABLE applies DROP COLUMN max_concurrency;
