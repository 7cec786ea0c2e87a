//! Rows as the store returns them, rows to insert, and the typed values they are made of: one file
//! per table, plus ids, leases and claims.
//!
//! Columns are typed: states, policies, request kinds and statuses are the [`crate::state`] enums,
//! ids are newtypes ([`ApplyId`], [`ApplyOperationId`], [`TaskId`], [`ControlRequestId`]). A typed row
//! is loaded through its [`raw`] row, so a stored value this version does not know fails the read with
//! the table, column, value and row named (and the raw row still loads it, for repair).
//! Timestamps are UTC; serialised (serde), they are RFC 3339 with a `Z`, such as
//! `2026-11-25T13:04:05.123456Z`, and deserialising accepts any RFC 3339 offset.

mod apply;
mod apply_operation;
mod claim;
mod control_request;
mod ids;
mod lease;
pub mod raw;
mod rfc3339;
mod rollout;
mod task;

pub use apply::{Apply, NewApply, DEFAULT_MAX_ATTEMPTS};
pub use apply_operation::{ApplyOperation, NewApplyOperation};
pub use claim::{ClaimKind, ClaimScope, ClaimedOperation, UnknownClaim, MAX_SCOPE_DEPLOYMENTS};
pub use control_request::{ControlRequest, NewControlRequest};
pub use ids::{ApplyId, ApplyOperationId, ControlRequestId, TaskId};
pub use lease::{LeaseToken, LiveLease, OperationLease};
pub use rollout::{
    DeletedRollout, NewRollout, NewRolloutOperation, NewRolloutTask, Rollout, RolloutOperation,
};
pub use task::{NewTask, Task};
