//! The `applies` store: the parent rows operations and tasks belong to.

use diesel::prelude::*;

use super::validate;
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{Apply, ApplyId, NewApply};
use crate::schema::applies;
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
