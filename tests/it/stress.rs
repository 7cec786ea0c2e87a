//! Stress: racing claimers and a fleet of workers draining mixed rollouts, with the contract's
//! invariants checked from the rows afterwards. Bounded in size and time.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use applyops::models::{ApplyId, ApplyOperation, ApplyOperationId, NewApplyOperation, NewTask};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{self, ClaimKind, ClaimOptions, ClaimedOperation};
use applyops::store::{apply_operations, leases, tasks};
use applyops::{db, DbConnection, StoreError};

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

const APPLIES: usize = 50;
const DEPLOYMENTS: usize = 10;
const WORKERS: usize = 8;
/// The whole drain must finish well inside this; it takes a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);
/// Workers stop after this long without a successful claim.
const IDLE_STOP: Duration = Duration::from_millis(400);

/// What each apply of the fleet looks like, by its index.
fn policies(apply: usize) -> (CutoverPolicy, FailurePolicy) {
    let cutover = [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ][apply % 3];
    let on_failure = [
        FailurePolicy::Halt,
        FailurePolicy::Continue,
        FailurePolicy::Pause,
    ][(apply / 3) % 3];
    (cutover, on_failure)
}

/// Deployment 3 of every fifth apply fails for good.
fn fails(apply: usize, deployment: usize) -> bool {
    apply % 5 == 0 && deployment == 3
}

/// Deployment 5 of every fourth apply fails retryably on its first attempt.
fn fails_once(apply: usize, deployment: usize) -> bool {
    apply % 4 == 1 && deployment == 5
}

/// Deployment 2 of every ninth apply has a holder that stalls past its lease and is stolen from.
fn stalls(apply: usize, deployment: usize) -> bool {
    apply % 9 == 2 && deployment == 2
}

#[derive(Debug, Default)]
struct Log {
    /// (operation, attempt) of every start and retry claim.
    starts: Vec<(ApplyOperationId, i32)>,
    /// Operations whose stalled holder was stolen from and then had its writes rejected.
    stale_writes_rejected: Vec<ApplyOperationId>,
}

struct Fleet {
    url: String,
    /// operation id → (apply index, deployment index)
    layout: HashMap<ApplyOperationId, (usize, usize)>,
    log: Mutex<Log>,
    stalled: Mutex<HashSet<ApplyOperationId>>,
    /// Stalled holders waiting for a thief: no worker stops for idleness while one waits.
    stalls_waiting: AtomicUsize,
}

fn seed(conn: &mut DbConnection) -> (HashMap<ApplyOperationId, (usize, usize)>, Vec<ApplyId>) {
    let mut layout = HashMap::new();
    let mut apply_ids = Vec::new();
    for a in 0..APPLIES {
        let apply_id = apply(conn, false);
        apply_ids.push(apply_id);
        let (cutover, on_failure) = policies(a);
        for d in 0..DEPLOYMENTS {
            let new = NewApplyOperation::new(apply_id, format!("deployment-{d:02}"))
                .with_cutover_policy(cutover)
                .with_on_failure(on_failure);
            layout.insert(apply_operations::insert(conn, &new).unwrap(), (a, d));
        }
    }
    (layout, apply_ids)
}

/// Reaching the barrier is recorded as a task linked to the operation, in the same transaction as the
/// state change, so its `created_at` is a database-clock time no later than the commit that made the
/// barrier visible to other workers.
fn reach_barrier(conn: &mut DbConnection, claimed: &ClaimedOperation) -> Result<(), StoreError> {
    db::write_transaction(conn, |conn| {
        leases::update_state(conn, &claimed.lease, ApplyState::WaitingForCutover)?;
        let event = NewTask {
            apply_id: claimed.operation.apply_id,
            apply_operation_id: Some(claimed.operation.id),
            table_name: "barrier".into(),
            ddl: "reached waiting_for_cutover".into(),
        };
        tasks::insert(conn, &event).map(|_| ())
    })
}

/// Drives one claimed operation as a worker would. `LeaseLost` means another worker owns it now.
fn drive(
    fleet: &Fleet,
    conn: &mut DbConnection,
    claimed: ClaimedOperation,
) -> Result<(), StoreError> {
    let op = &claimed.operation;
    let (a, d) = fleet.layout[&op.id];
    if matches!(claimed.kind, ClaimKind::Start | ClaimKind::Retry) {
        fleet.log.lock().unwrap().starts.push((op.id, op.attempt));
    }
    let lease = &claimed.lease;
    if claimed.kind == ClaimKind::Cutover || op.state == ApplyState::CuttingOver {
        return leases::mark_completed(conn, lease);
    }
    if stalls(a, d) && fleet.stalled.lock().unwrap().insert(op.id) {
        fleet.stalls_waiting.fetch_add(1, Ordering::SeqCst);
        let result = stall_until_stolen(conn, &claimed);
        fleet.stalls_waiting.fetch_sub(1, Ordering::SeqCst);
        return result;
    }
    if fails(a, d) {
        return leases::mark_failed(conn, lease, "deployment rejected the change");
    }
    if fails_once(a, d) && op.attempt == 0 {
        leases::update_state(conn, lease, ApplyState::FailedRetryable)?;
        return leases::release(conn, lease);
    }
    if op.state != ApplyState::WaitingForCutover {
        reach_barrier(conn, &claimed)?;
    }
    let cuts_over_itself = op.cutover_policy == CutoverPolicy::Rolling;
    if cuts_over_itself {
        leases::update_state(conn, lease, ApplyState::CuttingOver)?;
        leases::mark_completed(conn, lease)
    } else {
        leases::release(conn, lease)
    }
}

/// Simulates a holder that stalls past its lease: its lease runs out (moved into the past, as the
/// clock would), another worker steals the operation, and every write the stalled holder then makes
/// must be `LeaseLost` and change nothing.
fn stall_until_stolen(
    conn: &mut DbConnection,
    claimed: &ClaimedOperation,
) -> Result<(), StoreError> {
    let id = claimed.operation.id;
    expire_lease(conn, id);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, token) = row(conn, id);
        if token != claimed.lease.token {
            break;
        }
        assert!(Instant::now() < deadline, "nobody stole operation {id}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stale = claimed.lease.clone();
    for attempt in 0..3 {
        let before = row(conn, id);
        let result = match attempt {
            0 => leases::update_state(conn, &stale, ApplyState::Paused),
            1 => leases::mark_completed(conn, &stale),
            _ => leases::heartbeat(conn, &mut stale).map(|_| ()),
        };
        assert!(
            matches!(result, Err(StoreError::LeaseLost { .. })),
            "{result:?}"
        );
        // The thief may write in between, so compare only what the stale write would have changed.
        let after = row(conn, id);
        assert_ne!(
            after.1, claimed.lease.token,
            "the stale token never comes back"
        );
        assert!(after.0.state != ApplyState::Paused || before.0.state == ApplyState::Paused);
    }
    Err(StoreError::LeaseLost { operation_id: id })
}

fn worker(fleet: Arc<Fleet>, index: usize, stop: Arc<AtomicBool>) -> Result<usize, String> {
    let mut conn = db::establish(&fleet.url).map_err(|e| e.to_string())?;
    let options = ClaimOptions::new(format!("stress-{index}"), Duration::from_secs(30));
    let mut idle_since = Instant::now();
    let mut claims_made = 0;
    while !stop.load(Ordering::Relaxed) {
        let claimed =
            match claims::claim_next_cutover(&mut conn, &options).map_err(|e| e.to_string())? {
                Some(claimed) => Some(claimed),
                None => claims::claim_next(&mut conn, &options).map_err(|e| e.to_string())?,
            };
        let Some(claimed) = claimed else {
            if idle_since.elapsed() > IDLE_STOP && fleet.stalls_waiting.load(Ordering::SeqCst) == 0
            {
                return Ok(claims_made);
            }
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        claims_made += 1;
        idle_since = Instant::now();
        let id = claimed.operation.id;
        match drive(&fleet, &mut conn, claimed) {
            Ok(()) => {}
            Err(StoreError::LeaseLost { operation_id }) => {
                assert_eq!(operation_id, id);
                fleet.log.lock().unwrap().stale_writes_rejected.push(id);
            }
            Err(other) => return Err(format!("operation {id}: {other}")),
        }
    }
    Ok(claims_made)
}

/// The operator: releases every paused rollout that has a failed operation.
fn release_paused_rollouts(conn: &mut DbConnection, apply_ids: &[ApplyId]) {
    for (a, apply_id) in apply_ids.iter().enumerate() {
        if policies(a).1 != FailurePolicy::Pause {
            continue;
        }
        let failed = apply_operations::list_by_apply(conn, *apply_id)
            .unwrap()
            .iter()
            .any(|op| op.state == ApplyState::Failed);
        if failed {
            crate::fixtures::ask(
                conn,
                *apply_id,
                None,
                ControlRequestKind::Release,
                Some("stress operator"),
            )
            .unwrap();
        }
    }
}

fn barrier_times(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> HashMap<ApplyOperationId, chrono::NaiveDateTime> {
    tasks::list_by_apply(conn, apply_id)
        .unwrap()
        .into_iter()
        .filter(|t| t.table_name == "barrier")
        .map(|t| (t.apply_operation_id.unwrap(), t.created_at))
        .collect()
}

fn check_invariants(conn: &mut DbConnection, fleet: &Fleet, apply_ids: &[ApplyId]) {
    // At this quiescent point every apply's stored state is its derivation: a refresh, which
    // rewrites only what differs, finds nothing to change.
    for &apply_id in apply_ids {
        let stored = applyops::store::applies::get(conn, apply_id)
            .unwrap()
            .unwrap();
        let derived = applyops::store::applies::refresh(conn, apply_id).unwrap();
        assert_eq!(
            stored, derived,
            "apply {apply_id}: stored state is the derived one"
        );
    }
    let log = fleet.log.lock().unwrap();
    let mut starts: HashMap<(ApplyOperationId, i32), usize> = HashMap::new();
    for start in &log.starts {
        *starts.entry(*start).or_default() += 1;
    }
    for (start, count) in &starts {
        assert_eq!(
            *count, 1,
            "operation {} attempt {} started {count} times",
            start.0, start.1
        );
    }
    let stalled = fleet.stalled.lock().unwrap();
    assert!(!stalled.is_empty(), "the fleet exercised steals");
    for id in stalled.iter() {
        assert!(
            log.stale_writes_rejected.contains(id),
            "stalled holder of {id} was fenced off"
        );
    }

    for (a, apply_id) in apply_ids.iter().enumerate() {
        let ops: Vec<ApplyOperation> = apply_operations::list_by_apply(conn, *apply_id).unwrap();
        let barriers = barrier_times(conn, *apply_id);
        let (cutover, on_failure) = policies(a);
        let halted = ops.iter().any(|op| op.state == ApplyState::Failed)
            && on_failure == FailurePolicy::Halt;
        for (i, op) in ops.iter().enumerate() {
            let (_, d) = fleet.layout[&op.id];
            let expected_final = if fails(a, d) {
                ApplyState::Failed
            } else {
                ApplyState::Completed
            };
            if op.state == ApplyState::Pending {
                assert!(
                    halted,
                    "apply {a} op {d} left pending without a halting failure"
                );
                assert!(op.started_at.is_none());
                continue;
            }
            if op.state == ApplyState::WaitingForCutover {
                // A parallel operation that copied beside the sibling that failed: under halt its
                // cutover waits for an operator. Released, not held.
                assert!(
                    halted && cutover == CutoverPolicy::Parallel,
                    "apply {a} op {d} stuck waiting for cutover"
                );
                assert_eq!(op.lease_owner, "", "apply {a} op {d} released");
                continue;
            }
            assert_eq!(op.state, expected_final, "apply {a} op {d}");
            let attempts = starts.keys().filter(|(id, _)| *id == op.id).count();
            assert_eq!(
                attempts as i32,
                op.attempt + 1,
                "apply {a} op {d}: one start per attempt"
            );
            assert_eq!(op.attempt, i32::from(fails_once(a, d)), "apply {a} op {d}");
            let started = op.started_at.expect("started");
            for earlier in &ops[..i] {
                if earlier.state == ApplyState::Failed {
                    let failed_at = earlier.completed_at.unwrap();
                    if failed_at <= started {
                        assert_ne!(
                            on_failure,
                            FailurePolicy::Halt,
                            "apply {a} op {d}: started past a failed sibling under halt"
                        );
                    } else {
                        // Failing operations fail before the barrier, so only parallel starts beside them.
                        assert_eq!(
                            cutover,
                            CutoverPolicy::Parallel,
                            "apply {a} op {d}: started before an earlier sibling failed"
                        );
                    }
                    continue;
                }
                match cutover {
                    CutoverPolicy::Rolling => {
                        let done = earlier.completed_at.unwrap_or_else(|| panic!("apply {a}: rolling op {d} started before an earlier sibling completed"));
                        assert!(done <= started, "apply {a} op {d}: rolling start {started} before sibling completed {done}\n{:#?}", ops.iter().map(|o| (o.id, &o.state, o.started_at, o.completed_at, o.updated_at, &o.lease_owner, o.attempt)).collect::<Vec<_>>());
                    }
                    CutoverPolicy::Barrier => {
                        let reached = barriers.get(&earlier.id).unwrap_or_else(|| {
                            panic!("apply {a}: sibling never reached the barrier")
                        });
                        assert!(*reached <= started, "apply {a} op {d}: barrier start {started} before sibling reached it at {reached}");
                    }
                    CutoverPolicy::Parallel => {}
                }
            }
        }
    }
    let live: Vec<_> = apply_ids
        .iter()
        .flat_map(|id| apply_operations::list_by_apply(conn, *id).unwrap())
        // waiting_for_cutover was checked per operation above (released, in a halted apply).
        .filter(|op| op.state != ApplyState::WaitingForCutover)
        .filter(|op| op.state.is_active())
        .collect();
    assert!(live.is_empty(), "nothing is left mid-flight: {live:?}");
    crate::invariants::assert_timestamps_ordered(conn);
}

backend_tests!(
    sixteen_threads_racing_one_row_get_exactly_one_lease,
    eight_workers_drain_mixed_rollouts_holding_every_invariant,
);

fn sixteen_threads_racing_one_row_get_exactly_one_lease(db: &TestDb) {
    const THREADS: usize = 16;
    let (_, ids) = rollout(
        &mut db.conn(),
        1,
        CutoverPolicy::Rolling,
        FailurePolicy::Halt,
    );
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let mut conn = db.conn();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                claims::claim_next(&mut conn, &opts(&format!("racer-{i}")))
                    .expect("a lost race is None, not an error")
            })
        })
        .collect();
    let winners: Vec<ClaimedOperation> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(winners.len(), 1, "exactly one lease");
    let (op, token) = row(&mut db.conn(), ids[0]);
    assert_eq!(token, winners[0].lease.token);
    assert_eq!(op.lease_owner, winners[0].lease.owner);
}

fn eight_workers_drain_mixed_rollouts_holding_every_invariant(db: &TestDb) {
    let (layout, apply_ids) = seed(&mut db.conn());
    let fleet = Arc::new(Fleet {
        url: db.url().to_owned(),
        layout,
        log: Mutex::default(),
        stalled: Mutex::default(),
        stalls_waiting: AtomicUsize::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (fleet, stop) = (Arc::clone(&fleet), Arc::clone(&stop));
            std::thread::spawn(move || worker(fleet, i, stop))
        })
        .collect();
    let started = Instant::now();
    let mut operator = db.conn();
    while !handles.iter().all(|h| h.is_finished()) {
        if started.elapsed() > DEADLINE {
            stop.store(true, Ordering::Relaxed);
            panic!("the drain did not finish within {DEADLINE:?}");
        }
        release_paused_rollouts(&mut operator, &apply_ids);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut total = 0;
    for handle in handles {
        total += handle.join().unwrap().expect("worker ran without errors");
    }
    assert!(
        total >= APPLIES * DEPLOYMENTS / 2,
        "the fleet did the work ({total} claims)"
    );
    check_invariants(&mut db.conn(), &fleet, &apply_ids);
}
