use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::tasks;

/// The per-table unit of work of an apply: one DDL statement against one table.
#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable, Serialize, Deserialize,
)]
#[diesel(table_name = tasks)]
#[diesel(check_for_backend(diesel::mysql::Mysql, diesel::sqlite::Sqlite))]
pub struct Task {
    /// Primary key.
    pub id: i64,
    /// The apply this task belongs to (`applies.id`).
    pub apply_id: i64,
    /// The operation (`apply_operations.id`) that owns this task, once assigned.
    pub apply_operation_id: Option<i64>,
    /// The table the DDL changes.
    pub table_name: String,
    /// The DDL statement to run.
    pub ddl: String,
    /// The stored state name; see [`crate::state::HasApplyState`].
    pub state: String,
    /// The last error, if the task failed.
    pub error_message: Option<String>,
    /// When the row was inserted (UTC).
    #[serde(with = "super::rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    #[serde(with = "super::rfc3339")]
    pub updated_at: NaiveDateTime,
    /// When the task first started (UTC).
    #[serde(default, with = "super::rfc3339::option")]
    pub started_at: Option<NaiveDateTime>,
    /// When the task reached a terminal state (UTC).
    #[serde(default, with = "super::rfc3339::option")]
    pub completed_at: Option<NaiveDateTime>,
}

/// The caller-supplied part of a new [`Task`]. It starts `pending`; the store sets timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tasks)]
pub struct NewTask {
    /// The apply this task belongs to.
    pub apply_id: i64,
    /// The owning operation, if already known; it must be an operation of the same apply.
    pub apply_operation_id: Option<i64>,
    /// The table: 1 to 255 characters.
    pub table_name: String,
    /// The DDL statement: non-empty, at most 65,535 bytes.
    pub ddl: String,
}
