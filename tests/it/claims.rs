//! The copy claim (`claim_next`): one test per rule of the worker contract, on both backends.

use std::time::Duration;

use applyops::models::ApplyOperationId;
use applyops::state::{ApplyState, ControlRequestKind as Kind, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{self, ClaimKind, ClaimOptions};
use applyops::store::{apply_operations, control_requests, leases};
use applyops::StoreError;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

use CutoverPolicy::{Barrier, Parallel, Rolling};
use FailurePolicy::{Continue, Halt, Pause};

backend_tests!(
    claims_pending_and_persists_the_lease,
    a_second_claim_gets_nothing,
    skips_a_live_lease_and_takes_the_next_row,
    claims_the_oldest_claimable_row_first,
    steals_an_expired_lease_keeping_the_state,
    after_a_steal_every_write_through_the_old_lease_is_lease_lost,
    never_claims_a_completing_state_or_stopped_even_long_expired,
    never_claims_paused,
    an_unknown_state_is_never_claimed,
    stopped_with_a_pending_start_resumes,
    a_start_naming_the_operation_resumes_only_it,
    stopped_with_a_completed_start_does_not_resume,
    failed_retryable_within_budget_is_retried_with_attempt_plus_one,
    failed_retryable_at_the_budget_is_not_retried,
    an_exhausted_retry_does_not_hold_back_younger_rows,
    a_pending_stop_blocks_a_retry,
    rolling_waits_for_every_earlier_sibling_to_complete,
    barrier_passes_a_sibling_at_the_barrier_but_not_a_running_one,
    parallel_passes_a_running_sibling,
    an_unknown_cutover_policy_waits_like_rolling,
    an_unknown_policy_row_does_not_stop_other_claims,
    halt_blocks_on_a_failed_sibling,
    continue_passes_a_failed_sibling,
    pause_blocks_on_a_failed_sibling_until_a_release,
    a_failed_release_keeps_a_paused_rollout_blocked,
    an_unknown_failure_policy_blocks_like_halt,
    a_pending_stop_blocks_starts_but_not_recovery,
    a_stopped_apply_does_not_hold_back_another_apply,
    the_token_fences_a_worker_that_reclaims_under_the_same_name,
    a_stop_naming_one_operation_gates_only_it,
    a_start_request_does_not_bypass_the_order,
    a_blocked_rollout_does_not_hold_back_another_apply,
    recovery_takes_waiting_for_cutover_only_where_the_copy_claim_cuts_over,
    recovery_takes_every_active_state,
    a_released_operation_is_claimable_at_once,
    bad_claim_options_are_rejected_before_any_sql,
);

fn claims_pending_and_persists_the_lease(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let claimed = claim(conn, "worker-1").expect("a pending operation is claimable");
    assert_eq!(claimed.kind, ClaimKind::Start);
    assert_eq!(claimed.previous_state, ApplyState::Pending);
    assert_eq!(
        (claimed.lease.operation_id, claimed.lease.apply_id),
        (ids[0], apply_id)
    );
    assert_eq!(claimed.lease.owner, "worker-1");
    assert_eq!(claimed.lease.token.expose().len(), 32);
    assert_eq!(
        claimed.lease.expires_at - claimed.lease.acquired_at,
        chrono::Duration::seconds(60)
    );

    let (stored, token) = row(conn, ids[0]);
    assert_eq!(
        stored, claimed.operation,
        "the claim returns the row as stored"
    );
    assert_eq!(token, claimed.lease.token);
    assert_eq!(stored.state, ApplyState::Running);
    assert_eq!(stored.lease_owner, "worker-1");
    assert_eq!(stored.lease_expires_at, Some(claimed.lease.expires_at));
    assert_eq!(
        stored.started_at,
        Some(claimed.lease.acquired_at),
        "started_at is stamped by the start"
    );
}

fn a_second_claim_gets_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    rollout(conn, 1, Rolling, Halt);
    assert!(claim(conn, "a").is_some());
    assert!(claim(conn, "b").is_none());
}

fn skips_a_live_lease_and_takes_the_next_row(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, first) = rollout(conn, 1, Rolling, Halt);
    let (_, second) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "a").unwrap();
    assert_eq!(held.operation.id, first[0]);
    // `running` with a live lease is recoverable by state, but the lease is live.
    assert_eq!(claimed_id(conn), Some(second[0]));
    assert_eq!(claimed_id(conn), None);
}

fn claims_the_oldest_claimable_row_first(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, a) = rollout(conn, 1, Rolling, Halt);
    let (_, b) = rollout(conn, 1, Rolling, Halt);
    let (_, c) = rollout(conn, 1, Rolling, Halt);
    force_state(conn, b[0], ApplyState::Running); // recovery arm, no lease
    assert_eq!(claimed_id(conn), Some(a[0]));
    assert_eq!(claimed_id(conn), Some(b[0]));
    assert_eq!(claimed_id(conn), Some(c[0]));
}

fn steals_an_expired_lease_keeping_the_state(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let old = claim(conn, "old").unwrap();
    leases::update_state(conn, &old.lease, ApplyState::RunningDegraded).unwrap();
    expire_lease(conn, ids[0]);
    let stolen = claim(conn, "new").expect("an expired lease is stolen");
    assert_eq!(stolen.kind, ClaimKind::Recovery);
    assert_eq!(stolen.previous_state, ApplyState::RunningDegraded);
    assert_eq!(
        stolen.operation.state,
        ApplyState::RunningDegraded,
        "state kept"
    );
    assert_ne!(
        stolen.lease.token, old.lease.token,
        "a steal mints a new token"
    );
    assert_eq!(row(conn, ids[0]).1, stolen.lease.token);
    assert_eq!(
        stolen.operation.started_at, old.operation.started_at,
        "started_at not re-stamped"
    );
}

fn after_a_steal_every_write_through_the_old_lease_is_lease_lost(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let mut old = claim(conn, "old").unwrap();
    expire_lease(conn, ids[0]);
    let new = claim(conn, "new").unwrap();
    let before = row(conn, ids[0]);
    let lost = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::LeaseLost { operation_id }) => assert_eq!(operation_id, ids[0], "{what}"),
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    };
    lost(
        leases::update_state(conn, &old.lease, ApplyState::Paused),
        "update_state",
    );
    lost(leases::mark_started(conn, &old.lease), "mark_started");
    lost(leases::mark_completed(conn, &old.lease), "mark_completed");
    lost(leases::mark_failed(conn, &old.lease, "boom"), "mark_failed");
    lost(
        leases::mark_terminal(conn, &old.lease, ApplyState::Cancelled),
        "mark_terminal",
    );
    lost(
        leases::heartbeat(conn, &mut old.lease).map(|_| ()),
        "heartbeat",
    );
    lost(leases::release(conn, &old.lease), "release");
    assert_eq!(row(conn, ids[0]), before, "the old holder changed nothing");
    leases::mark_completed(conn, &new.lease).expect("the new holder still writes");
}

fn never_claims_a_completing_state_or_stopped_even_long_expired(db: &TestDb) {
    let conn = &mut db.conn();
    for state in [
        ApplyState::Completed,
        ApplyState::Failed,
        ApplyState::Cancelled,
        ApplyState::Reverted,
        ApplyState::Stopped,
    ] {
        let (_, ids) = rollout(conn, 1, Parallel, Continue);
        force_state(conn, ids[0], state);
        dead_lease(conn, ids[0]);
    }
    assert_eq!(claimed_id(conn), None);
}

fn never_claims_paused(db: &TestDb) {
    // Revision 2, point 13: paused is claimed only by the resume claim on a pending start.
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    force_started(conn, ids[0]);
    force_state(conn, ids[0], ApplyState::Paused);
    dead_lease(conn, ids[0]);
    assert_eq!(claimed_id(conn), None, "not without a start");
    request(conn, apply_id, None, Kind::Start);
    let resumed = claim(conn, "w").expect("the resume claim takes it");
    assert_eq!(
        (
            resumed.kind,
            resumed.previous_state,
            resumed.operation.state
        ),
        (ClaimKind::Resume, ApplyState::Paused, ApplyState::Resuming)
    );
}

fn an_unknown_state_is_never_claimed(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    force_raw_state(conn, ids[0], "exploded");
    assert_eq!(claimed_id(conn), None);
}

fn stopped_with_a_pending_start_resumes(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    force_started(conn, ids[0]);
    force_state(conn, ids[0], ApplyState::Stopped);
    assert_eq!(claimed_id(conn), None, "stopped without a start stays put");
    request(conn, apply_id, None, Kind::Start);
    let resumed = claim(conn, "w").expect("a pending start resumes it");
    assert_eq!(resumed.kind, ClaimKind::Resume);
    assert_eq!(resumed.previous_state, ApplyState::Stopped);
    assert_eq!(resumed.operation.state, ApplyState::Resuming);
}

fn a_start_naming_the_operation_resumes_only_it(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    for &id in &ids {
        force_started(conn, id);
        force_state(conn, id, ApplyState::Stopped);
    }
    request(conn, apply_id, Some(ids[1]), Kind::Start);
    assert_eq!(claimed_id(conn), Some(ids[1]));
    assert_eq!(claimed_id(conn), None);
}

fn stopped_with_a_completed_start_does_not_resume(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    force_started(conn, ids[0]);
    force_state(conn, ids[0], ApplyState::Stopped);
    let start = request(conn, apply_id, None, Kind::Start);
    control_requests::complete(conn, start).unwrap();
    assert_eq!(claimed_id(conn), None);
}

fn failed_retryable_within_budget_is_retried_with_attempt_plus_one(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let first = claim(conn, "w").unwrap();
    leases::update_state(conn, &first.lease, ApplyState::FailedRetryable).unwrap();
    diesel::RunQueryDsl::execute(
        diesel::update(diesel::QueryDsl::find(
            applyops::schema::apply_operations::table,
            ids[0],
        ))
        .set(diesel::ExpressionMethods::eq(
            applyops::schema::apply_operations::error_message,
            Some("transient"),
        )),
        conn,
    )
    .unwrap();
    assert_eq!(
        row(conn, ids[0]).1.expose(),
        "",
        "failed_retryable clears the lease in the same write"
    );
    let retried = claim(conn, "w").expect("retried within budget");
    assert_eq!(retried.kind, ClaimKind::Retry);
    assert_eq!(retried.previous_state, ApplyState::FailedRetryable);
    assert_eq!(retried.operation.state, ApplyState::Running);
    assert_eq!(retried.operation.attempt, 1);
    assert_eq!(
        retried.operation.error_message, None,
        "error message cleared"
    );
    assert_eq!(row(conn, ids[0]).0, retried.operation);
}

fn failed_retryable_at_the_budget_is_not_retried(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply, ids) = rollout(conn, 1, Rolling, Halt);
    set_max_attempts(conn, apply, 2);
    force_state(conn, ids[0], ApplyState::FailedRetryable);
    let budget = ClaimOptions::new("w", TTL);
    for attempt in 1..=2 {
        let retried = claims::claim_next(conn, &budget)
            .unwrap()
            .expect("below the budget");
        assert_eq!(retried.operation.attempt, attempt);
        leases::update_state(conn, &retried.lease, ApplyState::FailedRetryable).unwrap();
    }
    let (exhausted, _) = row(conn, ids[0]);
    assert_eq!(
        (exhausted.state, exhausted.error_message.as_deref()),
        (
            ApplyState::Failed,
            Some("retry budget exhausted after 2 attempts")
        ),
        "a write of failed_retryable with no attempt left stores failed"
    );
    force_state(conn, ids[0], ApplyState::FailedRetryable);
    assert!(
        claims::claim_next(conn, &budget).unwrap().is_none(),
        "attempt 2 is at the budget"
    );
    set_max_attempts(conn, apply, 0);
    assert!(
        claims::claim_next(conn, &budget).unwrap().is_none(),
        "a budget of 0 turns retries off"
    );
}

fn an_exhausted_retry_does_not_hold_back_younger_rows(db: &TestDb) {
    let conn = &mut db.conn();
    let (spent, exhausted) = rollout(conn, 1, Rolling, Halt);
    set_max_attempts(conn, spent, 1);
    force_state(conn, exhausted[0], ApplyState::FailedRetryable);
    set_attempt(conn, exhausted[0], 1);
    let (_, fresh) = rollout(conn, 1, Rolling, Halt);
    let budget = ClaimOptions::new("w", TTL);
    let claimed = claims::claim_next(conn, &budget)
        .unwrap()
        .map(|c| c.operation.id);
    assert_eq!(claimed, Some(fresh[0]));
}

fn a_pending_stop_blocks_a_retry(db: &TestDb) {
    // A retry recorded while a stop covering the operation is pending leaves it stopped at once (it
    // is failed_retryable, which a stop covers, and nobody holds it): no retry claim takes it.
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Continue);
    let running = claim(conn, "w").unwrap();
    let failing = claim(conn, "w").unwrap();
    assert_eq!(
        (running.operation.id, failing.operation.id),
        (ids[0], ids[1])
    );
    leases::mark_failed(conn, &failing.lease, "boom").unwrap();
    let stop = request(conn, apply_id, None, Kind::Stop);
    request(conn, apply_id, Some(ids[1]), Kind::Retry);
    assert_eq!(row(conn, ids[1]).0.state, ApplyState::Stopped);
    assert_eq!(claimed_id(conn), None);
    assert_eq!(
        control_requests::get(conn, stop).unwrap().unwrap().status,
        applyops::state::ControlRequestStatus::Pending,
        "ids[0] still runs under its lease"
    );
}

fn rolling_waits_for_every_earlier_sibling_to_complete(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, Rolling, Halt);
    let first = claim(conn, "w").unwrap();
    assert_eq!(first.operation.id, ids[0]);
    for state in [
        ApplyState::WaitingForCutover,
        ApplyState::CuttingOver,
        ApplyState::RevertWindow,
    ] {
        leases::update_state(conn, &first.lease, state).unwrap();
        assert_eq!(
            claimed_id(conn),
            None,
            "second waits while the first is {state}"
        );
    }
    leases::mark_completed(conn, &first.lease).unwrap();
    assert_eq!(claimed_id(conn), Some(ids[1]));
    assert_eq!(claimed_id(conn), None, "the third waits for the second");
}

fn barrier_passes_a_sibling_at_the_barrier_but_not_a_running_one(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Barrier, Halt);
    let first = claim(conn, "w").unwrap();
    assert_eq!(first.operation.id, ids[0]);
    assert_eq!(
        claimed_id(conn),
        None,
        "a running sibling blocks a barrier start"
    );
    for state in [
        ApplyState::WaitingForCutover,
        ApplyState::CuttingOver,
        ApplyState::RevertWindow,
        ApplyState::Completed,
    ] {
        force_state(conn, ids[0], state);
        force_state(conn, ids[1], ApplyState::Pending);
        assert_eq!(
            claim(conn, "w").map(|c| c.operation.id),
            Some(ids[1]),
            "sibling {state} passes"
        );
        let lease = leases_of(conn, ids[1]);
        leases::release(conn, &lease).unwrap();
    }
}

fn parallel_passes_a_running_sibling(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, Parallel, Halt);
    assert_eq!(claimed_id(conn), Some(ids[0]));
    assert_eq!(claimed_id(conn), Some(ids[1]));
    assert_eq!(claimed_id(conn), Some(ids[2]));
}

fn an_unknown_cutover_policy_waits_like_rolling(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Parallel, Halt);
    force_policy(conn, ids[1], "turbo", "halt");
    assert_eq!(claimed_id(conn), Some(ids[0]));
    force_state(conn, ids[0], ApplyState::WaitingForCutover);
    assert_eq!(claimed_id(conn), None, "not past a sibling at the barrier");
    force_state(conn, ids[0], ApplyState::Completed);
    // Past the rolling gate it is still not claimed: a claim hands rows out typed, and reading this
    // one is a typed error naming it. It fails closed until an operator repairs it.
    assert_eq!(
        claimed_id(conn),
        None,
        "a row whose policy cannot be read is never claimed"
    );
    assert!(matches!(
        apply_operations::get(conn, ids[1]),
        Err(StoreError::UnknownValue { column: "cutover_policy", value, .. }) if value == "turbo"
    ));
    force_policy(conn, ids[1], "rolling", "halt");
    assert_eq!(claimed_id(conn), Some(ids[1]), "claimed once repaired");
}

fn an_unknown_policy_row_does_not_stop_other_claims(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, poisoned) = rollout(conn, 1, Rolling, Halt);
    let (_, healthy) = rollout(conn, 1, Rolling, Halt);
    force_policy(conn, poisoned[0], "turbo", "halt");
    assert_eq!(
        claimed_id(conn),
        Some(healthy[0]),
        "the older, unreadable row is passed over"
    );
    let (_, later) = rollout(conn, 1, Parallel, Halt);
    force_policy(conn, later[0], "parallel", "shrug");
    assert_eq!(
        claimed_id(conn),
        None,
        "an unknown failure policy is passed over too"
    );
    assert_eq!(cutover_id(conn), None);
}

fn halt_blocks_on_a_failed_sibling(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Parallel, Halt);
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(claimed_id(conn), None);
}

fn continue_passes_a_failed_sibling(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, Rolling, Continue);
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(claimed_id(conn), Some(ids[1]));
}

fn pause_blocks_on_a_failed_sibling_until_a_release(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Rolling, Pause);
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(claimed_id(conn), None);
    let release = request(conn, apply_id, None, Kind::Release);
    assert_eq!(
        claimed_id(conn),
        Some(ids[1]),
        "a pending release lets it pass"
    );
    force_state(conn, ids[1], ApplyState::Pending);
    control_requests::complete(conn, release).unwrap();
    dead_lease(conn, ids[1]);
    assert_eq!(
        claimed_id(conn),
        Some(ids[1]),
        "a completed release still counts"
    );
}

fn a_failed_release_keeps_a_paused_rollout_blocked(db: &TestDb) {
    // Revision 2: a release is carried out when recorded; one recorded before a failure does not
    // count for it, so the rollout stays paused.
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Rolling, Pause);
    let release = request(conn, apply_id, None, Kind::Release);
    assert!(matches!(
        control_requests::fail(conn, release, "operator withdrew it"),
        Err(StoreError::ControlRequestResolved { .. })
    ));
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(claimed_id(conn), None);
}

fn an_unknown_failure_policy_blocks_like_halt(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    force_policy(conn, ids[1], "parallel", "shrug");
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    request(conn, apply_id, None, Kind::Release);
    assert_eq!(claimed_id(conn), None);
}

fn a_pending_stop_blocks_starts_but_not_recovery(db: &TestDb) {
    // Revision 2: recovery still takes a running operation whose holder's lease lapsed after the
    // stop was recorded (the new holder sees the stop); the stop gate holds starts back.
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    let held = claim(conn, "w").unwrap();
    assert_eq!(held.operation.id, ids[0]);
    let stop = request(conn, apply_id, Some(ids[0]), Kind::Stop);
    expire_lease(conn, ids[0]);
    assert_eq!(
        claimed_id(conn),
        Some(ids[1]),
        "the stop names ids[0] only; ids[1] starts"
    );
    // The claim that meets the covered operation stops it in place and takes nothing.
    assert_eq!(claimed_id(conn), None);
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::Stopped);
    assert_eq!(
        control_requests::get(conn, stop).unwrap().unwrap().status,
        applyops::state::ControlRequestStatus::Completed,
        "the stop completed itself"
    );
}

fn a_stopped_apply_does_not_hold_back_another_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let (stopped_apply, _) = rollout(conn, 1, Rolling, Halt);
    request(conn, stopped_apply, None, Kind::Stop);
    let (_, other) = rollout(conn, 1, Rolling, Halt);
    assert_eq!(
        claimed_id(conn),
        Some(other[0]),
        "the gated row is passed over, not returned as a lost race"
    );
}

fn the_token_fences_a_worker_that_reclaims_under_the_same_name(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let before_restart = claim(conn, "host-1-worker-0").unwrap();
    expire_lease(conn, ids[0]);
    let after_restart = claim(conn, "host-1-worker-0").unwrap();
    assert_eq!(after_restart.operation.id, ids[0]);
    assert!(matches!(
        leases::mark_completed(conn, &before_restart.lease),
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::Running);
}

fn a_stop_naming_one_operation_gates_only_it(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Parallel, Halt);
    request(conn, apply_id, Some(ids[0]), Kind::Stop);
    assert_eq!(claimed_id(conn), Some(ids[1]));
    assert_eq!(claimed_id(conn), None);
}

fn a_start_request_does_not_bypass_the_order(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, Rolling, Halt);
    assert_eq!(claimed_id(conn), Some(ids[0]));
    request(conn, apply_id, None, Kind::Start);
    request(conn, apply_id, Some(ids[1]), Kind::Start);
    assert_eq!(claimed_id(conn), None);
}

fn a_blocked_rollout_does_not_hold_back_another_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, blocked) = rollout(conn, 2, Rolling, Halt);
    apply_operations::mark_failed(conn, blocked[0], "boom").unwrap();
    let (_, other) = rollout(conn, 1, Rolling, Halt);
    assert_eq!(claimed_id(conn), Some(other[0]));
}

fn recovery_takes_waiting_for_cutover_only_where_the_copy_claim_cuts_over(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, barrier) = rollout(conn, 2, Barrier, Halt);
    force_state(conn, barrier[0], ApplyState::WaitingForCutover);
    force_state(conn, barrier[1], ApplyState::Completed);
    dead_lease(conn, barrier[0]);
    assert_eq!(
        claimed_id(conn),
        None,
        "barrier in a multi-operation apply: the cutover claim's"
    );
    let (_, single) = rollout(conn, 1, Parallel, Halt);
    force_state(conn, single[0], ApplyState::WaitingForCutover);
    dead_lease(conn, single[0]);
    assert_eq!(claimed_id(conn), Some(single[0]), "single-operation apply");
    let (_, rolling) = rollout(conn, 2, Rolling, Halt);
    force_state(conn, rolling[0], ApplyState::WaitingForCutover);
    dead_lease(conn, rolling[0]);
    assert_eq!(claimed_id(conn), Some(rolling[0]), "rolling");
}

fn recovery_takes_every_active_state(db: &TestDb) {
    let conn = &mut db.conn();
    let active: Vec<_> = ApplyState::ALL
        .into_iter()
        .filter(|s| s.is_active())
        .collect();
    let mut expected = Vec::new();
    for &state in &active {
        let (_, ids) = rollout(conn, 1, Rolling, Halt);
        force_state(conn, ids[0], state);
        dead_lease(conn, ids[0]);
        expected.push(ids[0]);
    }
    for (id, state) in expected.into_iter().zip(active) {
        let claimed = claim(conn, "w").unwrap_or_else(|| panic!("{state} is recovered"));
        assert_eq!(
            (claimed.operation.id, claimed.kind),
            (id, ClaimKind::Recovery)
        );
        assert_eq!(claimed.operation.state, state);
    }
}

fn a_released_operation_is_claimable_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let first = claim(conn, "a").unwrap();
    leases::release(conn, &first.lease).unwrap();
    let again = claim(conn, "b").expect("claimable right after release");
    assert_eq!(
        (again.operation.id, again.kind),
        (ids[0], ClaimKind::Recovery)
    );
    assert_eq!(again.operation.state, ApplyState::Running);
}

fn bad_claim_options_are_rejected_before_any_sql(db: &TestDb) {
    let conn = &mut db.conn();
    rollout(conn, 1, Rolling, Halt);
    let invalid = |conn: &mut applyops::DbConnection, options: ClaimOptions, field: &str| {
        match claims::claim_next(conn, &options) {
            Err(StoreError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidInput({field}), got {other:?}"),
        }
    };
    invalid(conn, ClaimOptions::new("", TTL), "owner");
    invalid(conn, ClaimOptions::new("w".repeat(256), TTL), "owner");
    invalid(conn, ClaimOptions::new("w", Duration::ZERO), "lease_ttl");
    invalid(
        conn,
        ClaimOptions::new("w", Duration::from_secs(86_401)),
        "lease_ttl",
    );
    assert!(matches!(
        claims::claim_next_cutover(conn, &ClaimOptions::new("", TTL)),
        Err(StoreError::InvalidInput { field: "owner", .. })
    ));
    let id = apply_operations_first(conn);
    assert_eq!(
        row(conn, id).0.state,
        ApplyState::Pending,
        "nothing was claimed"
    );
}

/// The lease currently on `id`, rebuilt from the row (tests only: workers get theirs from the claim).
fn leases_of(conn: &mut applyops::DbConnection, id: ApplyOperationId) -> leases::OperationLease {
    let (op, token) = row(conn, id);
    leases::OperationLease {
        operation_id: id,
        apply_id: op.apply_id,
        owner: op.lease_owner,
        token,
        acquired_at: op.lease_acquired_at.unwrap(),
        expires_at: op.lease_expires_at.unwrap(),
        ttl: TTL,
    }
}

/// The id of the only operation in a test database with one.
fn apply_operations_first(conn: &mut applyops::DbConnection) -> ApplyOperationId {
    use diesel::prelude::*;
    applyops::schema::apply_operations::table
        .select(applyops::schema::apply_operations::id)
        .first(conn)
        .unwrap()
}

/// On SQLite an idle claim reads before it locks: with another connection holding the write lock, a
/// claim that finds nothing returns `None` at once instead of queueing for the lock (and failing with
/// "database is locked" once the busy timeout runs out).
#[test]
fn sqlite_an_idle_claim_takes_no_write_lock() {
    use diesel::connection::SimpleConnection;
    let db = crate::harness::TestDb::new(crate::harness::Kind::Sqlite);
    let mut holder = db.conn();
    holder.batch_execute("BEGIN IMMEDIATE").unwrap();
    let options = applyops::db::ConnectOptions {
        sqlite_busy_timeout: Duration::from_millis(50),
        ..applyops::db::ConnectOptions::default()
    };
    let mut idle = applyops::db::establish_with(db.url(), &options).unwrap();
    assert!(claims::claim_next(&mut idle, &opts("idle"))
        .unwrap()
        .is_none());
    assert!(claims::claim_next_cutover(&mut idle, &opts("idle"))
        .unwrap()
        .is_none());
    holder.batch_execute("ROLLBACK").unwrap();
}
