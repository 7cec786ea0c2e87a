//! Why is it waiting? For every unsettled operation of an apply, the first reason no claim takes it,
//! read from the claims' own predicates.
//!
//! One SELECT evaluates, for each operation of the apply, the named predicates of [`crate::store::predicates`]
//! (the free lease, the stop gate, the failure gate, the start order, the cutover order, the request
//! lookups) and the two claims' whole conditions ([`copy_claimable`], [`cutover_claimable`]). An
//! operation is [`Blocker::Claimable`] exactly when a claim takes it: a claim's condition holds for
//! it, and the claim would not move it in place instead (an operation a pending stop or cancel
//! covers, whose lease expired, is moved to `stopped` or `cancelled` by the claim that meets it:
//! [`crate::state::moved_in_place`], the rule the claims apply); otherwise the predicates that fail
//! name the reason, each claim arm checking its gates in a fixed order. Nothing here restates a
//! rule.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::{self, DbConnection};
use crate::error::StoreResult;
use crate::models::{Apply, ApplyId, ApplyOperation, ApplyOperationId, ClaimScope};
use crate::schema::apply_operations as ops;
use crate::state::{
    cutover_order_passes, is_failure, is_settled, lets_failure_through, moved_in_place,
    start_order_passes, ApplyState, ControlRequestKind, FailurePolicy,
};
use crate::store::predicates::{
    concurrency_gate, copy_claimable, cutover_claimable, cutover_order_gate,
    cutover_requested_for_apply, cutover_requested_for_row, failure_gate, lease_free,
    released_through, request_pending_for_row, retry_budget_left, scope_filter, start_order_gate,
    start_requested, stop_gate, CUTOVER_CLAIMED_POLICIES,
};
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

/// The predicates one operation is judged by, as the database evaluated them.
#[derive(Debug, Queryable)]
struct Gates {
    id: ApplyOperationId,
    in_scope: bool,
    lease_free: Option<bool>,
    stop_gate: bool,
    stop_pending: bool,
    cancel_pending: bool,
    failure_gate: bool,
    start_order: bool,
    start_requested: bool,
    cutover_order: bool,
    cutover_for_row: bool,
    cutover_for_apply: bool,
    concurrency: Option<bool>,
    budget_left: Option<bool>,
    released_through: Option<i64>,
    copy: Option<bool>,
    cutover: Option<bool>,
}

/// For every unsettled operation of apply `apply_id`, in claim order, the first reason no claim takes
/// it, or [`Blocker::Claimable`]. Empty for an unknown apply. Three SELECTs (the apply, its
/// operations, the predicates).
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
    let operations = rows::operations_of(conn, apply_id)?;
    let now = db::now();
    let gates: Vec<Gates> = ops::table
        .filter(ops::apply_id.eq(apply_id))
        .select((
            ops::id,
            scope_filter(scope),
            lease_free(now),
            stop_gate(),
            request_pending_for_row(ControlRequestKind::Stop),
            request_pending_for_row(ControlRequestKind::Cancel),
            failure_gate(),
            start_order_gate(),
            start_requested(),
            cutover_order_gate(),
            cutover_requested_for_row(),
            cutover_requested_for_apply(),
            concurrency_gate(),
            retry_budget_left(),
            released_through(),
            copy_claimable(now),
            cutover_claimable(now),
        ))
        .load(conn)?;
    let mut found = Vec::new();
    for (index, op) in operations.iter().enumerate() {
        if is_settled(op.state) {
            continue;
        }
        let Some(gates) = gates.iter().find(|g| g.id == op.id) else {
            continue; // inserted between the two reads
        };
        // SQL's NULL is "not known to hold": a WHERE clause does not take the row either.
        let selected = gates.copy == Some(true) || gates.cutover == Some(true);
        if !gates.in_scope {
            found.push((op.id, Blocker::OutOfScope));
            continue;
        }
        let blocker = match moved_in_place(op.state, gates.stop_pending, gates.cancel_pending) {
            // A claim that selects it moves it to `cancelled` or `stopped` and takes nothing.
            Some(ApplyState::Cancelled) if selected => Blocker::CancelPending,
            Some(_) if selected => Blocker::StopPending,
            _ if selected => Blocker::Claimable,
            _ => reason(&operations, index, gates, &apply),
        };
        found.push((op.id, blocker));
    }
    Ok(found)
}

/// The first failing predicate of operation `index`'s claim arm, each arm checking its gates in a
/// fixed order (the lease, then the stop gate, then the rest of the arm's conditions).
fn reason(operations: &[ApplyOperation], index: usize, gates: &Gates, apply: &Apply) -> Blocker {
    let op = &operations[index];
    let capped = gates.concurrency != Some(true);
    let cap = || Blocker::ConcurrencyCap {
        limit: apply.max_concurrency.unwrap_or_default(),
    };
    if gates.lease_free != Some(true) {
        return Blocker::LeaseLive {
            owner: op.lease_owner.clone(),
            expires_at: op.lease_expires_at.unwrap_or_default(),
        };
    }
    let cutover_owned = apply.defer_cutover
        || (CUTOVER_CLAIMED_POLICIES.contains(&op.cutover_policy) && operations.len() > 1);
    let stopped_by = || {
        if gates.cancel_pending {
            Blocker::CancelPending
        } else {
            Blocker::StopPending
        }
    };
    match op.state {
        ApplyState::Pending => {
            if !gates.stop_gate {
                stopped_by()
            } else if !gates.failure_gate {
                failure_blocker(operations, index, gates.released_through)
            } else if !gates.start_order {
                sibling_blocker(operations, index)
            } else if capped {
                cap()
            } else {
                Blocker::NoClaimArm
            }
        }
        ApplyState::Stopped | ApplyState::Paused if !gates.start_requested => {
            Blocker::AwaitingStart
        }
        ApplyState::Stopped | ApplyState::Paused if capped => cap(),
        ApplyState::FailedRetryable => {
            if !gates.stop_gate {
                stopped_by()
            } else if capped {
                cap()
            } else if gates.budget_left != Some(true) {
                Blocker::RetryBudgetExhausted
            } else {
                Blocker::NoClaimArm
            }
        }
        ApplyState::WaitingForCutover if cutover_owned => {
            if !gates.stop_gate {
                stopped_by()
            } else if apply.defer_cutover && !gates.cutover_for_row && !gates.cutover_for_apply {
                Blocker::AwaitingOperatorCutover
            } else if !gates.failure_gate {
                failure_blocker(operations, index, gates.released_through)
            } else if !gates.cutover_order {
                cutover_order_blocker(operations, index)
            } else {
                Blocker::NoClaimArm
            }
        }
        _ => Blocker::NoClaimArm,
    }
}

/// The earliest earlier failure (failed or reverted) that the operation's failure policy does not let
/// pass, as a blocker.
fn failure_blocker(
    operations: &[ApplyOperation],
    index: usize,
    released_through: Option<i64>,
) -> Blocker {
    match (
        blocking_failure(operations, index, released_through),
        operations[index].on_failure,
    ) {
        (Some(failed), FailurePolicy::Pause) => Blocker::PausedUntilRelease { id: failed.id },
        (Some(failed), _) => Blocker::HaltedBy { id: failed.id },
        (None, _) => Blocker::NoClaimArm,
    }
}

/// The earliest earlier failure of operation `index` (in claim order) that its failure policy does
/// not let through, given the releases that reach `released_through` (see
/// [`lets_failure_through`]). Names what the failure gate found.
pub(in crate::store) fn blocking_failure(
    operations: &[ApplyOperation],
    index: usize,
    released_through: Option<i64>,
) -> Option<&ApplyOperation> {
    let op = &operations[index];
    operations[..index].iter().find(|earlier| {
        is_failure(earlier.state)
            && !lets_failure_through(op.on_failure, released_through, earlier.failure_seq)
    })
}

/// The earliest earlier sibling the operation's start order waits for.
fn sibling_blocker(operations: &[ApplyOperation], index: usize) -> Blocker {
    let policy = operations[index].cutover_policy;
    match operations[..index]
        .iter()
        .find(|earlier| !start_order_passes(policy, earlier.state))
    {
        Some(sibling) => Blocker::WaitingForSibling {
            id: sibling.id,
            deployment: sibling.deployment.clone(),
            state: sibling.state,
        },
        None => Blocker::NoClaimArm,
    }
}

/// The earliest earlier sibling the cutover order waits for.
fn cutover_order_blocker(operations: &[ApplyOperation], index: usize) -> Blocker {
    match operations[..index]
        .iter()
        .find(|earlier| !cutover_order_passes(earlier.state))
    {
        Some(sibling) => Blocker::WaitingForCutoverOrder { id: sibling.id },
        None => Blocker::NoClaimArm,
    }
}
