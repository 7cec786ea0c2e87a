//! The applies store.

use applyops::models::{ApplyId, NewApply};
use applyops::state::ApplyState;
use applyops::store::applies as store;
use applyops::StoreError;

use crate::backend_tests;
use crate::harness::TestDb;

fn new_apply(identifier: &str) -> NewApply {
    NewApply::new(identifier, "commerce", "production", "us-east-1")
}

backend_tests!(
    progress_counts_each_applys_operations_and_completed_ones_in_the_order_asked,
    insert_then_get_round_trips,
    a_taken_identifier_is_apply_exists,
    fields_are_validated_before_any_sql,
    defer_cutover_is_stored_and_can_be_switched,
);

fn insert_then_get_round_trips(db: &TestDb) {
    let conn = &mut db.conn();
    let id = store::insert(conn, &new_apply("apply-1")).unwrap();
    let apply = store::get(conn, id).unwrap().unwrap();
    assert_eq!(apply.apply_identifier, "apply-1");
    assert_eq!(apply.database_name, "commerce");
    assert_eq!(apply.environment, "production");
    assert_eq!(apply.deployment, "us-east-1");
    assert_eq!(apply.state, ApplyState::Pending);
    assert_eq!(
        (
            apply.started_at,
            apply.completed_at,
            apply.error_message.clone()
        ),
        (None, None, None)
    );
    assert_eq!(
        store::get_by_identifier(conn, "apply-1").unwrap(),
        Some(apply)
    );
    assert_eq!(store::get(conn, ApplyId(id.0 + 1)).unwrap(), None);
    assert_eq!(store::get_by_identifier(conn, "apply-2").unwrap(), None);
}

fn a_taken_identifier_is_apply_exists(db: &TestDb) {
    let conn = &mut db.conn();
    store::insert(conn, &new_apply("apply-1")).unwrap();
    match store::insert(conn, &new_apply("apply-1")) {
        Err(StoreError::ApplyExists { apply_identifier }) => {
            assert_eq!(apply_identifier, "apply-1")
        }
        other => panic!("expected ApplyExists, got {other:?}"),
    }
}

fn fields_are_validated_before_any_sql(db: &TestDb) {
    let conn = &mut db.conn();
    let cases = [
        (
            "apply_identifier",
            NewApply {
                apply_identifier: String::new(),
                ..new_apply("x")
            },
        ),
        (
            "apply_identifier",
            NewApply {
                apply_identifier: "x ".into(),
                ..new_apply("x")
            },
        ),
        (
            "database_name",
            NewApply {
                database_name: "d".repeat(256),
                ..new_apply("x")
            },
        ),
        (
            "environment",
            NewApply {
                environment: String::new(),
                ..new_apply("x")
            },
        ),
        (
            "deployment",
            NewApply {
                deployment: String::new(),
                ..new_apply("x")
            },
        ),
    ];
    for (expected, new) in cases {
        match store::insert(conn, &new) {
            Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected InvalidInput for {expected}, got {other:?}"),
        }
    }
    assert_eq!(store::get_by_identifier(conn, "x").unwrap(), None);
}

fn defer_cutover_is_stored_and_can_be_switched(db: &TestDb) {
    let conn = &mut db.conn();
    let id = store::insert(conn, &new_apply("deferred").with_defer_cutover(true)).unwrap();
    assert!(store::get(conn, id).unwrap().unwrap().defer_cutover);
    store::set_defer_cutover(conn, id, false).unwrap();
    store::set_defer_cutover(conn, id, false).unwrap();
    assert!(!store::get(conn, id).unwrap().unwrap().defer_cutover);
    assert!(matches!(
        store::set_defer_cutover(conn, ApplyId(9_999), true),
        Err(StoreError::ApplyNotFound { id: ApplyId(9_999) })
    ));
}

/// `applies::progress`: per apply asked for, in that order, its operations and how many are
/// `completed`; an apply with none counts 0 of 0, an unknown one too; nothing asked, nothing read.
fn progress_counts_each_applys_operations_and_completed_ones_in_the_order_asked(db: &TestDb) {
    use applyops::state::{CutoverPolicy, FailurePolicy};
    use applyops::store::apply_operations;
    let conn = &mut db.conn();
    let (busy, ops) =
        crate::fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Halt);
    apply_operations::mark_completed(conn, ops[0]).unwrap();
    apply_operations::mark_completed(conn, ops[2]).unwrap();
    let empty = crate::fixtures::apply(conn, false);
    let unknown = ApplyId(busy.get() + 1_000);
    let progress = store::progress(conn, &[empty, unknown, busy]).unwrap();
    let counts: Vec<(ApplyId, i64, i64)> = progress
        .iter()
        .map(|p| (p.apply_id, p.operations, p.completed))
        .collect();
    assert_eq!(counts, [(empty, 0, 0), (unknown, 0, 0), (busy, 3, 2)]);
    assert!(store::progress(conn, &[]).unwrap().is_empty());
}
