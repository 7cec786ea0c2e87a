-- Control requests that finish what they start (worker contract revision 2):
-- * apply_control_requests.requested_by (who asked, 1..=255 characters; '' for older rows),
--   .releases_through (a release's latch: the apply's failure sequence number when it was recorded)
--   and .result (what the store did or why it could not: a retry's moved error message, "superseded
--   by N", "window closed");
-- * applies.failure_seq (the apply's last failure sequence number) and apply_operations.failure_seq
--   (the number of the operation's current failure, NULL when it is not a failure);
-- * apply_operations.claimable now includes 'paused' (the resume claim takes a paused operation on a
--   pending start). The generated column is dropped and added again with its index, at the end of
--   the table, in one ALTER.
-- Backfill: leases left on pending, stopped, paused and failed_retryable operations are cleared;
-- every failed or reverted operation gets a number, in claim order per apply, and its
-- apply the last one; every release (pending or completed) gets releases_through = its apply's
-- number, so it keeps releasing the failures it released before, and a pending release is completed.
-- Each DDL step is guarded and the backfill is idempotent, so a run cut off half-way can be repeated.
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_control_requests' AND COLUMN_NAME = 'result') = 0,
    'ALTER TABLE apply_control_requests ADD COLUMN requested_by VARCHAR(255) NOT NULL DEFAULT '''', ADD COLUMN releases_through BIGINT NULL, ADD COLUMN result TEXT NULL',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'applies' AND COLUMN_NAME = 'failure_seq') = 0,
    'ALTER TABLE applies ADD COLUMN failure_seq BIGINT NOT NULL DEFAULT 0',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'failure_seq') = 0,
    'ALTER TABLE apply_operations ADD COLUMN failure_seq BIGINT NULL',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
SET @applyops_ddl = IF(
    (SELECT COUNT(*) FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'claimable'
        AND GENERATION_EXPRESSION LIKE '%paused%') = 0,
    'ALTER TABLE apply_operations
        DROP INDEX apply_operations_claim_idx,
        DROP COLUMN claimable,
        ADD COLUMN claimable BOOLEAN AS (state IN (
            ''pending'', ''stopped'', ''paused'', ''failed_retryable'',
            ''running'', ''running_degraded'', ''resuming'', ''waiting_for_deploy'', ''waiting_for_cutover'',
            ''recovering'', ''cutting_over'', ''revert_window'', ''reverting'', ''skipping_revert'',
            ''preparing_branch'', ''applying_branch_changes'', ''validating_branch'',
            ''creating_deploy_request'', ''validating_deploy_request'')) VIRTUAL,
        ADD KEY apply_operations_claim_idx (claimable, created_at, id)',
    'DO 0');
PREPARE applyops_stmt FROM @applyops_ddl;
EXECUTE applyops_stmt;
DEALLOCATE PREPARE applyops_stmt;
UPDATE apply_operations o
  JOIN (SELECT id, ROW_NUMBER() OVER (PARTITION BY apply_id ORDER BY created_at, id) AS seq
          FROM apply_operations WHERE state IN ('failed', 'reverted')) f ON f.id = o.id
   SET o.failure_seq = f.seq
 WHERE o.failure_seq IS NULL;
UPDATE applies a
  JOIN (SELECT apply_id, MAX(failure_seq) AS seq FROM apply_operations GROUP BY apply_id) f
    ON f.apply_id = a.id
   SET a.failure_seq = f.seq
 WHERE f.seq IS NOT NULL AND a.failure_seq < f.seq;
UPDATE apply_control_requests r
  JOIN applies a ON a.id = r.apply_id
   SET r.releases_through = a.failure_seq,
       r.completed_at = COALESCE(r.completed_at, UTC_TIMESTAMP(6)),
       r.status = 'completed'
 WHERE r.kind = 'release' AND r.status IN ('pending', 'completed') AND r.releases_through IS NULL;
-- Nobody holds an operation in pending, stopped, paused or failed_retryable (point 6): clear leases a
-- revision-1 holder left there.
UPDATE apply_operations
   SET lease_owner = '', lease_token = '', lease_acquired_at = NULL, lease_expires_at = NULL
 WHERE state IN ('pending', 'stopped', 'paused', 'failed_retryable') AND lease_token <> '';
