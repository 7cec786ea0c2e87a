use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::raw::{self, ApplyOperationRow};
use super::{ApplyId, ApplyOperationId};
use crate::schema::apply_operations;
use crate::state::{ApplyState, CutoverPolicy, FailurePolicy};

/// One deployment's rollout of an apply: the unit of work that workers claim, drive and report on.
#[derive(Debug, Clone, PartialEq, Eq, Identifiable, Serialize, Deserialize)]
///
/// Loaded through [`ApplyOperationRow`]; a stored state or policy this version does not know fails the
/// read.
#[diesel(table_name = apply_operations)]
pub struct ApplyOperation {
    /// Primary key.
    pub id: ApplyOperationId,
    /// The apply this operation belongs to (`applies.id`).
    pub apply_id: ApplyId,
    /// The deployment (database target) this operation rolls out to; unique within its apply.
    pub deployment: String,
    /// Free-form target detail within the deployment (e.g. a keyspace); empty when unused.
    pub target: String,
    /// Where the operation is.
    pub state: ApplyState,
    /// The error recorded by [`mark_failed`](crate::store::apply_operations::mark_failed).
    pub error_message: Option<String>,
    /// When the operation first started running (UTC); stamped once.
    #[serde(default, with = "super::rfc3339::option")]
    pub started_at: Option<NaiveDateTime>,
    /// When the operation reached a terminal state (UTC); stamped once.
    #[serde(default, with = "super::rfc3339::option")]
    pub completed_at: Option<NaiveDateTime>,
    /// When the row was inserted (UTC); operations of an apply are listed in (created_at, id) order.
    #[serde(with = "super::rfc3339")]
    pub created_at: NaiveDateTime,
    /// When the row was last written (UTC).
    #[serde(with = "super::rfc3339")]
    pub updated_at: NaiveDateTime,
    /// How the start waits for earlier siblings.
    pub cutover_policy: CutoverPolicy,
    /// What a failed earlier sibling means.
    pub on_failure: FailurePolicy,
    /// How many times the retry claim has restarted the operation from `failed_retryable`.
    pub attempt: i32,
    /// Who holds (or last held) the lease; empty when none does. The lease token is deliberately not
    /// part of the row model: only the [`OperationLease`](super::OperationLease) a claim
    /// returns carries it, so a listing cannot be turned into a lease.
    pub lease_owner: String,
    /// When the current lease was taken (UTC); NULL when there is none.
    #[serde(default, with = "super::rfc3339::option")]
    pub lease_acquired_at: Option<NaiveDateTime>,
    /// When the current lease expires (UTC, the database's clock); NULL when there is none.
    #[serde(default, with = "super::rfc3339::option")]
    pub lease_expires_at: Option<NaiveDateTime>,
    /// The apply's database, copied when the operation was created: with `environment` and
    /// `deployment`, the target the operation changes.
    pub database_name: String,
    /// The apply's environment, copied when the operation was created.
    pub environment: String,
    /// True while the operation holds its target (from creation until it is completed, cancelled or
    /// reverted, or failed in an apply with nothing unsettled left): no other apply may take it.
    pub holds_target: bool,
    /// The copy engine's checkpoint, opaque to the store (at most 65,535 bytes): saved by the holder
    /// with [`save_engine_state`](crate::store::leases::save_engine_state) and returned by the claim
    /// that takes the operation over, so the new holder resumes where the old one stopped. `None`
    /// until the first save.
    pub engine_state: Option<Vec<u8>>,
    /// The remote system's id for this operation (1 to 255 characters), unique across operations:
    /// set by the holder with [`set_external_id`](crate::store::leases::set_external_id), looked up
    /// with [`get_by_external_id`](crate::store::apply_operations::get_by_external_id).
    pub external_id: Option<String>,
    /// While the operation is a failure (`failed` or `reverted`): its number in its apply's failure
    /// sequence, taken when it became one. A `release` whose `releases_through` is at least this
    /// lets it through. `None` otherwise.
    pub failure_seq: Option<i64>,
}

impl TryFrom<ApplyOperationRow> for ApplyOperation {
    type Error = raw::UnknownValue;

    fn try_from(row: ApplyOperationRow) -> Result<Self, Self::Error> {
        const TABLE: &str = "apply_operations";
        let id = row.id.0;
        Ok(ApplyOperation {
            state: raw::parse(TABLE, id, "state", row.state, ApplyState::from_stored)?,
            cutover_policy: raw::parse(
                TABLE,
                id,
                "cutover_policy",
                row.cutover_policy,
                CutoverPolicy::from_stored,
            )?,
            on_failure: raw::parse(
                TABLE,
                id,
                "on_failure",
                row.on_failure,
                FailurePolicy::from_stored,
            )?,
            id: row.id,
            apply_id: row.apply_id,
            deployment: row.deployment,
            target: row.target,
            error_message: row.error_message,
            started_at: row.started_at,
            completed_at: row.completed_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            attempt: row.attempt,
            lease_owner: row.lease_owner,
            lease_acquired_at: row.lease_acquired_at,
            lease_expires_at: row.lease_expires_at,
            database_name: row.database_name,
            environment: row.environment,
            holds_target: row.holds_target == Some(true),
            engine_state: row.engine_state,
            external_id: row.external_id,
            failure_seq: row.failure_seq,
        })
    }
}

/// The caller-supplied part of a new [`ApplyOperation`]. It starts `pending` with no lease and
/// attempt 0; the store sets timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewApplyOperation {
    /// The apply this operation belongs to.
    pub apply_id: ApplyId,
    /// The deployment: 1 to 255 characters, unique within the apply, no trailing space.
    pub deployment: String,
    /// Target detail: at most 255 characters, empty when unused.
    pub target: String,
    /// How its start waits for earlier siblings; [`CutoverPolicy::Rolling`] by default.
    pub cutover_policy: CutoverPolicy,
    /// What a failed earlier sibling means; [`FailurePolicy::Halt`] by default.
    pub on_failure: FailurePolicy,
}

impl NewApplyOperation {
    /// A new operation for `deployment` of apply `apply_id`, with an empty target and the default
    /// (strictest) policies.
    pub fn new(apply_id: ApplyId, deployment: impl Into<String>) -> Self {
        NewApplyOperation {
            apply_id,
            deployment: deployment.into(),
            target: String::new(),
            cutover_policy: CutoverPolicy::default(),
            on_failure: FailurePolicy::default(),
        }
    }

    /// Sets the target detail.
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = target.into();
        self
    }

    /// Sets the cutover policy.
    pub fn with_cutover_policy(mut self, policy: CutoverPolicy) -> Self {
        self.cutover_policy = policy;
        self
    }

    /// Sets the failure policy.
    pub fn with_on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }
}
