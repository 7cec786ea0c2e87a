//! Claims: how a worker takes the next operation that is safe to drive.
//!
//! [`claim_next`] is the copy claim and [`claim_next_cutover`] the cutover claim of the worker
//! contract. Each is an unlocked read followed by one [claim transaction](crate::db):
//! 1. An unlocked SELECT reads the ids of the oldest candidates (up to 16) by (`created_at`, `id`),
//!    walking `apply_operations_claim_idx` (`claimable`, `created_at`, `id`): only rows in a claimable
//!    state, already in claim order, so it stops once it has enough. Sibling, request and apply
//!    conditions are correlated subqueries on their own indexes. Nothing found: the claim ends here,
//!    with no transaction.
//! 2. In the transaction, the oldest candidate is locked by the same conditions narrowed to that one
//!    row (MySQL `FOR UPDATE SKIP LOCKED` in READ COMMITTED; SQLite
//!    `BEGIN IMMEDIATE`): a row another claimer holds is skipped, never waited for, and a row that no
//!    longer qualifies is released at once; then the other candidates are tried the same way, each
//!    claimer starting at its own random place among them so that claimers that lost the oldest row
//!    to each other do not all try the same next one (when all are gone, the next ones are read,
//!    passing over those tried). So a claim never holds a lock on a row it does not take
//!    (a locking scan of the claim index would lock every row it passed over until COMMIT).
//! 3. An UPDATE takes the locked row, repeating the condition it was selected on (its state, a free
//!    lease and, for a start, no pending stop). The row returned is the locked one with the UPDATE's
//!    values applied, all timestamps being the one database time the locking read took.
//! 4. If the connection dies after COMMIT was sent, the claim may have committed: it is returned as
//!    [`StoreError::ClaimOutcomeUnknown`], and [`resolve_unknown`] tells on a new connection whether
//!    the minted token is on the row ([`crate::Store`] does this itself).
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
use crate::state::{ApplyState, ControlRequestKind, ControlRequestStatus, HasApplyState};

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
    /// The worker's name, stored as the lease owner: 1 to 255 characters, not blank. Make it unique per worker
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
        validate::required_name("owner", &self.owner)?;
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

/// The request kinds that never hold a start back. Every other pending kind does: `stop`, and any
/// kind this version does not know (a hand-written `'STOP'`, a newer tool's kind), so the gate fails
/// closed.
const KINDS_THAT_LET_STARTS_PASS: [&str; 3] = [
    ControlRequestKind::Start.as_str(),
    ControlRequestKind::Release.as_str(),
    ControlRequestKind::Cutover.as_str(),
];

/// A pending `stop` (or a pending request of a kind this version does not know) for the row's apply
/// or for the row: the stop gate.
macro_rules! stop_pending {
    () => {
        exists(
            reqs::table
                .filter(reqs::apply_id.eq(ops::apply_id))
                .filter(reqs::kind.ne_all(KINDS_THAT_LET_STARTS_PASS))
                .filter(reqs::status.eq(ControlRequestStatus::Pending.as_str()))
                .filter(
                    reqs::apply_operation_id
                        .is_null()
                        .or(reqs::apply_operation_id.eq(ops::id.nullable())),
                )
                .select(reqs::id),
        )
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

/// The copy claim's candidates among `$rows` (unordered): see [`claim_next`]. `$rows` is
/// [`walk_claim_index`] for the candidate read, `ops::table.filter(only_row(id))` for the locking
/// read of one candidate. A macro, expanded once per backend, because the row selection is typed by
/// the backend it runs on.
macro_rules! copy_candidates {
    ($rows:expr, $now:expr, $max_attempts:expr) => {
        $rows.filter(lease_free!($now.nullable())).filter(
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
    };
}

/// The cutover claim's candidates among `$rows` (unordered): see [`claim_next_cutover`] and
/// [`copy_candidates!`].
macro_rules! cutover_candidates {
    ($rows:expr, $now:expr) => {
        $rows
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
    };
}

/// The oldest row of `$candidates` (over [`walk_claim_index`]) other than the ids in `$passed`, as
/// of now, without locks: its id. A macro because the candidate queries are.
macro_rules! next_candidates {
    ($candidates:expr, $passed:expr) => {
        $candidates
            .filter(ops::id.ne_all($passed))
            .order((ops::created_at.asc(), ops::id.asc()))
            .select(ops::id)
            .limit(CANDIDATE_PAGE)
    };
}

/// How many candidates one unlocked read returns. The claim locks them one at a time, oldest first;
/// only when every one of them was taken by other claimers meanwhile does it read the next ones.
const CANDIDATE_PAGE: i64 = 16;

/// Runs [`claim`] over the candidates `$candidates` builds from a row source and "now": the unlocked
/// read walks [`walk_claim_index`], the locking read narrows to [`only_row`]. `$kind_of` names the
/// claim for the state the row had.
macro_rules! claim_among {
    ($conn:expr, $options:expr, |$rows:ident, $now:ident| $candidates:expr, $kind_of:expr) => {
        claim(
            $conn,
            $options,
            |conn, passed| {
                let $now = db::now();
                let $rows = walk_claim_index();
                Ok(next_candidates!($candidates, passed.to_vec()).load(conn)?)
            },
            |conn, id| {
                let $now = db::now();
                let $rows = ops::table.filter(only_row(id));
                Ok(first_for_claim!(
                    conn,
                    $candidates.select((ApplyOperation::as_select(), db::now_when_read()))
                )
                .optional()?)
            },
            $kind_of,
        )
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
    let max_attempts = options.max_attempts;
    claim_among!(
        conn,
        options,
        |rows, now| copy_candidates!(rows, now, max_attempts),
        |previous_state| match previous_state {
            ApplyState::Pending => ClaimKind::Start,
            ApplyState::Stopped => ClaimKind::Resume,
            ApplyState::FailedRetryable => ClaimKind::Retry,
            _ => ClaimKind::Recovery,
        }
    )
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
    claim_among!(
        conn,
        options,
        |rows, now| cutover_candidates!(rows, now),
        |previous_state| if previous_state == ApplyState::WaitingForCutover {
            ClaimKind::Cutover
        } else {
            ClaimKind::Recovery
        }
    )
}

/// The rows the candidate read walks: those in a claimable state, through
/// `apply_operations_claim_idx` (`claimable`, `created_at`, `id`).
#[diesel::dsl::auto_type]
fn walk_claim_index() -> _ {
    ops::table.filter(ops::claimable.eq(true))
}

/// The one row `id`, written as the range `id >= ? AND id <= ?` rather than `id = ?`: the database
/// then reads it as a range on the primary key, and a locking read that rejects the row (it changed
/// since the candidate read) releases it at once under READ COMMITTED. An equality on the primary key
/// is read as a constant before the conditions are evaluated, and its lock is kept until COMMIT
/// (measured on MariaDB 10.11; `tests/it/claim_locks.rs` pins the behaviour). The locking read does
/// not repeat `claimable = 1` either (the state conditions imply it): with it, the optimizer may walk
/// the claim index instead, locking every claimable row it passes.
#[diesel::dsl::auto_type]
fn only_row(id: i64) -> _ {
    ops::id.ge(id).and(ops::id.le(id))
}

/// The claim both claims share.
///
/// 1. An unlocked read of the oldest candidates (`next_candidates`, walking the claim index). None:
///    the claim ends there, without a transaction, so idle workers polling for work only read.
/// 2. A [claim transaction](db::claim_transaction) that locks them one at a time (`lock_row`: the same
///    conditions narrowed to that row, MySQL `FOR UPDATE SKIP LOCKED`) and takes the first that is
///    still free and still qualifies with [`take`]: the oldest first, then the rest from a place the
///    claim's random token picks, so contending claimers spread out. When every candidate is gone,
///    the next ones are read, passing over those tried.
/// 3. When COMMIT's outcome is unknown (the connection died after sending it), the claim is returned
///    as [`StoreError::ClaimOutcomeUnknown`]: see [`resolve_unknown`].
fn claim(
    conn: &mut DbConnection,
    options: &ClaimOptions,
    mut next_candidates: impl FnMut(&mut DbConnection, &[i64]) -> StoreResult<Vec<i64>>,
    mut lock_row: impl FnMut(
        &mut DbConnection,
        i64,
    ) -> StoreResult<Option<(ApplyOperation, NaiveDateTime)>>,
    kind_of: impl Fn(ApplyState) -> ClaimKind,
) -> StoreResult<Option<ClaimedOperation>> {
    let first = next_candidates(conn, &[])?;
    if first.is_empty() {
        return Ok(None);
    }
    let token = leases::mint_token()?;
    let outcome = db::claim_transaction(conn, |conn| {
        let mut passed = Vec::new();
        let mut page = first;
        // Where this claim looks after the oldest candidate: claimers that lost the oldest to each
        // other spread over the rest of the page instead of all trying the same next one.
        let spread = usize::from_str_radix(&token[..4], 16).unwrap_or(0);
        loop {
            if page.len() > 2 {
                let rest = page.len() - 1;
                page[1..].rotate_left(spread % rest);
            }
            for &id in &page {
                if let Some((row, now)) = lock_row(conn, id)? {
                    let previous_state = row.apply_state()?;
                    let kind = kind_of(previous_state);
                    let (apply_id, operation_id) = (row.apply_id, row.id);
                    let claimed = take(conn, row, previous_state, kind, now, options, &token)?;
                    if claimed.is_some() {
                        if kind == ClaimKind::Cutover {
                            control_requests::complete_cutover(conn, apply_id, operation_id)?;
                        }
                        return Ok(claimed);
                    }
                }
                passed.push(id);
            }
            if page.len() < CANDIDATE_PAGE as usize {
                return Ok(None);
            }
            page = next_candidates(conn, &passed)?;
        }
    })?;
    match outcome {
        db::TransactionOutcome::Committed(claimed) => Ok(claimed),
        db::TransactionOutcome::Unknown { value: None, error } => Err(error.into()),
        db::TransactionOutcome::Unknown {
            value: Some(claimed),
            error,
        } => Err(StoreError::ClaimOutcomeUnknown(Box::new(UnknownClaim {
            claimed,
            source: error,
        }))),
    }
}

/// A claim whose COMMIT was sent but never acknowledged: the connection died in between, so the claim
/// may or may not have committed. Carried by [`StoreError::ClaimOutcomeUnknown`]; pass it to
/// [`resolve_unknown`] on a new connection to find out. Its `Debug` never shows the lease token.
pub struct UnknownClaim {
    claimed: ClaimedOperation,
    source: diesel::result::Error,
}

impl UnknownClaim {
    /// The operation the claim tried to take.
    pub fn operation_id(&self) -> i64 {
        self.claimed.operation.id
    }

    /// Why the claim was made.
    pub fn kind(&self) -> ClaimKind {
        self.claimed.kind
    }

    /// What the connection reported instead of COMMIT's acknowledgement.
    pub fn source(&self) -> &diesel::result::Error {
        &self.source
    }
}

impl std::fmt::Debug for UnknownClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnknownClaim")
            .field("operation_id", &self.claimed.operation.id)
            .field("kind", &self.claimed.kind)
            .field("owner", &self.claimed.lease.owner)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Finds out whether a claim whose COMMIT went unacknowledged took effect: it did exactly when the
/// operation still carries the token the claim minted (tokens are never reused, and only the claim
/// could have written it). Returns the claim, with the operation as it is now, or `None` when it did
/// not commit (or the lease has since been lost). Run it on a new connection: the claim's own died.
/// One SELECT.
pub fn resolve_unknown(
    conn: &mut DbConnection,
    unknown: &UnknownClaim,
) -> StoreResult<Option<ClaimedOperation>> {
    let lease = &unknown.claimed.lease;
    let row = ops::table
        .find(lease.operation_id)
        .filter(ops::lease_token.eq(lease.token.clone()))
        .filter(ops::lease_owner.eq(lease.owner.clone()))
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?;
    let Some(operation) = row else {
        return Ok(None);
    };
    operation.apply_state()?;
    let mut lease = lease.clone();
    if let (Some(acquired_at), Some(expires_at)) =
        (operation.lease_acquired_at, operation.lease_expires_at)
    {
        lease.acquired_at = acquired_at;
        lease.expires_at = expires_at;
    }
    Ok(Some(ClaimedOperation {
        operation,
        previous_state: unknown.claimed.previous_state,
        kind: unknown.claimed.kind,
        lease,
    }))
}

/// The database's plan for [`claim_next`]'s candidate read (the unlocked read that walks the claim
/// index), one line per plan row: on MySQL the `EXPLAIN` columns `select_type`, `table`, `type`, `key`
/// and `Extra`; on SQLite the `EXPLAIN QUERY PLAN` details. Reads nothing else and writes nothing:
/// for operators checking that the claim walks its index (see `tests/it/explain.rs`).
pub fn explain_claim_next(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let now = db::now();
    Ok(db::explain!(
        conn,
        next_candidates!(
            copy_candidates!(walk_claim_index(), now, DEFAULT_MAX_ATTEMPTS),
            Vec::<i64>::new()
        )
    )?)
}

/// The database's plan for [`claim_next_cutover`]'s candidate read; see [`explain_claim_next`].
pub fn explain_claim_next_cutover(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let now = db::now();
    Ok(db::explain!(
        conn,
        next_candidates!(
            cutover_candidates!(walk_claim_index(), now),
            Vec::<i64>::new()
        )
    )?)
}

/// The database's plan for the locking read with which [`claim_next`] takes one candidate (operation
/// `id`): on MySQL a range read of one row of the primary key, locked `FOR UPDATE SKIP LOCKED`.
pub fn explain_claim_lock(conn: &mut DbConnection, id: i64) -> StoreResult<Vec<String>> {
    let now = db::now();
    Ok(db::explain_for_claim!(
        conn,
        copy_candidates!(ops::table.filter(only_row(id)), now, DEFAULT_MAX_ATTEMPTS)
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
    token: &str,
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
        ops::lease_token.eq(token.to_owned()),
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
        token: token.to_owned(),
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
