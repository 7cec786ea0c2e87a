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
//!    lease and, for a start, no pending stop), and writes the row the claim's transition computes
//!    from the locked one (`take`): the transition is described once, and the row returned is exactly
//!    the row written, all timestamps being the one database time the locking read took.
//! 4. If the connection dies after COMMIT was sent, the claim may have committed: it is returned as
//!    [`StoreError::ClaimOutcomeUnknown`], and [`resolve_unknown`] tells on a new connection whether
//!    the minted token is on the row ([`crate::Store`] does this itself).
//!
//! The rules themselves are named predicates in `predicates` (the stop gate, the failure gate, the
//! rolling gate, the barrier gate, …), one per rule of the worker contract; `copy` and `cutover`
//! build each claim's reads from them. A row whose state, cutover policy or failure policy this
//! version does not know is never claimed (`readable_policies`): a claim hands rows out typed, and
//! such a value is an error to read, never a default. The gates themselves name the permissive
//! values (`barrier`, `parallel`, `continue`, `pause`), so they too fail closed.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::{control_requests, leases, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyOperation, ApplyOperationId};
use crate::schema::apply_operations as ops;
use crate::state::ApplyState;

mod blockers;
mod copy;
mod cutover;
mod predicates;
mod take;

pub use crate::models::{ClaimKind, ClaimedOperation, UnknownClaim};
pub use blockers::{blockers, Blocker};

/// The default retry budget: `failed_retryable` operations are retried while `attempt` is below it.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 10;

/// How many candidates one unlocked read returns. The claim locks them one at a time, oldest first;
/// only when every one of them was taken by other claimers meanwhile does it read the next ones.
const CANDIDATE_PAGE: i64 = 16;

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
        validate::lease_ttl(self.lease_ttl)?;
        if self.max_attempts < 0 {
            return Err(StoreError::invalid(
                "max_attempts",
                "must not be negative (0 turns retries off)",
            ));
        }
        Ok(())
    }
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
///    `rolling` or in a single-operation apply. State kept. No order or stop
///    gate, so the new holder can see a stop and act on it.
/// 3. **Resume**: `stopped` with a pending `start` request for its apply or for it. Becomes `resuming`.
/// 4. **Retry**: `failed_retryable` with `attempt` below `max_attempts` and no pending `stop`. Becomes
///    `running` with `attempt` + 1 and the error message cleared.
///
/// Never: the completing states or `stopped` without a start (even with an expired lease), `paused`, a
/// live lease, a state or a policy this version does not know (the row could not be handed out typed). Every claim mints a new token and stamps `lease_acquired_at` and `lease_expires_at` from
/// the database's clock.
///
/// Errors: [`StoreError::InvalidInput`] for bad [`ClaimOptions`], before any SQL.
pub fn claim_next(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> StoreResult<Option<ClaimedOperation>> {
    options.check()?;
    let max_attempts = options.max_attempts;
    claim(
        conn,
        options,
        |conn, passed| copy::candidates(conn, passed, max_attempts),
        |conn, id| copy::lock(conn, id, max_attempts),
        copy::kind_of,
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
    claim(
        conn,
        options,
        cutover::candidates,
        cutover::lock,
        cutover::kind_of,
    )
}

/// A candidate locked for the claim: the row, and the database's time when the lock read it.
type Locked = Option<(ApplyOperation, NaiveDateTime)>;

/// The claim both claims share.
///
/// 1. An unlocked read of the oldest candidates (`candidates`, walking the claim index). None: the
///    claim ends there, without a transaction, so idle workers polling for work only read.
/// 2. A [claim transaction](db::claim_transaction) that locks them one at a time (`lock`: the same
///    rules narrowed to that row, MySQL `FOR UPDATE SKIP LOCKED`) and takes the first that is still
///    free and still qualifies (`take`): the oldest first, then the rest from a place the claim's
///    random token picks, so contending claimers spread out. When every candidate is gone, the next
///    ones are read, passing over those tried.
/// 3. When COMMIT's outcome is unknown (the connection died after sending it), the claim is returned
///    as [`StoreError::ClaimOutcomeUnknown`]: see [`resolve_unknown`].
fn claim(
    conn: &mut DbConnection,
    options: &ClaimOptions,
    mut candidates: impl FnMut(
        &mut DbConnection,
        &[ApplyOperationId],
    ) -> StoreResult<Vec<ApplyOperationId>>,
    mut lock: impl FnMut(&mut DbConnection, ApplyOperationId) -> StoreResult<Locked>,
    kind_of: fn(ApplyState) -> ClaimKind,
) -> StoreResult<Option<ClaimedOperation>> {
    let first = candidates(conn, &[])?;
    if first.is_empty() {
        return Ok(None);
    }
    let token = leases::mint_token()?;
    // Where this claim looks after the oldest candidate: claimers that lost the oldest to each other
    // spread over the rest of the page instead of all trying the same next one.
    let spread = usize::from_str_radix(&token.expose()[..4], 16).unwrap_or(0);
    let outcome = db::claim_transaction(conn, |conn| {
        let mut passed = Vec::new();
        let mut page = first;
        loop {
            if page.len() > 2 {
                let rest = page.len() - 1;
                page[1..].rotate_left(spread % rest);
            }
            for &id in &page {
                if let Some((row, now)) = lock(conn, id)? {
                    let kind = kind_of(row.state);
                    let claimed = take::take(conn, row, kind, now, options, &token)?;
                    if let Some(claimed) = claimed {
                        if kind == ClaimKind::Cutover {
                            control_requests::complete_cutover(
                                conn,
                                claimed.operation.apply_id,
                                claimed.operation.id,
                            )?;
                        }
                        return Ok(Some(claimed));
                    }
                }
                passed.push(id);
            }
            if page.len() < CANDIDATE_PAGE as usize {
                return Ok(None);
            }
            page = candidates(conn, &passed)?;
        }
    })?;
    match outcome {
        db::TransactionOutcome::Committed(claimed) => Ok(claimed),
        db::TransactionOutcome::Unknown { value: None, error } => Err(error.into()),
        db::TransactionOutcome::Unknown {
            value: Some(claimed),
            error,
        } => Err(StoreError::ClaimOutcomeUnknown(Box::new(
            UnknownClaim::new(claimed, error),
        ))),
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
    let claimed = unknown.claimed();
    let lease = &claimed.lease;
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
    let mut lease = lease.clone();
    if let (Some(acquired_at), Some(expires_at)) =
        (operation.lease_acquired_at, operation.lease_expires_at)
    {
        lease.acquired_at = acquired_at;
        lease.expires_at = expires_at;
    }
    Ok(Some(ClaimedOperation {
        operation,
        previous_state: claimed.previous_state,
        kind: claimed.kind,
        lease,
    }))
}

/// The database's plan for [`claim_next`]'s candidate read (the unlocked read that walks the claim
/// index), one line per plan row: on MySQL the `EXPLAIN` columns `select_type`, `table`, `type`, `key`
/// and `Extra`; on SQLite the `EXPLAIN QUERY PLAN` details. Reads nothing else and writes nothing:
/// for operators checking that the claim walks its index (see `tests/it/explain.rs`).
pub fn explain_claim_next(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    Ok(db::explain!(
        conn,
        copy::candidate_read(db::now(), DEFAULT_MAX_ATTEMPTS, Vec::new())
    )?)
}

/// The database's plan for [`claim_next_cutover`]'s candidate read; see [`explain_claim_next`].
pub fn explain_claim_next_cutover(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    Ok(db::explain!(
        conn,
        cutover::candidate_read(db::now(), Vec::new())
    )?)
}

/// The database's plan for the locking read with which [`claim_next`] takes one candidate (operation
/// `id`): on MySQL a range read of one row of the primary key, locked `FOR UPDATE SKIP LOCKED`.
pub fn explain_claim_lock(
    conn: &mut DbConnection,
    id: ApplyOperationId,
) -> StoreResult<Vec<String>> {
    Ok(db::explain_for_claim!(
        conn,
        copy::lock_read(db::now(), DEFAULT_MAX_ATTEMPTS, id)
            .select((ApplyOperation::as_select(), db::now_when_read()))
            .limit(1)
    )?)
}
