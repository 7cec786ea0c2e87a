//! The request commands (`stop`, `start`, `cancel`, `release`, `cutover`, `revert`, `skip-revert`,
//! `retry`): record the operator's request, then say what it did and where the apply's deployments
//! are right after. Idempotent while the request is pending: asking again returns the pending one.

use std::io::Write;

use applyops::models::NewControlRequest;
use applyops::state::{ControlRequestKind, ControlRequestStatus};
use applyops::{Store, StoreError};

use super::views::{DeploymentStateDoc, RequestDoc, RequestOutcome, RequestOutcomeDoc};
use super::RevertArgs;
use super::{print_json, resolve_target, CommandResult, Failure, RequestArgs};

/// `revert APPLY …` as a request: `--by` is required, and the migration flags do not belong.
pub fn revert_args(args: RevertArgs) -> Result<RequestArgs, Failure> {
    if args.yes || args.force {
        return Err(Failure::Refused(
            "--yes and --force belong to a migration revert, which takes no APPLY; nothing was \
             changed"
                .to_owned(),
        ));
    }
    let by = args.by.ok_or_else(|| {
        Failure::Refused(
            "a revert request needs --by NAME (who asks); nothing was changed".to_owned(),
        )
    })?;
    Ok(RequestArgs {
        apply: args.apply.expect("a revert request names an apply"),
        deployment: args.deployment,
        by,
        reason: args.reason,
        json: args.json,
    })
}

/// What workers do with a pending request of `kind`, in a sentence.
fn what_happens(kind: ControlRequestKind) -> &'static str {
    match kind {
        ControlRequestKind::Stop => {
            "workers stop each deployment it covers at their next step; `start` resumes"
        }
        ControlRequestKind::Start => "workers resume each stopped or paused deployment it covers",
        ControlRequestKind::Cancel => {
            "workers cancel each deployment it covers at their next step; it is not resumed"
        }
        ControlRequestKind::Release => {
            "the failures recorded so far no longer hold later deployments back (on_failure pause)"
        }
        ControlRequestKind::Cutover => {
            "the cutover claim cuts over the deployment(s) it names once they wait for cutover"
        }
        ControlRequestKind::Revert => {
            "the cutover claim reverts the deployment(s) in their revert window"
        }
        ControlRequestKind::SkipRevert => {
            "the cutover claim closes the revert window of the deployment(s) without reverting"
        }
        ControlRequestKind::Retry => "the retry claim restarts the deployment",
    }
}

/// Records `kind` for `args` and reports it.
pub fn run(
    store: &Store,
    kind: ControlRequestKind,
    args: &RequestArgs,
    out: &mut impl Write,
) -> CommandResult {
    let (apply, operation) = resolve_target(store, &args.apply, args.deployment.as_deref())?;
    let operation_id = operation.as_ref().map(|op| op.id);
    let was_pending = store
        .control_requests()
        .list_pending(apply.id)?
        .into_iter()
        .find(|request| request.kind == kind && request.apply_operation_id == operation_id);
    let mut new = NewControlRequest::new(apply.id, kind, args.by.clone());
    if let Some(id) = operation_id {
        new = new.for_operation(id);
    }
    if let Some(reason) = &args.reason {
        new = new.with_reason(reason.clone());
    }
    let request = store
        .control_requests()
        .request(&new)
        .map_err(|err| match err {
            StoreError::InvalidInput { .. }
            | StoreError::RequestRejected { .. }
            | StoreError::OppositeRequestPending { .. }
            | StoreError::HaltedBy { .. }
            | StoreError::TargetBusy { .. } => {
                Failure::Refused(format!("{err}; nothing was recorded"))
            }
            other => Failure::Store(other),
        })?;
    let rollout = store
        .applies()
        .rollout(apply.id)?
        .ok_or(StoreError::ApplyNotFound { id: apply.id })?;
    let operations: Vec<_> = rollout
        .operations
        .iter()
        .map(|op| op.operation.clone())
        .collect();
    let outcome = match (&was_pending, request.status) {
        (Some(pending), _) if pending.id == request.id => RequestOutcome::AlreadyPending,
        (_, ControlRequestStatus::Pending) => RequestOutcome::Recorded,
        (_, ControlRequestStatus::Completed) => RequestOutcome::Completed,
        (_, ControlRequestStatus::Failed) => RequestOutcome::Failed,
    };
    let doc = RequestOutcomeDoc {
        request: RequestDoc::new(&request, &operations),
        outcome,
        operations: operations
            .iter()
            .map(|op| DeploymentStateDoc {
                deployment: op.deployment.clone(),
                state: op.state.as_str(),
            })
            .collect(),
        apply_state: rollout.apply.state.as_str(),
    };
    if args.json {
        print_json(out, &doc);
        return Ok(());
    }
    let scope = doc
        .request
        .deployment
        .as_deref()
        .map_or_else(|| "whole apply".to_owned(), |d| format!("deployment {d}"));
    writeln!(
        out,
        "request {}: {} for apply {} ({}), {scope}, by {}",
        doc.request.id,
        doc.request.kind,
        apply.id,
        apply.apply_identifier,
        doc.request.requested_by
    )
    .ok();
    let did = match outcome {
        RequestOutcome::AlreadyPending => format!(
            "already pending since {}: nothing new recorded; {}",
            doc.request.created_at,
            what_happens(kind)
        ),
        RequestOutcome::Recorded => format!("recorded, pending: {}", what_happens(kind)),
        RequestOutcome::Completed => "carried out at once".to_owned(),
        RequestOutcome::Failed => format!(
            "failed: {}",
            doc.request
                .result
                .as_deref()
                .unwrap_or("no reason recorded")
        ),
    };
    writeln!(out, "{did}").ok();
    let states: Vec<String> = doc
        .operations
        .iter()
        .map(|op| format!("{} {}", op.deployment, op.state))
        .collect();
    writeln!(
        out,
        "apply {} is {}; deployments: {}",
        apply.id,
        doc.apply_state,
        states.join(", ")
    )
    .ok();
    Ok(())
}
