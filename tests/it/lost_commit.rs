//! A claim whose COMMIT acknowledgement is lost: the server committed, the client saw a dead
//! connection. The claim finds out from the token on the row instead of dropping a lease it holds.

use std::time::Duration;

use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::{claims, leases};
use applyops::{db, PoolConfig, Store, StoreError};

use crate::fixtures::{opts, rollout, row};
use crate::harness::{mysql_server, Kind, TestDb};
use crate::proxy::{CommitProxy, OnCommit};

/// A test database and a proxy in front of its server.
fn proxied() -> (TestDb, CommitProxy, String) {
    let db = TestDb::new(Kind::Mysql);
    let server = mysql_server();
    let host_port = server.rsplit('@').next().unwrap().to_owned();
    let proxy = CommitProxy::start(&host_port);
    let database = db.url().rsplit('/').next().unwrap().to_owned();
    let url = proxy.url(server, &database);
    (db, proxy, url)
}

#[test]
fn mysql_a_claim_whose_commit_acknowledgement_is_lost_is_resolved_by_its_token() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let through_proxy = &mut db::establish(&url).unwrap();
    proxy.arm(OnCommit::LoseAcknowledgement);
    let unknown = match claims::claim_next(through_proxy, &opts("w")) {
        Err(StoreError::ClaimOutcomeUnknown(unknown)) => unknown,
        other => panic!("expected ClaimOutcomeUnknown, got {other:?}"),
    };
    assert_eq!(unknown.operation_id(), ids[0]);
    assert!(
        !format!("{unknown:?}").contains(row(conn, ids[0]).1.expose()),
        "Debug hides the token"
    );
    // The server did commit: the token is on the row, and resolving on a new connection says so.
    let claimed = claims::resolve_unknown(conn, &unknown)
        .unwrap()
        .expect("the claim committed");
    assert_eq!(claimed.operation.state, ApplyState::Running);
    assert_eq!(row(conn, ids[0]).1, claimed.lease.token);
    // And the lease it returns drives the operation.
    leases::mark_completed(conn, &claimed.lease).unwrap();
}

#[test]
fn mysql_a_claim_whose_commit_never_reached_the_server_resolves_to_none() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let through_proxy = &mut db::establish(&url).unwrap();
    proxy.arm(OnCommit::Drop);
    let unknown = match claims::claim_next(through_proxy, &opts("w")) {
        Err(StoreError::ClaimOutcomeUnknown(unknown)) => unknown,
        other => panic!("expected ClaimOutcomeUnknown, got {other:?}"),
    };
    // The server rolls the transaction back once it sees the connection gone; until then the row is
    // still locked (a claim skips it). Once another claim can take it, the dead one surely did not.
    let mut next = None;
    for _ in 0..100 {
        next = claims::claim_next(conn, &opts("next")).unwrap();
        if next.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = next.expect("claimable once the server rolled the dead claim back");
    assert_eq!(next.operation.id, ids[0]);
    assert_eq!(next.kind, claims::ClaimKind::Start, "it was still pending");
    assert!(
        claims::resolve_unknown(conn, &unknown).unwrap().is_none(),
        "the dead claim's token is not on the row"
    );
}

#[test]
fn mysql_a_store_claim_returns_the_claim_whose_acknowledgement_was_lost() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let store = Store::open(
        &url,
        PoolConfig {
            max_size: 2,
            // No checkout ping: the resolution must not depend on it to avoid the dead connection.
            test_on_check_out: false,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    // A resume claim: its start request must not be left pending for ever either.
    let claimed = store.claim_next(&opts("first")).unwrap().unwrap();
    // Its holder stops it on an operator's stop (which clears the lease with the state).
    store
        .control_requests()
        .request(&applyops::models::NewControlRequest::new(
            apply_id,
            applyops::state::ControlRequestKind::Stop,
            "test-operator",
        ))
        .unwrap();
    store
        .leased(&claimed.lease)
        .update_state(ApplyState::Stopped)
        .unwrap();
    store
        .control_requests()
        .request(&applyops::models::NewControlRequest::new(
            apply_id,
            applyops::state::ControlRequestKind::Start,
            "test-operator",
        ))
        .unwrap();
    proxy.arm(OnCommit::LoseAcknowledgement);
    let resumed = store
        .claim_next(&opts("second"))
        .expect("the lost acknowledgement is not an error")
        .expect("the claim committed, so it is returned");
    assert_eq!(resumed.kind, claims::ClaimKind::Resume);
    assert_eq!(resumed.operation.state, ApplyState::Resuming);
    assert_eq!(row(conn, resumed.operation.id).1, resumed.lease.token);
    store.leased(&resumed.lease).mark_started().unwrap();
}

/// A release whose acknowledgement is lost (an autocommit UPDATE the server applied) is not reported
/// as a failure by `Store`: a fresh connection sees the lease gone.
#[test]
fn mysql_a_store_release_whose_acknowledgement_was_lost_succeeds() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let store = Store::open(
        &url,
        PoolConfig {
            max_size: 2,
            // No checkout ping: the armed proxy must meet the release's UPDATE, not the ping.
            test_on_check_out: false,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    let claimed = store.claim_next(&opts("w")).unwrap().unwrap();
    proxy.arm(OnCommit::LoseNextExecuteAcknowledgement);
    store
        .release(&claimed.lease)
        .expect("the release was applied, so it is not an error");
    assert_eq!(
        row(conn, ids[0]).1.expose(),
        "",
        "the lease is gone from the row"
    );
    assert!(!leases::is_held(conn, &claimed.lease).unwrap());
}

/// `is_held` tells whether a lease is still on its row.
#[test]
fn mysql_is_held_follows_the_lease() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let claimed = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    assert!(leases::is_held(conn, &claimed.lease).unwrap());
    leases::release(conn, &claimed.lease).unwrap();
    assert!(!leases::is_held(conn, &claimed.lease).unwrap());
}

/// A store opened through the proxy, with no checkout ping (the armed proxy must meet the write).
fn proxied_store(url: &str) -> Store {
    Store::open(
        url,
        PoolConfig {
            max_size: 2,
            test_on_check_out: false,
            ..PoolConfig::default()
        },
    )
    .unwrap()
}

/// At the store level, a leased write whose COMMIT answer is lost says so with its typed outcome,
/// not as a plain database error: it committed here.
#[test]
fn mysql_a_leased_write_whose_commit_acknowledgement_is_lost_is_a_typed_unknown_outcome() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let claimed = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    let through_proxy = &mut db::establish(&url).unwrap();
    proxy.arm(OnCommit::LoseAcknowledgement);
    match leases::mark_completed(through_proxy, &claimed.lease) {
        Err(StoreError::WriteOutcomeUnknown { operation_id, .. }) => {
            assert_eq!(operation_id, ids[0])
        }
        other => panic!("expected WriteOutcomeUnknown, got {other:?}"),
    }
    assert_eq!(
        row(conn, ids[0]).0.state,
        ApplyState::Completed,
        "it committed"
    );
}

/// Through `Store`, a leased write whose COMMIT answer is lost is resolved on a live connection and
/// returns success: it committed (5 of 240 such writes returned a database error in a KILL storm).
#[test]
fn mysql_a_store_leased_write_whose_commit_acknowledgement_was_lost_succeeds() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let store = proxied_store(&url);
    let claimed = store.claim_next(&opts("w")).unwrap().unwrap();
    proxy.arm(OnCommit::LoseAcknowledgement);
    store
        .leased(&claimed.lease)
        .mark_completed()
        .expect("the write committed, so it is not an error");
    assert_eq!(row(conn, ids[0]).0.state, ApplyState::Completed);
    // And a write that never reached the server is made by the repeat.
    let (_, more) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let claimed = store.claim_next(&opts("w")).unwrap().unwrap();
    assert_eq!(claimed.operation.id, more[0]);
    proxy.arm(OnCommit::Drop);
    store
        .leased(&claimed.lease)
        .mark_completed()
        .expect("the repeat made the write");
    assert_eq!(row(conn, more[0]).0.state, ApplyState::Completed);
}

/// A write that clears the lease (a holder stopping its operation on an operator's stop) cannot be
/// repeated under the lease: when its answer is lost, the repeat finds the operation stopped with
/// nobody holding it, and returns success, not `LeaseLost`.
#[test]
fn mysql_a_store_leased_stop_whose_commit_acknowledgement_was_lost_succeeds() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let store = proxied_store(&url);
    let claimed = store.claim_next(&opts("w")).unwrap().unwrap();
    crate::fixtures::request(
        conn,
        apply_id,
        None,
        applyops::state::ControlRequestKind::Stop,
    );
    proxy.arm(OnCommit::LoseAcknowledgement);
    store
        .leased(&claimed.lease)
        .update_state(ApplyState::Stopped)
        .expect("the stop committed, so it is not an error");
    let (op, token) = row(conn, ids[0]);
    assert_eq!((op.state, token.expose()), (ApplyState::Stopped, ""));
}

/// A heartbeat (one autocommit UPDATE) whose answer is lost is repeated, and returns the expiry.
#[test]
fn mysql_a_store_heartbeat_whose_acknowledgement_was_lost_succeeds() {
    let (db, proxy, url) = proxied();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let store = proxied_store(&url);
    let mut claimed = store.claim_next(&opts("w")).unwrap().unwrap();
    proxy.arm(OnCommit::LoseNextExecuteAcknowledgement);
    let expires = store
        .heartbeat(&mut claimed.lease)
        .expect("the renewal was applied");
    assert_eq!(row(conn, ids[0]).0.lease_expires_at, Some(expires));
}
