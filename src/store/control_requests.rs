//! The `apply_control_requests` store: how operators steer rollouts.
//!
//! A request names a whole apply or one of its operations, and who asked. [`request`] records it in
//! a transaction that locks its apply and does at once whatever needs no worker; workers and claims
//! do the rest, and every unit of work on the apply completes the requests that are done. While pending, a request is unique per (apply, operation or whole
//! apply, kind), and a new one supersedes its pending opposite (`stop`/`start`,
//! `revert`/`skip_revert`). Nobody completes a request by hand, though [`complete`] and [`fail`]
//! remain for operators' repairs.
//!
//! What each kind does, who finishes it and how a holder sees it: "Control requests" in
//! `docs/worker-contract.md` in the repository.

use diesel::prelude::*;

use super::moves::Move;
use super::rows;
use super::unit::{self, act_on_undriven, Lock, LockedApply, OnLostRace};
use super::{check_operation_owner, coalesce_timestamp, targets, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{
    ApplyId, ApplyOperation, ApplyOperationId, ControlRequest, ControlRequestId, NewControlRequest,
};
use crate::schema::{apply_control_requests as reqs, apply_operations};
use crate::state::{ApplyState, ControlRequestKind, ControlRequestStatus};

/// Asks for `new.kind` on its apply, or on one of its operations, and returns the request as stored
/// once the transaction that records it is done: a new one (possibly already completed, when it was
/// carried out at once or had nothing to do), or the one already pending for the same (apply,
/// operation or whole apply, kind), unchanged. For a whole-apply `revert` or `skip_revert`, recorded
/// per operation, the first operation's.
///
/// Errors, with nothing written: [`StoreError::InvalidInput`] for a blank or over-long
/// `requested_by`, a reason over 65,535 bytes, or an operation of another apply;
/// [`StoreError::ApplyNotFound`]; [`StoreError::ApplyOperationNotFound`];
/// [`StoreError::RequestRejected`] for a `revert` or `skip_revert` with nothing of its scope in
/// `revert_window`, a `retry` of an operation that is not `failed` (or of a whole apply), a `cutover`
/// on an apply that does not defer cutovers, a `release` naming an operation no failure holds back;
/// [`StoreError::HaltedBy`] for a `retry` that an earlier failure holds back;
/// [`StoreError::OppositeRequestPending`]; [`StoreError::TargetBusy`] for a retry whose target
/// another apply took.
pub fn request(conn: &mut DbConnection, new: &NewControlRequest) -> StoreResult<ControlRequest> {
    validate::required_name("requested_by", &new.requested_by)?;
    if let Some(reason) = &new.reason {
        validate::text("reason", reason, false, validate::TextKind::Written)?;
    }
    let lock = Lock::Apply(new.apply_id);
    let id = unit::run_known(conn, lock, OnLostRace::RetryBriefly, |conn, locked| {
        let locked = locked.ok_or(StoreError::ApplyNotFound { id: new.apply_id })?;
        let id = record(conn, locked, new)?;
        locked.requests_pending = true;
        Ok(id)
    })?;
    // A current read: inside a caller's REPEATABLE READ transaction a plain one could miss a
    // pending request another session committed after the snapshot.
    db::first_current!(
        conn,
        reqs::table.find(id).select(ControlRequest::as_select())
    )
    .optional()?
    .ok_or(StoreError::ControlRequestNotFound { id })
}

/// The opposite kind, for the kinds that have one.
fn opposite(kind: ControlRequestKind) -> Option<ControlRequestKind> {
    match kind {
        ControlRequestKind::Stop => Some(ControlRequestKind::Start),
        ControlRequestKind::Start => Some(ControlRequestKind::Stop),
        ControlRequestKind::Revert => Some(ControlRequestKind::SkipRevert),
        ControlRequestKind::SkipRevert => Some(ControlRequestKind::Revert),
        _ => None,
    }
}

/// [`request`]'s writes, with the apply's row locked: the request's id.
fn record(
    conn: &mut DbConnection,
    locked: &LockedApply,
    new: &NewControlRequest,
) -> StoreResult<ControlRequestId> {
    let apply_id = new.apply_id;
    let operation = match new.operation_id {
        Some(operation_id) => {
            let operation = rows::operation(conn, operation_id)?;
            check_operation_owner(
                operation.as_ref().map(|op| op.apply_id),
                operation_id,
                apply_id,
                "operation_id",
            )?;
            operation
        }
        None => None,
    };
    if let Some(existing) = pending(conn, apply_id, new.operation_id, new.kind)? {
        return Ok(existing.id);
    }
    let superseded = check_opposites(conn, apply_id, new)?;
    let id = match new.kind {
        ControlRequestKind::Revert | ControlRequestKind::SkipRevert => {
            record_revert_decision(conn, locked, new, operation.as_ref())?
        }
        ControlRequestKind::Retry => record_retry(conn, locked, new, operation.as_ref())?,
        ControlRequestKind::Release => {
            if let Some(operation) = &operation {
                if unit::failure_holding_back(conn, operation.apply_id, operation.id)?.is_none() {
                    return Err(rejected(
                        new.kind,
                        format!("no failure holds operation {} back", operation.id),
                    ));
                }
            }
            insert(
                conn,
                new,
                new.operation_id,
                Outcome::Completed {
                    releases_through: Some(locked.row.failure_seq),
                    result: None,
                },
            )?
        }
        ControlRequestKind::Cutover => {
            if !locked.row.defer_cutover {
                return Err(rejected(
                    new.kind,
                    format!(
                        "apply {apply_id} does not defer cutover; its operations cut over on their own"
                    ),
                ));
            }
            insert(conn, new, new.operation_id, Outcome::Pending)?
        }
        // The refresh that ends the transaction stops or cancels what nobody drives (see
        // [`enforce`]).
        ControlRequestKind::Stop | ControlRequestKind::Cancel => {
            insert(conn, new, new.operation_id, Outcome::Pending)?
        }
        ControlRequestKind::Start => {
            let id = insert(conn, new, new.operation_id, Outcome::Pending)?;
            act_on_undriven(conn, apply_id, new.operation_id, new.kind)?;
            id
        }
    };
    for opposite_id in superseded {
        resolve_locked(
            conn,
            opposite_id,
            ControlRequestStatus::Failed,
            Some(&format!("superseded by {id}")),
        )?;
    }
    Ok(id)
}

/// A rejected request.
fn rejected(kind: ControlRequestKind, reason: String) -> StoreError {
    StoreError::RequestRejected { kind, reason }
}

/// The pending opposite requests `new` supersedes (those its scope contains), or
/// [`StoreError::OppositeRequestPending`] when one has a wider scope.
fn check_opposites(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    new: &NewControlRequest,
) -> StoreResult<Vec<ControlRequestId>> {
    let Some(opposite) = opposite(new.kind) else {
        return Ok(Vec::new());
    };
    let pending: Vec<(ControlRequestId, Option<ApplyOperationId>)> = reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::kind.eq(opposite))
        .filter(reqs::status.eq(ControlRequestStatus::Pending))
        .select((reqs::id, reqs::apply_operation_id))
        .load(conn)?;
    let mut contained = Vec::new();
    for (id, scope) in pending {
        match (new.operation_id, scope) {
            (Some(_), None) => {
                return Err(StoreError::OppositeRequestPending { id, kind: opposite })
            }
            (None, _) => contained.push(id),
            (Some(mine), Some(theirs)) if mine == theirs => contained.push(id),
            (Some(_), Some(_)) => {}
        }
    }
    Ok(contained)
}

/// How a request is when it is recorded.
enum Outcome<'a> {
    /// Pending: workers, claims or the refresh act on it.
    Pending,
    /// Carried out in the transaction that records it: completed, stamped with the same time as its
    /// creation (never before it), with what it did.
    Completed {
        /// A release: the failure sequence number it lets through.
        releases_through: Option<i64>,
        /// A retry: the error message the operation had.
        result: Option<&'a str>,
    },
}

/// Inserts a request of `new`'s kind for `scope` as `outcome` says, in one statement, and returns
/// its id.
fn insert(
    conn: &mut DbConnection,
    new: &NewControlRequest,
    scope: Option<ApplyOperationId>,
    outcome: Outcome<'_>,
) -> StoreResult<ControlRequestId> {
    let now = db::now();
    let recorded = (
        reqs::apply_id.eq(new.apply_id),
        reqs::apply_operation_id.eq(scope),
        reqs::kind.eq(new.kind),
        reqs::reason.eq(new.reason.as_deref()),
        reqs::requested_by.eq(&new.requested_by),
        reqs::created_at.eq(now),
        reqs::updated_at.eq(now),
    );
    let id = match outcome {
        Outcome::Pending => db::insert_returning_id!(
            conn,
            diesel::insert_into(reqs::table)
                .values((recorded, reqs::status.eq(ControlRequestStatus::Pending))),
            reqs::id
        )?,
        Outcome::Completed {
            releases_through,
            result,
        } => db::insert_returning_id!(
            conn,
            diesel::insert_into(reqs::table).values((
                recorded,
                reqs::status.eq(ControlRequestStatus::Completed),
                reqs::completed_at.eq(now.nullable()),
                reqs::releases_through.eq(releases_through),
                reqs::result.eq(result),
            )),
            reqs::id
        )?,
    };
    Ok(ControlRequestId(id))
}

/// A `retry`: the `failed` operation becomes `failed_retryable` with `attempt` 0, its lease cleared,
/// and its error message moves into the completed request's `result`.
fn record_retry(
    conn: &mut DbConnection,
    locked: &LockedApply,
    new: &NewControlRequest,
    operation: Option<&ApplyOperation>,
) -> StoreResult<ControlRequestId> {
    let Some(operation) = operation else {
        return Err(rejected(
            new.kind,
            "a retry names one failed operation (operation_id)".to_owned(),
        ));
    };
    if operation.state != ApplyState::Failed {
        return Err(rejected(
            new.kind,
            format!(
                "operation {} is {}, not failed",
                operation.id, operation.state
            ),
        ));
    }
    if let Some(by) = unit::failure_holding_back(conn, operation.apply_id, operation.id)? {
        return Err(StoreError::HaltedBy {
            operation_id: operation.id,
            by,
        });
    }
    let moved = db::recoverable(conn, |conn| {
        diesel::update(apply_operations::table.find(operation.id))
            .set(Move::operators_retry().changes())
            .execute(conn)
    });
    if let Err(err) = moved {
        return Err(targets::busy_or(
            conn,
            err,
            Some(locked.row.id),
            &locked.row.database_name,
            &locked.row.environment,
            &[operation.deployment.as_str()],
        ));
    }
    insert(
        conn,
        new,
        Some(operation.id),
        Outcome::Completed {
            releases_through: None,
            result: operation.error_message.as_deref(),
        },
    )
}

/// A `revert` or `skip_revert`: one pending request per operation of its scope in `revert_window`
/// (an operation that already has one keeps it). The first operation's request.
fn record_revert_decision(
    conn: &mut DbConnection,
    locked: &LockedApply,
    new: &NewControlRequest,
    operation: Option<&ApplyOperation>,
) -> StoreResult<ControlRequestId> {
    let in_window: Vec<ApplyOperation> = match operation {
        Some(op) if op.state == ApplyState::RevertWindow => vec![op.clone()],
        Some(op) => {
            return Err(rejected(
                new.kind,
                format!("operation {} is {}, not in revert_window", op.id, op.state),
            ))
        }
        None => rows::operations_of(conn, locked.row.id)?
            .into_iter()
            .filter(|op| op.state == ApplyState::RevertWindow)
            .collect(),
    };
    let mut first = None;
    for op in &in_window {
        let id = match pending(conn, locked.row.id, Some(op.id), new.kind)? {
            Some(existing) => existing.id,
            None => insert(conn, new, Some(op.id), Outcome::Pending)?,
        };
        first.get_or_insert(id);
    }
    first.ok_or_else(|| {
        rejected(
            new.kind,
            format!(
                "no operation of apply {} is in revert_window",
                locked.row.id
            ),
        )
    })
}

/// The pending request for exactly this (apply, operation or whole apply, kind), if any, as committed
/// now (a locking read, so a caller's REPEATABLE READ snapshot cannot hide it). Looked up through the
/// pending key itself (`pending_scope` is the operation id, 0 for the whole apply).
fn pending(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: Option<ApplyOperationId>,
    kind: ControlRequestKind,
) -> StoreResult<Option<ControlRequest>> {
    Ok(db::first_current!(
        conn,
        reqs::table
            .filter(reqs::apply_id.eq(apply_id))
            .filter(reqs::kind.eq(kind))
            .filter(reqs::pending_scope.eq(operation_id.map_or(0, ApplyOperationId::get)))
            .select(ControlRequest::as_select())
    )
    .optional()?)
}

/// The request with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: ControlRequestId) -> StoreResult<Option<ControlRequest>> {
    Ok(reqs::table
        .find(id)
        .select(ControlRequest::as_select())
        .first(conn)
        .optional()?)
}

/// The pending requests of `apply_id` (whole-apply and per-operation), oldest first by
/// (`created_at`, `id`).
pub fn list_pending(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<ControlRequest>> {
    rows::pending_requests_of(conn, apply_id)
}

/// Marks request `id` completed, stamping `completed_at` once. Completing a completed request
/// succeeds; completing a failed one is [`StoreError::ControlRequestResolved`].
pub fn complete(conn: &mut DbConnection, id: ControlRequestId) -> StoreResult<()> {
    resolve(conn, id, ControlRequestStatus::Completed, None)
}

/// Marks request `id` failed with `result` (1 to 65,535 bytes; a repeat replaces it; the operator's
/// reason is kept), stamping `completed_at` once. Failing a completed request is
/// [`StoreError::ControlRequestResolved`].
pub fn fail(conn: &mut DbConnection, id: ControlRequestId, result: &str) -> StoreResult<()> {
    validate::text("result", result, true, validate::TextKind::Quoted)?;
    resolve(conn, id, ControlRequestStatus::Failed, Some(result))
}

/// Moves a pending (or already `status`) request to `status`, stamping `completed_at` once and, when
/// given, replacing the result. One UPDATE; a second statement only when it matched nothing.
fn resolve(
    conn: &mut DbConnection,
    id: ControlRequestId,
    status: ControlRequestStatus,
    reason: Option<&str>,
) -> StoreResult<()> {
    let lock = Lock::ApplyOfRequest(id);
    unit::run_known(conn, lock, OnLostRace::RetryBriefly, |conn, _| {
        resolve_locked(conn, id, status, reason)
    })
}

/// [`resolve`]'s UPDATE, with the request's apply locked.
fn resolve_locked(
    conn: &mut DbConnection,
    id: ControlRequestId,
    status: ControlRequestStatus,
    result: Option<&str>,
) -> StoreResult<()> {
    let now = db::now();
    let target = diesel::update(reqs::table.find(id))
        .filter(reqs::status.eq_any([ControlRequestStatus::Pending, status]));
    let resolution = (
        reqs::status.eq(status),
        reqs::completed_at.eq(coalesce_timestamp(reqs::completed_at, now.nullable())),
        reqs::updated_at.eq(now),
    );
    let matched = match result {
        Some(result) => target
            .set((resolution, reqs::result.eq(result)))
            .execute(conn)?,
        None => target.set(resolution).execute(conn)?,
    };
    if matched > 0 {
        return Ok(());
    }
    // The whole row, so a status this version does not know is reported with the row named.
    Err(match get(conn, id)? {
        None => StoreError::ControlRequestNotFound { id },
        Some(request) => StoreError::ControlRequestResolved {
            id,
            status: request.status,
        },
    })
}
