//! A rollout: an apply with everything it owns, as one value.

use serde::{Deserialize, Serialize};

use super::{Apply, ApplyOperation, ControlRequest, Task};

/// An apply, its operations in claim order (by `created_at`, `id`) with their tasks, and its pending
/// control requests, read together
/// ([`applies::rollout`](crate::store::applies::rollout)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The apply.
    pub apply: Apply,
    /// Its operations in claim order, each with its tasks.
    pub operations: Vec<RolloutOperation>,
    /// Tasks of the apply that no operation owns (`tasks.apply_operation_id` NULL), oldest first.
    pub unlinked_tasks: Vec<Task>,
    /// Its pending control requests (whole-apply and per-operation), oldest first.
    pub pending_requests: Vec<ControlRequest>,
}

/// One operation of a [`Rollout`] with the tasks it owns, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutOperation {
    /// The operation.
    pub operation: ApplyOperation,
    /// Its tasks (`tasks.apply_operation_id` = the operation), oldest first.
    pub tasks: Vec<Task>,
}

/// How many rows [`applies::delete`](crate::store::applies::delete) removed with the apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeletedRollout {
    /// Operations deleted.
    pub operations: usize,
    /// Tasks deleted (linked to an operation or not).
    pub tasks: usize,
    /// Control requests deleted, in any status.
    pub control_requests: usize,
}
