//! The `tasks` store: per-table units of work, linked to the operation that owns them through the
//! nullable `tasks.apply_operation_id`.
//!
//! The link is kept by the store, not by a foreign key: [`insert`] only links a task to an existing
//! operation of the same apply (holding that row against a concurrent delete until the insert
//! commits), and `apply_operations::delete_by_apply`
//! unlinks the tasks of the operations it deletes.

use diesel::prelude::*;

use super::{check_operation_owner, rows, validate};
use crate::db::{self, DbConnection};
use crate::error::StoreResult;
use crate::models::{ApplyId, ApplyOperationId, NewTask, Task, TaskId};
use crate::schema::{apply_operations, tasks};
use crate::state::ApplyState;

/// Inserts a `pending` task and returns its id.
///
/// Errors: [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for an empty or over-long (255 characters) table name, an
/// empty or over-long (65,535 bytes) DDL, or an `apply_operation_id` of another apply;
/// [`StoreError::ApplyOperationNotFound`](crate::StoreError::ApplyOperationNotFound) when `apply_operation_id` names no operation.
pub fn insert(conn: &mut DbConnection, new: &NewTask) -> StoreResult<TaskId> {
    validate::required_detail("table_name", &new.table_name)?;
    validate::text("ddl", &new.ddl, true, validate::TextKind::Written)?;
    let Some(operation_id) = new.apply_operation_id else {
        return db::serialized_write(conn, |conn| insert_row(conn, new));
    };
    db::write_transaction(conn, |conn| {
        let owner = apply_of_operation_locked(conn, operation_id)?;
        check_operation_owner(owner, operation_id, new.apply_id, "apply_operation_id")?;
        insert_row(conn, new)
    })
}

/// The apply of operation `id`, the row locked against concurrent deletes until the surrounding
/// [`db::write_transaction`] ends (a current read: MySQL `FOR UPDATE`; SQLite's immediate
/// transaction already excludes every other writer).
fn apply_of_operation_locked(
    conn: &mut DbConnection,
    id: ApplyOperationId,
) -> StoreResult<Option<ApplyId>> {
    Ok(db::first_current!(
        conn,
        apply_operations::table
            .find(id)
            .select(apply_operations::apply_id)
    )
    .optional()?)
}

/// Inserts the row; the caller serialises the write, so `created_at` is read under the write lock.
fn insert_row(conn: &mut DbConnection, new: &NewTask) -> StoreResult<TaskId> {
    let now = db::now();
    let id = db::insert_returning_id!(
        conn,
        diesel::insert_into(tasks::table).values((
            new,
            tasks::state.eq(ApplyState::Pending),
            tasks::created_at.eq(now),
            tasks::updated_at.eq(now),
        )),
        tasks::id
    )?;
    Ok(TaskId(id))
}

/// The task with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: TaskId) -> StoreResult<Option<Task>> {
    Ok(tasks::table
        .find(id)
        .select(Task::as_select())
        .first(conn)
        .optional()?)
}

/// The tasks of `apply_id`, oldest first by (`created_at`, `id`); empty for an unknown apply.
pub fn list_by_apply(conn: &mut DbConnection, apply_id: ApplyId) -> StoreResult<Vec<Task>> {
    rows::tasks_of(conn, apply_id)
}

/// The tasks owned by operation `apply_operation_id`, oldest first by (`created_at`, `id`).
pub fn list_by_operation(
    conn: &mut DbConnection,
    apply_operation_id: ApplyOperationId,
) -> StoreResult<Vec<Task>> {
    Ok(tasks::table
        .filter(tasks::apply_operation_id.eq(apply_operation_id))
        .order((tasks::created_at.asc(), tasks::id.asc()))
        .select(Task::as_select())
        .load(conn)?)
}
