//! The JSON documents the read commands print with `--json`, and what the tables are made from.
//!
//! These shapes are the command line's stable interface for scripts (README, "The operator's
//! command line"): fields are only ever added. Timestamps are RFC 3339 in UTC with a `Z`; ids are
//! numbers; states, policies and kinds are the stored snake_case names. Stored text is kept as
//! stored here: the JSON printer escapes what is not printable, and the tables show it through
//! [`shown`](super::text::shown).

use std::collections::HashMap;

use applyops::models::{Apply, ApplyOperation, ControlRequest, LiveLease};
use applyops::store::applies::{ApplyProgress, Blocker};
use chrono::NaiveDateTime;
use serde::Serialize;

use super::render::{blocker_code, blocker_text, rfc3339};

/// An RFC 3339 timestamp, or `null`.
fn when(at: Option<NaiveDateTime>) -> Option<String> {
    at.map(rfc3339)
}

/// One apply, as `applies` lists it and `status` heads it.
#[derive(Debug, Serialize)]
pub struct ApplyDoc {
    pub id: i64,
    pub identifier: String,
    pub database: String,
    pub environment: String,
    pub deployment: String,
    pub state: &'static str,
    pub operations: i64,
    pub completed: i64,
    pub requested_by: String,
    pub defer_cutover: bool,
    pub max_concurrency: Option<i64>,
    pub max_attempts: i32,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
}

impl ApplyDoc {
    /// `apply` with its progress.
    pub fn new(apply: &Apply, progress: Option<&ApplyProgress>) -> ApplyDoc {
        ApplyDoc {
            id: apply.id.get(),
            identifier: apply.apply_identifier.clone(),
            database: apply.database_name.clone(),
            environment: apply.environment.clone(),
            deployment: apply.deployment.clone(),
            state: apply.state.as_str(),
            operations: progress.map_or(0, |p| p.operations),
            completed: progress.map_or(0, |p| p.completed),
            requested_by: apply.requested_by.clone(),
            defer_cutover: apply.defer_cutover,
            max_concurrency: apply.max_concurrency,
            max_attempts: apply.max_attempts,
            error: apply.error_message.clone(),
            created_at: rfc3339(apply.created_at),
            started_at: when(apply.started_at),
            completed_at: when(apply.completed_at),
        }
    }

    /// `3/5 completed`.
    pub fn progress_text(&self) -> String {
        format!("{}/{} completed", self.completed, self.operations)
    }
}

/// `applies --json`: a page of applies, newest first, and the cursor of the next page.
#[derive(Debug, Serialize)]
pub struct AppliesDoc {
    pub applies: Vec<ApplyDoc>,
    /// Pass to `applies --after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

/// The worker holding an operation.
#[derive(Debug, Serialize)]
pub struct HolderDoc {
    pub owner: String,
    pub expires_at: String,
    /// Seconds left on the lease when it was read, by the database's clock.
    pub expires_in_seconds: f64,
}

/// Why an operation waits.
#[derive(Debug, Serialize)]
pub struct BlockerDoc {
    /// A stable snake_case name (`waiting_for_sibling`, `stop_pending`, …; `claimable` when the
    /// next claim takes it).
    pub reason: &'static str,
    /// The same, as a sentence; the names in it are escaped as the tables show them.
    pub text: String,
}

/// One deployment of an apply.
#[derive(Debug, Serialize)]
pub struct OperationDoc {
    pub id: i64,
    pub deployment: String,
    pub target: String,
    pub state: &'static str,
    pub cutover_policy: &'static str,
    pub on_failure: &'static str,
    pub attempt: i32,
    /// `null` when no worker holds it.
    pub holder: Option<HolderDoc>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// Why no claim takes it now; `null` once settled or while held.
    pub blocker: Option<BlockerDoc>,
    /// The last error recorded.
    pub error: Option<String>,
    pub external_id: Option<String>,
}

/// A control request.
#[derive(Debug, Serialize)]
pub struct RequestDoc {
    pub id: i64,
    pub kind: &'static str,
    /// The deployment it names; `null` for the whole apply.
    pub deployment: Option<String>,
    pub status: &'static str,
    pub requested_by: String,
    pub reason: Option<String>,
    pub result: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

impl RequestDoc {
    /// `request`, its operation named by deployment through `operations`.
    pub fn new(request: &ControlRequest, operations: &[ApplyOperation]) -> RequestDoc {
        RequestDoc {
            id: request.id.get(),
            kind: request.kind.as_str(),
            deployment: request.apply_operation_id.map(|id| {
                operations
                    .iter()
                    .find(|op| op.id == id)
                    .map_or_else(|| format!("#{id}"), |op| op.deployment.clone())
            }),
            status: request.status.as_str(),
            requested_by: request.requested_by.clone(),
            reason: request.reason.clone(),
            result: request.result.clone(),
            created_at: rfc3339(request.created_at),
            completed_at: when(request.completed_at),
        }
    }
}

/// What `status` reads of an apply, in one read transaction: the apply, its operations in claim
/// order and its pending control requests; never its tasks, which no view prints.
#[derive(Debug, Clone)]
pub struct ApplyView {
    pub apply: Apply,
    pub operations: Vec<ApplyOperation>,
    pub pending_requests: Vec<ControlRequest>,
}

/// `status --json` (and each line of `watch --json`): the apply, its deployments in claim order,
/// its pending control requests.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub apply: ApplyDoc,
    pub operations: Vec<OperationDoc>,
    pub pending_requests: Vec<RequestDoc>,
    /// When this was read, by the database's clock when a lease was read with it.
    pub read_at: String,
}

impl StatusDoc {
    /// The document for `view`, with the blockers of its waiting operations, the live leases
    /// (any; those of other applies are ignored) and the time they were read.
    pub fn new(
        view: &ApplyView,
        blockers: &[(applyops::models::ApplyOperationId, Blocker)],
        leases: &[LiveLease],
        now: NaiveDateTime,
    ) -> StatusDoc {
        let operations = &view.operations;
        let completed = operations
            .iter()
            .filter(|op| op.state == applyops::state::ApplyState::Completed)
            .count() as i64;
        let progress = ApplyProgress {
            apply_id: view.apply.id,
            operations: operations.len() as i64,
            completed,
        };
        let deployment_of = |id| {
            operations
                .iter()
                .find(|op| op.id == id)
                .map_or_else(|| format!("operation {id}"), |op| op.deployment.clone())
        };
        let leases: HashMap<_, _> = leases.iter().map(|l| (l.operation_id, l)).collect();
        let blockers: HashMap<_, _> = blockers.iter().map(|(id, b)| (*id, b)).collect();
        let docs = operations
            .iter()
            .map(|op| {
                let holder = leases.get(&op.id).map(|lease| HolderDoc {
                    owner: lease.owner.clone(),
                    expires_at: rfc3339(lease.expires_at),
                    expires_in_seconds: lease.expires_in().as_secs_f64(),
                });
                let blocker = blockers
                    .get(&op.id)
                    .filter(|_| holder.is_none())
                    .map(|blocker| BlockerDoc {
                        reason: blocker_code(blocker),
                        text: blocker_text(blocker, op.apply_id, deployment_of, now),
                    });
                OperationDoc {
                    id: op.id.get(),
                    deployment: op.deployment.clone(),
                    target: op.target.clone(),
                    state: op.state.as_str(),
                    cutover_policy: op.cutover_policy.as_str(),
                    on_failure: op.on_failure.as_str(),
                    attempt: op.attempt,
                    holder,
                    started_at: when(op.started_at),
                    completed_at: when(op.completed_at),
                    blocker,
                    error: op.error_message.clone(),
                    external_id: op.external_id.clone(),
                }
            })
            .collect();
        StatusDoc {
            apply: ApplyDoc::new(&view.apply, Some(&progress)),
            operations: docs,
            pending_requests: view
                .pending_requests
                .iter()
                .map(|request| RequestDoc::new(request, operations))
                .collect(),
            read_at: rfc3339(now),
        }
    }
}

/// One live lease, as `leases` lists them.
#[derive(Debug, Serialize)]
pub struct LeaseDoc {
    pub operation_id: i64,
    pub apply_id: i64,
    pub deployment: String,
    pub state: &'static str,
    pub owner: String,
    pub acquired_at: Option<String>,
    pub expires_at: String,
    pub expires_in_seconds: f64,
}

impl LeaseDoc {
    /// The document for `lease`.
    pub fn new(lease: &LiveLease) -> LeaseDoc {
        LeaseDoc {
            operation_id: lease.operation_id.get(),
            apply_id: lease.apply_id.get(),
            deployment: lease.deployment.clone(),
            state: lease.state.as_str(),
            owner: lease.owner.clone(),
            acquired_at: when(lease.acquired_at),
            expires_at: rfc3339(lease.expires_at),
            expires_in_seconds: lease.expires_in().as_secs_f64(),
        }
    }
}

/// `leases --json`.
#[derive(Debug, Serialize)]
pub struct LeasesDoc {
    pub leases: Vec<LeaseDoc>,
    pub read_at: String,
}

/// What a request command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// A new request, pending: workers carry it out.
    Recorded,
    /// An identical request was pending; nothing new was recorded.
    AlreadyPending,
    /// Carried out at once.
    Completed,
    /// Refused by what it found (its `result` says why).
    Failed,
}

/// What a request command did, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct RequestOutcomeDoc {
    pub request: RequestDoc,
    pub outcome: RequestOutcome,
    /// The apply's deployments and their states right after.
    pub operations: Vec<DeploymentStateDoc>,
    /// The apply's state right after.
    pub apply_state: &'static str,
}

/// A deployment and its state.
#[derive(Debug, Serialize)]
pub struct DeploymentStateDoc {
    pub deployment: String,
    pub state: &'static str,
}
