//! The unit of work: the one way a write that touches an apply runs. [`run`] opens the write
//! transaction, locks the apply's row, runs the caller's write, then, in the same transaction,
//! carries pending stops and cancels out on what nobody drives, derives the apply's state from its
//! operations, settles the requests that are done and keeps failed operations' target holds; and it
//! runs the whole again when the transaction loses a race, as [`OnLostRace`] says. Operators'
//! writes, workers' leased writes, control requests, inserts of operations and the claims all go
//! through it; nothing else locks an apply.
//!
//! **Serialised per apply.** The apply's row is locked first, and only then are siblings read or
//! operation rows written: the order is always apply row, then operation rows, so two units of work
//! never deadlock on each other, and the second sees what the first committed.
//!
//! **The refresh** runs last: it reads the operations (one SELECT), derives the apply's state, and
//! writes the apply only when the state, its message, `started_at` or `completed_at` would change.
//! In the same step it keeps failed operations' target holds (a failed operation holds its target
//! while its apply has an unsettled operation left, and lets it go when the last one settles) and
//! decides the claim rules for every operation of the apply, storing the decision where it changed
//! ([`decisions`]): a claim then reads only the row. A write that says it wrote nothing skips the
//! refresh.

use chrono::NaiveDateTime;
use diesel::dsl::exists;
use diesel::prelude::*;

use super::rows::ApplyLockRow;
use super::targets;
use crate::db::{self, DbConnection, TransactionOutcome};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperationId, ControlRequestId};
use crate::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
use crate::schema_types::datetime;
use crate::state::{
    derive_apply_state, is_failure, is_settled, ApplyState, ControlRequestStatus, CutoverPolicy,
    Derived, FailurePolicy, OperationView,
};

mod decisions;
mod requests;

pub(in crate::store) use decisions::{
    decisions, decisions_for_new, failure_holding_back, read_facts, ApplySettings, ApplyView,
    OperationFacts, Stored,
};

pub(in crate::store) use requests::{act_on_undriven, complete_cutover, pending_of};

/// Which apply a unit of work locks, and how.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Lock {
    /// This apply; waits for another transaction that holds it.
    Apply(ApplyId),
    /// This apply unless another transaction holds it (MySQL `FOR UPDATE SKIP LOCKED`): the claims,
    /// which would rather take another apply's candidate than wait.
    ApplyUnlessLocked(ApplyId),
    /// The apply of this operation, found by a subquery in the same statement.
    ApplyOf(ApplyOperationId),
    /// The apply of this control request, found by a subquery in the same statement.
    ApplyOfRequest(ControlRequestId),
}

/// What a unit of work does when its transaction loses a race (a deadlock; on a Galera node a
/// certification failure or a brute-force abort): the database rolled it back, and running it again
/// is safe. Inside a caller's transaction the first loss is returned at once as
/// [`StoreError::Contention`]: the caller's whole transaction was rolled back.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum OnLostRace {
    /// A few more runs with short pauses, then [`StoreError::Contention`]: requests, inserts and
    /// claims (a claim passes over what keeps losing).
    RetryBriefly,
    /// Runs again for up to ten seconds: idempotent state writes (fenced by their
    /// lease, or an operator's, which writes the same values again), which should end in success or
    /// in their own error, not in a lost race.
    RetryPatiently,
}

/// What the write of a unit of work changed, which decides how much of the refresh runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Written {
    /// Nothing: no refresh.
    Nothing,
    /// Rows of the apply: the full refresh.
    Rows,
}

/// A locked apply row and the database's time when the lock read it, which every stamp the refresh
/// writes uses.
#[derive(Debug, Clone)]
pub(in crate::store) struct LockedApply {
    /// The row.
    pub(in crate::store) row: ApplyLockRow,
    /// The database's clock when the row was locked.
    pub(in crate::store) now: NaiveDateTime,
    /// Whether the apply had a pending control request when it was locked (or one was recorded
    /// since, in this transaction): only then does the refresh read the pending requests to
    /// complete those that are done, and only then can a leased write need one. A write that
    /// records a request sets it.
    pub(in crate::store) requests_pending: bool,
    /// What the write changed; [`Written::Rows`] unless the write says otherwise.
    pub(in crate::store) written: Written,
    /// The apply's operations as the write left them, when it kept them (a claim, with no request
    /// pending): the refresh uses them instead of reading them again.
    pub(in crate::store) facts: Option<Vec<OperationFacts>>,
}

impl LockedApply {
    fn of((row, now, requests_pending): (ApplyLockRow, NaiveDateTime, bool)) -> Self {
        LockedApply {
            row,
            now,
            requests_pending,
            written: Written::Rows,
            facts: None,
        }
    }
}

/// Runs `write` as a unit of work on the apply `lock` names: in a write transaction (on MySQL READ
/// COMMITTED, so each statement after the lock reads what was committed before it was granted; on
/// SQLite `BEGIN IMMEDIATE`; inside a caller's transaction a savepoint of it), the apply's row
/// locked first, then `write` (given the locked apply, or `None` when there is no such apply, or,
/// for [`Lock::ApplyUnlessLocked`], when another transaction holds it), then the refresh of the
/// locked apply (see the module's doc). `write`'s error rolls everything back. Run again on a lost
/// race as `on_lost_race` says, so `write` must be safe to repeat.
///
/// [`TransactionOutcome::Unknown`] when COMMIT was sent and its answer lost with the connection.
pub(in crate::store) fn run<T>(
    conn: &mut DbConnection,
    lock: Lock,
    on_lost_race: OnLostRace,
    mut write: impl FnMut(&mut DbConnection, Option<&mut LockedApply>) -> StoreResult<T>,
) -> StoreResult<TransactionOutcome<T>> {
    let once = |conn: &mut DbConnection| {
        db::claim_transaction(conn, |conn| {
            let mut locked = lock_apply(conn, lock)?;
            let value = write(conn, locked.as_mut())?;
            if let Some(locked) = &mut locked {
                finish(conn, locked)?;
            }
            Ok(value)
        })
    };
    match on_lost_race {
        OnLostRace::RetryBriefly => db::retry_contention(conn, once),
        OnLostRace::RetryPatiently => db::retry_fenced_write(conn, once),
    }
}

/// [`run`] for a caller that reports a COMMIT whose answer was lost as the error it was.
pub(in crate::store) fn run_known<T>(
    conn: &mut DbConnection,
    lock: Lock,
    on_lost_race: OnLostRace,
    write: impl FnMut(&mut DbConnection, Option<&mut LockedApply>) -> StoreResult<T>,
) -> StoreResult<T> {
    match run(conn, lock, on_lost_race, write)? {
        TransactionOutcome::Committed(value) => Ok(value),
        TransactionOutcome::Unknown { error, .. } => Err(error.into()),
    }
}

/// The refresh after the write, as much of it as [`LockedApply::written`] needs.
fn finish(conn: &mut DbConnection, locked: &mut LockedApply) -> StoreResult<()> {
    let known = locked.facts.take();
    match locked.written {
        Written::Nothing => Ok(()),
        Written::Rows => refresh_locked(conn, locked, known),
    }
}

/// The locked apply has a pending control request (for itself or any of its operations).
#[diesel::dsl::auto_type]
fn pending_requests_exist() -> _ {
    let pending: ControlRequestStatus = ControlRequestStatus::Pending;
    exists(
        reqs::table
            .filter(reqs::apply_id.eq(applies::id))
            .filter(reqs::status.eq(pending))
            .select(reqs::id),
    )
}

/// The locking read `$lock` (`first_current`: MySQL `FOR UPDATE`; `first_for_claim`: `FOR UPDATE
/// SKIP LOCKED`; on SQLite the write transaction already excludes other writers) of the apply row
/// `$filter` selects, with the database's time as it reads the row. A macro because each lock and
/// filter is a different query type.
macro_rules! lock_apply_row {
    ($lock:ident, $conn:expr, $filter:expr) => {
        db::$lock!(
            $conn,
            applies::table.filter($filter).select((
                ApplyLockRow::as_select(),
                db::now_when_read(),
                pending_requests_exist(),
            ))
        )
        .optional()
        .map(|locked| locked.map(LockedApply::of))
        .map_err(StoreError::from)
    };
}

/// The locking read `lock` names, or `None` (no such apply; or, unless waiting, one another
/// transaction holds).
fn lock_apply(conn: &mut DbConnection, lock: Lock) -> StoreResult<Option<LockedApply>> {
    match lock {
        Lock::Apply(apply_id) => lock_apply_row!(first_current, conn, applies::id.eq(apply_id)),
        Lock::ApplyUnlessLocked(apply_id) => {
            lock_apply_row!(first_for_claim, conn, applies::id.eq(apply_id))
        }
        Lock::ApplyOf(operation_id) => {
            let apply_id = ops::table
                .find(operation_id)
                .select(ops::apply_id)
                .single_value();
            lock_apply_row!(first_current, conn, applies::id.nullable().eq(apply_id))
        }
        Lock::ApplyOfRequest(request_id) => {
            let apply_id = reqs::table
                .find(request_id)
                .select(reqs::apply_id)
                .single_value();
            lock_apply_row!(first_current, conn, applies::id.nullable().eq(apply_id))
        }
    }
}

/// Brings apply `apply`'s derived state, timestamps and failed operations' target holds up to date,
/// numbers new failures, and carries pending control requests forward: what a pending stop or cancel
/// covers and nobody drives is stopped or cancelled, and the requests that are done are completed
/// (see [`requests`]). The caller holds the apply's lock in the current transaction.
///
/// Reads the operations in claim order (one SELECT); stores the claim rules' decision where it
/// changed (an UPDATE per distinct new decision); writes the apply only when something changes
/// (one UPDATE), and the failed operations' holds only when they must change (one UPDATE, which can
/// fail with [`crate::StoreError::TargetBusy`] when a retry makes an apply unsettled again after
/// another apply took a failed operation's target).
///
/// `known`: the operations as the write left them, kept in memory (a claim's); used instead of the
/// read when no request is pending (with one, what it covers may have moved since).
fn refresh_locked(
    conn: &mut DbConnection,
    locked: &LockedApply,
    known: Option<Vec<OperationFacts>>,
) -> StoreResult<()> {
    let apply = &locked.row;
    let now = locked.now;
    let pending = if locked.requests_pending {
        requests::pending_of(conn, apply.id)?
    } else {
        Vec::new()
    };
    requests::enforce(conn, apply.id, &pending)?;
    let mut facts = match known {
        Some(facts) if !locked.requests_pending => facts,
        _ => read_facts(conn, apply.id)?,
    };
    let failure_seq = number_failures(conn, apply.failure_seq, &mut facts)?;
    let still_pending = if pending.is_empty() {
        pending
    } else {
        let scope: Vec<(ApplyOperationId, Option<ApplyState>)> = facts
            .iter()
            .map(|f| (f.id, ApplyState::from_stored(&f.state)))
            .collect();
        requests::settle(conn, pending, &scope)?
    };
    let settings = ApplySettings::of(apply);
    decisions::store(conn, &facts, &decisions(settings, &facts, &still_pending))?;
    let derived = derive(&facts);
    let stored_state = ApplyState::from_stored(&apply.state);
    let (state, error_message) = match derived {
        Ok(Derived {
            state,
            error_message,
        }) => (state, error_message),
        // An unknown operation state: keep the apply's state, say why it is not derived.
        Err(message) => (stored_state.unwrap_or(ApplyState::Pending), Some(message)),
    };
    let all_settled = !facts.is_empty()
        && facts
            .iter()
            .all(|f| ApplyState::from_stored(&f.state).is_some_and(is_settled));
    let any_started = facts.iter().any(|f| f.started_at.is_some());
    let started_at = apply.started_at.or(any_started.then_some(now));
    let completed_at = if all_settled {
        apply.completed_at.or(Some(now))
    } else {
        None
    };
    let error_message = error_message.map(fit_text_column);
    let unchanged = stored_state == Some(state)
        && apply.error_message == error_message
        && apply.started_at == started_at
        && apply.completed_at == completed_at
        && apply.failure_seq == failure_seq;
    // On a Galera node the apply's row lock is the node's own: two nodes' units of work on one
    // apply both run, and certification only orders them if they write a common row. Each unit
    // decided its operations from what it read, so the apply's row is written by every unit there
    // (its `updated_at`, at least): one of two concurrent units then fails certification and runs
    // again, seeing the other's rows, instead of both storing decisions the other made stale.
    if !unchanged || db::is_cluster_node(conn) {
        db::cached_update(
            applies::table,
            applies::id.eq(apply.id),
            (
                applies::state.eq(state),
                applies::error_message.eq(error_message),
                applies::started_at.eq(started_at),
                applies::completed_at.eq(completed_at),
                applies::failure_seq.eq(failure_seq),
                applies::updated_at.eq(datetime(now)),
            ),
        )
        .execute(conn)?;
    }
    // A failed operation holds its target while something in its apply is unsettled.
    let failed_should_hold = !all_settled;
    let failed = ApplyState::Failed.to_string();
    let holds_to_change = facts
        .iter()
        .any(|f| f.state == failed && (f.holds_target == Some(true)) != failed_should_hold);
    if holds_to_change {
        targets::set_failed_holds(conn, apply, failed_should_hold)?;
    }
    Ok(())
}

/// Gives every failure (`failed`, `reverted`) that has no number yet the next numbers of the apply's
/// failure sequence, in claim order, after `last` (the apply's last number), and returns the new last
/// number. A write into a failure leaves the number NULL, and every write out of one clears it, so
/// this numbers each failure once, in the transaction that made it (one UPDATE per new failure).
fn number_failures(
    conn: &mut DbConnection,
    last: i64,
    facts: &mut [OperationFacts],
) -> StoreResult<i64> {
    let mut last = last;
    for fact in facts.iter_mut() {
        let failure = ApplyState::from_stored(&fact.state).is_some_and(is_failure);
        if failure && fact.failure_seq.is_none() {
            last += 1;
            db::cached_update(
                ops::table,
                ops::id.eq(fact.id),
                ops::failure_seq.eq(Some(last)),
            )
            .execute(conn)?;
            fact.failure_seq = Some(last);
        }
    }
    Ok(last)
}

/// `message` cut to the 65,535 bytes a TEXT column holds, at a character boundary: the derived
/// message quotes an operation's, which may already fill its own column.
fn fit_text_column(mut message: String) -> String {
    const TEXT_BYTES: usize = 65_535;
    if message.len() > TEXT_BYTES {
        let mut end = TEXT_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

/// The derivation over what was read, or why it cannot be derived (an operation state this version
/// does not know, naming the row and the value).
fn derive(facts: &[OperationFacts]) -> Result<Derived, String> {
    let mut views = Vec::with_capacity(facts.len());
    for fact in facts {
        let Some(state) = ApplyState::from_stored(&fact.state) else {
            return Err(format!(
                "apply_operations row {} has state {:?}, which this version does not know; the \
                 apply's state is not derived until it is repaired",
                fact.id, fact.state
            ));
        };
        views.push(OperationView {
            state,
            // Unknown policies read as the strictest, as the claims read them.
            cutover_policy: CutoverPolicy::from_stored(&fact.cutover_policy)
                .unwrap_or(CutoverPolicy::Rolling),
            on_failure: FailurePolicy::from_stored(&fact.on_failure).unwrap_or(FailurePolicy::Halt),
            started: fact.started_at.is_some(),
            released_through: fact.released_through,
            failure_seq: fact.failure_seq,
            deployment: &fact.deployment,
            error_message: fact.error_message.as_deref(),
        });
    }
    Ok(derive_apply_state(&views))
}

/// Decides the claim rules for the locked apply now, in the middle of a unit of work, and stores the
/// decision where it changed; nothing else (the apply's state, requests and target holds are the
/// refresh's, when the unit's write changes rows). A claim runs it when it meets an operation whose
/// decision is [`ClaimAction::Undecided`](crate::state::ClaimAction::Undecided) (written outside
/// the store), then reads the row again. Two SELECTs at most (the pending requests, the
/// operations).
pub(in crate::store) fn decide_now(
    conn: &mut DbConnection,
    locked: &LockedApply,
) -> StoreResult<()> {
    ApplyView::read(conn, locked)?.store_decisions(conn)
}
