//! Issue 7's defects, each pinned on every backend where it can happen: exact text keys, the minted-token
//! fence, expiries and stamps read under the lock, idempotent requests inside a caller's transaction,
//! the server's message language, and caller input that used to panic.

use std::time::Duration;

use applyops::db::{self, ConnectOptions, DbConnection, PoolConfig};
use applyops::models::{ApplyId, ApplyOperationId, NewApply, NewApplyOperation};
use applyops::schema::{applies as applies_table, apply_operations as ops};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::leases::OperationLease;
use applyops::store::{applies, apply_operations, control_requests, leases};
use applyops::StoreError;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::{claim, force_state, live_lease, rollout};
use crate::harness::{Kind, TestDb};

/// A lease for operation `id` that no claim minted.
fn forged_lease(id: ApplyOperationId, owner: &str, token: &str) -> OperationLease {
    let at = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
    OperationLease {
        operation_id: id,
        apply_id: ApplyId(1),
        owner: owner.into(),
        token: token.to_owned().into(),
        acquired_at: at,
        expires_at: at,
        ttl: Duration::from_secs(60),
    }
}

fn raw_state_and_token(
    conn: &mut DbConnection,
    id: ApplyOperationId,
) -> (ApplyState, String, String) {
    ops::table
        .find(id)
        .select((ops::state, ops::lease_owner, ops::lease_token))
        .first(conn)
        .unwrap()
}

backend_tests!(
    a_trailing_space_lookup_finds_nothing,
    keys_that_differ_by_a_trailing_space_are_distinct_keys_in_the_database,
    inserts_and_lookups_agree_on_a_trailing_space,
    a_blank_or_whitespace_lease_writes_nothing,
    a_blank_claim_owner_is_rejected,
    a_heartbeat_that_waited_for_the_lock_still_renews_into_the_future,
);

fn a_trailing_space_lookup_finds_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    let apply_id =
        applies::insert(conn, &NewApply::new("rollout-1", "db", "prod", "main")).unwrap();
    apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "east")).unwrap();
    assert!(
        apply_operations::get_by_apply_and_deployment(conn, apply_id, "east")
            .unwrap()
            .is_some()
    );
    assert!(applies::get_by_identifier(conn, "rollout-1")
        .unwrap()
        .is_some());
    for lookalike in ["east ", "east  ", "East", ""] {
        assert_eq!(
            apply_operations::get_by_apply_and_deployment(conn, apply_id, lookalike).unwrap(),
            None,
            "{lookalike:?}"
        );
    }
    assert_eq!(
        applies::get_by_identifier(conn, "rollout-1 ").unwrap(),
        None
    );
    // The root, below the store's checks: the database itself compares stored text exactly.
    let padded: i64 = ops::table
        .filter(ops::deployment.eq("east "))
        .count()
        .get_result(conn)
        .unwrap();
    assert_eq!(padded, 0);
    let padded: i64 = applies_table::table
        .filter(applies_table::apply_identifier.eq("rollout-1 "))
        .count()
        .get_result(conn)
        .unwrap();
    assert_eq!(padded, 0);
}

fn keys_that_differ_by_a_trailing_space_are_distinct_keys_in_the_database(db: &TestDb) {
    let conn = &mut db.conn();
    // Written below the store (which rejects the trailing space), as a foreign tool could.
    let now = chrono::Utc::now().naive_utc();
    for deployment in ["east", "east "] {
        diesel::insert_into(ops::table)
            .values((
                ops::apply_id.eq(9),
                ops::deployment.eq(deployment),
                ops::created_at.eq(datetime(now)),
                ops::updated_at.eq(datetime(now)),
            ))
            .execute(conn)
            .expect("the unique key treats them as two keys on every backend");
    }
    let found = apply_operations::get_by_apply_and_deployment(conn, ApplyId(9), "east")
        .unwrap()
        .unwrap();
    assert_eq!(found.deployment, "east");
}

fn inserts_and_lookups_agree_on_a_trailing_space(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let err =
        apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east ")).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "deployment",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        apply_operations::get_by_apply_and_deployment(conn, ApplyId(1), "east ").unwrap(),
        None
    );
}

fn a_blank_or_whitespace_lease_writes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let id = ids[0];
    let before = raw_state_and_token(conn, id);
    assert_eq!(
        before,
        (ApplyState::Pending, String::new(), String::new()),
        "nobody holds it"
    );
    for (owner, token) in [
        (" ", " "),
        ("", ""),
        ("w", " "),
        (" ", "0123456789abcdef0123456789abcdef"),
        ("w", "0123456789abcdef0123456789abcde "),
    ] {
        let lease = forged_lease(id, owner, token);
        let err = leases::mark_started(conn, &lease).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidInput { .. }),
            "{owner:?}/{token:?}: {err}"
        );
        let mut renewed = lease.clone();
        assert!(leases::heartbeat(conn, &mut renewed).is_err());
        assert!(leases::release(conn, &lease).is_err());
        assert_eq!(
            raw_state_and_token(conn, id),
            before,
            "{owner:?}/{token:?} wrote nothing"
        );
    }
    // A well-formed token that is not on the row is a lost lease, and writes nothing either.
    let lease = forged_lease(id, "w", "0123456789abcdef0123456789abcdef");
    assert!(matches!(
        leases::mark_started(conn, &lease),
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(raw_state_and_token(conn, id), before);
    // And below the store's checks the database does not match a blank token to the empty one.
    let blank: i64 = ops::table
        .filter(ops::lease_token.eq(" "))
        .count()
        .get_result(conn)
        .unwrap();
    assert_eq!(blank, 0);
}

fn a_blank_claim_owner_is_rejected(db: &TestDb) {
    let conn = &mut db.conn();
    rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let options = applyops::store::claims::ClaimOptions::new("  ", Duration::from_secs(5));
    assert!(matches!(
        applyops::store::claims::claim_next(conn, &options),
        Err(StoreError::InvalidInput { field: "owner", .. })
    ));
}

fn a_heartbeat_that_waited_for_the_lock_still_renews_into_the_future(db: &TestDb) {
    let conn = &mut db.conn();
    rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let options = applyops::store::claims::ClaimOptions::new("w", Duration::from_millis(800));
    let mut claimed = applyops::store::claims::claim_next(conn, &options)
        .unwrap()
        .unwrap();
    let id = claimed.operation.id;
    // Another session holds the row (MySQL, PostgreSQL) or the database (SQLite) for longer than
    // the TTL.
    let mut holder = db.conn();
    let (tx, rx) = std::sync::mpsc::channel();
    let hold = std::thread::spawn(move || {
        match &mut holder {
            DbConnection::Mysql(inner) => {
                inner.batch_execute("BEGIN").unwrap();
                ops::table
                    .find(id)
                    .select(ops::id)
                    .for_update()
                    .first::<i64>(inner)
                    .unwrap();
            }
            DbConnection::Pg(inner) => {
                inner.batch_execute("BEGIN").unwrap();
                ops::table
                    .find(id)
                    .select(ops::id)
                    .for_update()
                    .first::<i64>(inner)
                    .unwrap();
            }
            DbConnection::Sqlite(inner) => inner.batch_execute("BEGIN IMMEDIATE").unwrap(),
        }
        tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        holder.batch_execute("COMMIT").unwrap();
    });
    rx.recv().unwrap();
    let expires_at = leases::heartbeat(conn, &mut claimed.lease).unwrap();
    hold.join().unwrap();
    let (stored, acquired): (Option<chrono::NaiveDateTime>, Option<chrono::NaiveDateTime>) =
        ops::table
            .find(id)
            .select((ops::lease_expires_at, ops::lease_acquired_at))
            .first(conn)
            .unwrap();
    assert_eq!(
        stored,
        Some(expires_at),
        "the returned expiry is the stored one"
    );
    // The expiry counts from after the wait: at least the 1.5 s wait plus most of the TTL past the
    // claim (the old code computed it before waiting and got about 0.8 s).
    let past_claim = expires_at - acquired.unwrap();
    assert!(
        past_claim >= chrono::Duration::milliseconds(2_000),
        "expiry only {past_claim} after the claim"
    );
}

/// Inside a caller's REPEATABLE READ transaction, a request whose insert collides with a pending one
/// committed after the transaction's snapshot still returns that one (its read is a current read).
/// MySQL only: a SQLite transaction that has read cannot write after another connection committed.
#[test]
fn mysql_a_request_inside_a_callers_transaction_finds_the_pending_one_committed_meanwhile() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
    // A holder drives the first operation, so the stop stays pending until it acts.
    force_state(conn, ids[0], ApplyState::Running);
    live_lease(conn, ids[0]);
    let other = &mut db.conn();
    let theirs = conn
        .transaction(|conn| {
            // The transaction's snapshot starts here (REPEATABLE READ on MySQL)...
            control_requests::list_pending(conn, apply_id)?;
            // ...and another session commits a stop after it.
            let theirs = crate::fixtures::ask(
                other,
                apply_id,
                None,
                ControlRequestKind::Stop,
                Some("theirs"),
            )?;
            let ours =
                crate::fixtures::ask(conn, apply_id, None, ControlRequestKind::Stop, Some("ours"))?;
            assert_eq!(
                ours.id, theirs.id,
                "the pending one is returned, not a second"
            );
            Ok::<_, StoreError>(theirs)
        })
        .unwrap();
    let pending = control_requests::list_pending(conn, apply_id).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, theirs.id);
}

/// On SQLite an insert that waited for the write lock used to carry the `created_at` of the moment it
/// was called, earlier than a sibling committed meanwhile: two rolling operations could then run at
/// once. The stamp is now read under the lock.
#[test]
fn sqlite_an_insert_that_waited_for_the_write_lock_is_stamped_after_the_writer_it_waited_for() {
    let db = TestDb::new(Kind::Sqlite);
    let conn = &mut db.conn();
    let apply_id = crate::fixtures::apply(conn, false);
    let mut holder = db.conn();
    let url = db.url().to_owned();
    let (first, waiting) = db::write_transaction(&mut holder, |holder| {
        // The write lock is held from here to the COMMIT: the other insert waits for it.
        let waiting = std::thread::spawn(move || {
            let conn = &mut db::establish(&url).unwrap();
            apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "second")).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        let first = apply_operations::insert(holder, &NewApplyOperation::new(apply_id, "first"))?;
        Ok::<_, StoreError>((first, waiting))
    })
    .unwrap();
    let second = waiting.join().unwrap();
    let first = apply_operations::get(conn, first).unwrap().unwrap();
    let second = apply_operations::get(conn, second).unwrap().unwrap();
    assert!(
        second.created_at > first.created_at,
        "the insert that waited comes later: {} vs {}",
        second.created_at,
        first.created_at
    );
    // So the claim order is the commit order: the first is claimed, the second waits for it.
    let claimed = claim(conn, "w").unwrap();
    assert_eq!(claimed.operation.id, first.id);
    assert_eq!(claimed.operation.state, ApplyState::Running);
    assert!(claim(conn, "w").is_none(), "the rolling successor waits");
}

/// The store recognises duplicate keys by the server's message, so the session's message language
/// is pinned: a server whose default is German still yields `ApplyOperationExists`.
#[test]
fn mysql_a_duplicate_is_recognised_whatever_the_servers_message_language() {
    struct RestoreLanguage(String);
    impl Drop for RestoreLanguage {
        fn drop(&mut self) {
            let _ = crate::harness::admin_connection()
                .batch_execute(&format!("SET GLOBAL lc_messages = '{}'", self.0));
        }
    }
    #[derive(QueryableByName)]
    struct Language {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lc: String,
    }
    let db = TestDb::new(Kind::Mysql);
    let mut admin = crate::harness::admin_connection();
    let previous: Language = diesel::sql_query("SELECT CAST(@@GLOBAL.lc_messages AS CHAR) AS lc")
        .get_result(&mut admin)
        .unwrap();
    let _restore = RestoreLanguage(previous.lc);
    admin
        .batch_execute("SET GLOBAL lc_messages = 'de_DE'")
        .unwrap();
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east")).unwrap();
    let err =
        apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east")).unwrap_err();
    assert!(
        matches!(err, StoreError::ApplyOperationExists { .. }),
        "{err}"
    );
}

/// A caller's own SQL can change the session's message language after connecting: every duplicate
/// the store names (an apply's identifier, an operation's deployment, a busy target) is still
/// recognised, the same way in each (the key's lookup confirms what the message no longer says).
#[test]
fn mysql_duplicates_are_recognised_after_the_session_changed_its_message_language() {
    use applyops::models::{NewRollout, NewRolloutOperation};
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let DbConnection::Mysql(inner) = conn else {
        unreachable!("a MySQL test database")
    };
    inner
        .batch_execute("SET SESSION lc_messages = 'de_DE'")
        .unwrap();
    let new = NewApply::new("dup", "shop", "production", "east");
    applies::insert(conn, &new).unwrap();
    // The server does answer in German now: the raw duplicate names no key the store can read.
    let raw = diesel::insert_into(applies_table::table)
        .values((
            applies_table::apply_identifier.eq("dup"),
            applies_table::database_name.eq("shop"),
            applies_table::environment.eq("production"),
            applies_table::deployment.eq("east"),
            applies_table::state.eq(ApplyState::Pending),
            applies_table::created_at.eq(datetime(chrono::Utc::now().naive_utc())),
            applies_table::updated_at.eq(datetime(chrono::Utc::now().naive_utc())),
        ))
        .execute(conn)
        .unwrap_err()
        .to_string();
    assert!(!raw.contains("Duplicate entry"), "{raw}");
    let err = applies::insert(conn, &new).unwrap_err();
    assert!(matches!(err, StoreError::ApplyExists { .. }), "{err}");
    let apply_id = applies::get_by_identifier(conn, "dup").unwrap().unwrap().id;
    apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "east")).unwrap();
    let err =
        apply_operations::insert(conn, &NewApplyOperation::new(apply_id, "east")).unwrap_err();
    assert!(
        matches!(err, StoreError::ApplyOperationExists { .. }),
        "{err}"
    );
    let busy = NewRollout::new("other", "shop", "production", "tester")
        .operation(NewRolloutOperation::new("east"));
    let err = applies::create_rollout(conn, &busy).unwrap_err();
    assert!(
        matches!(err, StoreError::TargetBusy { apply_id: holder, .. } if holder == apply_id),
        "{err}"
    );
}

/// Migrations name their lock after the current database: a URL without one is said to be the
/// problem, instead of "timed out waiting for another runner".
#[test]
fn mysql_migrating_a_url_without_a_database_names_the_problem() {
    let conn = &mut db::establish(crate::harness::mysql_server()).unwrap();
    let err = db::run_migrations(conn).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "database_url",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("names no database"), "{err}");
}

#[test]
fn pool_settings_that_would_panic_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("p.db").display().to_string();
    let cases: [(&str, PoolConfig); 7] = [
        (
            "connection_timeout",
            PoolConfig {
                connection_timeout: Duration::ZERO,
                ..PoolConfig::default()
            },
        ),
        (
            "connection_timeout",
            PoolConfig {
                connection_timeout: Duration::MAX,
                ..PoolConfig::default()
            },
        ),
        (
            "idle_timeout",
            PoolConfig {
                idle_timeout: Some(Duration::ZERO),
                ..PoolConfig::default()
            },
        ),
        (
            "idle_timeout",
            PoolConfig {
                idle_timeout: Some(Duration::MAX),
                ..PoolConfig::default()
            },
        ),
        (
            "max_lifetime",
            PoolConfig {
                max_lifetime: Some(Duration::ZERO),
                ..PoolConfig::default()
            },
        ),
        (
            "max_lifetime",
            PoolConfig {
                max_lifetime: Some(Duration::MAX),
                ..PoolConfig::default()
            },
        ),
        (
            "sqlite_busy_timeout",
            PoolConfig {
                sqlite_busy_timeout: Duration::MAX,
                ..PoolConfig::default()
            },
        ),
    ];
    for (field, config) in cases {
        match db::pool(&url, config) {
            Err(StoreError::InvalidInput {
                field: rejected, ..
            }) => assert_eq!(rejected, field),
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    let Err(err) = db::establish_with(
        &url,
        &ConnectOptions {
            sqlite_busy_timeout: Duration::MAX,
            ..ConnectOptions::default()
        },
    ) else {
        panic!("a busy timeout over the limit was accepted")
    };
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "sqlite_busy_timeout",
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.path().join("p.db").exists(), "nothing was opened");
}

#[test]
fn every_in_memory_sqlite_spelling_is_refused_by_the_pool() {
    for url in [
        ":memory:",
        "sqlite://:memory:",
        "file::memory:",
        "file::memory:?cache=shared",
        "file:x?mode=memory",
    ] {
        assert!(
            matches!(
                db::pool(url, PoolConfig::default()),
                Err(StoreError::InvalidInput {
                    field: "database_url",
                    ..
                })
            ),
            "{url}"
        );
    }
}

#[test]
fn mysql_every_text_column_compares_without_padding() {
    let db = TestDb::new(Kind::Mysql);
    let collations = crate::harness::text_collations(&mut db.conn());
    assert!(collations.len() >= 15, "{collations:?}");
    for (table, column, collation) in collations {
        assert!(
            collation == "utf8mb4_nopad_bin" || collation == "utf8mb4_0900_bin",
            "{table}.{column} is {collation}"
        );
    }
}
