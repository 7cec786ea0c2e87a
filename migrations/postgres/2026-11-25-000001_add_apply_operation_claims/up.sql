-- apply_operations (PostgreSQL tree): the policies, the retry counter, the lease and the generated
-- claimable column with apply_operations_claim_idx. See the MySQL tree for why.
--
-- * claimable is STORED: PostgreSQL 15 has no VIRTUAL generated columns. It is a real BOOLEAN (the MySQL
--   tree's 0/1), nullable as schema.rs declares it; state is NOT NULL, so it is never NULL in practice.
-- * Guarded on lease_token being absent, as in the MySQL tree, so running this again, even after the
--   later migrations that redefine claimable and drop its index, changes nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'apply_operations'
                      AND column_name = 'lease_token') THEN
        ALTER TABLE apply_operations
            ADD COLUMN cutover_policy VARCHAR(32) COLLATE "C" NOT NULL DEFAULT 'rolling',
            ADD COLUMN on_failure VARCHAR(32) COLLATE "C" NOT NULL DEFAULT 'halt',
            ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0,
            ADD COLUMN lease_owner VARCHAR(255) COLLATE "C" NOT NULL DEFAULT '',
            ADD COLUMN lease_token VARCHAR(64) COLLATE "C" NOT NULL DEFAULT '',
            ADD COLUMN lease_acquired_at TIMESTAMP(6) NULL,
            ADD COLUMN lease_expires_at TIMESTAMP(6) NULL,
            ADD COLUMN claimable BOOLEAN GENERATED ALWAYS AS (state IN (
                'pending', 'stopped', 'failed_retryable',
                'running', 'running_degraded', 'resuming', 'waiting_for_deploy', 'waiting_for_cutover',
                'recovering', 'cutting_over', 'revert_window', 'reverting', 'skipping_revert',
                'preparing_branch', 'applying_branch_changes', 'validating_branch',
                'creating_deploy_request', 'validating_deploy_request')) STORED;
        CREATE INDEX apply_operations_claim_idx ON apply_operations (claimable, created_at, id);
    END IF;
END
$$;
