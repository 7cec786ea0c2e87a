//! The control-request store.

use std::sync::{Arc, Barrier};

use applyops::models::{ApplyId, ApplyOperationId, ControlRequestId};
use applyops::state::{ControlRequestKind as Kind, CutoverPolicy::Rolling, FailurePolicy::Halt};
use applyops::store::control_requests;
use applyops::StoreError;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;
use applyops::state::ControlRequestStatus;

backend_tests!(
    a_request_is_pending_with_its_reason,
    asking_again_while_pending_returns_the_pending_request,
    once_resolved_a_new_request_can_be_made,
    concurrent_requests_leave_exactly_one_pending,
    complete_stamps_once_and_repeats,
    resolving_the_other_way_is_rejected,
    bad_input_is_rejected_and_nothing_written,
    list_pending_is_oldest_first_and_only_pending,
    an_unknown_stored_kind_is_a_typed_error,
    a_stop_in_another_spelling_fails_closed_everywhere,
);

fn a_request_is_pending_with_its_reason(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let req = control_requests::request(
        conn,
        apply_id,
        Some(ids[0]),
        Kind::Stop,
        Some("maintenance"),
    )
    .unwrap();
    assert_eq!(
        (req.apply_id, req.apply_operation_id),
        (apply_id, Some(ids[0]))
    );
    assert_eq!(
        (req.kind, req.status),
        (Kind::Stop, ControlRequestStatus::Pending)
    );
    assert_eq!(req.reason.as_deref(), Some("maintenance"));
    assert_eq!(req.completed_at, None);
    assert_eq!(control_requests::get(conn, req.id).unwrap(), Some(req));
}

fn asking_again_while_pending_returns_the_pending_request(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let first =
        control_requests::request(conn, apply_id, None, Kind::Start, Some("first")).unwrap();
    let again =
        control_requests::request(conn, apply_id, None, Kind::Start, Some("second")).unwrap();
    assert_eq!(again, first, "the pending one, unchanged");
    let other_kind = control_requests::request(conn, apply_id, None, Kind::Stop, None).unwrap();
    let other_scope =
        control_requests::request(conn, apply_id, Some(ids[0]), Kind::Start, None).unwrap();
    assert_ne!(other_kind.id, first.id);
    assert_ne!(other_scope.id, first.id);
    assert_eq!(
        control_requests::list_pending(conn, apply_id)
            .unwrap()
            .len(),
        3
    );
}

fn once_resolved_a_new_request_can_be_made(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, Rolling, Halt);
    let first = request(conn, apply_id, None, Kind::Release);
    control_requests::complete(conn, first).unwrap();
    let second = request(conn, apply_id, None, Kind::Release);
    assert_ne!(second, first);
    control_requests::fail(conn, second, "no").unwrap();
    let third = request(conn, apply_id, None, Kind::Release);
    assert_ne!(third, second);
}

fn concurrent_requests_leave_exactly_one_pending(db: &TestDb) {
    let (apply_id, _) = rollout(&mut db.conn(), 1, Rolling, Halt);
    const THREADS: usize = 8;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let mut conn = db.conn();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                control_requests::request(&mut conn, apply_id, None, Kind::Stop, None)
                    .unwrap()
                    .id
            })
        })
        .collect();
    let ids: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(
        control_requests::list_pending(&mut db.conn(), apply_id)
            .unwrap()
            .len(),
        1
    );
}

fn complete_stamps_once_and_repeats(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, Rolling, Halt);
    let id = request(conn, apply_id, None, Kind::Stop);
    control_requests::complete(conn, id).unwrap();
    let done = control_requests::get(conn, id).unwrap().unwrap();
    assert_eq!(done.status, ControlRequestStatus::Completed);
    assert!(done.completed_at.is_some());
    control_requests::complete(conn, id).unwrap();
    assert_eq!(
        control_requests::get(conn, id)
            .unwrap()
            .unwrap()
            .completed_at,
        done.completed_at
    );
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
}

fn resolving_the_other_way_is_rejected(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, Rolling, Halt);
    let completed = request(conn, apply_id, None, Kind::Stop);
    control_requests::complete(conn, completed).unwrap();
    assert!(matches!(control_requests::fail(conn, completed, "late"),
        Err(StoreError::ControlRequestResolved { status, .. }) if status == ControlRequestStatus::Completed));
    let failed = request(conn, apply_id, None, Kind::Start);
    control_requests::fail(conn, failed, "not now").unwrap();
    control_requests::fail(conn, failed, "still not").unwrap();
    assert_eq!(
        control_requests::get(conn, failed)
            .unwrap()
            .unwrap()
            .reason
            .as_deref(),
        Some("still not")
    );
    assert!(matches!(control_requests::complete(conn, failed),
        Err(StoreError::ControlRequestResolved { status, .. }) if status == ControlRequestStatus::Failed));
}

fn bad_input_is_rejected_and_nothing_written(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let (other_apply, _) = rollout(conn, 1, Rolling, Halt);
    assert!(matches!(
        control_requests::request(conn, ApplyId(9_999), None, Kind::Stop, None),
        Err(StoreError::ApplyNotFound { id: ApplyId(9_999) })
    ));
    assert!(matches!(
        control_requests::request(
            conn,
            apply_id,
            Some(ApplyOperationId(9_999)),
            Kind::Stop,
            None
        ),
        Err(StoreError::ApplyOperationNotFound {
            id: ApplyOperationId(9_999)
        })
    ));
    assert!(matches!(
        control_requests::request(conn, other_apply, Some(ids[0]), Kind::Stop, None),
        Err(StoreError::InvalidInput {
            field: "operation_id",
            ..
        })
    ));
    let long = "r".repeat(65_536);
    assert!(matches!(
        control_requests::request(conn, apply_id, None, Kind::Stop, Some(&long)),
        Err(StoreError::InvalidInput {
            field: "reason",
            ..
        })
    ));
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
    assert!(control_requests::list_pending(conn, other_apply)
        .unwrap()
        .is_empty());
    assert!(matches!(
        control_requests::complete(conn, ControlRequestId(9_999)),
        Err(StoreError::ControlRequestNotFound {
            id: ControlRequestId(9_999)
        })
    ));
    assert!(matches!(
        control_requests::fail(conn, ControlRequestId(9_999), "x"),
        Err(StoreError::ControlRequestNotFound {
            id: ControlRequestId(9_999)
        })
    ));
    let id = request(conn, apply_id, None, Kind::Stop);
    assert!(matches!(
        control_requests::fail(conn, id, ""),
        Err(StoreError::InvalidInput {
            field: "reason",
            ..
        })
    ));
    assert_eq!(
        control_requests::get(conn, id).unwrap().unwrap().status,
        ControlRequestStatus::Pending
    );
}

fn list_pending_is_oldest_first_and_only_pending(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let a = request(conn, apply_id, None, Kind::Stop);
    let b = request(conn, apply_id, Some(ids[0]), Kind::Cutover);
    let c = request(conn, apply_id, None, Kind::Release);
    control_requests::complete(conn, b).unwrap();
    let pending: Vec<_> = control_requests::list_pending(conn, apply_id)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, [a, c]);
}

fn an_unknown_stored_kind_is_a_typed_error(db: &TestDb) {
    use applyops::schema::apply_control_requests as reqs;
    use diesel::prelude::*;
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, Rolling, Halt);
    let id = request(conn, apply_id, None, Kind::Stop);
    diesel::update(reqs::table.find(id))
        .set(reqs::kind.eq("explode"))
        .execute(conn)
        .unwrap();
    assert!(matches!(control_requests::get(conn, id),
        Err(StoreError::UnknownValue { column: "kind", value, .. }) if value == "explode"));
    // And a claim fails closed: a pending request of a kind it does not know holds starts back.
    assert_eq!(claimed_id(conn), None);
}

// A stop stored in another spelling is not listed as a stop (the list is an error naming the
// row), and the claim does not start the operation past it either: reading and SQL agree, and
// both fail closed.
fn a_stop_in_another_spelling_fails_closed_everywhere(db: &TestDb) {
    use applyops::schema::apply_control_requests as reqs;
    use diesel::prelude::*;
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, Rolling, Halt);
    let id = request(conn, apply_id, None, Kind::Stop);
    diesel::update(reqs::table.find(id))
        .set(reqs::kind.eq("STOP"))
        .execute(conn)
        .unwrap();
    assert!(matches!(control_requests::list_pending(conn, apply_id),
        Err(StoreError::UnknownValue { column: "kind", value, .. }) if value == "STOP"));
    assert_eq!(claimed_id(conn), None, "the operation does not start");
}
