//! The operator's commands of the `applyops` binary (`applies`, `status`, `watch`, `wait`, `create`,
//! the request commands, `leases`), run as a process against SQLite and MySQL: output, JSON shape,
//! exit codes (0 done as asked, 1 error, 2 usage, 3 the apply ended otherwise, 4 timed out), and
//! what each one wrote.

use std::path::PathBuf;
use std::process::Output;

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::{applies, apply_operations, claims, control_requests, leases};
use assert_cmd::Command;
use diesel::prelude::*;
use serde_json::Value;

use crate::backend_tests;
use crate::fixtures::{self, opts};
use crate::harness::TestDb;

/// Runs `applyops --database-url URL args…` with no `DATABASE_URL`, `APPLYOPS_DATABASE_URL`,
/// `APPLYOPS_USER` or `NO_COLOR` inherited.
pub(crate) fn run(db: &TestDb, args: &[&str]) -> Output {
    Command::cargo_bin("applyops")
        .expect("the applyops binary")
        .env_remove("DATABASE_URL")
        .env_remove("APPLYOPS_DATABASE_URL")
        .env_remove("APPLYOPS_USER")
        .env_remove("NO_COLOR")
        .arg("--database-url")
        .arg(db.url())
        .args(args)
        .output()
        .expect("run applyops")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Runs and expects exit 0; returns stdout.
pub(crate) fn ok(db: &TestDb, args: &[&str]) -> String {
    let output = run(db, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Runs and expects exit `code`; returns stderr.
pub(crate) fn fails(db: &TestDb, args: &[&str], code: i32) -> String {
    let output = run(db, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    stderr(&output)
}

/// Runs with `--json` appended and parses the one document printed.
pub(crate) fn json(db: &TestDb, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let text = ok(db, &args);
    assert_eq!(text.lines().count(), 1, "one document: {text}");
    serde_json::from_str(&text).unwrap()
}

/// A rollout file in a temporary directory that lives as long as the returned guard.
pub(crate) struct RolloutFile {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

pub(crate) fn rollout_file(name: &str, text: &str) -> RolloutFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    RolloutFile { _dir: dir, path }
}

/// A three-deployment rolling rollout as TOML, for `identifier` on database `database`.
pub(crate) fn toml_rollout(identifier: &str, database: &str) -> String {
    format!(
        r#"apply_identifier = "{identifier}"
database_name = "{database}"
environment = "production"
requested_by = "alice"

[[operations]]
deployment = "us-east"
tasks = [{{ table_name = "orders", ddl = "ALTER TABLE orders ADD COLUMN note TEXT" }}]

[[operations]]
deployment = "us-west"

[[operations]]
deployment = "eu-central"
"#
    )
}

/// Creates the TOML rollout through the CLI and returns its apply id.
pub(crate) fn create(db: &TestDb, identifier: &str, database: &str) -> ApplyId {
    let file = rollout_file("rollout.toml", &toml_rollout(identifier, database));
    let doc = json(db, &["create", "--file", file.path.to_str().unwrap()]);
    ApplyId(doc["apply"]["id"].as_i64().unwrap())
}

pub(crate) fn operation_ids(db: &TestDb, apply_id: ApplyId) -> Vec<ApplyOperationId> {
    apply_operations::list_by_apply(&mut db.conn(), apply_id)
        .unwrap()
        .into_iter()
        .map(|op| op.id)
        .collect()
}

backend_tests!(
    cli_create_from_toml_prints_the_apply_and_its_deployments,
    cli_create_from_json_prints_the_status_document,
    cli_create_names_the_bad_field_and_writes_nothing,
    cli_create_of_a_busy_target_names_the_holder_and_writes_nothing,
    cli_applies_lists_newest_first_with_progress,
    cli_applies_filters_and_pages_with_a_cursor,
    cli_status_takes_the_id_or_the_identifier,
    cli_status_shows_holders_blockers_errors_and_pending_requests,
    cli_status_of_an_unknown_apply_exits_1,
    cli_stop_is_idempotent_while_pending_and_start_resumes,
    cli_cancel_of_one_deployment_cancels_only_it,
    cli_retry_of_a_deployment_that_did_not_fail_is_refused,
    cli_retry_of_a_failed_deployment_makes_it_retryable,
    cli_cutover_of_one_deployment_on_a_deferring_apply,
    cli_cutover_on_an_apply_that_cuts_over_by_itself_is_refused,
    cli_release_and_skip_revert_and_revert_requests,
    cli_request_for_an_unknown_deployment_lists_the_apply_deployments,
    cli_leases_lists_live_leases_and_filters_by_owner,
    cli_wait_returns_at_the_state_and_times_out_with_exit_4,
    cli_watch_off_a_terminal_prints_changes_until_settled,
    cli_watch_json_prints_status_documents_and_times_out_with_exit_4,
    cli_tables_off_a_terminal_never_wrap_and_have_no_colour,
    cli_tables_on_a_narrow_terminal_never_split_a_word,
    cli_watch_on_a_terminal_draws_bars_and_colour_unless_no_color,
);

fn cli_create_from_toml_prints_the_apply_and_its_deployments(db: &TestDb) {
    let file = rollout_file("r.toml", &toml_rollout("cli-toml", "shop"));
    let text = ok(db, &["create", "--file", file.path.to_str().unwrap()]);
    assert!(
        text.starts_with("created apply ") && text.contains("(cli-toml) with 3 deployment(s)"),
        "{text}"
    );
    for deployment in ["us-east", "us-west", "eu-central"] {
        assert!(text.contains(deployment), "{text}");
    }
    let apply = applies::get_by_identifier(&mut db.conn(), "cli-toml")
        .unwrap()
        .expect("created");
    let rollout = applies::rollout(&mut db.conn(), apply.id).unwrap().unwrap();
    assert_eq!(rollout.operations.len(), 3);
    assert_eq!(rollout.operations[0].tasks.len(), 1, "the task came along");
    assert_eq!(apply.requested_by, "alice");
}

fn cli_create_from_json_prints_the_status_document(db: &TestDb) {
    let file = rollout_file(
        "r.json",
        r#"{"apply_identifier": "cli-json", "database_name": "billing",
            "environment": "staging", "requested_by": "bob", "defer_cutover": true,
            "max_concurrency": 2,
            "operations": [{"deployment": "a", "cutover_policy": "barrier"},
                           {"deployment": "b", "cutover_policy": "barrier", "on_failure": "pause"}]}"#,
    );
    let doc = json(db, &["create", "--file", file.path.to_str().unwrap()]);
    let apply = &doc["apply"];
    assert_eq!(apply["identifier"], "cli-json");
    assert_eq!(apply["state"], "pending");
    assert_eq!(apply["defer_cutover"], true);
    assert_eq!(apply["max_concurrency"], 2);
    assert_eq!(apply["operations"], 2);
    assert_eq!(apply["completed"], 0);
    let created_at = apply["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
        "{created_at}"
    );
    let ops = doc["operations"].as_array().unwrap();
    assert_eq!(ops[1]["deployment"], "b");
    assert_eq!(ops[1]["cutover_policy"], "barrier");
    assert_eq!(ops[1]["on_failure"], "pause");
    assert_eq!(ops[0]["blocker"]["reason"], "claimable");
    assert_eq!(ops[1]["blocker"]["reason"], "waiting_for_sibling");
    assert!(ops[0]["holder"].is_null());
    assert_eq!(doc["pending_requests"], Value::Array(vec![]));
}

/// `create --file NAME` of a file holding `text`, expected to fail with exit 1 saying nothing was
/// created; returns stderr.
fn create_fails(db: &TestDb, name: &str, text: &str) -> String {
    let file = rollout_file(name, text);
    let err = fails(db, &["create", "--file", file.path.to_str().unwrap()], 1);
    assert!(err.contains("nothing was created"), "{err}");
    err
}

fn cli_create_names_the_bad_field_and_writes_nothing(db: &TestDb) {
    let head = "apply_identifier = \"x\"\ndatabase_name = \"d\"\nenvironment = \"e\"\nrequested_by = \"r\"\n";
    let err = create_fails(
        db,
        "r.json",
        r#"{"apply_identifier": "x", "database_name": "d", "environment": "e", "operations": []}"#,
    );
    assert!(err.contains("requested_by"), "{err}");
    let err = create_fails(
        db,
        "r.toml",
        &format!("{head}[[operations]]\ndeployment = \"a\"\n[[operations]]\ndeployment = \"a\"\n"),
    );
    assert!(err.starts_with("applyops: invalid "), "{err}");
    let err = create_fails(
        db,
        "r.toml",
        &format!("{head}[[operations]]\ndeployment = \"a\"\ncutover_policy = \"sideways\"\n"),
    );
    assert!(err.contains("sideways"), "{err}");
    let err = fails(db, &["create", "--file", "/nonexistent/rollout.toml"], 1);
    assert!(err.contains("cannot read"), "{err}");
    let page = applies::list(&mut db.conn(), &Default::default()).unwrap();
    assert!(page.items.is_empty(), "nothing written: {:?}", page.items);
}

fn cli_create_of_a_busy_target_names_the_holder_and_writes_nothing(db: &TestDb) {
    let holder = create(db, "cli-first", "shop");
    let file = rollout_file("r.toml", &toml_rollout("cli-second", "shop"));
    let err = fails(db, &["create", "--file", file.path.to_str().unwrap()], 1);
    assert!(err.contains(&holder.to_string()), "names the holder: {err}");
    assert!(err.contains("nothing was created"), "{err}");
    assert!(applies::get_by_identifier(&mut db.conn(), "cli-second")
        .unwrap()
        .is_none());
}

fn cli_applies_lists_newest_first_with_progress(db: &TestDb) {
    assert_eq!(ok(db, &["applies"]), "no applies\n");
    let first = create(db, "cli-a", "shop");
    let second = create(db, "cli-b", "billing");
    let ops = operation_ids(db, first);
    apply_operations::mark_completed(&mut db.conn(), ops[0]).unwrap();
    let text = ok(db, &["applies"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("PROGRESS"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&second.to_string()),
        "newest first: {text}"
    );
    assert!(lines[2].starts_with(&first.to_string()), "{text}");
    assert!(lines[2].contains("1/3 completed"), "{text}");
    assert!(lines[1].contains("0/3 completed"), "{text}");
    let doc = json(db, &["applies"]);
    let listed = doc["applies"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], second.get());
    assert_eq!(listed[1]["completed"], 1);
    assert_eq!(listed[1]["operations"], 3);
    let derived = applies::get(&mut db.conn(), first).unwrap().unwrap().state;
    assert_eq!(listed[1]["state"], derived.as_str(), "the derived state");
    assert!(doc["next"].is_null());
}

fn cli_applies_filters_and_pages_with_a_cursor(db: &TestDb) {
    let a = create(db, "cli-a", "shop");
    let b = create(db, "cli-b", "billing");
    let c = create(db, "cli-c", "search");
    for op in operation_ids(db, b) {
        apply_operations::mark_completed(&mut db.conn(), op).unwrap();
    }
    let completed = json(db, &["applies", "--state", "completed"]);
    let ids: Vec<i64> = completed["applies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|apply| apply["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![b.get()]);
    let shop = json(db, &["applies", "--database", "shop"]);
    assert_eq!(shop["applies"][0]["id"], a.get());
    assert_eq!(shop["applies"].as_array().unwrap().len(), 1);
    let none = json(db, &["applies", "--deployment", "nowhere"]);
    assert!(none["applies"].as_array().unwrap().is_empty());
    let page = json(db, &["applies", "--limit", "2"]);
    assert_eq!(page["applies"][0]["id"], c.get());
    let next = page["next"].as_str().expect("a next page").to_owned();
    let text = ok(db, &["applies", "--limit", "2"]);
    assert!(
        text.contains(&format!("applyops applies --after {next}")),
        "{text}"
    );
    let rest = json(db, &["applies", "--limit", "2", "--after", &next]);
    assert_eq!(rest["applies"][0]["id"], a.get());
    assert!(rest["next"].is_null());
    let err = fails(db, &["applies", "--state", "sideways"], 2);
    assert!(err.contains("unknown state"), "{err}");
    let err = fails(db, &["applies", "--limit", "0"], 2);
    assert!(err.contains("limit"), "{err}");
}

fn cli_status_takes_the_id_or_the_identifier(db: &TestDb) {
    let id = create(db, "cli-status", "shop");
    let by_id = json(db, &["status", &id.to_string()]);
    let by_name = json(db, &["status", "cli-status"]);
    assert_eq!(by_id["apply"], by_name["apply"]);
    assert_eq!(by_id["apply"]["identifier"], "cli-status");
}

fn cli_status_shows_holders_blockers_errors_and_pending_requests(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) =
        fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let claimed = claims::claim_next(conn, &opts("cli-worker-7"))
        .unwrap()
        .unwrap();
    assert_eq!(claimed.operation.id, ops[0]);
    apply_operations::mark_failed(conn, ops[1], "disk full on replica").unwrap();
    fixtures::ask(
        conn,
        apply_id,
        Some(ops[0]),
        ControlRequestKind::Stop,
        Some("peak"),
    )
    .unwrap();
    let text = ok(db, &["status", &apply_id.to_string()]);
    assert!(text.contains("cli-worker-7"), "the holder: {text}");
    assert!(text.contains("disk full on replica"), "the error: {text}");
    assert!(text.contains("pending requests:"), "{text}");
    assert!(text.contains("stop"), "{text}");
    let doc = json(db, &["status", &apply_id.to_string()]);
    let held = &doc["operations"][0];
    assert_eq!(held["holder"]["owner"], "cli-worker-7");
    let left = held["holder"]["expires_in_seconds"].as_f64().unwrap();
    assert!(left > 0.0 && left <= 60.0, "{left}");
    assert!(
        held["blocker"].is_null(),
        "a held operation shows its holder"
    );
    assert_eq!(doc["operations"][1]["state"], "failed");
    assert_eq!(doc["operations"][1]["error"], "disk full on replica");
    assert_eq!(doc["operations"][2]["blocker"]["reason"], "claimable");
    let requests = doc["pending_requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "the stop waits for the holder");
    assert_eq!(requests[0]["kind"], "stop");
    assert_eq!(requests[0]["deployment"], "deployment-0");
    assert_eq!(requests[0]["reason"], "peak");
    assert_eq!(requests[0]["status"], "pending");
}

fn cli_status_of_an_unknown_apply_exits_1(db: &TestDb) {
    let err = fails(db, &["status", "no-such-apply"], 1);
    assert_eq!(
        err,
        "applyops: no apply has the id or identifier \"no-such-apply\"\n"
    );
    let err = fails(db, &["status"], 2);
    assert!(err.contains("Usage"), "{err}");
}

fn cli_stop_is_idempotent_while_pending_and_start_resumes(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = fixtures::rollout(conn, 2, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let claimed = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    let apply = apply_id.to_string();
    let first = json(db, &["stop", &apply, "--by", "alice", "--reason", "peak"]);
    assert_eq!(first["outcome"], "recorded");
    assert_eq!(first["request"]["kind"], "stop");
    assert_eq!(first["request"]["requested_by"], "alice");
    assert!(first["request"]["deployment"].is_null());
    let again = ok(db, &["stop", &apply, "--by", "alice"]);
    assert!(again.contains("already pending"), "{again}");
    let pending = control_requests::list_pending(conn, apply_id).unwrap();
    assert_eq!(pending.len(), 1, "one request, not two");
    assert_eq!(
        pending[0].id.get(),
        first["request"]["id"].as_i64().unwrap()
    );
    // The holder honours it; the never-started sibling was stopped by the request itself.
    leases::update_state(conn, &claimed.lease, ApplyState::Stopped).unwrap();
    let stopped = apply_operations::get(conn, ops[1]).unwrap().unwrap();
    assert_eq!(stopped.state, ApplyState::Stopped);
    let start = json(db, &["start", &apply, "--by", "alice"]);
    assert_eq!(start["request"]["kind"], "start");
    let states: Vec<&str> = start["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["stopped", "pending"],
        "the started one waits for resume"
    );
}

fn cli_cancel_of_one_deployment_cancels_only_it(db: &TestDb) {
    let id = create(db, "cli-cancel", "shop");
    let text = ok(
        db,
        &[
            "cancel",
            "cli-cancel",
            "--deployment",
            "us-west",
            "--by",
            "ops",
        ],
    );
    assert!(text.contains("deployment us-west"), "{text}");
    let ops = apply_operations::list_by_apply(&mut db.conn(), id).unwrap();
    let states: Vec<ApplyState> = ops.iter().map(|op| op.state).collect();
    assert_eq!(
        states,
        [
            ApplyState::Pending,
            ApplyState::Cancelled,
            ApplyState::Pending
        ]
    );
}

fn cli_retry_of_a_deployment_that_did_not_fail_is_refused(db: &TestDb) {
    let id = create(db, "cli-retry-no", "shop");
    let err = fails(
        db,
        &[
            "retry",
            "cli-retry-no",
            "--deployment",
            "us-east",
            "--by",
            "ops",
        ],
        1,
    );
    assert!(err.contains("nothing was recorded"), "{err}");
    assert!(control_requests::list_pending(&mut db.conn(), id)
        .unwrap()
        .is_empty());
    let err = fails(db, &["retry", "cli-retry-no", "--by", "ops"], 2);
    assert!(err.contains("--deployment"), "{err}");
}

fn cli_retry_of_a_failed_deployment_makes_it_retryable(db: &TestDb) {
    let id = create(db, "cli-retry", "shop");
    let ops = operation_ids(db, id);
    apply_operations::mark_failed(&mut db.conn(), ops[0], "boom").unwrap();
    let doc = json(
        db,
        &[
            "retry",
            "cli-retry",
            "--deployment",
            "us-east",
            "--by",
            "ops",
        ],
    );
    assert_eq!(doc["request"]["kind"], "retry");
    assert_eq!(doc["request"]["deployment"], "us-east");
    assert_eq!(doc["operations"][0]["state"], "failed_retryable");
    let claimed = claims::claim_next(&mut db.conn(), &opts("w"))
        .unwrap()
        .unwrap();
    assert_eq!(claimed.operation.id, ops[0]);
}

fn cli_cutover_of_one_deployment_on_a_deferring_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = fixtures::rollout(conn, 2, CutoverPolicy::Barrier, FailurePolicy::Halt);
    applies::set_defer_cutover(conn, apply_id, true).unwrap();
    for id in &ops {
        fixtures::force_state(conn, *id, ApplyState::WaitingForCutover);
    }
    let doc = json(
        db,
        &[
            "cutover",
            &apply_id.to_string(),
            "--deployment",
            "deployment-1",
            "--by",
            "ops",
        ],
    );
    assert_eq!(doc["outcome"], "recorded");
    let claimed = claims::claim_next_cutover(conn, &opts("w"))
        .unwrap()
        .unwrap();
    assert_eq!(claimed.operation.id, ops[1], "the named one, out of order");
}

fn cli_cutover_on_an_apply_that_cuts_over_by_itself_is_refused(db: &TestDb) {
    create(db, "cli-auto", "shop");
    let err = fails(db, &["cutover", "cli-auto", "--by", "ops"], 1);
    assert!(err.contains("cannot record cutover"), "{err}");
    assert!(err.contains("nothing was recorded"), "{err}");
}

fn cli_release_and_skip_revert_and_revert_requests(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = fixtures::rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Pause);
    apply_operations::mark_failed(conn, ops[0], "boom").unwrap();
    let apply = apply_id.to_string();
    let release = json(db, &["release", &apply, "--by", "ops"]);
    assert_eq!(release["request"]["kind"], "release");
    fixtures::force_state(conn, ops[1], ApplyState::RevertWindow);
    let skip = json(
        db,
        &[
            "skip-revert",
            &apply,
            "--deployment",
            "deployment-1",
            "--by",
            "ops",
        ],
    );
    assert_eq!(skip["request"]["kind"], "skip_revert");
    // The migration revert's flags are `migrate --revert`'s now.
    let err = fails(db, &["revert", &apply, "--by", "ops", "--yes"], 2);
    assert!(err.contains("applyops migrate --revert --yes"), "{err}");
    // The later decision wins: the revert supersedes the pending skip-revert.
    let revert = json(db, &["revert", &apply, "--by", "ops"]);
    assert_eq!(revert["request"]["kind"], "revert");
    assert_eq!(revert["request"]["deployment"], "deployment-1");
    assert_eq!(revert["outcome"], "recorded");
    let pending: Vec<ControlRequestKind> = control_requests::list_pending(conn, apply_id)
        .unwrap()
        .into_iter()
        .map(|request| request.kind)
        .collect();
    assert_eq!(pending, [ControlRequestKind::Revert]);
}

fn cli_request_for_an_unknown_deployment_lists_the_apply_deployments(db: &TestDb) {
    create(db, "cli-unknown", "shop");
    let err = fails(
        db,
        &["stop", "cli-unknown", "--deployment", "mars", "--by", "ops"],
        1,
    );
    assert!(err.contains("no deployment \"mars\""), "{err}");
    assert!(err.contains("us-east, us-west, eu-central"), "{err}");
}

fn cli_leases_lists_live_leases_and_filters_by_owner(db: &TestDb) {
    assert_eq!(ok(db, &["leases"]), "no live leases\n");
    let conn = &mut db.conn();
    let (_, ops) = fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Halt);
    claims::claim_next(conn, &opts("east-worker-1"))
        .unwrap()
        .unwrap();
    claims::claim_next(conn, &opts("west-worker-1"))
        .unwrap()
        .unwrap();
    let expired = claims::claim_next(conn, &opts("east-worker-2"))
        .unwrap()
        .unwrap();
    fixtures::expire_lease(conn, expired.operation.id);
    let doc = json(db, &["leases"]);
    let owners: Vec<&str> = doc["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|lease| lease["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners.len(), 2, "the expired lease is not live: {owners:?}");
    assert!(owners.contains(&"east-worker-1") && owners.contains(&"west-worker-1"));
    let east = json(db, &["leases", "--owner", "east"]);
    let east = east["leases"].as_array().unwrap();
    assert_eq!(east.len(), 1);
    assert_eq!(east[0]["operation_id"], ops[0].get());
    assert!(east[0]["expires_in_seconds"].as_f64().unwrap() > 0.0);
    assert!(east[0].get("token").is_none() && !east[0].to_string().contains("lease_token"));
    let text = ok(db, &["leases"]);
    assert!(text.starts_with("OP "), "{text}");
    assert!(text.contains("west-worker-1"), "{text}");
}

fn cli_wait_returns_at_the_state_and_times_out_with_exit_4(db: &TestDb) {
    let id = create(db, "cli-wait", "shop");
    assert_eq!(
        ok(db, &["wait", "cli-wait", "--state", "pending"]),
        "pending\n"
    );
    let err = fails(
        db,
        &[
            "wait",
            "cli-wait",
            "--deployment",
            "us-east",
            "--state",
            "completed",
            "--timeout",
            "1",
        ],
        4,
    );
    assert!(err.contains("timed out after 1 s"), "{err}");
    apply_operations::mark_completed(&mut db.conn(), operation_ids(db, id)[0]).unwrap();
    let text = ok(
        db,
        &[
            "wait",
            "cli-wait",
            "--deployment",
            "us-east",
            "--state",
            "completed",
        ],
    );
    assert_eq!(text, "completed\n");
}

fn cli_watch_off_a_terminal_prints_changes_until_settled(db: &TestDb) {
    let id = create(db, "cli-watch", "shop");
    let ops = operation_ids(db, id);
    let url = db.url().to_owned();
    let finisher = std::thread::spawn(move || {
        let conn = &mut applyops::db::establish(&url).unwrap();
        for op in ops {
            std::thread::sleep(std::time::Duration::from_millis(300));
            apply_operations::mark_completed(conn, op).unwrap();
        }
    });
    let text = ok(
        db,
        &[
            "watch",
            "cli-watch",
            "--interval-ms",
            "100",
            "--timeout",
            "60",
        ],
    );
    finisher.join().unwrap();
    assert!(text.contains("apply "), "{text}");
    assert!(
        text.contains("us-east: completed"),
        "each change is a line: {text}"
    );
    assert!(text.contains("3/3 completed"), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("eu-central"),
        "ends with the final status table: {text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes off a terminal: {text:?}"
    );
}

fn cli_watch_json_prints_status_documents_and_times_out_with_exit_4(db: &TestDb) {
    create(db, "cli-watch-json", "shop");
    let output = run(
        db,
        &[
            "watch",
            "cli-watch-json",
            "--json",
            "--timeout",
            "1",
            "--interval-ms",
            "100",
        ],
    );
    assert_eq!(output.status.code(), Some(4));
    let text = stdout(&output);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["apply"]["identifier"], "cli-watch-json");
    assert_eq!(text.lines().count(), 1, "unchanged: printed once: {text}");
    assert!(stderr(&output).contains("timed out after 1 s"));
}

/// Off a terminal (a pipe, a file) a table never wraps: every row is one line, however long its
/// cells, so that `applyops applies | grep NAME` finds the whole row. No colour either.
fn cli_tables_off_a_terminal_never_wrap_and_have_no_colour(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = fixtures::rollout(conn, 3, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let long_name = "add-note-to-orders-and-customers-in-every-region-of-the-fleet";
    diesel::update(applyops::schema::applies::table.find(apply_id))
        .set(applyops::schema::applies::apply_identifier.eq(long_name))
        .execute(conn)
        .unwrap();
    let worker = "a-very-long-worker-name-".repeat(4);
    claims::claim_next(conn, &opts(&worker)).unwrap().unwrap();
    let error = "a long error message ".repeat(10);
    apply_operations::mark_failed(conn, ops[2], &error).unwrap();
    let status = ok(db, &["status", &apply_id.to_string()]);
    let applies = ok(db, &["applies"]);
    let leases = ok(db, &["leases"]);
    for (what, text) in [
        ("status", &status),
        ("applies", &applies),
        ("leases", &leases),
    ] {
        assert!(!text.contains('\u{1b}'), "{what}: no colour off a terminal");
        assert!(
            text.lines().any(|line| line.chars().count() > 80),
            "{what}: nothing was fitted to 80 columns: {text}"
        );
    }
    let row = |text: &str, first: &str| {
        text.lines()
            .find(|line| line.starts_with(first))
            .unwrap_or_else(|| panic!("a row starting {first:?}: {text}"))
            .to_owned()
    };
    assert!(
        row(&applies, &apply_id.to_string()).contains(long_name),
        "{applies}"
    );
    assert_eq!(
        applies.lines().count(),
        2,
        "a header and one row: {applies}"
    );
    assert!(
        row(&status, &apply_id.to_string()).contains(long_name),
        "{status}"
    );
    assert!(
        row(&status, "deployment-0").contains(worker.as_str()),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|line| line.starts_with("deployment-2") && line.contains(error.trim_end())),
        "{status}"
    );
    assert!(
        row(&leases, &ops[0].to_string()).contains(worker.as_str()),
        "{leases}"
    );
    assert_eq!(leases.lines().count(), 2, "{leases}");
}

/// On a narrow terminal (a pseudo-terminal of 50 columns) a table wraps between words only: no
/// name is cut in two (a table whose words cannot fit is wider than the terminal, which folds it).
fn cli_tables_on_a_narrow_terminal_never_split_a_word(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = fixtures::rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let long_name = "add-note-to-orders-and-customers";
    diesel::update(applyops::schema::applies::table.find(apply_id))
        .set(applyops::schema::applies::apply_identifier.eq(long_name))
        .execute(conn)
        .unwrap();
    for args in [
        vec!["applies".to_owned()],
        vec!["status".to_owned(), apply_id.to_string()],
    ] {
        let command = format!(
            "stty cols 50; {} --database-url '{}' {}",
            env!("CARGO_BIN_EXE_applyops"),
            db.url(),
            args.join(" ")
        );
        let output = std::process::Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        for word in [long_name, "deployment-1", "waits", "(pending)"] {
            if args[0] == "applies" && word != long_name {
                continue;
            }
            assert!(
                text.split_whitespace().any(|w| w == word),
                "{args:?}: {word} whole on a 50-column terminal:\n{text}"
            );
        }
    }
}

/// `watch` on a pseudo-terminal (util-linux `script`, from Debian's essential `bsdutils`): progress
/// bars drawn in place and coloured states, no colour under `NO_COLOR`.
fn cli_watch_on_a_terminal_draws_bars_and_colour_unless_no_color(db: &TestDb) {
    let id = create(db, "cli-tty", "shop");
    for op in operation_ids(db, id) {
        apply_operations::mark_completed(&mut db.conn(), op).unwrap();
    }
    let on_tty = |no_color: bool| {
        let command = format!(
            "{} --database-url '{}' watch cli-tty --timeout 20",
            env!("CARGO_BIN_EXE_applyops"),
            db.url()
        );
        let mut script = std::process::Command::new("script");
        script
            .args(["-qfec", &command, "/dev/null"])
            .env_remove("DATABASE_URL")
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null());
        if no_color {
            script.env("NO_COLOR", "1");
        }
        let output = script.output().expect("run script");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("3/3 completed"), "{coloured}");
    assert!(
        coloured.contains("] completed"),
        "a bar per deployment: {coloured}"
    );
    assert!(
        coloured.contains("\u{1b}[32m"),
        "green, on a terminal: {coloured:?}"
    );
    let plain = on_tty(true);
    assert!(plain.contains("] completed"), "{plain}");
    assert!(!plain.contains("\u{1b}[32m"), "NO_COLOR: {plain:?}");
}

/// A server that refuses connections fails a read command with exit 1 and the connection's own
/// error at once, not the pool's "timed out waiting for connection" after its wait.
#[test]
fn cli_an_unreachable_server_fails_at_once_with_exit_1() {
    let output = Command::cargo_bin("applyops")
        .unwrap()
        .env_remove("DATABASE_URL")
        .args([
            "--database-url",
            "mysql://root@127.0.0.1:1/nowhere",
            "applies",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.starts_with("applyops: could not connect to the database"),
        "{err}"
    );
    assert!(!err.contains("timed out"), "{err}");
}
