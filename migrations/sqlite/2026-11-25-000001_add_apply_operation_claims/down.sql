DROP INDEX apply_operations_claim_idx;
ALTER TABLE apply_operations DROP COLUMN claimable;
ALTER TABLE apply_operations DROP COLUMN lease_expires_at;
ALTER TABLE apply_operations DROP COLUMN lease_acquired_at;
ALTER TABLE apply_operations DROP COLUMN lease_token;
ALTER TABLE apply_operations DROP COLUMN lease_owner;
ALTER TABLE apply_operations DROP COLUMN attempt;
ALTER TABLE apply_operations DROP COLUMN on_failure;
ALTER TABLE apply_operations DROP COLUMN cutover_policy;
