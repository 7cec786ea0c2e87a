-- The claim rules are decided when an apply is written, not when a claim reads (worker contract:
-- "How a claim runs"). Each operation stores what each claim does with it once its lease is free:
-- copy_claim for the copy claim, cutover_claim for the cutover claim (NULL: that claim never takes
-- it; 'undecided': a row written outside the store, decided by the first claim that meets it, under
-- its apply's lock). The walks read only the row: copy_walk / cutover_walk are 1 for an unheld row
-- (empty lease token) that the claim takes, and the claims walk their own index oldest first
-- (with a deployment between for scoped claims). The old walk indexes on `claimable` go.
-- Existing rows start 'undecided' (the column default); settled ones are set to NULL at once.
-- Guarded on the columns being absent, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND COLUMN_NAME = 'copy_claim') = 0,
    'ALTER TABLE apply_operations
        ADD COLUMN copy_claim VARCHAR(16) NULL DEFAULT ''undecided'',
        ADD COLUMN cutover_claim VARCHAR(16) NULL DEFAULT ''undecided'',
        ADD COLUMN copy_walk BOOLEAN AS (lease_token = '''' AND copy_claim IS NOT NULL) STORED,
        ADD COLUMN cutover_walk BOOLEAN AS (lease_token = '''' AND cutover_claim IS NOT NULL) STORED,
        ADD KEY apply_operations_copy_walk_idx (copy_walk, created_at, id),
        ADD KEY apply_operations_cutover_walk_idx (cutover_walk, created_at, id),
        ADD KEY apply_operations_copy_scope_idx (copy_walk, deployment, created_at, id),
        ADD KEY apply_operations_cutover_scope_idx (cutover_walk, deployment, created_at, id),
        DROP INDEX apply_operations_claim_idx,
        DROP INDEX apply_operations_scope_claim_idx',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
UPDATE apply_operations SET copy_claim = NULL, cutover_claim = NULL
 WHERE state IN ('completed', 'failed', 'cancelled', 'reverted')
   AND (copy_claim IS NOT NULL OR cutover_claim IS NOT NULL);
