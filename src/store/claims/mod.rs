//! Claims: how a worker takes the next operation that is safe to drive.
//!
//! [`claim_next`] is the copy claim (start, recovery, resume, retry) and [`claim_next_cutover`] the
//! cutover claim (automatic and operator-directed cutovers, recovery, the revert arms) of the worker
//! contract. Each is an unlocked read of candidates that walks only unheld rows (nothing found: no
//! transaction), then, per apply, one [claim transaction](crate::db) that locks the apply's row and
//! one candidate at a time (MySQL `FOR UPDATE SKIP LOCKED`; SQLite `BEGIN IMMEDIATE`), so a claim
//! never waits for, nor keeps a lock on, a row it does not take; an UPDATE then writes the row the
//! claim's transition computes (`take`). When the connection dies after COMMIT was sent, the claim
//! is [`StoreError::ClaimOutcomeUnknown`], which [`resolve_unknown`] settles on a new connection
//! ([`crate::Store`] does this itself).
//!
//! The rules are decided when the apply is written ([`crate::state::decide`], run by the unit of
//! work, which stores the decision on each operation); a claim's reads test only the row: the
//! stored decision, the lease and the scope. A row whose state, cutover policy or failure policy
//! this version does not know is never claimed (the locking read tests `readable`, whatever the row
//! stores). The rules in full, each with the test that pins it, and how a claim runs: "Claims",
//! "Decided once per write" and "How a claim runs" in `docs/worker-contract.md` in the repository.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::predicates::scope_filter;
use super::unit::{self, Lock, OnLostRace, Written};
use super::{rows, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperation, ApplyOperationId};
use crate::schema::apply_operations as ops;
use crate::state::ClaimAction;

mod blockers;
mod reads;
mod take;

use reads::{copy, cutover};
use take::Side;

pub use crate::models::{
    ClaimKind, ClaimScope, ClaimedOperation, UnknownClaim, MAX_SCOPE_DEPLOYMENTS,
};
pub use blockers::{blockers, blockers_in, Blocker};

pub use crate::models::DEFAULT_MAX_ATTEMPTS;

/// How many candidates one unlocked read returns. The claim locks them one at a time, oldest first;
/// only when every one of them was taken by other claimers meanwhile does it read the next ones.
const CANDIDATE_PAGE: i64 = 16;

/// What a claim needs to know about the claiming worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimOptions {
    /// The worker's name, stored as the lease owner: 1 to 255 characters, not blank. Make it unique per worker
    /// (host, process, thread) so operators can tell holders apart.
    pub owner: String,
    /// How long the lease lasts without a heartbeat (`leases::heartbeat`): 1 µs to 24 h.
    pub lease_ttl: Duration,
    /// Which operations the worker claims ([`ClaimScope`]); open by default.
    #[serde(default)]
    pub scope: ClaimScope,
}

impl ClaimOptions {
    /// Options for worker `owner` with lease TTL `lease_ttl`. The retry budget is the apply's
    /// (`applies.max_attempts`).
    pub fn new(owner: impl Into<String>, lease_ttl: Duration) -> Self {
        ClaimOptions {
            owner: owner.into(),
            lease_ttl,
            scope: ClaimScope::any(),
        }
    }

    /// The options, claiming only inside `scope`.
    pub fn with_scope(mut self, scope: ClaimScope) -> Self {
        self.scope = scope;
        self
    }

    /// Checks the options as a claim does first: [`StoreError::InvalidInput`] for a blank or
    /// over-long owner, a TTL outside 1 µs – 24 h, or a scope listing over
    /// [`MAX_SCOPE_DEPLOYMENTS`] deployments, a deployment no operation could have or one twice, or
    /// a blank or over-long environment or database name. Runs no SQL: a worker can check its
    /// configuration before it starts.
    pub fn validate(&self) -> StoreResult<()> {
        validate::required_name("owner", &self.owner)?;
        validate::lease_ttl(self.lease_ttl)?;
        validate::claim_scope(&self.scope)
    }
}

/// Claims the oldest operation the copy claim may take, or returns `None` when there is none or a
/// concurrent claimer took it first (not an error). Expired leases (recovery) are looked at first,
/// through the expiry index; then the oldest unheld rows by (`created_at`, `id`).
///
/// A row is claimable when its lease is free (none, expired, or released) and one of these holds:
/// 1. **Start**: `pending`, no pending `stop` or `cancel` for its apply or for it, no blocking earlier
///    sibling under its [`CutoverPolicy`](crate::state::CutoverPolicy) (a `cancelled` one never
///    blocks), every earlier failure (`failed`, `reverted`) let through by its
///    [`FailurePolicy`](crate::state::FailurePolicy), and within its apply's `max_concurrency`.
///    Becomes `running`; `started_at` is stamped once.
/// 2. **Recovery**: an [active](crate::state::ApplyState::is_active) state; `waiting_for_cutover`
///    only where the copy claim owns the cutover (`rolling` or a single-operation apply, and the apply
///    does not defer cutovers); `revert_window` unless a revert decision is pending. State kept. No
///    order gate; an operation a pending stop or cancel covers is moved to `stopped` or `cancelled`
///    in place instead, and not taken.
/// 3. **Resume**: `stopped` or `paused`, started before, with a pending `start` request for its apply
///    or for it, within the cap. Becomes `resuming`.
/// 4. **Retry**: `failed_retryable` with `attempt` below its apply's `max_attempts`, no pending stop,
///    within the cap. Becomes `running` with `attempt` + 1 and the error message cleared.
///
/// Never: the settled states, `stopped` or `paused` without a start, a live lease, a state or a policy
/// this version does not know (the row could not be handed out typed). Every claim mints a new token
/// and stamps `started_at`, `lease_acquired_at` and `lease_expires_at` from the database's clock as
/// it reads the row (`SYSDATE(6)` on MySQL).
///
/// Errors: [`StoreError::InvalidInput`] for bad [`ClaimOptions`], before any SQL.
pub fn claim_next(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> StoreResult<Option<ClaimedOperation>> {
    options.validate()?;
    claim(conn, options, copy::candidates, copy::lock, Side::Copy)
}

/// Claims the oldest operation whose cutover is due, or that an operator's revert decision names,
/// or returns `None`. The cutover belongs to this claim for `barrier` and `parallel` operations in an
/// apply with more than one operation, and for every operation of an apply that defers cutovers. With
/// a free lease:
/// 1. **Automatic** (the apply's `defer_cutover` is false): `waiting_for_cutover`, every earlier
///    sibling `completed` or `cancelled` (so one in `revert_window` still blocks), every earlier
///    failure let through by the failure policy, and no pending `stop`. Becomes `cutting_over`.
/// 2. **Operator-directed** (`defer_cutover` is true): `waiting_for_cutover`, no pending `stop`, and a
///    pending `cutover` request naming this operation (which bypasses the sibling order, so an operator
///    can cut over any deployment while the others wait) or naming the whole apply (which keeps the
///    automatic order). Becomes `cutting_over`. In the same transaction the request naming the
///    operation is completed, and a whole-apply request once no other operation of the apply is
///    `waiting_for_cutover`.
/// 3. **Recovery**: `cutting_over`, or `revert_window` with no revert decision pending; the lease
///    moves, the state is kept.
/// 4. **Revert** / **skip revert** (any policy): `revert_window` with a pending `revert` /
///    `skip_revert` for it. Becomes `reverting` / `skipping_revert`.
/// 5. **Stop in place**: `waiting_for_cutover` covered by a pending stop or cancel is moved to
///    `stopped` / `cancelled`, and not taken.
///
/// Errors: [`StoreError::InvalidInput`] for bad options.
pub fn claim_next_cutover(
    conn: &mut DbConnection,
    options: &ClaimOptions,
) -> StoreResult<Option<ClaimedOperation>> {
    options.validate()?;
    claim(
        conn,
        options,
        cutover::candidates,
        cutover::lock,
        Side::Cutover,
    )
}

/// Runs a claim's candidate reads, `$expired` (expired leases, through the expiry index) then `$walk`
/// (the claim index), as one `UNION ALL` statement, and returns the candidates in that order, each
/// once.
macro_rules! load_candidates {
    ($conn:expr, $expired:expr, $walk:expr) => {{
        let mut found: Vec<$crate::store::claims::Candidate> =
            $crate::db::load_union_all!($conn, $expired, $walk)?;
        let mut seen = std::collections::HashSet::new();
        found.retain(|(id, _)| seen.insert(*id));
        Ok(found)
    }};
}
use load_candidates;

/// A candidate locked for the claim: the row, the database's time when the lock read it, and what
/// the claim's stored decision says to do with it.
#[derive(Debug)]
struct LockedRow {
    row: ApplyOperation,
    now: NaiveDateTime,
    action: ClaimAction,
}

/// [`LockedRow`], or `None` when the candidate was gone or locked.
type Locked = Option<LockedRow>;

/// A candidate the unlocked read found: the operation and its apply.
type Candidate = (ApplyOperationId, ApplyId);

/// The claim both claims share.
///
/// 1. An unlocked read of the oldest candidates (`candidates`, walking the claim's index of the rows
///    its stored decision takes). None: the claim ends there, without a transaction, so idle
///    workers polling for work only read.
/// 2. Per apply, in the order its first candidate comes (the oldest first, then the rest from a
///    place the claim's random token picks, so contending claimers spread out), a unit of work
///    ([`unit::run`]) that locks the apply's row unless another transaction holds it (claims are
///    serialised per apply, apply row first), then locks its candidates one at a time (`lock`: the
///    row-local conditions narrowed to that row, MySQL `FOR UPDATE SKIP LOCKED`; a row whose
///    decision is undecided has its apply decided first), reads the apply's operations once
///    ([`unit::ApplyView`]), takes the first that still qualifies (`take`, storing the row's new
///    decision in the same UPDATE), and lets the unit refresh the apply from the operations it
///    read, as the take left them. One apply per transaction, so a claim never waits for one apply's lock
///    while holding another's. The applies another transaction held are waited for once every other
///    candidate of the page is gone. When every candidate is gone, the next ones are read, passing
///    over those tried.
/// 3. When COMMIT's outcome is unknown (the connection died after sending it), the claim is returned
///    as [`StoreError::ClaimOutcomeUnknown`]: see [`resolve_unknown`].
fn claim(
    conn: &mut DbConnection,
    options: &ClaimOptions,
    candidates: fn(
        &mut DbConnection,
        &ClaimScope,
        &[ApplyOperationId],
    ) -> StoreResult<Vec<Candidate>>,
    lock: fn(&mut DbConnection, ApplyOperationId) -> StoreResult<Locked>,
    side: Side,
) -> StoreResult<Option<ClaimedOperation>> {
    let mut page = candidates(conn, &options.scope, &[])?;
    if page.is_empty() {
        return Ok(None);
    }
    let token = rows::mint_token()?;
    // Where this claim looks after the oldest candidate: claimers that lost the oldest to each other
    // spread over the rest of the page instead of all trying the same next one.
    let spread = usize::from_str_radix(&token.expose()[..4], 16).unwrap_or(0);
    let mut passed = Vec::new();
    loop {
        if page.len() > 2 {
            let rest = page.len() - 1;
            page[1..].rotate_left(spread % rest);
        }
        // An apply whose row another transaction holds is skipped at first (SKIP LOCKED) and
        // waited for only once every other candidate of the page is gone.
        let mut groups: VecDeque<(Group, bool)> = by_apply(&page)
            .into_iter()
            .map(|group| (group, false))
            .collect();
        let mut busy: Vec<Group> = Vec::new();
        while let Some(((apply_id, ids), wait)) = groups.pop_front() {
            let target = if wait {
                Lock::Apply(apply_id)
            } else {
                Lock::ApplyUnlessLocked(apply_id)
            };
            let outcome = unit::run(conn, target, OnLostRace::RetryBriefly, |conn, apply| {
                let Some(apply) = apply else {
                    return Ok(Attempt::Busy);
                };
                apply.written = Written::Nothing;
                // The apply's operations, read once a candidate is locked (and again after
                // anything but a take changed them).
                let mut view: Option<unit::ApplyView> = None;
                for &id in &ids {
                    let Some(mut locked) = lock(conn, id)? else {
                        continue;
                    };
                    if locked.action == ClaimAction::Undecided {
                        // Written outside the store: decide the apply's rules now, then look again.
                        unit::decide_now(conn, apply)?;
                        view = None;
                        match lock(conn, id)? {
                            Some(again) if again.action != ClaimAction::Undecided => locked = again,
                            _ => continue,
                        }
                    }
                    let kind = match take::what(locked.action) {
                        take::What::MoveInPlace(state) => {
                            if take::move_in_place(conn, &locked.row, state)? {
                                apply.written = Written::Rows;
                                view = None;
                            }
                            continue;
                        }
                        take::What::Take(kind) => kind,
                        take::What::Nothing => continue,
                    };
                    let seen = match view.take() {
                        Some(seen) => seen,
                        None => unit::ApplyView::read(conn, apply)?,
                    };
                    let action = locked.action;
                    let taken = take::take(
                        conn,
                        locked.row,
                        (kind, side, action),
                        (locked.now, options, &token),
                        |next| seen.after(next),
                    )?;
                    let Some((claimed, facts)) = taken else {
                        view = Some(seen);
                        continue;
                    };
                    if kind == ClaimKind::Cutover {
                        unit::complete_cutover(
                            conn,
                            claimed.operation.apply_id,
                            claimed.operation.id,
                        )?;
                    }
                    apply.written = Written::Rows;
                    apply.facts = facts;
                    return Ok(Attempt::Took(Box::new(claimed)));
                }
                Ok(Attempt::Nothing)
            });
            let outcome = match outcome {
                // Lost every retry to other claimers (a deadlock; on a Galera cluster, a
                // certification failure because another node took the row): a lost race, not an
                // error. The apply's candidates are passed over like rows found taken. Inside a
                // caller's transaction the database rolled that whole transaction back: the error
                // is the caller's.
                Err(StoreError::Contention { .. }) if !db::in_transaction(conn)? => {
                    passed.extend(ids);
                    if groups.is_empty() {
                        groups = wait_for_busy(conn, &mut busy, &mut passed);
                    }
                    continue;
                }
                other => other?,
            };
            match outcome {
                db::TransactionOutcome::Committed(Attempt::Took(claimed)) => {
                    return Ok(Some(*claimed))
                }
                // Held by another transaction: waited for later. (Gone when waited for: passed.)
                db::TransactionOutcome::Committed(Attempt::Busy) if !wait => {
                    busy.push((apply_id, ids))
                }
                db::TransactionOutcome::Committed(_) => passed.extend(ids),
                db::TransactionOutcome::Unknown {
                    value: Attempt::Took(claimed),
                    error,
                } => {
                    return Err(StoreError::ClaimOutcomeUnknown(Box::new(
                        UnknownClaim::new(*claimed, error),
                    )))
                }
                db::TransactionOutcome::Unknown { error, .. } => return Err(error.into()),
            }
            if groups.is_empty() {
                groups = wait_for_busy(conn, &mut busy, &mut passed);
            }
        }
        if page.len() < CANDIDATE_PAGE as usize {
            return Ok(None);
        }
        page = candidates(conn, &options.scope, &passed)?;
    }
}

/// How one apply's unit of work in a claim ended.
enum Attempt {
    /// It took this operation.
    Took(Box<ClaimedOperation>),
    /// None of its candidates qualified any more.
    Nothing,
    /// The apply's row was held by another transaction (or is gone).
    Busy,
}

/// Once every other candidate of the page is gone: the applies another transaction held (`busy`),
/// to be waited for one at a time. Not on a node of a Galera cluster: there a
/// transaction waiting for a row lock can be aborted by a write replicated from another node, and
/// MariaDB 10.11 was seen to leave the waiting client without an answer (a claim blocked for
/// minutes, the server's session idle), so a claim there passes busy applies over like rows another
/// claimer took.
fn wait_for_busy(
    conn: &DbConnection,
    busy: &mut Vec<Group>,
    passed: &mut Vec<ApplyOperationId>,
) -> VecDeque<(Group, bool)> {
    let busy = std::mem::take(busy);
    if db::is_cluster_node(conn) {
        passed.extend(busy.into_iter().flat_map(|(_, ids)| ids));
        return VecDeque::new();
    }
    busy.into_iter().map(|group| (group, true)).collect()
}

/// An apply and its candidates, in page order.
type Group = (ApplyId, Vec<ApplyOperationId>);

/// The candidates grouped by apply, each group in page order, the groups in the order of their first
/// candidate.
fn by_apply(page: &[Candidate]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for &(id, apply_id) in page {
        match groups.iter_mut().find(|(group, _)| *group == apply_id) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((apply_id, vec![id])),
        }
    }
    groups
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
    explain_claim_next_in(conn, &ClaimScope::any())
}

/// [`explain_claim_next`] for a claim inside `scope` (a scope listing deployments walks
/// `apply_operations_copy_scope_idx`). [`StoreError::InvalidInput`] for a scope a claim would
/// refuse.
pub fn explain_claim_next_in(
    conn: &mut DbConnection,
    scope: &ClaimScope,
) -> StoreResult<Vec<String>> {
    validate::claim_scope(scope)?;
    Ok(db::explain!(
        conn,
        copy::candidate_read(Vec::new(), scope_filter(scope))
    )?)
}

/// The database's plan for [`claim_next_cutover`]'s candidate read; see [`explain_claim_next`].
pub fn explain_claim_next_cutover(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    explain_claim_next_cutover_in(conn, &ClaimScope::any())
}

/// [`explain_claim_next_cutover`] for a claim inside `scope`.
pub fn explain_claim_next_cutover_in(
    conn: &mut DbConnection,
    scope: &ClaimScope,
) -> StoreResult<Vec<String>> {
    validate::claim_scope(scope)?;
    Ok(db::explain!(
        conn,
        cutover::candidate_read(Vec::new(), scope_filter(scope))
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
        copy::lock_read(db::now(), id)
            .select((ApplyOperation::as_select(), db::now_when_read()))
            .limit(1)
    )?)
}
