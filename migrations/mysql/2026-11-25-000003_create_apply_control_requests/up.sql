-- apply_control_requests: an operator's start, stop, release or cutover request for a whole apply
-- (apply_operation_id NULL) or one of its operations. Links are kept by the store, not FOREIGN KEYs
-- (see the applies migration).
--
-- * pending_scope is generated: while the request is pending it is the operation id, or 0 for the
--   whole apply (ids start at 1); otherwise NULL. The unique key on (apply_id, kind, pending_scope)
--   therefore allows at most one pending request per (apply, operation or whole apply, kind) while
--   keeping any number of completed and failed ones (a unique key admits many NULLs). The store
--   recognises the key by name.
-- * apply_control_requests_apply_id_kind_status_idx serves the claim's lookups (a pending stop, a
--   pending or completed release, a pending start or cutover) and list_pending.
CREATE TABLE IF NOT EXISTS apply_control_requests (
    id BIGINT NOT NULL AUTO_INCREMENT,
    apply_id BIGINT NOT NULL,
    apply_operation_id BIGINT NULL,
    kind VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending',
    reason TEXT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    completed_at DATETIME(6) NULL,
    pending_scope BIGINT AS (IF(status = 'pending', COALESCE(apply_operation_id, 0), NULL)) VIRTUAL,
    PRIMARY KEY (id),
    UNIQUE KEY apply_control_requests_pending_key (apply_id, kind, pending_scope),
    KEY apply_control_requests_apply_id_kind_status_idx (apply_id, kind, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
