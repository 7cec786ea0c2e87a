use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::apply_operations;

/// One deployment's rollout of an apply: the unit of work that workers claim, drive and report on.
#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable, Serialize, Deserialize,
)]
#[diesel(table_name = apply_operations)]
#[diesel(check_for_backend(diesel::mysql::Mysql, diesel::sqlite::Sqlite))]
pub struct ApplyOperation {
    /// Primary key.
    pub id: i64,
    /// The apply this operation belongs to (`applies.id`).
    pub apply_id: i64,
    /// The deployment (database target) this operation rolls out to; unique within its apply.
    pub deployment: String,
    /// Free-form target detail within the deployment (e.g. a keyspace); empty when unused.
    pub target: String,
    /// The stored state name; see [`crate::state::HasApplyState`].
    pub state: String,
    /// The error recorded by [`mark_failed`](crate::store::apply_operations::mark_failed).
    pub error_message: Option<String>,
    /// When the operation first started running (UTC); stamped once.
    pub started_at: Option<NaiveDateTime>,
    /// When the operation reached a terminal state (UTC); stamped once.
    pub completed_at: Option<NaiveDateTime>,
    /// When the row was inserted (UTC); operations of an apply are listed in (created_at, id) order.
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    pub updated_at: NaiveDateTime,
}

/// The caller-supplied part of a new [`ApplyOperation`]. It starts `pending`; the store sets timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Serialize, Deserialize)]
#[diesel(table_name = apply_operations)]
pub struct NewApplyOperation {
    /// The apply this operation belongs to.
    pub apply_id: i64,
    /// The deployment: 1 to 255 characters, unique within the apply, no trailing space.
    pub deployment: String,
    /// Target detail: at most 255 characters, empty when unused.
    pub target: String,
}

impl NewApplyOperation {
    /// A new operation for `deployment` of apply `apply_id`, with an empty target.
    pub fn new(apply_id: i64, deployment: impl Into<String>) -> Self {
        NewApplyOperation {
            apply_id,
            deployment: deployment.into(),
            target: String::new(),
        }
    }

    /// Sets the target detail.
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }
}
