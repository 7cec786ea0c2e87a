//! The `apply_operations` store: one row per (apply, deployment).
//!
//! Every state write is one UPDATE of the operation (zero matched rows is a missing id), run as the
//! store's unit of work on its apply: a write transaction that first locks the apply's row and
//! then refreshes the apply's derived state; it is idempotent: repeating it succeeds and keeps the
//! timestamps already stamped.
//! Timestamp rules: `started_at` is stamped by the first [`mark_started`]; `completed_at` is stamped by
//! the first move into a completing state ([`mark_completed`], [`mark_failed`], [`mark_terminal`]) and
//! cleared by any move back to a non-completing one, so it is set exactly while the state is completed,
//! failed, cancelled or reverted. `stopped` is not completing: a stopped operation can resume.

use diesel::prelude::*;

use super::rows::{self, Writer};
use super::unit::{self, Lock, LockedApply, OnLostRace};
use super::{targets, validate, writes};
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperation, ApplyOperationId, NewApplyOperation};
use crate::schema::{apply_operations, tasks};
use crate::state::ApplyState;

/// One operation per deployment of an apply. The name is the same on both backends.
const APPLY_DEPLOYMENT_KEY: UniqueKey = UniqueKey {
    table: "apply_operations",
    name: "apply_operations_apply_id_deployment_key",
    columns: &["apply_id", "deployment"],
};

/// Inserts a `pending` operation into an existing apply, after its current operations in claim
/// order, and returns its id. It copies the apply's database and environment and holds its target
/// from now on. To create an apply with all its operations at once, use
/// `applies::create_rollout`.
///
/// Errors: [`StoreError::InvalidInput`] for a deployment that is empty, longer than 255 characters or
/// ends in a space, or a target longer than 255 characters; [`StoreError::ApplyNotFound`];
/// [`StoreError::ApplyOperationExists`] when the apply already has an operation for this deployment;
/// [`StoreError::TargetBusy`] when another apply holds the target. In one write transaction with the
/// apply's row locked, which also refreshes the apply's derived state.
pub fn insert(conn: &mut DbConnection, new: &NewApplyOperation) -> StoreResult<ApplyOperationId> {
    validate::key_varchar("deployment", &new.deployment)?;
    validate::optional_detail("target", &new.target)?;
    let lock = Lock::Apply(new.apply_id);
    unit::run_known(conn, lock, OnLostRace::RetryBriefly, |conn, locked| {
        let locked = locked.ok_or(StoreError::ApplyNotFound { id: new.apply_id })?;
        insert_row(conn, new, locked)
    })
}

/// The INSERT of a validated operation of the locked apply.
fn insert_row(
    conn: &mut DbConnection,
    new: &NewApplyOperation,
    locked: &LockedApply,
) -> StoreResult<ApplyOperationId> {
    // created_at orders the claims: it is read under the apply's lock (and SQLite's write lock), so
    // no sibling committed meanwhile can come out later than it.
    let now = db::now();
    let inserted = db::recoverable(conn, |conn| {
        db::insert_returning_id!(
            conn,
            diesel::insert_into(apply_operations::table).values((
                apply_operations::apply_id.eq(new.apply_id),
                apply_operations::deployment.eq(&new.deployment),
                apply_operations::target.eq(&new.target),
                apply_operations::cutover_policy.eq(new.cutover_policy),
                apply_operations::on_failure.eq(new.on_failure),
                apply_operations::state.eq(ApplyState::Pending),
                apply_operations::database_name.eq(&locked.row.database_name),
                apply_operations::environment.eq(&locked.row.environment),
                apply_operations::holds_target.eq(Some(true)),
                apply_operations::created_at.eq(now),
                apply_operations::updated_at.eq(now),
            )),
            apply_operations::id
        )
    });
    let exists = || StoreError::ApplyOperationExists {
        apply_id: new.apply_id,
        deployment: new.deployment.clone(),
    };
    match inserted {
        Ok(id) => Ok(ApplyOperationId(id)),
        Err(err) if db::is_unique_violation_of(conn, &err, &APPLY_DEPLOYMENT_KEY) => Err(exists()),
        // SQLite reports only one violated key: a second operation for the same deployment also
        // collides with the first one's target.
        Err(_) if get_by_apply_and_deployment(conn, new.apply_id, &new.deployment)?.is_some() => {
            Err(exists())
        }
        Err(err) => Err(targets::busy_or(
            conn,
            err,
            Some(new.apply_id),
            &locked.row.database_name,
            &locked.row.environment,
            &[new.deployment.as_str()],
        )),
    }
}

/// The operation with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: ApplyOperationId) -> StoreResult<Option<ApplyOperation>> {
    rows::operation(conn, id)
}

/// The operation of `apply_id` for `deployment`, or `None`.
///
/// `deployment` is compared exactly, byte for byte, on every backend (`"east "` does not find
/// `"east"`). A deployment [`insert`] would reject (empty, over 255 characters, a trailing space)
/// finds nothing, without a query.
pub fn get_by_apply_and_deployment(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    deployment: &str,
) -> StoreResult<Option<ApplyOperation>> {
    if !validate::is_storable_key(deployment) {
        return Ok(None);
    }
    Ok(apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .filter(apply_operations::deployment.eq(deployment))
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?)
}

/// The operation carrying external id `external_id` (see
/// `leases::set_external_id`), or `None`. Compared exactly; an id
/// `set_external_id` would reject finds nothing, without a query.
pub fn get_by_external_id(
    conn: &mut DbConnection,
    external_id: &str,
) -> StoreResult<Option<ApplyOperation>> {
    if !validate::is_storable_key(external_id) {
        return Ok(None);
    }
    Ok(apply_operations::table
        .filter(apply_operations::external_id.eq(external_id))
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?)
}

/// The operations of `apply_id`, oldest first by (`created_at`, `id`); empty for an unknown apply.
pub fn list_by_apply(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<ApplyOperation>> {
    rows::operations_of(conn, apply_id)
}

/// Moves operation `id` to `state`, which must not be a completing state (completed, failed,
/// cancelled, reverted: those go through [`mark_completed`], [`mark_failed`] and [`mark_terminal`], so
/// `completed_at` is stamped). Clears `completed_at`, e.g. when an operator sends a failed operation
/// back to `pending`. `stopped` goes through here and keeps `completed_at` NULL because it can resume.
///
/// This and the other unguarded writes are for operators and migrations; workers use the leased forms
/// in `leases`, which cannot overwrite an operation another worker has claimed since.
pub fn update_state(
    conn: &mut DbConnection,
    id: ApplyOperationId,
    state: ApplyState,
) -> StoreResult<()> {
    writes::write_state(conn, Writer::Operator(id), state)
}

/// Moves operation `id` to `running`, stamping `started_at` the first time only.
pub fn mark_started(conn: &mut DbConnection, id: ApplyOperationId) -> StoreResult<()> {
    writes::write_started(conn, Writer::Operator(id))
}

/// Moves operation `id` to `completed`, stamping `completed_at` the first time only.
pub fn mark_completed(conn: &mut DbConnection, id: ApplyOperationId) -> StoreResult<()> {
    writes::write_completion(conn, Writer::Operator(id), ApplyState::Completed, None)
}

/// Moves operation `id` to `failed` with `message` (1 to 65,535 bytes, stored verbatim; a repeat
/// replaces it), stamping `completed_at` the first time only.
pub fn mark_failed(
    conn: &mut DbConnection,
    id: ApplyOperationId,
    message: &str,
) -> StoreResult<()> {
    writes::write_failed(conn, Writer::Operator(id), message)
}

/// Moves operation `id` to a completing state without an error message (`cancelled`, `reverted`, or
/// `completed`), stamping `completed_at` the first time only. `failed` needs [`mark_failed`] and
/// `stopped` needs [`update_state`]; any other state is [`StoreError::InvalidInput`].
pub fn mark_terminal(
    conn: &mut DbConnection,
    id: ApplyOperationId,
    state: ApplyState,
) -> StoreResult<()> {
    writes::write_terminal(conn, Writer::Operator(id), state)
}

/// Deletes every operation of `apply_id` and returns how many there were (0 for an unknown apply).
///
/// Tasks that pointed at them are kept and unlinked (`apply_operation_id` set to NULL) in the same
/// write transaction, so no task is left pointing at a deleted row.
pub fn delete_by_apply(conn: &mut DbConnection, apply_id: ApplyId) -> StoreResult<usize> {
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
                tasks::apply_operation_id.eq(None::<ApplyOperationId>),
                tasks::updated_at.eq(db::now()),
            ))
            .execute(conn)?;
        }
        Ok(deleted)
    })
}
