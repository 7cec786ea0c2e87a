//! One active apply per target: which operation holds a target (database, environment, deployment),
//! and how a write that would make a second one hold it becomes [`StoreError::TargetBusy`].
//!
//! The rule is kept by the database, not by application locks a crashed process could leave behind:
//! `apply_operations.holds_target` is 1 while an operation holds its target and NULL otherwise, and the
//! unique key `apply_operations_target_key` on (`database_name`, `environment`, `deployment`,
//! `holds_target`) admits one holder (NULLs never collide). The writes keep the flag in the same
//! UPDATE that moves the state; the unit of work's refresh of the apply keeps it for failed
//! operations, which hold their target while their apply can still retry them.

use diesel::prelude::*;

use super::validate;
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::ApplyId;
use crate::schema::apply_operations as ops;
use crate::state::ApplyState;

use super::rows::ApplyLockRow;

/// One holder per target. The name is the same on both backends.
pub(crate) const TARGET_KEY: UniqueKey = UniqueKey {
    table: "apply_operations",
    name: "apply_operations_target_key",
    columns: &["database_name", "environment", "deployment", "holds_target"],
};

/// The `holds_target` value a write of `state` stores: held (`Some(true)`) while unsettled, let go
/// (`None`) once `completed`, `cancelled` or `reverted`. `failed` is `None` here because its hold
/// depends on the siblings: the refresh decides it.
pub(crate) fn hold_for(state: ApplyState) -> Option<bool> {
    (!crate::state::is_settled(state)).then_some(true)
}

/// The apply whose operation holds the target (`database_name`, `environment`, `deployment`), or
/// `None` when it is free. Compared exactly, byte for byte, on every backend; a deployment no
/// operation could have (empty, over 255 characters, a trailing space) finds nothing, without a
/// query. One SELECT on the unique key `apply_operations_target_key`.
pub fn target_holder(
    conn: &mut DbConnection,
    database_name: &str,
    environment: &str,
    deployment: &str,
) -> StoreResult<Option<ApplyId>> {
    if !validate::is_storable_key(deployment) {
        return Ok(None);
    }
    Ok(holder_read(
        database_name.to_owned(),
        environment.to_owned(),
        deployment.to_owned(),
    )
    .first(conn)
    .optional()?)
}

/// The holder of one target: an equality on every column of the target key.
#[diesel::dsl::auto_type]
pub(crate) fn holder_read(database_name: String, environment: String, deployment: String) -> _ {
    ops::table
        .filter(ops::database_name.eq(database_name))
        .filter(ops::environment.eq(environment))
        .filter(ops::deployment.eq(deployment))
        .filter(ops::holds_target.eq(true))
        .select(ops::apply_id)
}

/// Turns `err` into [`StoreError::TargetBusy`] when it is a violation of the target key: the first of
/// `deployments` (in the given order) that an apply other than `apply_id` holds, read as committed
/// now (the callers' transactions are READ COMMITTED on MySQL). Any other error is returned as it is.
pub(crate) fn busy_or(
    conn: &mut DbConnection,
    err: diesel::result::Error,
    apply_id: Option<ApplyId>,
    database_name: &str,
    environment: &str,
    deployments: &[&str],
) -> StoreError {
    // A duplicate whose message names no key (another message language) may be this key: the
    // holder's lookup below decides.
    if !db::is_unique_violation_of(conn, &err, &TARGET_KEY)
        && !db::is_unreadable_unique_violation(conn, &err)
    {
        return err.into();
    }
    for deployment in deployments {
        // A plain read: the writers run READ COMMITTED, so it sees the holder the key collided with.
        // (Not a locking read: every loser of a race holds a shared lock on the key, and upgrading
        // them all would deadlock.)
        let holder = holder_read(
            database_name.to_owned(),
            environment.to_owned(),
            (*deployment).to_owned(),
        )
        .filter(ops::apply_id.ne(apply_id.unwrap_or(ApplyId(0))))
        .first(conn)
        .optional();
        match holder {
            Ok(Some(holder)) => {
                return StoreError::TargetBusy {
                    database_name: database_name.to_owned(),
                    environment: environment.to_owned(),
                    deployment: (*deployment).to_owned(),
                    apply_id: holder,
                }
            }
            Ok(None) => {}
            Err(lookup) => return lookup.into(),
        }
    }
    err.into()
}

/// Sets `holds_target` of apply `apply`'s failed operations: held while the apply has an unsettled
/// operation, let go once it has none. [`StoreError::TargetBusy`] when a failed operation cannot hold
/// its target again because another apply took it meanwhile.
pub(crate) fn set_failed_holds(
    conn: &mut DbConnection,
    apply: &ApplyLockRow,
    hold: bool,
) -> StoreResult<()> {
    let failed = ops::table
        .filter(ops::apply_id.eq(apply.id))
        .filter(ops::state.eq(ApplyState::Failed));
    let written = db::recoverable(conn, |conn| {
        db::cached_update(
            ops::table,
            ops::apply_id
                .eq(apply.id)
                .and(ops::state.eq(ApplyState::Failed)),
            ops::holds_target.eq(hold.then_some(true)),
        )
        .execute(conn)
    });
    match written {
        Ok(_) => Ok(()),
        Err(err) => {
            let deployments: Vec<String> = failed.select(ops::deployment).load(conn)?;
            let deployments: Vec<&str> = deployments.iter().map(String::as_str).collect();
            Err(busy_or(
                conn,
                err,
                Some(apply.id),
                &apply.database_name,
                &apply.environment,
                &deployments,
            ))
        }
    }
}

/// The database's plan for [`target_holder`]'s read, one line per plan row (as
/// `claims::explain_claim_next` prints them): for operators checking that the target
/// check reads the unique key `apply_operations_target_key`. Reads nothing else, writes nothing.
pub fn explain_target_holder(
    conn: &mut DbConnection,
    database_name: &str,
    environment: &str,
    deployment: &str,
) -> StoreResult<Vec<String>> {
    Ok(db::explain!(
        conn,
        holder_read(
            database_name.to_owned(),
            environment.to_owned(),
            deployment.to_owned()
        )
        .limit(1)
    )?)
}
