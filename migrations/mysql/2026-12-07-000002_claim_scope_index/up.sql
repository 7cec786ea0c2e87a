-- A claim scoped to some deployments walks only their unheld, claimable rows, oldest first:
-- apply_operations_scope_claim_idx on (claimable, deployment, created_at, id). Guarded on the index
-- being absent (MySQL has no CREATE INDEX IF NOT EXISTS), so a run cut off half-way can be repeated,
-- and on the claim decisions' columns being absent too: the next migration replaces this index, and
-- running this one again after it must not bring it back.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND INDEX_NAME = 'apply_operations_scope_claim_idx') = 0
    AND (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations'
        AND COLUMN_NAME = 'copy_claim') = 0,
    'ALTER TABLE apply_operations
        ADD KEY apply_operations_scope_claim_idx (claimable, deployment, created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
