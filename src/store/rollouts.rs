//! Creating a whole rollout in one transaction: the apply, its operations and their tasks.

use std::collections::HashMap;

use diesel::prelude::*;

use super::{rows, targets, unit, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperationId, NewApply, NewRollout, Rollout};
use crate::schema::{apply_operations as ops, tasks};
use crate::state::ApplyState;

/// The most operations one rollout may have.
pub const MAX_ROLLOUT_OPERATIONS: usize = 1_000;
/// The most tasks one operation of a rollout may have.
pub const MAX_OPERATION_TASKS: usize = 1_000;
/// The most tasks a rollout has in all: a rollout is written (and read back) in one transaction, and
/// a schema change of more statements than this is several changes.
pub const MAX_ROLLOUT_TASKS: usize = 10_000;
/// The most DDL a rollout carries in all, in bytes (16 MiB): with [`MAX_ROLLOUT_TASKS`], what bounds
/// the transaction that writes it and every read of its tasks.
pub const MAX_ROLLOUT_DDL_BYTES: usize = 16 * 1024 * 1024;

/// The most rows one multi-row INSERT carries. With at most 11 bound values per row, a chunk stays far
/// below MySQL's 65,535 placeholders and SQLite's 32,766 variables.
const CHUNK_ROWS: usize = 1_000;

/// The most bytes of task text (table name and DDL) one INSERT carries, well below MariaDB's default
/// 16 MiB `max_allowed_packet`.
const CHUNK_BYTES: usize = 4 << 20;

/// Creates `new` (the apply, its operations in the given claim order, and their tasks) in one
/// transaction, and returns it as stored, with every id: either all of it is written or none of it.
///
/// Validated before any SQL by [`validate_rollout`] ([`StoreError::InvalidInput`] naming the
/// field): no operations, more than [`MAX_ROLLOUT_OPERATIONS`] operations, [`MAX_OPERATION_TASKS`]
/// tasks in one operation, [`MAX_ROLLOUT_TASKS`] tasks or [`MAX_ROLLOUT_DDL_BYTES`] of DDL in all,
/// two operations for one deployment, an empty or over-long name, a name holding a control
/// character, an empty DDL or one holding a control character other than tabs and line breaks, a
/// `max_concurrency` outside 1..=1,000 or a `max_attempts` outside 0..=1,000.
///
/// Errors: [`StoreError::ApplyExists`] when the identifier is taken (checked first: it wins over a busy
/// target); [`StoreError::TargetBusy`] naming the holder when another apply holds one of the
/// targets (database, environment, deployment); [`StoreError::Contention`] after repeated deadlocks.
///
/// Statements do not grow with the rollout's size, only with the number of insert chunks (1,000 rows
/// and 4 MiB of task text each): for every rollout of up to 1,000 operations and 1,000 tasks in all,
/// the INSERT of the apply and reading its id, one INSERT of the operations and one SELECT reading
/// them back, one INSERT of the tasks and one SELECT reading them back, and one SELECT of the apply:
/// 9 statements with `BEGIN` and `COMMIT` on MySQL and on SQLite, 7 without tasks (pinned by
/// `tests/it/statements.rs` on both backends).
pub fn create_rollout(conn: &mut DbConnection, new: &NewRollout) -> StoreResult<Rollout> {
    validate_rollout(new)?;
    db::retry_contention(conn, |conn| {
        db::apply_transaction(conn, |conn| insert_rollout(conn, new))
    })
}

/// Every rule [`create_rollout`] checks before it runs any SQL (see there), without a database:
/// `Ok` when `create_rollout` would go on to write `new`, else the [`StoreError::InvalidInput`] it
/// would return, naming the field. What needs the database (a taken identifier, a busy target) is
/// not checked. `create_rollout` calls this, so the two cannot disagree; `applyops create
/// --dry-run` calls it alone.
pub fn validate_rollout(new: &NewRollout) -> StoreResult<()> {
    validate::key_varchar("apply_identifier", &new.apply_identifier)?;
    validate::required_varchar("database_name", &new.database_name)?;
    validate::required_varchar("environment", &new.environment)?;
    validate::required_varchar("requested_by", &new.requested_by)?;
    if let Some(deployment) = &new.deployment {
        validate::required_varchar("deployment", deployment)?;
    }
    validate::max_concurrency(new.max_concurrency)?;
    validate::max_attempts(new.max_attempts)?;
    if new.operations.is_empty() {
        return Err(StoreError::invalid(
            "operations",
            "a rollout needs at least one operation",
        ));
    }
    if new.operations.len() > MAX_ROLLOUT_OPERATIONS {
        return Err(StoreError::invalid(
            "operations",
            format!(
                "{} operations; a rollout has at most {MAX_ROLLOUT_OPERATIONS}",
                new.operations.len()
            ),
        ));
    }
    let tasks: usize = new.operations.iter().map(|op| op.tasks.len()).sum();
    if tasks > MAX_ROLLOUT_TASKS {
        return Err(StoreError::invalid(
            "operations.tasks",
            format!("{tasks} tasks in all; a rollout has at most {MAX_ROLLOUT_TASKS}"),
        ));
    }
    let ddl_bytes: usize = new
        .operations
        .iter()
        .flat_map(|op| &op.tasks)
        .map(|task| task.ddl.len())
        .sum();
    if ddl_bytes > MAX_ROLLOUT_DDL_BYTES {
        return Err(StoreError::invalid(
            "operations.tasks.ddl",
            format!(
                "{ddl_bytes} bytes of DDL in all; a rollout carries at most \
                 {MAX_ROLLOUT_DDL_BYTES} (16 MiB)"
            ),
        ));
    }
    let mut seen = HashMap::with_capacity(new.operations.len());
    for (index, operation) in new.operations.iter().enumerate() {
        let at = |err: StoreError| at_operation(index, err);
        validate::key_varchar("operations.deployment", &operation.deployment).map_err(at)?;
        validate::optional_detail("operations.target", &operation.target).map_err(at)?;
        if let Some(first) = seen.insert(operation.deployment.as_str(), index) {
            return Err(StoreError::invalid(
                "operations.deployment",
                format!(
                    "operations {first} and {index} are both for deployment {:?}; a rollout has one \
                     operation per deployment",
                    operation.deployment
                ),
            ));
        }
        if operation.tasks.len() > MAX_OPERATION_TASKS {
            return Err(at(StoreError::invalid(
                "operations.tasks",
                format!(
                    "{} tasks; an operation has at most {MAX_OPERATION_TASKS}",
                    operation.tasks.len()
                ),
            )));
        }
        for task in &operation.tasks {
            validate::required_detail("operations.tasks.table_name", &task.table_name)
                .map_err(at)?;
            validate::text(
                "operations.tasks.ddl",
                &task.ddl,
                true,
                validate::TextKind::Written,
            )
            .map_err(at)?;
        }
    }
    Ok(())
}

/// Says which operation a rejected field belongs to.
fn at_operation(index: usize, err: StoreError) -> StoreError {
    match err {
        StoreError::InvalidInput { field, reason } => StoreError::InvalidInput {
            field,
            reason: format!("operation {index}: {reason}"),
        },
        other => other,
    }
}

/// The writes of [`create_rollout`], inside its transaction.
fn insert_rollout(conn: &mut DbConnection, new: &NewRollout) -> StoreResult<Rollout> {
    let first_deployment = &new.operations[0].deployment;
    let apply = NewApply {
        apply_identifier: new.apply_identifier.clone(),
        database_name: new.database_name.clone(),
        environment: new.environment.clone(),
        deployment: new.deployment.clone().unwrap_or(first_deployment.clone()),
        defer_cutover: new.defer_cutover,
        max_concurrency: new.max_concurrency,
        max_attempts: new.max_attempts,
        requested_by: new.requested_by.clone(),
    };
    let apply_id = rows::insert_apply(conn, &apply)?;
    insert_operations(conn, apply_id, new)?;
    let operations = rows::operations_of(conn, apply_id)?;
    let ids: HashMap<&str, ApplyOperationId> = operations
        .iter()
        .map(|operation| (operation.deployment.as_str(), operation.id))
        .collect();
    insert_tasks(conn, apply_id, new, &ids)?;
    let tasks = if new.operations.iter().any(|op| !op.tasks.is_empty()) {
        rows::tasks_of(conn, apply_id)?
    } else {
        Vec::new()
    };
    let apply = rows::apply(conn, apply_id)?.ok_or(StoreError::ApplyNotFound { id: apply_id })?;
    Ok(Rollout::assemble(apply, operations, tasks, Vec::new()))
}

/// Inserts the operations, `pending` and holding their targets, in list order (so in claim order: one
/// `created_at` and ascending ids), in chunks of [`CHUNK_ROWS`], each with the claim rules'
/// decision for it (a new apply has no request, and nothing has started).
fn insert_operations(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    new: &NewRollout,
) -> StoreResult<()> {
    let settings = unit::ApplySettings {
        defer_cutover: new.defer_cutover,
        max_concurrency: new.max_concurrency,
        max_attempts: new.max_attempts,
    };
    let policies: Vec<_> = new
        .operations
        .iter()
        .map(|operation| (operation.cutover_policy, operation.on_failure))
        .collect();
    let decided = unit::decisions_for_new(settings, &policies);
    for (chunk, decided) in new
        .operations
        .chunks(CHUNK_ROWS)
        .zip(decided.chunks(CHUNK_ROWS))
    {
        let now = db::now();
        let rows: Vec<_> = chunk
            .iter()
            .zip(decided)
            .map(|(operation, &(copy, cutover))| {
                (
                    (ops::copy_claim.eq(copy), ops::cutover_claim.eq(cutover)),
                    ops::apply_id.eq(apply_id),
                    ops::deployment.eq(&operation.deployment),
                    ops::target.eq(&operation.target),
                    ops::cutover_policy.eq(operation.cutover_policy),
                    ops::on_failure.eq(operation.on_failure),
                    ops::state.eq(ApplyState::Pending),
                    ops::database_name.eq(&new.database_name),
                    ops::environment.eq(&new.environment),
                    ops::holds_target.eq(Some(true)),
                    ops::created_at.eq(now),
                    ops::updated_at.eq(now),
                )
            })
            .collect();
        if let Err(err) = db::recoverable(conn, |conn| {
            db::execute_batch_insert!(conn, diesel::insert_into(ops::table).values(rows))
        }) {
            let deployments: Vec<&str> = new
                .operations
                .iter()
                .map(|operation| operation.deployment.as_str())
                .collect();
            return Err(targets::busy_or(
                conn,
                err,
                Some(apply_id),
                &new.database_name,
                &new.environment,
                &deployments,
            ));
        }
    }
    Ok(())
}

/// Inserts every operation's tasks in order, in chunks of at most [`CHUNK_ROWS`] rows and
/// [`CHUNK_BYTES`] of text.
fn insert_tasks(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    new: &NewRollout,
    ids: &HashMap<&str, ApplyOperationId>,
) -> StoreResult<()> {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for operation in &new.operations {
        let operation_id = ids.get(operation.deployment.as_str()).copied();
        for task in &operation.tasks {
            let size = task.table_name.len() + task.ddl.len();
            if !chunk.is_empty() && (chunk.len() == CHUNK_ROWS || bytes + size > CHUNK_BYTES) {
                insert_task_chunk(conn, std::mem::take(&mut chunk))?;
                bytes = 0;
            }
            bytes += size;
            let now = db::now();
            chunk.push((
                tasks::apply_id.eq(apply_id),
                tasks::apply_operation_id.eq(operation_id),
                tasks::table_name.eq(task.table_name.as_str()),
                tasks::ddl.eq(task.ddl.as_str()),
                tasks::state.eq(ApplyState::Pending),
                tasks::created_at.eq(now),
                tasks::updated_at.eq(now),
            ));
        }
    }
    if !chunk.is_empty() {
        insert_task_chunk(conn, chunk)?;
    }
    Ok(())
}

/// The row a task chunk holds.
type TaskValues<'a> = (
    diesel::dsl::Eq<tasks::apply_id, ApplyId>,
    diesel::dsl::Eq<tasks::apply_operation_id, Option<ApplyOperationId>>,
    diesel::dsl::Eq<tasks::table_name, &'a str>,
    diesel::dsl::Eq<tasks::ddl, &'a str>,
    diesel::dsl::Eq<tasks::state, ApplyState>,
    diesel::dsl::Eq<tasks::created_at, db::DbNow>,
    diesel::dsl::Eq<tasks::updated_at, db::DbNow>,
);

/// One multi-row INSERT of tasks.
fn insert_task_chunk(conn: &mut DbConnection, rows: Vec<TaskValues<'_>>) -> StoreResult<()> {
    db::execute_batch_insert!(conn, diesel::insert_into(tasks::table).values(rows))?;
    Ok(())
}
