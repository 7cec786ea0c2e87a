//! The pool: configuration checks, session settings on pooled connections, and replacing a connection
//! the server dropped.

use std::time::Duration;

use applyops::db::{self, DbConnection, PoolConfig};
use applyops::models::{ApplyId, ApplyOperationId, NewApplyOperation};
use applyops::{Store, StoreError};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::backend_tests;
use crate::harness::{admin_connection, pg_admin_connection, Kind, TestDb};

#[derive(QueryableByName)]
struct TextValue {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(QueryableByName)]
struct IntValue {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

fn text(conn: &mut DbConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .get_result::<TextValue>(conn)
        .unwrap()
        .value
}

fn int(conn: &mut DbConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<IntValue>(conn)
        .unwrap()
        .value
}

fn small(max_size: u32) -> PoolConfig {
    PoolConfig {
        max_size,
        connection_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    }
}

#[test]
fn mysql_pooled_connections_are_strict_and_utc() {
    let db = TestDb::new(Kind::Mysql);
    let pool = db::pool(db.url(), small(2)).unwrap();
    let mut conn = pool.get().unwrap();
    let mode = text(
        &mut conn,
        "SELECT CAST(@@SESSION.sql_mode AS CHAR) AS value",
    );
    assert!(
        mode.contains("STRICT_ALL_TABLES") && mode.contains("NO_ZERO_DATE"),
        "{mode}"
    );
    assert_eq!(
        text(
            &mut conn,
            "SELECT CAST(@@SESSION.time_zone AS CHAR) AS value"
        ),
        "+00:00"
    );
}

#[test]
fn sqlite_pooled_connections_use_wal_and_the_configured_busy_timeout() {
    let db = TestDb::new(Kind::Sqlite);
    let config = PoolConfig {
        sqlite_busy_timeout: Duration::from_millis(1234),
        ..small(2)
    };
    let pool = db::pool(db.url(), config).unwrap();
    let mut conn = pool.get().unwrap();
    assert_eq!(
        text(
            &mut conn,
            "SELECT journal_mode AS value FROM pragma_journal_mode"
        ),
        "wal"
    );
    assert_eq!(
        int(
            &mut conn,
            "SELECT timeout AS value FROM pragma_busy_timeout"
        ),
        1234
    );
}

#[test]
fn mysql_a_connection_the_server_killed_is_replaced_on_checkout() {
    let db = TestDb::new(Kind::Mysql);
    let store = Store::open(db.url(), small(1)).unwrap();
    let killed = int(
        &mut store.connection().unwrap(),
        "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value",
    );
    admin_connection()
        .batch_execute(&format!("KILL CONNECTION {killed}"))
        .unwrap();
    // Used a moment ago, the connection is handed out without a ping; the insert's first statement
    // finds it lost, and the store runs the insert once more on a new connection: the call succeeds.
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    let id = store
        .apply_operations()
        .insert(&NewApplyOperation::new(ApplyId(1), "a"))
        .unwrap();
    assert!(store.apply_operations().get(id).unwrap().is_some());
    let replacement = int(
        &mut store.connection().unwrap(),
        "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value",
    );
    assert_ne!(replacement, killed);
}

/// The connection's `Questions`, this read included.
fn questions(conn: &mut DbConnection) -> i64 {
    int(
        conn,
        "SELECT CAST(VARIABLE_VALUE AS SIGNED) AS value FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'QUESTIONS'",
    )
}

#[test]
fn mysql_a_connection_used_within_ping_after_idle_is_handed_out_without_a_ping() {
    let db = TestDb::new(Kind::Mysql);
    let pool = db::pool(db.url(), small(1)).unwrap();
    let first = questions(&mut pool.get().unwrap());
    let second = questions(&mut pool.get().unwrap());
    assert_eq!(second - first, 1, "the read alone: no ping on checkout");

    let always = PoolConfig {
        ping_after_idle: Duration::ZERO,
        ..small(1)
    };
    let pool = db::pool(db.url(), always).unwrap();
    let first = questions(&mut pool.get().unwrap());
    let second = questions(&mut pool.get().unwrap());
    assert_eq!(
        second - first,
        2,
        "ping_after_idle 0: a ping on every checkout"
    );
}

#[test]
fn mysql_a_connection_idle_past_ping_after_idle_is_pinged_and_replaced_when_dead() {
    let db = TestDb::new(Kind::Mysql);
    let config = PoolConfig {
        ping_after_idle: Duration::from_millis(100),
        ..small(1)
    };
    let pool = db::pool(db.url(), config).unwrap();
    let killed = int(
        &mut pool.get().unwrap(),
        "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value",
    );
    admin_connection()
        .batch_execute(&format!("KILL CONNECTION {killed}"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // No store retry here: the checkout itself must hand out a live connection.
    let replacement = int(
        &mut pool.get().unwrap(),
        "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value",
    );
    assert_ne!(replacement, killed);
}

#[test]
fn mysql_a_read_through_the_store_survives_a_connection_killed_just_after_use() {
    let db = TestDb::new(Kind::Mysql);
    let store = Store::open(db.url(), small(1)).unwrap();
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    let id = store
        .apply_operations()
        .insert(&NewApplyOperation::new(ApplyId(1), "a"))
        .unwrap();
    for round in 0..3 {
        let killed = int(
            &mut store.connection().unwrap(),
            "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value",
        );
        admin_connection()
            .batch_execute(&format!("KILL CONNECTION {killed}"))
            .unwrap();
        let read = store.apply_operations().get(id);
        assert!(
            matches!(read, Ok(Some(_))),
            "round {round}: the read ran once more on a new connection: {read:?}"
        );
    }
}

/// A server restart or a `KILL` storm closes every pooled connection at once, and each was used
/// within `ping_after_idle`, so checkouts hand them out unpinged: a call that finds one dead runs
/// once more on a connection that answers, never on the next dead one.
#[test]
fn mysql_after_every_pooled_connection_was_killed_each_call_gets_a_live_one() {
    let db = TestDb::new(Kind::Mysql);
    let config = PoolConfig {
        min_idle: Some(4),
        ..small(4)
    };
    let store = Store::open(db.url(), config).unwrap();
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    for round in 0..3 {
        // Every connection of the pool in use at once, then back to the pool: all recently used.
        let mut held: Vec<_> = (0..4).map(|_| store.connection().unwrap()).collect();
        let ids: Vec<i64> = held
            .iter_mut()
            .map(|conn| int(conn, "SELECT CAST(CONNECTION_ID() AS SIGNED) AS value"))
            .collect();
        drop(held);
        let admin = &mut admin_connection();
        for id in &ids {
            admin
                .batch_execute(&format!("KILL CONNECTION {id}"))
                .unwrap();
        }
        for call in 0..3 {
            let read = store.applies().get(ApplyId(1));
            assert!(
                matches!(read, Ok(Some(_))),
                "round {round}, call {call}: {read:?}"
            );
        }
    }
}

/// The PostgreSQL backend process serving `conn`.
fn pg_backend_pid(conn: &mut DbConnection) -> i64 {
    int(conn, "SELECT pg_backend_pid()::bigint AS value")
}

/// Terminates the PostgreSQL backend `pid` and waits (up to 5 s) until it is gone.
fn pg_kill(pid: i64) {
    diesel::sql_query("SELECT pg_terminate_backend($1::int, 5000)")
        .bind::<BigInt, _>(pid)
        .execute(&mut pg_admin_connection())
        .unwrap();
}

#[test]
fn postgres_a_connection_the_server_killed_is_replaced_on_checkout() {
    let db = TestDb::new(Kind::Postgres);
    let store = Store::open(db.url(), small(1)).unwrap();
    let killed = pg_backend_pid(&mut store.connection().unwrap());
    pg_kill(killed);
    // As on MySQL: the insert's first statement finds the connection lost, and the store runs the
    // insert once more on a new connection.
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    let id = store
        .apply_operations()
        .insert(&NewApplyOperation::new(ApplyId(1), "a"))
        .unwrap();
    assert!(store.apply_operations().get(id).unwrap().is_some());
    assert_ne!(pg_backend_pid(&mut store.connection().unwrap()), killed);
}

#[test]
fn postgres_a_read_through_the_store_survives_a_connection_killed_just_after_use() {
    let db = TestDb::new(Kind::Postgres);
    let store = Store::open(db.url(), small(1)).unwrap();
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    let id = store
        .apply_operations()
        .insert(&NewApplyOperation::new(ApplyId(1), "a"))
        .unwrap();
    for round in 0..3 {
        pg_kill(pg_backend_pid(&mut store.connection().unwrap()));
        let read = store.apply_operations().get(id);
        assert!(
            matches!(read, Ok(Some(_))),
            "round {round}: the read ran once more on a new connection: {read:?}"
        );
    }
}

#[test]
fn postgres_a_connection_idle_past_ping_after_idle_is_pinged_and_replaced_when_dead() {
    let db = TestDb::new(Kind::Postgres);
    let config = PoolConfig {
        ping_after_idle: Duration::from_millis(100),
        ..small(1)
    };
    let pool = db::pool(db.url(), config).unwrap();
    let killed = pg_backend_pid(&mut pool.get().unwrap());
    pg_kill(killed);
    std::thread::sleep(Duration::from_millis(200));
    // No store retry here: the checkout itself must hand out a live connection.
    assert_ne!(pg_backend_pid(&mut pool.get().unwrap()), killed);
}

#[test]
fn an_in_memory_sqlite_database_cannot_be_pooled() {
    for url in [":memory:", "sqlite://:memory:"] {
        match db::pool(url, PoolConfig::default()) {
            Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, "database_url"),
            other => panic!("expected InvalidInput for {url}, got {:?}", other.err()),
        }
    }
}

#[test]
fn pool_sizes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("x.db").display().to_string();
    let zero = PoolConfig {
        max_size: 0,
        ..PoolConfig::default()
    };
    assert!(matches!(
        db::pool(&url, zero),
        Err(StoreError::InvalidInput {
            field: "max_size",
            ..
        })
    ));
    let idle = PoolConfig {
        max_size: 2,
        min_idle: Some(3),
        ..PoolConfig::default()
    };
    assert!(matches!(
        db::pool(&url, idle),
        Err(StoreError::InvalidInput {
            field: "min_idle",
            ..
        })
    ));
}

#[test]
fn an_unreachable_server_fails_when_the_pool_is_built() {
    let config = PoolConfig {
        connection_timeout: Duration::from_millis(500),
        ..small(1)
    };
    assert!(matches!(
        db::pool("mysql://root@127.0.0.1:1/x", config),
        Err(StoreError::Pool(_))
    ));
}

backend_tests!(
    the_store_facade_round_trips_on_pooled_connections,
    a_write_transaction_rolls_back_everything_on_error,
    write_transactions_nest_as_savepoints,
);

fn the_store_facade_round_trips_on_pooled_connections(db: &TestDb) {
    let store = Store::open(db.url(), small(4)).unwrap();
    assert!(
        store.run_migrations().unwrap().is_empty(),
        "already migrated"
    );
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(3));
    let ops = store.apply_operations();
    let id = ops
        .insert(&NewApplyOperation::new(ApplyId(3), "east"))
        .unwrap();
    ops.mark_started(id).unwrap();
    ops.update_state(id, applyops::ApplyState::WaitingForCutover)
        .unwrap();
    ops.mark_failed(id, "boom").unwrap();
    ops.mark_terminal(id, applyops::ApplyState::Reverted)
        .unwrap();
    ops.mark_completed(id).unwrap();
    assert_eq!(
        ops.get_by_apply_and_deployment(ApplyId(3), "east")
            .unwrap()
            .map(|o| o.id),
        Some(id)
    );
    assert_eq!(ops.list_by_apply(ApplyId(3)).unwrap().len(), 1);
    let task = store
        .tasks()
        .insert(&applyops::models::NewTask {
            apply_id: ApplyId(3),
            apply_operation_id: Some(id),
            table_name: "t".into(),
            ddl: "ALTER TABLE t ADD c INT".into(),
        })
        .unwrap();
    assert_eq!(store.tasks().list_by_operation(id).unwrap()[0].id, task);
    assert_eq!(store.tasks().list_by_apply(ApplyId(3)).unwrap().len(), 1);
    assert!(store.tasks().get(task).unwrap().is_some());
    let apply = store
        .applies()
        .insert(&applyops::models::NewApply::new("a-1", "d", "e", "east"))
        .unwrap();
    assert_eq!(
        store
            .applies()
            .get(apply)
            .unwrap()
            .map(|a| a.apply_identifier),
        Some("a-1".into())
    );
    assert!(store.applies().get_by_identifier("a-1").unwrap().is_some());
    assert_eq!(ops.delete_by_apply(ApplyId(3)).unwrap(), 1);
}

fn a_write_transaction_rolls_back_everything_on_error(db: &TestDb) {
    let store = Store::open(db.url(), small(2)).unwrap();
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(1));
    let result: Result<(), StoreError> = store.write_transaction(|conn| {
        applyops::store::apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "a"))?;
        applyops::store::apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "a"))?;
        Ok(())
    });
    assert!(
        matches!(result, Err(StoreError::ApplyOperationExists { .. })),
        "{result:?}"
    );
    assert!(
        store
            .apply_operations()
            .list_by_apply(ApplyId(1))
            .unwrap()
            .is_empty(),
        "the first insert rolled back"
    );
    store
        .write_transaction(|conn| {
            applyops::store::apply_operations::insert(
                conn,
                &NewApplyOperation::new(ApplyId(1), "a"),
            )?;
            applyops::store::apply_operations::insert(
                conn,
                &NewApplyOperation::new(ApplyId(1), "b"),
            )
        })
        .unwrap();
    assert_eq!(
        store
            .apply_operations()
            .list_by_apply(ApplyId(1))
            .unwrap()
            .len(),
        2
    );
}

fn write_transactions_nest_as_savepoints(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let result: Result<(), StoreError> = db::write_transaction(conn, |conn| {
        applyops::store::apply_operations::insert(
            conn,
            &NewApplyOperation::new(ApplyId(1), "outer"),
        )?;
        // delete_by_apply opens its own write transaction: it must nest, not fail.
        applyops::store::apply_operations::delete_by_apply(conn, ApplyId(2))?;
        Err(StoreError::ApplyOperationNotFound {
            id: ApplyOperationId(0),
        })
    });
    assert!(result.is_err());
    assert!(
        applyops::store::apply_operations::list_by_apply(conn, ApplyId(1))
            .unwrap()
            .is_empty()
    );
}
