//! The state writes of an operation row, shared by operators (`apply_operations`)
//! and by workers holding a lease (`leases`): each is one UPDATE, run as a unit of
//! work on the operation's apply ([`unit::run`]), whose target the [`Writer`] chooses, so an
//! operator write and a fenced worker write are the same statement but for the lease filter.

use diesel::prelude::*;

use super::moves::{completes, Move, Mover};
use super::rows::{self, held_row, lease_miss, Writer};
use super::unit::{self, Lock, LockedApply, OnLostRace};
use super::{targets, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::ApplyOperationId;
use crate::schema::apply_operations;
use crate::state::{
    automatic_retry_left, is_cancellable, is_stoppable, ApplyState, ControlRequestKind,
};

/// Runs one operation write as a unit of work on its apply ([`unit::run`], retried patiently while
/// it loses races): `write` is the UPDATE of the operation row, given the locked apply (`None` for
/// an operation whose apply is gone).
fn write_with_refresh(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    mut write: impl FnMut(&mut DbConnection, Option<&mut LockedApply>) -> StoreResult<()>,
) -> StoreResult<()> {
    writer.check()?;
    let outcome = unit::run(
        conn,
        Lock::ApplyOf(writer.operation_id()),
        OnLostRace::RetryPatiently,
        |conn, locked| write(conn, locked),
    )?;
    match outcome {
        db::TransactionOutcome::Committed(()) => Ok(()),
        // COMMIT was sent and its answer lost with the connection: the caller repeats it (every
        // write here is idempotent under the lease, and an operator's writes the same values).
        db::TransactionOutcome::Unknown { error, .. } => Err(StoreError::WriteOutcomeUnknown {
            operation_id: writer.operation_id(),
            source: error,
        }),
    }
}

/// What a holder may not write while requests are pending (`docs/worker-contract.md`, "What a
/// holder does"), checked in the write's transaction with the apply locked. Operators' unguarded writes are
/// not checked. Costs a statement only when the apply has a pending request, or for a cutover in an
/// apply that defers cutovers:
/// - `stopped` needs a pending `stop` covering the operation, `cancelled` a pending `cancel`
///   ([`StoreError::NoPendingRequest`]);
/// - `cutting_over` is refused while a stop or cancel covers it ([`StoreError::StopPending`]), and in
///   an apply that defers cutovers unless it is already cutting over
///   ([`StoreError::CutoverDeferred`]);
/// - out of `revert_window`, only to `reverting` while a revert is pending and to `skipping_revert`
///   while a skip-revert is ([`StoreError::RevertPending`]).
fn leased_write_refusal(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&LockedApply>,
    state: ApplyState,
) -> StoreResult<Option<StoreError>> {
    let (Writer::Lease(lease), Some(locked)) = (writer, locked) else {
        return Ok(None);
    };
    let operation_id = lease.operation_id;
    let needs = match state {
        ApplyState::Stopped => Some(ControlRequestKind::Stop),
        ApplyState::Cancelled => Some(ControlRequestKind::Cancel),
        _ => None,
    };
    let deferred_cutover = state == ApplyState::CuttingOver && locked.row.defer_cutover;
    if !locked.requests_pending && !deferred_cutover {
        return Ok(needs.map(|kind| StoreError::NoPendingRequest { operation_id, kind }));
    }
    // Not found: the write itself reports the missing row or the lost lease.
    let Some(covering) = rows::covering(conn, operation_id)? else {
        return Ok(None);
    };
    let current = ApplyState::from_stored(&covering.state);
    // A request covers an operation only in the states it covers: a stop never stops a cutover in
    // flight, a cancel never cancels one.
    let covers = |covered: fn(ApplyState) -> bool| current.is_some_and(covered);
    match needs {
        Some(ControlRequestKind::Stop) if !covering.stop || !covers(is_stoppable) => {
            return Ok(Some(StoreError::NoPendingRequest {
                operation_id,
                kind: ControlRequestKind::Stop,
            }))
        }
        Some(ControlRequestKind::Cancel) if !covering.cancel || !covers(is_cancellable) => {
            return Ok(Some(StoreError::NoPendingRequest {
                operation_id,
                kind: ControlRequestKind::Cancel,
            }))
        }
        _ => {}
    }
    if state == ApplyState::CuttingOver && current != Some(ApplyState::CuttingOver) {
        if covering.stop || covering.cancel {
            let kind = if covering.cancel {
                ControlRequestKind::Cancel
            } else {
                ControlRequestKind::Stop
            };
            return Ok(Some(StoreError::StopPending { operation_id, kind }));
        }
        if deferred_cutover {
            return Ok(Some(StoreError::CutoverDeferred { operation_id }));
        }
    }
    if current == Some(ApplyState::RevertWindow) && state != ApplyState::RevertWindow {
        if covering.revert && state != ApplyState::Reverting {
            return Ok(Some(StoreError::RevertPending {
                operation_id,
                kind: ControlRequestKind::Revert,
            }));
        }
        if covering.skip_revert && state != ApplyState::SkippingRevert {
            return Ok(Some(StoreError::RevertPending {
                operation_id,
                kind: ControlRequestKind::SkipRevert,
            }));
        }
    }
    Ok(None)
}

/// [`leased_write_refusal`] as a result: a refused write by a holder that has lost its lease is
/// [`StoreError::LeaseLost`] (or the row is gone), as any write through a stale lease is.
fn check_leased_write(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&LockedApply>,
    state: ApplyState,
) -> StoreResult<()> {
    let Some(refusal) = leased_write_refusal(conn, writer, locked, state)? else {
        return Ok(());
    };
    if let Writer::Lease(lease) = writer {
        let held = held_row(lease.operation_id, lease.token.clone(), lease.owner.clone())
            .select(apply_operations::id)
            .first::<ApplyOperationId>(conn)
            .optional()?
            .is_some();
        if !held {
            return Err(lease_miss(conn, lease.operation_id)?);
        }
    }
    Err(refusal)
}

/// The error of an operation UPDATE: [`StoreError::TargetBusy`] when it would make the operation hold
/// a target another apply holds, else the database's error.
fn write_error(
    conn: &mut DbConnection,
    err: diesel::result::Error,
    writer: Writer<'_>,
    locked: Option<&LockedApply>,
) -> StoreError {
    let Some(locked) = locked else {
        return err.into();
    };
    let deployment = apply_operations::table
        .find(writer.operation_id())
        .select(apply_operations::deployment)
        .first::<String>(conn);
    match deployment {
        Ok(deployment) => targets::busy_or(
            conn,
            err,
            Some(locked.row.id),
            &locked.row.database_name,
            &locked.row.environment,
            &[deployment.as_str()],
        ),
        Err(_) => err.into(),
    }
}

pub(in crate::store) fn write_state(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    state: ApplyState,
) -> StoreResult<()> {
    if completes(state) {
        return Err(StoreError::invalid(
            "state",
            format!(
                "{state} stamps completed_at; use mark_completed, mark_failed or mark_terminal instead"
            ),
        ));
    }
    write_with_refresh(conn, writer, |conn, locked| {
        check_leased_write(conn, writer, locked.as_deref(), state)?;
        if state == ApplyState::FailedRetryable {
            if let Some(message) = budget_exhausted(conn, writer, locked.as_deref())? {
                return completion(conn, writer, locked, ApplyState::Failed, Some(&message));
            }
        }
        // Nobody holds an operation in some states: the lease goes in the same UPDATE, so a holder
        // that stalled past this write is fenced off (docs/worker-contract.md, "Leased writes").
        write_move(
            conn,
            writer,
            locked,
            Move::to(state, mover(writer)),
            Moving::OutOfItsState,
        )
    })
}

/// Whether a write moves the operation on from its state (through a lease, only while it is
/// unsettled: [`Writer::execute_moving`]) or completes it ([`Writer::execute`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moving {
    OutOfItsState,
    ToCompletion,
}

/// The UPDATE of `moved` on the writer's row, storing with it the claim rules' decision for the row
/// as the move leaves it: the apply's operations are read first ([`unit::ApplyView`]), and the
/// unit's refresh reuses them instead of reading them again.
fn write_move(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&mut LockedApply>,
    moved: Move<'_>,
    moving: Moving,
) -> StoreResult<()> {
    let (decided, takes_target) = match locked.as_deref() {
        Some(locked) => {
            let view = unit::ApplyView::read(conn, locked)?;
            let id = writer.operation_id();
            (
                view.after_move(id, &moved, locked.now),
                view.move_takes_target(id, &moved, locked.now),
            )
        }
        None => (None, true),
    };
    let (facts, decision) = match decided {
        Some((facts, (copy, cutover))) => (
            Some(facts),
            Some((
                apply_operations::copy_claim.eq(copy),
                apply_operations::cutover_claim.eq(cutover),
            )),
        ),
        None => (None, None),
    };
    let changes = (moved.changes(), decision);
    let write = |conn: &mut DbConnection| match moving {
        Moving::OutOfItsState => writer.execute_moving(conn, changes),
        Moving::ToCompletion => writer.execute(conn, changes),
    };
    // Only a write that takes the target can fail on its key and be answered with its holder.
    let written = if takes_target {
        db::recoverable(conn, write)
    } else {
        write(conn)
    };
    match written {
        Ok(matched) => {
            writer.expect_row(conn, matched)?;
            if let Some(locked) = locked {
                locked.facts = facts;
            }
            Ok(())
        }
        Err(err) => Err(write_error(conn, err, writer, locked.as_deref())),
    }
}

/// For a write of `failed_retryable`: the message to store `failed` with instead when the operation
/// has no attempt left under its apply's retry budget, else `None`.
fn budget_exhausted(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&LockedApply>,
) -> StoreResult<Option<String>> {
    let Some(locked) = locked else {
        return Ok(None);
    };
    let attempt: Option<i32> = apply_operations::table
        .find(writer.operation_id())
        .select(apply_operations::attempt)
        .first(conn)
        .optional()?;
    Ok(match attempt {
        Some(attempt) if !automatic_retry_left(attempt, locked.row.max_attempts) => {
            Some(format!("retry budget exhausted after {attempt} attempts"))
        }
        _ => None,
    })
}

pub(in crate::store) fn write_started(
    conn: &mut DbConnection,
    writer: Writer<'_>,
) -> StoreResult<()> {
    write_with_refresh(conn, writer, |conn, locked| {
        check_leased_write(conn, writer, locked.as_deref(), ApplyState::Running)?;
        write_move(
            conn,
            writer,
            locked,
            Move::start(mover(writer)),
            Moving::OutOfItsState,
        )
    })
}

pub(in crate::store) fn write_failed(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    message: &str,
) -> StoreResult<()> {
    validate::text("error_message", message, true, validate::TextKind::Quoted)?;
    write_completion(conn, writer, ApplyState::Failed, Some(message))
}

pub(in crate::store) fn write_terminal(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    state: ApplyState,
) -> StoreResult<()> {
    match state {
        ApplyState::Cancelled | ApplyState::Reverted | ApplyState::Completed => {
            write_completion(conn, writer, state, None)
        }
        ApplyState::Failed => Err(StoreError::invalid(
            "state",
            "failed needs an error message; use mark_failed",
        )),
        ApplyState::Stopped => Err(StoreError::invalid(
            "state",
            "stopped can resume, so it keeps completed_at NULL; use update_state",
        )),
        other => Err(StoreError::invalid(
            "state",
            format!("{other} is not terminal; use update_state"),
        )),
    }
}

pub(in crate::store) fn write_completion(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    state: ApplyState,
    error_message: Option<&str>,
) -> StoreResult<()> {
    write_with_refresh(conn, writer, |conn, locked| {
        check_leased_write(conn, writer, locked.as_deref(), state)?;
        completion(conn, writer, locked, state, error_message)
    })
}

/// The UPDATE of a move into completing `state` ([`Move`]), with `error_message` when given.
fn completion(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&mut LockedApply>,
    state: ApplyState,
    error_message: Option<&str>,
) -> StoreResult<()> {
    debug_assert!(completes(state));
    let mut moved = Move::to(state, mover(writer));
    if let Some(message) = error_message {
        moved = moved.with_message(message);
    }
    // Through a lease, not only while unsettled: a holder's repeated completion succeeds.
    write_move(conn, writer, locked, moved, Moving::ToCompletion)
}

/// Who a [`Writer`] moves an operation as.
fn mover(writer: Writer<'_>) -> Mover {
    match writer {
        Writer::Operator(_) => Mover::Other,
        Writer::Lease(_) => Mover::Holder,
    }
}
