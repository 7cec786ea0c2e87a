//! Migrations: idempotent runs, concurrent runners, re-running a half-applied run, and every
//! migration's down.sql really reversing it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use applyops::db::{self, Dropped};
use applyops::StoreError;
use diesel::prelude::*;

use crate::backend_tests;
use crate::harness::{schema_snapshot, table_exists, tables, Kind, TestDb};

const VERSIONS: [&str; 15] = [
    "20261124000001",
    "20261124000002",
    "20261124000003",
    "20261125000001",
    "20261125000002",
    "20261125000003",
    "20261125000004",
    "20261125000005",
    "20261125000006",
    "20261205000001",
    "20261205000002",
    "20261205000003",
    "20261207000001",
    "20261207000002",
    "20261207000003",
];
const TABLES: [&str; 4] = [
    "applies",
    "apply_control_requests",
    "apply_operations",
    "tasks",
];

/// What a migration adds.
#[derive(Debug, Clone, Copy)]
enum Added {
    /// A table.
    Table(&'static str),
    /// A column of a table.
    Column(&'static str, &'static str),
    /// NO PAD binary collations on every text column (MySQL; SQLite's BINARY already is).
    NoPadCollations,
    /// An index of a table.
    Index(&'static str, &'static str),
    /// The indexed generated columns are STORED (MySQL; SQLite keeps them VIRTUAL).
    StoredGeneratedColumns,
    /// An index of a table that a later migration replaces: observable only while that migration's
    /// column (the third field) is absent.
    IndexUntilColumn(&'static str, &'static str, &'static str),
}

/// What each migration adds, in VERSIONS order.
const ADDED_BY_MIGRATION: [Added; 15] = [
    Added::Table("applies"),
    Added::Table("apply_operations"),
    Added::Table("tasks"),
    Added::Column("apply_operations", "lease_token"),
    Added::Column("applies", "defer_cutover"),
    Added::Table("apply_control_requests"),
    Added::NoPadCollations,
    Added::Index("applies", "applies_created_at_id_idx"),
    Added::Index("apply_operations", "apply_operations_target_key"),
    Added::Index("apply_operations", "apply_operations_external_id_key"),
    Added::Column("apply_control_requests", "releases_through"),
    Added::Index("apply_operations", "apply_operations_lease_expiry_idx"),
    Added::StoredGeneratedColumns,
    Added::IndexUntilColumn(
        "apply_operations",
        "apply_operations_scope_claim_idx",
        "copy_claim",
    ),
    Added::Column("apply_operations", "copy_claim"),
];

/// True while what migration `index` adds is present; `None` where it changes nothing observable on
/// this backend.
fn added_by_migration_exists(conn: &mut applyops::DbConnection, index: usize) -> Option<bool> {
    match ADDED_BY_MIGRATION[index] {
        Added::Table(table) => Some(table_exists(conn, table)),
        Added::Column(table, column) => {
            Some(crate::harness::column_exists(conn, table, column).is_some())
        }
        Added::Index(table, index) => {
            Some(crate::harness::index_exists(conn, table, index).is_some())
        }
        Added::IndexUntilColumn(table, index, column) => {
            if crate::harness::column_exists(conn, table, column).is_some() {
                None
            } else {
                Some(crate::harness::index_exists(conn, table, index).is_some())
            }
        }
        Added::NoPadCollations => match conn {
            applyops::DbConnection::Mysql(_) => {
                let collations = crate::harness::text_collations(conn);
                assert!(!collations.is_empty());
                Some(collations.iter().all(|(_, _, collation)| {
                    collation == "utf8mb4_nopad_bin" || collation == "utf8mb4_0900_bin"
                }))
            }
            applyops::DbConnection::Pg(_) | applyops::DbConnection::Sqlite(_) => None,
        },
        Added::StoredGeneratedColumns => match conn {
            applyops::DbConnection::Mysql(_) => {
                #[derive(QueryableByName)]
                struct Stored {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let stored: Stored = diesel::sql_query(
                    "SELECT COUNT(*) AS n FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = DATABASE() AND EXTRA LIKE '%STORED%' AND \
                     ((TABLE_NAME = 'apply_operations' AND COLUMN_NAME = 'claimable') OR \
                      (TABLE_NAME = 'apply_control_requests' AND COLUMN_NAME = 'pending_scope'))",
                )
                .get_result(conn)
                .unwrap();
                Some(stored.n == 2)
            }
            // PostgreSQL 15 has only stored generated columns: created so from the start.
            applyops::DbConnection::Pg(_) | applyops::DbConnection::Sqlite(_) => None,
        },
    }
}

diesel::table! {
    __diesel_schema_migrations (version) {
        version -> Text,
        run_on -> Timestamp,
    }
}

fn migrations_on(kind: Kind) {
    let db = TestDb::unmigrated(kind);
    let conn = &mut db.conn();
    assert_eq!(db::run_migrations(conn).unwrap(), VERSIONS);
    assert_eq!(tables(conn), TABLES);
    assert!(
        db::run_migrations(conn).unwrap().is_empty(),
        "a second run has nothing to do"
    );
}

#[test]
fn mysql_run_migrations_applies_every_version_once() {
    migrations_on(Kind::Mysql);
}

#[test]
fn sqlite_run_migrations_applies_every_version_once() {
    migrations_on(Kind::Sqlite);
}

#[test]
fn postgres_run_migrations_applies_every_version_once() {
    migrations_on(Kind::Postgres);
}

fn concurrent_runners(kind: Kind) {
    const RUNNERS: usize = 6;
    let db = TestDb::unmigrated(kind);
    let barrier = Arc::new(Barrier::new(RUNNERS));
    let handles: Vec<_> = (0..RUNNERS)
        .map(|_| {
            let url = db.url().to_owned();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                // Connecting at the same moment is part of the test (every runner's session setup
                // races on a new database). A runner that fails still reaches the barrier, so the
                // others are not left waiting for it.
                let conn = db::establish(&url);
                barrier.wait();
                db::run_migrations(&mut conn?)
            })
        })
        .collect();
    let mut applied: Vec<String> = Vec::new();
    for handle in handles {
        applied.extend(handle.join().unwrap().expect("every runner succeeds"));
    }
    applied.sort();
    assert_eq!(
        applied, VERSIONS,
        "each migration ran exactly once across all runners"
    );
    assert_eq!(tables(&mut db.conn()), TABLES);
}

#[test]
fn mysql_concurrent_runners_are_serialised() {
    concurrent_runners(Kind::Mysql);
}

#[test]
fn sqlite_concurrent_runners_are_serialised() {
    concurrent_runners(Kind::Sqlite);
}

/// On PostgreSQL the runners wait for the advisory lock.
#[test]
fn postgres_concurrent_runners_are_serialised() {
    concurrent_runners(Kind::Postgres);
}

/// MySQL commits DDL implicitly: a runner that dies after a migration's DDL but before recording the
/// version leaves the change without the record. The next run must succeed, for the CREATE TABLE
/// migrations and the guarded ALTER TABLE ones alike.
#[test]
fn mysql_a_half_applied_migration_can_be_run_again() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let before = schema_snapshot(conn);
    for (index, version) in VERSIONS.iter().enumerate() {
        diesel::delete(
            __diesel_schema_migrations::table
                .filter(__diesel_schema_migrations::version.eq(version)),
        )
        .execute(conn)
        .unwrap();
        assert_ne!(added_by_migration_exists(conn, index), Some(false));
        assert_eq!(db::run_migrations(conn).unwrap(), [*version]);
        assert_eq!(schema_snapshot(conn), before, "after re-running {version}");
    }
}

backend_tests!(
    every_migration_down_then_up_leaves_the_same_schema,
    reverting_with_nothing_applied_is_none,
    the_revert_preview_names_exactly_what_each_revert_drops,
    a_refused_checked_revert_changes_nothing,
    pending_migrations_lists_what_is_missing_oldest_first,
    the_target_key_migration_refuses_targets_held_twice_and_changes_nothing,
    the_target_key_migration_backfills_names_and_holds,
    the_request_revision_numbers_failures_and_completes_pending_releases,
);

/// Revision 2's migration numbers existing failures per apply in claim order, gives the
/// apply the last number, completes a release still pending from revision 1 with that number (so it
/// keeps releasing the failures it released before), and clears leases left on pending operations.
fn the_request_revision_numbers_failures_and_completes_pending_releases(db: &TestDb) {
    use applyops::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
    let conn = &mut db.conn();
    for version in [
        "20261207000003",
        "20261207000002",
        "20261207000001",
        "20261205000003",
        "20261205000002",
    ] {
        assert_eq!(
            db::revert_last_migration(conn).unwrap().as_deref(),
            Some(version)
        );
    }
    for statement in [
        "INSERT INTO applies (id, apply_identifier, database_name, environment, deployment, state, \
         created_at, updated_at) VALUES (1, 'a1', 'shop', 'production', 'east', 'running', \
         '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "INSERT INTO apply_operations (id, apply_id, deployment, state, created_at, updated_at) \
         VALUES (1, 1, 'east', 'reverted', '2026-01-01 00:00:02', '2026-01-01 00:00:00'), \
         (2, 1, 'west', 'failed', '2026-01-01 00:00:01', '2026-01-01 00:00:00'), \
         (3, 1, 'north', 'pending', '2026-01-01 00:00:03', '2026-01-01 00:00:00')",
        "UPDATE apply_operations SET lease_owner = 'w', lease_token = \
         '0123456789abcdef0123456789abcdef', lease_expires_at = '2030-01-01 00:00:00' \
         WHERE id IN (1, 3)",
        "INSERT INTO apply_control_requests (id, apply_id, kind, status, created_at, updated_at) \
         VALUES (1, 1, 'release', 'pending', '2026-01-01 00:00:04', '2026-01-01 00:00:04'), \
         (2, 1, 'release', 'failed', '2026-01-01 00:00:04', '2026-01-01 00:00:04')",
    ] {
        diesel::sql_query(statement).execute(conn).unwrap();
    }
    assert_eq!(
        db::run_migrations(conn).unwrap(),
        [
            "20261205000002",
            "20261205000003",
            "20261207000001",
            "20261207000002",
            "20261207000003"
        ]
    );
    let seqs: Vec<(i64, Option<i64>)> = ops::table
        .order(ops::id)
        .select((ops::id, ops::failure_seq))
        .load(conn)
        .unwrap();
    assert_eq!(seqs, [(1, Some(2)), (2, Some(1)), (3, None)], "claim order");
    let tokens: Vec<String> = ops::table
        .order(ops::id)
        .select(ops::lease_token)
        .load(conn)
        .unwrap();
    assert_eq!(
        tokens,
        ["0123456789abcdef0123456789abcdef", "", ""],
        "a pending operation holds no lease; a settled one keeps its holder's"
    );
    let last: i64 = applies::table
        .find(1_i64)
        .select(applies::failure_seq)
        .first(conn)
        .unwrap();
    assert_eq!(last, 2);
    let releases: Vec<(i64, String, Option<i64>, bool)> = reqs::table
        .order(reqs::id)
        .select((
            reqs::id,
            reqs::status,
            reqs::releases_through,
            reqs::completed_at.is_not_null(),
        ))
        .load(conn)
        .unwrap();
    assert_eq!(
        releases,
        [
            (1, "completed".to_owned(), Some(2), true),
            (2, "failed".to_owned(), None, false)
        ]
    );
}

/// Reverts the target-key migration (and the one after it) and writes rows as an older version could: two
/// applies of `shop`/`production`, each with an operation for `east` in state `state2` for the
/// second, and a settled `west` in the first.
fn before_the_target_key(conn: &mut applyops::DbConnection, second_state: &str) {
    for version in AFTER_THE_TARGET_KEY.iter().rev() {
        assert_eq!(
            db::revert_last_migration(conn).unwrap().as_deref(),
            Some(*version)
        );
    }
    for statement in [
        "INSERT INTO applies (id, apply_identifier, database_name, environment, deployment, state, \
         created_at, updated_at) VALUES (1, 'a1', 'shop', 'production', 'east', 'running', \
         '2026-01-01 00:00:00', '2026-01-01 00:00:00'), (2, 'a2', 'shop', 'production', 'east', \
         'running', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        "INSERT INTO apply_operations (id, apply_id, deployment, state, created_at, updated_at) \
         VALUES (1, 1, 'east', 'running', '2026-01-01 00:00:00', '2026-01-01 00:00:00'), \
         (2, 1, 'west', 'completed', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    ] {
        diesel::sql_query(statement).execute(conn).unwrap();
    }
    diesel::sql_query(format!(
        "INSERT INTO apply_operations (id, apply_id, deployment, state, created_at, updated_at) \
         VALUES (3, 2, 'east', '{second_state}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
    ))
    .execute(conn)
    .unwrap();
}

/// The target-key migration and those after it, oldest first.
const AFTER_THE_TARGET_KEY: [&str; 7] = [
    "20261125000006",
    "20261205000001",
    "20261205000002",
    "20261205000003",
    "20261207000001",
    "20261207000002",
    "20261207000003",
];

fn the_target_key_migration_refuses_targets_held_twice_and_changes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    before_the_target_key(conn, "pending");
    let before = schema_snapshot(conn);
    let err = db::run_migrations(conn).unwrap_err().to_string();
    match db.kind() {
        // The migration lists the clashes before it builds the key.
        Kind::Mysql => assert!(
            err.contains("targets held twice: shop/production/east by operations 1,3"),
            "{err}"
        ),
        // SQLite cannot raise a message of its own from plain SQL: the key's build fails on the
        // clash, naming the key's columns.
        Kind::Sqlite => assert!(
            err.contains("UNIQUE constraint failed: apply_operations.database_name"),
            "{err}"
        ),
        Kind::Postgres => assert!(
            err.contains("targets held twice: shop/production/east by operations 1,3"),
            "{err}"
        ),
    }
    assert_eq!(db::pending_migrations(conn).unwrap(), AFTER_THE_TARGET_KEY);
    if db.kind() == Kind::Sqlite {
        assert_eq!(schema_snapshot(conn), before, "rolled back as a whole");
    }
    // Once an operator settles one of them, the migration runs.
    diesel::sql_query("UPDATE apply_operations SET state = 'cancelled' WHERE id = 3")
        .execute(conn)
        .unwrap();
    assert_eq!(db::run_migrations(conn).unwrap(), AFTER_THE_TARGET_KEY);
}

fn the_target_key_migration_backfills_names_and_holds(db: &TestDb) {
    let conn = &mut db.conn();
    before_the_target_key(conn, "cancelled");
    assert_eq!(db::run_migrations(conn).unwrap(), AFTER_THE_TARGET_KEY);
    let rows: Vec<(i64, String, String, Option<bool>)> = applyops::schema::apply_operations::table
        .order(applyops::schema::apply_operations::id)
        .select((
            applyops::schema::apply_operations::id,
            applyops::schema::apply_operations::database_name,
            applyops::schema::apply_operations::environment,
            applyops::schema::apply_operations::holds_target,
        ))
        .load(conn)
        .unwrap();
    assert_eq!(
        rows,
        [
            (1, "shop".into(), "production".into(), Some(true)),
            (2, "shop".into(), "production".into(), None),
            (3, "shop".into(), "production".into(), None),
        ]
    );
}

fn every_migration_down_then_up_leaves_the_same_schema(db: &TestDb) {
    let conn = &mut db.conn();
    let baseline = schema_snapshot(conn);
    for depth in 1..=VERSIONS.len() {
        for step in 0..depth {
            let index = VERSIONS.len() - 1 - step;
            let expected = VERSIONS[index];
            assert_eq!(
                db::revert_last_migration(conn).unwrap().as_deref(),
                Some(expected)
            );
            assert_ne!(
                added_by_migration_exists(conn, index),
                Some(true),
                "down.sql of {expected} removes {:?}",
                ADDED_BY_MIGRATION[index]
            );
        }
        assert_eq!(db::run_migrations(conn).unwrap().len(), depth);
        assert_eq!(
            schema_snapshot(conn),
            baseline,
            "after reverting {depth} migration(s) and re-running"
        );
    }
}

fn reverting_with_nothing_applied_is_none(db: &TestDb) {
    let conn = &mut db.conn();
    for _ in VERSIONS {
        assert!(db::revert_last_migration(conn).unwrap().is_some());
    }
    assert_eq!(tables(conn), Vec::<String>::new());
    assert_eq!(db::revert_last_migration(conn).unwrap(), None);
}

fn the_revert_preview_names_exactly_what_each_revert_drops(db: &TestDb) {
    // Every migration, newest first: the tables and columns that disappear are exactly those the
    // preview (taken under the migration lock) lists, with the rows they held.
    let conn = &mut db.conn();
    fill_every_table(conn);
    let mut reverts = 0;
    loop {
        let before = column_names(conn);
        let mut seen = None;
        let reverted = db::revert_last_migration_checked(conn, |preview| {
            seen = Some(preview.clone());
            Ok::<(), StoreError>(())
        })
        .unwrap();
        let Some(version) = reverted else {
            assert!(seen.is_none(), "no preview when nothing is applied");
            break;
        };
        reverts += 1;
        let preview = seen.expect("the check saw a preview");
        assert_eq!(preview.version, version);
        let after = column_names(conn);
        let mut expected_tables = BTreeSet::new();
        let mut expected_columns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for drop in &preview.drops {
            assert_eq!(
                drop.rows, 1,
                "{version}: every table holds one row ({})",
                drop.table
            );
            match &drop.dropped {
                Dropped::Table => {
                    expected_tables.insert(drop.table.clone());
                }
                Dropped::Columns(columns) => {
                    expected_columns.insert(drop.table.clone(), columns.iter().cloned().collect());
                }
            }
        }
        let gone_tables: BTreeSet<String> = before
            .keys()
            .filter(|t| !after.contains_key(*t))
            .cloned()
            .collect();
        assert_eq!(gone_tables, expected_tables, "{version}: dropped tables");
        for (table, columns) in &after {
            let gone: BTreeSet<String> = before[table].difference(columns).cloned().collect();
            let expected = expected_columns.remove(table).unwrap_or_default();
            assert_eq!(gone, expected, "{version}: dropped columns of {table}");
        }
        assert!(
            expected_columns.is_empty(),
            "{version}: {expected_columns:?}"
        );
    }
    assert_eq!(
        db::pending_migrations(conn).unwrap().len(),
        reverts,
        "every migration reverted"
    );
}

fn a_refused_checked_revert_changes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    fill_every_table(conn);
    let before = schema_snapshot(conn);
    let newest = db::preview_revert(conn).unwrap().expect("migrated");
    let refused = db::revert_last_migration_checked(conn, |preview| {
        assert_eq!(*preview, newest);
        Err(StoreError::InvalidInput {
            field: "revert",
            reason: "refused by the test".into(),
        })
    });
    assert!(
        matches!(
            refused,
            Err(StoreError::InvalidInput {
                field: "revert",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(schema_snapshot(conn), before);
    assert!(db::pending_migrations(conn).unwrap().is_empty());
}

fn pending_migrations_lists_what_is_missing_oldest_first(db: &TestDb) {
    let conn = &mut db.conn();
    assert_eq!(db::pending_migrations(conn).unwrap(), Vec::<String>::new());
    db::ensure_migrated(conn).unwrap();
    let newest = db::revert_last_migration(conn).unwrap().unwrap();
    let second = db::revert_last_migration(conn).unwrap().unwrap();
    assert_eq!(
        db::pending_migrations(conn).unwrap(),
        [second.clone(), newest.clone()]
    );
    match db::ensure_migrated(conn) {
        Err(StoreError::MigrationsPending { pending }) => assert_eq!(pending, [second, newest]),
        other => panic!("expected MigrationsPending, got {other:?}"),
    }
    while db::revert_last_migration(conn).unwrap().is_some() {}
    let pending = db::pending_migrations(conn).unwrap();
    assert_eq!(db::run_migrations(conn).unwrap(), pending);
}

/// A row in each of the four tables, so every table a revert drops holds data.
fn fill_every_table(conn: &mut applyops::DbConnection) {
    use applyops::models::{NewApplyOperation, NewTask};
    use applyops::state::ControlRequestKind;
    use applyops::store::{apply_operations, tasks};
    let apply_id = crate::fixtures::apply(conn, false);
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
}

/// The column names of every table.
fn column_names(conn: &mut applyops::DbConnection) -> BTreeMap<String, BTreeSet<String>> {
    tables(conn)
        .into_iter()
        .map(|table| {
            let names = crate::harness::columns(conn, &table)
                .into_iter()
                .map(|c| c.name)
                .collect();
            (table, names)
        })
        .collect()
}

/// On a database that was never migrated every migration is pending, and asking creates nothing (not
/// even Diesel's bookkeeping table).
fn pending_on_a_fresh_database(kind: Kind) {
    let db = TestDb::unmigrated(kind);
    let conn = &mut db.conn();
    let pending = db::pending_migrations(conn).unwrap();
    assert!(!pending.is_empty());
    assert!(!table_exists(conn, "__diesel_schema_migrations"));
    assert_eq!(db::preview_revert(conn).unwrap(), None);
    assert!(!table_exists(conn, "__diesel_schema_migrations"));
    let message = db::ensure_migrated(conn).unwrap_err().to_string();
    assert!(message.starts_with("migrations are missing"), "{message}");
    assert!(message.contains("`applyops migrate`"), "{message}");
    assert_eq!(
        db::run_migrations(conn).unwrap(),
        pending,
        "pending lists every migration"
    );
}

#[test]
fn mysql_every_migration_is_pending_on_a_fresh_database() {
    pending_on_a_fresh_database(Kind::Mysql);
}

#[test]
fn sqlite_every_migration_is_pending_on_a_fresh_database() {
    pending_on_a_fresh_database(Kind::Sqlite);
}

#[derive(diesel::QueryableByName)]
struct LockResult {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    acquired: Option<i64>,
}

/// A runner that cannot get the migration lock in time fails with a typed error and changes nothing;
/// once the holder lets go, the same runner succeeds.
#[test]
fn mysql_a_runner_waiting_too_long_for_the_lock_times_out() {
    let db = TestDb::unmigrated(Kind::Mysql);
    let mut holder = db.conn();
    let held: LockResult = diesel::sql_query(
        "SELECT GET_LOCK(CONCAT('applyops_migrations.', SHA1(DATABASE())), 0) AS acquired",
    )
    .get_result(&mut holder)
    .unwrap();
    assert_eq!(held.acquired, Some(1));

    let runner = &mut db.conn();
    let options = db::MigrationOptions {
        lock_wait: std::time::Duration::from_secs(1),
    };
    match db::run_migrations_with(runner, &options) {
        Err(applyops::StoreError::MigrationLockTimeout { waited_secs }) => {
            assert_eq!(waited_secs, 1)
        }
        other => panic!("expected MigrationLockTimeout, got {other:?}"),
    }
    assert!(tables(runner).is_empty(), "nothing ran without the lock");

    drop(holder); // the lock goes with its session
    assert_eq!(db::run_migrations_with(runner, &options).unwrap(), VERSIONS);
}

/// Runners on different databases of one server do not wait for each other.
#[test]
fn mysql_the_migration_lock_is_scoped_to_the_database() {
    let other = TestDb::unmigrated(Kind::Mysql);
    let mut holder = other.conn();
    diesel::sql_query(
        "SELECT GET_LOCK(CONCAT('applyops_migrations.', SHA1(DATABASE())), 0) AS acquired",
    )
    .get_result::<LockResult>(&mut holder)
    .unwrap();
    let db = TestDb::unmigrated(Kind::Mysql);
    let options = db::MigrationOptions {
        lock_wait: std::time::Duration::from_secs(1),
    };
    assert_eq!(
        db::run_migrations_with(&mut db.conn(), &options).unwrap(),
        VERSIONS
    );
}

/// GET_LOCK answers NULL, not 0, when the waiting session is interrupted (`KILL QUERY`): the runner
/// says the lock could not be taken, not that another runner held it past the wait.
#[test]
fn mysql_an_interrupted_wait_for_the_migration_lock_is_not_called_a_timeout() {
    use diesel::connection::SimpleConnection;
    let db = TestDb::unmigrated(Kind::Mysql);
    let mut holder = db.conn();
    let held: LockResult = diesel::sql_query(
        "SELECT GET_LOCK(CONCAT('applyops_migrations.', SHA1(DATABASE())), 0) AS acquired",
    )
    .get_result(&mut holder)
    .unwrap();
    assert_eq!(held.acquired, Some(1));
    let url = db.url().to_owned();
    let runner = std::thread::spawn(move || {
        let conn = &mut db::establish(&url).unwrap();
        let options = db::MigrationOptions {
            lock_wait: std::time::Duration::from_secs(30),
        };
        db::run_migrations_with(conn, &options)
    });
    let database = db.url().rsplit('/').next().unwrap().to_owned();
    let mut admin = crate::harness::admin_connection();
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting = diesel::sql_query(
            "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
             WHERE DB = ? AND INFO LIKE 'SELECT GET_LOCK(%'",
        )
        .bind::<diesel::sql_types::Text, _>(&database)
        .load::<Waiting>(&mut admin)
        .unwrap();
        if !waiting.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(waiting.len(), 1, "the runner waits for the lock");
    admin
        .batch_execute(&format!("KILL QUERY {}", waiting[0].id))
        .unwrap();
    match runner.join().unwrap() {
        Err(applyops::StoreError::MigrationLockFailed) => {}
        other => panic!("expected MigrationLockFailed, got {other:?}"),
    }
    assert!(tables(&mut db.conn()).is_empty(), "nothing was migrated");
}

/// On a single server (not a Galera node) nothing of the cluster mode is on: the session does not
/// wait for causal reads, the connection says it is no cluster node, and migrations serialise with
/// `GET_LOCK`, creating no lock table (the cluster's lock row is `tests/cluster.rs`'s business).
#[test]
fn mysql_a_single_server_is_not_run_as_a_cluster_node() {
    #[derive(QueryableByName)]
    struct Value {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        value: i64,
    }
    let db = TestDb::unmigrated(Kind::Mysql);
    let conn = &mut db.conn();
    let db::DbConnection::Mysql(inner) = &*conn else {
        panic!("a MySQL connection");
    };
    assert!(!inner.is_cluster_node());
    let wait: Value = diesel::sql_query("SELECT @@SESSION.wsrep_sync_wait AS value")
        .get_result(conn)
        .unwrap();
    assert_eq!(wait.value, 0);
    db::run_migrations(conn).unwrap();
    assert!(!table_exists(conn, "__applyops_migration_lock"));
    assert!(table_exists(conn, "apply_operations"));
}
