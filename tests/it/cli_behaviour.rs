//! The operator's commands, issue 19: rollout files that misspell a field, APPLY arguments that could
//! name two applies, timeouts, views that read only what they print, exit codes (0 done as asked,
//! 1 error, 2 usage, 3 the apply ended otherwise, 4 timed out), request outcomes as stored, large
//! applies summarised, and the smaller items. Run as a process on SQLite and MySQL.

use std::time::{Duration, Instant};

use applyops::models::ControlRequestId;
use applyops::state::{ApplyState, ControlRequestStatus, CutoverPolicy, FailurePolicy};
use applyops::store::{applies, apply_operations, claims, control_requests};
use assert_cmd::Command;
use diesel::connection::SimpleConnection;

use crate::backend_tests;
use crate::fixtures::{self, opts};
use crate::harness::TestDb;
use crate::operator_cli::{
    create, fails, json, ok, operation_ids, rollout_file, run, stderr, stdout, toml_rollout,
};

backend_tests!(
    cli_create_refuses_a_misspelt_field_naming_it_its_line_and_the_closest_field,
    cli_create_refuses_a_file_that_is_neither_toml_nor_json,
    cli_an_apply_argument_that_is_an_id_and_an_identifier_is_refused_as_ambiguous,
    cli_list_takes_an_identifier_like_every_command,
    cli_a_timeout_past_what_the_clock_holds_does_not_panic,
    cli_wait_and_watch_never_sleep_past_their_timeout,
    cli_views_and_requests_never_read_tasks,
    cli_wait_ends_at_once_with_exit_3_when_the_state_can_no_longer_be_reached,
    cli_watch_exits_3_when_an_apply_ends_otherwise_than_completed,
    cli_a_request_prints_the_stored_status_of_its_request,
    cli_requests_on_a_large_apply_summarise_the_deployments,
    cli_messages_name_the_skip_revert_command,
    cli_usage_errors_exit_2_and_change_nothing,
);

/// `create --file NAME` of `text`: exit 1, nothing created; returns stderr.
fn refused(db: &TestDb, name: &str, text: &str) -> String {
    let file = rollout_file(name, text);
    let err = fails(db, &["create", "--file", file.path.to_str().unwrap()], 1);
    assert!(err.contains("nothing was created"), "{err}");
    let page = applies::list(&mut db.conn(), &Default::default()).unwrap();
    assert!(page.items.is_empty(), "nothing written: {:?}", page.items);
    err
}

const HEAD: &str =
    "apply_identifier = \"x\"\ndatabase_name = \"d\"\nenvironment = \"e\"\nrequested_by = \"r\"\n";

fn cli_create_refuses_a_misspelt_field_naming_it_its_line_and_the_closest_field(db: &TestDb) {
    let operation = "[[operations]]\ndeployment = \"a\"\n";
    for (name, text, expected) in [
        (
            "r.toml",
            format!("{HEAD}max_concurency = 1\n{operation}"),
            "unknown field `max_concurency` at line 5; did you mean `max_concurrency`?",
        ),
        (
            "r.toml",
            format!("{HEAD}defer_cutovers = true\n{operation}"),
            "unknown field `defer_cutovers` at line 5; did you mean `defer_cutover`?",
        ),
        (
            "r.toml",
            format!("{HEAD}{operation}cutover_polcy = \"barrier\"\n"),
            "unknown field `cutover_polcy` at line 7; did you mean `cutover_policy`?",
        ),
        (
            "r.toml",
            format!("{HEAD}{operation}tasks = [{{ table_name = \"t\", dll = \"x\" }}]\n"),
            "unknown field `dll` at line 7; did you mean `ddl`?",
        ),
        (
            "r.json",
            "{\n  \"apply_identifier\": \"x\", \"database_name\": \"d\",\n  \"defer_cutovers\": true,\n  \
             \"environment\": \"e\", \"requested_by\": \"r\", \"operations\": [{\"deployment\": \"a\"}]\n}"
                .to_owned(),
            "unknown field `defer_cutovers` at line 3; did you mean `defer_cutover`?",
        ),
        (
            "r.json",
            "{\"apply_identifier\": \"x\", \"database_name\": \"d\", \"environment\": \"e\",\n\
             \"requested_by\": \"r\",\n\"operations\": [{\"deployment\": \"a\", \"max_concurency\": 1}]}"
                .to_owned(),
            "unknown field `max_concurency` at line 3; the fields here are `deployment`, `target`",
        ),
    ] {
        let err = refused(db, name, &text);
        assert!(err.contains(expected), "{name}:\n{text}\n{err}");
    }
}

fn cli_create_refuses_a_file_that_is_neither_toml_nor_json(db: &TestDb) {
    let rollout = toml_rollout("cli-ext", "shop");
    for name in ["rollout.yaml", "rollout", "rollout.toml.bak"] {
        let err = refused(db, name, &rollout);
        assert!(err.contains("use .toml or .json"), "{name}: {err}");
    }
    // Told by the extension before the file is read: no "cannot read" for a file that is not there.
    let err = fails(db, &["create", "--file", "/nonexistent/rollout.yml"], 1);
    assert!(err.contains("use .toml or .json"), "{err}");
    // Any letter case.
    let file = rollout_file("ROLLOUT.TOML", &rollout);
    ok(db, &["create", "--file", file.path.to_str().unwrap()]);
}

fn cli_an_apply_argument_that_is_an_id_and_an_identifier_is_refused_as_ambiguous(db: &TestDb) {
    let first = create(db, "first", "shop");
    let named = create(db, &first.to_string(), "billing");
    assert_ne!(first, named);
    let plain = first.to_string();
    for args in [
        vec!["cancel", plain.as_str(), "--by", "ops"],
        vec!["status", plain.as_str()],
        vec!["list", plain.as_str()],
        vec!["wait", plain.as_str(), "--state", "completed"],
    ] {
        let err = fails(db, &args, 2);
        assert!(err.contains("ambiguous"), "{args:?}: {err}");
        assert!(err.contains(&format!("id:{first}")), "{args:?}: {err}");
        assert!(err.contains(&format!("name:{first}")), "{args:?}: {err}");
    }
    for apply in [first, named] {
        let conn = &mut db.conn();
        assert!(control_requests::list_pending(conn, apply)
            .unwrap()
            .is_empty());
        for op in apply_operations::list_by_apply(conn, apply).unwrap() {
            assert_eq!(op.state, ApplyState::Pending, "nothing was cancelled");
        }
    }
    let by_id = json(db, &["status", &format!("id:{first}")]);
    assert_eq!(by_id["apply"]["identifier"], "first");
    let by_name = json(db, &["status", &format!("name:{first}")]);
    assert_eq!(by_name["apply"]["id"], named.get());
    ok(db, &["cancel", &format!("name:{first}"), "--by", "ops"]);
    let states = |apply| -> Vec<ApplyState> {
        apply_operations::list_by_apply(&mut db.conn(), apply)
            .unwrap()
            .into_iter()
            .map(|op| op.state)
            .collect()
    };
    assert_eq!(states(named), [ApplyState::Cancelled; 3]);
    assert_eq!(states(first), [ApplyState::Pending; 3]);
    // Plain text names an identifier as before; `id:` with no number is text too.
    assert_eq!(json(db, &["status", "first"])["apply"]["id"], first.get());
    let err = fails(db, &["status", "id:first"], 1);
    assert!(err.contains("\"id:first\""), "{err}");
}

fn cli_list_takes_an_identifier_like_every_command(db: &TestDb) {
    let id = create(db, "cli-list", "shop");
    let by_id = ok(db, &["list", &id.to_string()]);
    assert_eq!(by_id.lines().count(), 3, "{by_id}");
    for apply in ["cli-list", "name:cli-list", &format!("id:{id}")] {
        assert_eq!(ok(db, &["list", apply]), by_id, "{apply}");
    }
    let err = fails(db, &["list", "nope"], 1);
    assert!(
        err.contains("no apply has the id or identifier \"nope\""),
        "{err}"
    );
}

fn cli_a_timeout_past_what_the_clock_holds_does_not_panic(db: &TestDb) {
    let id = create(db, "cli-huge", "shop");
    let ops = operation_ids(db, id);
    apply_operations::mark_failed(&mut db.conn(), ops[0], "boom").unwrap();
    for timeout in ["9223372036854775807", "18446744073709551615"] {
        let output = run(
            db,
            &[
                "wait",
                "cli-huge",
                "--deployment",
                "us-east",
                "--state",
                "completed",
                "--timeout",
                timeout,
            ],
        );
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    }
    for op in &ops[1..] {
        apply_operations::mark_completed(&mut db.conn(), *op).unwrap();
    }
    for timeout in ["9223372036854775807", "18446744073709551615"] {
        let output = run(db, &["watch", "cli-huge", "--timeout", timeout]);
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    }
}

fn cli_wait_and_watch_never_sleep_past_their_timeout(db: &TestDb) {
    create(db, "cli-sleep", "shop");
    let started = Instant::now();
    let err = fails(
        db,
        &[
            "wait",
            "cli-sleep",
            "--state",
            "completed",
            "--timeout",
            "2",
            "--interval-ms",
            "8000",
        ],
        4,
    );
    let waited = started.elapsed();
    assert!(err.contains("timed out after 2 s"), "{err}");
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(
        waited < Duration::from_secs(6),
        "slept past the timeout: {waited:?}"
    );
    let started = Instant::now();
    let output = run(
        db,
        &[
            "watch",
            "cli-sleep",
            "--json",
            "--timeout",
            "1",
            "--interval-ms",
            "8000",
        ],
    );
    assert_eq!(output.status.code(), Some(4));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// With the tasks table gone, every view and request still works: none reads a task (an apply of
/// 1,000 deployments of 1,000 tasks each took `status` 80 s and 680 MB, printing none of them).
fn cli_views_and_requests_never_read_tasks(db: &TestDb) {
    let id = create(db, "cli-tasks", "shop");
    let conn = &mut db.conn();
    assert_eq!(
        applyops::store::tasks::list_by_apply(conn, id)
            .unwrap()
            .len(),
        1,
        "the rollout has a task"
    );
    conn.batch_execute("ALTER TABLE tasks RENAME TO tasks_elsewhere")
        .unwrap();
    assert!(
        applies::rollout(conn, id).is_err(),
        "reading tasks now fails"
    );
    let apply = id.to_string();
    ok(db, &["status", &apply]);
    json(db, &["status", &apply]);
    ok(db, &["applies"]);
    fails(db, &["watch", &apply, "--timeout", "1"], 4);
    fails(db, &["watch", &apply, "--timeout", "1", "--json"], 4);
    fails(
        db,
        &["wait", &apply, "--state", "completed", "--timeout", "1"],
        4,
    );
    ok(
        db,
        &["stop", &apply, "--deployment", "us-west", "--by", "ops"],
    );
    json(db, &["start", &apply, "--by", "ops"]);
}

fn cli_wait_ends_at_once_with_exit_3_when_the_state_can_no_longer_be_reached(db: &TestDb) {
    let id = create(db, "cli-settled", "shop");
    let ops = operation_ids(db, id);
    apply_operations::mark_failed(&mut db.conn(), ops[0], "boom").unwrap();
    let started = Instant::now();
    let output = run(
        db,
        &[
            "wait",
            "cli-settled",
            "--deployment",
            "us-east",
            "--state",
            "completed",
            "--timeout",
            "60",
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(10), "at once");
    assert_eq!(stdout(&output), "failed\n", "the state it ended in");
    assert!(
        stderr(&output).contains("deployment us-east of apply")
            && stderr(&output).contains("settled as failed"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        ok(
            db,
            &[
                "wait",
                "cli-settled",
                "--deployment",
                "us-east",
                "--state",
                "failed"
            ]
        ),
        "failed\n"
    );
    // The apply: every deployment settled, one failed.
    apply_operations::mark_completed(&mut db.conn(), ops[1]).unwrap();
    apply_operations::mark_terminal(&mut db.conn(), ops[2], ApplyState::Cancelled).unwrap();
    let started = Instant::now();
    let err = fails(
        db,
        &[
            "wait",
            "cli-settled",
            "--state",
            "completed",
            "--timeout",
            "60",
        ],
        3,
    );
    assert!(started.elapsed() < Duration::from_secs(10), "at once");
    assert!(err.contains("settled as failed"), "{err}");
    // A state that is not settled is waited for until the timeout.
    let fresh = create(db, "cli-moving", "billing");
    let err = fails(
        db,
        &[
            "wait",
            &fresh.to_string(),
            "--state",
            "completed",
            "--timeout",
            "1",
        ],
        4,
    );
    assert!(err.contains("timed out after 1 s"), "{err}");
}

fn cli_watch_exits_3_when_an_apply_ends_otherwise_than_completed(db: &TestDb) {
    let done = create(db, "cli-done", "shop");
    let failed = create(db, "cli-failed", "billing");
    let cancelled = create(db, "cli-cancelled", "search");
    let conn = &mut db.conn();
    for op in operation_ids(db, done) {
        apply_operations::mark_completed(conn, op).unwrap();
    }
    for (index, op) in operation_ids(db, failed).into_iter().enumerate() {
        if index == 1 {
            apply_operations::mark_failed(conn, op, "boom").unwrap();
        } else {
            apply_operations::mark_completed(conn, op).unwrap();
        }
    }
    for op in operation_ids(db, cancelled) {
        apply_operations::mark_terminal(conn, op, ApplyState::Cancelled).unwrap();
    }
    let text = ok(db, &["watch", "cli-done", "--timeout", "20"]);
    assert!(text.contains("3/3 completed"), "{text}");
    let output = run(
        db,
        &[
            "watch",
            "cli-done",
            "cli-failed",
            "cli-cancelled",
            "--timeout",
            "20",
        ],
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("apply {failed} (cli-failed) ended failed")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "apply {cancelled} (cli-cancelled) ended cancelled"
        )),
        "{err}"
    );
    assert!(!err.contains("cli-done"), "{err}");
    let text = stdout(&output);
    assert!(
        text.contains("2/3 completed") && text.contains("boom"),
        "the final tables: {text}"
    );
    let output = run(db, &["watch", "cli-failed", "--json", "--timeout", "20"]);
    assert_eq!(output.status.code(), Some(3));
}

/// The request's id on the first line of a request command's text.
fn request_id(text: &str) -> ControlRequestId {
    let id = text
        .strip_prefix("request ")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("{text}"));
    ControlRequestId(id.parse().unwrap())
}

/// What the text form says became of the request: its second line.
fn said(text: &str) -> &str {
    text.lines().nth(1).unwrap()
}

fn cli_a_request_prints_the_stored_status_of_its_request(db: &TestDb) {
    let conn = &mut db.conn();
    let stored = |id| {
        control_requests::get(&mut db.conn(), id)
            .unwrap()
            .unwrap()
            .status
    };
    // Carried out at once: a stop of a deployment nobody drives.
    let (plain, _) = fixtures::rollout(conn, 2, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let plain = plain.to_string();
    let text = ok(
        db,
        &[
            "stop",
            &plain,
            "--deployment",
            "deployment-0",
            "--by",
            "ops",
        ],
    );
    let status = stored(request_id(&text));
    assert!(
        said(&text).contains(status.as_str()),
        "stored {status}: {text}"
    );
    // Recorded, then the same request again.
    let (deferring, ops) = fixtures::rollout(conn, 2, CutoverPolicy::Barrier, FailurePolicy::Halt);
    applies::set_defer_cutover(conn, deferring, true).unwrap();
    for op in &ops {
        fixtures::force_state(conn, *op, ApplyState::WaitingForCutover);
    }
    let deferring = deferring.to_string();
    let cutover = [
        "cutover",
        &deferring,
        "--deployment",
        "deployment-0",
        "--by",
        "ops",
    ];
    let text = ok(db, &cutover);
    let first = request_id(&text);
    let status = stored(first);
    assert!(
        said(&text).contains(status.as_str()),
        "stored {status}: {text}"
    );
    assert!(!said(&text).contains("already"), "{text}");
    let again = ok(db, &cutover);
    assert_eq!(request_id(&again), first);
    assert!(said(&again).starts_with("already pending"), "{again}");
    // A second cutover of a deployment that is already cutting over: whatever the store keeps,
    // that is what is printed, in text and in JSON.
    claims::claim_next_cutover(conn, &opts("w"))
        .unwrap()
        .unwrap();
    let text = ok(db, &cutover);
    let second = request_id(&text);
    let status = stored(second);
    assert!(
        said(&text).contains(status.as_str()),
        "stored {status}: {text}"
    );
    assert_eq!(
        said(&text).starts_with("already"),
        second == first && status == ControlRequestStatus::Pending,
        "{text}"
    );
    let doc = json(db, &cutover);
    let id = ControlRequestId(doc["request"]["id"].as_i64().unwrap());
    let status = stored(id);
    assert_eq!(doc["request"]["status"], status.as_str());
    let outcome = doc["outcome"].as_str().unwrap();
    match status {
        ControlRequestStatus::Pending => {
            assert!(["recorded", "already_pending"].contains(&outcome), "{doc}")
        }
        other => assert_eq!(outcome, other.as_str(), "{doc}"),
    }
}

fn cli_requests_on_a_large_apply_summarise_the_deployments(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) =
        fixtures::rollout(conn, 40, CutoverPolicy::Parallel, FailurePolicy::Continue);
    apply_operations::mark_completed(conn, ops[1]).unwrap();
    apply_operations::mark_failed(conn, ops[2], "boom").unwrap();
    let apply = apply_id.to_string();
    let text = ok(db, &["stop", &apply, "--by", "ops"]);
    let line = text.lines().nth(2).unwrap();
    assert!(line.len() < 300, "one short line: {line}");
    let counted: Vec<(usize, ApplyState)> = line
        .split_once("40 deployments: ")
        .unwrap_or_else(|| panic!("{line}"))
        .1
        .split(';')
        .next()
        .unwrap()
        .split(", ")
        .map(|count| {
            let (n, state) = count.split_once(' ').unwrap();
            (n.parse().unwrap(), ApplyState::from_stored(state).unwrap())
        })
        .collect();
    let stored = apply_operations::list_by_apply(conn, apply_id).unwrap();
    for (n, state) in &counted {
        assert_eq!(
            *n,
            stored.iter().filter(|op| op.state == *state).count(),
            "{line}"
        );
    }
    assert_eq!(counted.iter().map(|(n, _)| n).sum::<usize>(), 40, "{line}");
    assert!(line.contains("the first 5: deployment-0 "), "{line}");
    assert!(
        !line.contains("deployment-5 ") && !line.contains("deployment-39"),
        "{line}"
    );
    let doc = json(db, &["start", &apply, "--by", "ops"]);
    assert_eq!(
        doc["operations"].as_array().unwrap().len(),
        40,
        "JSON lists every one"
    );
}

fn cli_messages_name_the_skip_revert_command(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = fixtures::rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let apply = apply_id.to_string();
    let err = fails(db, &["skip-revert", &apply, "--by", "ops"], 1);
    assert!(err.contains("cannot record skip-revert"), "{err}");
    assert!(!err.contains("skip_revert"), "{err}");
    fixtures::force_state(conn, ops[0], ApplyState::RevertWindow);
    let text = ok(db, &["skip-revert", &apply, "--by", "ops"]);
    assert!(text.contains(": skip-revert for apply"), "{text}");
    assert!(!text.contains("skip_revert"), "{text}");
}

fn cli_usage_errors_exit_2_and_change_nothing(db: &TestDb) {
    let id = create(db, "cli-usage", "shop");
    let apply = id.to_string();
    for args in [
        vec!["applies", "--limit", "0"],
        vec!["applies", "--limit", "1001"],
        vec!["applies", "--limit", "ten"],
        vec!["applies", "--after", "garbage"],
        vec!["revert", &apply, "--by", "ops", "--yes"],
        vec!["revert", &apply, "--by", "ops", "--force"],
        vec!["revert", "--by", "ops"],
        vec!["revert"],
        vec!["status"],
        vec!["stop"],
        vec!["stop", &apply, "--by"],
        vec!["wait", &apply],
        vec!["migrate", "--yes"],
        vec!["migrate", "--force"],
    ] {
        let err = fails(db, &args, 2);
        assert!(!err.is_empty(), "{args:?}");
    }
    let err = fails(db, &["applies", "--after", "garbage"], 2);
    assert!(err.contains("not a cursor"), "{err}");
    assert!(!err.contains("list returned"), "{err}");
    assert!(control_requests::list_pending(&mut db.conn(), id)
        .unwrap()
        .is_empty());
}

#[test]
fn cli_help_describes_the_command_and_its_exit_codes() {
    let output = Command::cargo_bin("applyops")
        .unwrap()
        .env_remove("DATABASE_URL")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.starts_with("Operate an applyops database"), "{help}");
    assert!(!help.contains("Storage layer"), "{help}");
    assert!(
        help.contains("0 done as asked; 1 error; 2 usage; 3 the apply"),
        "{help}"
    );
    assert!(help.contains("4 timed out"), "{help}");
    assert!(help.contains("id:N or name:IDENTIFIER"), "{help}");
}
