DROP INDEX IF EXISTS apply_operations_scope_claim_idx;
