//! The tasks store and its link to apply_operations.

use applyops::models::{ApplyId, ApplyOperationId, NewApplyOperation, NewTask, TaskId};
use applyops::state::ApplyState;
use applyops::store::{apply_operations, tasks as store};
use applyops::StoreError;

use crate::backend_tests;
use crate::harness::TestDb;

fn new_task(apply_id: i64, operation: Option<ApplyOperationId>, table: &str) -> NewTask {
    NewTask {
        apply_id: ApplyId(apply_id),
        apply_operation_id: operation,
        table_name: table.to_owned(),
        ddl: format!("ALTER TABLE `{table}` ADD COLUMN c INT"),
    }
}

backend_tests!(
    insert_then_get_round_trips_with_the_operation_link,
    a_task_without_an_operation_has_a_null_link,
    list_by_apply_and_by_operation_return_only_their_tasks_in_order,
    linking_to_a_missing_operation_is_not_found_and_writes_nothing,
    linking_to_another_applys_operation_is_invalid,
    deleting_an_applys_operations_unlinks_its_tasks_and_keeps_them,
    table_name_and_ddl_are_validated,
);

fn insert_then_get_round_trips_with_the_operation_link(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let op = apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east")).unwrap();
    let id = store::insert(conn, &new_task(1, Some(op), "users")).unwrap();
    let task = store::get(conn, id).unwrap().unwrap();
    assert_eq!(
        (task.apply_id, task.apply_operation_id),
        (ApplyId(1), Some(op))
    );
    assert_eq!(task.table_name, "users");
    assert_eq!(task.ddl, "ALTER TABLE `users` ADD COLUMN c INT");
    assert_eq!(task.state, ApplyState::Pending);
    assert_eq!(store::get(conn, TaskId(id.0 + 1)).unwrap(), None);
}

fn a_task_without_an_operation_has_a_null_link(db: &TestDb) {
    let conn = &mut db.conn();
    let id = store::insert(conn, &new_task(1, None, "users")).unwrap();
    assert_eq!(
        store::get(conn, id).unwrap().unwrap().apply_operation_id,
        None
    );
}

fn list_by_apply_and_by_operation_return_only_their_tasks_in_order(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    crate::fixtures::ensure_apply(conn, ApplyId(2));
    let east = apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east")).unwrap();
    let west = apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "west")).unwrap();
    let other =
        apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(2), "east")).unwrap();
    let t1 = store::insert(conn, &new_task(1, Some(east), "a")).unwrap();
    let t2 = store::insert(conn, &new_task(1, Some(west), "b")).unwrap();
    let t3 = store::insert(conn, &new_task(1, Some(east), "c")).unwrap();
    let t4 = store::insert(conn, &new_task(1, None, "d")).unwrap();
    store::insert(conn, &new_task(2, Some(other), "e")).unwrap();
    let ids =
        |tasks: Vec<applyops::models::Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store::list_by_apply(conn, ApplyId(1)).unwrap()),
        [t1, t2, t3, t4]
    );
    assert_eq!(ids(store::list_by_operation(conn, east).unwrap()), [t1, t3]);
    assert_eq!(ids(store::list_by_operation(conn, west).unwrap()), [t2]);
    assert!(store::list_by_apply(conn, ApplyId(3)).unwrap().is_empty());
    assert!(store::list_by_operation(conn, ApplyOperationId(999))
        .unwrap()
        .is_empty());
}

fn linking_to_a_missing_operation_is_not_found_and_writes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    match store::insert(conn, &new_task(1, Some(ApplyOperationId(777)), "users")) {
        Err(StoreError::ApplyOperationNotFound { id }) => assert_eq!(id, ApplyOperationId(777)),
        other => panic!("expected ApplyOperationNotFound, got {other:?}"),
    }
    assert!(store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty());
}

fn linking_to_another_applys_operation_is_invalid(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(2));
    let op = apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(2), "east")).unwrap();
    match store::insert(conn, &new_task(1, Some(op), "users")) {
        Err(StoreError::InvalidInput { field, reason }) => {
            assert_eq!(field, "apply_operation_id");
            assert!(reason.contains("belongs to apply 2"), "{reason}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert!(store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty());
}

fn deleting_an_applys_operations_unlinks_its_tasks_and_keeps_them(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    crate::fixtures::ensure_apply(conn, ApplyId(2));
    let op = apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(1), "east")).unwrap();
    let other_op =
        apply_operations::insert(conn, &NewApplyOperation::new(ApplyId(2), "east")).unwrap();
    let task = store::insert(conn, &new_task(1, Some(op), "users")).unwrap();
    let other_task = store::insert(conn, &new_task(2, Some(other_op), "users")).unwrap();
    assert_eq!(
        apply_operations::delete_by_apply(conn, ApplyId(1)).unwrap(),
        1
    );
    assert_eq!(
        store::get(conn, task).unwrap().unwrap().apply_operation_id,
        None
    );
    assert_eq!(
        store::get(conn, other_task)
            .unwrap()
            .unwrap()
            .apply_operation_id,
        Some(other_op)
    );
}

fn table_name_and_ddl_are_validated(db: &TestDb) {
    let conn = &mut db.conn();
    let bad = [
        (
            "table_name",
            NewTask {
                table_name: String::new(),
                ..new_task(1, None, "t")
            },
        ),
        (
            "table_name",
            NewTask {
                table_name: "t".repeat(256),
                ..new_task(1, None, "t")
            },
        ),
        (
            "ddl",
            NewTask {
                ddl: String::new(),
                ..new_task(1, None, "t")
            },
        ),
        (
            "ddl",
            NewTask {
                ddl: "x".repeat(65_536),
                ..new_task(1, None, "t")
            },
        ),
    ];
    for (expected, new) in bad {
        match store::insert(conn, &new) {
            Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, expected),
            other => panic!("expected InvalidInput for {expected}, got {other:?}"),
        }
    }
    assert!(store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty());
}
