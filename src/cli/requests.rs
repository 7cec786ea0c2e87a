//! The request commands (`stop`, `start`, `cancel`, `release`, `cutover`, `revert`, `skip-revert`,
//! `retry`): record the operator's request, then say what became of it (the stored status of the
//! request row, read back after the store returned) and where the apply's deployments are right
//! after. Idempotent while the request is pending: asking again returns the pending one.

use std::collections::BTreeMap;
use std::io::Write;

use applyops::models::{ApplyOperation, ControlRequest, NewControlRequest};
use applyops::state::{ApplyState, ControlRequestKind, ControlRequestStatus};
use applyops::store::{applies, apply_operations, control_requests};
use applyops::{Store, StoreError};
use diesel::Connection;

use super::text::shown;
use super::views::{DeploymentStateDoc, RequestDoc, RequestOutcome, RequestOutcomeDoc};
use super::RevertArgs;
use super::{print_json, resolve_target, CommandResult, Failure, RequestArgs};

/// Up to this many deployments, a request lists each one's state; beyond, it counts them by state
/// and lists the first [`SUMMARY_FIRST`].
const LIST_ALL_UP_TO: usize = 10;
/// How many deployments a summary lists by name.
const SUMMARY_FIRST: usize = 5;

/// The command that records `kind`: its stored name with `-` for `_` (`skip-revert`).
pub fn command_name(kind: ControlRequestKind) -> String {
    kind.as_str().replace('_', "-")
}

/// `revert APPLY …` as a request: `--by` is required, and the migration flags do not belong. Both
/// are usage errors (exit 2), found before the database is opened.
pub fn revert_args(args: RevertArgs) -> Result<RequestArgs, Failure> {
    if args.yes || args.force {
        return Err(Failure::Usage(
            "--yes and --force belong to a migration revert, which takes no APPLY; nothing was \
             changed"
                .to_owned(),
        ));
    }
    let by = args.by.ok_or_else(|| {
        Failure::Usage(
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

/// The store's refusal of a request, in the command's words; `None` for an error that is not a
/// refusal.
fn refusal(err: &StoreError) -> Option<String> {
    let text = match err {
        StoreError::RequestRejected { kind, reason } => {
            format!("cannot record {}: {reason}", command_name(*kind))
        }
        StoreError::OppositeRequestPending { id, kind } => format!(
            "control request {id} ({} for the whole apply) is pending; it must be resolved first",
            command_name(*kind)
        ),
        StoreError::InvalidInput { .. }
        | StoreError::HaltedBy { .. }
        | StoreError::TargetBusy { .. } => err.to_string(),
        _ => return None,
    };
    Some(format!("{text}; nothing was recorded"))
}

/// The request as stored, the apply's operations and its state, read together after the request.
struct After {
    request: ControlRequest,
    operations: Vec<ApplyOperation>,
    apply_state: ApplyState,
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
    let returned = store
        .control_requests()
        .request(&new)
        .map_err(|err| match refusal(&err) {
            Some(text) => Failure::Refused(text),
            None => Failure::Store(err),
        })?;
    // What is printed is what is stored: the request row read back, with the deployments, in one
    // snapshot (not the value the call returned, nor a guess from the kind).
    let after = store.run(|conn| {
        conn.transaction(|conn| {
            let request = control_requests::get(conn, returned.id)?
                .ok_or(StoreError::ControlRequestNotFound { id: returned.id })?;
            let operations = apply_operations::list_by_apply(conn, apply.id)?;
            let apply_state = applies::get(conn, apply.id)?
                .ok_or(StoreError::ApplyNotFound { id: apply.id })?
                .state;
            Ok::<_, StoreError>(After {
                request,
                operations,
                apply_state,
            })
        })
    })?;
    let outcome = match after.request.status {
        ControlRequestStatus::Pending
            if was_pending.is_some_and(|pending| pending.id == after.request.id) =>
        {
            RequestOutcome::AlreadyPending
        }
        ControlRequestStatus::Pending => RequestOutcome::Recorded,
        ControlRequestStatus::Completed => RequestOutcome::Completed,
        ControlRequestStatus::Failed => RequestOutcome::Failed,
    };
    let doc = RequestOutcomeDoc {
        request: RequestDoc::new(&after.request, &after.operations),
        outcome,
        operations: after
            .operations
            .iter()
            .map(|op| DeploymentStateDoc {
                deployment: op.deployment.clone(),
                state: op.state.as_str(),
            })
            .collect(),
        apply_state: after.apply_state.as_str(),
    };
    if args.json {
        print_json(out, &doc);
        return Ok(());
    }
    let scope = doc.request.deployment.as_deref().map_or_else(
        || "whole apply".to_owned(),
        |d| format!("deployment {}", shown(d)),
    );
    writeln!(
        out,
        "request {}: {} for apply {} ({}), {scope}, by {}",
        doc.request.id,
        command_name(kind),
        apply.id,
        shown(&apply.apply_identifier),
        shown(&doc.request.requested_by)
    )
    .ok();
    let status = after.request.status;
    let result = doc.request.result.as_deref().map(shown);
    let did = match (outcome, result) {
        (RequestOutcome::AlreadyPending, _) => format!(
            "already {status} since {}: nothing new recorded; {}",
            doc.request.created_at,
            what_happens(kind)
        ),
        (RequestOutcome::Recorded, _) => format!("recorded, {status}: {}", what_happens(kind)),
        (RequestOutcome::Completed, None) => format!("{status} at once"),
        (RequestOutcome::Completed, Some(result)) => {
            format!("{status} at once (its result: {result})")
        }
        (RequestOutcome::Failed, result) => format!(
            "{status}: {}",
            result.unwrap_or("no reason recorded".into())
        ),
    };
    writeln!(out, "{did}").ok();
    writeln!(
        out,
        "apply {} is {}; {}",
        apply.id,
        doc.apply_state,
        deployments_line(&after.operations)
    )
    .ok();
    Ok(())
}

/// The deployments and their states: each one for a few; for many, the counts by state and the
/// first [`SUMMARY_FIRST`], so that a 1,000-deployment apply takes one short line.
fn deployments_line(operations: &[ApplyOperation]) -> String {
    let named = |ops: &[ApplyOperation]| {
        ops.iter()
            .map(|op| format!("{} {}", shown(&op.deployment), op.state))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if operations.len() <= LIST_ALL_UP_TO {
        return format!("deployments: {}", named(operations));
    }
    let mut counts: BTreeMap<usize, (ApplyState, usize)> = BTreeMap::new();
    for op in operations {
        // In the vocabulary's order, so that the line reads the same every time.
        let rank = ApplyState::ALL
            .iter()
            .position(|state| *state == op.state)
            .unwrap_or(usize::MAX);
        counts.entry(rank).or_insert((op.state, 0)).1 += 1;
    }
    let counts: Vec<String> = counts
        .values()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    format!(
        "{} deployments: {}; the first {SUMMARY_FIRST}: {}, …",
        operations.len(),
        counts.join(", "),
        named(&operations[..SUMMARY_FIRST])
    )
}
