//! Rows exactly as stored, with the vocabulary columns as plain strings: for reading (and then
//! repairing) a row whose state, policy, kind or status this version does not know.
//!
//! The typed models ([`ApplyOperation`](super::ApplyOperation), …) are loaded through these: Diesel
//! reads the raw row and [`TryFrom`] turns it into the typed one, so a value that names nothing is an
//! [`UnknownValue`] that carries the table, the column, the value and the row's id. Select a raw row
//! with `ApplyOperationRow::as_select()` where the typed read fails. After repairing a row by hand,
//! run [`applies::refresh`](crate::store::applies::refresh) on its apply: the claim rules' decision
//! stored on the operations follows the rows only when the store wrote them.
//!
//! ```
//! use applyops::models::{raw::ApplyOperationRow, NewApply, NewApplyOperation};
//! use applyops::schema::apply_operations;
//! use applyops::store::apply_operations as ops;
//! use diesel::prelude::*;
//!
//! let mut conn = applyops::db::establish(":memory:")?;
//! applyops::db::run_migrations(&mut conn)?;
//! let apply = applyops::store::applies::insert(
//!     &mut conn,
//!     &NewApply::new("a1", "shop", "production", "east"),
//! )?;
//! let id = ops::insert(&mut conn, &NewApplyOperation::new(apply, "east"))?;
//! diesel::update(apply_operations::table.find(id))
//!     .set(apply_operations::state.eq("exploded"))
//!     .execute(&mut conn)?;
//! assert!(ops::get(&mut conn, id).is_err());
//! let raw = apply_operations::table
//!     .find(id)
//!     .select(ApplyOperationRow::as_select())
//!     .first(&mut conn)?;
//! assert_eq!(raw.state, "exploded");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// No `check_for_backend`: Diesel keeps only the last such attribute, so each feature combination
// would need its own copy on every row. The field types are still checked against the columns by
// every query that selects these rows, which compiles against `DbConnection` in every build.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{ApplyId, ApplyOperationId, ControlRequestId, TaskId};
use crate::schema::{applies, apply_control_requests, apply_operations, tasks};

/// A stored value a typed model cannot hold: it names nothing in its column's vocabulary. Produced
/// while loading a typed row; the store reports it as
/// [`StoreError::UnknownState`](crate::StoreError::UnknownState) or
/// [`StoreError::UnknownValue`](crate::StoreError::UnknownValue).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table} row {id} has unknown {column} {value:?}")]
pub struct UnknownValue {
    /// The table the row was read from.
    pub table: &'static str,
    /// The row's primary key.
    pub id: i64,
    /// The column holding the value.
    pub column: &'static str,
    /// The stored value, verbatim.
    pub value: String,
}

/// Parses column `column` of `table` row `id` with `from_stored`, or names the row in the error.
pub(super) fn parse<T>(
    table: &'static str,
    id: i64,
    column: &'static str,
    value: String,
    from_stored: fn(&str) -> Option<T>,
) -> Result<T, UnknownValue> {
    from_stored(&value).ok_or(UnknownValue {
        table,
        id,
        column,
        value,
    })
}

/// An `applies` row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = applies)]
pub struct ApplyRow {
    /// See [`Apply::id`](super::Apply::id).
    pub id: ApplyId,
    /// See [`Apply::apply_identifier`](super::Apply::apply_identifier).
    pub apply_identifier: String,
    /// See [`Apply::database_name`](super::Apply::database_name).
    pub database_name: String,
    /// See [`Apply::environment`](super::Apply::environment).
    pub environment: String,
    /// See [`Apply::deployment`](super::Apply::deployment).
    pub deployment: String,
    /// The stored state name.
    pub state: String,
    /// See [`Apply::error_message`](super::Apply::error_message).
    pub error_message: Option<String>,
    /// See [`Apply::created_at`](super::Apply::created_at).
    pub created_at: NaiveDateTime,
    /// See [`Apply::updated_at`](super::Apply::updated_at).
    pub updated_at: NaiveDateTime,
    /// See [`Apply::started_at`](super::Apply::started_at).
    pub started_at: Option<NaiveDateTime>,
    /// See [`Apply::completed_at`](super::Apply::completed_at).
    pub completed_at: Option<NaiveDateTime>,
    /// See [`Apply::defer_cutover`](super::Apply::defer_cutover).
    pub defer_cutover: bool,
    /// See [`Apply::max_concurrency`](super::Apply::max_concurrency).
    pub max_concurrency: Option<i64>,
    /// See [`Apply::max_attempts`](super::Apply::max_attempts).
    pub max_attempts: i32,
    /// See [`Apply::requested_by`](super::Apply::requested_by).
    pub requested_by: String,
}

/// An `apply_operations` row as stored (without the lease token, which no listing shows).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = apply_operations)]
pub struct ApplyOperationRow {
    /// See [`ApplyOperation::id`](super::ApplyOperation::id).
    pub id: ApplyOperationId,
    /// See [`ApplyOperation::apply_id`](super::ApplyOperation::apply_id).
    pub apply_id: ApplyId,
    /// See [`ApplyOperation::deployment`](super::ApplyOperation::deployment).
    pub deployment: String,
    /// See [`ApplyOperation::target`](super::ApplyOperation::target).
    pub target: String,
    /// The stored state name.
    pub state: String,
    /// See [`ApplyOperation::error_message`](super::ApplyOperation::error_message).
    pub error_message: Option<String>,
    /// See [`ApplyOperation::started_at`](super::ApplyOperation::started_at).
    pub started_at: Option<NaiveDateTime>,
    /// See [`ApplyOperation::completed_at`](super::ApplyOperation::completed_at).
    pub completed_at: Option<NaiveDateTime>,
    /// See [`ApplyOperation::created_at`](super::ApplyOperation::created_at).
    pub created_at: NaiveDateTime,
    /// See [`ApplyOperation::updated_at`](super::ApplyOperation::updated_at).
    pub updated_at: NaiveDateTime,
    /// The stored cutover policy name.
    pub cutover_policy: String,
    /// The stored failure policy name.
    pub on_failure: String,
    /// See [`ApplyOperation::attempt`](super::ApplyOperation::attempt).
    pub attempt: i32,
    /// See [`ApplyOperation::lease_owner`](super::ApplyOperation::lease_owner).
    pub lease_owner: String,
    /// See [`ApplyOperation::lease_acquired_at`](super::ApplyOperation::lease_acquired_at).
    pub lease_acquired_at: Option<NaiveDateTime>,
    /// See [`ApplyOperation::lease_expires_at`](super::ApplyOperation::lease_expires_at).
    pub lease_expires_at: Option<NaiveDateTime>,
    /// See [`ApplyOperation::database_name`](super::ApplyOperation::database_name).
    pub database_name: String,
    /// See [`ApplyOperation::environment`](super::ApplyOperation::environment).
    pub environment: String,
    /// `Some(true)` while the operation holds its target, else NULL.
    pub holds_target: Option<bool>,
    /// See [`ApplyOperation::engine_state`](super::ApplyOperation::engine_state).
    pub engine_state: Option<Vec<u8>>,
    /// See [`ApplyOperation::external_id`](super::ApplyOperation::external_id).
    pub external_id: Option<String>,
    /// See [`ApplyOperation::failure_seq`](super::ApplyOperation::failure_seq).
    pub failure_seq: Option<i64>,
}

/// A `tasks` row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = tasks)]
pub struct TaskRow {
    /// See [`Task::id`](super::Task::id).
    pub id: TaskId,
    /// See [`Task::apply_id`](super::Task::apply_id).
    pub apply_id: ApplyId,
    /// See [`Task::apply_operation_id`](super::Task::apply_operation_id).
    pub apply_operation_id: Option<ApplyOperationId>,
    /// See [`Task::table_name`](super::Task::table_name).
    pub table_name: String,
    /// See [`Task::ddl`](super::Task::ddl).
    pub ddl: String,
    /// The stored state name.
    pub state: String,
    /// See [`Task::error_message`](super::Task::error_message).
    pub error_message: Option<String>,
    /// See [`Task::created_at`](super::Task::created_at).
    pub created_at: NaiveDateTime,
    /// See [`Task::updated_at`](super::Task::updated_at).
    pub updated_at: NaiveDateTime,
    /// See [`Task::started_at`](super::Task::started_at).
    pub started_at: Option<NaiveDateTime>,
    /// See [`Task::completed_at`](super::Task::completed_at).
    pub completed_at: Option<NaiveDateTime>,
}

/// An `apply_control_requests` row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = apply_control_requests)]
pub struct ControlRequestRow {
    /// See [`ControlRequest::id`](super::ControlRequest::id).
    pub id: ControlRequestId,
    /// See [`ControlRequest::apply_id`](super::ControlRequest::apply_id).
    pub apply_id: ApplyId,
    /// See [`ControlRequest::apply_operation_id`](super::ControlRequest::apply_operation_id).
    pub apply_operation_id: Option<ApplyOperationId>,
    /// The stored kind name.
    pub kind: String,
    /// The stored status name.
    pub status: String,
    /// See [`ControlRequest::reason`](super::ControlRequest::reason).
    pub reason: Option<String>,
    /// See [`ControlRequest::created_at`](super::ControlRequest::created_at).
    pub created_at: NaiveDateTime,
    /// See [`ControlRequest::updated_at`](super::ControlRequest::updated_at).
    pub updated_at: NaiveDateTime,
    /// See [`ControlRequest::completed_at`](super::ControlRequest::completed_at).
    pub completed_at: Option<NaiveDateTime>,
    /// See [`ControlRequest::requested_by`](super::ControlRequest::requested_by).
    pub requested_by: String,
    /// See [`ControlRequest::releases_through`](super::ControlRequest::releases_through).
    pub releases_through: Option<i64>,
    /// See [`ControlRequest::result`](super::ControlRequest::result).
    pub result: Option<String>,
}

/// Makes typed model `$model` selectable and loadable through raw row `$raw` and its `TryFrom`: the
/// same columns, converted after loading, so an unknown value fails with the row named.
macro_rules! loaded_through_raw {
    ($($model:ty => $raw:ty,)+) => {$(
        impl<DB: diesel::backend::Backend> Selectable<DB> for $model
        where
            $raw: Selectable<DB>,
        {
            type SelectExpression = <$raw as Selectable<DB>>::SelectExpression;

            fn construct_selection() -> Self::SelectExpression {
                <$raw as Selectable<DB>>::construct_selection()
            }
        }

        impl<ST, DB: diesel::backend::Backend> Queryable<ST, DB> for $model
        where
            $raw: Queryable<ST, DB>,
        {
            type Row = <$raw as Queryable<ST, DB>>::Row;

            fn build(row: Self::Row) -> diesel::deserialize::Result<Self> {
                let raw = <$raw as Queryable<ST, DB>>::build(row)?;
                Ok(<$model>::try_from(raw)?)
            }
        }
    )+};
}

loaded_through_raw! {
    super::Apply => ApplyRow,
    super::ApplyOperation => ApplyOperationRow,
    super::Task => TaskRow,
    super::ControlRequest => ControlRequestRow,
}
