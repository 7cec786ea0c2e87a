-- apply_control_requests (SQLite tree); see the MySQL tree for the generated pending_scope column and
-- the keys, whose names are the same on both backends.
CREATE TABLE apply_control_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    apply_id BIGINT NOT NULL,
    apply_operation_id BIGINT NULL,
    kind VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending',
    reason TEXT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    completed_at TIMESTAMP NULL,
    pending_scope BIGINT GENERATED ALWAYS AS (
        CASE WHEN status = 'pending' THEN COALESCE(apply_operation_id, 0) END) VIRTUAL
);
CREATE UNIQUE INDEX apply_control_requests_pending_key ON apply_control_requests (apply_id, kind, pending_scope);
CREATE INDEX apply_control_requests_apply_id_kind_status_idx ON apply_control_requests (apply_id, kind, status);
