//! Stored text on the operator's terminal (issue 19, item 11): names, reasons, errors and lease
//! owners holding terminal control sequences, written straight into the rows (as an older version,
//! another tool or a hostile rollout file could have), are shown escaped by every view, request
//! command and error message; `--json` escapes them too and still reads back as stored.

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::schema::{applies as a, apply_control_requests as r, apply_operations as o};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::{applies, apply_operations, claims, control_requests};
use diesel::prelude::*;
use serde_json::Value;

use crate::backend_tests;
use crate::fixtures::{self, opts};
use crate::harness::TestDb;
use crate::operator_cli::{fails, ok, run, stderr, stdout};

/// Sets the window title, then clears the screen.
const IDENTIFIER: &str = "evil-\u{1b}]0;pwned\u{7}-\u{1b}[2J";
/// A C1 control (CSI, 8-bit) in UTF-8.
const DATABASE: &str = "db\u{9b}31m";
/// DEL and a bidi override.
const ENVIRONMENT: &str = "env\u{7f}\u{202e}rev";
/// A fake row: a line break, then what looks like an apply that completed.
const REQUESTED_BY: &str = "mallory\r\n99  fake-apply  completed";
const ERROR: &str = "boom\u{1b}[1;31m red";
const DEPLOYMENT: &str = "dep\u{1b}[2K\u{2028}x";
const OWNER: &str = "host\u{1b}]0;owned\u{7}";
/// ESC c: a full terminal reset.
const REASON: &str = "why\u{1b}c";
/// Ordinary Unicode, kept as it is.
const UNICODE: &str = "ünïcødé-日本-🚀";

/// How each of the above is shown.
const SHOWN: [&str; 9] = [
    r"evil-\u{1b}]0;pwned\u{7}-\u{1b}[2J",
    r"db\u{9b}31m",
    r"env\u{7f}\u{202e}rev",
    r"mallory\r\n99  fake-apply  completed",
    r"boom\u{1b}[1;31m red",
    r"dep\u{1b}[2K\u{2028}x",
    r"host\u{1b}]0;owned\u{7}",
    r"why\u{1b}c",
    UNICODE,
];

/// Fails naming the first character a terminal would act on (line breaks apart).
fn assert_printable(what: &str, text: &str) {
    if let Some(c) = text.chars().find(|c| {
        (c.is_control() && *c != '\n')
            || matches!(c, '\u{202e}' | '\u{2028}' | '\u{200b}' | '\u{feff}')
    }) {
        panic!("{what}: raw {c:?} in {text:?}");
    }
}

/// An apply whose every stored name is hostile: the apply, a deployment held under a hostile lease
/// owner and failed with a hostile error, a deployment with an ordinary Unicode name, and a pending
/// request with a hostile requester and reason. Returns (apply, [hostile op, unicode op, plain op]).
fn hostile_rollout(db: &TestDb) -> (ApplyId, Vec<ApplyOperationId>) {
    let conn = &mut db.conn();
    let (apply_id, ops) =
        fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let claimed = claims::claim_next(conn, &opts("plain-worker"))
        .unwrap()
        .unwrap();
    assert_eq!(claimed.operation.id, ops[0]);
    // Pending: its holder has not stopped yet.
    fixtures::ask(conn, apply_id, Some(ops[0]), ControlRequestKind::Stop, None).unwrap();
    apply_operations::mark_failed(conn, ops[1], "plain").unwrap();
    // Straight into the rows, past every check the store makes.
    diesel::update(a::table.find(apply_id))
        .set((
            a::apply_identifier.eq(IDENTIFIER),
            a::database_name.eq(DATABASE),
            a::environment.eq(ENVIRONMENT),
            a::requested_by.eq(REQUESTED_BY),
            a::error_message.eq(Some(ERROR)),
        ))
        .execute(conn)
        .unwrap();
    diesel::update(o::table.find(ops[0]))
        .set((o::deployment.eq(DEPLOYMENT), o::lease_owner.eq(OWNER)))
        .execute(conn)
        .unwrap();
    diesel::update(o::table.find(ops[1]))
        .set((o::deployment.eq(UNICODE), o::error_message.eq(Some(ERROR))))
        .execute(conn)
        .unwrap();
    diesel::update(r::table.filter(r::apply_id.eq(apply_id)))
        .set((r::requested_by.eq(REQUESTED_BY), r::reason.eq(Some(REASON))))
        .execute(conn)
        .unwrap();
    (apply_id, ops)
}

backend_tests!(
    cli_status_shows_every_stored_name_escaped,
    cli_applies_and_leases_show_stored_names_escaped,
    cli_watch_shows_stored_names_escaped_off_and_on_a_terminal,
    cli_request_commands_show_stored_names_escaped,
    cli_error_messages_show_stored_and_typed_names_escaped,
    cli_json_escapes_what_is_not_printable_and_reads_back_as_stored,
);

fn cli_status_shows_every_stored_name_escaped(db: &TestDb) {
    let (apply_id, _) = hostile_rollout(db);
    let text = ok(db, &["status", &apply_id.to_string()]);
    assert_printable("status", &text);
    for shown in SHOWN {
        assert!(text.contains(shown), "{shown} in:\n{text}");
    }
    assert!(
        !text.lines().any(|line| line.starts_with("99  fake-apply")),
        "no fake row: {text}"
    );
}

fn cli_applies_and_leases_show_stored_names_escaped(db: &TestDb) {
    hostile_rollout(db);
    let text = ok(db, &["applies"]);
    assert_printable("applies", &text);
    for shown in &SHOWN[..3] {
        assert!(text.contains(shown), "{shown} in:\n{text}");
    }
    let text = ok(db, &["leases"]);
    assert_printable("leases", &text);
    for shown in [SHOWN[5], SHOWN[6]] {
        assert!(text.contains(shown), "{shown} in:\n{text}");
    }
}

fn cli_watch_shows_stored_names_escaped_off_and_on_a_terminal(db: &TestDb) {
    let (apply_id, ops) = hostile_rollout(db);
    let conn = &mut db.conn();
    // Settled, so that watch prints once and ends: one completed, two failed, nothing held, no
    // pending request.
    for request in control_requests::list_pending(conn, apply_id).unwrap() {
        control_requests::complete(conn, request.id).unwrap();
    }
    diesel::update(o::table.find(ops[0]))
        .set((
            o::lease_token.eq(""),
            o::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .unwrap();
    fixtures::force_state(conn, ops[0], ApplyState::Completed);
    fixtures::force_state(conn, ops[2], ApplyState::Failed);
    applies::refresh(conn, apply_id).unwrap();
    let id = apply_id.to_string();
    let output = run(db, &["watch", &id, "--timeout", "20"]);
    assert_eq!(output.status.code(), Some(3), "it ended failed");
    let text = stdout(&output);
    assert_printable("watch", &text);
    for shown in [SHOWN[0], SHOWN[4], SHOWN[5], UNICODE] {
        assert!(text.contains(shown), "{shown} in:\n{text}");
    }
    let err = stderr(&output);
    assert_printable("watch's message", &err);
    assert!(err.contains(SHOWN[0]), "{err}");
    // On a terminal: indicatif redraws with escape codes of its own, but never a stored one.
    let command = format!(
        "{} --database-url '{}' watch {id} --timeout 20",
        env!("CARGO_BIN_EXE_applyops"),
        db.url()
    );
    let tty = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&tty.stdout);
    // (indicatif's own redraw uses ESC [2K, so the stored one is recognised by its escaped form.)
    for raw in [
        "\u{1b}]0;",
        "\u{1b}[2J",
        "\u{1b}[1;31m",
        "\u{9b}",
        "\u{7f}",
        "\u{202e}",
    ] {
        assert!(!text.contains(raw), "raw {raw:?} on the terminal: {text:?}");
    }
    assert!(text.contains(SHOWN[0]), "{text:?}");
    assert!(text.contains(r"dep\u{1b}[2K"), "{text:?}");
}

fn cli_request_commands_show_stored_names_escaped(db: &TestDb) {
    let (apply_id, _) = hostile_rollout(db);
    let text = ok(
        db,
        &[
            "cancel",
            &apply_id.to_string(),
            "--deployment",
            "deployment-2",
            "--by",
            "ops",
        ],
    );
    assert_printable("cancel", &text);
    for shown in [SHOWN[0], SHOWN[5], UNICODE] {
        assert!(text.contains(shown), "{shown} in:\n{text}");
    }
}

fn cli_error_messages_show_stored_and_typed_names_escaped(db: &TestDb) {
    let (apply_id, _) = hostile_rollout(db);
    // Stored: the deployments an unknown one is answered with.
    let err = fails(
        db,
        &[
            "stop",
            &apply_id.to_string(),
            "--deployment",
            "mars",
            "--by",
            "ops",
        ],
        1,
    );
    assert_printable("unknown deployment", &err);
    for shown in [SHOWN[0], SHOWN[5], UNICODE] {
        assert!(err.contains(shown), "{shown} in: {err}");
    }
    // Typed: an apply that does not exist, a value clap refuses.
    let err = fails(db, &["status", "\u{1b}[2Jnope"], 1);
    assert_printable("unknown apply", &err);
    assert!(err.contains(r"\u{1b}[2Jnope"), "{err}");
    let err = fails(db, &["applies", "--state", "\u{1b}]0;x\u{7}"], 2);
    assert_printable("clap's error", &err);
    assert!(err.contains(r"\u{1b}]0;x\u{7}"), "{err}");
}

/// Every JSON document: no raw character a terminal acts on, and the stored values read back.
fn cli_json_escapes_what_is_not_printable_and_reads_back_as_stored(db: &TestDb) {
    let (apply_id, ops) = hostile_rollout(db);
    let id = apply_id.to_string();
    let mut documents = Vec::new();
    // Each with the escapes its document must hold: ESC everywhere (the identifier or a
    // deployment), C1 and DEL where the database and environment are.
    for (args, escapes) in [
        (
            vec!["status", &id],
            &["\\u001b", "\\u009b", "\\u007f", "\\u202e"][..],
        ),
        (vec!["applies"], &["\\u001b", "\\u009b", "\\u007f"][..]),
        (vec!["leases"], &["\\u001b", "\\u2028"][..]),
        (
            vec!["stop", &id, "--by", "ops"],
            &["\\u001b", "\\u2028"][..],
        ),
    ] {
        let mut with_json = args.clone();
        with_json.push("--json");
        let text = ok(db, &with_json);
        assert_printable(&format!("{args:?} --json"), &text);
        for escape in escapes {
            assert!(text.contains(escape), "{args:?}: {escape} in {text}");
        }
        documents.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let list = ok(db, &["list", &id]);
    assert_printable("list", &list);
    let first: Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(first["deployment"], DEPLOYMENT);
    assert_eq!(first["lease_owner"], OWNER);
    let status = &documents[0];
    assert_eq!(status["apply"]["identifier"], IDENTIFIER);
    assert_eq!(status["apply"]["database"], DATABASE);
    assert_eq!(status["apply"]["environment"], ENVIRONMENT);
    assert_eq!(status["apply"]["requested_by"], REQUESTED_BY);
    assert_eq!(status["operations"][0]["deployment"], DEPLOYMENT);
    assert_eq!(status["operations"][0]["holder"]["owner"], OWNER);
    assert_eq!(status["operations"][1]["deployment"], UNICODE);
    assert_eq!(status["operations"][1]["error"], ERROR);
    assert_eq!(status["pending_requests"][0]["reason"], REASON);
    assert_eq!(documents[1]["applies"][0]["identifier"], IDENTIFIER);
    assert_eq!(documents[2]["leases"][0]["owner"], OWNER);
    assert_eq!(documents[3]["operations"][0]["deployment"], DEPLOYMENT);
    assert_eq!(ops.len(), 3);
}
