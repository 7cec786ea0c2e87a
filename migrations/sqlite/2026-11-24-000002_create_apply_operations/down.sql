DROP TABLE apply_operations;
