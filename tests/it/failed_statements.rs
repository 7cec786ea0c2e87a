//! A MySQL statement whose result set failed midway is answered when it runs again on the same
//! connection.
//!
//! libmariadb leaves a prepared statement whose buffered read failed after its column count (a
//! lock wait timeout or deadlock met while scanning rows, or on a Galera cluster a brute-force
//! abort) in a state where its next execution first reads "the rest" of the old result from the
//! socket, where nothing will ever come: the call blocks for good. Diesel keeps such a statement
//! in its statement cache. `MysqlConn` therefore drops the connection's prepared statements after
//! a failed read, before its next statement.

use std::sync::mpsc;
use std::time::Duration;

use applyops::db::DbConnection;
use applyops::models::ApplyId;
use applyops::schema::applies as a;
use diesel::connection::{Connection, SimpleConnection};
use diesel::prelude::*;

use crate::harness::{Kind, TestDb};

/// The statement under test: a scan that locks what it reads, so it sends its column count before
/// it meets a locked row.
fn scan_for_update(conn: &mut applyops::db::MysqlConn) -> QueryResult<Vec<(ApplyId, String)>> {
    a::table
        .select((a::id, a::apply_identifier))
        .filter(a::database_name.ne(""))
        .for_update()
        .load(conn)
}

#[test]
fn mysql_a_statement_whose_read_failed_midway_is_answered_when_it_runs_again() {
    let db = TestDb::new(Kind::Mysql);
    let mut holder = db.conn();
    crate::fixtures::ensure_apply(&mut holder, ApplyId(1));
    let DbConnection::Mysql(holder) = &mut holder else {
        unreachable!("a MySQL test database")
    };
    let mut scanner = db.conn();
    let (answers, answered) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    {
        let DbConnection::Mysql(scanner) = &mut scanner else {
            unreachable!("a MySQL test database")
        };
        scanner
            .batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
            .unwrap();
        // Prepared and cached by a clean first run.
        assert_eq!(scan_for_update(scanner).unwrap().len(), 1);
    }
    holder.batch_execute("BEGIN").unwrap();
    scan_for_update(holder).unwrap();
    // Not scoped: a scanner that blocks for good must not hold the test up.
    std::thread::spawn(move || {
        let DbConnection::Mysql(scanner) = &mut scanner else {
            unreachable!("a MySQL test database")
        };
        let answer = |result: QueryResult<Vec<(ApplyId, String)>>| {
            result.map(|rows| rows.len()).map_err(|e| e.to_string())
        };
        answers.send(answer(scan_for_update(scanner))).unwrap();
        answers.send(answer(scan_for_update(scanner))).unwrap();
        released.recv().unwrap();
        answers
            .send(answer(scanner.transaction(scan_for_update)))
            .unwrap();
    });
    let first = answered.recv_timeout(Duration::from_secs(30)).unwrap();
    let first = first.expect_err("the scan meets the held row and times out");
    assert!(first.contains("Lock wait timeout"), "{first}");
    let again = answered.recv_timeout(Duration::from_secs(15));
    holder.batch_execute("ROLLBACK").unwrap();
    let again = again
        .expect("the same statement, run again, is answered")
        .expect_err("the row is still held: it times out again");
    assert!(again.contains("Lock wait timeout"), "{again}");
    release.send(()).unwrap();
    let after = answered
        .recv_timeout(Duration::from_secs(15))
        .expect("answered once the row is free");
    assert_eq!(after, Ok(1), "the row, read in a transaction of its own");
}
