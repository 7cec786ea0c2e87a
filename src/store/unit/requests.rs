//! The control requests' part of the unit of work: what pending stops and cancels do to the
//! operations nobody drives, and the settlement of the requests that are done, both run with the
//! apply locked, before and after the apply's state is derived; and the completion of cutover
//! requests by the cutover claim.

use diesel::prelude::*;

use crate::db::{self, DbConnection};
use crate::error::StoreResult;
use crate::models::{ApplyId, ApplyOperationId, ControlRequestId};
use crate::schema::{apply_control_requests as reqs, apply_operations};
use crate::state::{
    is_cancellable, is_stoppable, progress, ApplyState, ControlRequestKind, ControlRequestStatus,
    RequestProgress,
};
use crate::store::moves::{Move, Mover};
use crate::store::predicates::lease_free;

/// A pending request as the refresh reads it: its id, kind (`None`: a kind this version does not
/// know, which stays pending and holds starts back) and scope (`None`: the whole apply).
pub(in crate::store) type PendingRequest = (
    ControlRequestId,
    Option<ControlRequestKind>,
    Option<ApplyOperationId>,
);

/// The pending requests of apply `apply_id`. One SELECT.
pub(in crate::store) fn pending_of(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<PendingRequest>> {
    let rows: Vec<(ControlRequestId, String, Option<ApplyOperationId>)> = reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::status.eq(ControlRequestStatus::Pending))
        .order((reqs::created_at.asc(), reqs::id.asc()))
        .select((reqs::id, reqs::kind, reqs::apply_operation_id))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, kind, scope)| (id, ControlRequestKind::from_stored(&kind), scope))
        .collect())
}

/// What pending stops and cancels do to the operations of their scope nobody drives: run by the
/// refresh of every transaction that writes the apply, before it reads the operations, so an
/// operation that comes into a covered state unheld while one is pending (inserted, retried, or
/// written by an operator) is stopped or cancelled in the same transaction. A cancel first: it
/// covers more.
pub(in crate::store) fn enforce(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    pending: &[PendingRequest],
) -> StoreResult<()> {
    for kind in [ControlRequestKind::Cancel, ControlRequestKind::Stop] {
        for (_, _, scope) in pending.iter().filter(|(_, k, _)| *k == Some(kind)) {
            act_on_undriven(conn, apply_id, *scope, kind)?;
        }
    }
    Ok(())
}

/// Completes, or fails, the `pending` requests that are done, given the apply's operations' states
/// (`None`: a state this version does not know): see [`crate::state::progress`]. Run by the refresh,
/// in the transaction of every state write, with the apply locked. An UPDATE per request settled,
/// stamped with the database's time as it runs: a request recorded in the same transaction (after
/// the apply's lock was taken) is never completed before it was created. Returns the requests that
/// stay pending.
pub(in crate::store) fn settle(
    conn: &mut DbConnection,
    pending: Vec<PendingRequest>,
    operations: &[(ApplyOperationId, Option<ApplyState>)],
) -> StoreResult<Vec<PendingRequest>> {
    let mut still_pending = Vec::new();
    for request in pending {
        let (id, kind, scope) = request;
        let Some(kind) = kind else {
            still_pending.push(request);
            continue;
        };
        let states: Vec<Option<ApplyState>> = operations
            .iter()
            .filter(|(op, _)| scope.is_none_or(|scope| scope == *op))
            .map(|(_, state)| *state)
            .collect();
        let (status, result) = match progress(kind, &states) {
            RequestProgress::Pending => {
                still_pending.push(request);
                continue;
            }
            RequestProgress::Done => (ControlRequestStatus::Completed, None),
            RequestProgress::Failed(result) => (ControlRequestStatus::Failed, Some(result)),
        };
        db::cached_update(
            reqs::table,
            reqs::id
                .eq(id)
                .and(reqs::status.eq(ControlRequestStatus::Pending)),
            (
                reqs::status.eq(status),
                reqs::result.eq(result),
                reqs::completed_at.eq(db::now().nullable()),
                reqs::updated_at.eq(db::now()),
            ),
        )
        .execute(conn)?;
    }
    Ok(still_pending)
}

/// What a stop, cancel or start does at once to the operations of its scope that nobody drives (no
/// lease, or an expired one): stop moves the stoppable ones to `stopped`, cancel the cancellable ones
/// to `cancelled` (letting their targets go), start sends never-started `stopped` and `paused` ones
/// back to `pending`. The operations under a live lease are left to their holders.
pub(in crate::store) fn act_on_undriven(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    scope: Option<ApplyOperationId>,
    kind: ControlRequestKind,
) -> StoreResult<()> {
    let covered: fn(ApplyState) -> bool = match kind {
        ControlRequestKind::Stop => is_stoppable,
        ControlRequestKind::Cancel => is_cancellable,
        _ => crate::state::is_resumable,
    };
    let states: Vec<ApplyState> = ApplyState::ALL
        .into_iter()
        .filter(|s| covered(*s))
        .collect();
    let now = db::now();
    let mut target = diesel::update(apply_operations::table)
        .filter(apply_operations::apply_id.eq(apply_id))
        .filter(apply_operations::state.eq_any(states))
        .filter(lease_free(now))
        .into_boxed();
    if let Some(id) = scope {
        target = target.filter(apply_operations::id.eq(id));
    }
    let moved = match kind {
        ControlRequestKind::Stop => Move::to(ApplyState::Stopped, Mover::Other),
        ControlRequestKind::Cancel => Move::to(ApplyState::Cancelled, Mover::Other),
        _ => {
            target = target.filter(apply_operations::started_at.is_null());
            Move::to(ApplyState::Pending, Mover::Other)
        }
    };
    target.set(moved.changes()).execute(conn)?;
    Ok(())
}

/// Completes the pending `cutover` request that names operation `operation_id`, and, when no other
/// operation of the apply is still `waiting_for_cutover`, the apply's whole-apply one. Called by
/// the cutover claim in its transaction.
pub(in crate::store) fn complete_cutover(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: ApplyOperationId,
) -> StoreResult<()> {
    let now = db::now();
    let completion = (
        reqs::status.eq(ControlRequestStatus::Completed),
        reqs::completed_at.eq(now.nullable()),
        reqs::updated_at.eq(now),
    );
    let pending_cutover = reqs::apply_id
        .eq(apply_id)
        .and(reqs::kind.eq(ControlRequestKind::Cutover))
        .and(reqs::status.eq(ControlRequestStatus::Pending));
    db::cached_update(
        reqs::table,
        pending_cutover.and(reqs::apply_operation_id.eq(operation_id)),
        completion,
    )
    .execute(conn)?;
    let others_waiting = apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .filter(apply_operations::id.ne(operation_id))
        .filter(apply_operations::state.eq(ApplyState::WaitingForCutover))
        .select(apply_operations::id)
        .first::<ApplyOperationId>(conn)
        .optional()?
        .is_some();
    if !others_waiting {
        db::cached_update(
            reqs::table,
            pending_cutover.and(reqs::apply_operation_id.is_null()),
            completion,
        )
        .execute(conn)?;
    }
    Ok(())
}
