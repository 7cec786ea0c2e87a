//! Taking a locked candidate: the claim transition, described once.
//!
//! [`transition`] computes the row as the claim leaves it from the locked row (the row is locked on
//! MySQL and the whole database is on SQLite, so it cannot change in between); the UPDATE writes
//! exactly those values ([`ClaimChanges`]), guarded by the conditions the row was selected on; and the
//! row returned is the row computed. No assignment is written twice.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{ClaimKind, ClaimOptions, ClaimedOperation};
use crate::db::{self, DbConnection, MultiBackend};
use crate::error::StoreResult;
use crate::models::{ApplyOperation, LeaseToken, OperationLease};
use crate::schema::apply_operations as ops;
use crate::schema_types::{datetime, DatetimeValue};
use crate::state::{ApplyState, ClaimAction};
use crate::store::moves::{Move, Mover};
use crate::store::predicates::lease_free;
use crate::store::rows;
use crate::store::unit::{OperationFacts, Stored};

/// The WHERE of a claim's UPDATE: the row as read, its lease free, and the kind's gates.
type Guard = Box<
    dyn BoxableExpression<
        ops::table,
        MultiBackend,
        SqlType = diesel::sql_types::Nullable<diesel::sql_types::Bool>,
    >,
>;

/// Which claim is taking: its decision is stored in `copy_claim` or in `cutover_claim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// [`super::claim_next`].
    Copy,
    /// [`super::claim_next_cutover`].
    Cutover,
}

/// What a claim does with a locked row, by its stored decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    /// Take it as this kind of claim.
    Take(ClaimKind),
    /// Move it to this state (`stopped` or `cancelled`) in place, taking nothing.
    MoveInPlace(ApplyState),
    /// Nothing (not decided).
    Nothing,
}

/// What decision `action` tells the claim to do.
pub(super) fn what(action: ClaimAction) -> What {
    match action {
        ClaimAction::Start => What::Take(ClaimKind::Start),
        ClaimAction::Resume => What::Take(ClaimKind::Resume),
        ClaimAction::Retry => What::Take(ClaimKind::Retry),
        ClaimAction::Recover => What::Take(ClaimKind::Recovery),
        ClaimAction::Cutover => What::Take(ClaimKind::Cutover),
        ClaimAction::Revert => What::Take(ClaimKind::Revert),
        ClaimAction::SkipRevert => What::Take(ClaimKind::SkipRevert),
        ClaimAction::Stop => What::MoveInPlace(ApplyState::Stopped),
        ClaimAction::Cancel => What::MoveInPlace(ApplyState::Cancelled),
        ClaimAction::Undecided => What::Nothing,
    }
}

/// The row as claim `kind` leaves it, taken at `now` by `owner` until `expires_at`:
/// - **start**: `running`, `started_at` stamped once;
/// - **retry**: `running`, `attempt` + 1, error message cleared;
/// - **resume**: `resuming`;
/// - **cutover**: `cutting_over`;
/// - **revert** / **skip revert**: `reverting` / `skipping_revert`;
/// - **recovery**: the state is kept;
///
/// and in every case the new lease (`lease_owner`, `lease_acquired_at`, `lease_expires_at`) and
/// `updated_at` = `now`.
pub(super) fn transition(
    mut row: ApplyOperation,
    kind: ClaimKind,
    owner: &str,
    now: NaiveDateTime,
    expires_at: NaiveDateTime,
) -> ApplyOperation {
    match kind {
        ClaimKind::Start => {
            row.state = ApplyState::Running;
            row.started_at = row.started_at.or(Some(now));
        }
        ClaimKind::Retry => {
            row.state = ApplyState::Running;
            row.attempt += 1;
            row.error_message = None;
        }
        ClaimKind::Resume => row.state = ApplyState::Resuming,
        ClaimKind::Cutover => row.state = ApplyState::CuttingOver,
        ClaimKind::Revert => row.state = ApplyState::Reverting,
        ClaimKind::SkipRevert => row.state = ApplyState::SkippingRevert,
        ClaimKind::Recovery => {}
    }
    owner.clone_into(&mut row.lease_owner);
    row.lease_acquired_at = Some(now);
    row.lease_expires_at = Some(expires_at);
    row.updated_at = now;
    row
}

/// The columns a claim writes, with the values [`transition`] computed (and the token, which the row
/// model does not carry).
type ClaimChanges<'a> = (
    (
        diesel::dsl::Eq<ops::copy_claim, Option<ClaimAction>>,
        diesel::dsl::Eq<ops::cutover_claim, Option<ClaimAction>>,
    ),
    diesel::dsl::Eq<ops::state, ApplyState>,
    diesel::dsl::Eq<ops::attempt, i32>,
    diesel::dsl::Eq<ops::error_message, Option<&'a str>>,
    diesel::dsl::Eq<ops::started_at, Option<NaiveDateTime>>,
    diesel::dsl::Eq<ops::lease_owner, &'a str>,
    diesel::dsl::Eq<ops::lease_token, &'a LeaseToken>,
    diesel::dsl::Eq<ops::lease_acquired_at, Option<NaiveDateTime>>,
    diesel::dsl::Eq<ops::lease_expires_at, Option<NaiveDateTime>>,
    diesel::dsl::Eq<ops::updated_at, DatetimeValue>,
);

/// [`ClaimChanges`] of `row` (as [`transition`] left it) under `token`, with the claim rules'
/// decision for it as it now is.
fn claim_changes<'a>(
    row: &'a ApplyOperation,
    token: &'a LeaseToken,
    (copy, cutover): Stored,
) -> ClaimChanges<'a> {
    (
        (ops::copy_claim.eq(copy), ops::cutover_claim.eq(cutover)),
        ops::state.eq(row.state),
        ops::attempt.eq(row.attempt),
        ops::error_message.eq(row.error_message.as_deref()),
        ops::started_at.eq(row.started_at),
        ops::lease_owner.eq(row.lease_owner.as_str()),
        ops::lease_token.eq(token),
        ops::lease_acquired_at.eq(row.lease_acquired_at),
        ops::lease_expires_at.eq(row.lease_expires_at),
        ops::updated_at.eq(datetime(row.updated_at)),
    )
}

/// The UPDATE that takes a locked row: guarded by the state it was selected in, its attempt, a free
/// lease and the claim's stored decision (`action`, what `side`'s column holds), it writes
/// [`transition`]'s row and the decision the rules make for the row as it then is (`decide`: the
/// apply's operations after the take, and that decision; without them, the row is left undecided,
/// and the next claim that meets it decides its apply again). `Ok(None)` when the row no longer
/// qualifies; else the claim and the apply's operations after it.
pub(super) fn take(
    conn: &mut DbConnection,
    row: ApplyOperation,
    (kind, side, action): (ClaimKind, Side, ClaimAction),
    (now, options, token): (NaiveDateTime, &ClaimOptions, &LeaseToken),
    decide: impl FnOnce(&ApplyOperation) -> Option<(Vec<OperationFacts>, Stored)>,
) -> StoreResult<Option<(ClaimedOperation, Option<Vec<OperationFacts>>)>> {
    let previous_state = row.state;
    let expires_at = rows::expiry(now, options.lease_ttl);
    // One statement per side's guard, each prepared once per connection.
    let held = ops::id
        .eq(row.id)
        .and(ops::state.eq(previous_state))
        .and(ops::attempt.eq(row.attempt))
        .and(lease_free(db::now()));
    let guard: Guard = match side {
        Side::Copy => Box::new(held.and(ops::copy_claim.eq(action))),
        Side::Cutover => Box::new(held.and(ops::cutover_claim.eq(action))),
    };
    let next = transition(row, kind, &options.owner, now, expires_at);
    let (facts, decided) = match decide(&next) {
        Some((facts, decided)) => (Some(facts), decided),
        None => (
            None,
            (Some(ClaimAction::Undecided), Some(ClaimAction::Undecided)),
        ),
    };
    let matched =
        db::cached_update(ops::table, guard, claim_changes(&next, token, decided)).execute(conn)?;
    if matched == 0 {
        return Ok(None);
    }
    let lease = OperationLease {
        operation_id: next.id,
        apply_id: next.apply_id,
        owner: options.owner.clone(),
        token: token.clone(),
        acquired_at: now,
        expires_at,
        ttl: options.lease_ttl,
    };
    Ok(Some((
        ClaimedOperation {
            operation: next,
            previous_state,
            kind,
            lease,
        },
        facts,
    )))
}

/// Moves a locked row to `state` (`stopped` or `cancelled`) in place, as its decision says when a
/// pending stop or cancel covers it and nobody drives it: lease cleared, a cancelled one stamped
/// completed and letting its target go. Guarded like [`take`]: same state, free lease.
pub(super) fn move_in_place(
    conn: &mut DbConnection,
    row: &ApplyOperation,
    state: ApplyState,
) -> StoreResult<bool> {
    let guard = ops::id
        .eq(row.id)
        .and(ops::state.eq(row.state))
        .and(lease_free(db::now()));
    let moved = Move::to(state, Mover::Other);
    let matched = db::cached_update(ops::table, guard, moved.changes()).execute(conn)?;
    Ok(matched > 0)
}
