//! Control requests (worker contract revision 2): recording, who asked, what each kind does at once,
//! what holders and claims do, and how each request completes itself.

use std::sync::{Arc, Barrier};

use applyops::models::{ApplyId, ApplyOperationId, ControlRequest, ControlRequestId};
use applyops::state::{
    ApplyState, ControlRequestKind as Kind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
};
use applyops::store::claims::{ClaimKind, ClaimedOperation};
use applyops::store::{applies, apply_operations, control_requests, leases};
use applyops::{DbConnection, StoreError};

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

use CutoverPolicy::{Parallel, Rolling};
use FailurePolicy::{Continue, Halt, Pause};

backend_tests!(
    a_request_is_pending_with_its_reason_and_who_asked,
    asking_again_while_pending_returns_the_pending_request,
    once_resolved_a_new_request_can_be_made,
    concurrent_requests_leave_exactly_one_pending,
    complete_stamps_once_and_repeats,
    resolving_the_other_way_is_rejected,
    bad_input_is_rejected_and_nothing_written,
    list_pending_is_oldest_first_and_only_pending,
    an_unknown_stored_kind_is_a_typed_error,
    a_stop_in_another_spelling_fails_closed_everywhere,
    a_request_that_covers_nothing_completes_at_once,
    a_stop_stops_at_once_what_nobody_drives,
    a_holder_stops_only_on_a_pending_stop_and_the_stop_completes_itself,
    a_stop_never_stops_a_cutover_in_flight,
    while_a_stop_is_pending_a_holder_cannot_cut_over,
    a_start_resumes_what_was_stopped_and_completes_itself,
    stop_and_start_supersede_each_other,
    a_cancel_cancels_what_nobody_drives_and_its_holder_cancels_the_rest,
    a_release_lets_through_only_the_failures_before_it,
    a_release_naming_an_operation_no_failure_holds_back_is_rejected,
    a_retry_makes_a_failed_operation_retryable_from_attempt_zero,
    a_retry_is_rejected_unless_the_operation_failed_and_nothing_holds_it_back,
    a_revert_is_taken_by_the_cutover_claims_revert_arm,
    a_skip_revert_closes_the_window_and_a_revert_fails_when_it_closes,
    a_whole_apply_revert_is_one_request_per_operation_in_the_window,
    a_holder_keeps_an_operation_in_revert_window,
    a_cutover_request_needs_an_apply_that_defers_cutover,
    defer_cutover_parks_rolling_and_lone_operations_for_the_cutover_claim,
    writes_into_unheld_states_clear_the_lease,
    pending_requests_lists_what_covers_the_held_operation,
    a_holder_cannot_move_on_an_operation_an_operator_settled,
    one_cutover_claim_completes_the_operations_and_the_whole_apply_request,
    a_cutover_with_nothing_left_to_cut_over_is_stored_completed_when_recorded,
    a_pending_cutover_whose_operations_settle_otherwise_completes,
    an_operators_retry_leads_to_an_attempt_with_a_retry_budget_of_zero,
    requests_carried_out_when_recorded_are_never_completed_before_they_were_created,
);

fn a_cutover_with_nothing_left_to_cut_over_is_stored_completed_when_recorded(db: &TestDb) {
    let conn = &mut db.conn();
    let apply_id = apply(conn, true);
    let ids: Vec<ApplyOperationId> = ["east", "west"]
        .into_iter()
        .map(|d| {
            apply_operations::insert(
                conn,
                &applyops::models::NewApplyOperation::new(apply_id, d)
                    .with_cutover_policy(Parallel),
            )
            .unwrap()
        })
        .collect();
    for &id in &ids {
        force_started(conn, id);
        force_state(conn, id, ApplyState::WaitingForCutover);
    }
    // The operator cuts east over; the claim takes it.
    let first = request(conn, apply_id, Some(ids[0]), Kind::Cutover);
    let cut = claim_cutover(conn, "w").unwrap();
    assert_eq!((cut.operation.id, cut.kind), (ids[0], ClaimKind::Cutover));
    assert_eq!(status(conn, first), ControlRequestStatus::Completed);
    // A second cutover of the deployment already cutting over has nothing to do: completed.
    let again = ask(conn, apply_id, Some(ids[0]), Kind::Cutover, None).unwrap();
    assert_ne!(again.id, first);
    assert_eq!(again.status, ControlRequestStatus::Completed);
    assert!(again.completed_at.is_some_and(|at| at >= again.created_at));
    assert_eq!(
        state(conn, ids[0]),
        ApplyState::CuttingOver,
        "nothing moved"
    );
    // Once both are cut over and completed, a whole-apply cutover has nothing to do either.
    leases::mark_completed(conn, &cut.lease).unwrap();
    request(conn, apply_id, Some(ids[1]), Kind::Cutover);
    let west = claim_cutover(conn, "w").unwrap();
    leases::mark_completed(conn, &west.lease).unwrap();
    let whole = ask(conn, apply_id, None, Kind::Cutover, None).unwrap();
    assert_eq!(whole.status, ControlRequestStatus::Completed);
    assert_eq!(whole.result, None);
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
}

/// An apply that defers its cutovers, with one started operation in `state`.
fn deferred_lone_operation(
    conn: &mut DbConnection,
    state: ApplyState,
) -> (ApplyId, ApplyOperationId) {
    let apply_id = apply(conn, true);
    let id = apply_operations::insert(
        conn,
        &applyops::models::NewApplyOperation::new(apply_id, "only"),
    )
    .unwrap();
    force_started(conn, id);
    force_state(conn, id, state);
    (apply_id, id)
}

fn a_pending_cutover_whose_operations_settle_otherwise_completes(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, id) = deferred_lone_operation(conn, ApplyState::Running);
    let cutover = request(conn, apply_id, Some(id), Kind::Cutover);
    assert_eq!(status(conn, cutover), ControlRequestStatus::Pending);
    request(conn, apply_id, Some(id), Kind::Cancel);
    assert_eq!(state(conn, id), ApplyState::Cancelled);
    let stored = stored(conn, cutover);
    assert_eq!(
        (stored.status, stored.result),
        (ControlRequestStatus::Completed, None),
        "nothing is left to cut over: done, not failed"
    );
}

fn an_operators_retry_leads_to_an_attempt_with_a_retry_budget_of_zero(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 1, Rolling, Halt);
    set_max_attempts(conn, apply_id, 0);
    // With no budget, a worker's retryable failure is stored failed.
    leases::update_state(conn, &held.lease, ApplyState::FailedRetryable).unwrap();
    assert_eq!(state(conn, ids[0]), ApplyState::Failed);
    let retry = ask(conn, apply_id, Some(ids[0]), Kind::Retry, None).unwrap();
    assert_eq!(retry.status, ControlRequestStatus::Completed);
    assert_eq!(state(conn, ids[0]), ApplyState::FailedRetryable);
    assert_eq!(
        applies::get(conn, apply_id).unwrap().unwrap().state,
        ApplyState::FailedRetryable
    );
    crate::invariants::progress_possible(conn, apply_id).unwrap();
    assert_eq!(
        applies::blockers(conn, apply_id).unwrap(),
        vec![(ids[0], applies::Blocker::Claimable)]
    );
    let retried = claim(conn, "w").expect("the operator's retry leads to an attempt");
    assert_eq!(
        (
            retried.operation.id,
            retried.kind,
            retried.operation.attempt
        ),
        (ids[0], ClaimKind::Retry, 1)
    );
    // The budget still bounds the automatic retries: the next retryable failure is final.
    leases::update_state(conn, &retried.lease, ApplyState::FailedRetryable).unwrap();
    assert_eq!(state(conn, ids[0]), ApplyState::Failed);
    assert!(claim(conn, "w").is_none());
    assert_eq!(
        applies::get(conn, apply_id).unwrap().unwrap().state,
        ApplyState::Failed
    );
}

fn requests_carried_out_when_recorded_are_never_completed_before_they_were_created(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 3, Parallel, Pause);
    // A release and a retry are carried out when recorded; a stop or cancel with nothing to do, or
    // whose scope nobody drives, completes in the refresh of the same transaction.
    let (_, held) = {
        let claimed = claim(conn, "w").unwrap();
        (claimed.operation.id, claimed)
    };
    leases::mark_failed(conn, &held.lease, "boom").unwrap();
    let mut recorded = vec![
        ask(conn, apply_id, None, Kind::Release, None).unwrap(),
        ask(conn, apply_id, Some(held.operation.id), Kind::Retry, None).unwrap(),
        ask(conn, apply_id, Some(ids[2]), Kind::Stop, None).unwrap(),
        ask(conn, apply_id, Some(ids[2]), Kind::Start, None).unwrap(),
        ask(conn, apply_id, Some(ids[1]), Kind::Cancel, None).unwrap(),
    ];
    recorded.push(ask(conn, apply_id, Some(ids[1]), Kind::Stop, None).unwrap());
    for request in &recorded {
        let stored = stored(conn, request.id);
        assert_eq!(
            stored.status,
            ControlRequestStatus::Completed,
            "{:?} {:?}",
            stored.kind,
            stored.apply_operation_id
        );
        let completed = stored.completed_at.unwrap();
        assert!(
            completed >= stored.created_at && stored.updated_at >= stored.created_at,
            "{:?}: created {}, updated {}, completed {completed}",
            stored.kind,
            stored.created_at,
            stored.updated_at
        );
    }
    crate::invariants::assert_timestamps_ordered(conn);
}

fn a_holder_cannot_move_on_an_operation_an_operator_settled(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids, held) = held_rollout(conn, 1, Rolling, Halt);
    apply_operations::mark_failed(conn, ids[0], "operator says no").unwrap();
    for write in [
        leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover),
        leases::mark_started(conn, &held.lease),
    ] {
        assert!(
            matches!(write, Err(StoreError::LeaseLost { .. })),
            "{write:?}"
        );
    }
    assert_eq!(
        state(conn, ids[0]),
        ApplyState::Failed,
        "only a retry revives it"
    );
    assert!(
        matches!(
            leases::mark_failed(conn, &held.lease, "agreed"),
            Err(StoreError::LeaseLost { .. })
        ),
        "the operator's settling write took the lease: not even a repeat of it goes through"
    );
}

fn one_cutover_claim_completes_the_operations_and_the_whole_apply_request(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, id) = deferred_lone_operation(conn, ApplyState::WaitingForCutover);
    let named = request(conn, apply_id, Some(id), Kind::Cutover);
    let whole = request(conn, apply_id, None, Kind::Cutover);
    let cut = claim_cutover(conn, "w").unwrap();
    assert_eq!(cut.operation.id, id);
    assert_eq!(status(conn, named), ControlRequestStatus::Completed);
    assert_eq!(
        status(conn, whole),
        ControlRequestStatus::Completed,
        "nothing else waits for it"
    );
}

/// Asserts that recording a request was refused as [`StoreError::RequestRejected`] for `kind`.
#[track_caller]
fn assert_rejected(recorded: applyops::StoreResult<ControlRequest>, kind: Kind) {
    assert!(
        matches!(&recorded, Err(StoreError::RequestRejected { kind: k, .. }) if *k == kind),
        "expected {kind} to be rejected: {recorded:?}"
    );
}

/// The request as stored.
fn stored(conn: &mut DbConnection, id: ControlRequestId) -> ControlRequest {
    control_requests::get(conn, id).unwrap().unwrap()
}

fn status(conn: &mut DbConnection, id: ControlRequestId) -> ControlRequestStatus {
    stored(conn, id).status
}

fn state(conn: &mut DbConnection, id: ApplyOperationId) -> ApplyState {
    row(conn, id).0.state
}

/// A rollout of `n` operations whose first is claimed and running under a live lease, so whole-apply
/// stops and cancels stay pending until its holder acts.
fn held_rollout(
    conn: &mut DbConnection,
    n: usize,
    policy: CutoverPolicy,
    on_failure: FailurePolicy,
) -> (ApplyId, Vec<ApplyOperationId>, ClaimedOperation) {
    let (apply_id, ids) = rollout(conn, n, policy, on_failure);
    let held = claim(conn, "holder").expect("the first operation starts");
    assert_eq!(held.operation.id, ids[0]);
    (apply_id, ids, held)
}

fn a_request_is_pending_with_its_reason_and_who_asked(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 1, Rolling, Halt);
    let req = ask(
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
    assert_eq!(req.requested_by, OPERATOR);
    assert_eq!((req.result.as_deref(), req.completed_at), (None, None));
    assert_eq!(req, stored(conn, req.id));
}

fn asking_again_while_pending_returns_the_pending_request(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 2, Parallel, Halt);
    let first = ask(conn, apply_id, None, Kind::Stop, Some("first")).unwrap();
    let second = ask(conn, apply_id, None, Kind::Stop, Some("second")).unwrap();
    assert_eq!(first, second, "the pending one, unchanged");
    let for_op = ask(conn, apply_id, Some(ids[0]), Kind::Stop, None).unwrap();
    assert_ne!(for_op.id, first.id, "another scope is another request");
}

fn once_resolved_a_new_request_can_be_made(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _, _) = held_rollout(conn, 1, Rolling, Halt);
    let first = request(conn, apply_id, None, Kind::Stop);
    control_requests::complete(conn, first).unwrap();
    let second = request(conn, apply_id, None, Kind::Stop);
    assert_ne!(first, second);
    assert_eq!(status(conn, second), ControlRequestStatus::Pending);
}

fn concurrent_requests_leave_exactly_one_pending(db: &TestDb) {
    let (apply_id, _, _) = held_rollout(&mut db.conn(), 1, Rolling, Halt);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let mut conn = db.conn();
            std::thread::spawn(move || {
                barrier.wait();
                ask(&mut conn, apply_id, None, Kind::Stop, None).unwrap().id
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
    let (apply_id, _, _) = held_rollout(conn, 1, Rolling, Halt);
    let id = request(conn, apply_id, None, Kind::Stop);
    control_requests::complete(conn, id).unwrap();
    let done = stored(conn, id);
    assert_eq!(done.status, ControlRequestStatus::Completed);
    assert!(done.completed_at.is_some());
    control_requests::complete(conn, id).unwrap();
    assert_eq!(stored(conn, id).completed_at, done.completed_at);
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
}

fn resolving_the_other_way_is_rejected(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 2, Parallel, Halt);
    let completed = request(conn, apply_id, None, Kind::Stop);
    control_requests::complete(conn, completed).unwrap();
    assert!(matches!(control_requests::fail(conn, completed, "late"),
        Err(StoreError::ControlRequestResolved { status, .. }) if status == ControlRequestStatus::Completed));
    let failed = ask(conn, apply_id, Some(ids[0]), Kind::Stop, Some("why"))
        .unwrap()
        .id;
    control_requests::fail(conn, failed, "not now").unwrap();
    control_requests::fail(conn, failed, "still not").unwrap();
    let failed_row = stored(conn, failed);
    assert_eq!(failed_row.result.as_deref(), Some("still not"));
    assert_eq!(
        failed_row.reason.as_deref(),
        Some("why"),
        "the operator's reason is kept"
    );
    assert!(matches!(control_requests::complete(conn, failed),
        Err(StoreError::ControlRequestResolved { status, .. }) if status == ControlRequestStatus::Failed));
}

fn bad_input_is_rejected_and_nothing_written(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let (other_apply, _) = rollout(conn, 1, Rolling, Halt);
    assert!(matches!(
        ask(conn, ApplyId(9_999), None, Kind::Stop, None),
        Err(StoreError::ApplyNotFound { id: ApplyId(9_999) })
    ));
    assert!(matches!(
        ask(
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
        ask(conn, other_apply, Some(ids[0]), Kind::Stop, None),
        Err(StoreError::InvalidInput {
            field: "operation_id",
            ..
        })
    ));
    let long = "x".repeat(65_536);
    assert!(matches!(
        ask(conn, apply_id, None, Kind::Stop, Some(&long)),
        Err(StoreError::InvalidInput {
            field: "reason",
            ..
        })
    ));
    for who in [String::new(), "   ".to_owned(), "w".repeat(256)] {
        let new = applyops::models::NewControlRequest::new(apply_id, Kind::Stop, who.clone());
        assert!(
            matches!(
                control_requests::request(conn, &new),
                Err(StoreError::InvalidInput {
                    field: "requested_by",
                    ..
                })
            ),
            "{who:?}"
        );
    }
    assert_eq!(
        state(conn, ids[0]),
        ApplyState::Pending,
        "nothing was stopped"
    );
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
    apply_operations::mark_terminal(conn, ids[0], ApplyState::Cancelled).unwrap();
    let other_op = row_of_other(conn, other_apply);
    apply_operations::mark_terminal(conn, other_op, ApplyState::Cancelled).unwrap();
    let (held_apply, _, _) = held_rollout(conn, 1, Rolling, Halt);
    let id = request(conn, held_apply, None, Kind::Stop);
    assert!(matches!(
        control_requests::fail(conn, id, ""),
        Err(StoreError::InvalidInput {
            field: "result",
            ..
        })
    ));
    assert_eq!(status(conn, id), ControlRequestStatus::Pending);
}

/// The only operation of apply `apply_id`.
fn row_of_other(conn: &mut DbConnection, apply_id: ApplyId) -> ApplyOperationId {
    apply_operations::list_by_apply(conn, apply_id).unwrap()[0].id
}

fn list_pending_is_oldest_first_and_only_pending(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 2, Parallel, Halt);
    applies::set_defer_cutover(conn, apply_id, true).unwrap();
    let a = request(conn, apply_id, None, Kind::Stop);
    let b = request(conn, apply_id, Some(ids[1]), Kind::Cutover);
    let c = request(conn, apply_id, Some(ids[0]), Kind::Cancel);
    control_requests::complete(conn, b).unwrap();
    let pending: Vec<_> = control_requests::list_pending(conn, apply_id)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(pending, [a, c]);
}

/// A held rollout of two with a pending whole-apply stop whose kind is then rewritten to `kind`,
/// and its second operation written back to `pending` by hand.
fn stop_respelled(conn: &mut DbConnection, kind: &str) -> (ApplyId, ControlRequestId) {
    use applyops::schema::apply_control_requests as reqs;
    use diesel::prelude::*;
    let (apply_id, ids, _) = held_rollout(conn, 2, Parallel, Halt);
    let id = request(conn, apply_id, None, Kind::Stop);
    diesel::update(reqs::table.find(id))
        .set(reqs::kind.eq(kind))
        .execute(conn)
        .unwrap();
    force_state(conn, ids[1], ApplyState::Pending);
    (apply_id, id)
}

fn an_unknown_stored_kind_is_a_typed_error(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, id) = stop_respelled(conn, "explode");
    assert!(matches!(control_requests::get(conn, id),
        Err(StoreError::UnknownValue { column: "kind", value, .. }) if value == "explode"));
    // And a claim fails closed: a pending request of a kind it does not know holds starts back.
    assert_eq!(claimed_id(conn), None);
}

// A stop stored in another spelling is not listed as a stop (the list is an error naming the row),
// and the claim does not start the operation past it either: reading and SQL agree, and both fail
// closed.
fn a_stop_in_another_spelling_fails_closed_everywhere(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = stop_respelled(conn, "STOP");
    assert!(matches!(control_requests::list_pending(conn, apply_id),
        Err(StoreError::UnknownValue { column: "kind", value, .. }) if value == "STOP"));
    assert_eq!(claimed_id(conn), None, "the operation does not start");
}

fn a_request_that_covers_nothing_completes_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    apply_operations::mark_completed(conn, ids[0]).unwrap();
    apply_operations::mark_completed(conn, ids[1]).unwrap();
    for kind in [Kind::Stop, Kind::Cancel, Kind::Start] {
        let req = ask(conn, apply_id, None, kind, None).unwrap();
        assert_eq!(req.status, ControlRequestStatus::Completed, "{kind}");
        assert!(req.completed_at.is_some());
    }
}

fn a_stop_stops_at_once_what_nobody_drives(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 4, Parallel, Continue);
    // ids[1] failed_retryable after two attempts; ids[2] running, its holder gone; ids[3] pending.
    force_started(conn, ids[1]);
    force_state(conn, ids[1], ApplyState::FailedRetryable);
    set_attempt(conn, ids[1], 2);
    force_state(conn, ids[2], ApplyState::Running);
    dead_lease(conn, ids[2]);
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(
        state(conn, ids[0]),
        ApplyState::Running,
        "its holder stops it"
    );
    for &id in &ids[1..] {
        let (op, token) = row(conn, id);
        assert_eq!(op.state, ApplyState::Stopped, "{id}");
        assert_eq!((op.lease_owner.as_str(), token.expose()), ("", ""));
        assert_eq!(op.lease_expires_at, None);
    }
    assert_eq!(row(conn, ids[1]).0.attempt, 2, "attempt is kept");
    assert!(row(conn, ids[1]).0.started_at.is_some());
    assert_eq!(
        row(conn, ids[3]).0.started_at,
        None,
        "never started, still not"
    );
    assert_eq!(status(conn, stop), ControlRequestStatus::Pending);
}

/// Sets an operation's attempt counter.
fn a_holder_stops_only_on_a_pending_stop_and_the_stop_completes_itself(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 2, Parallel, Halt);
    assert!(matches!(
        leases::update_state(conn, &held.lease, ApplyState::Stopped),
        Err(StoreError::NoPendingRequest { operation_id, kind: Kind::Stop }) if operation_id == ids[0]
    ));
    assert_eq!(state(conn, ids[0]), ApplyState::Running, "nothing written");
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(state(conn, ids[1]), ApplyState::Stopped);
    assert_eq!(status(conn, stop), ControlRequestStatus::Pending);
    leases::update_state(conn, &held.lease, ApplyState::Stopped).unwrap();
    assert_eq!(
        row(conn, ids[0]).1.expose(),
        "",
        "the lease goes with the state"
    );
    assert!(matches!(
        leases::mark_started(conn, &held.lease),
        Err(StoreError::LeaseLost { .. })
    ));
    let done = stored(conn, stop);
    assert_eq!(done.status, ControlRequestStatus::Completed);
    assert!(done.completed_at.is_some());
    assert_eq!(
        applies::get(conn, apply_id).unwrap().unwrap().state,
        ApplyState::Stopped
    );
}

fn a_stop_never_stops_a_cutover_in_flight(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 2, Parallel, Halt);
    leases::update_state(conn, &held.lease, ApplyState::CuttingOver).unwrap();
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(state(conn, ids[1]), ApplyState::Stopped);
    assert_eq!(
        status(conn, stop),
        ControlRequestStatus::Completed,
        "a cutover in flight is not covered: nothing is left to stop"
    );
    assert!(matches!(
        leases::update_state(conn, &held.lease, ApplyState::Stopped),
        Err(StoreError::NoPendingRequest { .. })
    ));
    leases::update_state(conn, &held.lease, ApplyState::RevertWindow).unwrap();
    leases::mark_completed(conn, &held.lease).unwrap();
    // With a stop pending (another holder keeps it so), a holder in cutting_over still may not
    // stop: the stop does not cover a cutover in flight.
    let (apply_id, _, first) = held_rollout(conn, 2, Parallel, Halt);
    let second = claim(conn, "other").unwrap();
    leases::update_state(conn, &first.lease, ApplyState::CuttingOver).unwrap();
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(status(conn, stop), ControlRequestStatus::Pending);
    assert!(matches!(
        leases::update_state(conn, &first.lease, ApplyState::Stopped),
        Err(StoreError::NoPendingRequest {
            kind: Kind::Stop,
            ..
        })
    ));
    leases::update_state(conn, &second.lease, ApplyState::Stopped).unwrap();
    assert_eq!(status(conn, stop), ControlRequestStatus::Completed);
}

fn while_a_stop_is_pending_a_holder_cannot_cut_over(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 1, Rolling, Halt);
    leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover).unwrap();
    ask(conn, apply_id, None, Kind::Stop, None).unwrap();
    assert!(matches!(
        leases::update_state(conn, &held.lease, ApplyState::CuttingOver),
        Err(StoreError::StopPending { operation_id, kind: Kind::Stop }) if operation_id == ids[0]
    ));
    assert_eq!(state(conn, ids[0]), ApplyState::WaitingForCutover);
}

fn a_start_resumes_what_was_stopped_and_completes_itself(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 2, Parallel, Halt);
    request(conn, apply_id, None, Kind::Stop);
    leases::update_state(conn, &held.lease, ApplyState::Stopped).unwrap();
    assert_eq!(state(conn, ids[1]), ApplyState::Stopped);
    let start = request(conn, apply_id, None, Kind::Start);
    assert_eq!(
        state(conn, ids[1]),
        ApplyState::Pending,
        "never started: back through the gates"
    );
    assert_eq!(
        state(conn, ids[0]),
        ApplyState::Stopped,
        "started: the resume claim's"
    );
    assert_eq!(status(conn, start), ControlRequestStatus::Pending);
    let resumed = claim(conn, "w").unwrap();
    assert_eq!(
        (resumed.operation.id, resumed.kind),
        (ids[0], ClaimKind::Resume)
    );
    assert_eq!(
        status(conn, start),
        ControlRequestStatus::Completed,
        "nothing stopped or paused is left"
    );
    let started = claim(conn, "w").unwrap();
    assert_eq!(
        (started.operation.id, started.kind),
        (ids[1], ClaimKind::Start)
    );
}

fn stop_and_start_supersede_each_other(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = held_rollout(conn, 2, Parallel, Halt);
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert!(
        matches!(
            ask(conn, apply_id, Some(ids[0]), Kind::Start, None),
            Err(StoreError::OppositeRequestPending { id, kind: Kind::Stop }) if id == stop
        ),
        "a narrower start waits for the whole-apply stop"
    );
    let start = request(conn, apply_id, None, Kind::Start);
    let superseded = stored(conn, stop);
    assert_eq!(superseded.status, ControlRequestStatus::Failed);
    assert_eq!(
        superseded.result.as_deref(),
        Some(format!("superseded by {start}").as_str())
    );
    assert_eq!(
        status(conn, start),
        ControlRequestStatus::Completed,
        "ids[1] is pending again"
    );
    // An operation's stop supersedes that operation's start, and only it.
    force_started(conn, ids[1]);
    force_state(conn, ids[1], ApplyState::Stopped);
    let start_one = request(conn, apply_id, Some(ids[1]), Kind::Start);
    assert_eq!(
        status(conn, start_one),
        ControlRequestStatus::Pending,
        "the resume claim's"
    );
    let stop_one = request(conn, apply_id, Some(ids[1]), Kind::Stop);
    let superseded = stored(conn, start_one);
    assert_eq!(superseded.status, ControlRequestStatus::Failed);
    assert_eq!(
        superseded.result.as_deref(),
        Some(format!("superseded by {stop_one}").as_str())
    );
    assert_eq!(claimed_id(conn), None, "nothing resumes it now");
    let pending: Vec<_> = control_requests::list_pending(conn, apply_id)
        .unwrap()
        .iter()
        .map(|r| (r.kind, r.apply_operation_id))
        .collect();
    assert!(
        !(pending.contains(&(Kind::Stop, Some(ids[1])))
            && pending.contains(&(Kind::Start, Some(ids[1])))),
        "never two opposite requests pending for one operation: {pending:?}"
    );
}

fn a_cancel_cancels_what_nobody_drives_and_its_holder_cancels_the_rest(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 3, Parallel, Halt);
    force_started(conn, ids[1]);
    force_state(conn, ids[1], ApplyState::Stopped);
    let cancel = request(conn, apply_id, None, Kind::Cancel);
    for &id in &ids[1..] {
        let op = row(conn, id).0;
        assert_eq!(op.state, ApplyState::Cancelled);
        assert!(op.completed_at.is_some());
        assert!(!op.holds_target, "a cancelled operation lets its target go");
    }
    assert_eq!(status(conn, cancel), ControlRequestStatus::Pending);
    assert!(matches!(
        leases::update_state(conn, &held.lease, ApplyState::Stopped),
        Err(StoreError::NoPendingRequest {
            kind: Kind::Stop,
            ..
        })
    ));
    leases::mark_terminal(conn, &held.lease, ApplyState::Cancelled).unwrap();
    assert_eq!(status(conn, cancel), ControlRequestStatus::Completed);
    assert_eq!(
        applies::get(conn, apply_id).unwrap().unwrap().state,
        ApplyState::Cancelled
    );
}

fn a_release_lets_through_only_the_failures_before_it(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 3, Parallel, Pause);
    let first = claim(conn, "w").unwrap();
    let second = claim(conn, "w").unwrap();
    leases::mark_failed(conn, &first.lease, "one").unwrap();
    assert_eq!(claimed_id(conn), None, "paused by failure 1");
    let release = ask(conn, apply_id, None, Kind::Release, None).unwrap();
    assert_eq!(
        release.status,
        ControlRequestStatus::Completed,
        "carried out when recorded"
    );
    assert_eq!(release.releases_through, Some(1));
    assert_eq!(row(conn, ids[0]).0.failure_seq, Some(1));
    // A second failure after the release pauses the rollout again.
    leases::mark_failed(conn, &second.lease, "two").unwrap();
    assert_eq!(row(conn, ids[1]).0.failure_seq, Some(2));
    assert_eq!(claimed_id(conn), None, "failure 2 came after the release");
    assert_eq!(
        applies::blockers(conn, apply_id).unwrap(),
        [(
            ids[2],
            applyops::store::claims::Blocker::PausedUntilRelease { id: ids[1] }
        )]
    );
    let again = ask(conn, apply_id, Some(ids[2]), Kind::Release, None).unwrap();
    assert_eq!(again.releases_through, Some(2));
    assert_eq!(
        claimed_id(conn),
        Some(ids[2]),
        "one release for both failures"
    );
}

fn a_release_naming_an_operation_no_failure_holds_back_is_rejected(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Pause);
    assert_rejected(
        ask(conn, apply_id, Some(ids[1]), Kind::Release, None),
        Kind::Release,
    );
    assert!(control_requests::list_pending(conn, apply_id)
        .unwrap()
        .is_empty());
}

fn a_retry_makes_a_failed_operation_retryable_from_attempt_zero(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 1, Rolling, Halt);
    set_attempt(conn, ids[0], 3);
    leases::mark_failed(conn, &held.lease, "disk full").unwrap();
    let retry = ask(
        conn,
        apply_id,
        Some(ids[0]),
        Kind::Retry,
        Some("disk grown"),
    )
    .unwrap();
    assert_eq!(retry.status, ControlRequestStatus::Completed);
    assert_eq!(
        retry.result.as_deref(),
        Some("disk full"),
        "the error moved here"
    );
    assert_eq!(retry.reason.as_deref(), Some("disk grown"));
    let (op, token) = row(conn, ids[0]);
    assert_eq!(op.state, ApplyState::FailedRetryable);
    assert_eq!(
        (op.attempt, op.error_message, op.completed_at),
        (0, None, None)
    );
    assert_eq!((op.failure_seq, token.expose()), (None, ""));
    assert!(op.holds_target);
    let retried = claim(conn, "w").unwrap();
    assert_eq!(
        (retried.kind, retried.operation.attempt),
        (ClaimKind::Retry, 1)
    );
}

fn a_retry_is_rejected_unless_the_operation_failed_and_nothing_holds_it_back(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    assert_rejected(
        ask(conn, apply_id, Some(ids[0]), Kind::Retry, None),
        Kind::Retry,
    );
    assert_rejected(ask(conn, apply_id, None, Kind::Retry, None), Kind::Retry);
    apply_operations::mark_failed(conn, ids[0], "first").unwrap();
    apply_operations::mark_failed(conn, ids[1], "second").unwrap();
    assert!(matches!(
        ask(conn, apply_id, Some(ids[1]), Kind::Retry, None),
        Err(StoreError::HaltedBy { operation_id, by }) if operation_id == ids[1] && by == ids[0]
    ));
    assert_eq!(state(conn, ids[1]), ApplyState::Failed, "nothing written");
    // Another apply took the target once the first settled: TargetBusy.
    let (other, _) = {
        let new = applyops::models::NewApply::new(
            "taker",
            applies::get(conn, apply_id).unwrap().unwrap().database_name,
            "production",
            "main",
        );
        let other = applies::insert(conn, &new).unwrap();
        let deployment = row(conn, ids[0]).0.deployment;
        let op = apply_operations::insert(
            conn,
            &applyops::models::NewApplyOperation::new(other, deployment),
        )
        .unwrap();
        (other, op)
    };
    assert!(matches!(
        ask(conn, apply_id, Some(ids[0]), Kind::Retry, None),
        Err(StoreError::TargetBusy { apply_id: holder, .. }) if holder == other
    ));
    assert_eq!(state(conn, ids[0]), ApplyState::Failed);
}

/// An operation in `revert_window` under a live lease held by "holder".
fn in_window(
    conn: &mut DbConnection,
    n: usize,
) -> (ApplyId, Vec<ApplyOperationId>, ClaimedOperation) {
    let (apply_id, ids, held) = held_rollout(conn, n, Parallel, Halt);
    leases::update_state(conn, &held.lease, ApplyState::RevertWindow).unwrap();
    (apply_id, ids, held)
}

fn a_revert_is_taken_by_the_cutover_claims_revert_arm(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = in_window(conn, 1);
    let revert = request(conn, apply_id, Some(ids[0]), Kind::Revert);
    assert!(matches!(
        leases::mark_completed(conn, &held.lease),
        Err(StoreError::RevertPending {
            kind: Kind::Revert,
            ..
        })
    ));
    assert_eq!(cutover_id(conn), None, "its holder still has it");
    leases::release(conn, &held.lease).unwrap();
    let reverting = claim_cutover(conn, "reverter").unwrap();
    assert_eq!(
        (
            reverting.operation.id,
            reverting.kind,
            reverting.operation.state
        ),
        (ids[0], ClaimKind::Revert, ApplyState::Reverting)
    );
    assert_eq!(status(conn, revert), ControlRequestStatus::Pending);
    leases::mark_terminal(conn, &reverting.lease, ApplyState::Reverted).unwrap();
    assert_eq!(status(conn, revert), ControlRequestStatus::Completed);
    assert_eq!(claimed_id(conn), None);
}

fn a_skip_revert_closes_the_window_and_a_revert_fails_when_it_closes(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = in_window(conn, 1);
    let skip = request(conn, apply_id, Some(ids[0]), Kind::SkipRevert);
    leases::release(conn, &held.lease).unwrap();
    let skipping = claim_cutover(conn, "w").unwrap();
    assert_eq!(
        (skipping.kind, skipping.operation.state),
        (ClaimKind::SkipRevert, ApplyState::SkippingRevert)
    );
    leases::mark_completed(conn, &skipping.lease).unwrap();
    assert_eq!(status(conn, skip), ControlRequestStatus::Completed);

    let (apply_id, ids, _) = in_window(conn, 1);
    let revert = request(conn, apply_id, Some(ids[0]), Kind::Revert);
    // An operator closes the window by hand: the revert can no longer happen.
    apply_operations::mark_completed(conn, ids[0]).unwrap();
    let failed = stored(conn, revert);
    assert_eq!(failed.status, ControlRequestStatus::Failed);
    assert_eq!(failed.result.as_deref(), Some("window closed"));
}

fn a_whole_apply_revert_is_one_request_per_operation_in_the_window(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, _) = in_window(conn, 3);
    let second = claim(conn, "w").unwrap();
    leases::update_state(conn, &second.lease, ApplyState::RevertWindow).unwrap();
    let first = ask(conn, apply_id, None, Kind::Revert, None).unwrap();
    assert_eq!(first.apply_operation_id, Some(ids[0]));
    let reverts: Vec<_> = control_requests::list_pending(conn, apply_id)
        .unwrap()
        .iter()
        .map(|r| (r.kind, r.apply_operation_id))
        .collect();
    assert_eq!(
        reverts,
        [(Kind::Revert, Some(ids[0])), (Kind::Revert, Some(ids[1]))]
    );
    assert_rejected(
        ask(conn, apply_id, Some(ids[2]), Kind::Revert, None),
        Kind::Revert,
    );
    let (none_in_window, _) = rollout(conn, 1, Rolling, Halt);
    assert_rejected(
        ask(conn, none_in_window, None, Kind::SkipRevert, None),
        Kind::SkipRevert,
    );
}

fn a_holder_keeps_an_operation_in_revert_window(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids, held) = in_window(conn, 1);
    assert!(matches!(
        leases::release(conn, &held.lease),
        Err(StoreError::HeldInRevertWindow { operation_id }) if operation_id == ids[0]
    ));
    assert_eq!(row(conn, ids[0]).1, held.lease.token, "still held");
    leases::mark_completed(conn, &held.lease).unwrap();
}

fn a_cutover_request_needs_an_apply_that_defers_cutover(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 2, Parallel, Halt);
    assert_rejected(
        ask(conn, apply_id, None, Kind::Cutover, None),
        Kind::Cutover,
    );
}

fn defer_cutover_parks_rolling_and_lone_operations_for_the_cutover_claim(db: &TestDb) {
    let conn = &mut db.conn();
    let apply_id = apply(conn, true);
    let id = apply_operations::insert(
        conn,
        &applyops::models::NewApplyOperation::new(apply_id, "only"),
    )
    .unwrap();
    let held = claim(conn, "w").unwrap();
    leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover).unwrap();
    assert!(matches!(
        leases::update_state(conn, &held.lease, ApplyState::CuttingOver),
        Err(StoreError::CutoverDeferred { operation_id }) if operation_id == id
    ));
    leases::release(conn, &held.lease).unwrap();
    assert_eq!(
        claimed_id(conn),
        None,
        "the copy claim's recovery leaves it parked"
    );
    assert_eq!(cutover_id(conn), None, "no request yet");
    request(conn, apply_id, None, Kind::Cutover);
    let cut = claim_cutover(conn, "w").unwrap();
    assert_eq!((cut.operation.id, cut.kind), (id, ClaimKind::Cutover));
}

fn writes_into_unheld_states_clear_the_lease(db: &TestDb) {
    let conn = &mut db.conn();
    for parked in [
        ApplyState::Paused,
        ApplyState::FailedRetryable,
        ApplyState::Pending,
    ] {
        let (_, ids, held) = held_rollout(conn, 1, Rolling, Halt);
        leases::update_state(conn, &held.lease, parked).unwrap();
        let (op, token) = row(conn, ids[0]);
        assert_eq!(
            (op.lease_owner.as_str(), token.expose()),
            ("", ""),
            "{parked}"
        );
        assert_eq!((op.lease_acquired_at, op.lease_expires_at), (None, None));
        assert!(matches!(
            leases::mark_started(conn, &held.lease),
            Err(StoreError::LeaseLost { .. })
        ));
        apply_operations::mark_terminal(conn, ids[0], ApplyState::Cancelled).unwrap();
    }
    // An operator's write fences a holder that stalled.
    let (_, ids, held) = held_rollout(conn, 1, Rolling, Halt);
    apply_operations::update_state(conn, ids[0], ApplyState::Stopped).unwrap();
    assert!(matches!(
        leases::mark_completed(conn, &held.lease),
        Err(StoreError::LeaseLost { .. })
    ));
}

fn pending_requests_lists_what_covers_the_held_operation(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids, held) = held_rollout(conn, 2, Parallel, Halt);
    assert!(leases::pending_requests(conn, &held.lease)
        .unwrap()
        .is_empty());
    request(conn, apply_id, Some(ids[1]), Kind::Cancel);
    assert!(
        leases::pending_requests(conn, &held.lease)
            .unwrap()
            .is_empty(),
        "another operation's request"
    );
    force_state(conn, ids[1], ApplyState::Running);
    live_lease(conn, ids[1]);
    request(conn, apply_id, Some(ids[1]), Kind::Cancel);
    request(conn, apply_id, None, Kind::Stop);
    request(conn, apply_id, Some(ids[0]), Kind::Cancel);
    assert_eq!(
        leases::pending_requests(conn, &held.lease).unwrap(),
        [Kind::Stop, Kind::Cancel]
    );
}
