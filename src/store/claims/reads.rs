//! The claims' reads, one set per claim ([`copy`] for [`super::claim_next`], [`cutover`] for
//! [`super::claim_next_cutover`]), each testing only the row: the claim's stored decision (its walk
//! column for the unlocked read, its decision column for the locking read), the lease's expiry and
//! the scope. No correlated subquery: the rules were decided when the apply was last written.

/// The reads of the claim whose decision is stored in `$claim` and whose walk is keyed by `$walk`.
macro_rules! claim_reads {
    ($name:ident, $doc:literal, $walk:ident, $claim:ident) => {
        #[doc = $doc]
        pub(in crate::store) mod $name {
            use chrono::NaiveDateTime;
            use diesel::prelude::*;

            use crate::db::{self, DbConnection, DbNow};
            use crate::error::StoreResult;
            use crate::models::{ApplyOperation, ApplyOperationId, ClaimScope};
            use crate::schema::apply_operations as ops;
            use crate::state::ClaimAction;
            use crate::store::claims::{
                load_candidates, Candidate, Locked, LockedRow, CANDIDATE_PAGE,
            };
            use crate::store::predicates::{
                in_scope, lease_free, only_row, readable, scope_filter,
            };

            /// The unlocked candidate read: the ids of the oldest (by `created_at`, `id`) unheld
            /// rows the claim takes, walking the claim's index, other than those in `passed`.
            #[diesel::dsl::auto_type]
            pub(in crate::store) fn candidate_read(
                passed: Vec<ApplyOperationId>,
                scope: in_scope,
            ) -> _ {
                let page: i64 = CANDIDATE_PAGE;
                ops::table
                    .filter(ops::$walk.eq(true))
                    .filter(scope)
                    .filter(db::none_of(ops::id, passed))
                    .order((ops::created_at.asc(), ops::id.asc()))
                    .select((ops::id, ops::apply_id))
                    .limit(page)
            }

            /// The unlocked read of expired leases the claim takes over, oldest expiry first,
            /// through `apply_operations_lease_expiry_idx`: rows under a lease are not in the walk.
            #[diesel::dsl::auto_type]
            pub(in crate::store) fn expired_read(
                now: DbNow,
                passed: Vec<ApplyOperationId>,
                scope: in_scope,
            ) -> _ {
                let page: i64 = CANDIDATE_PAGE;
                ops::table
                    .filter(ops::lease_expires_at.le(now.nullable()))
                    .filter(ops::$claim.is_not_null())
                    .filter(scope)
                    .filter(db::none_of(ops::id, passed))
                    .order((ops::lease_expires_at.asc(), ops::id.asc()))
                    .select((ops::id, ops::apply_id))
                    .limit(page)
            }

            /// The locking read of candidate `id`: the row, if the claim takes it, its lease is free
            /// and it is readable.
            #[diesel::dsl::auto_type]
            pub(in crate::store) fn lock_read(now: DbNow, id: ApplyOperationId) -> _ {
                let row: only_row = only_row(id);
                let free: lease_free = lease_free(now);
                ops::table
                    .filter(row)
                    .filter(ops::$claim.is_not_null())
                    .filter(free)
                    .filter(readable())
            }

            /// Runs [`expired_read`] and [`candidate_read`] as one statement (`UNION ALL`): the
            /// expired leases first, then the walk.
            pub(in crate::store) fn candidates(
                conn: &mut DbConnection,
                scope: &ClaimScope,
                passed: &[ApplyOperationId],
            ) -> StoreResult<Vec<Candidate>> {
                load_candidates!(
                    conn,
                    expired_read(db::now(), passed.to_vec(), scope_filter(scope)),
                    candidate_read(passed.to_vec(), scope_filter(scope))
                )
            }

            /// Runs [`lock_read`] with the claim's row lock (MySQL `FOR UPDATE SKIP LOCKED`),
            /// selecting the row, the database's time as it reads the row, and the claim's
            /// decision (an unknown stored value reads as undecided).
            pub(in crate::store) fn lock(
                conn: &mut DbConnection,
                id: ApplyOperationId,
            ) -> StoreResult<Locked> {
                let row: Option<(ApplyOperation, NaiveDateTime, Option<String>)> =
                    db::first_for_claim!(
                        conn,
                        lock_read(db::now(), id).select((
                            ApplyOperation::as_select(),
                            db::now_when_read(),
                            ops::$claim,
                        ))
                    )
                    .optional()?;
                Ok(row.map(|(row, now, action)| LockedRow {
                    row,
                    now,
                    action: action
                        .as_deref()
                        .and_then(ClaimAction::from_stored)
                        .unwrap_or(ClaimAction::Undecided),
                }))
            }
        }
    };
}

claim_reads!(
    copy,
    "The copy claim's reads: see [`super::claim_next`].",
    copy_walk,
    copy_claim
);
claim_reads!(
    cutover,
    "The cutover claim's reads: see [`super::claim_next_cutover`].",
    cutover_walk,
    cutover_claim
);
