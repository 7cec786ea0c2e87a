-- A claim scoped to some deployments walks only their claimable rows, oldest first.
CREATE INDEX IF NOT EXISTS apply_operations_scope_claim_idx
    ON apply_operations (claimable, deployment, created_at, id);
