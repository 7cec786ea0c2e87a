//! The `apply_operations` store: one row per (apply, deployment).
//!
//! Every write is a single statement on every path (an UPDATE that reports zero matched rows is a
//! missing id) and idempotent: repeating it succeeds and keeps the timestamps already stamped.
//! Timestamp rules: `started_at` is stamped by the first [`mark_started`]; `completed_at` is stamped by
//! the first move into a completing state ([`mark_completed`], [`mark_failed`], [`mark_terminal`]) and
//! cleared by any move back to a non-completing one, so it is set exactly while the state is completed,
//! failed, cancelled or reverted. `stopped` is not completing: a stopped operation can resume.

use diesel::prelude::*;

use super::leases::OperationLease;
use super::{coalesce_timestamp, validate, with_known_state, with_known_states};
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyOperation, NewApplyOperation};
use crate::schema::{apply_operations, tasks};
use crate::state::ApplyState;

/// One operation per deployment of an apply. The name is the same on both backends.
const APPLY_DEPLOYMENT_KEY: UniqueKey = UniqueKey {
    table: "apply_operations",
    name: "apply_operations_apply_id_deployment_key",
    columns: &["apply_id", "deployment"],
};

/// Inserts a `pending` operation and returns its id.
///
/// Errors: [`StoreError::InvalidInput`] for a deployment that is empty, longer than 255 characters or
/// ends in a space, or a target longer than 255 characters; [`StoreError::ApplyOperationExists`] when
/// the apply already has an operation for this deployment. Two statements on MySQL (the INSERT and
/// `LAST_INSERT_ID()`).
pub fn insert(conn: &mut DbConnection, new: &NewApplyOperation) -> StoreResult<i64> {
    validate::key_varchar("deployment", &new.deployment)?;
    validate::optional_varchar("target", &new.target)?;
    // created_at orders the claims: it is read once this insert's write is serialised (SQLite's write
    // lock), so no sibling committed meanwhile can come out later than it.
    db::serialized_write(conn, |conn| {
        let now = db::now();
        let inserted = diesel::insert_into(apply_operations::table)
            .values((
                apply_operations::apply_id.eq(new.apply_id),
                apply_operations::deployment.eq(&new.deployment),
                apply_operations::target.eq(&new.target),
                apply_operations::cutover_policy.eq(new.cutover_policy.as_str()),
                apply_operations::on_failure.eq(new.on_failure.as_str()),
                apply_operations::state.eq(ApplyState::Pending.as_str()),
                apply_operations::created_at.eq(now),
                apply_operations::updated_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => Ok(db::last_insert_id(conn)?),
            Err(err) if db::is_unique_violation_of(conn, &err, &APPLY_DEPLOYMENT_KEY) => {
                Err(StoreError::ApplyOperationExists {
                    apply_id: new.apply_id,
                    deployment: new.deployment.clone(),
                })
            }
            Err(err) => Err(err.into()),
        }
    })
}

/// The operation with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: i64) -> StoreResult<Option<ApplyOperation>> {
    let row = apply_operations::table
        .find(id)
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?;
    with_known_state(row)
}

/// The operation of `apply_id` for `deployment`, or `None`.
///
/// `deployment` is compared exactly, byte for byte, on every backend (`"east "` does not find
/// `"east"`). A deployment [`insert`] would reject (empty, over 255 characters, a trailing space)
/// finds nothing, without a query.
pub fn get_by_apply_and_deployment(
    conn: &mut DbConnection,
    apply_id: i64,
    deployment: &str,
) -> StoreResult<Option<ApplyOperation>> {
    if !validate::is_storable_key(deployment) {
        return Ok(None);
    }
    let row = apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .filter(apply_operations::deployment.eq(deployment))
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?;
    with_known_state(row)
}

/// The operations of `apply_id`, oldest first by (`created_at`, `id`); empty for an unknown apply.
pub fn list_by_apply(conn: &mut DbConnection, apply_id: i64) -> StoreResult<Vec<ApplyOperation>> {
    let rows = apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .order((
            apply_operations::created_at.asc(),
            apply_operations::id.asc(),
        ))
        .select(ApplyOperation::as_select())
        .load(conn)?;
    with_known_states(rows)
}

/// Moves operation `id` to `state`, which must not be a completing state (completed, failed,
/// cancelled, reverted: those go through [`mark_completed`], [`mark_failed`] and [`mark_terminal`], so
/// `completed_at` is stamped). Clears `completed_at`, e.g. when an operator sends a failed operation
/// back to `pending`. `stopped` goes through here and keeps `completed_at` NULL because it can resume.
///
/// This and the other unguarded writes are for operators and migrations; workers use the leased forms
/// in [`super::leases`], which cannot overwrite an operation another worker has claimed since.
pub fn update_state(conn: &mut DbConnection, id: i64, state: ApplyState) -> StoreResult<()> {
    write_state(conn, Writer::Operator(id), state)
}

/// Moves operation `id` to `running`, stamping `started_at` the first time only.
pub fn mark_started(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    write_started(conn, Writer::Operator(id))
}

/// Moves operation `id` to `completed`, stamping `completed_at` the first time only.
pub fn mark_completed(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    write_completion(conn, Writer::Operator(id), ApplyState::Completed, None)
}

/// Moves operation `id` to `failed` with `message` (1 to 65,535 bytes, stored verbatim; a repeat
/// replaces it), stamping `completed_at` the first time only.
pub fn mark_failed(conn: &mut DbConnection, id: i64, message: &str) -> StoreResult<()> {
    write_failed(conn, Writer::Operator(id), message)
}

/// Moves operation `id` to a completing state without an error message (`cancelled`, `reverted`, or
/// `completed`), stamping `completed_at` the first time only. `failed` needs [`mark_failed`] and
/// `stopped` needs [`update_state`]; any other state is [`StoreError::InvalidInput`].
pub fn mark_terminal(conn: &mut DbConnection, id: i64, state: ApplyState) -> StoreResult<()> {
    write_terminal(conn, Writer::Operator(id), state)
}

/// Deletes every operation of `apply_id` and returns how many there were (0 for an unknown apply).
///
/// Tasks that pointed at them are kept and unlinked (`apply_operation_id` set to NULL) in the same
/// write transaction, so no task is left pointing at a deleted row.
pub fn delete_by_apply(conn: &mut DbConnection, apply_id: i64) -> StoreResult<usize> {
    db::write_transaction(conn, |conn| {
        let deleted =
            diesel::delete(apply_operations::table.filter(apply_operations::apply_id.eq(apply_id)))
                .execute(conn)?;
        if deleted > 0 {
            diesel::update(
                tasks::table
                    .filter(tasks::apply_id.eq(apply_id))
                    .filter(tasks::apply_operation_id.is_not_null()),
            )
            .set((
                tasks::apply_operation_id.eq(None::<i64>),
                tasks::updated_at.eq(db::now()),
            ))
            .execute(conn)?;
        }
        Ok(deleted)
    })
}

/// Who is writing an operation row, and so which rows an UPDATE may touch.
#[derive(Clone, Copy)]
pub(super) enum Writer<'a> {
    /// An operator or migration: the row with this id, whoever holds it.
    Operator(i64),
    /// A worker: the row only while it still carries this lease's token and owner.
    Lease(&'a OperationLease),
}

impl Writer<'_> {
    /// The UPDATE's target: the row, filtered by the lease when there is one. Boxed because the two
    /// filters are different types.
    pub(super) fn update(self) -> BoxedOperationUpdate<'static> {
        let target = diesel::update(apply_operations::table).into_boxed();
        match self {
            Writer::Operator(id) => target.filter(apply_operations::id.eq(id)),
            Writer::Lease(lease) => target
                .filter(apply_operations::id.eq(lease.operation_id))
                .filter(apply_operations::lease_token.eq(lease.token.clone()))
                .filter(apply_operations::lease_owner.eq(lease.owner.clone())),
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

    /// Rejects a lease that cannot be a real one before any SQL runs.
    fn check(self) -> StoreResult<()> {
        match self {
            Writer::Operator(_) => Ok(()),
            Writer::Lease(lease) => lease.check(),
        }
    }
}

type BoxedOperationUpdate<'a> =
    diesel::query_builder::BoxedUpdateStatement<'a, db::MultiBackend, apply_operations::table>;

/// Why a leased write matched no row: the row is gone, or its token is no longer the lease's.
pub(super) fn lease_miss(conn: &mut DbConnection, operation_id: i64) -> StoreResult<StoreError> {
    let exists = apply_operations::table
        .find(operation_id)
        .select(apply_operations::id)
        .first::<i64>(conn)
        .optional()?
        .is_some();
    Ok(if exists {
        StoreError::LeaseLost { operation_id }
    } else {
        StoreError::ApplyOperationNotFound { id: operation_id }
    })
}

pub(super) fn write_state(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    state: ApplyState,
) -> StoreResult<()> {
    writer.check()?;
    if completes(state) {
        return Err(StoreError::invalid(
            "state",
            format!(
                "{state} stamps completed_at; use mark_completed, mark_failed or mark_terminal instead"
            ),
        ));
    }
    let matched = writer
        .update()
        .set((
            apply_operations::state.eq(state.as_str()),
            apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
            apply_operations::updated_at.eq(db::now()),
        ))
        .execute(conn)?;
    writer.expect_row(conn, matched)
}

pub(super) fn write_started(conn: &mut DbConnection, writer: Writer<'_>) -> StoreResult<()> {
    writer.check()?;
    let now = db::now();
    let matched = writer
        .update()
        .set((
            apply_operations::state.eq(ApplyState::Running.as_str()),
            apply_operations::started_at.eq(coalesce_timestamp(
                apply_operations::started_at,
                now.nullable(),
            )),
            apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
            apply_operations::updated_at.eq(now),
        ))
        .execute(conn)?;
    writer.expect_row(conn, matched)
}

pub(super) fn write_failed(
    conn: &mut DbConnection,
    writer: Writer<'_>,
    message: &str,
) -> StoreResult<()> {
    writer.check()?;
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
    writer.check()?;
    debug_assert!(completes(state));
    let now = db::now();
    let stamp_completion = (
        apply_operations::state.eq(state.as_str()),
        apply_operations::completed_at.eq(coalesce_timestamp(
            apply_operations::completed_at,
            now.nullable(),
        )),
        apply_operations::updated_at.eq(now),
    );
    let matched = match error_message {
        Some(message) => writer
            .update()
            .set((
                stamp_completion,
                apply_operations::error_message.eq(message.to_owned()),
            ))
            .execute(conn)?,
        None => writer.update().set(stamp_completion).execute(conn)?,
    };
    writer.expect_row(conn, matched)
}
