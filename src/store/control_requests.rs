//! The `apply_control_requests` store: how operators steer rollouts (start, stop, release, cutover).
//!
//! A request names a whole apply or one of its operations. While it is `pending` it is unique per
//! (apply, operation or whole apply, kind): asking again returns the pending one, so a retried
//! operator command never piles up requests. The claims ([`super::claims`]) read pending (and, for
//! `release`, completed) requests; completing a request is the worker's job, except for `cutover`,
//! which the cutover claim completes in its own transaction.

use diesel::prelude::*;

use super::{aggregate, check_operation_owner, validate};
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperationId, ControlRequest, ControlRequestId};
use crate::schema::{apply_control_requests as reqs, apply_operations};
use crate::state::{ApplyState, ControlRequestKind, ControlRequestStatus};

/// At most one pending request per (apply, operation or whole apply, kind). The name is the same on
/// both backends; SQLite names the columns.
const PENDING_KEY: UniqueKey = UniqueKey {
    table: "apply_control_requests",
    name: "apply_control_requests_pending_key",
    columns: &["apply_id", "kind", "pending_scope"],
};

/// How many times [`request`] retries when the pending request it collided with was resolved before it
/// could be read. Each retry needs an operator to resolve a request in that instant, so this is ample.
const REQUEST_ATTEMPTS: usize = 5;

/// Asks for `kind` on apply `apply_id`, or on its operation `operation_id`, and returns the pending
/// request: a new one, or the one already pending for the same (apply, operation, kind), unchanged
/// (its reason is kept).
///
/// Errors: [`StoreError::ApplyNotFound`]; [`StoreError::ApplyOperationNotFound`] for an operation that
/// does not exist; [`StoreError::InvalidInput`] for an operation of another apply or a reason over
/// 65,535 bytes. Nothing is written on error.
pub fn request(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: Option<ApplyOperationId>,
    kind: ControlRequestKind,
    reason: Option<&str>,
) -> StoreResult<ControlRequest> {
    if let Some(reason) = reason {
        validate::text("reason", reason, false)?;
    }
    db::retry_contention(conn, |conn| {
        db::apply_transaction(conn, |conn| {
            let locked = aggregate::lock_apply(conn, apply_id)?
                .ok_or(StoreError::ApplyNotFound { id: apply_id })?;
            let request = record(conn, apply_id, operation_id, kind, reason)?;
            aggregate::refresh_locked(conn, &locked)?;
            Ok(request)
        })
    })
}

/// [`request`]'s writes, with the apply's row locked.
fn record(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: Option<ApplyOperationId>,
    kind: ControlRequestKind,
    reason: Option<&str>,
) -> StoreResult<ControlRequest> {
    if let Some(operation_id) = operation_id {
        let owner = apply_operations::table
            .find(operation_id)
            .select(apply_operations::apply_id)
            .first::<ApplyId>(conn)
            .optional()?;
        check_operation_owner(owner, operation_id, apply_id, "operation_id")?;
    }
    for _ in 0..REQUEST_ATTEMPTS {
        let now = db::now();
        let inserted = diesel::insert_into(reqs::table)
            .values((
                reqs::apply_id.eq(apply_id),
                reqs::apply_operation_id.eq(operation_id),
                reqs::kind.eq(kind),
                reqs::status.eq(ControlRequestStatus::Pending),
                reqs::reason.eq(reason),
                reqs::created_at.eq(now),
                reqs::updated_at.eq(now),
            ))
            .execute(conn);
        let id = match inserted {
            Ok(_) => ControlRequestId(db::last_insert_id(conn)?),
            Err(err) if db::is_unique_violation_of(conn, &err, &PENDING_KEY) => {
                match pending(conn, apply_id, operation_id, kind)? {
                    Some(existing) => return Ok(existing),
                    // Resolved between our insert and this read: ask again.
                    None => continue,
                }
            }
            Err(err) => return Err(err.into()),
        };
        return get(conn, id)?.ok_or(StoreError::ControlRequestNotFound { id });
    }
    Err(StoreError::invalid(
        "kind",
        format!("the pending {kind} request kept being resolved while this one was being made; ask again"),
    ))
}

/// The pending request for exactly this (apply, operation or whole apply, kind), if any, as committed
/// now: [`request`] reads it after its insert collided with it, so it must see the row the unique key
/// saw even inside a caller's REPEATABLE READ transaction, whose snapshot may predate it. Looked up
/// through the pending key itself (`pending_scope` is the operation id, 0 for the whole apply).
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
    Ok(reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::status.eq(ControlRequestStatus::Pending))
        .order((reqs::created_at.asc(), reqs::id.asc()))
        .select(ControlRequest::as_select())
        .load(conn)?)
}

/// Marks request `id` completed, stamping `completed_at` once. Completing a completed request
/// succeeds; completing a failed one is [`StoreError::ControlRequestResolved`].
pub fn complete(conn: &mut DbConnection, id: ControlRequestId) -> StoreResult<()> {
    resolve(conn, id, ControlRequestStatus::Completed, None)
}

/// Marks request `id` failed with `reason` (1 to 65,535 bytes; a repeat replaces it), stamping
/// `completed_at` once. Failing a completed request is [`StoreError::ControlRequestResolved`].
pub fn fail(conn: &mut DbConnection, id: ControlRequestId, reason: &str) -> StoreResult<()> {
    validate::text("reason", reason, true)?;
    resolve(conn, id, ControlRequestStatus::Failed, Some(reason))
}

/// Moves a pending (or already `status`) request to `status`, stamping `completed_at` once and, when
/// given, replacing the reason. One UPDATE; a second statement only when it matched nothing.
fn resolve(
    conn: &mut DbConnection,
    id: ControlRequestId,
    status: ControlRequestStatus,
    reason: Option<&str>,
) -> StoreResult<()> {
    db::retry_contention(conn, |conn| {
        db::apply_transaction(conn, |conn| {
            let locked = aggregate::lock_apply_of_request(conn, id)?;
            resolve_locked(conn, id, status, reason)?;
            if let Some(locked) = &locked {
                aggregate::refresh_locked(conn, locked)?;
            }
            Ok(())
        })
    })
}

/// [`resolve`]'s UPDATE, with the request's apply locked.
fn resolve_locked(
    conn: &mut DbConnection,
    id: ControlRequestId,
    status: ControlRequestStatus,
    reason: Option<&str>,
) -> StoreResult<()> {
    let now = db::now();
    let target = diesel::update(reqs::table.find(id))
        .filter(reqs::status.eq_any([ControlRequestStatus::Pending, status]));
    let resolution = (
        reqs::status.eq(status),
        reqs::completed_at.eq(super::coalesce_timestamp(
            reqs::completed_at,
            now.nullable(),
        )),
        reqs::updated_at.eq(now),
    );
    let matched = match reason {
        Some(reason) => target
            .set((resolution, reqs::reason.eq(reason)))
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

/// Completes the pending `cutover` request that names operation `operation_id`, or else, when no
/// other operation of the apply is still `waiting_for_cutover`, the apply's whole-apply one. Called by
/// the cutover claim in its transaction.
pub(super) fn complete_cutover(
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
    let pending_cutover = reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::kind.eq(ControlRequestKind::Cutover))
        .filter(reqs::status.eq(ControlRequestStatus::Pending));
    let named = diesel::update(pending_cutover.filter(reqs::apply_operation_id.eq(operation_id)))
        .set(completion)
        .execute(conn)?;
    if named > 0 {
        return Ok(());
    }
    let others_waiting = apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .filter(apply_operations::id.ne(operation_id))
        .filter(apply_operations::state.eq(ApplyState::WaitingForCutover))
        .select(apply_operations::id)
        .first::<ApplyOperationId>(conn)
        .optional()?
        .is_some();
    if !others_waiting {
        diesel::update(pending_cutover.filter(reqs::apply_operation_id.is_null()))
            .set(completion)
            .execute(conn)?;
    }
    Ok(())
}
