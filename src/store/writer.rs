//! The writes an operation row goes through, shared by operators ([`super::apply_operations`]) and by
//! workers holding a lease ([`super::leases`]): each is one UPDATE (in the apply-locking,
//! refreshing transaction of [`write_with_refresh`]) whose target is chosen by the
//! [`Writer`], so an operator write and a fenced worker write are the same statement but for the
//! lease filter.

use diesel::prelude::*;
use diesel::query_dsl::methods::ExecuteDsl;

use super::aggregate::{self, LockedApply};
use super::{claims, coalesce_timestamp, targets, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyOperationId, LeaseToken, OperationLease};
use crate::schema::apply_operations;
use crate::state::{
    automatic_retry_left, clears_lease, is_cancellable, is_failure, is_stoppable, ApplyState,
    ControlRequestKind,
};

/// Who is writing an operation row, and so which rows an UPDATE may touch.
#[derive(Clone, Copy)]
pub(crate) enum Writer<'a> {
    /// An operator or migration: the row with this id, whoever holds it.
    Operator(ApplyOperationId),
    /// A worker: the row only while it still carries this lease's token and owner.
    Lease(&'a OperationLease),
}

impl Writer<'_> {
    /// Runs the UPDATE that writes `changes` to the row, filtered by the lease when there is one,
    /// and returns the rows it matched. Two concrete statements, not one boxed one, each prepared
    /// once per connection ([`db::cached_update`]; Diesel alone would prepare an UPDATE anew on every
    /// call).
    pub(super) fn execute<V>(self, conn: &mut DbConnection, changes: V) -> QueryResult<usize>
    where
        V: AsChangeset<Target = apply_operations::table>,
        Update<is_operation, V>: ExecuteDsl<DbConnection>,
        Update<is_held_by, V>: ExecuteDsl<DbConnection>,
    {
        match self {
            Writer::Operator(id) => {
                db::cached_update(apply_operations::table, is_operation(id), changes).execute(conn)
            }
            Writer::Lease(lease) => db::cached_update(
                apply_operations::table,
                is_held_by(lease.operation_id, lease.token.clone(), lease.owner.clone()),
                changes,
            )
            .execute(conn),
        }
    }

    /// Turns an UPDATE's matched-row count into `Ok` or why nothing matched: the row is gone
    /// ([`StoreError::ApplyOperationNotFound`]) or, for a lease, the row carries another token
    /// ([`StoreError::LeaseLost`]). Both backends report rows *matched* (MySQL through Diesel's
    /// `CLIENT_FOUND_ROWS`), so an idempotent repeat counts 1.
    pub(super) fn expect_row(self, conn: &mut DbConnection, matched: usize) -> StoreResult<()> {
        if matched > 0 {
            return Ok(());
        }
        match self {
            Writer::Operator(id) => Err(StoreError::ApplyOperationNotFound { id }),
            Writer::Lease(lease) => Err(lease_miss(conn, lease.operation_id)?),
        }
    }

    /// The operation written.
    pub(super) fn operation_id(self) -> ApplyOperationId {
        match self {
            Writer::Operator(id) => id,
            Writer::Lease(lease) => lease.operation_id,
        }
    }

    /// Like [`execute`](Self::execute), for a write that moves the operation out of its state into a
    /// non-completing one: through a lease, only while the operation is not settled. A settled
    /// operation keeps its holder's lease (a repeated completion succeeds), but its holder can never
    /// move it on again: such a write is [`StoreError::LeaseLost`] (only an operator's retry revives a
    /// settled operation).
    pub(super) fn execute_moving<V>(self, conn: &mut DbConnection, changes: V) -> QueryResult<usize>
    where
        V: AsChangeset<Target = apply_operations::table>,
        Update<is_operation, V>: ExecuteDsl<DbConnection>,
        Update<is_unsettled_held_by, V>: ExecuteDsl<DbConnection>,
    {
        match self {
            Writer::Operator(id) => {
                db::cached_update(apply_operations::table, is_operation(id), changes).execute(conn)
            }
            Writer::Lease(lease) => db::cached_update(
                apply_operations::table,
                is_unsettled_held_by(lease.operation_id, lease.token.clone(), lease.owner.clone()),
                changes,
            )
            .execute(conn),
        }
    }

    /// Rejects a lease that cannot be a real one before any SQL runs.
    pub(super) fn check(self) -> StoreResult<()> {
        match self {
            Writer::Operator(_) => Ok(()),
            Writer::Lease(lease) => validate::lease(lease),
        }
    }
}

/// The UPDATE of the operation rows `W` selects, prepared once per connection.
pub(super) type Update<W, V> =
    db::CachedUpdate<apply_operations::table, W, <V as AsChangeset>::Changeset>;

/// The operation with this id, whoever holds it.
#[diesel::dsl::auto_type]
pub(super) fn is_operation(operation_id: ApplyOperationId) -> _ {
    apply_operations::id.eq(operation_id)
}

/// The operation while it carries this token and owner.
#[diesel::dsl::auto_type]
pub(super) fn is_held_by(operation_id: ApplyOperationId, token: LeaseToken, owner: String) -> _ {
    apply_operations::id
        .eq(operation_id)
        .and(apply_operations::lease_token.eq(token))
        .and(apply_operations::lease_owner.eq(owner))
}

/// The operation row while it carries this token and owner.
#[diesel::dsl::auto_type]
pub(super) fn held_row(operation_id: ApplyOperationId, token: LeaseToken, owner: String) -> _ {
    let held: is_held_by = is_held_by(operation_id, token, owner);
    apply_operations::table.filter(held)
}

/// [`is_held_by`] while the operation is not settled: four inequalities rather than `NOT IN`, so the
/// statement has one fixed SQL text.
#[diesel::dsl::auto_type]
pub(super) fn is_unsettled_held_by(
    operation_id: ApplyOperationId,
    token: LeaseToken,
    owner: String,
) -> _ {
    let completed: ApplyState = ApplyState::Completed;
    let failed: ApplyState = ApplyState::Failed;
    let cancelled: ApplyState = ApplyState::Cancelled;
    let reverted: ApplyState = ApplyState::Reverted;
    let held: is_held_by = is_held_by(operation_id, token, owner);
    held.and(apply_operations::state.ne(completed))
        .and(apply_operations::state.ne(failed))
        .and(apply_operations::state.ne(cancelled))
        .and(apply_operations::state.ne(reverted))
}

/// Why a leased write matched no row: the row is gone, or its token is no longer the lease's.
pub(super) fn lease_miss(
    conn: &mut DbConnection,
    operation_id: ApplyOperationId,
) -> StoreResult<StoreError> {
    let exists = apply_operations::table
        .find(operation_id)
        .select(apply_operations::id)
        .first::<ApplyOperationId>(conn)
        .optional()?
        .is_some();
    Ok(if exists {
        StoreError::LeaseLost { operation_id }
    } else {
        StoreError::ApplyOperationNotFound { id: operation_id }
    })
}

/// Runs one operation write the way every state write runs: in a write transaction (retried while
/// it loses races, see [`db::retry_fenced_write`]) that first locks the operation's apply row, then runs
/// `write` (the UPDATE of the operation row, given the locked apply, `None` for an operation whose
/// apply is gone), then refreshes the apply's derived state in the same transaction.
fn write_with_refresh(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    mut write: impl FnMut(&mut DbConnection, Option<&LockedApply>) -> StoreResult<()>,
) -> StoreResult<()> {
    writer.check()?;
    let outcome = db::retry_fenced_write(conn, |conn| {
        db::claim_transaction(conn, |conn| {
            let locked = aggregate::lock_apply_of(conn, writer.operation_id())?;
            write(conn, locked.as_ref())?;
            if let Some(locked) = &locked {
                aggregate::refresh_locked(conn, locked)?;
            }
            Ok(())
        })
    })?;
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

/// The changeset of [`unleased`].
pub(super) type Unleased = (
    diesel::dsl::Eq<apply_operations::lease_owner, &'static str>,
    diesel::dsl::Eq<apply_operations::lease_token, &'static str>,
    diesel::dsl::Eq<apply_operations::lease_acquired_at, Option<chrono::NaiveDateTime>>,
    diesel::dsl::Eq<apply_operations::lease_expires_at, Option<chrono::NaiveDateTime>>,
);

/// The lease columns of an operation nobody holds.
pub(super) fn unleased() -> Unleased {
    (
        apply_operations::lease_owner.eq(""),
        apply_operations::lease_token.eq(""),
        apply_operations::lease_acquired_at.eq(None),
        apply_operations::lease_expires_at.eq(None),
    )
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
    let Some(covering) = claims::covering(conn, operation_id)? else {
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

pub(super) fn write_state(
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
        check_leased_write(conn, writer, locked, state)?;
        if state == ApplyState::FailedRetryable {
            if let Some(message) = budget_exhausted(conn, writer, locked)? {
                return completion(conn, writer, locked, ApplyState::Failed, Some(&message));
            }
        }
        let moved = (
            apply_operations::state.eq(state),
            apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
            apply_operations::holds_target.eq(targets::hold_for(state)),
            apply_operations::failure_seq.eq(None::<i64>),
            apply_operations::updated_at.eq(db::now()),
        );
        // Nobody holds an operation in these states: the lease goes in the same UPDATE, so a holder
        // that stalled past this write is fenced off (docs/worker-contract.md, "Leased writes").
        let written = if clears_lease(state) {
            writer.execute_moving(conn, (moved, unleased()))
        } else {
            writer.execute_moving(conn, moved)
        };
        match written {
            Ok(matched) => writer.expect_row(conn, matched),
            Err(err) => Err(write_error(conn, err, writer, locked)),
        }
    })
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

pub(super) fn write_started(conn: &mut DbConnection, writer: Writer<'_>) -> StoreResult<()> {
    write_with_refresh(conn, writer, |conn, locked| {
        check_leased_write(conn, writer, locked, ApplyState::Running)?;
        let now = db::now();
        let written = writer.execute_moving(
            conn,
            (
                apply_operations::state.eq(ApplyState::Running),
                apply_operations::started_at.eq(coalesce_timestamp(
                    apply_operations::started_at,
                    now.nullable(),
                )),
                apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
                apply_operations::holds_target.eq(Some(true)),
                apply_operations::failure_seq.eq(None::<i64>),
                apply_operations::updated_at.eq(now),
            ),
        );
        match written {
            Ok(matched) => writer.expect_row(conn, matched),
            Err(err) => Err(write_error(conn, err, writer, locked)),
        }
    })
}

pub(super) fn write_failed(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    message: &str,
) -> StoreResult<()> {
    validate::text("error_message", message, true, validate::TextKind::Quoted)?;
    write_completion(conn, writer, ApplyState::Failed, Some(message))
}

pub(super) fn write_terminal(
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

/// The states that stamp `completed_at`: the terminal ones except `stopped`, which can resume.
fn completes(state: ApplyState) -> bool {
    state.is_terminal() && state != ApplyState::Stopped
}

pub(super) fn write_completion(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    state: ApplyState,
    error_message: Option<&str>,
) -> StoreResult<()> {
    write_with_refresh(conn, writer, |conn, locked| {
        check_leased_write(conn, writer, locked, state)?;
        completion(conn, writer, locked, state, error_message)
    })
}

/// The UPDATE of a move into completing `state`: `completed_at` stamped once, the error message set
/// when given, and the target let go unless the state is `failed` (whose hold the refresh decides).
fn completion(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    locked: Option<&LockedApply>,
    state: ApplyState,
    error_message: Option<&str>,
) -> StoreResult<()> {
    debug_assert!(completes(state));
    let now = db::now();
    let stamp_completion = (
        apply_operations::state.eq(state),
        apply_operations::completed_at.eq(coalesce_timestamp(
            apply_operations::completed_at,
            now.nullable(),
        )),
        apply_operations::updated_at.eq(now),
    );
    // A holder's settling write keeps its token and owner (a repeat under the lease succeeds) but not
    // the expiry: the claims find expired leases through an index on it, which so holds only
    // operations in flight. An operator settling an operation someone holds takes it from them: the
    // whole lease goes in the same UPDATE, so the holder finds it lost ([`StoreError::LeaseLost`])
    // rather than its lease left on a row it no longer drives. A macro rather than a generic
    // function: each arm is one concrete statement.
    macro_rules! settle {
        ($changes:expr) => {
            match writer {
                Writer::Operator(id) => db::cached_update(
                    apply_operations::table,
                    is_operation(id),
                    ($changes, unleased()),
                )
                .execute(conn),
                Writer::Lease(_) => writer.execute(
                    conn,
                    (
                        $changes,
                        apply_operations::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
                    ),
                ),
            }
        };
    }
    let written = match (error_message, state == ApplyState::Failed) {
        (Some(message), true) => settle!((
            stamp_completion,
            apply_operations::error_message.eq(message.to_owned()),
        )),
        (Some(message), false) => settle!((
            stamp_completion,
            apply_operations::error_message.eq(message.to_owned()),
            apply_operations::holds_target.eq(None::<bool>),
            apply_operations::failure_seq.eq(None::<i64>),
        )),
        // A failure keeps the number it has (a repeat) or gets one from the refresh.
        (None, true) => settle!(stamp_completion),
        (None, false) if is_failure(state) => settle!((
            stamp_completion,
            apply_operations::holds_target.eq(None::<bool>),
        )),
        (None, false) => settle!((
            stamp_completion,
            apply_operations::holds_target.eq(None::<bool>),
            apply_operations::failure_seq.eq(None::<i64>),
        )),
    };
    match written {
        Ok(matched) => writer.expect_row(conn, matched),
        Err(err) => Err(write_error(conn, err, writer, locked)),
    }
}
