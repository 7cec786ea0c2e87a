//! Building blocks for the worker-contract tests: applies with operations in chosen states and
//! policies, lease expiry, and raw row reads that include the lease token.

use std::time::Duration;

use applyops::db::DbConnection;
use applyops::models::{
    ApplyId, ApplyOperation, ApplyOperationId, ControlRequest, ControlRequestId, LeaseToken,
    NewApply, NewApplyOperation, NewControlRequest,
};
use applyops::schema::apply_operations as ops;
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{ClaimOptions, ClaimedOperation};
use applyops::store::{applies, apply_operations, claims, control_requests};
use diesel::prelude::*;

/// A lease TTL long enough that nothing expires during a test unless the test expires it.
pub const TTL: Duration = Duration::from_secs(60);

/// Claim options for worker `owner` with [`TTL`].
pub fn opts(owner: &str) -> ClaimOptions {
    ClaimOptions::new(owner, TTL)
}

/// Inserts an apply (unique identifier and database per call, so fixtures' deployments never share a
/// target) and returns its id.
pub fn apply(conn: &mut DbConnection, defer_cutover: bool) -> ApplyId {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let new = NewApply::new(
        format!("apply-{n}"),
        format!("commerce-{n}"),
        "production",
        "main",
    )
    .with_defer_cutover(defer_cutover);
    applies::insert(conn, &new).expect("insert apply")
}

/// An apply with one operation per `deployments`, all under `policy` and `on_failure`, inserted in
/// order (so earlier deployments come first by (created_at, id)). Returns (apply id, operation ids).
pub fn rollout(
    conn: &mut DbConnection,
    deployments: usize,
    policy: CutoverPolicy,
    on_failure: FailurePolicy,
) -> (ApplyId, Vec<ApplyOperationId>) {
    let apply_id = apply(conn, false);
    let ids = (0..deployments)
        .map(|i| {
            let new = NewApplyOperation::new(apply_id, format!("deployment-{i}"))
                .with_cutover_policy(policy)
                .with_on_failure(on_failure);
            apply_operations::insert(conn, &new).expect("insert operation")
        })
        .collect();
    (apply_id, ids)
}

/// Marks the claim rules of apply `apply_id`'s operations undecided, as a tool that writes rows by
/// hand must: the stored decision no longer follows from the rows, and the claim that meets one of
/// them decides the apply again first.
pub fn undecide(conn: &mut DbConnection, apply_id: ApplyId) {
    let undecided = applyops::state::ClaimAction::Undecided;
    diesel::update(ops::table.filter(ops::apply_id.eq(apply_id)))
        .set((
            ops::copy_claim.eq(Some(undecided)),
            ops::cutover_claim.eq(Some(undecided)),
        ))
        .execute(conn)
        .expect("undecide");
}

/// [`undecide`] for the apply of operation `id`.
fn undecide_apply_of(conn: &mut DbConnection, id: ApplyOperationId) {
    let apply_id: ApplyId = ops::table
        .find(id)
        .select(ops::apply_id)
        .first(conn)
        .expect("the operation's apply");
    undecide(conn, apply_id);
}

/// Sets an apply's retry budget directly.
pub fn set_max_attempts(conn: &mut DbConnection, apply_id: ApplyId, max_attempts: i32) {
    use applyops::schema::applies as applies_table;
    diesel::update(applies_table::table.find(apply_id))
        .set(applies_table::max_attempts.eq(max_attempts))
        .execute(conn)
        .expect("set max_attempts");
    undecide(conn, apply_id);
}

/// Sets an operation's attempt directly.
pub fn set_attempt(conn: &mut DbConnection, id: ApplyOperationId, attempt: i32) {
    diesel::update(ops::table.find(id))
        .set(ops::attempt.eq(attempt))
        .execute(conn)
        .expect("set attempt");
    undecide_apply_of(conn, id);
}

/// Sets an apply's concurrency cap directly.
pub fn set_max_concurrency(conn: &mut DbConnection, apply_id: ApplyId, cap: Option<i64>) {
    use applyops::schema::applies as applies_table;
    diesel::update(applies_table::table.find(apply_id))
        .set(applies_table::max_concurrency.eq(cap))
        .execute(conn)
        .expect("set max_concurrency");
    undecide(conn, apply_id);
}

/// Sets a row's state directly, as an operator's SQL or an older tool might (no stamps, no checks).
pub fn force_state(conn: &mut DbConnection, id: ApplyOperationId, state: ApplyState) {
    diesel::update(ops::table.find(id))
        .set(ops::state.eq(state))
        .execute(conn)
        .expect("force state");
    undecide_apply_of(conn, id);
}

/// Stores `state` verbatim in a row's state column, even a value no version knows.
pub fn force_raw_state(conn: &mut DbConnection, id: ApplyOperationId, state: &str) {
    diesel::update(ops::table.find(id))
        .set(ops::state.eq(state))
        .execute(conn)
        .expect("force raw state");
    undecide_apply_of(conn, id);
}

/// Sets a raw column value the store would refuse to write (e.g. an unknown policy).
pub fn force_policy(
    conn: &mut DbConnection,
    id: ApplyOperationId,
    cutover_policy: &str,
    on_failure: &str,
) {
    diesel::update(ops::table.find(id))
        .set((
            ops::cutover_policy.eq(cutover_policy),
            ops::on_failure.eq(on_failure),
        ))
        .execute(conn)
        .expect("force policy");
    undecide_apply_of(conn, id);
}

/// Stamps a row's `started_at`, as if it had run before (the resume claim takes only started rows).
pub fn force_started(conn: &mut DbConnection, id: ApplyOperationId) {
    let long_ago = chrono::NaiveDate::from_ymd_opt(2001, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    diesel::update(ops::table.find(id))
        .set(ops::started_at.eq(Some(long_ago)))
        .execute(conn)
        .expect("force started");
    undecide_apply_of(conn, id);
}

/// Moves a row's lease expiry far into the past, as if its holder had died long ago.
pub fn expire_lease(conn: &mut DbConnection, id: ApplyOperationId) {
    let long_ago = chrono::NaiveDate::from_ymd_opt(2001, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    diesel::update(ops::table.find(id))
        .set(ops::lease_expires_at.eq(Some(long_ago)))
        .execute(conn)
        .expect("expire lease");
}

/// Gives a row a live lease (an hour left), held by a worker the test does not drive.
pub fn live_lease(conn: &mut DbConnection, id: ApplyOperationId) {
    diesel::update(ops::table.find(id))
        .set((
            ops::lease_owner.eq("busy-worker"),
            ops::lease_token.eq("fedcba9876543210fedcba9876543210"),
            ops::lease_expires_at.eq(Some(
                chrono::Utc::now().naive_utc() + chrono::Duration::hours(1),
            )),
        ))
        .execute(conn)
        .expect("live lease");
}

/// Gives a row a lease that is already expired, held by a worker that is gone.
pub fn dead_lease(conn: &mut DbConnection, id: ApplyOperationId) {
    diesel::update(ops::table.find(id))
        .set((
            ops::lease_owner.eq("dead-worker"),
            ops::lease_token.eq("0123456789abcdef0123456789abcdef"),
        ))
        .execute(conn)
        .expect("dead lease");
    expire_lease(conn, id);
}

/// The row as stored, with its lease token (which the model leaves out).
pub fn row(conn: &mut DbConnection, id: ApplyOperationId) -> (ApplyOperation, LeaseToken) {
    let op = apply_operations::get(conn, id)
        .expect("get")
        .expect("row exists");
    let token = ops::table
        .find(id)
        .select(ops::lease_token)
        .first::<String>(conn)
        .expect("read token");
    (op, LeaseToken::from(token))
}

/// Who the tests' control requests are from.
pub const OPERATOR: &str = "test-operator";

/// Asks for a control request as [`OPERATOR`], with `reason`.
pub fn ask(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: Option<ApplyOperationId>,
    kind: ControlRequestKind,
    reason: Option<&str>,
) -> applyops::StoreResult<ControlRequest> {
    let mut new = NewControlRequest::new(apply_id, kind, OPERATOR);
    new.operation_id = operation_id;
    new.reason = reason.map(str::to_owned);
    control_requests::request(conn, &new)
}

/// Files a control request.
pub fn request(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: Option<ApplyOperationId>,
    kind: ControlRequestKind,
) -> ControlRequestId {
    ask(conn, apply_id, operation_id, kind, None)
        .expect("request")
        .id
}

/// The copy claim for worker `owner`.
pub fn claim(conn: &mut DbConnection, owner: &str) -> Option<ClaimedOperation> {
    claims::claim_next(conn, &opts(owner)).expect("claim_next")
}

/// The cutover claim for worker `owner`.
pub fn claim_cutover(conn: &mut DbConnection, owner: &str) -> Option<ClaimedOperation> {
    claims::claim_next_cutover(conn, &opts(owner)).expect("claim_next_cutover")
}

/// The id of the operation the copy claim takes, if any.
pub fn claimed_id(conn: &mut DbConnection) -> Option<ApplyOperationId> {
    claim(conn, "probe").map(|c| c.operation.id)
}

/// The id of the operation the cutover claim takes, if any.
pub fn cutover_id(conn: &mut DbConnection) -> Option<ApplyOperationId> {
    claim_cutover(conn, "probe").map(|c| c.operation.id)
}

/// Makes sure apply `id` exists, inserting it with that id (database `db-<id>`, so its deployments are
/// targets of their own) when it does not: for tests that pick apply ids by hand. Operations need an
/// existing apply.
pub fn ensure_apply(conn: &mut DbConnection, id: ApplyId) {
    use applyops::schema::applies as a;
    if applies::get(conn, id).expect("get apply").is_some() {
        return;
    }
    let now = chrono::Utc::now().naive_utc();
    diesel::insert_into(a::table)
        .values((
            a::id.eq(id),
            a::apply_identifier.eq(format!("apply-id-{id}")),
            a::database_name.eq(format!("db-{id}")),
            a::environment.eq("production"),
            a::deployment.eq("main"),
            a::state.eq(ApplyState::Pending),
            a::created_at.eq(datetime(now)),
            a::updated_at.eq(datetime(now)),
        ))
        .execute(conn)
        .expect("insert apply with a chosen id");
}

/// [`apply_operations::insert`] of `deployment` into apply `apply_id`, creating the apply first when
/// the test picked its id by hand.
pub fn insert_operation(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    deployment: &str,
) -> ApplyOperationId {
    ensure_apply(conn, apply_id);
    apply_operations::insert(conn, &NewApplyOperation::new(apply_id, deployment))
        .expect("insert operation")
}

/// The operations repeated claims with `options` take now (the copy claim, else the cutover claim,
/// until both come back empty), in a transaction that is rolled back.
pub fn taken_by(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> std::collections::BTreeSet<ApplyOperationId> {
    use diesel::Connection;
    let mut taken = std::collections::BTreeSet::new();
    let _ = conn.transaction::<(), applyops::StoreError, _>(|conn| {
        loop {
            let claimed = match claims::claim_next(conn, options).unwrap() {
                Some(claimed) => Some(claimed),
                None => claims::claim_next_cutover(conn, options).unwrap(),
            };
            match claimed {
                Some(claimed) => {
                    taken.insert(claimed.operation.id);
                }
                None => break,
            }
        }
        Err(applyops::StoreError::InvalidInput {
            field: "rollback",
            reason: "probe only".into(),
        })
    });
    taken
}
