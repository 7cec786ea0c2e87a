//! The database URL on the command line (issue 19, items 13 and 14): `--help` never shows the
//! environment's URL; a malformed URL is never taken for a file name and is shown redacted in every
//! message; only `migrate` creates a database, and the others say which URL they tried and where it
//! came from.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::mysql_server;

const PASSWORD: &str = "S3cretPw";

/// Runs the binary in `dir` with `env` set (and no inherited `DATABASE_URL`,
/// `APPLYOPS_DATABASE_URL` or `NO_COLOR`).
fn applyops_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_applyops"));
    command
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("APPLYOPS_DATABASE_URL")
        .env_remove("NO_COLOR")
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run applyops")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The subcommands `applyops --help` lists.
fn subcommands(dir: &Path) -> Vec<String> {
    listed_subcommands(&text(&applyops_in(dir, &[], &["--help"]).stdout))
}

/// The subcommands a `--help` text lists (clap's own `help` included), at least 15 of them.
pub fn listed_subcommands(help: &str) -> Vec<String> {
    let listed: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(listed.len() >= 15, "{listed:?}");
    listed
}

#[test]
fn cli_help_never_shows_the_database_url_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://app:{PASSWORD}@db.internal:3306/applyops");
    let env = [("DATABASE_URL", url.as_str())];
    let mut helps = vec![vec!["--help".to_owned()], vec!["-h".to_owned()]];
    // `help` itself has no options to show.
    for command in subcommands(dir.path()).into_iter().filter(|c| c != "help") {
        helps.push(vec![command.clone(), "--help".to_owned()]);
        helps.push(vec!["help".to_owned(), command]);
    }
    for args in &helps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = applyops_in(dir.path(), &env, &args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        let shown = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(shown.contains("DATABASE_URL"), "{args:?}: {shown}");
        for secret in [PASSWORD, "db.internal"] {
            assert!(!shown.contains(secret), "{args:?} shows {secret}: {shown}");
        }
    }
}

/// Each malformed spelling, given by flag and by environment, to a command that opens the database
/// and to `migrate`: exit 1, the password never shown (the URL redacted instead), and no file made.
#[test]
fn cli_malformed_urls_are_refused_redacted_and_never_taken_for_files() {
    let malformed = [
        format!(" mysql://app:{PASSWORD}@127.0.0.1:1/x"),
        format!("\tmysql://app:{PASSWORD}@127.0.0.1:1/x"),
        format!("mysql://app:{PASSWORD}@127.0.0.1:1/x "),
        format!("mysql:/app:{PASSWORD}@127.0.0.1:1/x"),
        format!("mysql//app:{PASSWORD}@127.0.0.1:1/x"),
        format!("mysql:app:{PASSWORD}@127.0.0.1"),
        format!("mysql:{PASSWORD}@127.0.0.1"),
    ];
    for url in &malformed {
        for command in [&["migrate"][..], &["applies"][..], &["status", "1"][..]] {
            let dir = tempfile::tempdir().unwrap();
            let mut by_flag = vec!["--database-url", url.as_str()];
            by_flag.extend_from_slice(command);
            for (env, args) in [
                (vec![], by_flag.clone()),
                (vec![("DATABASE_URL", url.as_str())], command.to_vec()),
            ] {
                let output = applyops_in(dir.path(), &env, &args);
                let err = text(&output.stderr);
                assert_eq!(output.status.code(), Some(1), "{url:?} {args:?}: {err}");
                assert!(!err.contains(PASSWORD), "{url:?} {args:?}: {err}");
                assert!(err.contains("***@127.0.0.1"), "{url:?} {args:?}: {err}");
                assert!(
                    err.starts_with("applyops: unsupported database URL"),
                    "{url:?} {args:?}: {err}"
                );
            }
            assert_eq!(
                entries(dir.path()),
                Vec::<String>::new(),
                "{url:?} {command:?}: nothing created"
            );
        }
    }
}

/// With no URL given, and with a mistyped path, every command but `migrate` refuses, naming the
/// URL it tried and where it came from, and creates nothing; then `migrate` creates the database.
#[test]
fn cli_only_migrate_creates_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let rollout = dir.path().join("r.toml");
    std::fs::write(&rollout, crate::operator_cli::toml_rollout("never", "shop")).unwrap();
    let rollout = rollout.to_str().unwrap().to_owned();
    let before = entries(dir.path());
    let commands: [&[&str]; 10] = [
        &["status", "1"],
        &["applies"],
        &["leases"],
        &["list", "1"],
        &["watch", "1", "--timeout", "1"],
        &["wait", "1", "--state", "completed", "--timeout", "1"],
        &["stop", "1", "--by", "ops"],
        &["create", "--file", &rollout],
        &["migrate", "--revert", "--yes"],
        &["retry", "1", "--deployment", "a", "--by", "ops"],
    ];
    let typo = dir.path().join("applyosp.db").display().to_string();
    let given = format!("sqlite://{typo}");
    for (env, flag, shown, source) in [
        (vec![], vec![], "\"sqlite://applyops.db\"", "the default"),
        (
            vec![],
            vec!["--database-url", typo.as_str()],
            typo.as_str(),
            "from --database-url",
        ),
        (
            vec![("DATABASE_URL", given.as_str())],
            vec![],
            given.as_str(),
            "from DATABASE_URL",
        ),
    ] {
        for command in commands {
            let mut args = flag.clone();
            args.extend_from_slice(command);
            let output = applyops_in(dir.path(), &env, &args);
            let err = text(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(shown), "{args:?} names the URL: {err}");
            assert!(err.contains(source), "{args:?} says where from: {err}");
            assert!(
                err.contains("only `applyops migrate` creates a database"),
                "{args:?}: {err}"
            );
            assert_eq!(entries(dir.path()), before, "{args:?} created nothing");
        }
    }
    let output = applyops_in(dir.path(), &[], &["migrate"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(dir.path().join("applyops.db").is_file());
    let output = applyops_in(dir.path(), &[], &["applies"]);
    assert_eq!(text(&output.stdout), "no applies\n");
}

/// A MySQL URL with no database is told so, by every command, instead of "run migrate".
#[test]
fn cli_a_mysql_url_without_a_database_says_it_names_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = mysql_server();
    for url in [server.to_owned(), format!("{server}/")] {
        for command in [&["applies"][..], &["status", "1"][..], &["migrate"][..]] {
            let mut args = vec!["--database-url", url.as_str()];
            args.extend_from_slice(command);
            let output = applyops_in(dir.path(), &[], &args);
            let err = text(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("names no database"), "{args:?}: {err}");
            assert!(!err.contains("applyops migrate`"), "{args:?}: {err}");
        }
    }
}
