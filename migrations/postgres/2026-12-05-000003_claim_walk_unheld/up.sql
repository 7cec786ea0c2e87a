-- Held rows out of the claim walk (PostgreSQL tree); see the MySQL tree.
-- * claimable is TRUE only for an operation in a claimable state that nobody holds (lease_token
--   empty), so apply_operations_claim_idx holds only unheld rows. Dropped and added again with its
--   index (PostgreSQL 15 cannot change a generated expression in place), guarded on its expression, so
--   running this again changes nothing.
-- * apply_operations_lease_expiry_idx (lease_expires_at) is how a claim finds expired leases.
-- * A settled operation keeps its holder's token and owner but not an expiry.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'apply_operations'
                      AND column_name = 'claimable' AND generation_expression LIKE '%lease_token%') THEN
        DROP INDEX IF EXISTS apply_operations_claim_idx;
        ALTER TABLE apply_operations DROP COLUMN IF EXISTS claimable;
        ALTER TABLE apply_operations ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (lease_token = '' AND state IN (
            'pending', 'stopped', 'paused', 'failed_retryable',
            'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
            'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
            'preparing_branch', 'applying_branch_changes', 'validating_branch',
            'creating_deploy_request', 'validating_deploy_request')) STORED;
        CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS apply_operations_lease_expiry_idx ON apply_operations (lease_expires_at);
UPDATE apply_operations SET lease_expires_at = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted') AND lease_expires_at IS NOT NULL;
