//! Leases: guarded writes, heartbeat, release, and failing closed.

use std::time::Duration;

use applyops::state::{ApplyState, CutoverPolicy::Rolling, FailurePolicy::Halt};
use applyops::store::claims::ClaimOptions;
use applyops::store::{apply_operations, claims, leases};
use applyops::StoreError;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    live_lists_held_leases_soonest_expiry_first_and_filters_by_owner_prefix,
    leased_writes_drive_the_operation_and_repeat_idempotently,
    leased_failures_and_terminal_states_follow_the_unguarded_rules,
    an_expired_lease_nobody_stole_still_writes,
    heartbeat_pushes_the_expiry_from_the_database_clock,
    a_lease_that_is_not_renewed_expires_and_is_stolen,
    release_clears_the_lease_and_keeps_the_state,
    a_lease_with_an_empty_token_or_owner_fails_closed_writing_nothing,
    a_write_for_a_deleted_operation_is_not_found,
    a_lease_only_writes_its_own_operation,
    an_operators_settling_write_takes_the_lease_and_its_holder_finds_it_lost,
);

fn leased_writes_drive_the_operation_and_repeat_idempotently(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    leases::mark_started(conn, &held.lease).unwrap();
    leases::mark_started(conn, &held.lease).unwrap();
    leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover).unwrap();
    leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover).unwrap();
    leases::mark_completed(conn, &held.lease).unwrap();
    let completed_at = row(conn, ids[0]).0.completed_at;
    leases::mark_completed(conn, &held.lease).unwrap();
    let (op, token) = row(conn, ids[0]);
    assert_eq!(op.state, ApplyState::Completed);
    assert_eq!(op.completed_at, completed_at, "a repeat keeps the stamp");
    assert_eq!(
        token, held.lease.token,
        "completion keeps the lease, so repeats succeed"
    );
}

fn leased_failures_and_terminal_states_follow_the_unguarded_rules(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, applyops::state::CutoverPolicy::Parallel, Halt);
    let a = claim(conn, "w").unwrap();
    let b = claim(conn, "w").unwrap();
    assert!(matches!(
        leases::mark_failed(conn, &a.lease, ""),
        Err(StoreError::InvalidInput {
            field: "error_message",
            ..
        })
    ));
    leases::mark_failed(conn, &a.lease, "boom").unwrap();
    assert_eq!(row(conn, ids[0]).0.error_message.as_deref(), Some("boom"));
    assert!(matches!(
        leases::mark_terminal(conn, &b.lease, ApplyState::Running),
        Err(StoreError::InvalidInput { field: "state", .. })
    ));
    assert!(matches!(
        leases::update_state(conn, &b.lease, ApplyState::Completed),
        Err(StoreError::InvalidInput { field: "state", .. })
    ));
    assert!(
        matches!(
            leases::mark_terminal(conn, &b.lease, ApplyState::Cancelled),
            Err(StoreError::NoPendingRequest {
                kind: applyops::state::ControlRequestKind::Cancel,
                ..
            })
        ),
        "a holder cancels only on a pending cancel"
    );
    leases::mark_terminal(conn, &b.lease, ApplyState::Reverted).unwrap();
    assert_eq!(row(conn, ids[1]).0.state, ApplyState::Reverted);
}

fn an_expired_lease_nobody_stole_still_writes(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    expire_lease(conn, ids[0]);
    leases::update_state(conn, &held.lease, ApplyState::WaitingForCutover)
        .expect("the token is the fence");
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::WaitingForCutover);
}

fn heartbeat_pushes_the_expiry_from_the_database_clock(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let mut held = claim(conn, "w").unwrap();
    // As if the holder had been slow: its lease ran out, but nobody stole it yet.
    expire_lease(conn, ids[0]);
    let expired = row(conn, ids[0]).0.lease_expires_at.unwrap();
    let renewed = leases::heartbeat(conn, &mut held.lease).unwrap();
    assert!(
        renewed - held.lease.acquired_at >= chrono::Duration::seconds(60),
        "now + TTL, from the claim's clock on"
    );
    assert!(renewed > expired);
    assert_eq!(held.lease.expires_at, renewed);
    assert_eq!(row(conn, ids[0]).0.lease_expires_at, Some(renewed));
    assert_eq!(claimed_id(conn), None, "renewed, so not stealable");
}

fn a_lease_that_is_not_renewed_expires_and_is_stolen(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let short = ClaimOptions::new("w", Duration::from_millis(300));
    let held = claims::claim_next(conn, &short).unwrap().unwrap();
    assert_eq!(claimed_id(conn), None, "live");
    std::thread::sleep(Duration::from_millis(400));
    let stolen = claim(conn, "thief").expect("expired by the database clock");
    assert_eq!(stolen.operation.id, ids[0]);
    assert!(matches!(
        leases::mark_started(conn, &held.lease),
        Err(StoreError::LeaseLost { .. })
    ));
}

fn release_clears_the_lease_and_keeps_the_state(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    leases::update_state(conn, &held.lease, ApplyState::WaitingForDeploy).unwrap();
    leases::release(conn, &held.lease).unwrap();
    let (op, token) = row(conn, ids[0]);
    assert_eq!(
        (op.state, op.lease_owner.as_str(), token.expose()),
        (ApplyState::WaitingForDeploy, "", "")
    );
    assert_eq!((op.lease_acquired_at, op.lease_expires_at), (None, None));
    assert!(
        matches!(
            leases::release(conn, &held.lease),
            Err(StoreError::LeaseLost { .. })
        ),
        "a released lease is spent"
    );
}

fn a_lease_with_an_empty_token_or_owner_fails_closed_writing_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    // The row has no lease: an empty token would match it if it reached SQL.
    let before = row(conn, ids[0]);
    let held = claim(conn, "w").unwrap();
    leases::release(conn, &held.lease).unwrap();
    let released = row(conn, ids[0]);
    for lease in [
        leases::OperationLease {
            token: String::new().into(),
            owner: String::new(),
            ..held.lease.clone()
        },
        leases::OperationLease {
            token: String::new().into(),
            ..held.lease.clone()
        },
        leases::OperationLease {
            owner: String::new(),
            ..held.lease.clone()
        },
    ] {
        let mut lease = lease;
        for result in [
            leases::update_state(conn, &lease, ApplyState::Paused),
            leases::mark_started(conn, &lease),
            leases::mark_completed(conn, &lease),
            leases::mark_failed(conn, &lease, "x"),
            leases::mark_terminal(conn, &lease, ApplyState::Cancelled),
            leases::release(conn, &lease),
            leases::heartbeat(conn, &mut lease).map(|_| ()),
        ] {
            assert!(
                matches!(
                    result,
                    Err(StoreError::InvalidInput {
                        field: "lease.token" | "lease.owner",
                        ..
                    })
                ),
                "{result:?}"
            );
        }
    }
    assert_eq!(row(conn, ids[0]), released, "nothing was written");
    assert_eq!(before.0.state, ApplyState::Pending);
}

fn a_write_for_a_deleted_operation_is_not_found(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, Rolling, Halt);
    let mut held = claim(conn, "w").unwrap();
    apply_operations::delete_by_apply(conn, apply_id).unwrap();
    assert!(
        matches!(leases::mark_completed(conn, &held.lease), Err(StoreError::ApplyOperationNotFound { id }) if id == ids[0])
    );
    assert!(matches!(
        leases::heartbeat(conn, &mut held.lease),
        Err(StoreError::ApplyOperationNotFound { .. })
    ));
}

fn a_lease_only_writes_its_own_operation(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, applyops::state::CutoverPolicy::Parallel, Halt);
    let a = claim(conn, "w").unwrap();
    let b = claim(conn, "w").unwrap();
    let forged = leases::OperationLease {
        operation_id: ids[1],
        ..a.lease.clone()
    };
    assert!(matches!(
        leases::mark_completed(conn, &forged),
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(row(conn, ids[1]).1, b.lease.token);
    assert_eq!(row(conn, ids[1]).0.state, ApplyState::Running);
}

fn an_operators_settling_write_takes_the_lease_and_its_holder_finds_it_lost(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, applyops::state::CutoverPolicy::Parallel, Halt);
    let held: Vec<_> = (0..3).map(|_| claim(conn, "w").unwrap()).collect();
    apply_operations::mark_failed(conn, ids[0], "operator says no").unwrap();
    apply_operations::mark_terminal(conn, ids[1], ApplyState::Cancelled).unwrap();
    apply_operations::mark_completed(conn, ids[2]).unwrap();
    for (lease, id) in held.iter().map(|h| &h.lease).zip(&ids) {
        let (op, token) = row(conn, *id);
        assert!(
            op.lease_owner.is_empty() && token.expose().is_empty() && op.lease_expires_at.is_none(),
            "operation {id} in {} still carries a lease: {op:?}",
            op.state
        );
        assert!(
            matches!(
                leases::mark_started(conn, lease),
                Err(StoreError::LeaseLost { operation_id }) if operation_id == *id
            ),
            "its holder cannot move operation {id} on"
        );
        assert!(
            matches!(
                leases::mark_completed(conn, lease),
                Err(StoreError::LeaseLost { .. })
            ),
            "nor settle operation {id} again"
        );
        assert!(matches!(
            leases::release(conn, lease),
            Err(StoreError::LeaseLost { .. })
        ));
    }
}

/// `leases::live`: the leases held now, soonest expiry first, by the database's clock; not a
/// released one nor an expired one; `owner_prefix` compared exactly (case and `%` included).
fn live_lists_held_leases_soonest_expiry_first_and_filters_by_owner_prefix(db: &TestDb) {
    use applyops::state::CutoverPolicy::Parallel;
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 5, Parallel, Halt);
    let long = claims::claim_next(
        conn,
        &ClaimOptions::new("Fleet-a", Duration::from_secs(600)),
    )
    .unwrap()
    .unwrap();
    let short = claims::claim_next(conn, &ClaimOptions::new("fleet-b", Duration::from_secs(60)))
        .unwrap()
        .unwrap();
    let released = claims::claim_next(conn, &opts("fleet-c")).unwrap().unwrap();
    leases::release(conn, &released.lease).unwrap();
    let expired = claims::claim_next(conn, &opts("fleet-d")).unwrap().unwrap();
    expire_lease(conn, expired.operation.id);
    // The released row is claimable again: this claim takes it.
    let percent = claims::claim_next(conn, &opts("fl%et")).unwrap().unwrap();
    assert_eq!(percent.operation.id, released.operation.id);
    let live = leases::live(conn, None).unwrap();
    let held: Vec<_> = live
        .iter()
        .map(|l| (l.operation_id, l.owner.as_str()))
        .collect();
    assert_eq!(
        held,
        [
            (short.operation.id, "fleet-b"),
            (percent.operation.id, "fl%et"),
            (long.operation.id, "Fleet-a")
        ],
        "soonest expiry first"
    );
    let lease = &live[2];
    assert_eq!(lease.apply_id, apply_id);
    assert_eq!(lease.state, ApplyState::Running);
    assert_eq!(lease.expires_at, long.lease.expires_at);
    let left = lease.expires_in();
    assert!(
        left > Duration::from_secs(590) && left <= Duration::from_secs(600),
        "{left:?}"
    );
    let mut owners = |prefix: &str| -> Vec<String> {
        leases::live(conn, Some(prefix))
            .unwrap()
            .into_iter()
            .map(|l| l.owner)
            .collect()
    };
    assert_eq!(owners("fleet"), ["fleet-b"], "case-sensitive");
    assert_eq!(owners("fl%"), ["fl%et"], "% is a plain character");
    assert!(owners("zzz").is_empty());
}
