//! Claims: how a worker takes the next operation that is safe to drive.
//!
//! [`claim_next`] is the copy claim and [`claim_next_cutover`] the cutover claim of the worker
//! contract. Each runs in one [claim transaction](crate::db) of two statements: a SELECT that finds the
//! oldest claimable row by (`created_at`, `id`) and locks it (MySQL `FOR UPDATE SKIP LOCKED` in READ
//! COMMITTED, so claimers never wait on each other's rows; SQLite `BEGIN IMMEDIATE`), and an UPDATE
//! that takes it, repeating the condition it was selected on (its state, a free lease and, for a start,
//! no pending stop) so a row that changed in between is simply not taken. The row returned is the
//! selected one with the UPDATE's values applied, all timestamps being the one database time the
//! SELECT read.
//!
//! The SELECT walks `apply_operations_claim_idx` (`claimable`, `created_at`, `id`): only rows in a
//! claimable state, already in claim order, so it stops at the first that qualifies. Sibling, request
//! and apply conditions are correlated subqueries on their own indexes.
//!
//! Unknown policy values fail closed: the conditions name the known permissive values (`barrier`,
//! `parallel`, `continue`, `pause`), so anything else gets the strictest behaviour (`rolling`, `halt`).

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::dsl::{exists, not};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::leases::{self, OperationLease};
use super::{coalesce_timestamp, control_requests, validate};
use crate::db::{self, first_for_claim, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::ApplyOperation;
use crate::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
use crate::state::{ApplyState, HasApplyState};

mod sibling_alias {
    // The alias macro declares public items that carry no docs of their own.
    #![allow(missing_docs)]
    diesel::alias!(crate::schema::apply_operations as siblings: Siblings);
}
use sibling_alias::siblings;

/// The default retry budget: `failed_retryable` operations are retried while `attempt` is below it.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;

/// The states an earlier sibling may be in for a `barrier` operation to start.
const AT_OR_PAST_BARRIER: [&str; 4] = [
    ApplyState::WaitingForCutover.as_str(),
    ApplyState::CuttingOver.as_str(),
    ApplyState::RevertWindow.as_str(),
    ApplyState::Completed.as_str(),
];

/// The active states the copy claim's recovery takes over unconditionally: all of
/// [`ApplyState::is_active`] but `waiting_for_cutover`, which it takes only where the copy claim owns
/// the cutover.
fn recoverable() -> Vec<&'static str> {
    ApplyState::ALL
        .into_iter()
        .filter(|state| state.is_active() && *state != ApplyState::WaitingForCutover)
        .map(ApplyState::as_str)
        .collect()
}

/// The states the cutover claim's recovery takes over.
const CUTOVER_RECOVERABLE: [&str; 2] = [
    ApplyState::CuttingOver.as_str(),
    ApplyState::RevertWindow.as_str(),
];

/// The cutover policies whose cutover goes through [`claim_next_cutover`].
const CUTOVER_CLAIMED_POLICIES: [&str; 2] = ["barrier", "parallel"];

/// What a claim needs to know about the claiming worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimOptions {
    /// The worker's name, stored as the lease owner: 1 to 255 characters. Make it unique per worker
    /// (host, process, thread) so operators can tell holders apart.
    pub owner: String,
    /// How long the lease lasts without a [`heartbeat`](super::leases::heartbeat): 1 µs to 24 h.
    pub lease_ttl: Duration,
    /// The retry budget: a `failed_retryable` operation is retried while its `attempt` is below this,
    /// and never once it is at or over it. 0 turns retries off. Default [`DEFAULT_MAX_ATTEMPTS`].
    /// Unused by the cutover claim.
    pub max_attempts: i32,
}

impl ClaimOptions {
    /// Options for worker `owner` with lease TTL `lease_ttl` and the default retry budget.
    pub fn new(owner: impl Into<String>, lease_ttl: Duration) -> Self {
        ClaimOptions {
            owner: owner.into(),
            lease_ttl,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }

    /// Sets the retry budget.
    pub fn with_max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    fn check(&self) -> StoreResult<()> {
        validate::required_varchar("owner", &self.owner)?;
        leases::check_ttl(self.lease_ttl)?;
        if self.max_attempts < 0 {
            return Err(StoreError::invalid(
                "max_attempts",
                "must not be negative (0 turns retries off)",
            ));
        }
        Ok(())
    }
}

/// Why an operation was claimed, read off the state it had before the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimKind {
    /// `pending` → `running`: a first start.
    Start,
    /// An active state whose lease had expired or was released: the state is kept, the lease moves.
    Recovery,
    /// `stopped` → `resuming`, on a pending `start` request.
    Resume,
    /// `failed_retryable` → `running`, `attempt` + 1.
    Retry,
    /// `waiting_for_cutover` → `cutting_over` (the cutover claim).
    Cutover,
}

/// A claimed operation: the row as it is after the claim, the state it had before, and the lease to
/// drive it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedOperation {
    /// The operation after the claim (new state, stamps and lease applied).
    pub operation: ApplyOperation,
    /// The state it had before the claim.
    pub previous_state: ApplyState,
    /// Why it was claimed.
    pub kind: ClaimKind,
    /// The lease every write must go through.
    pub lease: OperationLease,
}

/// An operation of the same apply that comes earlier by (`created_at`, `id`). Deployments are unique
/// per apply, so every other operation of the apply is another deployment's.
macro_rules! earlier_sibling {
    () => {
        siblings
            .filter(siblings.field(ops::apply_id).eq(ops::apply_id))
            .filter(
                siblings
                    .field(ops::created_at)
                    .lt(ops::created_at)
                    .or(siblings
                        .field(ops::created_at)
                        .eq(ops::created_at)
                        .and(siblings.field(ops::id).lt(ops::id))),
            )
            .select(siblings.field(ops::id))
    };
}

/// A request of `$kind` in one of `$statuses` for the row's apply, whole-apply or naming the row.
macro_rules! request_for_row {
    ($kind:expr, $statuses:expr) => {
        exists(
            reqs::table
                .filter(reqs::apply_id.eq(ops::apply_id))
                .filter(reqs::kind.eq($kind))
                .filter(reqs::status.eq_any($statuses))
                .filter(
                    reqs::apply_operation_id
                        .is_null()
                        .or(reqs::apply_operation_id.eq(ops::id.nullable())),
                )
                .select(reqs::id),
        )
    };
}

/// A pending `stop` for the row's apply or for the row: the stop gate.
macro_rules! stop_pending {
    () => {
        request_for_row!("stop", ["pending"])
    };
}

/// No lease, or one that has expired by `$now`.
macro_rules! lease_free {
    ($now:expr) => {
        ops::lease_token
            .eq("")
            .or(ops::lease_expires_at.is_null())
            .or(ops::lease_expires_at.le($now))
    };
}

/// A `failed` earlier sibling lets the row pass: there is none, or the row's policy is `continue`, or
/// it is `pause` and the apply has a pending or completed `release`.
macro_rules! failure_gate {
    () => {
        not(exists(
            earlier_sibling!().filter(siblings.field(ops::state).eq("failed")),
        ))
        .or(ops::on_failure.eq("continue"))
        .or(ops::on_failure
            .eq("pause")
            .and(request_for_row!("release", ["pending", "completed"])))
    };
}

/// No earlier sibling blocks the row's start under its cutover policy (a failed one is the failure
/// gate's business): `parallel` never, `barrier` until the barrier, anything else until completed.
macro_rules! start_order_gate {
    () => {
        not(exists(
            earlier_sibling!()
                .filter(siblings.field(ops::state).ne("failed"))
                .filter(
                    ops::cutover_policy
                        .eq("barrier")
                        .and(siblings.field(ops::state).ne_all(AT_OR_PAST_BARRIER))
                        .or(ops::cutover_policy
                            .ne_all(CUTOVER_CLAIMED_POLICIES)
                            .and(siblings.field(ops::state).ne("completed"))),
                ),
        ))
    };
}

/// Every earlier sibling is `completed` (a failed one is the failure gate's business).
macro_rules! cutover_order_gate {
    () => {
        not(exists(earlier_sibling!().filter(
            siblings.field(ops::state).ne_all(["completed", "failed"]),
        )))
    };
}

/// The apply has another operation.
macro_rules! has_sibling {
    () => {
        exists(
            siblings
                .filter(siblings.field(ops::apply_id).eq(ops::apply_id))
                .filter(siblings.field(ops::id).ne(ops::id))
                .select(siblings.field(ops::id)),
        )
    };
}

/// The row's apply has `defer_cutover` = `$deferred`. A row whose apply is missing matches neither.
/// A scalar subquery on the primary key rather than `EXISTS`: MariaDB turns an `EXISTS` here into a
/// materialised scan of all applies (see `tests/it/explain.rs`).
macro_rules! apply_defers_cutover {
    ($deferred:expr) => {
        applies::table
            .filter(applies::id.eq(ops::apply_id))
            .select(applies::defer_cutover)
            .single_value()
            .eq($deferred)
    };
}

/// A pending `cutover` request naming the row itself. Scalar subqueries, like
/// [`apply_defers_cutover!`], so the request lookups stay index lookups per row.
macro_rules! cutover_requested_for_row {
    () => {
        reqs::table
            .filter(reqs::apply_id.eq(ops::apply_id))
            .filter(reqs::apply_operation_id.eq(ops::id.nullable()))
            .filter(reqs::kind.eq("cutover"))
            .filter(reqs::status.eq("pending"))
            .select(reqs::id)
            .limit(1)
            .single_value()
            .is_not_null()
    };
}

/// A pending whole-apply `cutover` request for the row's apply.
macro_rules! cutover_requested_for_apply {
    () => {
        reqs::table
            .filter(reqs::apply_id.eq(ops::apply_id))
            .filter(reqs::apply_operation_id.is_null())
            .filter(reqs::kind.eq("cutover"))
            .filter(reqs::status.eq("pending"))
            .select(reqs::id)
            .limit(1)
            .single_value()
            .is_not_null()
    };
}

/// The copy claim's candidates, oldest first: see [`claim_next`]. A macro, expanded once per
/// backend, because the row selection is typed by the backend it runs on.
macro_rules! copy_candidates {
    ($now:expr, $max_attempts:expr) => {
        ops::table
            .filter(ops::claimable.eq(true))
            .filter(lease_free!($now.nullable()))
            .filter(
                ops::state
                    .eq("pending")
                    .and(not(stop_pending!()))
                    .and(start_order_gate!())
                    .and(failure_gate!())
                    .or(ops::state.eq_any(recoverable()))
                    .or(ops::state.eq("waiting_for_cutover").and(
                        ops::cutover_policy
                            .ne_all(CUTOVER_CLAIMED_POLICIES)
                            .or(not(has_sibling!())),
                    ))
                    .or(ops::state
                        .eq("stopped")
                        .and(request_for_row!("start", ["pending"])))
                    .or(ops::state
                        .eq("failed_retryable")
                        .and(ops::attempt.lt($max_attempts))
                        .and(not(stop_pending!()))),
            )
            .order((ops::created_at.asc(), ops::id.asc()))
    };
}

/// The cutover claim's candidates, oldest first: see [`claim_next_cutover`].
macro_rules! cutover_candidates {
    ($now:expr) => {
        ops::table
            .filter(ops::claimable.eq(true))
            .filter(lease_free!($now.nullable()))
            .filter(ops::cutover_policy.eq_any(CUTOVER_CLAIMED_POLICIES))
            .filter(has_sibling!())
            .filter(
                ops::state
                    .eq("waiting_for_cutover")
                    .and(not(stop_pending!()))
                    .and(
                        apply_defers_cutover!(false)
                            .and(cutover_order_gate!())
                            .and(failure_gate!())
                            .or(apply_defers_cutover!(true).and(
                                cutover_requested_for_row!().or(cutover_requested_for_apply!()
                                    .and(cutover_order_gate!())
                                    .and(failure_gate!())),
                            )),
                    )
                    .or(ops::state.eq_any(CUTOVER_RECOVERABLE)),
            )
            .order((ops::created_at.asc(), ops::id.asc()))
    };
}

/// Claims the oldest operation the copy claim may take, or returns `None` when there is none or a
/// concurrent claimer took it first (not an error).
///
/// A row is claimable when its lease is free (none, expired, or released) and one of these holds:
/// 1. **Start**: `pending`, no pending `stop` for its apply or for it, no blocking earlier sibling under
///    its [`CutoverPolicy`](crate::state::CutoverPolicy), and a `failed` earlier sibling only as its
///    [`FailurePolicy`](crate::state::FailurePolicy) allows. Becomes `running`; `started_at` is stamped
///    once.
/// 2. **Recovery**: an [active](ApplyState::is_active) state, `waiting_for_cutover` only under
///    `rolling` (or an unknown policy) or in a single-operation apply. State kept. No order or stop
///    gate, so the new holder can see a stop and act on it.
/// 3. **Resume**: `stopped` with a pending `start` request for its apply or for it. Becomes `resuming`.
/// 4. **Retry**: `failed_retryable` with `attempt` below `max_attempts` and no pending `stop`. Becomes
///    `running` with `attempt` + 1 and the error message cleared.
///
/// Never: the completing states or `stopped` without a start (even with an expired lease), `paused`, a
/// live lease. Every claim mints a new token and stamps `lease_acquired_at` and `lease_expires_at` from
/// the database's clock.
///
/// Errors: [`StoreError::InvalidInput`] for bad [`ClaimOptions`], before any SQL.
pub fn claim_next(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> StoreResult<Option<ClaimedOperation>> {
    options.check()?;
    if db::write_lock_is_database_wide(conn) {
        let now = db::now();
        let any = diesel::select(exists(
            copy_candidates!(now, options.max_attempts).select(ops::id),
        ));
        if !any.get_result::<bool>(conn)? {
            return Ok(None);
        }
    }
    let token = leases::mint_token()?;
    db::claim_transaction(conn, |conn| {
        // Built inside the transaction: on SQLite "now" is the process clock, read once the write lock
        // is held, so it is later than every write already committed.
        let now = db::now();
        let candidate: Option<(ApplyOperation, NaiveDateTime)> = first_for_claim!(
            conn,
            copy_candidates!(now, options.max_attempts)
                .select((ApplyOperation::as_select(), db::now_when_read()))
        )
        .optional()?;
        let Some((candidate, now)) = candidate else {
            return Ok(None);
        };
        let previous_state = candidate.apply_state()?;
        let kind = match previous_state {
            ApplyState::Pending => ClaimKind::Start,
            ApplyState::Stopped => ClaimKind::Resume,
            ApplyState::FailedRetryable => ClaimKind::Retry,
            _ => ClaimKind::Recovery,
        };
        take(conn, candidate, previous_state, kind, now, options, token)
    })
}

/// Claims the oldest operation whose cutover is due, or returns `None`. Only operations whose
/// `cutover_policy` is `barrier` or `parallel`, in an apply with more than one operation, with a free
/// lease:
/// 1. **Automatic** (the apply's `defer_cutover` is false): `waiting_for_cutover`, every earlier
///    sibling `completed` (so one in `revert_window` still blocks) with the same failure-policy
///    exemptions as a start, and no pending `stop`. Becomes `cutting_over`.
/// 2. **Operator-directed** (`defer_cutover` is true): `waiting_for_cutover`, no pending `stop`, and a
///    pending `cutover` request naming this operation (which bypasses the sibling order, so an operator
///    can cut over any deployment while the others wait) or naming the whole apply (which keeps the
///    automatic order). Becomes `cutting_over`. In the same transaction the request naming the
///    operation is completed; a whole-apply request is completed by the claim that leaves no other
///    operation of the apply `waiting_for_cutover`.
/// 3. **Recovery**: `cutting_over` or `revert_window`; the lease moves, the state is kept.
///
/// `options.max_attempts` is not used. Errors: [`StoreError::InvalidInput`] for bad options.
pub fn claim_next_cutover(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> StoreResult<Option<ClaimedOperation>> {
    options.check()?;
    if db::write_lock_is_database_wide(conn) {
        let now = db::now();
        let any = diesel::select(exists(cutover_candidates!(now).select(ops::id)));
        if !any.get_result::<bool>(conn)? {
            return Ok(None);
        }
    }
    let token = leases::mint_token()?;
    db::claim_transaction(conn, |conn| {
        let now = db::now();
        let candidate: Option<(ApplyOperation, NaiveDateTime)> = first_for_claim!(
            conn,
            cutover_candidates!(now).select((ApplyOperation::as_select(), db::now_when_read()))
        )
        .optional()?;
        let Some((candidate, now)) = candidate else {
            return Ok(None);
        };
        let previous_state = candidate.apply_state()?;
        let kind = if previous_state == ApplyState::WaitingForCutover {
            ClaimKind::Cutover
        } else {
            ClaimKind::Recovery
        };
        let (apply_id, operation_id) = (candidate.apply_id, candidate.id);
        let claimed = take(conn, candidate, previous_state, kind, now, options, token)?;
        if claimed.is_some() && kind == ClaimKind::Cutover {
            control_requests::complete_cutover(conn, apply_id, operation_id)?;
        }
        Ok(claimed)
    })
}

/// The database's plan for [`claim_next`]'s row selection, one line per plan row: on MySQL the
/// `EXPLAIN` columns `select_type`, `table`, `type`, `key` and `Extra`; on SQLite the
/// `EXPLAIN QUERY PLAN` details. Reads nothing else and writes nothing: for operators checking that
/// the claim walks its index (see `tests/it/explain.rs`).
pub fn explain_claim_next(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let now = db::now();
    Ok(db::explain_for_claim!(
        conn,
        copy_candidates!(now, DEFAULT_MAX_ATTEMPTS)
            .select((ApplyOperation::as_select(), db::now_when_read()))
            .limit(1)
    )?)
}

/// The database's plan for [`claim_next_cutover`]'s row selection; see [`explain_claim_next`].
pub fn explain_claim_next_cutover(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let now = db::now();
    Ok(db::explain_for_claim!(
        conn,
        cutover_candidates!(now)
            .select((ApplyOperation::as_select(), db::now_when_read()))
            .limit(1)
    )?)
}

/// The UPDATE that takes a selected row: it repeats the state, the free lease and (for a start, a
/// retry or a cutover) the stop gate, and applies `kind`'s transition. `Ok(None)` when the row no longer
/// qualifies.
fn take(
    conn: &mut DbConnection,
    mut row: ApplyOperation,
    previous_state: ApplyState,
    kind: ClaimKind,
    now: NaiveDateTime,
    options: &ClaimOptions,
    token: String,
) -> StoreResult<Option<ClaimedOperation>> {
    let expires_at = leases::expiry(now, options.lease_ttl);
    let target = diesel::update(ops::table)
        .into_boxed()
        .filter(ops::id.eq(row.id))
        .filter(ops::state.eq(previous_state.as_str()))
        .filter(lease_free!(now));
    let target = match kind {
        ClaimKind::Start | ClaimKind::Retry | ClaimKind::Cutover => {
            target.filter(not(stop_pending!()))
        }
        ClaimKind::Recovery | ClaimKind::Resume => target,
    };
    let lease_columns = (
        ops::lease_owner.eq(options.owner.clone()),
        ops::lease_token.eq(token.clone()),
        ops::lease_acquired_at.eq(Some(now)),
        ops::lease_expires_at.eq(Some(expires_at)),
        ops::updated_at.eq(now),
    );
    let matched = match kind {
        ClaimKind::Start => target
            .set((
                lease_columns,
                ops::state.eq(ApplyState::Running.as_str()),
                ops::started_at.eq(coalesce_timestamp(ops::started_at, Some(now))),
            ))
            .execute(conn)?,
        ClaimKind::Retry => target
            .filter(ops::attempt.lt(options.max_attempts))
            .set((
                lease_columns,
                ops::state.eq(ApplyState::Running.as_str()),
                ops::attempt.eq(ops::attempt + 1),
                ops::error_message.eq(None::<String>),
            ))
            .execute(conn)?,
        ClaimKind::Resume => target
            .set((lease_columns, ops::state.eq(ApplyState::Resuming.as_str())))
            .execute(conn)?,
        ClaimKind::Cutover => target
            .set((
                lease_columns,
                ops::state.eq(ApplyState::CuttingOver.as_str()),
            ))
            .execute(conn)?,
        ClaimKind::Recovery => target.set(lease_columns).execute(conn)?,
    };
    if matched == 0 {
        return Ok(None);
    }
    // The row was locked (MySQL) or the database was (SQLite) since the SELECT, so the stored row is
    // the selected one with exactly these assignments applied.
    match kind {
        ClaimKind::Start => {
            row.state = ApplyState::Running.as_str().to_owned();
            row.started_at = row.started_at.or(Some(now));
        }
        ClaimKind::Retry => {
            row.state = ApplyState::Running.as_str().to_owned();
            row.attempt += 1;
            row.error_message = None;
        }
        ClaimKind::Resume => row.state = ApplyState::Resuming.as_str().to_owned(),
        ClaimKind::Cutover => row.state = ApplyState::CuttingOver.as_str().to_owned(),
        ClaimKind::Recovery => {}
    }
    row.lease_owner = options.owner.clone();
    row.lease_acquired_at = Some(now);
    row.lease_expires_at = Some(expires_at);
    row.updated_at = now;
    let lease = OperationLease {
        operation_id: row.id,
        apply_id: row.apply_id,
        owner: options.owner.clone(),
        token,
        acquired_at: now,
        expires_at,
        ttl: options.lease_ttl,
    };
    Ok(Some(ClaimedOperation {
        operation: row,
        previous_state,
        kind,
        lease,
    }))
}
