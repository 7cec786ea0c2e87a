//! Why is it waiting? For every unsettled operation of an apply, the first reason no claim takes it,
//! from the claim rules' decision.
//!
//! The decision is the one the claims read: stored on each operation by the unit of work that last
//! wrote the apply ([`crate::state::decide`]), with the reasons that decision gives for what waits.
//! What is row-local is read as the claims read it: the lease (live or free by the database's
//! clock) and the scope. An operation is [`Blocker::Claimable`] exactly when a claim takes it: its
//! lease is free, it is in the scope, and a claim's stored decision takes it rather than moving it
//! in place (an operation a pending stop or cancel covers, whose lease expired, is moved to
//! `stopped` or `cancelled` by the claim that meets it). Nothing here restates a rule.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::{self, DbConnection};
use crate::error::StoreResult;
use crate::models::{ApplyId, ApplyOperationId, ClaimScope};
use crate::schema::apply_operations as ops;
use crate::state::{is_settled, ApplyState, ClaimAction, Decision, Wait};
use crate::store::predicates::{lease_free, scope_filter};
use crate::store::unit::{self, ApplySettings, OperationFacts};
use crate::store::{rows, validate};

/// Why an operation is not being taken by a claim, or that it would be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocker {
    /// Outside the scope asked about ([`blockers_in`]): a claim in that scope never takes it.
    OutOfScope,
    /// A worker holds it under a lease that has not expired.
    LeaseLive {
        /// The holder.
        owner: String,
        /// When the lease expires unless renewed (UTC).
        expires_at: NaiveDateTime,
    },
    /// A `stop` (or a request of a kind this version does not know) is pending for it or its apply:
    /// its holder stops it, or, once its lease is gone, the next claim moves it to `stopped` in place
    /// and takes nothing.
    StopPending,
    /// A `cancel` is pending for it or its apply (its holder cancels it, or, once its lease is gone,
    /// the next claim moves it to `cancelled` in place and takes nothing).
    CancelPending,
    /// `stopped` or `paused` with no pending `start`.
    AwaitingStart,
    /// An earlier sibling failed, and its `halt` policy does not let it pass.
    HaltedBy {
        /// The failed sibling.
        id: ApplyOperationId,
    },
    /// An earlier sibling failed, and its `pause` policy waits for a `release`.
    PausedUntilRelease {
        /// The failed sibling.
        id: ApplyOperationId,
    },
    /// Its cutover policy waits for an earlier sibling (rolling: to complete; barrier: to reach the
    /// barrier).
    WaitingForSibling {
        /// The sibling it waits for.
        id: ApplyOperationId,
        /// The sibling's deployment.
        deployment: String,
        /// The sibling's state.
        state: ApplyState,
    },
    /// Its apply defers cutover and no `cutover` request names it or the whole apply.
    AwaitingOperatorCutover,
    /// Its cutover waits for an earlier sibling to complete.
    WaitingForCutoverOrder {
        /// The sibling it waits for.
        id: ApplyOperationId,
    },
    /// Its apply's `max_concurrency` operations are already driven; a start, resume or retry waits
    /// until one of them parks or settles.
    ConcurrencyCap {
        /// The apply's cap.
        limit: i64,
    },
    /// `failed_retryable` with no attempt left under its apply's retry budget (`max_attempts`).
    RetryBudgetExhausted,
    /// No claim takes an operation in this state with these values, and none of the reasons above
    /// applies.
    NoClaimArm,
    /// A claim ([`claim_next`](super::claim_next) or [`claim_next_cutover`](super::claim_next_cutover))
    /// would take it now: hand it out under a new lease.
    Claimable,
}

/// What `blockers` reads of one operation beyond the rules' facts: its scope and lease, as the
/// claims' reads test them.
#[derive(Debug, Queryable)]
struct RowLocal {
    id: ApplyOperationId,
    in_scope: bool,
    lease_free: Option<bool>,
    lease_owner: String,
    lease_expires_at: Option<NaiveDateTime>,
}

/// For every unsettled operation of apply `apply_id`, in claim order, the first reason no claim takes
/// it, or [`Blocker::Claimable`]. Empty for an unknown apply. Four SELECTs (the apply, its pending
/// requests, its operations' facts, their leases).
pub fn blockers(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<(ApplyOperationId, Blocker)>> {
    blockers_in(conn, apply_id, &ClaimScope::any())
}

/// [`blockers`] as a claim inside `scope` sees them: an operation outside it is
/// [`Blocker::OutOfScope`], judged by the scope predicate the claims' reads use.
/// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for a scope a claim would refuse,
/// before any SQL.
pub fn blockers_in(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    scope: &ClaimScope,
) -> StoreResult<Vec<(ApplyOperationId, Blocker)>> {
    validate::claim_scope(scope)?;
    let Some(apply) = rows::apply(conn, apply_id)? else {
        return Ok(Vec::new());
    };
    let pending = unit::pending_of(conn, apply_id)?;
    let facts = unit::read_facts(conn, apply_id)?;
    let local: Vec<RowLocal> = ops::table
        .filter(ops::apply_id.eq(apply_id))
        .select((
            ops::id,
            scope_filter(scope),
            lease_free(db::now()),
            ops::lease_owner,
            ops::lease_expires_at,
        ))
        .load(conn)?;
    let settings = ApplySettings {
        defer_cutover: apply.defer_cutover,
        max_concurrency: apply.max_concurrency,
        max_attempts: apply.max_attempts,
    };
    let decided = unit::decisions(settings, &facts, &pending);
    let mut found = Vec::new();
    for (fact, decision) in facts.iter().zip(&decided) {
        if ApplyState::from_stored(&fact.state).is_some_and(is_settled) {
            continue;
        }
        let Some(local) = local.iter().find(|l| l.id == fact.id) else {
            continue; // inserted between the two reads
        };
        found.push((fact.id, blocker(&facts, fact, decision, local)));
    }
    Ok(found)
}

/// The blocker of one operation: its scope, then its lease, then the stored decision (the rules'
/// decision where nothing is stored yet), then the decision's reason for waiting.
fn blocker(
    facts: &[OperationFacts],
    fact: &OperationFacts,
    decision: &Decision,
    local: &RowLocal,
) -> Blocker {
    if !local.in_scope {
        return Blocker::OutOfScope;
    }
    if local.lease_free != Some(true) {
        return Blocker::LeaseLive {
            owner: local.lease_owner.clone(),
            expires_at: local.lease_expires_at.unwrap_or_default(),
        };
    }
    let (copy, cutover) = fact.stored();
    let settled = |stored: Option<ClaimAction>, decided: Option<ClaimAction>| match stored {
        Some(ClaimAction::Undecided) => decided,
        other => other,
    };
    let actions = [
        settled(copy, decision.copy),
        settled(cutover, decision.cutover),
    ];
    if actions.contains(&Some(ClaimAction::Cancel)) {
        return Blocker::CancelPending;
    }
    if actions.contains(&Some(ClaimAction::Stop)) {
        return Blocker::StopPending;
    }
    if actions.iter().any(Option::is_some) {
        return Blocker::Claimable;
    }
    match decision.wait {
        Some(wait) => reason(facts, wait),
        None => Blocker::NoClaimArm,
    }
}

/// The blocker a decision's reason for waiting names, with the sibling it points at.
fn reason(facts: &[OperationFacts], wait: Wait) -> Blocker {
    match wait {
        Wait::StopPending => Blocker::StopPending,
        Wait::CancelPending => Blocker::CancelPending,
        Wait::AwaitingStart => Blocker::AwaitingStart,
        Wait::HaltedBy(i) => Blocker::HaltedBy { id: facts[i].id },
        Wait::PausedUntilRelease(i) => Blocker::PausedUntilRelease { id: facts[i].id },
        Wait::WaitingForSibling(i) => match ApplyState::from_stored(&facts[i].state) {
            Some(state) => Blocker::WaitingForSibling {
                id: facts[i].id,
                deployment: facts[i].deployment.clone(),
                state,
            },
            None => Blocker::NoClaimArm,
        },
        Wait::AwaitingOperatorCutover => Blocker::AwaitingOperatorCutover,
        Wait::WaitingForCutoverOrder(i) => Blocker::WaitingForCutoverOrder { id: facts[i].id },
        Wait::ConcurrencyCap(limit) => Blocker::ConcurrencyCap { limit },
        Wait::RetryBudgetExhausted => Blocker::RetryBudgetExhausted,
        Wait::NoClaimArm => Blocker::NoClaimArm,
    }
}
