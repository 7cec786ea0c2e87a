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
    /// At most this many of the apply's operations are driven at once (started, resumed or retried
    /// into a driven state); `None` is unlimited.
    pub max_concurrency: Option<i64>,
    /// The retry budget: a `failed_retryable` operation is retried while its `attempt` is below it.
    pub max_attempts: i32,
    /// Who asked for the apply (empty when not recorded).
    pub requested_by: String,
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
            max_concurrency: row.max_concurrency,
            max_attempts: row.max_attempts,
            requested_by: row.requested_by,
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
    /// See [`Apply::max_concurrency`]: `None` (unlimited) or 1 to 1,000.
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    /// See [`Apply::max_attempts`]: 0 (no retries) to 1,000; [`DEFAULT_MAX_ATTEMPTS`] by default.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i32,
    /// See [`Apply::requested_by`]: at most 255 characters.
    #[serde(default)]
    pub requested_by: String,
}

/// The default retry budget of an apply: a `failed_retryable` operation is retried while its
/// `attempt` is below it.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;

pub(super) fn default_max_attempts() -> i32 {
    DEFAULT_MAX_ATTEMPTS
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
            max_concurrency: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            requested_by: String::new(),
        }
    }

    /// Turns automatic cutover off (or on again).
    pub fn with_defer_cutover(mut self, defer_cutover: bool) -> Self {
        self.defer_cutover = defer_cutover;
        self
    }

    /// Caps how many operations are driven at once (`None`: unlimited).
    pub fn with_max_concurrency(mut self, max_concurrency: Option<i64>) -> Self {
        self.max_concurrency = max_concurrency;
        self
    }

    /// Sets the retry budget.
    pub fn with_max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Records who asked for the apply.
    pub fn with_requested_by(mut self, requested_by: impl Into<String>) -> Self {
        self.requested_by = requested_by.into();
        self
    }
}
