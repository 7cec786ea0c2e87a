//! The `applyops` command line, run as a process against SQLite and MySQL.

use std::process::Command;

use applyops::models::NewApplyOperation;
use applyops::store::apply_operations;

use crate::backend_tests;
use crate::harness::{Kind, TestDb};

fn applyops(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_applyops"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run applyops");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn migrate_then_nothing_pending(kind: Kind) {
    let db = TestDb::unmigrated(kind);
    let (ok, out, err) = applyops(db.url(), &["migrate"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "applied 20261124000001\napplied 20261124000002\napplied 20261124000003\n\
         applied 20261125000001\napplied 20261125000002\napplied 20261125000003\n"
    );
    let (ok, out, _) = applyops(db.url(), &["migrate"]);
    assert!(ok);
    assert_eq!(out, "no pending migrations\n");
    let (ok, out, _) = applyops(db.url(), &["revert"]);
    assert!(ok);
    assert_eq!(out, "reverted 20261125000003\n");
}

#[test]
fn mysql_cli_migrates_and_reverts() {
    migrate_then_nothing_pending(Kind::Mysql);
}

#[test]
fn sqlite_cli_migrates_and_reverts() {
    migrate_then_nothing_pending(Kind::Sqlite);
}

backend_tests! {
    fn cli_lists_an_applys_operations_as_json_lines(db) {
        let conn = &mut db.conn();
        apply_operations::insert(conn, &NewApplyOperation::new(9, "east")).unwrap();
        apply_operations::insert(conn, &NewApplyOperation::new(9, "west")).unwrap();
        let (ok, out, err) = applyops(db.url(), &["list", "9"]);
        assert!(ok, "{err}");
        let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["deployment"], "east");
        assert_eq!(rows[1]["deployment"], "west");
        assert_eq!(rows[0]["state"], "pending");
        let (ok, out, _) = applyops(db.url(), &["list", "10"]);
        assert!(ok);
        assert_eq!(out, "");
    }
}

#[test]
fn cli_reports_a_bad_url_and_fails() {
    let (ok, out, err) = applyops("postgres://u:secret@h/db", &["migrate"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(
        err.starts_with("applyops: unsupported database URL"),
        "{err}"
    );
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn cli_rejects_unknown_arguments_with_usage() {
    let (ok, _, err) = applyops("sqlite://x.db", &["list", "not-a-number"]);
    assert!(!ok);
    assert!(err.contains("invalid value"), "{err}");
}
