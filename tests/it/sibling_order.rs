//! Worker contract revision 2, points 3 and 16: a `cancelled` earlier sibling never blocks, a
//! `reverted` one is a failure like `failed`, and `on_failure` holds under every cutover policy,
//! `parallel` included. Each case is checked against the claims and against `blockers`, which is
//! built from the same predicates.

use applyops::models::ApplyOperationId;
use applyops::state::{ApplyState, ControlRequestKind as Kind, CutoverPolicy, FailurePolicy};
use applyops::store::claims::Blocker;
use applyops::store::{applies, apply_operations};

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

use CutoverPolicy::{Barrier, Parallel, Rolling};
use FailurePolicy::{Continue, Halt, Pause};

backend_tests!(
    a_cancelled_earlier_sibling_never_blocks_a_start_under_any_policy,
    a_cancelled_earlier_sibling_never_blocks_the_cutover_order,
    a_reverted_earlier_sibling_holds_starts_back_exactly_like_a_failed_one,
    a_reverted_earlier_sibling_holds_the_cutover_back_exactly_like_a_failed_one,
    parallel_operations_honour_their_failure_policy,
    a_start_racing_the_siblings_completion_is_stamped_after_it,
);

/// The blocker `blockers` gives operation `id` of `apply_id`.
fn blocker_of(
    conn: &mut applyops::DbConnection,
    apply_id: applyops::models::ApplyId,
    id: ApplyOperationId,
) -> Blocker {
    applies::blockers(conn, apply_id)
        .unwrap()
        .into_iter()
        .find(|(op, _)| *op == id)
        .map(|(_, blocker)| blocker)
        .expect("an unsettled operation has a blocker")
}

fn a_cancelled_earlier_sibling_never_blocks_a_start_under_any_policy(db: &TestDb) {
    let conn = &mut db.conn();
    for policy in [Rolling, Barrier, Parallel] {
        let (apply_id, ids) = rollout(conn, 3, policy, Halt);
        apply_operations::mark_terminal(conn, ids[0], ApplyState::Cancelled).unwrap();
        assert_eq!(
            blocker_of(conn, apply_id, ids[1]),
            Blocker::Claimable,
            "{policy}"
        );
        assert_eq!(
            claimed_id(conn),
            Some(ids[1]),
            "{policy}: the next one starts"
        );
        // Keep this apply out of the next round's claims.
        apply_operations::mark_completed(conn, ids[1]).unwrap();
        apply_operations::mark_completed(conn, ids[2]).unwrap();
    }
}

fn a_cancelled_earlier_sibling_never_blocks_the_cutover_order(db: &TestDb) {
    let conn = &mut db.conn();
    for policy in [Barrier, Parallel] {
        let (apply_id, ids) = rollout(conn, 2, policy, Halt);
        apply_operations::mark_terminal(conn, ids[0], ApplyState::Cancelled).unwrap();
        force_state(conn, ids[1], ApplyState::WaitingForCutover);
        assert_eq!(
            blocker_of(conn, apply_id, ids[1]),
            Blocker::Claimable,
            "{policy}"
        );
        assert_eq!(
            cutover_id(conn),
            Some(ids[1]),
            "{policy}: automatic cutover"
        );
    }
    // A whole-apply cutover request keeps the automatic order, which a cancelled sibling passes.
    let apply_id = apply(conn, true);
    let ids: Vec<ApplyOperationId> = ["east", "west"]
        .into_iter()
        .map(|d| {
            let new =
                applyops::models::NewApplyOperation::new(apply_id, d).with_cutover_policy(Barrier);
            apply_operations::insert(conn, &new).unwrap()
        })
        .collect();
    apply_operations::mark_terminal(conn, ids[0], ApplyState::Cancelled).unwrap();
    force_state(conn, ids[1], ApplyState::WaitingForCutover);
    assert_eq!(
        blocker_of(conn, apply_id, ids[1]),
        Blocker::AwaitingOperatorCutover
    );
    request(conn, apply_id, None, Kind::Cutover);
    assert_eq!(
        cutover_id(conn),
        Some(ids[1]),
        "deferred, on a whole-apply request"
    );
}

/// Makes operation `id` a failure (`failed` or `reverted`) through the store, which numbers it.
fn fail_as(conn: &mut applyops::DbConnection, id: ApplyOperationId, failure: ApplyState) {
    if failure == ApplyState::Failed {
        apply_operations::mark_failed(conn, id, "boom").unwrap();
    } else {
        apply_operations::mark_terminal(conn, id, failure).unwrap();
    }
}

/// For each failure policy and cutover policy: an earlier sibling in `failure` holds the second
/// operation's start back exactly as the policy says.
fn start_behind(conn: &mut applyops::DbConnection, failure: ApplyState) {
    for policy in [Rolling, Barrier, Parallel] {
        for on_failure in [Halt, Continue, Pause] {
            let (apply_id, ids) = rollout(conn, 2, policy, on_failure);
            fail_as(conn, ids[0], failure);
            let label = format!("{failure} before {policy}/{on_failure}");
            match on_failure {
                Halt => {
                    assert_eq!(
                        blocker_of(conn, apply_id, ids[1]),
                        Blocker::HaltedBy { id: ids[0] },
                        "{label}"
                    );
                    assert_eq!(claimed_id(conn), None, "{label}");
                }
                Continue => {
                    assert_eq!(claimed_id(conn), Some(ids[1]), "{label}");
                }
                Pause => {
                    assert_eq!(
                        blocker_of(conn, apply_id, ids[1]),
                        Blocker::PausedUntilRelease { id: ids[0] },
                        "{label}"
                    );
                    assert_eq!(claimed_id(conn), None, "{label}");
                    request(conn, apply_id, None, Kind::Release);
                    assert_eq!(claimed_id(conn), Some(ids[1]), "{label}, released");
                }
            }
            // Out of the way of the next case.
            force_state(conn, ids[1], ApplyState::Cancelled);
        }
    }
}

fn a_reverted_earlier_sibling_holds_starts_back_exactly_like_a_failed_one(db: &TestDb) {
    let conn = &mut db.conn();
    start_behind(conn, ApplyState::Failed);
    start_behind(conn, ApplyState::Reverted);
}

fn a_reverted_earlier_sibling_holds_the_cutover_back_exactly_like_a_failed_one(db: &TestDb) {
    let conn = &mut db.conn();
    for failure in [ApplyState::Failed, ApplyState::Reverted] {
        for (on_failure, cuts_over) in [(Halt, false), (Continue, true)] {
            let (apply_id, ids) = rollout(conn, 2, Barrier, on_failure);
            fail_as(conn, ids[0], failure);
            force_state(conn, ids[1], ApplyState::WaitingForCutover);
            let label = format!("{failure} before barrier/{on_failure}");
            assert_eq!(cutover_id(conn).is_some(), cuts_over, "{label}");
            if !cuts_over {
                assert_eq!(
                    blocker_of(conn, apply_id, ids[1]),
                    Blocker::HaltedBy { id: ids[0] },
                    "{label}"
                );
            }
        }
    }
}

fn parallel_operations_honour_their_failure_policy(db: &TestDb) {
    let conn = &mut db.conn();
    // parallel + halt: a failed sibling stops the rest, even though parallel waits for nobody.
    let (_, halted) = rollout(conn, 3, Parallel, Halt);
    let first = claim(conn, "w").unwrap();
    assert_eq!(first.operation.id, halted[0]);
    applyops::store::leases::mark_failed(conn, &first.lease, "boom").unwrap();
    assert_eq!(
        claimed_id(conn),
        None,
        "parallel + halt waits on the failure"
    );
    // parallel + continue: never waits for anyone.
    let (_, free) = rollout(conn, 3, Parallel, Continue);
    let first = claim(conn, "w").unwrap();
    assert_eq!(first.operation.id, free[0]);
    applyops::store::leases::mark_failed(conn, &first.lease, "boom").unwrap();
    assert_eq!(claimed_id(conn), Some(free[1]));
    assert_eq!(claimed_id(conn), Some(free[2]));
}

/// Revision 2, point 1: a claim stamps `started_at` with a clock read after its reads, so a rolling
/// operation that started because its sibling completed never shows a start before that completion,
/// even when the claim was sent while the completion was still in flight. 50 races of a claimer
/// polling against the completion of the earlier sibling.
fn a_start_racing_the_siblings_completion_is_stamped_after_it(db: &TestDb) {
    use applyops::store::{claims, leases};
    for _ in 0..50 {
        let conn = &mut db.conn();
        let (_, ids) = rollout(conn, 2, Rolling, Halt);
        let first = claim(conn, "first").unwrap();
        let mut racer = db.conn();
        let second = ids[1];
        let claimer = std::thread::spawn(move || loop {
            if let Some(claimed) = claims::claim_next(&mut racer, &opts("racer")).unwrap() {
                assert_eq!(claimed.operation.id, second);
                return claimed;
            }
        });
        leases::mark_completed(conn, &first.lease).unwrap();
        let started = claimer.join().unwrap();
        let completed_at = row(conn, ids[0]).0.completed_at.unwrap();
        let started_at = row(conn, ids[1]).0.started_at.unwrap();
        assert!(
            started_at >= completed_at,
            "started {started_at} before its sibling completed at {completed_at}"
        );
        assert_eq!(started.operation.started_at, Some(started_at));
        assert!(started.lease.acquired_at >= completed_at);
    }
}
