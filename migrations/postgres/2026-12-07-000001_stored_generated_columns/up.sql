-- Nothing to do on PostgreSQL: apply_operations.claimable and apply_control_requests.pending_scope
-- have been STORED since they were created (PostgreSQL 15 has no VIRTUAL generated columns), which is
-- what this migration gives the MySQL tree. The version keeps every tree in step.
SELECT 1;
