//! The command line's conventions, run as a process: shell completions and man pages generated
//! from the clap definitions, an example in every command's `--help`, the rollout format in
//! `create --help`, `create --dry-run` without a database, `--color` beside `NO_COLOR`,
//! `APPLYOPS_DATABASE_URL` before `DATABASE_URL`, `--by` from the environment, and `revert` that
//! only ever asks for an apply's revert (`migrate --revert` reverts a migration).

use std::path::Path;
use std::process::Output;

use applyops::models::NewRollout;
use applyops::store::{applies, control_requests};
use assert_cmd::Command;
use serde_json::Value;

use crate::backend_tests;
use crate::harness::{schema_snapshot, TestDb};
use crate::operator_cli::{create, rollout_file, toml_rollout};

/// The variables the binary reads, none inherited: each test sets those it is about.
const OURS: [&str; 7] = [
    "APPLYOPS_DATABASE_URL",
    "DATABASE_URL",
    "APPLYOPS_USER",
    "USER",
    "LOGNAME",
    "NO_COLOR",
    "CLICOLOR_FORCE",
];

/// `applyops` with none of [`OURS`] inherited.
fn applyops() -> Command {
    let mut command = Command::cargo_bin("applyops").expect("the applyops binary");
    for name in OURS {
        command.env_remove(name);
    }
    command
}

/// Runs `args` with `env` set; returns the output.
fn run_with(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = applyops();
    for (name, value) in env {
        command.env(name, value);
    }
    command.args(args).output().expect("run applyops")
}

/// `args` on `db`, with `env` set.
fn on(db: &TestDb, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut all = vec!["--database-url", db.url()];
    all.extend_from_slice(args);
    run_with(env, &all)
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Expects exit `code`.
fn exits(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: stdout {} stderr {}",
        stdout(output),
        stderr(output)
    );
}

/// The subcommands `applyops --help` lists (clap builds the list from its `Command`; the hidden
/// `man` is not in it), but clap's own `help`.
fn subcommands() -> Vec<String> {
    let help = stdout(&run_with(&[], &["--help"]));
    let mut listed = crate::cli_database_url::listed_subcommands(&help);
    listed.retain(|name| name != "help");
    assert!(listed.len() >= 16, "{listed:?}");
    assert!(listed.contains(&"completions".to_owned()), "{listed:?}");
    listed
}

// 1. Completions.

#[test]
fn cli_completions_for_bash_zsh_and_fish_name_every_subcommand() {
    let commands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let output = run_with(&[], &["completions", shell]);
        exits(&output, 0, shell);
        let script = stdout(&output);
        assert!(!script.trim().is_empty(), "{shell}: empty");
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell}: no {command}");
        }
        // Generated from the same definitions: flags too (fish spells them `-l dry-run`).
        assert!(script.contains("database-url"), "{shell}");
        assert!(script.contains("dry-run"), "{shell}");
    }
}

#[test]
fn cli_bash_completion_script_passes_bash_n() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("applyops.bash");
    let output = run_with(&[], &["completions", "bash"]);
    exits(&output, 0, "bash");
    std::fs::write(&path, &output.stdout).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .expect("run bash -n");
    assert!(checked.status.success(), "{checked:?}");
    let err = run_with(&[], &["completions", "tcsh"]);
    exits(&err, 2, "an unknown shell");
}

/// A completion script piped into a reader that stops after its first line (`| head -1`): the
/// command ends quietly (exit 0), never with a panic on the closed pipe. The zsh and fish scripts
/// are larger than a pipe's buffer, so the write meets the closed end.
#[test]
fn cli_completions_into_a_closed_pipe_end_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_applyops"))
            .args(["completions", shell])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run applyops");
        // Close our end of stdout at once: every write the command makes meets a closed pipe.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shell}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stderr.is_empty(),
            "{shell}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

// 2. Man pages.

#[test]
fn cli_man_pages_start_with_th_and_name_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man");
    let output = run_with(&[], &["man", "--out-dir", out_dir.to_str().unwrap()]);
    exits(&output, 0, "man");
    let page = |name: &str| {
        std::fs::read_to_string(out_dir.join(format!("{name}.1")))
            .unwrap_or_else(|err| panic!("{name}.1: {err}"))
    };
    // roff escapes a hyphen as `\-`.
    let names =
        |text: &str, name: &str| text.contains(name) || text.contains(&name.replace('-', "\\-"));
    let top = page("applyops");
    assert!(top.starts_with(".TH"), "{top}");
    for command in subcommands() {
        assert!(names(&top, &command), "applyops.1 names {command}");
        let own = page(&format!("applyops-{command}"));
        assert!(own.starts_with(".TH"), "applyops-{command}.1: {own}");
        assert!(names(&own, &command), "applyops-{command}.1");
        assert!(own.contains("Examples:"), "applyops-{command}.1");
    }
    assert!(
        !out_dir.join("applyops-man.1").exists(),
        "the hidden command has no page"
    );
    assert!(
        stdout(&output).contains("applyops.1"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn cli_make_man_runs_the_hidden_man_command() {
    let makefile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Makefile")).unwrap();
    assert!(makefile.contains("\nman: "), "a man target");
    assert!(
        makefile.contains("-- man --out-dir target/man"),
        "it writes target/man"
    );
    assert!(makefile.contains("#   make man "), "listed in the header");
}

// 3. Examples.

#[test]
fn cli_every_command_help_shows_examples() {
    let mut helps = vec![vec!["--help".to_owned()]];
    for command in subcommands() {
        helps.push(vec![command.clone(), "--help".to_owned()]);
        helps.push(vec![command.clone(), "-h".to_owned()]);
    }
    for args in helps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_with(&[], &args);
        exits(&output, 0, &args.join(" "));
        let help = stdout(&output);
        assert!(help.contains("Examples:"), "{args:?}:\n{help}");
        let invoked = match args[0] {
            "--help" => "applyops ".to_owned(),
            command => format!("applyops {command}"),
        };
        assert!(help.contains(&invoked), "{args:?}: runs itself:\n{help}");
    }
}

// 4. The rollout format in `create --help`.

/// The fields a rollout file may have, at each level, as the parser knows them: serde's own list,
/// which it names when it meets a field no level has (as `create` suggests the closest one).
fn rollout_fields() -> Vec<String> {
    let mut all = Vec::new();
    for probe in [
        r#"{"\u0000": 0}"#,
        r#"{"operations": [{"\u0000": 0}]}"#,
        r#"{"operations": [{"tasks": [{"\u0000": 0}]}]}"#,
    ] {
        let message = serde_json::from_str::<NewRollout>(probe)
            .unwrap_err()
            .to_string();
        let expected = message
            .split_once("expected ")
            .unwrap_or_else(|| panic!("{message}"))
            .1;
        let fields: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(!fields.is_empty(), "{message}");
        all.extend(fields);
    }
    all
}

#[test]
fn cli_create_help_shows_every_field_of_the_rollout_format() {
    let fields = rollout_fields();
    assert!(fields.len() >= 14, "{fields:?}");
    let output = run_with(&[], &["create", "--help"]);
    exits(&output, 0, "create --help");
    let help = stdout(&output);
    for field in &fields {
        assert!(
            help.contains(&format!("{field} =")) || help.contains(&format!("[[{field}]]")),
            "{field} is not in create --help:\n{help}"
        );
    }
    for value in ["rolling | barrier | parallel", "halt | pause | continue"] {
        assert!(help.contains(value), "{value}: {help}");
    }
    let short = stdout(&run_with(&[], &["create", "-h"]));
    assert!(
        short.contains("--help"),
        "-h says where the format is: {short}"
    );
}

// 5. `create --dry-run`.

#[test]
fn cli_create_dry_run_needs_no_database_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let rollout = dir.path().join("r.toml");
    std::fs::write(&rollout, toml_rollout("cli-dry", "shop")).unwrap();
    let rollout = rollout.to_str().unwrap();
    let absent = dir.path().join("never.db");
    let sqlite = format!("sqlite://{}", absent.display());
    for (what, env, flag) in [
        ("no URL at all (the default)", vec![], vec![]),
        (
            "a SQLite file that does not exist",
            vec![],
            vec!["--database-url", sqlite.as_str()],
        ),
        (
            "an unreachable server",
            vec![("APPLYOPS_DATABASE_URL", "mysql://root@127.0.0.1:1/nowhere")],
            vec![],
        ),
    ] {
        let mut command = applyops();
        command.current_dir(dir.path());
        for (name, value) in &env {
            command.env(name, value);
        }
        let output = command
            .args(&flag)
            .args(["create", "--file", rollout, "--dry-run"])
            .output()
            .unwrap();
        exits(&output, 0, what);
        let text = stdout(&output);
        assert!(
            text.contains("would create apply cli-dry"),
            "{what}: {text}"
        );
        assert!(
            text.contains("3 deployment(s) (us-east, us-west, eu-central), 1 task(s)"),
            "{what}: {text}"
        );
        assert!(text.contains("nothing was written"), "{what}: {text}");
    }
    assert!(!absent.exists(), "the SQLite file was not created");
    assert!(
        !dir.path().join("applyops.db").exists(),
        "nor the default one"
    );
    let doc: Value = serde_json::from_str(&stdout(&run_with(
        &[],
        &["create", "--file", rollout, "--dry-run", "--json"],
    )))
    .unwrap();
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["rollout"]["apply_identifier"], "cli-dry");
    assert_eq!(
        doc["rollout"]["operations"][1]["cutover_policy"], "rolling",
        "with its defaults"
    );
}

backend_tests!(
    cli_create_dry_run_refuses_what_create_refuses_with_the_same_message,
    cli_color_always_colours_a_pipe_and_never_or_no_color_do_not,
    cli_by_defaults_to_applyops_user_then_the_login_name_and_is_shown,
    cli_a_defaulted_requester_with_a_control_character_is_refused,
    cli_revert_without_an_apply_is_a_usage_error_naming_migrate_revert,
);

fn cli_create_dry_run_refuses_what_create_refuses_with_the_same_message(db: &TestDb) {
    let head = "apply_identifier = \"x\"\ndatabase_name = \"d\"\nenvironment = \"e\"\nrequested_by = \"r\"\n";
    let cases = [
        // The store's rules, checked before any SQL.
        (
            "r.toml",
            format!(
                "{head}[[operations]]\ndeployment = \"a\"\n[[operations]]\ndeployment = \"a\"\n"
            ),
        ),
        (
            "r.toml",
            format!("{head}max_concurrency = 0\n[[operations]]\ndeployment = \"a\"\n"),
        ),
        (
            "r.toml",
            format!("{head}[[operations]]\ndeployment = \"a \"\n"),
        ),
        (
            "r.json",
            r#"{"apply_identifier": "x", "database_name": "d", "environment": "e",
                "requested_by": "r", "operations": []}"#
                .to_owned(),
        ),
        // The parser's.
        (
            "r.toml",
            format!("{head}max_concurency = 1\n[[operations]]\ndeployment = \"a\"\n"),
        ),
        ("r.yaml", head.to_owned()),
    ];
    for (name, text) in cases {
        let file = rollout_file(name, &text);
        let path = file.path.to_str().unwrap();
        let real = on(db, &[], &["create", "--file", path]);
        let dry = on(db, &[], &["create", "--file", path, "--dry-run"]);
        exits(&real, 1, &text);
        assert_eq!(dry.status.code(), real.status.code(), "{text}");
        assert_eq!(stderr(&dry), stderr(&real), "{text}");
        assert!(
            stderr(&dry).contains("nothing was created"),
            "{}",
            stderr(&dry)
        );
        assert_eq!(stdout(&dry), "");
        // And with no database at all: the same.
        let alone = run_with(&[], &["create", "--file", path, "--dry-run"]);
        assert_eq!(stderr(&alone), stderr(&real), "{text}");
    }
    let page = applies::list(&mut db.conn(), &Default::default()).unwrap();
    assert!(page.items.is_empty(), "nothing written: {:?}", page.items);
    // A valid one: nothing written either.
    let file = rollout_file("r.toml", &toml_rollout("cli-dry-db", "shop"));
    exits(
        &on(
            db,
            &[],
            &["create", "--file", file.path.to_str().unwrap(), "--dry-run"],
        ),
        0,
        "dry run",
    );
    assert!(applies::get_by_identifier(&mut db.conn(), "cli-dry-db")
        .unwrap()
        .is_none());
}

fn cli_color_always_colours_a_pipe_and_never_or_no_color_do_not(db: &TestDb) {
    let id = create(db, "cli-colour", "shop").to_string();
    for args in [vec!["status", id.as_str()], vec!["applies"]] {
        let with = |env: &[(&str, &str)], color: Option<&str>| {
            let mut all: Vec<&str> = args.to_vec();
            if let Some(color) = color {
                all.extend(["--color", color]);
            }
            let output = on(db, env, &all);
            exits(&output, 0, &format!("{all:?}"));
            stdout(&output)
        };
        // A foreground colour (crossterm's `ESC [ 38 ; …`), not only a reset.
        let always = with(&[], Some("always"));
        assert!(
            always.contains("\u{1b}[38;"),
            "{args:?} --color always in a pipe: {always:?}"
        );
        for (what, text) in [
            ("auto in a pipe", with(&[], None)),
            ("--color auto", with(&[], Some("auto"))),
            ("--color never", with(&[], Some("never"))),
            ("NO_COLOR=1", with(&[("NO_COLOR", "1")], None)),
            (
                "--color never, CLICOLOR_FORCE=1",
                with(&[("CLICOLOR_FORCE", "1")], Some("never")),
            ),
        ] {
            assert!(!text.contains('\u{1b}'), "{args:?} {what}: {text:?}");
        }
        let forced = with(&[("NO_COLOR", "1")], Some("always"));
        assert!(
            forced.contains("\u{1b}[38;"),
            "{args:?}: --color always wins over NO_COLOR: {forced:?}"
        );
        // The same rows, escapes apart.
        let plain = with(&[], Some("never"));
        assert_eq!(strip_ansi(&always), plain, "{args:?}");
    }
    let err = on(db, &[], &["applies", "--color", "sometimes"]);
    exits(&err, 2, "an unknown --color");
}

/// `text` without its SGR escape sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Who the pending requests of `apply` were recorded by.
fn requested_by(db: &TestDb, apply: applyops::models::ApplyId) -> Vec<String> {
    control_requests::list_pending(&mut db.conn(), apply)
        .unwrap()
        .into_iter()
        .map(|request| request.requested_by)
        .collect()
}

fn cli_by_defaults_to_applyops_user_then_the_login_name_and_is_shown(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ops) = crate::fixtures::rollout(
        conn,
        2,
        applyops::state::CutoverPolicy::Barrier,
        applyops::state::FailurePolicy::Halt,
    );
    applies::set_defer_cutover(conn, apply_id, true).unwrap();
    for op in &ops {
        crate::fixtures::force_state(conn, *op, applyops::state::ApplyState::WaitingForCutover);
    }
    let apply = apply_id.to_string();
    // A cutover stays pending, so each is read back as stored.
    let cutover = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["cutover", apply.as_str(), "--deployment", "deployment-0"];
        args.extend_from_slice(extra);
        let output = on(db, env, &args);
        exits(&output, 0, &format!("{env:?} {extra:?}"));
        let text = stdout(&output);
        let pending = control_requests::list_pending(&mut db.conn(), apply_id).unwrap();
        assert_eq!(pending.len(), 1, "{text}");
        // Resolved, so that the next one is recorded anew.
        control_requests::complete(&mut db.conn(), pending[0].id).unwrap();
        (pending[0].requested_by.clone(), text)
    };
    let (by, text) = cutover(&[("APPLYOPS_USER", "carol"), ("USER", "alice")], &[]);
    assert_eq!(by, "carol", "APPLYOPS_USER first");
    assert!(text.contains("recorded by carol"), "{text}");
    let (by, text) = cutover(&[("USER", "alice"), ("LOGNAME", "al")], &[]);
    assert_eq!(by, "alice", "then USER");
    assert!(text.contains("recorded by alice"), "{text}");
    let (by, _) = cutover(&[("APPLYOPS_USER", ""), ("LOGNAME", "al")], &[]);
    assert_eq!(by, "al", "an empty one is unset; then LOGNAME");
    let (by, text) = cutover(&[("APPLYOPS_USER", "carol")], &["--by", "bob"]);
    assert_eq!(by, "bob", "--by wins");
    assert!(text.contains("recorded by bob"), "{text}");
    let doc: Value = serde_json::from_str(&stdout(&on(
        db,
        &[("USER", "dave")],
        &["cutover", &apply, "--deployment", "deployment-1", "--json"],
    )))
    .unwrap();
    assert_eq!(doc["request"]["requested_by"], "dave");
    assert_eq!(requested_by(db, apply_id), ["dave"]);
    // None set: this process's user's name in the user database, as `id -un` says.
    let id = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let login = String::from_utf8(id.stdout).unwrap().trim().to_owned();
    let output = on(db, &[], &["stop", &apply, "--deployment", "deployment-1"]);
    if output.status.success() {
        assert!(
            stdout(&output).contains(&format!("recorded by {login}")),
            "{}",
            stdout(&output)
        );
    } else {
        exits(&output, 2, "no name to be found");
        assert!(
            stderr(&output).contains("pass --by NAME"),
            "{}",
            stderr(&output)
        );
    }
}

fn cli_a_defaulted_requester_with_a_control_character_is_refused(db: &TestDb) {
    let id = create(db, "cli-evil-user", "shop");
    for (name, value) in [("APPLYOPS_USER", "evil\u{1b}[2J"), ("USER", "bad\nname")] {
        let output = on(db, &[(name, value)], &["stop", "cli-evil-user"]);
        exits(&output, 1, name);
        let err = stderr(&output);
        assert!(err.contains("requested_by"), "{err}");
        assert!(err.contains("control character"), "{err}");
        assert!(err.contains("nothing was recorded"), "{err}");
        assert!(!err.contains('\u{1b}'), "{err:?}");
    }
    assert!(requested_by(db, id).is_empty());
}

fn cli_revert_without_an_apply_is_a_usage_error_naming_migrate_revert(db: &TestDb) {
    let before = schema_snapshot(&mut db.conn());
    for args in [
        &["revert"][..],
        &["revert", "--yes"][..],
        &["revert", "--yes", "--force"][..],
        &["revert", "--by", "ops"][..],
    ] {
        let output = on(db, &[("USER", "ops")], args);
        exits(&output, 2, &format!("{args:?}"));
        let err = stderr(&output);
        assert!(
            err.contains("applyops migrate --revert --yes"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(schema_snapshot(&mut db.conn()), before, "nothing reverted");
    // `revert --help` says where the migration revert went.
    let help = stdout(&run_with(&[], &["revert", "--help"]));
    assert!(help.contains("migrate --revert"), "{help}");
    // Other commands' errors carry no such tip.
    let err = stderr(&on(db, &[], &["status"]));
    assert!(!err.contains("migrate --revert"), "{err}");
}

// 7. The database URL from the environment.

#[test]
fn cli_database_url_is_the_flag_then_applyops_database_url_then_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let (flag, ours, theirs) = (url("flag.db"), url("ours.db"), url("theirs.db"));
    let both = [
        ("APPLYOPS_DATABASE_URL", ours.as_str()),
        ("DATABASE_URL", theirs.as_str()),
    ];
    // Each names the URL it tried and where it came from.
    for (env, args, tried, source) in [
        (
            &both[..],
            vec!["--database-url", flag.as_str(), "applies"],
            "flag.db",
            "from --database-url",
        ),
        (
            &both[..],
            vec!["applies"],
            "ours.db",
            "from APPLYOPS_DATABASE_URL",
        ),
        (
            &both[1..],
            vec!["applies"],
            "theirs.db",
            "from DATABASE_URL",
        ),
        (
            &[
                ("APPLYOPS_DATABASE_URL", ""),
                ("DATABASE_URL", theirs.as_str()),
            ][..],
            vec!["applies"],
            "theirs.db",
            "from DATABASE_URL",
        ),
    ] {
        let output = run_with(env, &args);
        exits(&output, 1, source);
        let err = stderr(&output);
        assert!(err.contains(tried), "{source}: {err}");
        assert!(err.contains(source), "{source}: {err}");
    }
    // And `migrate` creates the database the winner names, only it.
    exits(&run_with(&both, &["migrate"]), 0, "migrate");
    assert!(dir.path().join("ours.db").is_file());
    assert!(!dir.path().join("theirs.db").exists());
    assert_eq!(stdout(&run_with(&both, &["applies"])), "no applies\n");
}

#[test]
fn cli_neither_database_url_variable_is_shown_by_help_or_errors() {
    const SECRET: &str = "Hunter2Pw";
    let ours = format!("mysql://app:{SECRET}@127.0.0.1:1/ours");
    let theirs = format!("mysql://app:{SECRET}@127.0.0.1:1/theirs");
    let env = [
        ("APPLYOPS_DATABASE_URL", ours.as_str()),
        ("DATABASE_URL", theirs.as_str()),
    ];
    let mut helps = vec![vec!["--help".to_owned()], vec!["-h".to_owned()]];
    for command in subcommands() {
        helps.push(vec![command, "--help".to_owned()]);
    }
    for args in &helps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_with(&env, &args);
        exits(&output, 0, &args.join(" "));
        let shown = format!("{}{}", stdout(&output), stderr(&output));
        assert!(shown.contains("APPLYOPS_DATABASE_URL"), "{args:?}: {shown}");
        assert!(shown.contains("DATABASE_URL"), "{args:?}");
        for secret in [SECRET, "127.0.0.1:1"] {
            assert!(!shown.contains(secret), "{args:?} shows {secret}: {shown}");
        }
    }
    let output = run_with(&env, &["applies"]);
    exits(&output, 1, "unreachable");
    let err = stderr(&output);
    assert!(!err.contains(SECRET), "{err}");
    assert!(err.contains("from APPLYOPS_DATABASE_URL"), "{err}");
}
