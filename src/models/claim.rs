//! What a claim returns: the operation taken, why, and the lease to drive it with.

use serde::{Deserialize, Serialize};

use super::{ApplyOperation, ApplyOperationId, OperationLease};
use crate::state::ApplyState;

/// Which operations a worker claims: those of the listed deployments, of applies in the given
/// environment and for the given database, each left open when empty (`None`). The default scope
/// is open: any operation. Every claim rule holds inside a scope as outside it; a scope only narrows
/// the candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimScope {
    /// Only these deployments (compared exactly); empty: any deployment. At most
    /// [`MAX_SCOPE_DEPLOYMENTS`].
    #[serde(default)]
    pub deployments: Vec<String>,
    /// Only operations of applies in this environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// Only operations of applies for this database.
    #[serde(default)]
    pub database_name: Option<String>,
}

/// The most deployments one [`ClaimScope`] lists.
pub const MAX_SCOPE_DEPLOYMENTS: usize = 64;

impl ClaimScope {
    /// The open scope: any operation.
    pub fn any() -> Self {
        ClaimScope::default()
    }

    /// The scope narrowed to `deployments` (added to those listed).
    pub fn deployments<I, S>(mut self, deployments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.deployments
            .extend(deployments.into_iter().map(Into::into));
        self
    }

    /// The scope narrowed to applies in `environment`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The scope narrowed to applies for `database_name`.
    pub fn database_name(mut self, database_name: impl Into<String>) -> Self {
        self.database_name = Some(database_name.into());
        self
    }
}

/// Why an operation was claimed, read off the state it had before the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// `pending` → `running`: a first start.
    Start,
    /// An active state whose lease had expired or was released: the state is kept, the lease moves.
    Recovery,
    /// `stopped` or `paused` → `resuming`, on a pending `start` request.
    Resume,
    /// `failed_retryable` → `running`, `attempt` + 1.
    Retry,
    /// `waiting_for_cutover` → `cutting_over` (the cutover claim).
    Cutover,
    /// `revert_window` → `reverting`, on a pending `revert` request (the cutover claim).
    Revert,
    /// `revert_window` → `skipping_revert`, on a pending `skip_revert` request (the cutover claim).
    SkipRevert,
}

/// A claimed operation: the row as it is after the claim, the state it had before, and the lease to
/// drive it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedOperation {
    /// The operation after the claim (new state, stamps and lease applied).
    pub operation: ApplyOperation,
    /// The state it had before the claim.
    pub previous_state: ApplyState,
    /// Why it was claimed.
    pub kind: ClaimKind,
    /// The lease every write must go through.
    pub lease: OperationLease,
}

/// A claim whose COMMIT was sent but never acknowledged: the connection died in between, so the claim
/// may or may not have committed. Carried by
/// [`StoreError::ClaimOutcomeUnknown`](crate::StoreError::ClaimOutcomeUnknown); pass it to
/// [`resolve_unknown`](crate::store::claims::resolve_unknown) on a new connection to find out. Its
/// `Debug` never shows the lease token.
#[derive(Debug)]
pub struct UnknownClaim {
    claimed: ClaimedOperation,
    source: diesel::result::Error,
}

impl UnknownClaim {
    /// The claim as it would be had it committed, and what the connection reported instead of the
    /// acknowledgement.
    pub(crate) fn new(claimed: ClaimedOperation, source: diesel::result::Error) -> Self {
        UnknownClaim { claimed, source }
    }

    /// The claim as it would be had it committed.
    pub(crate) fn claimed(&self) -> &ClaimedOperation {
        &self.claimed
    }

    /// The operation the claim tried to take.
    pub fn operation_id(&self) -> ApplyOperationId {
        self.claimed.operation.id
    }

    /// Why the claim was made.
    pub fn kind(&self) -> ClaimKind {
        self.claimed.kind
    }

    /// What the connection reported instead of COMMIT's acknowledgement.
    pub fn source(&self) -> &diesel::result::Error {
        &self.source
    }
}
