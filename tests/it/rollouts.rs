//! Rollouts as a whole: reading an apply with everything it owns, and deleting a finished one.

use applyops::models::{ApplyOperationId, NewTask};
use applyops::schema::{
    apply_control_requests as reqs, apply_operations as ops, tasks as tasks_table,
};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::{applies, apply_operations, control_requests, tasks};
use applyops::StoreError;
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    rollout_reads_the_apply_its_operations_in_claim_order_their_tasks_and_pending_requests,
    rollout_of_an_unknown_apply_is_none,
    delete_removes_a_finished_apply_and_everything_it_owns,
    delete_refuses_an_apply_with_an_unsettled_operation_and_writes_nothing,
    delete_of_an_unknown_apply_is_apply_not_found,
);

fn task(
    conn: &mut applyops::DbConnection,
    apply_id: applyops::ApplyId,
    operation: Option<ApplyOperationId>,
    table: &str,
) -> applyops::TaskId {
    tasks::insert(
        conn,
        &NewTask {
            apply_id,
            apply_operation_id: operation,
            table_name: table.to_owned(),
            ddl: format!("ALTER TABLE `{table}` ADD COLUMN c INT"),
        },
    )
    .unwrap()
}

fn rollout_reads_the_apply_its_operations_in_claim_order_their_tasks_and_pending_requests(
    db: &TestDb,
) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 3, CutoverPolicy::Barrier, FailurePolicy::Halt);
    let (other_apply, other_ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let t0 = task(conn, apply_id, Some(ids[2]), "users");
    let t1 = task(conn, apply_id, Some(ids[0]), "orders");
    let t2 = task(conn, apply_id, Some(ids[2]), "items");
    let loose = task(conn, apply_id, None, "audit");
    task(conn, other_apply, Some(other_ids[0]), "elsewhere");
    let stop = request(conn, apply_id, None, ControlRequestKind::Stop);
    let cutover = request(conn, apply_id, Some(ids[1]), ControlRequestKind::Cutover);
    let done = request(conn, apply_id, None, ControlRequestKind::Release);
    control_requests::complete(conn, done).unwrap();
    apply_operations::mark_started(conn, ids[1]).unwrap();

    let rollout = applies::rollout(conn, apply_id)
        .unwrap()
        .expect("the apply exists");
    assert_eq!(
        rollout.apply,
        applies::get(conn, apply_id).unwrap().unwrap()
    );
    let operations: Vec<_> = rollout.operations.iter().map(|o| o.operation.id).collect();
    assert_eq!(operations, ids, "claim order");
    assert_eq!(rollout.operations[1].operation.state, ApplyState::Running);
    let task_ids = |i: usize| {
        rollout.operations[i]
            .tasks
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(task_ids(0), [t1]);
    assert!(task_ids(1).is_empty());
    assert_eq!(task_ids(2), [t0, t2], "oldest first");
    assert_eq!(
        rollout
            .unlinked_tasks
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [loose]
    );
    let pending: Vec<_> = rollout.pending_requests.iter().map(|r| r.id).collect();
    assert_eq!(pending, [stop, cutover], "pending only, oldest first");
}

fn rollout_of_an_unknown_apply_is_none(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    assert_eq!(
        applies::rollout(conn, applyops::ApplyId(apply_id.get() + 1)).unwrap(),
        None
    );
}

fn delete_removes_a_finished_apply_and_everything_it_owns(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 4, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let (kept, kept_ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    task(conn, apply_id, Some(ids[0]), "a");
    task(conn, apply_id, Some(ids[1]), "b");
    task(conn, apply_id, None, "c");
    task(conn, kept, Some(kept_ids[0]), "d");
    let stop = request(conn, apply_id, None, ControlRequestKind::Stop);
    control_requests::complete(conn, stop).unwrap();
    request(conn, apply_id, Some(ids[3]), ControlRequestKind::Cutover);
    request(conn, kept, None, ControlRequestKind::Stop);
    apply_operations::mark_completed(conn, ids[0]).unwrap();
    apply_operations::mark_failed(conn, ids[1], "boom").unwrap();
    apply_operations::mark_terminal(conn, ids[2], ApplyState::Cancelled).unwrap();
    apply_operations::mark_terminal(conn, ids[3], ApplyState::Reverted).unwrap();

    let deleted = applies::delete(conn, apply_id).unwrap();
    assert_eq!(
        (deleted.operations, deleted.tasks, deleted.control_requests),
        (4, 3, 2)
    );
    assert_eq!(applies::get(conn, apply_id).unwrap(), None);
    let left = |conn: &mut applyops::DbConnection| -> (i64, i64, i64) {
        (
            ops::table.count().get_result(conn).unwrap(),
            tasks_table::table.count().get_result(conn).unwrap(),
            reqs::table.count().get_result(conn).unwrap(),
        )
    };
    assert_eq!(left(conn), (1, 1, 1), "the other apply's rows are kept");
    assert!(applies::rollout(conn, kept).unwrap().is_some());
}

fn delete_refuses_an_apply_with_an_unsettled_operation_and_writes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    for unsettled in ApplyState::ALL.into_iter().filter(|s| {
        !matches!(
            s,
            ApplyState::Completed
                | ApplyState::Failed
                | ApplyState::Cancelled
                | ApplyState::Reverted
        )
    }) {
        let (apply_id, ids) = rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
        apply_operations::mark_completed(conn, ids[0]).unwrap();
        force_state(conn, ids[1], unsettled);
        task(conn, apply_id, Some(ids[1]), "t");
        let before = applies::rollout(conn, apply_id).unwrap();
        assert!(
            matches!(applies::delete(conn, apply_id), Err(StoreError::ApplyActive { id }) if id == apply_id),
            "{unsettled}"
        );
        assert_eq!(
            applies::rollout(conn, apply_id).unwrap(),
            before,
            "{unsettled}: nothing deleted"
        );
    }
    // A state this version does not know counts as unsettled: it fails closed.
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    force_raw_state(conn, ids[0], "exploded");
    assert!(matches!(
        applies::delete(conn, apply_id),
        Err(StoreError::ApplyActive { .. })
    ));
}

fn delete_of_an_unknown_apply_is_apply_not_found(db: &TestDb) {
    let conn = &mut db.conn();
    let missing = applyops::ApplyId(4_242);
    assert!(matches!(
        applies::delete(conn, missing),
        Err(StoreError::ApplyNotFound { id }) if id == missing
    ));
}
