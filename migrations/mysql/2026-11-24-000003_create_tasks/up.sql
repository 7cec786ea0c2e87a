-- tasks: the per-table unit of work of an apply (one DDL statement against one table).
-- apply_operation_id is NULL until a task is assigned to the deployment's operation that owns it;
-- like apply_id it is a link the store keeps, not a FOREIGN KEY (see the applies migration).
CREATE TABLE IF NOT EXISTS tasks (
    id BIGINT NOT NULL AUTO_INCREMENT,
    apply_id BIGINT NOT NULL,
    apply_operation_id BIGINT NULL,
    table_name VARCHAR(255) NOT NULL,
    ddl TEXT NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    started_at DATETIME(6) NULL,
    completed_at DATETIME(6) NULL,
    PRIMARY KEY (id),
    KEY tasks_apply_id_created_at_id_idx (apply_id, created_at, id),
    KEY tasks_apply_operation_id_idx (apply_operation_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
