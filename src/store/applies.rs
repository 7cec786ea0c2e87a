//! The `applies` store: the parent rows operations and tasks belong to.

use diesel::prelude::*;

use super::{apply_operations, control_requests, tasks, validate};
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{Apply, ApplyId, DeletedRollout, NewApply, Rollout, RolloutOperation};
use crate::schema::{
    applies, apply_control_requests, apply_operations as ops, tasks as tasks_table,
};
use crate::state::ApplyState;

const IDENTIFIER_KEY: UniqueKey = UniqueKey {
    table: "applies",
    name: "applies_apply_identifier_key",
    columns: &["apply_identifier"],
};

/// Inserts a `pending` apply and returns its id.
///
/// Errors: [`StoreError::InvalidInput`] for an empty or over-long (255 characters) field or an
/// identifier ending in a space; [`StoreError::ApplyExists`] when the identifier is taken.
pub fn insert(conn: &mut DbConnection, new: &NewApply) -> StoreResult<ApplyId> {
    validate::key_varchar("apply_identifier", &new.apply_identifier)?;
    validate::required_varchar("database_name", &new.database_name)?;
    validate::required_varchar("environment", &new.environment)?;
    validate::required_varchar("deployment", &new.deployment)?;
    db::serialized_write(conn, |conn| {
        let now = db::now();
        let inserted = diesel::insert_into(applies::table)
            .values((
                new,
                applies::state.eq(ApplyState::Pending),
                applies::created_at.eq(now),
                applies::updated_at.eq(now),
            ))
            .execute(conn);
        match inserted {
            Ok(_) => Ok(ApplyId(db::last_insert_id(conn)?)),
            Err(err) if db::is_unique_violation_of(conn, &err, &IDENTIFIER_KEY) => {
                Err(StoreError::ApplyExists {
                    apply_identifier: new.apply_identifier.clone(),
                })
            }
            Err(err) => Err(err.into()),
        }
    })
}

/// The apply with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Option<Apply>> {
    Ok(applies::table
        .find(id)
        .select(Apply::as_select())
        .first(conn)
        .optional()?)
}

/// The apply with this user-facing identifier, or `None`.
///
/// The identifier is compared exactly, byte for byte, on every backend. One that [`insert`] would
/// reject (empty, over 255 characters, a trailing space) finds nothing, without a query.
pub fn get_by_identifier(
    conn: &mut DbConnection,
    apply_identifier: &str,
) -> StoreResult<Option<Apply>> {
    if !validate::is_storable_key(apply_identifier) {
        return Ok(None);
    }
    Ok(applies::table
        .filter(applies::apply_identifier.eq(apply_identifier))
        .select(Apply::as_select())
        .first(conn)
        .optional()?)
}

/// Turns automatic cutover off (`true`) or on (`false`) for apply `id`. Idempotent.
/// [`StoreError::ApplyNotFound`] when there is no such apply.
pub fn set_defer_cutover(
    conn: &mut DbConnection,
    id: ApplyId,
    defer_cutover: bool,
) -> StoreResult<()> {
    let matched = diesel::update(applies::table.find(id))
        .set((
            applies::defer_cutover.eq(defer_cutover),
            applies::updated_at.eq(db::now()),
        ))
        .execute(conn)?;
    if matched == 0 {
        return Err(StoreError::ApplyNotFound { id });
    }
    Ok(())
}

/// The apply with everything it owns: its operations in claim order with their tasks, its tasks no
/// operation owns, and its pending control requests; `None` for an unknown apply.
///
/// Four SELECTs in one read transaction, so they see one snapshot (on MySQL a REPEATABLE READ
/// transaction; on SQLite a deferred one), whatever the rollout's size: ten statements on MySQL,
/// counting `BEGIN` and `COMMIT` with Diesel's session options around them.
pub fn rollout(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Option<Rollout>> {
    conn.transaction(|conn| {
        let Some(apply) = get(conn, id)? else {
            return Ok(None);
        };
        let operations = apply_operations::list_by_apply(conn, id)?;
        let mut tasks = tasks::list_by_apply(conn, id)?;
        let pending_requests = control_requests::list_pending(conn, id)?;
        let operations = operations
            .into_iter()
            .map(|operation| {
                let (own, rest) = tasks
                    .drain(..)
                    .partition(|task| task.apply_operation_id == Some(operation.id));
                tasks = rest;
                RolloutOperation {
                    operation,
                    tasks: own,
                }
            })
            .collect();
        Ok(Some(Rollout {
            apply,
            operations,
            unlinked_tasks: tasks,
            pending_requests,
        }))
    })
}

/// Deletes a finished apply with everything it owns: its operations, their tasks (and its tasks no
/// operation owns) and its control requests, in one write transaction, and returns how many of each.
///
/// Only when every operation is settled (`completed`, `failed`, `cancelled`, `reverted`); otherwise
/// [`StoreError::ApplyActive`] and nothing is deleted. The apply row, and then its unsettled
/// operations, are read with a locking read, so an operation cannot be moved out of a settled state
/// (an operator's retry) between the check and the delete. [`StoreError::ApplyNotFound`] for an
/// unknown apply.
pub fn delete(conn: &mut DbConnection, id: ApplyId) -> StoreResult<DeletedRollout> {
    const SETTLED: [ApplyState; 4] = [
        ApplyState::Completed,
        ApplyState::Failed,
        ApplyState::Cancelled,
        ApplyState::Reverted,
    ];
    db::write_transaction(conn, |conn| {
        let found: Option<ApplyId> =
            db::first_current!(conn, applies::table.find(id).select(applies::id)).optional()?;
        if found.is_none() {
            return Err(StoreError::ApplyNotFound { id });
        }
        let unsettled: Option<crate::models::ApplyOperationId> = db::first_current!(
            conn,
            ops::table
                .filter(ops::apply_id.eq(id))
                .filter(ops::state.ne_all(SETTLED))
                .select(ops::id)
        )
        .optional()?;
        if unsettled.is_some() {
            return Err(StoreError::ApplyActive { id });
        }
        let tasks = diesel::delete(tasks_table::table.filter(tasks_table::apply_id.eq(id)))
            .execute(conn)?;
        let control_requests = diesel::delete(
            apply_control_requests::table.filter(apply_control_requests::apply_id.eq(id)),
        )
        .execute(conn)?;
        let operations = diesel::delete(ops::table.filter(ops::apply_id.eq(id))).execute(conn)?;
        diesel::delete(applies::table.find(id)).execute(conn)?;
        Ok(DeletedRollout {
            operations,
            tasks,
            control_requests,
        })
    })
}
