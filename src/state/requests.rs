//! What control requests cover and when they are done: pure functions of operation states, shared by
//! the request recording, the claims and the refresh that completes requests (the rules: "Control
//! requests" in `docs/worker-contract.md` in the repository).

use super::{ApplyState, ControlRequestKind};

/// True for the states a `stop` covers: `pending`, `failed_retryable`, and the active states before
/// the cutover (copying, waiting for a deploy or for the cutover, recovering, the setup phases).
/// `cutting_over`, `revert_window`, `skipping_revert` and `reverting` are never stopped: a
/// half-swapped schema is worse than a late stop.
pub const fn is_stoppable(state: ApplyState) -> bool {
    matches!(
        state,
        ApplyState::Pending
            | ApplyState::FailedRetryable
            | ApplyState::Running
            | ApplyState::RunningDegraded
            | ApplyState::Resuming
            | ApplyState::WaitingForDeploy
            | ApplyState::WaitingForCutover
            | ApplyState::Recovering
            | ApplyState::PreparingBranch
            | ApplyState::ApplyingBranchChanges
            | ApplyState::ValidatingBranch
            | ApplyState::CreatingDeployRequest
            | ApplyState::ValidatingDeployRequest
    )
}

/// True for the states a `cancel` covers: what a stop covers, and `stopped` and `paused` (a stopped
/// rollout can be cancelled).
pub const fn is_cancellable(state: ApplyState) -> bool {
    is_stoppable(state) || matches!(state, ApplyState::Stopped | ApplyState::Paused)
}

/// Where a claim that meets an operation in `state` moves it instead of taking it, given whether a
/// pending `stop` and a pending `cancel` cover it: `cancelled` when a cancel covers it
/// ([`is_cancellable`]), else `stopped` when a stop does ([`is_stoppable`]); `None` when the claim
/// may take it. A claim only meets such an operation once nobody drives it (its lease expired or was
/// released); the operation is moved in place and nothing is taken. `blockers` reads the same rule,
/// so such an operation is never reported `Claimable`.
pub const fn moved_in_place(state: ApplyState, stop: bool, cancel: bool) -> Option<ApplyState> {
    if cancel && is_cancellable(state) {
        Some(ApplyState::Cancelled)
    } else if stop && is_stoppable(state) {
        Some(ApplyState::Stopped)
    } else {
        None
    }
}

/// True for the states a `start` resumes: `stopped` and `paused`.
pub const fn is_resumable(state: ApplyState) -> bool {
    matches!(state, ApplyState::Stopped | ApplyState::Paused)
}

/// The states the store writes with the lease cleared, whoever writes them: nobody holds an
/// operation there (a claim takes it again when its turn comes).
pub const fn clears_lease(state: ApplyState) -> bool {
    matches!(
        state,
        ApplyState::Pending
            | ApplyState::Stopped
            | ApplyState::Paused
            | ApplyState::FailedRetryable
    )
}

/// Whether a worker's `failed_retryable` write at `attempt` leaves the operation retryable under its
/// apply's retry budget: `attempt` is below `max_attempts`. Otherwise the write stores `failed`
/// ("retry budget exhausted after N attempts"). The budget bounds the automatic retries only: an
/// operator's `retry` resets `attempt` to 0, and the retry claim always takes an operation at
/// attempt 0, so an operator's retry always leads to one attempt, even with `max_attempts = 0`.
pub const fn automatic_retry_left(attempt: i32, max_attempts: i32) -> bool {
    attempt < max_attempts
}

/// Where a pending request stands, given the states of the operations of its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProgress {
    /// Still to be acted on.
    Pending,
    /// Done: complete it.
    Done,
    /// Can no longer be done: fail it with this result.
    Failed(&'static str),
}

/// The result a revert or skip-revert fails with when its operation left `revert_window` another way.
pub const WINDOW_CLOSED: &str = "window closed";

/// Whether a pending request of `kind` is done, given the states of the operations of its scope (all
/// the apply's for a whole-apply request; `None` for a state this version does not know, which keeps
/// the request pending):
/// - `stop`: done once none is stoppable ([`is_stoppable`]): each is `stopped`, settled, or past
///   its cutover;
/// - `cancel`: done once none is cancellable ([`is_cancellable`]);
/// - `start`: done once none is `stopped` or `paused`;
/// - `revert`: done once `reverted`; failed ([`WINDOW_CLOSED`]) once the operation is anywhere but
///   `revert_window` or `reverting`; likewise `skip_revert` with `completed` and `skipping_revert`;
/// - `cutover`: completed by the cutover claim that cuts over what it names; done once nothing of its
///   scope is left to cut over (every operation is cutting over, past its cutover or settled: none
///   is [`is_cancellable`]), which also completes a request recorded with nothing to do;
/// - `release` and `retry` are completed when recorded.
///
/// A request is failed only when it can no longer do what it asked: a revert whose window closed.
pub fn progress(kind: ControlRequestKind, scope: &[Option<ApplyState>]) -> RequestProgress {
    let known: Option<Vec<ApplyState>> = scope.iter().copied().collect();
    let Some(states) = known else {
        return RequestProgress::Pending;
    };
    let none = |covered: fn(ApplyState) -> bool| !states.iter().any(|s| covered(*s));
    let done_when = |done: bool| {
        if done {
            RequestProgress::Done
        } else {
            RequestProgress::Pending
        }
    };
    match kind {
        ControlRequestKind::Stop => done_when(none(is_stoppable)),
        ControlRequestKind::Cancel => done_when(none(is_cancellable)),
        ControlRequestKind::Start => done_when(none(is_resumable)),
        ControlRequestKind::Revert => {
            decision(&states, ApplyState::Reverting, ApplyState::Reverted)
        }
        ControlRequestKind::SkipRevert => {
            decision(&states, ApplyState::SkippingRevert, ApplyState::Completed)
        }
        // The cutover claim completes a cutover; one whose scope has nothing left before its cutover
        // (cut over, cutting over, settled otherwise) has nothing left to do.
        ControlRequestKind::Cutover => done_when(none(is_cancellable)),
        ControlRequestKind::Release | ControlRequestKind::Retry => RequestProgress::Pending,
    }
}

/// A revert decision on one operation: done at `done`, pending in `revert_window` or `on_the_way`,
/// failed anywhere else.
fn decision(states: &[ApplyState], on_the_way: ApplyState, done: ApplyState) -> RequestProgress {
    match states {
        [state] if *state == done => RequestProgress::Done,
        [state] if *state == ApplyState::RevertWindow || *state == on_the_way => {
            RequestProgress::Pending
        }
        [_] => RequestProgress::Failed(WINDOW_CLOSED),
        // A whole-apply revert is recorded per operation; none is left pending.
        _ => RequestProgress::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::is_settled;
    use ApplyState::*;
    use ControlRequestKind as Kind;

    #[test]
    fn stop_covers_everything_before_the_cutover_and_nothing_after() {
        let covered: Vec<ApplyState> = ApplyState::ALL
            .into_iter()
            .filter(|s| is_stoppable(*s))
            .collect();
        for state in [
            CuttingOver,
            RevertWindow,
            SkippingRevert,
            Reverting,
            Stopped,
            Paused,
        ] {
            assert!(!covered.contains(&state), "{state}");
        }
        for state in ApplyState::ALL {
            if is_settled(state) {
                assert!(!is_stoppable(state) && !is_cancellable(state), "{state}");
            }
        }
        assert!(is_cancellable(Stopped) && is_cancellable(Paused) && is_cancellable(Running));
    }

    #[test]
    fn a_claim_moves_what_a_stop_or_cancel_covers_in_place_and_takes_the_rest() {
        assert_eq!(moved_in_place(Running, true, false), Some(Stopped));
        assert_eq!(
            moved_in_place(WaitingForCutover, true, false),
            Some(Stopped)
        );
        assert_eq!(moved_in_place(Running, true, true), Some(Cancelled));
        assert_eq!(moved_in_place(Stopped, false, true), Some(Cancelled));
        // A cutover in flight is never stopped or cancelled: the claim takes it over.
        for state in [CuttingOver, RevertWindow, Reverting, SkippingRevert] {
            assert_eq!(moved_in_place(state, true, true), None, "{state}");
        }
        assert_eq!(moved_in_place(Running, false, false), None);
    }

    #[test]
    fn a_stop_is_done_once_nothing_stoppable_is_left() {
        let p = |states: &[ApplyState]| {
            let scope: Vec<Option<ApplyState>> = states.iter().map(|s| Some(*s)).collect();
            progress(Kind::Stop, &scope)
        };
        assert_eq!(p(&[Stopped, Completed, CuttingOver]), RequestProgress::Done);
        assert_eq!(p(&[Stopped, Running]), RequestProgress::Pending);
        assert_eq!(p(&[]), RequestProgress::Done, "nothing to do");
        assert_eq!(
            progress(Kind::Stop, &[Some(Stopped), None]),
            RequestProgress::Pending,
            "an unknown state keeps it pending"
        );
    }

    #[test]
    fn a_revert_is_done_reverted_and_fails_when_the_window_closes() {
        let p = |kind, state| progress(kind, &[Some(state)]);
        assert_eq!(p(Kind::Revert, RevertWindow), RequestProgress::Pending);
        assert_eq!(p(Kind::Revert, Reverting), RequestProgress::Pending);
        assert_eq!(p(Kind::Revert, Reverted), RequestProgress::Done);
        assert_eq!(
            p(Kind::Revert, Completed),
            RequestProgress::Failed(WINDOW_CLOSED)
        );
        assert_eq!(
            p(Kind::SkipRevert, SkippingRevert),
            RequestProgress::Pending
        );
        assert_eq!(p(Kind::SkipRevert, Completed), RequestProgress::Done);
        assert_eq!(
            p(Kind::SkipRevert, Reverting),
            RequestProgress::Failed(WINDOW_CLOSED)
        );
    }

    #[test]
    fn start_and_cancel_complete_themselves() {
        let p = |kind, states: &[ApplyState]| {
            let scope: Vec<Option<ApplyState>> = states.iter().map(|s| Some(*s)).collect();
            progress(kind, &scope)
        };
        assert_eq!(p(Kind::Start, &[Resuming, Pending]), RequestProgress::Done);
        assert_eq!(p(Kind::Start, &[Paused]), RequestProgress::Pending);
        assert_eq!(
            p(Kind::Cancel, &[Cancelled, Completed]),
            RequestProgress::Done
        );
        assert_eq!(p(Kind::Cancel, &[Stopped]), RequestProgress::Pending);
        assert_eq!(
            p(Kind::Cutover, &[WaitingForCutover]),
            RequestProgress::Pending
        );
        for nothing_left in [
            &[Cancelled][..],
            &[CuttingOver],
            &[RevertWindow, Completed],
            &[Failed, Reverted],
        ] {
            assert_eq!(
                p(Kind::Cutover, nothing_left),
                RequestProgress::Done,
                "{nothing_left:?}"
            );
        }
        assert_eq!(
            p(Kind::Cutover, &[CuttingOver, Running]),
            RequestProgress::Pending
        );
    }
}
