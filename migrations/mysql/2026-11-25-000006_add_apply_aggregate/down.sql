DROP INDEX apply_operations_target_key ON apply_operations;
ALTER TABLE apply_operations DROP COLUMN holds_target, DROP COLUMN environment, DROP COLUMN database_name;
ALTER TABLE applies DROP COLUMN requested_by, DROP COLUMN max_attempts, DROP COLUMN max_concurrency;
