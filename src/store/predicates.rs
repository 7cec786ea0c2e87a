//! The claim rules of the worker contract, one named predicate each, over the `apply_operations` row
//! being claimed (`ops`). The copy claim and the cutover claim are built from these (see
//! [`copy_claimable`] and [`cutover_claimable`]); a reader looking for "the rolling gate" finds
//! [`rolling_gate`].
//!
//! Each is a Diesel expression written with [`diesel::dsl::auto_type`], so it has a concrete type
//! (the statement cache sees one query shape per claim) and is spelled once. Unknown values fail
//! closed: [`readable_policies`] keeps rows with an unknown policy out of both claims, and the gates
//! name the permissive values (`barrier`, `parallel`, `continue`, `pause`), so any other value would
//! get the strictest behaviour (`rolling`, `halt`) anyway. Sibling, request and apply conditions
//! are correlated subqueries on their own indexes.

#[cfg(test)]
use crate::state::failure_states;
use diesel::dsl::{exists, max, not};
use diesel::prelude::*;

use crate::db::{self, DbNow};
use crate::models::ClaimScope;
use crate::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
use crate::state::{
    cutover_order_passing, start_order_passing, ApplyState, ControlRequestKind,
    ControlRequestStatus, CutoverPolicy, FailurePolicy,
};

mod sibling_alias {
    // The alias macro declares public items that carry no docs of their own.
    #![allow(missing_docs)]
    diesel::alias!(crate::schema::apply_operations as siblings: Siblings);
}
use sibling_alias::siblings;

/// The cutover policies whose cutover goes through the cutover claim.
pub(in crate::store) const CUTOVER_CLAIMED_POLICIES: [CutoverPolicy; 2] =
    [CutoverPolicy::Barrier, CutoverPolicy::Parallel];

/// The request kinds that never hold a start back. Every other pending kind does: `stop`, `cancel`,
/// and any kind this version does not know (a hand-written `'STOP'`, a newer tool's kind), so the stop
/// gate fails closed.
const KINDS_THAT_LET_STARTS_PASS: [ControlRequestKind; 6] = [
    ControlRequestKind::Start,
    ControlRequestKind::Release,
    ControlRequestKind::Cutover,
    ControlRequestKind::Revert,
    ControlRequestKind::SkipRevert,
    ControlRequestKind::Retry,
];

/// The active states the copy claim's recovery takes over whatever the policy: all of
/// [`ApplyState::is_active`] but `waiting_for_cutover` (taken only where the copy claim owns the
/// cutover) and `revert_window` (taken unless a revert or skip-revert request claims it).
fn recoverable_states() -> Vec<ApplyState> {
    ApplyState::ALL
        .into_iter()
        .filter(|state| {
            state.is_active()
                && !matches!(
                    state,
                    ApplyState::WaitingForCutover | ApplyState::RevertWindow
                )
        })
        .collect()
}

/// **Free lease**: no lease, or one that has expired by `now`.
#[diesel::dsl::auto_type]
pub(in crate::store) fn lease_free(now: DbNow) -> _ {
    let none: &'static str = "";
    ops::lease_token
        .eq(none)
        .or(ops::lease_expires_at.is_null())
        .or(ops::lease_expires_at.le(now.nullable()))
}

/// An operation of the same apply that comes earlier by (`created_at`, `id`). Deployments are unique
/// per apply, so every other operation of the apply is another deployment's.
#[diesel::dsl::auto_type]
fn earlier_siblings() -> _ {
    let sibling_created_at: diesel::dsl::Field<siblings, ops::created_at> =
        siblings.field(ops::created_at);
    siblings
        .filter(siblings.field(ops::apply_id).eq(ops::apply_id))
        .filter(
            sibling_created_at.lt(ops::created_at).or(sibling_created_at
                .eq(ops::created_at)
                .and(siblings.field(ops::id).lt(ops::id))),
        )
        .select(siblings.field(ops::id))
}

/// The state column of the sibling in [`earlier_siblings`].
#[diesel::dsl::auto_type]
fn sibling_state() -> _ {
    siblings.field(ops::state)
}

/// The apply has an operation other than this one.
#[diesel::dsl::auto_type]
pub(in crate::store) fn has_sibling() -> _ {
    exists(
        siblings
            .filter(siblings.field(ops::apply_id).eq(ops::apply_id))
            .filter(siblings.field(ops::id).ne(ops::id))
            .select(siblings.field(ops::id)),
    )
}

/// The requests for the row's apply that name the whole apply or the row itself.
#[diesel::dsl::auto_type]
fn requests_for_row() -> _ {
    reqs::table.filter(reqs::apply_id.eq(ops::apply_id)).filter(
        reqs::apply_operation_id
            .is_null()
            .or(reqs::apply_operation_id.eq(ops::id.nullable())),
    )
}

/// **The stop gate**: no pending `stop` (nor a pending request of a kind this version does not know)
/// for the row's apply or for the row.
#[diesel::dsl::auto_type]
pub(in crate::store) fn stop_gate() -> _ {
    let pass: [ControlRequestKind; 6] = KINDS_THAT_LET_STARTS_PASS;
    let pending: ControlRequestStatus = ControlRequestStatus::Pending;
    not(exists(
        requests_for_row()
            .filter(db::none_of(reqs::kind, pass))
            .filter(reqs::status.eq(pending))
            .select(reqs::id),
    ))
}

/// The highest `releases_through` of the completed releases naming the row's apply or the row (NULL:
/// none). A `pause` row passes an earlier failure numbered at most this. The apply refresh reads it
/// too, so the derived state lets a failure through exactly when the claims do.
#[diesel::dsl::auto_type]
pub(in crate::store) fn released_through() -> _ {
    let release: ControlRequestKind = ControlRequestKind::Release;
    let completed: ControlRequestStatus = ControlRequestStatus::Completed;
    let highest: diesel::helper_types::max<reqs::releases_through> = max(reqs::releases_through);
    requests_for_row()
        .filter(reqs::kind.eq(release))
        .filter(reqs::status.eq(completed))
        .select(highest)
        .single_value()
}

/// A pending request of `kind` for the row's apply or for the row.
#[diesel::dsl::auto_type]
pub(in crate::store) fn request_pending_for_row(kind: ControlRequestKind) -> _ {
    let pending: ControlRequestStatus = ControlRequestStatus::Pending;
    exists(
        requests_for_row()
            .filter(reqs::kind.eq(kind))
            .filter(reqs::status.eq(pending))
            .select(reqs::id),
    )
}

/// A pending `start` for the row's apply or for the row.
#[diesel::dsl::auto_type]
pub(in crate::store) fn start_requested() -> _ {
    let start: ControlRequestKind = ControlRequestKind::Start;
    let pending: request_pending_for_row = request_pending_for_row(start);
    pending
}

/// A pending `stop` or `cancel` for the row's apply or for the row (a pending request of a kind
/// this version does not know holds starts back too, but moves nothing in place).
#[diesel::dsl::auto_type]
fn stop_or_cancel_requested() -> _ {
    let stop: ControlRequestKind = ControlRequestKind::Stop;
    let cancel: ControlRequestKind = ControlRequestKind::Cancel;
    let stop_pending: request_pending_for_row = request_pending_for_row(stop);
    let cancel_pending: request_pending_for_row = request_pending_for_row(cancel);
    stop_pending.or(cancel_pending)
}

/// A pending `revert` or `skip_revert` for the row (both are recorded per operation).
#[diesel::dsl::auto_type]
pub(in crate::store) fn revert_decision_requested() -> _ {
    let revert: ControlRequestKind = ControlRequestKind::Revert;
    let skip: ControlRequestKind = ControlRequestKind::SkipRevert;
    let revert_pending: request_pending_for_row = request_pending_for_row(revert);
    let skip_pending: request_pending_for_row = request_pending_for_row(skip);
    revert_pending.or(skip_pending)
}

/// **The failure gate**: every failed or reverted earlier sibling is let through by the row's failure
/// policy: `continue` always; `pause` when a completed release naming the row or its apply reaches the
/// failure's sequence number (a failure recorded after the release pauses the rollout again); `halt`
/// never. Under every cutover policy, `parallel` included. A failure without a number is never
/// released. The same rule as [`crate::state::lets_failure_through`], per earlier failure.
pub(in crate::store) fn failure_gate() -> FailureGate {
    FailureGate
}

/// The type of [`failure_gate`], named as `auto_type` names a call's type.
#[allow(non_camel_case_types)]
pub(in crate::store) type failure_gate = FailureGate;

/// The SQL of [`failure_gate`], written out as one fragment with bound values: a correlated
/// `NOT EXISTS` over the earlier failures whose condition holds another correlated subquery (the
/// releases' highest `releases_through`). Spelled with Diesel's DSL, the nested correlated
/// subqueries over an alias made rustc use more than 16 GB to type-check the claims (measured); as a
/// fragment its type is one unit struct, and its statement can be cached.
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
pub(in crate::store) struct FailureGate;

impl diesel::expression::Expression for FailureGate {
    type SqlType = diesel::sql_types::Bool;
}

impl diesel::expression::AppearsOnTable<ops::table> for FailureGate {}

impl diesel::expression::SelectableExpression<ops::table> for FailureGate {}

impl diesel::expression::ValidGrouping<()> for FailureGate {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

/// Bound by [`FailureGate`]: no release at all.
const NEVER_RELEASED: i64 = -1;
/// Bound by [`FailureGate`]: a failure without a number is above every release.
const UNNUMBERED: i64 = i64::MAX;

impl<DB> diesel::query_builder::QueryFragment<DB> for FailureGate
where
    DB: diesel::backend::Backend
        + diesel::sql_types::HasSqlType<diesel::sql_types::Text>
        + diesel::sql_types::HasSqlType<diesel::sql_types::BigInt>,
    str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
    i64: diesel::serialize::ToSql<diesel::sql_types::BigInt, DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        use diesel::sql_types::{BigInt, Text};
        const OPS: &str = "apply_operations";
        const FAILED: &str = "failed_sibling";
        const RELEASE: &str = "granted_release";
        // `alias`.`column`
        fn column<DB: diesel::backend::Backend>(
            out: &mut diesel::query_builder::AstPass<'_, '_, DB>,
            table: &str,
            column: &str,
        ) -> QueryResult<()> {
            out.push_identifier(table)?;
            out.push_sql(".");
            out.push_identifier(column)
        }
        out.push_sql("NOT EXISTS (SELECT 1 FROM ");
        out.push_identifier(OPS)?;
        out.push_sql(" AS ");
        out.push_identifier(FAILED)?;
        out.push_sql(" WHERE ");
        column(&mut out, FAILED, "apply_id")?;
        out.push_sql(" = ");
        column(&mut out, OPS, "apply_id")?;
        out.push_sql(" AND (");
        column(&mut out, FAILED, "created_at")?;
        out.push_sql(" < ");
        column(&mut out, OPS, "created_at")?;
        out.push_sql(" OR (");
        column(&mut out, FAILED, "created_at")?;
        out.push_sql(" = ");
        column(&mut out, OPS, "created_at")?;
        out.push_sql(" AND ");
        column(&mut out, FAILED, "id")?;
        out.push_sql(" < ");
        column(&mut out, OPS, "id")?;
        out.push_sql(")) AND ");
        column(&mut out, FAILED, "state")?;
        out.push_sql(" IN (");
        for (i, state) in FAILURE_STATES.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<Text, str>(state.as_str())?;
        }
        out.push_sql(") AND NOT (");
        column(&mut out, OPS, "on_failure")?;
        out.push_sql(" = ");
        out.push_bind_param::<Text, str>(FailurePolicy::Continue.as_str())?;
        out.push_sql(" OR (");
        column(&mut out, OPS, "on_failure")?;
        out.push_sql(" = ");
        out.push_bind_param::<Text, str>(FailurePolicy::Pause.as_str())?;
        out.push_sql(" AND COALESCE((SELECT MAX(");
        column(&mut out, RELEASE, "releases_through")?;
        out.push_sql(") FROM ");
        out.push_identifier("apply_control_requests")?;
        out.push_sql(" AS ");
        out.push_identifier(RELEASE)?;
        out.push_sql(" WHERE ");
        column(&mut out, RELEASE, "apply_id")?;
        out.push_sql(" = ");
        column(&mut out, OPS, "apply_id")?;
        out.push_sql(" AND (");
        column(&mut out, RELEASE, "apply_operation_id")?;
        out.push_sql(" IS NULL OR ");
        column(&mut out, RELEASE, "apply_operation_id")?;
        out.push_sql(" = ");
        column(&mut out, OPS, "id")?;
        out.push_sql(") AND ");
        column(&mut out, RELEASE, "kind")?;
        out.push_sql(" = ");
        out.push_bind_param::<Text, str>(ControlRequestKind::Release.as_str())?;
        out.push_sql(" AND ");
        column(&mut out, RELEASE, "status")?;
        out.push_sql(" = ");
        out.push_bind_param::<Text, str>(ControlRequestStatus::Completed.as_str())?;
        out.push_sql("), ");
        out.push_bind_param::<BigInt, i64>(&NEVER_RELEASED)?;
        out.push_sql(") >= COALESCE(");
        column(&mut out, FAILED, "failure_seq")?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, i64>(&UNNUMBERED)?;
        out.push_sql("))))");
        Ok(())
    }
}

/// The failure states, as [`crate::state::failure_states`] lists them (checked by a unit test).
const FAILURE_STATES: [ApplyState; 2] = [ApplyState::Failed, ApplyState::Reverted];

/// **The rolling gate**: every earlier sibling is `completed` or `cancelled` (a failure is the
/// failure gate's business; see [`crate::state::start_order_passes`]). Applies to `rolling` and to
/// any policy this version does not know.
#[diesel::dsl::auto_type]
pub(in crate::store) fn rolling_gate() -> _ {
    let passing: Vec<ApplyState> = start_order_passing(CutoverPolicy::Rolling);
    not(exists(
        earlier_siblings().filter(db::none_of(sibling_state(), passing)),
    ))
}

/// **The barrier gate**: every earlier sibling has reached the barrier (`waiting_for_cutover`,
/// `cutting_over`, `revert_window` or `completed`) or is `cancelled` (a failure is the failure gate's
/// business).
#[diesel::dsl::auto_type]
pub(in crate::store) fn barrier_gate() -> _ {
    let passing: Vec<ApplyState> = start_order_passing(CutoverPolicy::Barrier);
    not(exists(
        earlier_siblings().filter(db::none_of(sibling_state(), passing)),
    ))
}

/// **The start order**: the row's cutover policy picks its gate: `barrier` the barrier gate,
/// `parallel` none, anything else the rolling gate.
#[diesel::dsl::auto_type]
pub(in crate::store) fn start_order_gate() -> _ {
    let barrier: CutoverPolicy = CutoverPolicy::Barrier;
    let parallel: CutoverPolicy = CutoverPolicy::Parallel;
    let claimed: [CutoverPolicy; 2] = CUTOVER_CLAIMED_POLICIES;
    ops::cutover_policy
        .eq(barrier)
        .and(barrier_gate())
        .or(ops::cutover_policy.eq(parallel))
        .or(db::none_of(ops::cutover_policy, claimed).and(rolling_gate()))
}

/// The driven states: active, except the parked `waiting_for_cutover` and `revert_window`.
fn driven_states() -> Vec<ApplyState> {
    ApplyState::ALL
        .into_iter()
        .filter(|state| crate::state::is_driven(*state))
        .collect()
}

/// The row's apply's `max_concurrency` (NULL: no cap, or no apply).
#[diesel::dsl::auto_type]
fn apply_max_concurrency() -> _ {
    applies::table
        .filter(applies::id.eq(ops::apply_id))
        .select(applies::max_concurrency)
        .single_value()
}

/// How many operations of the row's apply are in a driven state.
#[diesel::dsl::auto_type]
fn driven_siblings() -> _ {
    let driven: Vec<ApplyState> = driven_states();
    siblings
        .filter(siblings.field(ops::apply_id).eq(ops::apply_id))
        .filter(db::one_of(siblings.field(ops::state), driven))
        .count()
        .single_value()
}

/// **The concurrency cap**: the row's apply has no `max_concurrency`, or fewer of its operations than
/// that are driven. Only the start, resume and retry claims wait on it; recovery and the cutover
/// claim never do (a half-swapped schema must always be recoverable). Exact because claims are
/// serialised per apply: the claim holds the apply's row lock while it counts.
#[diesel::dsl::auto_type]
pub(in crate::store) fn concurrency_gate() -> _ {
    let cap: apply_max_concurrency = apply_max_concurrency();
    let cap_again: apply_max_concurrency = apply_max_concurrency();
    cap.is_null().or(cap_again.gt(driven_siblings()))
}

/// **The retry budget**: the row's `attempt` is below its apply's `max_attempts`, or it is 0. An
/// operator's retry resets `attempt` to 0, and it always leads to an attempt, whatever the budget
/// (`max_attempts = 0` included); a worker's `failed_retryable` write with no attempt left under the
/// budget stores `failed` instead ([`crate::state::automatic_retry_left`]), so `attempt` 0 in
/// `failed_retryable` with a budget of 0 only ever comes from an operator.
#[diesel::dsl::auto_type]
pub(in crate::store) fn retry_budget_left() -> _ {
    let first: i32 = 0;
    ops::attempt.eq(first).nullable().or(applies::table
        .filter(applies::id.eq(ops::apply_id))
        .select(applies::max_attempts)
        .single_value()
        .gt(ops::attempt.nullable()))
}

/// **Start**, the part of the rule that is its own: `pending`, past the start order and the failure
/// gate. The stop gate and the concurrency cap complete it; [`driving_rules`] applies them once for
/// the start, resume and retry rules together.
#[diesel::dsl::auto_type]
pub(in crate::store) fn start_rule() -> _ {
    let pending: ApplyState = ApplyState::Pending;
    ops::state
        .eq(pending)
        .and(start_order_gate())
        .and(failure_gate())
}

/// The claims that move an operation into a driven state, with the gates they share: **start**
/// ([`start_rule`]) and **retry** ([`retry_rule`]) past the stop gate, or **resume**
/// ([`resume_rule`]); each within the concurrency cap. Every gate is spelled once, so the database
/// sets up each of its subqueries once per statement rather than once per rule. The row's state is
/// tested before the stop gate, and the cap last, so a row that no rule can take costs no
/// subquery it does not need.
#[diesel::dsl::auto_type]
pub(in crate::store) fn driving_rules() -> _ {
    let gated: [ApplyState; 2] = [ApplyState::Pending, ApplyState::FailedRetryable];
    resume_rule()
        .or(db::one_of(ops::state, gated)
            .and(stop_gate())
            .and(start_rule().or(retry_rule())))
        .and(concurrency_gate())
}

/// **Recovery** (copy claim): an active state other than `waiting_for_cutover` and `revert_window`;
/// `revert_window` unless a revert or skip-revert request is pending for it (the cutover claim's revert
/// arms take it then); `waiting_for_cutover` where the copy claim owns the cutover (see
/// [`cutover_owned`]). No order or stop gate: an operation a pending stop or cancel covers is moved to
/// `stopped` or `cancelled` in place by the claim instead of being taken.
#[diesel::dsl::auto_type]
pub(in crate::store) fn recovery_rule() -> _ {
    let recoverable: Vec<ApplyState> = recoverable_states();
    let waiting: ApplyState = ApplyState::WaitingForCutover;
    let window: ApplyState = ApplyState::RevertWindow;
    db::one_of(ops::state, recoverable)
        .or(ops::state.eq(window).and(not(revert_decision_requested())))
        .or(ops::state.eq(waiting).and(not(cutover_owned())))
}

/// **The cutover belongs to the cutover claim**: the row's apply defers its cutovers (then every
/// operation, `rolling` and lone ones included, waits at `waiting_for_cutover` for an operator's
/// request), or the row is `barrier` or `parallel` in an apply with more than one operation.
#[diesel::dsl::auto_type]
pub(in crate::store) fn cutover_owned() -> _ {
    let claimed: [CutoverPolicy; 2] = CUTOVER_CLAIMED_POLICIES;
    let deferred: apply_defers_cutover = apply_defers_cutover(true);
    deferred.or(db::one_of(ops::cutover_policy, claimed).and(has_sibling()))
}

/// **Resume**, the part of the rule that is its own: `stopped` or `paused`, started before (a
/// never-started one goes back to `pending` when the start is recorded), with a pending `start` for
/// its apply or for it. The concurrency cap completes it ([`driving_rules`]).
#[diesel::dsl::auto_type]
pub(in crate::store) fn resume_rule() -> _ {
    let stopped: ApplyState = ApplyState::Stopped;
    let paused: ApplyState = ApplyState::Paused;
    ops::state
        .eq(stopped)
        .or(ops::state.eq(paused))
        .and(ops::started_at.is_not_null())
        .and(start_requested())
}

/// **Retry**, the part of the rule that is its own: `failed_retryable` with retry budget left. The
/// stop gate and the concurrency cap complete it ([`driving_rules`]).
#[diesel::dsl::auto_type]
pub(in crate::store) fn retry_rule() -> _ {
    let retryable: ApplyState = ApplyState::FailedRetryable;
    ops::state.eq(retryable).and(retry_budget_left())
}

/// **A readable row**: its cutover and failure policies are values this version knows. A claim hands
/// the row out typed, and a stored value it does not know is an error to read, never a default: such
/// a row is never claimed (it fails closed, like an unknown state), and it does not stop the claims of
/// other rows. An operator repairs it through [`crate::models::raw`].
#[diesel::dsl::auto_type]
pub(in crate::store) fn readable_policies() -> _ {
    let cutover: &'static [CutoverPolicy] = CutoverPolicy::ALL;
    let failure: &'static [FailurePolicy] = FailurePolicy::ALL;
    db::one_of(ops::cutover_policy, cutover).and(db::one_of(ops::on_failure, failure))
}

/// What the copy claim takes: a free lease on a readable row and one of recovery, or start, resume
/// or retry ([`driving_rules`]).
#[diesel::dsl::auto_type]
pub(in crate::store) fn copy_claimable(now: DbNow) -> _ {
    let free: lease_free = lease_free(now);
    free.and(readable_policies())
        .and(recovery_rule().or(driving_rules()))
}

/// The row's apply has `defer_cutover` = `deferred`. A row whose apply is missing matches neither.
/// A scalar subquery on the primary key rather than `EXISTS`: MariaDB turns an `EXISTS` here into a
/// materialised scan of all applies (see `tests/it/explain.rs`).
#[diesel::dsl::auto_type]
fn apply_defers_cutover(deferred: bool) -> _ {
    applies::table
        .filter(applies::id.eq(ops::apply_id))
        .select(applies::defer_cutover)
        .single_value()
        .eq(deferred)
}

/// **The cutover order**: every earlier sibling is `completed` or `cancelled` (so one in
/// `revert_window` still blocks; a failure is the failure gate's business).
#[diesel::dsl::auto_type]
pub(in crate::store) fn cutover_order_gate() -> _ {
    let passing: Vec<ApplyState> = cutover_order_passing();
    not(exists(
        earlier_siblings().filter(db::none_of(sibling_state(), passing)),
    ))
}

/// A pending `cutover` request of the row's apply: scalar subqueries, like [`apply_defers_cutover`],
/// so the request lookups stay index lookups per row.
#[diesel::dsl::auto_type]
fn pending_cutover_requests() -> _ {
    let cutover: ControlRequestKind = ControlRequestKind::Cutover;
    let pending: ControlRequestStatus = ControlRequestStatus::Pending;
    reqs::table
        .filter(reqs::apply_id.eq(ops::apply_id))
        .filter(reqs::kind.eq(cutover))
        .filter(reqs::status.eq(pending))
}

/// A pending `cutover` request naming the row itself.
#[diesel::dsl::auto_type]
pub(in crate::store) fn cutover_requested_for_row() -> _ {
    pending_cutover_requests()
        .filter(reqs::apply_operation_id.eq(ops::id.nullable()))
        .select(reqs::id)
        .limit(1_i64)
        .single_value()
        .is_not_null()
}

/// A pending whole-apply `cutover` request for the row's apply.
#[diesel::dsl::auto_type]
pub(in crate::store) fn cutover_requested_for_apply() -> _ {
    pending_cutover_requests()
        .filter(reqs::apply_operation_id.is_null())
        .select(reqs::id)
        .limit(1_i64)
        .single_value()
        .is_not_null()
}

/// **Automatic cutover** (`defer_cutover` off): the cutover order and the failure gate.
#[diesel::dsl::auto_type]
pub(in crate::store) fn automatic_cutover_rule() -> _ {
    let automatic: apply_defers_cutover = apply_defers_cutover(false);
    automatic.and(cutover_order_gate()).and(failure_gate())
}

/// **Operator-directed cutover** (`defer_cutover` on): a request naming the row (which bypasses the
/// order, so an operator can cut over any deployment while the others wait), or a whole-apply request
/// with the automatic order and failure gate.
#[diesel::dsl::auto_type]
pub(in crate::store) fn directed_cutover_rule() -> _ {
    let deferred: apply_defers_cutover = apply_defers_cutover(true);
    deferred.and(
        cutover_requested_for_row().or(cutover_requested_for_apply()
            .and(cutover_order_gate())
            .and(failure_gate())),
    )
}

/// What the cutover claim takes: a free lease on a readable row and
/// - **cutover**: `waiting_for_cutover` whose cutover it owns ([`cutover_owned`]), past the stop gate,
///   due automatically or by request;
/// - **recovery**: `cutting_over`, or `revert_window` with no revert decision pending, whose cutover it
///   owns;
/// - **revert** / **skip revert**: `revert_window` with a pending `revert` or `skip_revert`, under any
///   policy;
/// - **stop in place**: `waiting_for_cutover` whose cutover it owns while a stop or cancel covers it
///   (the claim moves it to `stopped` or `cancelled` and takes nothing).
#[diesel::dsl::auto_type]
pub(in crate::store) fn cutover_claimable(now: DbNow) -> _ {
    let waiting: ApplyState = ApplyState::WaitingForCutover;
    let cutting_over: ApplyState = ApplyState::CuttingOver;
    let window: ApplyState = ApplyState::RevertWindow;
    let free: lease_free = lease_free(now);
    free.and(readable_policies()).and(
        cutover_owned()
            .and(
                ops::state
                    .eq(waiting)
                    .and(
                        stop_gate()
                            .and(automatic_cutover_rule().or(directed_cutover_rule()))
                            .or(stop_or_cancel_requested()),
                    )
                    .or(ops::state.eq(cutting_over))
                    .or(ops::state.eq(window).and(not(revert_decision_requested()))),
            )
            .or(ops::state.eq(window).and(revert_decision_requested())),
    )
}

/// A claim's scope ([`ClaimScope`]): the row's deployment among those listed, its environment and
/// its database the ones given; an open part (nothing listed) restricts nothing. Row-local: the
/// scope of a deployment list is served by `apply_operations_scope_claim_idx` (`claimable`,
/// `deployment`, `created_at`, `id`).
#[diesel::dsl::auto_type]
pub(in crate::store) fn in_scope(
    deployments: Vec<String>,
    environments: Vec<String>,
    databases: Vec<String>,
) -> _ {
    let deployment: db::within<ops::deployment, Vec<String>> =
        db::within(ops::deployment, deployments);
    let environment: db::within<ops::environment, Vec<String>> =
        db::within(ops::environment, environments);
    let database: db::within<ops::database_name, Vec<String>> =
        db::within(ops::database_name, databases);
    deployment.and(environment).and(database)
}

/// [`in_scope`] of `scope`.
pub(in crate::store) fn scope_filter(scope: &ClaimScope) -> in_scope {
    in_scope(
        scope.deployments.clone(),
        scope.environment.iter().cloned().collect(),
        scope.database_name.iter().cloned().collect(),
    )
}

/// The rows the candidate read walks: those in a claimable state, through
/// `apply_operations_claim_idx` (`claimable`, `created_at`, `id`).
#[diesel::dsl::auto_type]
pub(in crate::store) fn walk_claim_index() -> _ {
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
pub(in crate::store) fn only_row(id: crate::models::ApplyOperationId) -> _ {
    ops::id.ge(id).and(ops::id.le(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WHERE clause `filter` renders on SQLite.
    #[cfg(feature = "sqlite")]
    fn rendered(filter: in_scope) -> String {
        let query = ops::table.select(ops::id).filter(filter);
        diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn an_open_scope_restricts_nothing_and_a_listed_one_is_in() {
        assert!(
            rendered(scope_filter(&ClaimScope::any())).contains("WHERE ((1=1 AND 1=1) AND 1=1)"),
            "{}",
            rendered(scope_filter(&ClaimScope::any()))
        );
        let scope = ClaimScope::any()
            .deployments(["east", "west"])
            .environment("production");
        let sql = rendered(scope_filter(&scope));
        assert!(
            sql.contains("`deployment` IN (?, ?)") && sql.contains("`environment` IN (?)"),
            "{sql}"
        );
        assert!(sql.contains("AND 1=1"), "the open database part: {sql}");
    }

    #[test]
    fn the_failure_gate_binds_the_failure_states_of_the_state_module() {
        assert_eq!(FAILURE_STATES.to_vec(), failure_states());
    }
}
