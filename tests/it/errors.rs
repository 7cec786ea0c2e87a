//! Database failures surface as StoreError values, never panics.

use applyops::db::DbConnection;
use applyops::models::{ApplyId, ApplyOperationId, NewApplyOperation};
use applyops::store::apply_operations as store;
use applyops::StoreError;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::harness::{admin_connection, Kind, TestDb};

#[derive(QueryableByName)]
struct ConnectionId {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

fn connection_id(conn: &mut DbConnection) -> i64 {
    diesel::sql_query("SELECT CAST(CONNECTION_ID() AS SIGNED) AS id")
        .get_result::<ConnectionId>(conn)
        .unwrap()
        .id
}

#[test]
fn mysql_a_killed_connection_is_a_database_error_not_a_panic() {
    let db = TestDb::new(Kind::Mysql);
    let mut conn = db.conn();
    crate::fixtures::ensure_apply(&mut conn, ApplyId(1));
    let id = store::insert(&mut conn, &NewApplyOperation::new(ApplyId(1), "a")).unwrap();
    let thread_id = connection_id(&mut conn);
    admin_connection()
        .batch_execute(&format!("KILL CONNECTION {thread_id}"))
        .unwrap();

    let read = store::get(&mut conn, id);
    assert!(matches!(read, Err(StoreError::Database(_))), "{read:?}");
    let write = store::mark_started(&mut conn, id);
    assert!(matches!(write, Err(StoreError::Database(_))), "{write:?}");
    assert!(!write.unwrap_err().to_string().is_empty());
}

#[test]
fn sqlite_a_refused_write_is_a_database_error_and_writes_nothing() {
    let db = TestDb::new(Kind::Sqlite);
    let mut conn = db.conn();
    crate::fixtures::ensure_apply(&mut conn, ApplyId(1));
    conn.batch_execute("PRAGMA query_only = ON").unwrap();
    let result = store::insert(&mut conn, &NewApplyOperation::new(ApplyId(1), "a"));
    assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
    assert!(store::list_by_apply(&mut db.conn(), ApplyId(1))
        .unwrap()
        .is_empty());
}

#[test]
fn sqlite_a_missing_table_is_a_database_error() {
    let db = TestDb::unmigrated(Kind::Sqlite);
    let result = store::get(&mut db.conn(), ApplyOperationId(1));
    assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
}

#[test]
fn mysql_a_missing_table_is_a_database_error() {
    let db = TestDb::unmigrated(Kind::Mysql);
    let result = store::list_by_apply(&mut db.conn(), ApplyId(1));
    assert!(matches!(result, Err(StoreError::Database(_))), "{result:?}");
}

#[test]
fn an_unreachable_mysql_server_is_a_connect_error_not_a_sqlite_fallback() {
    // Port 1 on loopback refuses at once. Diesel's derived establish would try SQLite next.
    let result = applyops::db::establish("mysql://root@127.0.0.1:1/nowhere");
    assert!(
        matches!(result, Err(StoreError::Connect(_))),
        "{:?}",
        result.map(|c| c.backend())
    );
}

#[test]
fn an_unsupported_url_is_rejected_before_connecting() {
    for url in ["mongodb://u:secret@127.0.0.1:27017/x", "redis://127.0.0.1"] {
        match applyops::db::establish(url) {
            Err(err @ StoreError::UnsupportedDatabaseUrl { .. }) => {
                assert!(!err.to_string().contains("secret"))
            }
            other => panic!(
                "expected UnsupportedDatabaseUrl for {url}, got {:?}",
                other.err()
            ),
        }
    }
}
