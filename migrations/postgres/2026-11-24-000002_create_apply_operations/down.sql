DROP TABLE IF EXISTS apply_operations;
