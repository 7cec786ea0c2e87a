//! The request commands (`stop`, `start`, `cancel`, `release`, `cutover`, `revert`, `skip-revert`,
//! `retry`): record the operator's request, then say what became of it (the stored status of the
//! request row, read back after the store returned) and where the apply's deployments are right
//! after. Idempotent while the request is pending: asking again returns the pending one.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;

use applyops::models::{ApplyOperation, ControlRequest, NewControlRequest};
use applyops::state::{ApplyState, ControlRequestKind, ControlRequestStatus};
use applyops::store::{applies, apply_operations, control_requests};
use applyops::{Store, StoreError};
use diesel::Connection;

use super::text::shown;
use super::views::{DeploymentStateDoc, RequestDoc, RequestOutcome, RequestOutcomeDoc};
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

/// The environment variables that name who asks when `--by` is not given, in order: the first set
/// and not empty wins. `USER` and `LOGNAME` are the login name, as login(1) sets them.
const REQUESTER_VARIABLES: [&str; 3] = ["APPLYOPS_USER", "USER", "LOGNAME"];

/// Who asks: `--by`, else the first of [`REQUESTER_VARIABLES`] set and not empty, else the name of
/// this process's user in the user database (`/etc/passwd`). None of them: a usage error asking for
/// `--by`, before the database is opened. The name is not checked here: the store refuses one with
/// a control character (exit 1), as it refuses such a `--by`.
pub fn requester(by: Option<&str>) -> Result<String, Failure> {
    requester_from(by, |name| std::env::var_os(name), login_name)
}

/// [`requester`] with the environment and the user database given.
fn requester_from(
    by: Option<&str>,
    env: impl Fn(&str) -> Option<OsString>,
    user_database: impl FnOnce() -> Result<String, String>,
) -> Result<String, Failure> {
    if let Some(by) = by {
        return Ok(by.to_owned());
    }
    for name in REQUESTER_VARIABLES {
        let Some(value) = env(name).filter(|value| !value.is_empty()) else {
            continue;
        };
        return value.into_string().map_err(|_| {
            Failure::Usage(format!(
                "{name} is not valid UTF-8, so it cannot say who asks: pass --by NAME; nothing \
                 was recorded"
            ))
        });
    }
    user_database().map_err(|why| {
        Failure::Usage(format!(
            "who asks? --by is not given, APPLYOPS_USER, USER and LOGNAME are unset or empty, and \
             {why}: pass --by NAME; nothing was recorded"
        ))
    })
}

/// This process's user's name in `/etc/passwd`, or why there is none.
#[cfg(unix)]
fn login_name() -> Result<String, String> {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|err| format!("/etc/passwd cannot be read ({err})"))?;
    passwd_name(&passwd, uid).ok_or_else(|| format!("uid {uid} has no name in /etc/passwd"))
}

/// No user database to read.
#[cfg(not(unix))]
fn login_name() -> Result<String, String> {
    Err("this system's user database is not read".to_owned())
}

/// The name of `uid` in the text of a passwd(5) file (`name:password:uid:gid:…`, `#` comments).
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
            (entry_uid == uid && !name.is_empty()).then(|| name.to_owned())
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

/// Records `kind` for `args`, asked by `by` ([`requester`]), and reports it.
pub fn run(
    store: &Store,
    kind: ControlRequestKind,
    args: &RequestArgs,
    by: &str,
    out: &mut impl Write,
) -> CommandResult {
    let (apply, operation) = resolve_target(store, &args.apply, args.deployment.as_deref())?;
    let operation_id = operation.as_ref().map(|op| op.id);
    let was_pending = store
        .control_requests()
        .list_pending(apply.id)?
        .into_iter()
        .find(|request| request.kind == kind && request.apply_operation_id == operation_id);
    let mut new = NewControlRequest::new(apply.id, kind, by.to_owned());
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
        "request {}: {} for apply {} ({}), {scope}, recorded by {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    fn no_user_database() -> Result<String, String> {
        Err("uid 4242 has no name in /etc/passwd".to_owned())
    }

    #[test]
    fn by_then_applyops_user_then_user_then_logname_then_the_user_database() {
        fn who(by: Option<&str>, vars: &[(&str, &str)]) -> String {
            requester_from(by, env(vars), || Ok("root".to_owned())).unwrap()
        }
        let all = [
            ("APPLYOPS_USER", "ops"),
            ("USER", "alice"),
            ("LOGNAME", "al"),
        ];
        assert_eq!(who(Some("bob"), &all), "bob");
        assert_eq!(who(None, &all), "ops");
        assert_eq!(
            who(None, &[("APPLYOPS_USER", ""), ("USER", "alice")]),
            "alice"
        );
        assert_eq!(who(None, &[("LOGNAME", "al")]), "al");
        assert_eq!(who(None, &[]), "root");
    }

    #[test]
    fn nobody_to_name_is_a_usage_error_asking_for_by() {
        let err = requester_from(None, env(&[("USER", "")]), no_user_database).unwrap_err();
        assert_eq!(err.exit_code(), super::super::EXIT_USAGE);
        let text = err.to_string();
        assert!(text.contains("pass --by NAME"), "{text}");
        assert!(text.contains("uid 4242 has no name"), "{text}");
        assert!(text.ends_with("nothing was recorded"), "{text}");
    }

    #[test]
    fn passwd_entries_are_read_by_uid() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/bash\n\
                      alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\nbroken\n";
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(passwd, 1001), None);
    }
}
