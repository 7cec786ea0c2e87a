use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::raw::{self, ControlRequestRow};
use super::{ApplyId, ApplyOperationId, ControlRequestId};
use crate::schema::apply_control_requests;
use crate::state::{ControlRequestKind, ControlRequestStatus};

/// An operator's request to start, stop, release or cut over an apply or one of its operations.
///
/// Loaded through [`ControlRequestRow`]; a stored kind or status this version does not know fails
/// the read.
#[derive(Debug, Clone, PartialEq, Eq, Identifiable, Serialize, Deserialize)]
#[diesel(table_name = apply_control_requests)]
pub struct ControlRequest {
    /// Primary key.
    pub id: ControlRequestId,
    /// The apply the request is for.
    pub apply_id: ApplyId,
    /// The operation the request is for; `None` for the whole apply.
    pub apply_operation_id: Option<ApplyOperationId>,
    /// What is asked for.
    pub kind: ControlRequestKind,
    /// Where the request is in its life.
    pub status: ControlRequestStatus,
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

impl TryFrom<ControlRequestRow> for ControlRequest {
    type Error = raw::UnknownValue;

    fn try_from(row: ControlRequestRow) -> Result<Self, Self::Error> {
        const TABLE: &str = "apply_control_requests";
        let id = row.id.0;
        Ok(ControlRequest {
            kind: raw::parse(TABLE, id, "kind", row.kind, ControlRequestKind::from_stored)?,
            status: raw::parse(
                TABLE,
                id,
                "status",
                row.status,
                ControlRequestStatus::from_stored,
            )?,
            id: row.id,
            apply_id: row.apply_id,
            apply_operation_id: row.apply_operation_id,
            reason: row.reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
        })
    }
}
