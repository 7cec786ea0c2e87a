-- A claim scoped to some deployments walks only their unheld, claimable rows, oldest first:
-- apply_operations_scope_claim_idx on (claimable, deployment, created_at, id). As in the MySQL tree it
-- is created only while the claim decisions' columns are absent: the next migration replaces this
-- index, and running this one again after it must not bring it back.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'apply_operations'
                      AND column_name = 'copy_claim') THEN
        CREATE INDEX IF NOT EXISTS apply_operations_scope_claim_idx
            ON apply_operations (claimable, deployment, created_at, id);
    END IF;
END
$$;
