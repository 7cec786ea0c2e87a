//! A rollout: an apply with everything it owns, as one value.

use serde::{Deserialize, Serialize};

use super::{Apply, ApplyOperation, ControlRequest, Task};
use crate::state::{CutoverPolicy, FailurePolicy};

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

impl Rollout {
    /// Puts a rollout together from its rows: each of `tasks` goes to the operation it names, in the
    /// given order; those naming none of `operations` become [`Rollout::unlinked_tasks`].
    pub fn assemble(
        apply: Apply,
        operations: Vec<ApplyOperation>,
        mut tasks: Vec<Task>,
        pending_requests: Vec<ControlRequest>,
    ) -> Rollout {
        let operations = operations
            .into_iter()
            .map(|operation| {
                let (own, rest) = tasks
                    .drain(..)
                    .partition(|task| task.apply_operation_id == Some(operation.id));
                tasks = rest;
                RolloutOperation {
                    operation,
                    tasks: own,
                }
            })
            .collect();
        Rollout {
            apply,
            operations,
            unlinked_tasks: tasks,
            pending_requests,
        }
    }
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

/// A whole rollout to create in one transaction
/// ([`applies::create_rollout`](crate::store::applies::create_rollout)): the apply, its operations in
/// claim order, and each operation's tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// Unique, user-facing handle: 1 to 255 characters, no trailing space.
    pub apply_identifier: String,
    /// The logical database: 1 to 255 characters.
    pub database_name: String,
    /// The environment: 1 to 255 characters.
    pub environment: String,
    /// `applies.deployment`; the first operation's deployment when `None`.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Turns automatic cutover off; see [`Apply::defer_cutover`].
    #[serde(default)]
    pub defer_cutover: bool,
    /// See [`Apply::max_concurrency`]: `None` (unlimited) or 1 to 1,000.
    #[serde(default)]
    pub max_concurrency: Option<i64>,
    /// See [`Apply::max_attempts`]: 0 to 1,000; [`DEFAULT_MAX_ATTEMPTS`](super::DEFAULT_MAX_ATTEMPTS)
    /// by default.
    #[serde(default = "super::apply::default_max_attempts")]
    pub max_attempts: i32,
    /// Who asks for it: 1 to 255 characters.
    pub requested_by: String,
    /// The operations in claim order: 1 to 1,000, one per deployment.
    pub operations: Vec<NewRolloutOperation>,
}

impl NewRollout {
    /// A rollout with no operations yet (add them with [`NewRollout::operation`]), automatic cutover,
    /// no concurrency cap and the default retry budget.
    pub fn new(
        apply_identifier: impl Into<String>,
        database_name: impl Into<String>,
        environment: impl Into<String>,
        requested_by: impl Into<String>,
    ) -> Self {
        NewRollout {
            apply_identifier: apply_identifier.into(),
            database_name: database_name.into(),
            environment: environment.into(),
            deployment: None,
            defer_cutover: false,
            max_concurrency: None,
            max_attempts: super::DEFAULT_MAX_ATTEMPTS,
            requested_by: requested_by.into(),
            operations: Vec::new(),
        }
    }

    /// Appends an operation: it comes after those already added in claim order.
    pub fn operation(mut self, operation: NewRolloutOperation) -> Self {
        self.operations.push(operation);
        self
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

    /// Sets `applies.deployment` (otherwise the first operation's deployment).
    pub fn with_deployment(mut self, deployment: impl Into<String>) -> Self {
        self.deployment = Some(deployment.into());
        self
    }
}

/// One operation of a [`NewRollout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRolloutOperation {
    /// The deployment: 1 to 255 characters, no trailing space, unique within the rollout.
    pub deployment: String,
    /// Target detail: at most 255 characters, empty when unused.
    #[serde(default)]
    pub target: String,
    /// How its start waits for earlier siblings; `rolling` by default.
    #[serde(default)]
    pub cutover_policy: CutoverPolicy,
    /// What a failed earlier sibling means; `halt` by default.
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Its tasks, in order: at most 1,000.
    #[serde(default)]
    pub tasks: Vec<NewRolloutTask>,
}

impl NewRolloutOperation {
    /// An operation for `deployment` with an empty target, the strictest policies and no tasks.
    pub fn new(deployment: impl Into<String>) -> Self {
        NewRolloutOperation {
            deployment: deployment.into(),
            target: String::new(),
            cutover_policy: CutoverPolicy::default(),
            on_failure: FailurePolicy::default(),
            tasks: Vec::new(),
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

    /// Appends a task changing `table_name` with `ddl`.
    pub fn task(mut self, table_name: impl Into<String>, ddl: impl Into<String>) -> Self {
        self.tasks.push(NewRolloutTask {
            table_name: table_name.into(),
            ddl: ddl.into(),
        });
        self
    }
}

/// One task of a [`NewRolloutOperation`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRolloutTask {
    /// The table the DDL changes: 1 to 255 characters.
    pub table_name: String,
    /// The DDL: 1 to 65,535 bytes.
    pub ddl: String,
}
