-- apply_operations: one row per (apply, deployment), the unit of work workers claim, drive and report
-- on. apply_id points at applies.id without a FOREIGN KEY (see the applies migration for why).
--
-- Indexes:
-- * apply_operations_apply_id_deployment_key: one operation per deployment of an apply. The store
--   recognises this key by name in the server's duplicate-key message, so the name is part of the API.
-- * apply_operations_deployment_state_idx: workers and the active-apply lock look up by
--   (deployment, state).
-- * apply_operations_apply_id_created_at_id_idx: list_by_apply reads an apply's operations in
--   (created_at, id) order straight off this index, with no filesort.
CREATE TABLE IF NOT EXISTS apply_operations (
    id BIGINT NOT NULL AUTO_INCREMENT,
    apply_id BIGINT NOT NULL,
    deployment VARCHAR(255) NOT NULL,
    target VARCHAR(255) NOT NULL DEFAULT '',
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    started_at DATETIME(6) NULL,
    completed_at DATETIME(6) NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY apply_operations_apply_id_deployment_key (apply_id, deployment),
    KEY apply_operations_deployment_state_idx (deployment, state),
    KEY apply_operations_apply_id_created_at_id_idx (apply_id, created_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
