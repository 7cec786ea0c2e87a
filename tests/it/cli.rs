//! The `applyops` command line, run as a process against SQLite and MySQL.

use std::process::Command;

use applyops::db::{self, Dropped};
use applyops::models::{ApplyId, ApplyOperation, NewApply, NewApplyOperation, NewTask};
use applyops::state::ControlRequestKind;
use applyops::store::{applies, apply_operations, tasks};
use diesel::prelude::*;

use crate::backend_tests;
use crate::harness::{schema_snapshot, table_exists, Kind, TestDb};

fn applyops(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_applyops"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("APPLYOPS_DATABASE_URL")
        .output()
        .expect("run applyops");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The versions of a backend's migration tree, oldest first, read from the directory (so the tests
/// follow new migrations without edits).
fn versions(kind: Kind) -> Vec<String> {
    let tree = match kind {
        Kind::Mysql => "mysql",
        Kind::Postgres => "postgres",
        Kind::Sqlite => "sqlite",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(tree);
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("up.sql").is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.split('_').next().unwrap().replace('-', "")
        })
        .collect();
    versions.sort();
    versions
}

fn kind_of(db: &TestDb) -> Kind {
    if db.url().starts_with("mysql://") {
        Kind::Mysql
    } else if db.url().starts_with("postgres://") {
        Kind::Postgres
    } else {
        Kind::Sqlite
    }
}

/// One row in each of the four tables; returns the apply's id.
fn fill_every_table(conn: &mut applyops::DbConnection) -> ApplyId {
    let apply_id = applies::insert(
        conn,
        &NewApply::new("cli-apply", "commerce", "production", "main"),
    )
    .unwrap();
    let operation_id =
        apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "east")).unwrap();
    let task = NewTask {
        apply_id,
        apply_operation_id: Some(operation_id),
        table_name: "orders".into(),
        ddl: "ALTER TABLE orders ADD COLUMN note TEXT".into(),
    };
    tasks::insert(conn, &task).unwrap();
    applyops::store::applies::set_defer_cutover(conn, apply_id, true).unwrap();
    crate::fixtures::ask(conn, apply_id, None, ControlRequestKind::Cutover, None).unwrap();
    apply_id
}

fn migrate_then_nothing_pending(kind: Kind) {
    let db = TestDb::unmigrated(kind);
    let versions = versions(kind);
    let (ok, out, err) = applyops(db.url(), &["migrate"]);
    assert!(ok, "{err}");
    let expected: String = versions.iter().map(|v| format!("applied {v}\n")).collect();
    assert_eq!(out, expected);
    let (ok, out, _) = applyops(db.url(), &["migrate"]);
    assert!(ok);
    assert_eq!(out, "no pending migrations\n");
    let (ok, out, err) = applyops(db.url(), &["migrate", "--revert", "--yes"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("reverted {}\n", versions.last().unwrap()));
}

#[test]
fn mysql_cli_migrates_and_reverts() {
    migrate_then_nothing_pending(Kind::Mysql);
}

#[test]
fn sqlite_cli_migrates_and_reverts() {
    migrate_then_nothing_pending(Kind::Sqlite);
}

#[test]
fn postgres_cli_migrates_and_reverts() {
    migrate_then_nothing_pending(Kind::Postgres);
}

/// `list` on a database that was never migrated, then on one missing its newest migration: the error
/// says migrations are missing, names them and says how to run them; and it only reads (Diesel's
/// bookkeeping table is not created).
fn list_says_migrations_are_missing(kind: Kind) {
    let db = TestDb::unmigrated(kind);
    // An empty database that exists: only `migrate` creates one (a SQLite file).
    drop(db.conn());
    let (ok, out, err) = applyops(db.url(), &["list", "1"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.starts_with("applyops: migrations are missing"), "{err}");
    assert!(err.contains("run them with `applyops migrate`"), "{err}");
    for version in versions(kind) {
        assert!(err.contains(&version), "{err}");
    }
    assert!(!table_exists(&mut db.conn(), "__diesel_schema_migrations"));

    let conn = &mut db.conn();
    db::run_migrations(conn).unwrap();
    let reverted = db::revert_last_migration(conn).unwrap().unwrap();
    let (ok, out, err) = applyops(db.url(), &["list", "1"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.starts_with("applyops: migrations are missing"), "{err}");
    assert!(err.contains(&format!("1 migration ({reverted})")), "{err}");
    assert!(err.contains("`applyops migrate`"), "{err}");

    let (ok, _, err) = applyops(db.url(), &["migrate"]);
    assert!(ok, "{err}");
    let (ok, _, err) = applyops(db.url(), &["list", "1"]);
    assert!(!ok);
    assert_eq!(err, "applyops: apply 1 does not exist\n");
}

#[test]
fn mysql_cli_list_on_an_unmigrated_or_partly_migrated_database_says_migrations_are_missing() {
    list_says_migrations_are_missing(Kind::Mysql);
}

#[test]
fn postgres_cli_list_on_an_unmigrated_or_partly_migrated_database_says_migrations_are_missing() {
    list_says_migrations_are_missing(Kind::Postgres);
}

#[test]
fn sqlite_cli_list_on_an_unmigrated_or_partly_migrated_database_says_migrations_are_missing() {
    list_says_migrations_are_missing(Kind::Sqlite);
}

backend_tests!(
    cli_lists_an_applys_operations_as_json_lines,
    cli_list_of_a_missing_apply_fails_naming_it,
    cli_list_shows_orphaned_operations_with_a_warning,
    cli_migrate_revert_without_yes_refuses_and_changes_nothing,
    cli_migrate_revert_of_a_migration_that_drops_rows_needs_force,
);

fn cli_lists_an_applys_operations_as_json_lines(db: &TestDb) {
    let conn = &mut db.conn();
    let apply_id = applies::insert(
        conn,
        &NewApply::new("a-9", "commerce", "production", "main"),
    )
    .unwrap();
    let east = apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "east")).unwrap();
    apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "west")).unwrap();
    apply_operations::mark_started(conn, east).unwrap();
    let (ok, out, err) = applyops(db.url(), &["list", &apply_id.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(err, "");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["deployment"], "east");
    assert_eq!(rows[1]["deployment"], "west");
    assert_eq!(rows[1]["state"], "pending");
    assert_eq!(rows[1]["started_at"], serde_json::Value::Null);
    // UTC timestamps say so: RFC 3339 with a Z, microseconds, and they read back as stored.
    let stored = apply_operations::get(conn, east).unwrap().unwrap();
    for field in ["created_at", "updated_at", "started_at"] {
        let text = rows[0][field]
            .as_str()
            .unwrap_or_else(|| panic!("{field}: {}", rows[0]));
        assert!(text.ends_with('Z'), "{field}: {text}");
        assert_eq!(
            text.len(),
            "2026-11-25T13:04:05.123456Z".len(),
            "{field}: {text}"
        );
        chrono::DateTime::parse_from_rfc3339(text).unwrap();
    }
    let read_back: ApplyOperation = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(read_back, stored);
    assert_eq!(
        rows[0]["created_at"],
        stored
            .created_at
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
}

fn cli_list_of_a_missing_apply_fails_naming_it(db: &TestDb) {
    let (ok, out, err) = applyops(db.url(), &["list", "424242"]);
    assert!(!ok);
    assert_eq!(out, "");
    assert_eq!(err, "applyops: apply 424242 does not exist\n");
}

fn cli_list_shows_orphaned_operations_with_a_warning(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(77));
    apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(77), "east")).unwrap();
    // The store never orphans an operation; an operator's SQL can.
    diesel::delete(applyops::schema::applies::table.find(ApplyId(77)))
        .execute(conn)
        .unwrap();
    let (ok, out, err) = applyops(db.url(), &["list", "77"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1);
    assert!(err.contains("apply 77 has no row in applies"), "{err}");
}

/// `migrate --revert` (the migration revert `revert` without an APPLY was) refuses without `--yes`,
/// changing nothing; `--yes` and `--force` without `--revert` are usage errors.
fn cli_migrate_revert_without_yes_refuses_and_changes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    fill_every_table(conn);
    let before = schema_snapshot(conn);
    for args in [
        &["migrate", "--revert"][..],
        &["migrate", "--revert", "--force"][..],
    ] {
        let (ok, out, err) = applyops(db.url(), args);
        assert!(!ok, "{args:?}");
        assert_eq!(out, "");
        assert!(
            err.starts_with("applyops: refusing to revert without --yes"),
            "{err}"
        );
        assert!(err.contains("nothing was changed"), "{err}");
    }
    for args in [&["migrate", "--yes"][..], &["migrate", "--force"][..]] {
        let output = Command::new(env!("CARGO_BIN_EXE_applyops"))
            .args(["--database-url", db.url()])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let err = String::from_utf8(output.stderr).unwrap();
        assert!(err.contains("--revert"), "{args:?}: {err}");
    }
    assert_eq!(schema_snapshot(conn), before);
    assert_eq!(db::pending_migrations(conn).unwrap(), Vec::<String>::new());
}

fn cli_migrate_revert_of_a_migration_that_drops_rows_needs_force(db: &TestDb) {
    // Reverts every migration, newest first, with a row in every table: each revert that would
    // drop a table (or columns of one) holding rows is refused with --yes alone, changing nothing,
    // and goes through with --yes --force. Those that drop nothing with rows need only --yes.
    let conn = &mut db.conn();
    fill_every_table(conn);
    let mut refusals = 0;
    for version in versions(kind_of(db)).iter().rev() {
        let preview = db::preview_revert(conn)
            .unwrap()
            .expect("a migration is applied");
        assert_eq!(&preview.version, version);
        let losing: Vec<_> = preview.data_loss().cloned().collect();
        let before = schema_snapshot(conn);
        let (ok, out, err) = applyops(db.url(), &["migrate", "--revert", "--yes"]);
        if losing.is_empty() {
            assert!(ok, "{version}: {err}");
            assert_eq!(out, format!("reverted {version}\n"));
            continue;
        }
        refusals += 1;
        assert!(!ok, "{version} drops {losing:?}");
        assert_eq!(out, "");
        assert!(
            err.starts_with(&format!(
                "applyops: refusing to revert {version} without --force"
            )),
            "{err}"
        );
        for drop in &losing {
            assert!(err.contains(&drop.to_string()), "{err} names {drop}");
        }
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(schema_snapshot(conn), before, "{version}: nothing changed");
        assert_eq!(&db::preview_revert(conn).unwrap().unwrap().version, version);
        let (ok, out, err) = applyops(db.url(), &["migrate", "--revert", "--yes", "--force"]);
        assert!(ok, "{version}: {err}");
        assert_eq!(out, format!("reverted {version}\n"));
        for drop in &losing {
            if drop.dropped == Dropped::Table {
                assert!(
                    !table_exists(conn, &drop.table),
                    "{version} dropped {}",
                    drop.table
                );
            }
        }
    }
    assert!(
        refusals >= 1,
        "at least one migration drops a table that holds rows"
    );
    let (ok, out, err) = applyops(db.url(), &["migrate", "--revert", "--yes"]);
    assert!(ok, "{err}");
    assert_eq!(out, "no migration to revert\n");
}

#[test]
fn cli_names_a_sqlite_path_whose_directory_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let path = missing.join("applyops.db");
    for url in [
        format!("sqlite://{}", path.display()),
        path.display().to_string(),
    ] {
        for args in [&["list", "1"][..], &["migrate"][..]] {
            let (ok, out, err) = applyops(&url, args);
            assert!(!ok);
            assert_eq!(out, "");
            assert!(
                err.contains(&format!("{:?}", path.display().to_string())),
                "{err}"
            );
            assert!(err.contains("does not exist"), "{err}");
        }
    }
    assert!(!missing.exists(), "no directory was created");
}

#[test]
fn cli_never_suggests_revert_for_a_mistyped_subcommand() {
    for typo in ["revrt", "reverse", "rever"] {
        let (ok, out, err) = applyops("sqlite://x.db", &[typo]);
        assert!(!ok);
        assert_eq!(out, "");
        assert!(
            err.contains(&format!("unrecognized subcommand '{typo}'")),
            "{err}"
        );
        assert!(!err.contains("revert"), "{typo}: {err}");
        assert!(!err.contains("\n\n\n"), "no empty tip section: {err:?}");
    }
    // Suggestions of harmless commands are kept.
    let (ok, _, err) = applyops("sqlite://x.db", &["lsit"]);
    assert!(!ok);
    assert!(err.contains("a similar subcommand exists: 'list'"), "{err}");
}

#[test]
fn cli_reports_a_bad_url_and_fails() {
    let (ok, out, err) = applyops("mongodb://u:secret@h/db", &["migrate"]);
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
    // (`list` takes identifiers now, so its argument is no longer a number clap checks.)
    let (ok, _, err) = applyops("sqlite://x.db", &["applies", "--limit", "not-a-number"]);
    assert!(!ok);
    assert!(err.contains("invalid value"), "{err}");
}
