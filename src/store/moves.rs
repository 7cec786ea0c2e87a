//! What a move of an operation row into a state writes, decided in one place ([`Move::changes`])
//! and written by one changeset whatever the UPDATE's filter: operators' and holders' state writes,
//! what pending stops, cancels and starts do to operations nobody drives, an operator's retry, and
//! a claim's move of a covered operation in place. (A claim that takes an operation writes the row
//! its transition computes: `claims::take`.)
//!
//! The rules, each a consequence of the target state alone, except where the mover matters:
//! - `completed_at` is stamped once by a move into a completing state and cleared by any other;
//!   `started_at` is stamped once by a start.
//! - The target is held (`holds_target`) while the operation is unsettled and let go once it is
//!   `completed`, `cancelled` or `reverted`; a move into `failed` leaves the hold to the unit of
//!   work's refresh, which keeps it while the apply has an unsettled operation.
//! - A failure (`failed`, `reverted`) keeps its failure number (the refresh numbers a new one); any
//!   other move clears it.
//! - The lease goes in the same UPDATE when nobody holds an operation in the target state
//!   ([`clears_lease`]); a move into a completing state by anyone but the holder takes the lease
//!   away (the holder then finds it lost), while the holder's own completion keeps its token and
//!   owner (a repeat succeeds) and drops only the expiry, so the claims' expiry index holds only
//!   operations in flight.

use diesel::dsl::Eq;
use diesel::prelude::*;

use super::coalesce_timestamp;
use super::rows::{unleased, Unleased};
use super::targets::hold_for;
use crate::db::{self, DbNow};
use crate::schema::apply_operations as ops;
use crate::state::{clears_lease, is_failure, ApplyState};

/// Who moves the operation, which decides what a completing move does to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store) enum Mover {
    /// The worker holding its lease.
    Holder,
    /// Anyone else: an operator, a request carried out on an operation nobody drives, a claim
    /// moving a covered operation in place.
    Other,
}

/// What a move does to the error message.
#[derive(Debug, Clone, Copy)]
enum Message<'a> {
    Keep,
    Clear,
    Set(&'a str),
}

/// A move of an operation row into a state: built by [`Move::to`] and refined by the few moves that
/// write more; [`Move::changes`] is what it writes.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) struct Move<'a> {
    state: ApplyState,
    by: Mover,
    stamp_started: bool,
    message: Message<'a>,
    reset_attempt: bool,
}

/// The states that stamp `completed_at`: the terminal ones except `stopped`, which can resume.
pub(in crate::store) fn completes(state: ApplyState) -> bool {
    state.is_terminal() && state != ApplyState::Stopped
}

impl<'a> Move<'a> {
    /// A move into `state` by `by`, writing only what the state decides.
    pub(in crate::store) fn to(state: ApplyState, by: Mover) -> Self {
        Move {
            state,
            by,
            stamp_started: false,
            message: Message::Keep,
            reset_attempt: false,
        }
    }

    /// A start: `running`, `started_at` stamped once.
    pub(in crate::store) fn start(by: Mover) -> Self {
        Move {
            stamp_started: true,
            ..Move::to(ApplyState::Running, by)
        }
    }

    /// The move, storing `message` as the operation's error message.
    pub(in crate::store) fn with_message(self, message: &'a str) -> Self {
        Move {
            message: Message::Set(message),
            ..self
        }
    }

    /// An operator's retry of a failed operation: `failed_retryable` at attempt 0 (a fresh retry
    /// budget of one attempt), the error message cleared.
    pub(in crate::store) fn operators_retry() -> Self {
        Move {
            message: Message::Clear,
            reset_attempt: true,
            ..Move::to(ApplyState::FailedRetryable, Mover::Other)
        }
    }

    /// The state the move writes.
    pub(in crate::store) fn state(&self) -> ApplyState {
        self.state
    }

    /// What the move leaves in the columns the unit of work's refresh reads, given their values
    /// before, as [`Move::changes`] writes them: `started_at` (stamped once, with `now`), the
    /// error message, the attempt, the target hold and the failure number.
    pub(in crate::store) fn leaves(&self, before: Columns, now: chrono::NaiveDateTime) -> Columns {
        let state = self.state;
        Columns {
            started_at: before.started_at.or(self.stamp_started.then_some(now)),
            error_message: match self.message {
                Message::Keep => before.error_message,
                Message::Clear => None,
                Message::Set(message) => Some(message.to_owned()),
            },
            attempt: if self.reset_attempt {
                0
            } else {
                before.attempt
            },
            holds_target: if state == ApplyState::Failed {
                before.holds_target
            } else {
                hold_for(state)
            },
            failure_seq: if is_failure(state) {
                before.failure_seq
            } else {
                None
            },
        }
    }

    /// The columns the move writes (see the module's doc for the rules), `updated_at` from the
    /// database's clock. Every assignment reads only its own column, so MySQL (left to right) and
    /// SQLite (the old row) agree.
    pub(in crate::store) fn changes(&self) -> Changes<'a> {
        let state = self.state;
        let completing = completes(state);
        let now = db::now();
        (
            ops::state.eq(state),
            self.stamp_started.then(|| stamp_started(now)),
            completing.then(|| stamp_completed(now)),
            (!completing).then(|| ops::completed_at.eq(None)),
            (state != ApplyState::Failed).then(|| ops::holds_target.eq(hold_for(state))),
            (!is_failure(state)).then(|| ops::failure_seq.eq(None)),
            match self.message {
                Message::Keep => None,
                Message::Clear => Some(ops::error_message.eq(None)),
                Message::Set(message) => Some(ops::error_message.eq(Some(message))),
            },
            self.reset_attempt.then(|| ops::attempt.eq(0)),
            (clears_lease(state) || (completing && self.by == Mover::Other)).then(unleased),
            (completing && !clears_lease(state) && self.by == Mover::Holder)
                .then(|| ops::lease_expires_at.eq(None)),
            ops::updated_at.eq(now),
        )
    }
}

/// The columns of an operation row that a [`Move`] may change and the unit of work's refresh reads
/// ([`Move::leaves`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::store) struct Columns {
    pub(in crate::store) started_at: Option<chrono::NaiveDateTime>,
    pub(in crate::store) error_message: Option<String>,
    pub(in crate::store) attempt: i32,
    pub(in crate::store) holds_target: Option<bool>,
    pub(in crate::store) failure_seq: Option<i64>,
}

/// `started_at` stamped once.
#[diesel::dsl::auto_type]
fn stamp_started(now: DbNow) -> _ {
    ops::started_at.eq(coalesce_timestamp(ops::started_at, now.nullable()))
}

/// `completed_at` stamped once.
#[diesel::dsl::auto_type]
fn stamp_completed(now: DbNow) -> _ {
    ops::completed_at.eq(coalesce_timestamp(ops::completed_at, now.nullable()))
}

/// The changeset of a [`Move`]: one type for every move, the columns a move leaves alone `None`.
pub(in crate::store) type Changes<'a> = (
    Eq<ops::state, ApplyState>,
    Option<stamp_started>,
    Option<stamp_completed>,
    Option<Eq<ops::completed_at, Option<chrono::NaiveDateTime>>>,
    Option<Eq<ops::holds_target, Option<bool>>>,
    Option<Eq<ops::failure_seq, Option<i64>>>,
    Option<Eq<ops::error_message, Option<&'a str>>>,
    Option<Eq<ops::attempt, i32>>,
    Option<Unleased>,
    Option<Eq<ops::lease_expires_at, Option<chrono::NaiveDateTime>>>,
    Eq<ops::updated_at, DbNow>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_into_a_completing_state_never_also_clears_completed_at() {
        for state in ApplyState::ALL {
            for by in [Mover::Holder, Mover::Other] {
                let changes = Move::to(state, by).changes();
                assert!(
                    changes.2.is_some() != changes.3.is_some(),
                    "{state:?} by {by:?}: completed_at is stamped or cleared, exactly one"
                );
                assert!(
                    !(changes.8.is_some() && changes.9.is_some()),
                    "{state:?} by {by:?}: the lease is either cleared or loses its expiry"
                );
            }
        }
    }

    #[test]
    fn only_a_holders_completion_keeps_its_token() {
        let holder = Move::to(ApplyState::Completed, Mover::Holder).changes();
        assert!(holder.8.is_none() && holder.9.is_some());
        let other = Move::to(ApplyState::Completed, Mover::Other).changes();
        assert!(other.8.is_some() && other.9.is_none());
        let running = Move::to(ApplyState::Running, Mover::Other).changes();
        assert!(running.8.is_none() && running.9.is_none());
    }
}
