//! The `apply_operations` store: one row per (apply, deployment).
//!
//! Every write is a single statement on every path (an UPDATE that reports zero matched rows is a
//! missing id) and idempotent: repeating it succeeds and keeps the timestamps already stamped.
//! Timestamp rules: `started_at` is stamped by the first [`mark_started`]; `completed_at` is stamped by
//! the first move into a completing state ([`mark_completed`], [`mark_failed`], [`mark_terminal`]) and
//! cleared by any move back to a non-completing one, so it is set exactly while the state is completed,
//! failed, cancelled or reverted. `stopped` is not completing: a stopped operation can resume.

use diesel::prelude::*;

use super::{coalesce_timestamp, expect_row, validate, with_known_state, with_known_states};
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
    let now = db::now();
    let inserted = diesel::insert_into(apply_operations::table)
        .values((
            new,
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
pub fn get_by_apply_and_deployment(
    conn: &mut DbConnection,
    apply_id: i64,
    deployment: &str,
) -> StoreResult<Option<ApplyOperation>> {
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
pub fn update_state(conn: &mut DbConnection, id: i64, state: ApplyState) -> StoreResult<()> {
    if completes(state) {
        return Err(StoreError::invalid(
            "state",
            format!(
                "{state} stamps completed_at; use mark_completed, mark_failed or mark_terminal instead"
            ),
        ));
    }
    let matched = diesel::update(apply_operations::table.find(id))
        .set((
            apply_operations::state.eq(state.as_str()),
            apply_operations::completed_at.eq(None::<chrono::NaiveDateTime>),
            apply_operations::updated_at.eq(db::now()),
        ))
        .execute(conn)?;
    expect_row(matched, || StoreError::ApplyOperationNotFound { id })
}

/// Moves operation `id` to `running`, stamping `started_at` the first time only.
pub fn mark_started(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    let now = db::now();
    let matched = diesel::update(apply_operations::table.find(id))
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
    expect_row(matched, || StoreError::ApplyOperationNotFound { id })
}

/// Moves operation `id` to `completed`, stamping `completed_at` the first time only.
pub fn mark_completed(conn: &mut DbConnection, id: i64) -> StoreResult<()> {
    complete(conn, id, ApplyState::Completed, None)
}

/// Moves operation `id` to `failed` with `message` (1 to 65,535 bytes, stored verbatim; a repeat
/// replaces it), stamping `completed_at` the first time only.
pub fn mark_failed(conn: &mut DbConnection, id: i64, message: &str) -> StoreResult<()> {
    validate::text("error_message", message, true)?;
    complete(conn, id, ApplyState::Failed, Some(message))
}

/// Moves operation `id` to a completing state without an error message (`cancelled`, `reverted`, or
/// `completed`), stamping `completed_at` the first time only. `failed` needs [`mark_failed`] and
/// `stopped` needs [`update_state`]; any other state is [`StoreError::InvalidInput`].
pub fn mark_terminal(conn: &mut DbConnection, id: i64, state: ApplyState) -> StoreResult<()> {
    match state {
        ApplyState::Cancelled | ApplyState::Reverted | ApplyState::Completed => {
            complete(conn, id, state, None)
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

/// The states that stamp `completed_at`: the terminal ones except `stopped`, which can resume.
fn completes(state: ApplyState) -> bool {
    state.is_terminal() && state != ApplyState::Stopped
}

fn complete(
    conn: &mut DbConnection,
    id: i64,
    state: ApplyState,
    error_message: Option<&str>,
) -> StoreResult<()> {
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
    let target = diesel::update(apply_operations::table.find(id));
    let matched = match error_message {
        Some(message) => target
            .set((
                stamp_completion,
                apply_operations::error_message.eq(message),
            ))
            .execute(conn)?,
        None => target.set(stamp_completion).execute(conn)?,
    };
    expect_row(matched, || StoreError::ApplyOperationNotFound { id })
}
