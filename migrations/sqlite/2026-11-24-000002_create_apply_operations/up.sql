-- apply_operations (SQLite tree): one row per (apply, deployment). See the MySQL tree for the indexes'
-- purposes; the names are the same on both backends.
CREATE TABLE apply_operations (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    apply_id BIGINT NOT NULL,
    deployment VARCHAR(255) NOT NULL,
    target VARCHAR(255) NOT NULL DEFAULT '',
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    started_at TIMESTAMP NULL,
    completed_at TIMESTAMP NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX apply_operations_apply_id_deployment_key ON apply_operations (apply_id, deployment);
CREATE INDEX apply_operations_deployment_state_idx ON apply_operations (deployment, state);
CREATE INDEX apply_operations_apply_id_created_at_id_idx ON apply_operations (apply_id, created_at, id);
