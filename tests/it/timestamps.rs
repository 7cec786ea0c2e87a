//! Timestamps: UTC, microsecond precision, from the database clock.

use applyops::models::{ApplyId, NewApplyOperation};
use applyops::store::apply_operations as store;
use chrono::{Timelike, Utc};

use crate::backend_tests;
use crate::harness::TestDb;

backend_tests!(timestamps_are_utc_now, timestamps_keep_microseconds,);

fn timestamps_are_utc_now(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let before = Utc::now().naive_utc() - chrono::Duration::seconds(5);
    let id = store::insert(conn, &NewApplyOperation::new(ApplyId(1), "a")).unwrap();
    let after = Utc::now().naive_utc() + chrono::Duration::seconds(5);
    let op = store::get(conn, id).unwrap().unwrap();
    assert!(
        op.created_at > before && op.created_at < after,
        "{} not within UTC now ± 5 s",
        op.created_at
    );
}

fn timestamps_keep_microseconds(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let mut stamps = Vec::new();
    for i in 0..5 {
        let id = store::insert(conn, &NewApplyOperation::new(ApplyId(1), format!("d{i}"))).unwrap();
        stamps.push(store::get(conn, id).unwrap().unwrap().created_at);
    }
    assert!(
        stamps.iter().all(|t| t.nanosecond() % 1_000 == 0),
        "at most microseconds: {stamps:?}"
    );
    assert!(
        stamps.iter().any(|t| t.nanosecond() % 1_000_000 != 0),
        "sub-millisecond digits survive the round trip: {stamps:?}"
    );
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "monotonic: {stamps:?}"
    );
}
