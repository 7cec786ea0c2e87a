use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::raw::{self, ApplyRow};
use super::ApplyId;
use crate::schema::applies;
use crate::state::ApplyState;

/// A schema-change request: the parent of one [`ApplyOperation`](super::ApplyOperation) per deployment.
#[derive(Debug, Clone, PartialEq, Eq, Identifiable, Serialize, Deserialize)]
///
/// Loaded through [`ApplyRow`]; a stored state this version does not know fails the read.
#[diesel(table_name = applies)]
pub struct Apply {
    /// Primary key.
    pub id: ApplyId,
    /// The unique, user-facing handle of the apply.
    pub apply_identifier: String,
    /// The logical database the change is for.
    pub database_name: String,
    /// The environment (e.g. `production`) the change targets.
    pub environment: String,
    /// The deployment the apply was requested for.
    pub deployment: String,
    /// The apply's state.
    pub state: ApplyState,
    /// The last error, if the apply failed.
    pub error_message: Option<String>,
    /// When the row was inserted (UTC).
    #[serde(with = "super::rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    #[serde(with = "super::rfc3339")]
    pub updated_at: NaiveDateTime,
    /// When work on the apply first started (UTC).
    #[serde(default, with = "super::rfc3339::option")]
    pub started_at: Option<NaiveDateTime>,
    /// When the apply reached a terminal state (UTC).
    #[serde(default, with = "super::rfc3339::option")]
    pub completed_at: Option<NaiveDateTime>,
    /// When true, automatic cutover is off: each cutover of a barrier or parallel operation waits for
    /// an operator's `cutover` request.
    pub defer_cutover: bool,
}

impl TryFrom<ApplyRow> for Apply {
    type Error = raw::UnknownValue;

    fn try_from(row: ApplyRow) -> Result<Self, Self::Error> {
        Ok(Apply {
            state: raw::parse(
                "applies",
                row.id.0,
                "state",
                row.state,
                ApplyState::from_stored,
            )?,
            id: row.id,
            apply_identifier: row.apply_identifier,
            database_name: row.database_name,
            environment: row.environment,
            deployment: row.deployment,
            error_message: row.error_message,
            created_at: row.created_at,
            updated_at: row.updated_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            defer_cutover: row.defer_cutover,
        })
    }
}

/// The caller-supplied part of a new [`Apply`]; the store sets state and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Serialize, Deserialize)]
#[diesel(table_name = applies)]
pub struct NewApply {
    /// Unique, user-facing handle: 1 to 255 characters.
    pub apply_identifier: String,
    /// The logical database: 1 to 255 characters.
    pub database_name: String,
    /// The environment: 1 to 255 characters.
    pub environment: String,
    /// The deployment: 1 to 255 characters.
    pub deployment: String,
    /// Turns automatic cutover off; see [`Apply::defer_cutover`].
    pub defer_cutover: bool,
}

impl NewApply {
    /// A new apply with automatic cutover (`defer_cutover` false).
    pub fn new(
        apply_identifier: impl Into<String>,
        database_name: impl Into<String>,
        environment: impl Into<String>,
        deployment: impl Into<String>,
    ) -> Self {
        NewApply {
            apply_identifier: apply_identifier.into(),
            database_name: database_name.into(),
            environment: environment.into(),
            deployment: deployment.into(),
            defer_cutover: false,
        }
    }

    /// Turns automatic cutover off (or on again).
    pub fn with_defer_cutover(mut self, defer_cutover: bool) -> Self {
        self.defer_cutover = defer_cutover;
        self
    }
}
