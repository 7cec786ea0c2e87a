//! `Claimable` means a claim takes it: a property test over generated applies (policies, states,
//! live and expired leases, every request kind, caps, deferred cutovers, retry budgets) and claim
//! scopes, each built row by row and checked in a transaction that is rolled back.
//!
//! The check, per generated apply: read `blockers`; run `claim_next`, else `claim_next_cutover`, with
//! the same options. A claim that takes an operation must take one `blockers` called `Claimable`
//! just before; when neither claim takes anything, `blockers` must have called nothing `Claimable`.
//! Repeated until both claims come back empty, re-reading `blockers` before every claim (taking one
//! operation can change what the others wait for: the concurrency cap, the order gates). The claims
//! run inside the generated scope (some deployments, the apply's environment or another), and
//! `blockers_in` answers for the same scope.
//!
//! Before the claims run, the rules are checked against the SQL they replaced: the claim conditions
//! of revision d5c63b4 (evaluated per row as correlated subqueries, frozen in `legacy_gates/`) must
//! agree, on every operation, with the decision of the pure rules ([`applyops::state::decide`])
//! built from the generated case, and, once the store has refreshed the apply, with the decision
//! stored on the rows; the apply's stored state must equal the pure derivation of its operations.
//! The only difference the decision was allowed (whether an expired lease counts against the
//! concurrency cap) was settled the way the old SQL had it, so no case is exempt.
//!
//! `APPLYOPS_PROPTEST_CASES` sets the number of generated applies per backend (default 10,000, about
//! four minutes for both backends on 2 cores); the `--ignored` long run
//! (`cargo test --test it claimable_property -- --ignored`) checks 100,000 per backend.

use std::collections::{BTreeMap, BTreeSet};

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
use applyops::schema_types::datetime;
use applyops::state::{
    decide, derive_apply_state, is_failure, ApplyRules, ApplyState, ClaimAction,
    ControlRequestKind, ControlRequestStatus, CutoverPolicy, Decision, FailurePolicy,
    OperationRules, OperationView, PendingFor,
};
use applyops::store::applies::{self as applies_store, Blocker};
use applyops::store::claims::{self, ClaimScope};
use applyops::{DbConnection, StoreError};
use chrono::{Duration, NaiveDateTime, Utc};
use diesel::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::backend_tests;
use crate::fixtures::opts;
use crate::harness::TestDb;

backend_tests!(claimable_holds_exactly_when_some_claim_takes_the_operation,);

/// Who holds an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lease {
    None,
    Live,
    Expired,
}

#[derive(Debug, Clone)]
struct Operation {
    state: ApplyState,
    cutover_policy: CutoverPolicy,
    on_failure: FailurePolicy,
    started: bool,
    attempt: i32,
    lease: Lease,
}

#[derive(Debug, Clone)]
struct Request {
    kind: ControlRequestKind,
    /// `None`: the whole apply; else an index into the operations.
    scope: Option<usize>,
}

#[derive(Debug, Clone)]
struct Case {
    defer_cutover: bool,
    max_concurrency: Option<i64>,
    max_attempts: i32,
    operations: Vec<Operation>,
    requests: Vec<Request>,
    /// A completed `release`: its scope and how many failures it lets through.
    release: Option<(Option<usize>, i64)>,
    /// The claims' scope: the operations whose deployments it lists (none: any), and whether it
    /// names the apply's environment (`Some(true)`), another one, or none.
    scope: (BTreeSet<usize>, Option<bool>),
}

fn operation() -> impl Strategy<Value = Operation> {
    (
        prop::sample::select(ApplyState::ALL.to_vec()),
        prop::sample::select(CutoverPolicy::ALL.to_vec()),
        prop::sample::select(FailurePolicy::ALL.to_vec()),
        any::<bool>(),
        0..3i32,
        prop::sample::select(vec![Lease::None, Lease::Live, Lease::Expired]),
    )
        .prop_map(
            |(state, cutover_policy, on_failure, started, attempt, lease)| {
                // What the store never writes: a lease on an operation nobody holds (pending, stopped,
                // paused, failed_retryable clear it), a lease expiry on a settled one (a holder's
                // settling write clears it), a started pending operation, an active one never started.
                let unheld = applyops::state::clears_lease(state);
                let lease = if unheld { Lease::None } else { lease };
                let started = match state {
                    ApplyState::Pending => false,
                    ApplyState::Stopped
                    | ApplyState::Paused
                    | ApplyState::Cancelled
                    | ApplyState::Failed => started,
                    _ => true,
                };
                Operation {
                    state,
                    cutover_policy,
                    on_failure,
                    started,
                    attempt,
                    lease,
                }
            },
        )
}

fn request(operations: usize) -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec![
            ControlRequestKind::Stop,
            ControlRequestKind::Start,
            ControlRequestKind::Cancel,
            ControlRequestKind::Cutover,
            ControlRequestKind::Revert,
            ControlRequestKind::SkipRevert,
        ]),
        prop::option::of(0..operations),
    )
        .prop_map(|(kind, scope)| Request { kind, scope })
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(operation(), 1..=4).prop_flat_map(|operations| {
        let n = operations.len();
        (
            any::<bool>(),
            prop::option::of(1..=2i64),
            0..3i32,
            Just(operations),
            prop::collection::vec(request(n), 0..=3),
            prop::option::of((prop::option::of(0..n), 0..=3i64)),
            (
                prop::collection::btree_set(0..n, 0..=n),
                prop::option::weighted(0.2, any::<bool>()),
            ),
        )
            .prop_map(
                |(
                    defer_cutover,
                    max_concurrency,
                    max_attempts,
                    operations,
                    requests,
                    release,
                    scope,
                )| {
                    let requests = reachable_requests(&operations, defer_cutover, requests);
                    Case {
                        defer_cutover,
                        max_concurrency,
                        max_attempts,
                        operations,
                        requests,
                        release,
                        scope,
                    }
                },
            )
    })
}

/// Drops what recording would have refused: a second request of a kind for a scope, opposites
/// pending together, a revert decision on an operation not in `revert_window` (or for the whole
/// apply, which is recorded per operation), a cutover on an apply that does not defer cutovers.
fn reachable_requests(
    operations: &[Operation],
    defer_cutover: bool,
    requests: Vec<Request>,
) -> Vec<Request> {
    let mut kept: Vec<Request> = Vec::new();
    for request in requests {
        let opposite = match request.kind {
            ControlRequestKind::Stop => Some(ControlRequestKind::Start),
            ControlRequestKind::Start => Some(ControlRequestKind::Stop),
            ControlRequestKind::Revert => Some(ControlRequestKind::SkipRevert),
            ControlRequestKind::SkipRevert => Some(ControlRequestKind::Revert),
            _ => None,
        };
        let in_window = request
            .scope
            .is_some_and(|i| operations[i].state == ApplyState::RevertWindow);
        let refused = match request.kind {
            ControlRequestKind::Revert | ControlRequestKind::SkipRevert => !in_window,
            ControlRequestKind::Cutover => !defer_cutover,
            _ => false,
        };
        let duplicate = kept
            .iter()
            .any(|k| k.kind == request.kind && k.scope == request.scope);
        let opposed = kept.iter().any(|k| Some(k.kind) == opposite);
        if !refused && !duplicate && !opposed {
            kept.push(request);
        }
    }
    kept
}

/// Writes `case` row by row (the store's own writes could not build most of these states) and
/// returns the apply and its operations in claim order.
fn build(conn: &mut DbConnection, case: &Case) -> (ApplyId, Vec<ApplyOperationId>) {
    let now = Utc::now().naive_utc();
    let created = now - Duration::hours(1);
    let failures = case
        .operations
        .iter()
        .filter(|op| is_failure(op.state))
        .count() as i64;
    diesel::insert_into(applies::table)
        .values((
            applies::apply_identifier.eq("generated"),
            applies::database_name.eq("db"),
            applies::environment.eq("production"),
            applies::deployment.eq("d0"),
            applies::state.eq(ApplyState::Running),
            applies::created_at.eq(datetime(created)),
            applies::updated_at.eq(datetime(created)),
            applies::defer_cutover.eq(case.defer_cutover),
            applies::max_concurrency.eq(case.max_concurrency),
            applies::max_attempts.eq(case.max_attempts),
            applies::failure_seq.eq(failures),
        ))
        .execute(conn)
        .unwrap();
    let apply_id: ApplyId = applies::table
        .select(applies::id)
        .order(applies::id.desc())
        .first(conn)
        .unwrap();
    let mut ids = Vec::new();
    let mut failure_seq = 0;
    for (i, op) in case.operations.iter().enumerate() {
        let failure = is_failure(op.state).then(|| {
            failure_seq += 1;
            failure_seq
        });
        let (token, expires): (&str, Option<NaiveDateTime>) = match op.lease {
            Lease::None => ("", None),
            Lease::Live => (
                "0123456789abcdef0123456789abcdef",
                Some(now + Duration::hours(1)),
            ),
            Lease::Expired => (
                "fedcba9876543210fedcba9876543210",
                Some(now - Duration::minutes(5)),
            ),
        };
        let settled = applyops::state::is_settled(op.state);
        diesel::insert_into(ops::table)
            .values((
                ops::apply_id.eq(apply_id),
                ops::deployment.eq(format!("d{i}")),
                ops::target.eq(""),
                ops::state.eq(op.state),
                ops::cutover_policy.eq(op.cutover_policy),
                ops::on_failure.eq(op.on_failure),
                ops::attempt.eq(op.attempt),
                ops::started_at.eq(op.started.then_some(created)),
                ops::completed_at.eq(settled.then_some(created)),
                ops::created_at.eq(datetime(created + Duration::seconds(i as i64))),
                ops::updated_at.eq(datetime(created)),
                ops::lease_owner.eq(if token.is_empty() { "" } else { "holder" }),
                ops::lease_token.eq(token),
                ops::lease_acquired_at.eq(expires.map(|_| created)),
                ops::lease_expires_at.eq(expires),
                ops::database_name.eq("db"),
                ops::environment.eq("production"),
                ops::holds_target.eq((!settled).then_some(true)),
                ops::failure_seq.eq(failure),
            ))
            .execute(conn)
            .unwrap();
        ids.push(
            ops::table
                .filter(ops::apply_id.eq(apply_id))
                .filter(ops::deployment.eq(format!("d{i}")))
                .select(ops::id)
                .first(conn)
                .unwrap(),
        );
    }
    let mut insert_request = |kind: ControlRequestKind,
                              scope: Option<usize>,
                              status: ControlRequestStatus,
                              releases_through: Option<i64>| {
        diesel::insert_into(reqs::table)
            .values((
                reqs::apply_id.eq(apply_id),
                reqs::apply_operation_id.eq(scope.map(|i| ids[i])),
                reqs::kind.eq(kind),
                reqs::status.eq(status),
                reqs::requested_by.eq("generator"),
                reqs::created_at.eq(datetime(created)),
                reqs::updated_at.eq(datetime(created)),
                reqs::completed_at.eq((status != ControlRequestStatus::Pending).then_some(created)),
                reqs::releases_through.eq(releases_through),
            ))
            .execute(conn)
            .unwrap();
    };
    for request in &case.requests {
        insert_request(
            request.kind,
            request.scope,
            ControlRequestStatus::Pending,
            None,
        );
    }
    if let Some((scope, through)) = case.release {
        insert_request(
            ControlRequestKind::Release,
            scope,
            ControlRequestStatus::Completed,
            Some(through),
        );
    }
    (apply_id, ids)
}

/// The claims' scope of `case`: the deployments `d{i}` it lists, and the apply's environment or
/// another.
fn scope_of(case: &Case) -> ClaimScope {
    let mut scope = ClaimScope::any().deployments(case.scope.0.iter().map(|i| format!("d{i}")));
    if let Some(own) = case.scope.1 {
        scope = scope.environment(if own { "production" } else { "staging" });
    }
    scope
}

/// The operations `blockers_in` calls `Claimable` in `scope`.
fn claimable(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    scope: &ClaimScope,
) -> (BTreeSet<ApplyOperationId>, String) {
    let blockers = applies_store::blockers_in(conn, apply_id, scope).unwrap();
    let set = blockers
        .iter()
        .filter(|(_, blocker)| *blocker == Blocker::Claimable)
        .map(|(id, _)| *id)
        .collect();
    (set, format!("{blockers:?}"))
}

/// What the old SQL said of one operation: the copy claim's and the cutover claim's conditions.
#[derive(Debug, QueryableByName)]
struct Legacy {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    copy_claimable: Option<bool>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bool>)]
    cutover_claimable: Option<bool>,
}

/// The old claim conditions of every operation of `apply_id`, as (copy, cutover); NULL is "not known
/// to hold", as a WHERE clause reads it.
fn legacy_gates(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> BTreeMap<ApplyOperationId, (bool, bool)> {
    use diesel::sql_types::BigInt;
    let rows: Vec<Legacy> = match conn {
        DbConnection::Mysql(_) => diesel::sql_query(include_str!("legacy_gates/mysql.sql"))
            .bind::<BigInt, _>(apply_id.0)
            .load(conn),
        DbConnection::Pg(_) => diesel::sql_query(include_str!("legacy_gates/postgres.sql"))
            .bind::<BigInt, _>(apply_id.0)
            .load(conn),
        DbConnection::Sqlite(_) => {
            let now = Utc::now().naive_utc();
            diesel::sql_query(include_str!("legacy_gates/sqlite.sql"))
                .bind::<applyops::schema_types::Datetime, _>(now)
                .bind::<applyops::schema_types::Datetime, _>(now)
                .bind::<BigInt, _>(apply_id.0)
                .load(conn)
        }
    }
    .expect("the legacy gates run");
    rows.into_iter()
        .map(|row| {
            (
                ApplyOperationId(row.id),
                (
                    row.copy_claimable == Some(true),
                    row.cutover_claimable == Some(true),
                ),
            )
        })
        .collect()
}

/// The pure rules' decision for `case`, built from the case itself (not from the rows).
fn pure_decisions(case: &Case) -> Vec<Decision> {
    let mut failures = 0;
    let operations: Vec<OperationRules> = case
        .operations
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let failure_seq = is_failure(op.state).then(|| {
                failures += 1;
                failures
            });
            let mut pending = PendingFor::default();
            for request in case
                .requests
                .iter()
                .filter(|r| r.scope.is_none_or(|s| s == i))
            {
                match request.kind {
                    ControlRequestKind::Stop => pending.stop = true,
                    ControlRequestKind::Cancel => pending.cancel = true,
                    ControlRequestKind::Start => pending.start = true,
                    ControlRequestKind::Revert => pending.revert = true,
                    ControlRequestKind::SkipRevert => pending.skip_revert = true,
                    ControlRequestKind::Cutover => pending.cutover |= request.scope.is_some(),
                    _ => {}
                }
            }
            OperationRules {
                state: Some(op.state),
                cutover_policy: Some(op.cutover_policy),
                on_failure: Some(op.on_failure),
                started: op.started,
                attempt: op.attempt,
                failure_seq,
                released_through: case
                    .release
                    .filter(|(scope, _)| scope.is_none_or(|s| s == i))
                    .map(|(_, through)| through),
                pending,
            }
        })
        .collect();
    let apply = ApplyRules {
        defer_cutover: case.defer_cutover,
        max_concurrency: case.max_concurrency,
        max_attempts: case.max_attempts,
        cutover_requested: case
            .requests
            .iter()
            .any(|r| r.kind == ControlRequestKind::Cutover && r.scope.is_none()),
    };
    decide(&apply, &operations)
}

/// Whether operation `id`'s lease is free now (none, or expired), read from its row.
fn lease_free(conn: &mut DbConnection, id: ApplyOperationId) -> bool {
    let (token, expires): (String, Option<NaiveDateTime>) = ops::table
        .find(id)
        .select((ops::lease_token, ops::lease_expires_at))
        .first(conn)
        .unwrap();
    token.is_empty() || expires.is_none_or(|at| at <= Utc::now().naive_utc())
}

/// The old SQL and a decision agree on every operation: a claim's old condition held exactly when
/// the decision has that claim take it (or move it in place) and its lease is free.
fn agree(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    ids: &[ApplyOperationId],
    decided: &[(Option<ClaimAction>, Option<ClaimAction>)],
    what: &str,
) -> Result<(), TestCaseError> {
    let legacy = legacy_gates(conn, apply_id);
    for (id, (copy, cutover)) in ids.iter().zip(decided) {
        let free = lease_free(conn, *id);
        let new = (copy.is_some() && free, cutover.is_some() && free);
        let old = legacy[id];
        if old != new {
            return Err(TestCaseError::fail(format!(
                "operation {id}: the old SQL says (copy, cutover) = {old:?}, the {what} \
                 ({copy:?}, {cutover:?}, lease free: {free}) says {new:?}"
            )));
        }
    }
    Ok(())
}

/// The decision stored on each of `ids`.
fn stored_decisions(
    conn: &mut DbConnection,
    ids: &[ApplyOperationId],
) -> Vec<(Option<ClaimAction>, Option<ClaimAction>)> {
    ids.iter()
        .map(|id| {
            let (copy, cutover): (Option<String>, Option<String>) = ops::table
                .find(*id)
                .select((ops::copy_claim, ops::cutover_claim))
                .first(conn)
                .unwrap();
            let read = |v: Option<String>| v.map(|v| ClaimAction::from_stored(&v).expect("known"));
            (read(copy), read(cutover))
        })
        .collect()
}

/// The apply's stored state is the pure derivation of its operations as stored.
fn derived_as_stored(conn: &mut DbConnection, apply_id: ApplyId) -> Result<(), TestCaseError> {
    let rollout = applies_store::rollout(conn, apply_id).unwrap().unwrap();
    let released: BTreeMap<Option<ApplyOperationId>, i64> = reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::kind.eq(ControlRequestKind::Release))
        .filter(reqs::status.eq(ControlRequestStatus::Completed))
        .select((reqs::apply_operation_id, reqs::releases_through))
        .load::<(Option<ApplyOperationId>, Option<i64>)>(conn)
        .unwrap()
        .into_iter()
        .filter_map(|(scope, through)| through.map(|t| (scope, t)))
        .collect();
    let views: Vec<OperationView<'_>> = rollout
        .operations
        .iter()
        .map(|entry| {
            let op = &entry.operation;
            OperationView {
                state: op.state,
                cutover_policy: op.cutover_policy,
                on_failure: op.on_failure,
                started: op.started_at.is_some(),
                released_through: [released.get(&None), released.get(&Some(op.id))]
                    .into_iter()
                    .flatten()
                    .copied()
                    .max(),
                failure_seq: op.failure_seq,
                deployment: &op.deployment,
                error_message: op.error_message.as_deref(),
            }
        })
        .collect();
    let derived = derive_apply_state(&views);
    if rollout.apply.state != derived.state {
        return Err(TestCaseError::fail(format!(
            "the apply is stored {} but its operations derive {}",
            rollout.apply.state, derived.state
        )));
    }
    Ok(())
}

/// The old SQL against the pure rules on the rows as built, then against the decision the store
/// keeps once it has refreshed the apply; and the derived state.
fn rules_did_not_change(
    conn: &mut DbConnection,
    case: &Case,
    apply_id: ApplyId,
    ids: &[ApplyOperationId],
) -> Result<(), TestCaseError> {
    let pure: Vec<_> = pure_decisions(case)
        .into_iter()
        .map(|d| (d.copy, d.cutover))
        .collect();
    agree(conn, apply_id, ids, &pure, "pure decision")?;
    applies_store::refresh(conn, apply_id).unwrap();
    let stored = stored_decisions(conn, ids);
    agree(conn, apply_id, ids, &stored, "stored decision")?;
    derived_as_stored(conn, apply_id)
}

/// The property for one generated apply, in a transaction that is rolled back.
fn check(conn: &mut DbConnection, case: &Case) -> Result<(), TestCaseError> {
    let mut outcome = Ok(());
    let _ = conn.transaction::<(), StoreError, _>(|conn| {
        let (apply_id, ids) = build(conn, case);
        if let Err(failed) = rules_did_not_change(conn, case, apply_id, &ids) {
            outcome = Err(failed);
            return Err(StoreError::InvalidInput {
                field: "rollback",
                reason: "probe only".into(),
            });
        }
        let scope = scope_of(case);
        let options = opts("prober").with_scope(scope.clone());
        for _step in 0..3 * ids.len() + 3 {
            let (before, shown) = claimable(conn, apply_id, &scope);
            // What a claim may take, and what some claim must take when nothing is taken.
            let (mut may, mut must) = (before.clone(), before.clone());
            let taken = match claims::claim_next(conn, &options).unwrap() {
                Some(claimed) => Some(claimed),
                None => {
                    // The copy claim took nothing, but it may have moved an operation whose lease
                    // lapsed under a stop or cancel in place (`StopPending` / `CancelPending`),
                    // which changes what holds the others back (a cancelled sibling no longer
                    // holds the cutover order, a stopped one no longer counts against the cap).
                    // Then the cutover claim, running after that move, may take what `blockers`
                    // calls Claimable before or after it, and must take one of those it calls
                    // Claimable at both moments.
                    let (after, _) = claimable(conn, apply_id, &scope);
                    may.extend(after.iter().copied());
                    must.retain(|id| after.contains(id));
                    claims::claim_next_cutover(conn, &options).unwrap()
                }
            };
            match taken {
                Some(claimed) if !may.contains(&claimed.operation.id) => {
                    outcome = Err(TestCaseError::fail(format!(
                        "a claim took operation {} ({:?}, was {}), which blockers did not call \
                         Claimable: {shown}",
                        claimed.operation.id, claimed.kind, claimed.previous_state
                    )));
                    break;
                }
                Some(_) => {}
                None if !must.is_empty() => {
                    outcome = Err(TestCaseError::fail(format!(
                        "blockers called {must:?} Claimable, and no claim took anything: {shown}"
                    )));
                    break;
                }
                // Nothing taken and nothing owed; carry on while the copy claim still moves
                // operations in place.
                None if claimable(conn, apply_id, &scope).1 != shown => {}
                None => break,
            }
        }
        Err(StoreError::InvalidInput {
            field: "rollback",
            reason: "probe only".into(),
        })
    });
    outcome
}

/// Generated applies per backend in the suite's run.
const CASES: u32 = 10_000;
/// Generated applies per backend in the `--ignored` long run.
const LONG_RUN_CASES: u32 = 100_000;

fn cases(default: u32) -> u32 {
    std::env::var("APPLYOPS_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn claimable_holds_exactly_when_some_claim_takes_the_operation(db: &TestDb) {
    run_cases(db, cases(CASES));
}

#[test]
#[ignore = "the long run: 100,000 generated applies per backend"]
fn long_run_mysql() {
    run_cases(
        &TestDb::new(crate::harness::Kind::Mysql),
        cases(LONG_RUN_CASES),
    );
}

#[test]
#[ignore = "the long run: 100,000 generated applies per backend"]
fn long_run_postgres() {
    run_cases(
        &TestDb::new(crate::harness::Kind::Postgres),
        cases(LONG_RUN_CASES),
    );
}

#[test]
#[ignore = "the long run: 100,000 generated applies per backend"]
fn long_run_sqlite() {
    run_cases(
        &TestDb::new(crate::harness::Kind::Sqlite),
        cases(LONG_RUN_CASES),
    );
}

fn run_cases(db: &TestDb, cases: u32) {
    let conn = std::cell::RefCell::new(db.conn());
    let mut runner = TestRunner::new(Config {
        cases,
        // Failures are reported with the shrunk case; nothing is persisted from a shared test.
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| check(&mut conn.borrow_mut(), &case))
        .unwrap_or_else(|failure| panic!("{failure}"));
}
