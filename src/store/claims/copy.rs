//! The copy claim's reads: see [`super::claim_next`].

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{load_candidates, Candidate, ClaimKind, Locked, LockedRow, CANDIDATE_PAGE};
use crate::db::{self, DbConnection, DbNow};
use crate::error::StoreResult;
use crate::models::{ApplyOperation, ApplyOperationId, ClaimScope};
use crate::schema::apply_operations as ops;
use crate::state::{ApplyState, ControlRequestKind};
use crate::store::predicates::{
    copy_claimable, in_scope, only_row, request_pending_for_row, scope_filter, walk_claim_index,
};

/// The unlocked candidate read: the ids of the oldest (by `created_at`, `id`) rows the claim may take,
/// walking the claim index, other than those in `passed`.
#[diesel::dsl::auto_type]
pub(super) fn candidate_read(now: DbNow, passed: Vec<ApplyOperationId>, scope: in_scope) -> _ {
    let claimable: copy_claimable = copy_claimable(now);
    let page: i64 = CANDIDATE_PAGE;
    walk_claim_index()
        .filter(claimable)
        .filter(scope)
        .filter(db::none_of(ops::id, passed))
        .order((ops::created_at.asc(), ops::id.asc()))
        .select((ops::id, ops::apply_id))
        .limit(page)
}

/// The locking read of candidate `id`: the same rules narrowed to that one row. Selected (and locked)
/// by [`lock`], per backend: the row's selection is typed by the backend it is read on.
#[diesel::dsl::auto_type]
pub(super) fn lock_read(now: DbNow, id: ApplyOperationId) -> _ {
    let claimable: copy_claimable = copy_claimable(now);
    let row: only_row = only_row(id);
    ops::table.filter(row).filter(claimable)
}

/// The unlocked read of expired leases the claim may take over (recovery), oldest expiry first,
/// through `apply_operations_lease_expiry_idx`: operations under a lease are not in the claim index
/// (`claimable` requires an empty lease token), so the walk never reads past them and recovery
/// finds them here instead, before the walk.
#[diesel::dsl::auto_type]
pub(super) fn expired_read(now: DbNow, passed: Vec<ApplyOperationId>, scope: in_scope) -> _ {
    let claimable: copy_claimable = copy_claimable(now);
    let page: i64 = CANDIDATE_PAGE;
    ops::table
        .filter(ops::lease_expires_at.le(now.nullable()))
        .filter(claimable)
        .filter(scope)
        .filter(db::none_of(ops::id, passed))
        .order((ops::lease_expires_at.asc(), ops::id.asc()))
        .select((ops::id, ops::apply_id))
        .limit(page)
}

/// Runs [`expired_read`] and [`candidate_read`] as one statement (`UNION ALL`): the expired leases
/// first, then the walk.
pub(super) fn candidates(
    conn: &mut DbConnection,
    scope: &ClaimScope,
    passed: &[ApplyOperationId],
) -> StoreResult<Vec<Candidate>> {
    let now = db::now();
    load_candidates!(
        conn,
        expired_read(now, passed.to_vec(), scope_filter(scope)),
        candidate_read(now, passed.to_vec(), scope_filter(scope))
    )
}

/// Runs [`lock_read`] with the claim's row lock (MySQL `FOR UPDATE SKIP LOCKED`), selecting the row,
/// the database's time as it reads the row, and the pending requests that cover it.
pub(super) fn lock(conn: &mut DbConnection, id: ApplyOperationId) -> StoreResult<Locked> {
    let row: Option<(ApplyOperation, NaiveDateTime, bool, bool, bool, bool)> =
        db::first_for_claim!(
            conn,
            lock_read(db::now(), id).select((
                ApplyOperation::as_select(),
                db::now_when_read(),
                request_pending_for_row(ControlRequestKind::Stop),
                request_pending_for_row(ControlRequestKind::Cancel),
                request_pending_for_row(ControlRequestKind::Revert),
                request_pending_for_row(ControlRequestKind::SkipRevert),
            ))
        )
        .optional()?;
    Ok(row.map(LockedRow::of))
}

/// Why the copy claim takes a locked row.
pub(super) fn kind_of(locked: &LockedRow) -> ClaimKind {
    match locked.row.state {
        ApplyState::Pending => ClaimKind::Start,
        ApplyState::Stopped | ApplyState::Paused => ClaimKind::Resume,
        ApplyState::FailedRetryable => ClaimKind::Retry,
        _ => ClaimKind::Recovery,
    }
}
