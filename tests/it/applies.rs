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
