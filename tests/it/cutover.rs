//! The cutover claim (`claim_next_cutover`): automatic, operator-directed and recovery.

use applyops::models::{ApplyId, ApplyOperationId, ControlRequestId, NewApplyOperation};
use applyops::state::{
    ApplyState, ControlRequestKind as Kind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
};
use applyops::store::claims::ClaimKind;
use applyops::store::{applies, apply_operations, control_requests};

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

use CutoverPolicy::{Barrier, Parallel, Rolling};
use FailurePolicy::{Continue, Halt, Pause};

/// An apply with `defer_cutover` and `deployments` barrier operations, all waiting for cutover.
fn deferred_waiting(
    conn: &mut applyops::DbConnection,
    deployments: usize,
) -> (ApplyId, Vec<ApplyOperationId>) {
    let apply_id = apply(conn, true);
    let ids: Vec<_> = (0..deployments)
        .map(|i| {
            let new = NewApplyOperation::new(apply_id, format!("deployment-{i}"))
                .with_cutover_policy(Barrier);
            apply_operations::insert(conn, &new).unwrap()
        })
        .collect();
    for id in &ids {
        force_state(conn, *id, ApplyState::WaitingForCutover);
    }
    (apply_id, ids)
}

fn status(conn: &mut applyops::DbConnection, request: ControlRequestId) -> ControlRequestStatus {
    control_requests::get(conn, request)
        .unwrap()
        .unwrap()
        .status
}

backend_tests!(
    automatic_cutover_takes_the_first_waiting_operation,
    automatic_cutover_waits_until_every_earlier_sibling_completed,
    rolling_operations_and_single_operation_applies_are_not_cutover_claims,
    a_failed_earlier_sibling_blocks_cutover_under_halt_only,
    pause_blocks_cutover_until_a_release,
    a_pending_stop_blocks_automatic_cutover,
    a_live_lease_is_not_cutover_claimed,
    deferred_cutover_waits_for_an_operator_request,
    an_operator_cuts_over_the_third_deployment_while_the_first_two_wait,
    an_operation_request_does_not_bypass_the_stop_gate,
    a_whole_apply_request_keeps_the_order_and_completes_with_the_last_waiting,
    cutover_recovery_rotates_an_expired_lease_keeping_the_state,
);

fn automatic_cutover_takes_the_first_waiting_operation(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Barrier, Halt);
    force_state(conn, ids[0], ApplyState::WaitingForCutover);
    force_state(conn, ids[1], ApplyState::WaitingForCutover);
    let claimed = claim_cutover(conn, "w").expect("the first cuts over");
    assert_eq!(
        (claimed.operation.id, claimed.kind),
        (ids[0], ClaimKind::Cutover)
    );
    assert_eq!(claimed.previous_state, ApplyState::WaitingForCutover);
    assert_eq!(claimed.operation.state, ApplyState::CuttingOver);
    assert_eq!(
        row(conn, ids[0]),
        (claimed.operation.clone(), claimed.lease.token.clone())
    );
    assert_eq!(
        cutover_id(conn),
        None,
        "the second waits for the first to complete"
    );
}

fn automatic_cutover_waits_until_every_earlier_sibling_completed(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Parallel, Halt);
    force_state(conn, ids[1], ApplyState::WaitingForCutover);
    for state in [
        ApplyState::Running,
        ApplyState::WaitingForCutover,
        ApplyState::CuttingOver,
        ApplyState::RevertWindow,
    ] {
        force_state(conn, ids[0], state);
        dead_lease(conn, ids[0]);
        // Recovery would take the earlier sibling in cutting_over/revert_window: only ids[1] counts.
        assert_ne!(cutover_id(conn), Some(ids[1]), "sibling {state} blocks");
        force_state(conn, ids[1], ApplyState::WaitingForCutover);
    }
    force_state(conn, ids[0], ApplyState::Completed);
    assert_eq!(cutover_id(conn), Some(ids[1]));
}

fn rolling_operations_and_single_operation_applies_are_not_cutover_claims(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, rolling) = rollout(conn, 2, Rolling, Halt);
    force_state(conn, rolling[0], ApplyState::WaitingForCutover);
    let (_, single) = rollout(conn, 1, Barrier, Halt);
    force_state(conn, single[0], ApplyState::WaitingForCutover);
    assert_eq!(cutover_id(conn), None);
}

fn a_failed_earlier_sibling_blocks_cutover_under_halt_only(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, halt) = rollout(conn, 2, Barrier, Halt);
    apply_operations::mark_failed(conn, halt[0], "boom").unwrap();
    force_state(conn, halt[1], ApplyState::WaitingForCutover);
    assert_eq!(cutover_id(conn), None, "halt");
    let (_, cont) = rollout(conn, 2, Barrier, Continue);
    apply_operations::mark_failed(conn, cont[0], "boom").unwrap();
    force_state(conn, cont[1], ApplyState::WaitingForCutover);
    assert_eq!(cutover_id(conn), Some(cont[1]), "continue");
}

fn pause_blocks_cutover_until_a_release(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Pause);
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    force_state(conn, ids[1], ApplyState::WaitingForCutover);
    assert_eq!(cutover_id(conn), None);
    request(conn, apply_id, None, Kind::Release);
    assert_eq!(cutover_id(conn), Some(ids[1]));
}

fn a_pending_stop_blocks_automatic_cutover(db: &TestDb) {
    // Revision 2: the copier still holds ids[0] at waiting_for_cutover when the stop is recorded;
    // once it lets go, the cutover claim stops it in place instead of cutting it over.
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Barrier, Halt);
    let held = claim(conn, "copier").unwrap();
    applyops::store::leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover)
        .unwrap();
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(
        row(conn, ids[1]).0.state,
        ApplyState::Stopped,
        "nobody drove it"
    );
    applyops::store::leases::release(conn, &held.lease).unwrap();
    assert_eq!(cutover_id(conn), None);
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::Stopped);
    assert_eq!(status(conn, stop), ControlRequestStatus::Completed);
}

fn a_live_lease_is_not_cutover_claimed(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Barrier, Halt);
    let held = claim(conn, "copier").unwrap();
    assert_eq!(held.operation.id, ids[0]);
    applyops::store::leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover)
        .unwrap();
    assert_eq!(cutover_id(conn), None, "the copier still holds it");
    applyops::store::leases::release(conn, &held.lease).unwrap();
    assert_eq!(cutover_id(conn), Some(ids[0]));
}

fn deferred_cutover_waits_for_an_operator_request(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = deferred_waiting(conn, 2);
    assert_eq!(
        cutover_id(conn),
        None,
        "defer_cutover turns automatic cutover off"
    );
    applies::set_defer_cutover(conn, apply_id, false).unwrap();
    assert_eq!(cutover_id(conn), Some(ids[0]), "and back on");
}

fn an_operator_cuts_over_the_third_deployment_while_the_first_two_wait(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = deferred_waiting(conn, 3);
    let third = request(conn, apply_id, Some(ids[2]), Kind::Cutover);
    let claimed = claim_cutover(conn, "w").expect("the named operation cuts over");
    assert_eq!(
        (claimed.operation.id, claimed.kind),
        (ids[2], ClaimKind::Cutover)
    );
    assert_eq!(
        status(conn, third),
        ControlRequestStatus::Completed,
        "completed in the claim's transaction"
    );
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::WaitingForCutover);
    assert_eq!(row(conn, ids[1]).0.state, ApplyState::WaitingForCutover);
    assert_eq!(cutover_id(conn), None, "the others keep waiting");
}

fn an_operation_request_does_not_bypass_the_stop_gate(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = deferred_waiting(conn, 2);
    live_lease(conn, ids[1]);
    request(conn, apply_id, Some(ids[1]), Kind::Cutover);
    let stop = request(conn, apply_id, None, Kind::Stop);
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::Stopped);
    expire_lease(conn, ids[1]);
    assert_eq!(cutover_id(conn), None, "stopped in place, not cut over");
    assert_eq!(row(conn, ids[1]).0.state, ApplyState::Stopped);
    assert_eq!(status(conn, stop), ControlRequestStatus::Completed);
}

fn a_whole_apply_request_keeps_the_order_and_completes_with_the_last_waiting(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = deferred_waiting(conn, 2);
    let whole = request(conn, apply_id, None, Kind::Cutover);
    let first = claim_cutover(conn, "w").unwrap();
    assert_eq!(first.operation.id, ids[0]);
    assert_eq!(
        status(conn, whole),
        ControlRequestStatus::Pending,
        "another operation still waits"
    );
    assert_eq!(
        cutover_id(conn),
        None,
        "the second waits for the first to complete"
    );
    applyops::store::leases::mark_completed(conn, &first.lease).unwrap();
    assert_eq!(cutover_id(conn), Some(ids[1]));
    assert_eq!(status(conn, whole), ControlRequestStatus::Completed);
}

fn cutover_recovery_rotates_an_expired_lease_keeping_the_state(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Barrier, Halt);
    force_state(conn, ids[0], ApplyState::WaitingForCutover);
    let first = claim_cutover(conn, "a").unwrap();
    expire_lease(conn, ids[0]);
    let again = claim_cutover(conn, "b").expect("expired cutting_over is recovered");
    assert_eq!(
        (again.operation.id, again.kind),
        (ids[0], ClaimKind::Recovery)
    );
    assert_eq!(again.operation.state, ApplyState::CuttingOver);
    assert_ne!(again.lease.token, first.lease.token);
    applyops::store::leases::update_state(conn, &again.lease, ApplyState::RevertWindow).unwrap();
    expire_lease(conn, ids[0]);
    let third = claim_cutover(conn, "c").expect("expired revert_window is recovered");
    assert_eq!(third.operation.state, ApplyState::RevertWindow);
}
