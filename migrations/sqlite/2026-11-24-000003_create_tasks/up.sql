-- tasks (SQLite tree): the per-table unit of work; apply_operation_id is NULL until assigned.
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    apply_id BIGINT NOT NULL,
    apply_operation_id BIGINT NULL,
    table_name VARCHAR(255) NOT NULL,
    ddl TEXT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP NULL,
    completed_at TIMESTAMP NULL
);
CREATE INDEX tasks_apply_id_created_at_id_idx ON tasks (apply_id, created_at, id);
CREATE INDEX tasks_apply_operation_id_idx ON tasks (apply_operation_id);
