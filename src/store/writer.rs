//! The writes an operation row goes through, shared by operators ([`super::apply_operations`]) and by
//! workers holding a lease ([`super::leases`]): each is one UPDATE (in the apply-locking,
//! refreshing transaction of [`write_with_refresh`]) whose target is chosen by the
//! [`Writer`], so an operator write and a fenced worker write are the same statement but for the
//! lease filter.

use diesel::prelude::*;
use diesel::query_dsl::methods::ExecuteDsl;

use super::aggregate::{self, LockedApply};
use super::{coalesce_timestamp, targets, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyOperationId, LeaseToken, OperationLease};
use crate::schema::apply_operations;
use crate::state::ApplyState;

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
    /// and returns the rows it matched. Two concrete statements, not one boxed one: Diesel caches a
    /// statement it can name by type, and re-prepares a boxed one on every call.
    pub(super) fn execute<V>(self, conn: &mut DbConnection, changes: V) -> QueryResult<usize>
    where
        V: AsChangeset<Target = apply_operations::table>,
        diesel::dsl::Update<operator_row, V>: ExecuteDsl<DbConnection>,
        diesel::dsl::Update<held_row, V>: ExecuteDsl<DbConnection>,
    {
        match self {
            Writer::Operator(id) => diesel::update(operator_row(id)).set(changes).execute(conn),
            Writer::Lease(lease) => diesel::update(held_row(
                lease.operation_id,
                lease.token.clone(),
                lease.owner.clone(),
            ))
            .set(changes)
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

    /// Rejects a lease that cannot be a real one before any SQL runs.
    pub(super) fn check(self) -> StoreResult<()> {
        match self {
            Writer::Operator(_) => Ok(()),
            Writer::Lease(lease) => validate::lease(lease),
        }
    }
}

/// The operation row with this id, whoever holds it.
#[diesel::dsl::auto_type]
pub(super) fn operator_row(operation_id: ApplyOperationId) -> _ {
    apply_operations::table.filter(apply_operations::id.eq(operation_id))
}

/// The operation row while it carries this token and owner.
#[diesel::dsl::auto_type]
pub(super) fn held_row(operation_id: ApplyOperationId, token: LeaseToken, owner: String) -> _ {
    apply_operations::table
        .filter(apply_operations::id.eq(operation_id))
        .filter(apply_operations::lease_token.eq(token))
        .filter(apply_operations::lease_owner.eq(owner))
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

/// Runs one operation write the way every state write runs: in a write transaction (retried on a lost
/// deadlock, see [`db::retry_contention`]) that first locks the operation's apply row, then runs
/// `write` (the UPDATE of the operation row, given the locked apply, `None` for an operation whose
/// apply is gone), then refreshes the apply's derived state in the same transaction.
fn write_with_refresh(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    mut write: impl FnMut(&mut DbConnection, Option<&LockedApply>) -> StoreResult<()>,
) -> StoreResult<()> {
    writer.check()?;
    db::retry_contention(conn, |conn| {
        db::apply_transaction(conn, |conn| {
            let locked = aggregate::lock_apply_of(conn, writer.operation_id())?;
            write(conn, locked.as_ref())?;
            if let Some(locked) = &locked {
                aggregate::refresh_locked(conn, locked)?;
            }
            Ok(())
        })
    })
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
        if state == ApplyState::FailedRetryable {
            if let Some(message) = budget_exhausted(conn, writer, locked)? {
                return completion(conn, writer, locked, ApplyState::Failed, Some(&message));
            }
        }
        let written = writer.execute(
            conn,
            (
                apply_operations::state.eq(state),
                apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
                apply_operations::holds_target.eq(targets::hold_for(state)),
                apply_operations::updated_at.eq(db::now()),
            ),
        );
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
        Some(attempt) if attempt >= locked.row.max_attempts => {
            Some(format!("retry budget exhausted after {attempt} attempts"))
        }
        _ => None,
    })
}

pub(super) fn write_started(conn: &mut DbConnection, writer: Writer<'_>) -> StoreResult<()> {
    write_with_refresh(conn, writer, |conn, locked| {
        let now = db::now();
        let written = writer.execute(
            conn,
            (
                apply_operations::state.eq(ApplyState::Running),
                apply_operations::started_at.eq(coalesce_timestamp(
                    apply_operations::started_at,
                    now.nullable(),
                )),
                apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
                apply_operations::holds_target.eq(Some(true)),
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
    validate::text("error_message", message, true)?;
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
    let written = match (error_message, state == ApplyState::Failed) {
        (Some(message), true) => writer.execute(
            conn,
            (
                stamp_completion,
                apply_operations::error_message.eq(message.to_owned()),
            ),
        ),
        (Some(message), false) => writer.execute(
            conn,
            (
                stamp_completion,
                apply_operations::error_message.eq(message.to_owned()),
                apply_operations::holds_target.eq(None::<bool>),
            ),
        ),
        (None, true) => writer.execute(conn, stamp_completion),
        (None, false) => writer.execute(
            conn,
            (
                stamp_completion,
                apply_operations::holds_target.eq(None::<bool>),
            ),
        ),
    };
    match written {
        Ok(matched) => writer.expect_row(conn, matched),
        Err(err) => Err(write_error(conn, err, writer, locked)),
    }
}
