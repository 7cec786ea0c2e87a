use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::raw::{self, ControlRequestRow};
use super::{ApplyId, ApplyOperationId, ControlRequestId};
use crate::schema::apply_control_requests;
use crate::state::{ControlRequestKind, ControlRequestStatus};

/// An operator's request (start, stop, release, cutover, cancel, revert, skip revert, retry) for an
/// apply or one of its operations.
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
    /// Why the operator asked for it, as given; never rewritten.
    pub reason: Option<String>,
    /// Who asked for it (1 to 255 characters; empty for requests recorded before it was required).
    pub requested_by: String,
    /// What the store did with it or why it could not be acted on: a retry's moved error message,
    /// "superseded by N", "window closed", or the text given to
    /// [`fail`](crate::store::control_requests::fail).
    pub result: Option<String>,
    /// For a `release`: the apply's failure sequence number when it was recorded. It lets through
    /// every failure numbered up to this one (see [`ApplyOperation::failure_seq`](super::ApplyOperation::failure_seq)).
    pub releases_through: Option<i64>,
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
            requested_by: row.requested_by,
            result: row.result,
            releases_through: row.releases_through,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
        })
    }
}

/// A control request as an operator asks for it; see
/// [`control_requests::request`](crate::store::control_requests::request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewControlRequest {
    /// The apply it is for.
    pub apply_id: ApplyId,
    /// The operation it is for; `None` for the whole apply.
    pub operation_id: Option<ApplyOperationId>,
    /// What is asked for.
    pub kind: ControlRequestKind,
    /// Who asks: 1 to 255 characters, not blank.
    pub requested_by: String,
    /// Why, for the record: at most 65,535 bytes.
    pub reason: Option<String>,
}

impl NewControlRequest {
    /// `kind` for the whole of apply `apply_id`, asked by `requested_by`, with no reason.
    pub fn new(
        apply_id: ApplyId,
        kind: ControlRequestKind,
        requested_by: impl Into<String>,
    ) -> Self {
        NewControlRequest {
            apply_id,
            operation_id: None,
            kind,
            requested_by: requested_by.into(),
            reason: None,
        }
    }

    /// Narrows the request to operation `operation_id` of the apply.
    pub fn for_operation(mut self, operation_id: ApplyOperationId) -> Self {
        self.operation_id = Some(operation_id);
        self
    }

    /// Sets the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}
