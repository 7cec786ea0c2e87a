//! The claim rules, decided once per write: which operations of an apply each claim may take, what
//! it does with them, and why the others wait. A pure function of the apply's rows ([`decide`]); the
//! store runs it in the unit of work that writes the apply, under the apply's lock, and stores the
//! result on the operations (`copy_claim`, `cutover_claim`), so a claim's reads test only the row:
//! the stored decision, the lease's expiry and the claim's scope. What depends on time alone (a lease
//! expiring) is not part of the decision: a decision holds "once the lease is free".
//!
//! The rules keep their names, as parts of [`decide`]: the stop gate, the failure gate, the start
//! order (the rolling gate, the barrier gate), the concurrency cap, the retry budget, the cutover
//! order, who owns the cutover, and the claim arms built from them (start, resume, retry, recovery,
//! automatic and operator-directed cutover, revert, skip revert). `blockers` reads the same decision
//! and its reasons.
//!
//! **The concurrency cap counts states, not leases.** An operation in a driven state counts against
//! its apply's `max_concurrency` whether or not its lease has expired, until it is recovered (it
//! stays driven) or leaves the driven states: a holder whose lease lapsed may still be working, so
//! starting another operation in its place could exceed the cap the operator set.

use super::{
    cutover_order_passes, is_driven, is_failure, is_settled, lets_failure_through, moved_in_place,
    start_order_passes, ApplyState, ClaimAction, CutoverPolicy, FailurePolicy,
};

/// What the rules read of an apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyRules {
    /// `defer_cutover`: every cutover waits for an operator's `cutover` request.
    pub defer_cutover: bool,
    /// `max_concurrency` (`None`: no cap).
    pub max_concurrency: Option<i64>,
    /// `max_attempts`, the retry budget.
    pub max_attempts: i32,
    /// A pending `cutover` request names the whole apply.
    pub cutover_requested: bool,
}

/// The pending control requests that cover one operation: those naming it, and those naming its
/// whole apply (a `cutover` only when it names the operation: a whole-apply one is
/// [`ApplyRules::cutover_requested`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingFor {
    /// A pending `stop`.
    pub stop: bool,
    /// A pending `cancel`.
    pub cancel: bool,
    /// A pending `start`.
    pub start: bool,
    /// A pending `revert`.
    pub revert: bool,
    /// A pending `skip_revert`.
    pub skip_revert: bool,
    /// A pending `cutover` naming this operation.
    pub cutover: bool,
    /// A pending request of a kind this version does not know: it holds starts back like a stop
    /// (fail closed), and moves nothing in place.
    pub unknown: bool,
}

/// What the rules read of one operation. `None` for a stored value this version does not know: such
/// an operation is never claimed, and an unknown sibling state blocks the order gates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationRules {
    /// Its state.
    pub state: Option<ApplyState>,
    /// Its cutover policy.
    pub cutover_policy: Option<CutoverPolicy>,
    /// Its failure policy.
    pub on_failure: Option<FailurePolicy>,
    /// It was started before (`started_at` is set).
    pub started: bool,
    /// Its attempt number.
    pub attempt: i32,
    /// Its number in the apply's failure sequence, when it is a failure.
    pub failure_seq: Option<i64>,
    /// The highest `releases_through` of the completed releases naming it or its apply.
    pub released_through: Option<i64>,
    /// The pending requests that cover it.
    pub pending: PendingFor,
}

/// Why no claim takes an operation (its lease aside). Sibling references are indexes into the
/// operations given to [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A pending `stop` (or a request of an unknown kind) holds it back.
    StopPending,
    /// A pending `cancel` holds it back.
    CancelPending,
    /// `stopped` or `paused` with no pending `start`.
    AwaitingStart,
    /// An earlier failure its `halt` policy does not let through.
    HaltedBy(usize),
    /// An earlier failure its `pause` policy waits on a `release` for.
    PausedUntilRelease(usize),
    /// Its start order waits for this earlier sibling.
    WaitingForSibling(usize),
    /// Its apply defers cutover, and no `cutover` request names it or the apply.
    AwaitingOperatorCutover,
    /// Its cutover order waits for this earlier sibling.
    WaitingForCutoverOrder(usize),
    /// Its apply's `max_concurrency` operations are already driven.
    ConcurrencyCap(i64),
    /// `failed_retryable` with no attempt left.
    RetryBudgetExhausted,
    /// No claim arm takes an operation in this state with these values (settled, parked without a
    /// reason above, or holding a value this version does not know).
    NoClaimArm,
}

/// The decision for one operation: what each claim does with it once its lease is free (`None`:
/// that claim never takes it), and, when neither takes it, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What the copy claim does ([`ClaimAction::Stop`] / [`ClaimAction::Cancel`]: moves it in place).
    pub copy: Option<ClaimAction>,
    /// What the cutover claim does.
    pub cutover: Option<ClaimAction>,
    /// Why it waits, when neither claim takes it.
    pub wait: Option<Wait>,
}

impl Decision {
    fn waits(wait: Wait) -> Self {
        Decision {
            copy: None,
            cutover: None,
            wait: Some(wait),
        }
    }
}

/// The claim rules for every operation of an apply, given in claim order (`created_at`, `id`).
pub fn decide(apply: &ApplyRules, operations: &[OperationRules]) -> Vec<Decision> {
    let driven = operations
        .iter()
        .filter(|op| op.state.is_some_and(is_driven))
        .count() as i64;
    (0..operations.len())
        .map(|index| decide_one(apply, operations, index, driven))
        .collect()
}

/// **The failure gate** of operation `index` (in claim order): the first earlier failure (`failed`,
/// `reverted`) its failure policy does not let through ([`lets_failure_through`]), under every
/// cutover policy; `None` when the gate is open. An unknown failure policy reads as `halt`.
pub fn blocking_failure(operations: &[OperationRules], index: usize) -> Option<usize> {
    let op = &operations[index];
    let policy = op.on_failure.unwrap_or(FailurePolicy::Halt);
    operations[..index].iter().position(|earlier| {
        earlier.state.is_some_and(is_failure)
            && !lets_failure_through(policy, op.released_through, earlier.failure_seq)
    })
}

/// **The cutover belongs to the cutover claim**: the apply defers cutovers (then every operation
/// waits at `waiting_for_cutover` for an operator's request), or the operation is `barrier` or
/// `parallel` in an apply of more than one operation. Otherwise (`rolling`, or a lone operation of
/// an apply that does not defer) its holder cuts it over itself, and the copy claim recovers it.
pub const fn cutover_claimed(
    defer_cutover: bool,
    policy: CutoverPolicy,
    operations: usize,
) -> bool {
    defer_cutover
        || (matches!(policy, CutoverPolicy::Barrier | CutoverPolicy::Parallel) && operations > 1)
}

/// The gates of operation `index`, each a named rule.
struct Gates<'a> {
    apply: &'a ApplyRules,
    operations: &'a [OperationRules],
    index: usize,
    driven: i64,
}

impl Gates<'_> {
    fn op(&self) -> &OperationRules {
        &self.operations[self.index]
    }

    fn earlier(&self) -> &[OperationRules] {
        &self.operations[..self.index]
    }

    /// **The stop gate**: no pending `stop`, `cancel`, nor a request of a kind this version does not
    /// know.
    fn stop_gate(&self) -> bool {
        let p = self.op().pending;
        !(p.stop || p.cancel || p.unknown)
    }

    /// Which request holds a start back: a cancel, else a stop (or an unknown kind).
    fn stopped_by(&self) -> Wait {
        if self.op().pending.cancel {
            Wait::CancelPending
        } else {
            Wait::StopPending
        }
    }

    fn blocking_failure(&self) -> Option<usize> {
        blocking_failure(self.operations, self.index)
    }

    fn failure_wait(&self, failed: usize) -> Wait {
        match self.op().on_failure {
            Some(FailurePolicy::Pause) => Wait::PausedUntilRelease(failed),
            _ => Wait::HaltedBy(failed),
        }
    }

    /// **The start order** (the rolling gate, the barrier gate, none for `parallel`): the first
    /// earlier sibling it waits for. An unknown sibling state blocks.
    fn start_order_blocker(&self) -> Option<usize> {
        let policy = self.op().cutover_policy.unwrap_or(CutoverPolicy::Rolling);
        self.earlier()
            .iter()
            .position(|earlier| !earlier.state.is_some_and(|s| start_order_passes(policy, s)))
    }

    /// **The cutover order**: the first earlier sibling that is not `completed`, `cancelled` or a
    /// failure.
    fn cutover_order_blocker(&self) -> Option<usize> {
        self.earlier()
            .iter()
            .position(|earlier| !earlier.state.is_some_and(cutover_order_passes))
    }

    /// **The concurrency cap**: no `max_concurrency`, or fewer driven operations than that.
    fn within_cap(&self) -> bool {
        self.apply
            .max_concurrency
            .is_none_or(|cap| cap > self.driven)
    }

    fn cap_wait(&self) -> Wait {
        Wait::ConcurrencyCap(self.apply.max_concurrency.unwrap_or_default())
    }

    /// **The retry budget**: `attempt` below `max_attempts`, or 0 (an operator's retry).
    fn budget_left(&self) -> bool {
        let op = self.op();
        op.attempt == 0 || self.apply.max_attempts > op.attempt
    }

    fn cutover_owned(&self) -> bool {
        let policy = self.op().cutover_policy.unwrap_or(CutoverPolicy::Rolling);
        cutover_claimed(self.apply.defer_cutover, policy, self.operations.len())
    }

    /// A pending `revert` or `skip_revert` covers it.
    fn revert_decision(&self) -> bool {
        let p = self.op().pending;
        p.revert || p.skip_revert
    }

    /// **Recovery** (copy claim): an active state but `waiting_for_cutover` and `revert_window`;
    /// `revert_window` with no revert decision pending; `waiting_for_cutover` whose cutover the copy
    /// claim owns.
    fn recovery(&self, state: ApplyState) -> bool {
        match state {
            ApplyState::RevertWindow => !self.revert_decision(),
            ApplyState::WaitingForCutover => !self.cutover_owned(),
            _ => state.is_active(),
        }
    }

    /// **Start**, **resume** and **retry** (copy claim), within the cap: which applies.
    fn driving(&self, state: ApplyState) -> Option<ClaimAction> {
        let op = self.op();
        let action = match state {
            ApplyState::Stopped | ApplyState::Paused if op.started && op.pending.start => {
                ClaimAction::Resume
            }
            ApplyState::Pending
                if self.stop_gate()
                    && self.start_order_blocker().is_none()
                    && self.blocking_failure().is_none() =>
            {
                ClaimAction::Start
            }
            ApplyState::FailedRetryable if self.stop_gate() && self.budget_left() => {
                ClaimAction::Retry
            }
            _ => return None,
        };
        self.within_cap().then_some(action)
    }

    /// **Automatic cutover** (the apply does not defer cutovers): the cutover order and the failure
    /// gate.
    fn automatic_cutover(&self) -> bool {
        !self.apply.defer_cutover
            && self.cutover_order_blocker().is_none()
            && self.blocking_failure().is_none()
    }

    /// **Operator-directed cutover** (the apply defers cutovers): a request naming the operation, or
    /// one naming the apply with the automatic order and failure gate.
    fn directed_cutover(&self) -> bool {
        self.apply.defer_cutover
            && (self.op().pending.cutover
                || (self.apply.cutover_requested
                    && self.cutover_order_blocker().is_none()
                    && self.blocking_failure().is_none()))
    }

    /// What the cutover claim does: cutover, recovery of `cutting_over` / `revert_window` whose
    /// cutover it owns, the revert arms (any policy), a stop in place of a waiting operation it
    /// owns.
    fn cutover_claim(&self, state: ApplyState) -> Option<ClaimAction> {
        let p = self.op().pending;
        let owned = self.cutover_owned();
        match state {
            ApplyState::WaitingForCutover if owned => {
                if self.stop_gate() && (self.automatic_cutover() || self.directed_cutover()) {
                    Some(ClaimAction::Cutover)
                } else if p.stop || p.cancel {
                    Some(ClaimAction::Recover) // moved in place: see `in_place`
                } else {
                    None
                }
            }
            ApplyState::CuttingOver if owned => Some(ClaimAction::Recover),
            ApplyState::RevertWindow if p.revert => Some(ClaimAction::Revert),
            ApplyState::RevertWindow if p.skip_revert => Some(ClaimAction::SkipRevert),
            ApplyState::RevertWindow if owned => Some(ClaimAction::Recover),
            _ => None,
        }
    }

    /// `action`, or the move in place a pending stop or cancel makes of it instead
    /// ([`moved_in_place`]).
    fn in_place(&self, state: ApplyState, action: ClaimAction) -> ClaimAction {
        let p = self.op().pending;
        match moved_in_place(state, p.stop, p.cancel) {
            Some(ApplyState::Cancelled) => ClaimAction::Cancel,
            Some(_) => ClaimAction::Stop,
            None => action,
        }
    }

    /// Why neither claim takes it: the first failing gate of its arm, in a fixed order.
    fn wait(&self, state: ApplyState) -> Wait {
        let op = self.op();
        match state {
            ApplyState::Pending => {
                if !self.stop_gate() {
                    self.stopped_by()
                } else if let Some(failed) = self.blocking_failure() {
                    self.failure_wait(failed)
                } else if let Some(sibling) = self.start_order_blocker() {
                    Wait::WaitingForSibling(sibling)
                } else if !self.within_cap() {
                    self.cap_wait()
                } else {
                    Wait::NoClaimArm
                }
            }
            ApplyState::Stopped | ApplyState::Paused if !op.pending.start => Wait::AwaitingStart,
            ApplyState::Stopped | ApplyState::Paused if !self.within_cap() => self.cap_wait(),
            ApplyState::FailedRetryable => {
                if !self.stop_gate() {
                    self.stopped_by()
                } else if !self.within_cap() {
                    self.cap_wait()
                } else if !self.budget_left() {
                    Wait::RetryBudgetExhausted
                } else {
                    Wait::NoClaimArm
                }
            }
            ApplyState::WaitingForCutover if self.cutover_owned() => {
                if !self.stop_gate() {
                    self.stopped_by()
                } else if self.apply.defer_cutover
                    && !op.pending.cutover
                    && !self.apply.cutover_requested
                {
                    Wait::AwaitingOperatorCutover
                } else if let Some(failed) = self.blocking_failure() {
                    self.failure_wait(failed)
                } else if let Some(sibling) = self.cutover_order_blocker() {
                    Wait::WaitingForCutoverOrder(sibling)
                } else {
                    Wait::NoClaimArm
                }
            }
            _ => Wait::NoClaimArm,
        }
    }
}

fn decide_one(
    apply: &ApplyRules,
    operations: &[OperationRules],
    index: usize,
    driven: i64,
) -> Decision {
    let op = &operations[index];
    // A row holding a value this version does not know is never claimed: it could not be handed out
    // typed.
    let (Some(state), Some(_), Some(_)) = (op.state, op.cutover_policy, op.on_failure) else {
        return Decision::waits(Wait::NoClaimArm);
    };
    if is_settled(state) {
        return Decision::waits(Wait::NoClaimArm);
    }
    let gates = Gates {
        apply,
        operations,
        index,
        driven,
    };
    let copy = if gates.recovery(state) {
        Some(ClaimAction::Recover)
    } else {
        gates.driving(state)
    }
    .map(|action| gates.in_place(state, action));
    let cutover = gates
        .cutover_claim(state)
        .map(|action| gates.in_place(state, action));
    let wait = (copy.is_none() && cutover.is_none()).then(|| gates.wait(state));
    Decision {
        copy,
        cutover,
        wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(state: ApplyState, policy: CutoverPolicy) -> OperationRules {
        OperationRules {
            state: Some(state),
            cutover_policy: Some(policy),
            on_failure: Some(FailurePolicy::Halt),
            started: state != ApplyState::Pending,
            ..OperationRules::default()
        }
    }

    fn apply() -> ApplyRules {
        ApplyRules {
            max_attempts: 3,
            ..ApplyRules::default()
        }
    }

    #[test]
    fn the_rolling_gate_lets_the_first_pending_operation_start_and_holds_the_next() {
        let ops = [
            op(ApplyState::Pending, CutoverPolicy::Rolling),
            op(ApplyState::Pending, CutoverPolicy::Rolling),
        ];
        let decided = decide(&apply(), &ops);
        assert_eq!(decided[0].copy, Some(ClaimAction::Start));
        assert_eq!(decided[1].copy, None);
        assert_eq!(decided[1].wait, Some(Wait::WaitingForSibling(0)));
    }

    #[test]
    fn a_driven_operation_counts_against_the_cap_whatever_its_lease() {
        let ops = [
            op(ApplyState::Running, CutoverPolicy::Parallel),
            op(ApplyState::Pending, CutoverPolicy::Parallel),
        ];
        let capped = ApplyRules {
            max_concurrency: Some(1),
            ..apply()
        };
        let decided = decide(&capped, &ops);
        assert_eq!(decided[0].copy, Some(ClaimAction::Recover));
        assert_eq!(decided[1].wait, Some(Wait::ConcurrencyCap(1)));
    }

    #[test]
    fn a_covered_active_operation_is_moved_in_place_by_the_claim_that_meets_it() {
        let mut running = op(ApplyState::Running, CutoverPolicy::Rolling);
        running.pending.cancel = true;
        let decided = decide(&apply(), &[running]);
        assert_eq!(decided[0].copy, Some(ClaimAction::Cancel));
        let mut waiting = op(ApplyState::WaitingForCutover, CutoverPolicy::Barrier);
        waiting.pending.stop = true;
        let other = op(ApplyState::Running, CutoverPolicy::Barrier);
        let decided = decide(&apply(), &[waiting, other]);
        assert_eq!(decided[0].copy, None);
        assert_eq!(decided[0].cutover, Some(ClaimAction::Stop));
    }

    #[test]
    fn an_owned_cutting_over_operation_is_recovered_by_either_claim() {
        let ops = [
            op(ApplyState::CuttingOver, CutoverPolicy::Barrier),
            op(ApplyState::WaitingForCutover, CutoverPolicy::Barrier),
        ];
        let decided = decide(&apply(), &ops);
        assert_eq!(decided[0].copy, Some(ClaimAction::Recover));
        assert_eq!(decided[0].cutover, Some(ClaimAction::Recover));
        assert_eq!(decided[1].wait, Some(Wait::WaitingForCutoverOrder(0)));
    }

    #[test]
    fn unknown_values_are_never_claimed_and_an_unknown_sibling_blocks_the_order() {
        let mut unknown = op(ApplyState::Pending, CutoverPolicy::Rolling);
        unknown.state = None;
        let ops = [unknown, op(ApplyState::Pending, CutoverPolicy::Barrier)];
        let decided = decide(&apply(), &ops);
        assert_eq!(decided[0], Decision::waits(Wait::NoClaimArm));
        assert_eq!(decided[1].wait, Some(Wait::WaitingForSibling(0)));
    }

    #[test]
    fn the_retry_budget_allows_an_operators_retry_at_attempt_zero() {
        let mut retry = op(ApplyState::FailedRetryable, CutoverPolicy::Rolling);
        let none_left = ApplyRules {
            max_attempts: 0,
            ..apply()
        };
        assert_eq!(
            decide(&none_left, &[retry])[0].copy,
            Some(ClaimAction::Retry)
        );
        retry.attempt = 1;
        assert_eq!(
            decide(&none_left, &[retry])[0].wait,
            Some(Wait::RetryBudgetExhausted)
        );
    }
}
