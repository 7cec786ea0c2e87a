//! A MySQL claim holds no lock on a row it looked at and did not take: a write to such a row goes
//! through while the claim's transaction is still open.

use std::time::{Duration, Instant};

use applyops::db::DbConnection;
use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::{apply_operations, claims, leases};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::fixtures::{opts, rollout};
use crate::harness::{Kind, TestDb};

/// Rows the claim index walks before it reaches a claimable one: a held operation (live lease) and
/// its blocked rolling successor. The claim takes the third apply's operation; while its transaction
/// is open, another session writes both rejected rows without waiting (lock wait timeout 1 s, which
/// the old locking scan of the claim index made them hit).
#[test]
fn mysql_a_write_to_a_row_the_claim_rejected_does_not_wait_for_the_claim() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let (_, held) = rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let holder = claims::claim_next(conn, &opts("holder")).unwrap().unwrap();
    assert_eq!(holder.operation.id, held[0]);
    let (_, free) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);

    let writer = &mut db.conn();
    if let DbConnection::Mysql(inner) = writer {
        inner
            .batch_execute("SET SESSION innodb_lock_wait_timeout = 1")
            .unwrap();
    }
    let claimer = &mut db.conn();
    if let DbConnection::Mysql(inner) = claimer {
        inner
            .batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .unwrap();
    }
    claimer
        .transaction(|claimer| {
            let claimed = claims::claim_next(claimer, &opts("claimer"))?.expect("the free row");
            assert_eq!(claimed.operation.id, free[0]);
            // The claim's transaction is still open here.
            let started = Instant::now();
            leases::update_state(writer, &holder.lease, ApplyState::WaitingForDeploy)?;
            apply_operations::update_state(writer, held[1], ApplyState::Pending)?;
            assert!(
                started.elapsed() < Duration::from_millis(900),
                "the writes did not wait for the claim"
            );
            Ok::<_, applyops::StoreError>(())
        })
        .expect("writes to rejected rows go through while the claim is open");
}

/// The locking read that takes a candidate is a range of one row on the primary key, not a
/// constant lookup (whose rejected row would stay locked until COMMIT).
#[test]
fn mysql_the_claim_locks_its_candidate_by_a_primary_key_range() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let plan = claims::explain_claim_lock(conn, ids[0]).unwrap();
    assert!(
        plan[0].contains("table=apply_operations ")
            && plan[0].contains("type=range")
            && plan[0].contains("key=PRIMARY"),
        "{plan:#?}"
    );
}
