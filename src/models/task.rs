use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::raw::{self, TaskRow};
use super::{ApplyId, ApplyOperationId, TaskId};
use crate::schema::tasks;
use crate::state::ApplyState;

/// The per-table unit of work of an apply: one DDL statement against one table.
#[derive(Debug, Clone, PartialEq, Eq, Identifiable, Serialize, Deserialize)]
///
/// Loaded through [`TaskRow`]; a stored state this version does not know fails the read.
#[diesel(table_name = tasks)]
pub struct Task {
    /// Primary key.
    pub id: TaskId,
    /// The apply this task belongs to (`applies.id`).
    pub apply_id: ApplyId,
    /// The operation (`apply_operations.id`) that owns this task, once assigned.
    pub apply_operation_id: Option<ApplyOperationId>,
    /// The table the DDL changes.
    pub table_name: String,
    /// The DDL statement to run.
    pub ddl: String,
    /// The task's state.
    pub state: ApplyState,
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

impl TryFrom<TaskRow> for Task {
    type Error = raw::UnknownValue;

    fn try_from(row: TaskRow) -> Result<Self, Self::Error> {
        Ok(Task {
            state: raw::parse(
                "tasks",
                row.id.0,
                "state",
                row.state,
                ApplyState::from_stored,
            )?,
            id: row.id,
            apply_id: row.apply_id,
            apply_operation_id: row.apply_operation_id,
            table_name: row.table_name,
            ddl: row.ddl,
            error_message: row.error_message,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
        })
    }
}

/// The caller-supplied part of a new [`Task`]. It starts `pending`; the store sets timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tasks)]
pub struct NewTask {
    /// The apply this task belongs to.
    pub apply_id: ApplyId,
    /// The owning operation, if already known; it must be an operation of the same apply.
    pub apply_operation_id: Option<ApplyOperationId>,
    /// The table: 1 to 255 characters.
    pub table_name: String,
    /// The DDL statement: non-empty, at most 65,535 bytes.
    pub ddl: String,
}
