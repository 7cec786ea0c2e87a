use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreResult};
use crate::schema::apply_control_requests;
use crate::state::{ControlRequestKind, ControlRequestStatus};

/// An operator's request to start, stop, release or cut over an apply or one of its operations.
#[derive(
    Debug, Clone, PartialEq, Eq, Queryable, Selectable, Identifiable, Serialize, Deserialize,
)]
#[diesel(table_name = apply_control_requests)]
#[diesel(check_for_backend(diesel::mysql::Mysql, diesel::sqlite::Sqlite))]
pub struct ControlRequest {
    /// Primary key.
    pub id: i64,
    /// The apply the request is for.
    pub apply_id: i64,
    /// The operation the request is for; `None` for the whole apply.
    pub apply_operation_id: Option<i64>,
    /// A [`ControlRequestKind`] name, kept as stored; see [`ControlRequest::request_kind`].
    pub kind: String,
    /// A [`ControlRequestStatus`] name, kept as stored; see [`ControlRequest::request_status`].
    pub status: String,
    /// Why it was asked for, or (once failed) why it could not be acted on.
    pub reason: Option<String>,
    /// When the request was made (UTC).
    #[serde(with = "super::rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    #[serde(with = "super::rfc3339")]
    pub updated_at: NaiveDateTime,
    /// When the request was completed or failed (UTC); stamped once.
    #[serde(default, with = "super::rfc3339::option")]
    pub completed_at: Option<NaiveDateTime>,
}

impl ControlRequest {
    /// The typed kind, or [`StoreError::UnknownValue`] naming the row and the stored value.
    pub fn request_kind(&self) -> StoreResult<ControlRequestKind> {
        ControlRequestKind::from_stored(&self.kind).ok_or_else(|| self.unknown("kind", &self.kind))
    }

    /// The typed status, or [`StoreError::UnknownValue`] naming the row and the stored value.
    pub fn request_status(&self) -> StoreResult<ControlRequestStatus> {
        ControlRequestStatus::from_stored(&self.status)
            .ok_or_else(|| self.unknown("status", &self.status))
    }

    fn unknown(&self, column: &'static str, value: &str) -> StoreError {
        StoreError::UnknownValue {
            table: "apply_control_requests",
            id: self.id,
            column,
            value: value.to_owned(),
        }
    }
}
