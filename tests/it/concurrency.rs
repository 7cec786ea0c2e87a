//! Concurrent writers on one (apply, deployment) pair.

use std::sync::{Arc, Barrier};

use applyops::models::{ApplyId, NewApplyOperation};
use applyops::store::apply_operations as store;
use applyops::StoreError;

use crate::backend_tests;
use crate::harness::TestDb;

backend_tests!(sixteen_threads_inserting_one_pair_yield_one_id_and_fifteen_conflicts,);

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
