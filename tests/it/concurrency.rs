//! Concurrent writers on one (apply, deployment) pair.

use std::sync::{Arc, Barrier};

use applyops::models::{ApplyId, NewApplyOperation};
use applyops::store::apply_operations as store;
use applyops::StoreError;

use crate::backend_tests;
use crate::harness::TestDb;

backend_tests!(
    sixteen_threads_inserting_one_pair_yield_one_id_and_fifteen_conflicts,
    a_write_that_waited_for_the_apply_sees_the_stop_committed_meanwhile,
);

fn sixteen_threads_inserting_one_pair_yield_one_id_and_fifteen_conflicts(db: &TestDb) {
    const THREADS: usize = 16;
    let barrier = Arc::new(Barrier::new(THREADS));
    let url = db.url().to_owned();
    crate::fixtures::ensure_apply(&mut db.conn(), ApplyId(42));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let url = url.clone();
            std::thread::spawn(move || {
                let mut conn = applyops::db::establish(&url).expect("connect");
                barrier.wait();
                store::insert(&mut conn, &NewApplyOperation::new(ApplyId(42), "shared"))
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .collect();
    let ids: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::ApplyOperationExists { apply_id: ApplyId(42), deployment }) if deployment == "shared"))
        .count();
    assert_eq!(ids.len(), 1, "exactly one insert wins: {results:?}");
    assert_eq!(
        conflicts,
        THREADS - 1,
        "every other insert conflicts, nothing else: {results:?}"
    );
    let rows = store::list_by_apply(&mut db.conn(), ApplyId(42)).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
}

/// A stop is filed (written by hand, as a tool may: the request row, the apply marked undecided)
/// in a transaction that holds the apply's lock for a while without writing the apply's row; a
/// state write of a sibling, waiting for that lock meanwhile, then decides the claim rules with the
/// stop in view: no claim afterwards starts the stopped pending operation. (On PostgreSQL a
/// statement's sub-selects read the snapshot it took before its wait, which is why the unit of
/// work reads the apply again once its lock is granted; here the claim that meets the undecided
/// operation decides it afresh as well, so this passes with or without that second read.)
fn a_write_that_waited_for_the_apply_sees_the_stop_committed_meanwhile(db: &TestDb) {
    use applyops::db::DbConnection;
    use applyops::schema::{applies, apply_control_requests as reqs};
    use applyops::schema_types::datetime;
    use applyops::state::{
        ApplyState, ControlRequestKind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
    };
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    let conn = &mut db.conn();
    let (apply_id, ids) =
        crate::fixtures::rollout(conn, 2, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let barrier = Arc::new(Barrier::new(2));
    let filer = {
        let mut holder = db.conn();
        let barrier = Arc::clone(&barrier);
        let stopped = ids[1];
        std::thread::spawn(move || {
            // The apply's lock, as the store takes it, and nothing written to its row.
            match &mut holder {
                DbConnection::Mysql(inner) => {
                    inner.batch_execute("BEGIN").unwrap();
                    let lock = applies::table.find(apply_id.0).select(applies::id);
                    lock.for_update().first::<i64>(inner).unwrap();
                }
                DbConnection::Pg(inner) => {
                    inner.batch_execute("BEGIN").unwrap();
                    let lock = applies::table.find(apply_id.0).select(applies::id);
                    lock.for_update().first::<i64>(inner).unwrap();
                }
                DbConnection::Sqlite(inner) => inner.batch_execute("BEGIN IMMEDIATE").unwrap(),
            }
            let now = datetime(chrono::Utc::now().naive_utc());
            diesel::insert_into(reqs::table)
                .values((
                    reqs::apply_id.eq(apply_id.0),
                    reqs::apply_operation_id.eq(Some(stopped.0)),
                    reqs::kind.eq(ControlRequestKind::Stop),
                    reqs::status.eq(ControlRequestStatus::Pending),
                    reqs::created_at.eq(now),
                    reqs::updated_at.eq(now),
                    reqs::requested_by.eq("operator"),
                ))
                .execute(&mut holder)
                .unwrap();
            crate::fixtures::undecide(&mut holder, apply_id);
            barrier.wait();
            // The writer below is waiting for the apply's lock by now.
            std::thread::sleep(std::time::Duration::from_millis(700));
            holder.batch_execute("COMMIT").unwrap();
        })
    };
    barrier.wait();
    std::thread::sleep(std::time::Duration::from_millis(100));
    store::update_state(&mut db.conn(), ids[0], ApplyState::Running).unwrap();
    filer.join().unwrap();
    for _ in 0..4 {
        let Some(claimed) = crate::fixtures::claim(conn, "after-the-stop") else {
            break;
        };
        assert_ne!(
            (claimed.operation.id, claimed.operation.state),
            (ids[1], ApplyState::Running),
            "a claim started the pending operation while a stop of it was pending"
        );
    }
}
