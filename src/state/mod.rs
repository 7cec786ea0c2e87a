//! The apply state vocabulary, shared by applies, apply operations and tasks.
//!
//! States are stored as their snake_case name (`"waiting_for_cutover"`). Parsing *input* ([`FromStr`],
//! serde) is lenient about how a name is spelled, because values arrive from operators and older
//! tools: any letter case is accepted, and an optional `STATE_` prefix (as in protobuf enum names) is
//! ignored. Storing and reading rows are strict: only [`ApplyState::as_str`] is ever written, and a
//! stored value is read with [`ApplyState::from_stored`], which accepts exactly that name, because the
//! claim queries compare the exact names in SQL. A row holding `'COMPLETED'` is therefore an unknown
//! state to the reader, just as it is to the queries: it fails closed instead of reading as
//! `completed` while the queries treat it as something else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod decide;
mod derive;
mod order;
mod requests;
mod sql;
mod vocabulary;

pub use decide::{
    blocking_failure, cutover_claimed, decide, ApplyRules, Decision, OperationRules, PendingFor,
    Wait,
};
pub use derive::{
    after_start, derive_apply_state, is_driven, is_failure, is_settled, lets_failure_through,
    Derived, OperationView,
};
pub use order::{
    cutover_order_passes, cutover_order_passing, failure_states, start_order_passes,
    start_order_passing,
};
pub use requests::{
    automatic_retry_left, clears_lease, is_cancellable, is_resumable, is_stoppable, moved_in_place,
    progress, RequestProgress, WINDOW_CLOSED,
};
pub use sql::UnknownStoredValue;
pub use vocabulary::{
    ClaimAction, ControlRequestKind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
    ParseVocabularyError,
};

/// Every state an apply, or one deployment's operation of it, can be in.
///
/// Stored in `Text` columns as its [`as_str`](ApplyState::as_str) name; Diesel reads and writes it
/// directly (`ops::state.eq(ApplyState::Running)`), and reading a name it does not know is an
/// [`UnknownStoredValue`] error, never a default.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
pub enum ApplyState {
    /// Created, not yet started.
    Pending,
    /// Copying rows / applying changes.
    Running,
    /// Running, but with a degraded component (e.g. one shard lagging).
    RunningDegraded,
    /// Held by an operator; resumes only when asked.
    Paused,
    /// Coming back from `stopped` or `paused`.
    Resuming,
    /// Waiting for a deploy request to be deployable.
    WaitingForDeploy,
    /// Copy finished; waiting for the cutover.
    WaitingForCutover,
    /// Re-attaching to work after a worker was lost.
    Recovering,
    /// Swapping the new schema in.
    CuttingOver,
    /// Cut over; the change can still be reverted.
    RevertWindow,
    /// The revert window is being closed early.
    SkippingRevert,
    /// Rolling the change back.
    Reverting,
    /// Finished successfully. Terminal.
    Completed,
    /// Finished with an error. Terminal.
    Failed,
    /// Failed in a way that may succeed if retried. Not terminal.
    FailedRetryable,
    /// Stopped by an operator; can be started again. Terminal until then.
    Stopped,
    /// Cancelled before completion. Terminal.
    Cancelled,
    /// The change was rolled back. Terminal.
    Reverted,
    /// PlanetScale setup: creating the branch.
    PreparingBranch,
    /// PlanetScale setup: applying changes to the branch.
    ApplyingBranchChanges,
    /// PlanetScale setup: validating the branch.
    ValidatingBranch,
    /// PlanetScale setup: creating the deploy request.
    CreatingDeployRequest,
    /// PlanetScale setup: validating the deploy request.
    ValidatingDeployRequest,
}

impl ApplyState {
    /// Every state, in declaration order.
    pub const ALL: [ApplyState; 23] = [
        ApplyState::Pending,
        ApplyState::Running,
        ApplyState::RunningDegraded,
        ApplyState::Paused,
        ApplyState::Resuming,
        ApplyState::WaitingForDeploy,
        ApplyState::WaitingForCutover,
        ApplyState::Recovering,
        ApplyState::CuttingOver,
        ApplyState::RevertWindow,
        ApplyState::SkippingRevert,
        ApplyState::Reverting,
        ApplyState::Completed,
        ApplyState::Failed,
        ApplyState::FailedRetryable,
        ApplyState::Stopped,
        ApplyState::Cancelled,
        ApplyState::Reverted,
        ApplyState::PreparingBranch,
        ApplyState::ApplyingBranchChanges,
        ApplyState::ValidatingBranch,
        ApplyState::CreatingDeployRequest,
        ApplyState::ValidatingDeployRequest,
    ];

    /// The snake_case name stored in the database and used in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApplyState::Pending => "pending",
            ApplyState::Running => "running",
            ApplyState::RunningDegraded => "running_degraded",
            ApplyState::Paused => "paused",
            ApplyState::Resuming => "resuming",
            ApplyState::WaitingForDeploy => "waiting_for_deploy",
            ApplyState::WaitingForCutover => "waiting_for_cutover",
            ApplyState::Recovering => "recovering",
            ApplyState::CuttingOver => "cutting_over",
            ApplyState::RevertWindow => "revert_window",
            ApplyState::SkippingRevert => "skipping_revert",
            ApplyState::Reverting => "reverting",
            ApplyState::Completed => "completed",
            ApplyState::Failed => "failed",
            ApplyState::FailedRetryable => "failed_retryable",
            ApplyState::Stopped => "stopped",
            ApplyState::Cancelled => "cancelled",
            ApplyState::Reverted => "reverted",
            ApplyState::PreparingBranch => "preparing_branch",
            ApplyState::ApplyingBranchChanges => "applying_branch_changes",
            ApplyState::ValidatingBranch => "validating_branch",
            ApplyState::CreatingDeployRequest => "creating_deploy_request",
            ApplyState::ValidatingDeployRequest => "validating_deploy_request",
        }
    }

    /// True for the states no worker moves out of on its own: completed, failed, stopped, cancelled and
    /// reverted. `failed_retryable` is deliberately not terminal: it exists to be retried.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            ApplyState::Completed
                | ApplyState::Failed
                | ApplyState::Stopped
                | ApplyState::Cancelled
                | ApplyState::Reverted
        )
    }

    /// True for the states a worker is in the middle of: the recovery claim takes them over when their
    /// lease has expired (`waiting_for_cutover` only where the copy claim owns the cutover; see
    /// [`crate::store::claims`]).
    pub const fn is_active(self) -> bool {
        matches!(
            self,
            ApplyState::Running
                | ApplyState::RunningDegraded
                | ApplyState::Resuming
                | ApplyState::WaitingForDeploy
                | ApplyState::WaitingForCutover
                | ApplyState::Recovering
                | ApplyState::CuttingOver
                | ApplyState::RevertWindow
                | ApplyState::Reverting
                | ApplyState::SkippingRevert
                | ApplyState::PreparingBranch
                | ApplyState::ApplyingBranchChanges
                | ApplyState::ValidatingBranch
                | ApplyState::CreatingDeployRequest
                | ApplyState::ValidatingDeployRequest
        )
    }

    /// True for `pending` (start), `stopped` (resume), `failed_retryable` (retry) and the
    /// [active](ApplyState::is_active) states (recovery); never the completing states or `paused`.
    /// The generated `apply_operations.claimable` column, on which the claim index is built, is
    /// wider and narrower: it also holds `paused` (the resume claim takes a paused operation on a
    /// `start` request), and only for an operation nobody holds (an empty lease token).
    pub const fn is_claimable(self) -> bool {
        matches!(
            self,
            ApplyState::Pending | ApplyState::Stopped | ApplyState::FailedRetryable
        ) || self.is_active()
    }
}

impl fmt::Display for ApplyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`ApplyState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown apply state {value:?}")]
pub struct ParseApplyStateError {
    /// The rejected input, verbatim.
    pub value: String,
}

impl FromStr for ApplyState {
    type Err = ParseApplyStateError;

    /// Accepts any letter case and an optional `STATE_` prefix: `"running"`, `"RUNNING"` and
    /// `"STATE_RUNNING"` all parse to [`ApplyState::Running`]. Surrounding whitespace is not accepted.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let lowered = value.to_ascii_lowercase();
        let name = lowered.strip_prefix("state_").unwrap_or(&lowered);
        ApplyState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .ok_or_else(|| ParseApplyStateError {
                value: value.to_owned(),
            })
    }
}

impl Serialize for ApplyState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApplyState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

impl ApplyState {
    /// The state whose stored name is exactly `value` (no other spelling), as rows are read.
    pub fn from_stored(value: &str) -> Option<ApplyState> {
        ApplyState::ALL
            .into_iter()
            .find(|state| state.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_are_read_exactly() {
        for state in ApplyState::ALL {
            assert_eq!(ApplyState::from_stored(state.as_str()), Some(state));
            assert_eq!(
                ApplyState::from_stored(&state.as_str().to_uppercase()),
                None
            );
            assert_eq!(
                ApplyState::from_stored(&format!("{} ", state.as_str())),
                None
            );
        }
        assert_eq!(ApplyState::from_stored("state_running"), None);
    }

    #[test]
    fn every_state_round_trips_through_its_stored_name() {
        for state in ApplyState::ALL {
            assert_eq!(state.as_str().parse::<ApplyState>(), Ok(state));
        }
    }

    #[test]
    fn stored_names_are_unique() {
        let mut names: Vec<_> = ApplyState::ALL.iter().map(|s| s.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ApplyState::ALL.len());
    }

    #[test]
    fn parsing_ignores_case_and_an_optional_state_prefix() {
        for input in [
            "waiting_for_cutover",
            "WAITING_FOR_CUTOVER",
            "STATE_WAITING_FOR_CUTOVER",
            "state_Waiting_For_Cutover",
        ] {
            assert_eq!(input.parse(), Ok(ApplyState::WaitingForCutover), "{input}");
        }
    }

    #[test]
    fn parsing_rejects_unknown_values_naming_them() {
        for input in [
            "",
            "STATE_",
            "runnin",
            " running",
            "running ",
            "state_state_running",
            "waiting-for-cutover",
        ] {
            let err = input.parse::<ApplyState>().unwrap_err();
            assert_eq!(err.value, input);
        }
    }

    #[test]
    fn terminal_states_are_exactly_the_five_final_ones() {
        let terminal: Vec<_> = ApplyState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [
                ApplyState::Completed,
                ApplyState::Failed,
                ApplyState::Stopped,
                ApplyState::Cancelled,
                ApplyState::Reverted
            ]
        );
        assert!(!ApplyState::FailedRetryable.is_terminal());
    }

    #[test]
    fn claimable_states_are_the_start_resume_retry_and_active_ones() {
        let not_claimable: Vec<_> = ApplyState::ALL
            .into_iter()
            .filter(|s| !s.is_claimable())
            .collect();
        assert_eq!(
            not_claimable,
            [
                ApplyState::Paused,
                ApplyState::Completed,
                ApplyState::Failed,
                ApplyState::Cancelled,
                ApplyState::Reverted
            ]
        );
        assert_eq!(ApplyState::ALL.iter().filter(|s| s.is_active()).count(), 15);
    }

    #[test]
    fn serde_writes_snake_case_and_reads_leniently() {
        assert_eq!(
            serde_json::to_string(&ApplyState::RunningDegraded).unwrap(),
            "\"running_degraded\""
        );
        let read: ApplyState = serde_json::from_str("\"STATE_REVERT_WINDOW\"").unwrap();
        assert_eq!(read, ApplyState::RevertWindow);
        assert!(serde_json::from_str::<ApplyState>("\"nope\"").is_err());
    }
}
