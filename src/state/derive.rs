//! The apply's state, derived from its operations: one pure, total function.
//!
//! [`derive_apply_state`] is the one definition of what an apply's `state` is: every write that
//! changes an operation's state (and every control request) stores it in `applies.state` in the same
//! transaction (see `store::applies::refresh`). The words it uses:
//!
//! - **settled**: `completed`, `failed`, `cancelled`, `reverted`;
//! - **active**: [`ApplyState::is_active`];
//! - **driven**: active, except `waiting_for_cutover` and `revert_window` (parked);
//! - **failure**: an operation in `failed` or `reverted`;
//! - a failure **blocks** when some later (claim order), unsettled sibling does not let it through
//!   under *its own* `on_failure`: `halt` never does, `pause` once a release reaches the failure's
//!   sequence number ([`lets_failure_through`]), `continue` always does. A failure that blocks nobody
//!   is **passed**.

use super::{ApplyState, CutoverPolicy, FailurePolicy};

/// What the derivation needs to know about one operation. Unknown stored policies are given as the
/// strictest (`rolling`, `halt`), as the claims read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationView<'a> {
    /// The operation's state.
    pub state: ApplyState,
    /// Its cutover policy.
    pub cutover_policy: CutoverPolicy,
    /// What a failed earlier sibling means for it.
    pub on_failure: FailurePolicy,
    /// `started_at IS NOT NULL`.
    pub started: bool,
    /// The highest `releases_through` of the completed releases naming this operation or its whole
    /// apply (`None`: no release): a `pause` operation passes an earlier sibling's failure whose
    /// `failure_seq` is at most this, as the claims' failure gate lets it start.
    pub released_through: Option<i64>,
    /// While the operation is a failure, its number in its apply's failure sequence.
    pub failure_seq: Option<i64>,
    /// Its deployment, for messages.
    pub deployment: &'a str,
    /// Its error message, for messages.
    pub error_message: Option<&'a str>,
}

/// The derived state of an apply, and the error message that goes with it (`None` clears it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The apply's state.
    pub state: ApplyState,
    /// Why it failed, when it did.
    pub error_message: Option<String>,
}

impl Derived {
    fn new(state: ApplyState) -> Self {
        Derived {
            state,
            error_message: None,
        }
    }
}

/// True for the states nothing changes except an operator's retry.
pub const fn is_settled(state: ApplyState) -> bool {
    matches!(
        state,
        ApplyState::Completed | ApplyState::Failed | ApplyState::Cancelled | ApplyState::Reverted
    )
}

/// True for the active states a holder is driving: all but the parked `waiting_for_cutover` and
/// `revert_window`.
pub const fn is_driven(state: ApplyState) -> bool {
    state.is_active()
        && !matches!(
            state,
            ApplyState::WaitingForCutover | ApplyState::RevertWindow
        )
}

/// True for a failure: `failed` or `reverted` (a revert counts as a failure for the failure policies).
pub const fn is_failure(state: ApplyState) -> bool {
    matches!(state, ApplyState::Failed | ApplyState::Reverted)
}

/// Whether an operation under `on_failure`, whose releases reach `released_through`, lets through an
/// earlier sibling's failure numbered `failure_seq`: `continue` always, `halt` never, `pause` once a
/// release recorded after that failure (`released_through` ≥ `failure_seq`) names it or its apply.
/// A failure without a number is never released (fail closed).
pub const fn lets_failure_through(
    on_failure: FailurePolicy,
    released_through: Option<i64>,
    failure_seq: Option<i64>,
) -> bool {
    match on_failure {
        FailurePolicy::Continue => true,
        FailurePolicy::Halt => false,
        FailurePolicy::Pause => match (released_through, failure_seq) {
            (Some(released), Some(failure)) => released >= failure,
            _ => false,
        },
    }
}

/// Whether `later` lets the earlier sibling `failure` through under its own failure policy.
fn lets_through(later: &OperationView<'_>, failure: &OperationView<'_>) -> bool {
    lets_failure_through(
        later.on_failure,
        later.released_through,
        failure.failure_seq,
    )
}

/// The later, unsettled siblings the failure at `index` blocks.
fn blocked_by<'v, 'a>(
    operations: &'v [OperationView<'a>],
    index: usize,
) -> impl Iterator<Item = &'v OperationView<'a>> {
    operations[index + 1..]
        .iter()
        .filter(move |later| !is_settled(later.state) && !lets_through(later, &operations[index]))
}

/// The derivation after a start claim (one `pending` operation moved to `running`, and so marked
/// started) of an apply whose operations derive to `derived`, when `derived` alone decides it;
/// `None` when the operations must be read again. A claim uses it to keep the apply current
/// without reading its operations back.
///
/// - **`running` without a message stays `running`.** Such an apply has no failure and no
///   `failed_retryable`, `running_degraded`, `reverting` or `cutting_over` operation, because rules
///   4, 5, 7, 8 and 10 would have matched. Some operation is also outside W (rule 9). One more
///   `running` operation keeps all of that true and makes rule 6 fail, so rule 11 matches again.
/// - **`pending` without a message becomes `running`.** Rule 12 matched, so no operation is
///   active, started, failed, stopped, paused or parked in W, and every one is `pending` or
///   `cancelled`. Once one of them runs, rule 11 matches.
///
/// A property test checks both for every rollout of up to 8 operations it generates.
pub fn after_start(derived: &Derived) -> Option<Derived> {
    match (derived.state, &derived.error_message) {
        (ApplyState::Running | ApplyState::Pending, None) => {
            Some(Derived::new(ApplyState::Running))
        }
        _ => None,
    }
}

/// The apply's state, from its operations in claim order. The first rule that matches wins:
///
/// | # | when | state |
/// |---|---|---|
/// | 1 | no operations | `pending` |
/// | 2 | every operation `completed` | `completed` |
/// | 3 | every operation settled | `failed` if any failed (the earliest failed operation's message); else, if any reverted, `reverted` when none completed and `failed` when some did (the message names both); else `cancelled` if any cancelled; else `completed` |
/// | 4 | any `failed_retryable` | `failed_retryable` |
/// | 5 | any blocking failure | `running_degraded` while any operation is driven; else `failed` if it blocks a sibling under `halt` (halted; the blocking failure's message); else `paused` |
/// | 6 | nothing active and any `stopped` / nothing active and any `paused` | `stopped` / `paused` |
/// | 7 | any `reverting` | `reverting` |
/// | 8 | any `cutting_over` | `cutting_over` |
/// | 9 | ignoring cancelled operations and passed failures, all the rest in W = {`waiting_for_deploy`, `waiting_for_cutover`, `revert_window`, `completed`} | `waiting_for_deploy` if any, else `waiting_for_cutover` if any, else `revert_window` if any |
/// | 10 | any `running_degraded`, or any passed failure | `running_degraded` |
/// | 11 | any operation active or started | `running` |
/// | 12 | otherwise | `pending` |
///
/// Total: every input has exactly one result, and nothing is read but `operations`.
pub fn derive_apply_state(operations: &[OperationView<'_>]) -> Derived {
    use ApplyState::*;
    let any = |state: ApplyState| operations.iter().any(|op| op.state == state);
    // 1, 2
    if operations.is_empty() {
        return Derived::new(Pending);
    }
    if operations.iter().all(|op| op.state == Completed) {
        return Derived::new(Completed);
    }
    // 3
    if operations.iter().all(|op| is_settled(op.state)) {
        return settled(operations);
    }
    // 4
    if any(FailedRetryable) {
        return Derived::new(FailedRetryable);
    }
    // 5
    let blocking: Vec<usize> = (0..operations.len())
        .filter(|&i| is_failure(operations[i].state) && blocked_by(operations, i).next().is_some())
        .collect();
    if !blocking.is_empty() {
        if operations.iter().any(|op| is_driven(op.state)) {
            return Derived::new(RunningDegraded);
        }
        let halted = blocking.iter().find(|&&i| {
            blocked_by(operations, i).any(|later| later.on_failure == FailurePolicy::Halt)
        });
        return match halted {
            Some(&i) => Derived {
                state: Failed,
                error_message: Some(halt_message(&operations[i])),
            },
            None => Derived::new(Paused),
        };
    }
    // 6
    let nothing_active = !operations.iter().any(|op| op.state.is_active());
    if nothing_active && any(Stopped) {
        return Derived::new(Stopped);
    }
    if nothing_active && any(Paused) {
        return Derived::new(Paused);
    }
    // 7, 8
    if any(Reverting) {
        return Derived::new(Reverting);
    }
    if any(CuttingOver) {
        return Derived::new(CuttingOver);
    }
    // 9: every failure is passed here (rule 5 took the blocking ones).
    let rest: Vec<ApplyState> = operations
        .iter()
        .map(|op| op.state)
        .filter(|&state| state != Cancelled && !is_failure(state))
        .collect();
    let in_w = |state: &ApplyState| {
        matches!(
            state,
            WaitingForDeploy | WaitingForCutover | RevertWindow | Completed
        )
    };
    if rest.iter().all(in_w) {
        for parked in [WaitingForDeploy, WaitingForCutover, RevertWindow] {
            if rest.contains(&parked) {
                return Derived::new(parked);
            }
        }
    }
    // 10
    if any(RunningDegraded) || operations.iter().any(|op| is_failure(op.state)) {
        return Derived::new(RunningDegraded);
    }
    // 11, 12
    if operations
        .iter()
        .any(|op| op.state.is_active() || op.started)
    {
        return Derived::new(Running);
    }
    Derived::new(Pending)
}

/// Rule 3: every operation is settled and not all completed.
fn settled(operations: &[OperationView<'_>]) -> Derived {
    use ApplyState::*;
    if let Some(failed) = operations.iter().find(|op| op.state == Failed) {
        return Derived {
            state: Failed,
            error_message: Some(match failed.error_message {
                Some(message) => format!("{}: {message}", failed.deployment),
                None => format!("{} failed", failed.deployment),
            }),
        };
    }
    let deployments = |state: ApplyState| {
        operations
            .iter()
            .filter(|op| op.state == state)
            .map(|op| op.deployment)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if operations.iter().any(|op| op.state == Reverted) {
        if operations.iter().any(|op| op.state == Completed) {
            return Derived {
                state: Failed,
                error_message: Some(format!(
                    "the change is live on {} and reverted on {}",
                    deployments(Completed),
                    deployments(Reverted)
                )),
            };
        }
        return Derived::new(Reverted);
    }
    if operations.iter().any(|op| op.state == Cancelled) {
        return Derived::new(Cancelled);
    }
    Derived::new(Completed)
}

/// Rule 5's message for a halted apply.
fn halt_message(failure: &OperationView<'_>) -> String {
    match failure.error_message {
        Some(message) => format!(
            "halted: {} {}: {message}",
            failure.deployment, failure.state
        ),
        None => format!("halted: {} {}", failure.deployment, failure.state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApplyState::*;
    use CutoverPolicy::{Barrier, Parallel, Rolling};
    use FailurePolicy::{Continue, Halt, Pause};

    const DEPLOYMENTS: [&str; 8] = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"];

    /// An operation in `state`, `rolling`/`halt`, started unless pending, no release.
    fn op(state: ApplyState) -> OperationView<'static> {
        OperationView {
            state,
            cutover_policy: Rolling,
            on_failure: Halt,
            started: state != Pending,
            released_through: None,
            failure_seq: is_failure(state).then_some(1),
            deployment: "d",
            error_message: (state == Failed).then_some("boom"),
        }
    }

    fn with(
        state: ApplyState,
        cutover: CutoverPolicy,
        on_failure: FailurePolicy,
    ) -> OperationView<'static> {
        OperationView {
            cutover_policy: cutover,
            on_failure,
            ..op(state)
        }
    }

    /// Names the deployments `d0`, `d1`, … in claim order.
    fn rollout(mut ops: Vec<OperationView<'static>>) -> Vec<OperationView<'static>> {
        for (i, op) in ops.iter_mut().enumerate() {
            op.deployment = DEPLOYMENTS[i];
        }
        ops
    }

    fn state_of(ops: Vec<OperationView<'static>>) -> ApplyState {
        derive_apply_state(&rollout(ops)).state
    }

    #[test]
    fn rule_1_no_operations_is_pending() {
        assert_eq!(derive_apply_state(&[]), Derived::new(Pending));
    }

    #[test]
    fn a_single_operation_gives_its_own_state_through_the_rules() {
        let expected = |state: ApplyState| match state {
            Pending => Pending,                                           // 12
            Completed => Completed,                                       // 2
            Failed | Cancelled | Reverted => state,                       // 3
            FailedRetryable => FailedRetryable,                           // 4
            Stopped | Paused => state,                                    // 6
            Reverting | CuttingOver => state,                             // 7, 8
            WaitingForDeploy | WaitingForCutover | RevertWindow => state, // 9
            RunningDegraded => RunningDegraded,                           // 10
            _ => Running, // 11: the other active states
        };
        for state in ApplyState::ALL {
            assert_eq!(state_of(vec![op(state)]), expected(state), "{state}");
        }
    }

    #[test]
    fn rule_2_every_operation_completed() {
        assert_eq!(state_of(vec![op(Completed), op(Completed)]), Completed);
    }

    #[test]
    fn rule_3_every_operation_settled() {
        let failed = derive_apply_state(&rollout(vec![op(Completed), op(Failed), op(Failed)]));
        assert_eq!(failed.state, Failed);
        assert_eq!(
            failed.error_message.as_deref(),
            Some("d1: boom"),
            "the earliest failure's"
        );
        assert_eq!(state_of(vec![op(Completed), op(Cancelled)]), Cancelled);
        assert_eq!(state_of(vec![op(Reverted), op(Cancelled)]), Reverted);
        assert_eq!(state_of(vec![op(Reverted), op(Reverted)]), Reverted);
        assert_eq!(state_of(vec![op(Failed), op(Reverted)]), Failed);
        let mixed = derive_apply_state(&rollout(vec![op(Reverted), op(Completed)]));
        assert_eq!(mixed.state, Failed);
        assert_eq!(
            mixed.error_message.as_deref(),
            Some("the change is live on d1 and reverted on d0")
        );
    }

    #[test]
    fn rule_4_a_failed_retryable_operation_wins_over_everything_unsettled() {
        for other in ApplyState::ALL {
            assert_eq!(
                state_of(vec![op(FailedRetryable), op(other)]),
                FailedRetryable,
                "{other}"
            );
            assert_eq!(
                state_of(vec![op(other), op(FailedRetryable)]),
                FailedRetryable,
                "{other}"
            );
        }
    }

    #[test]
    fn rule_5_a_blocking_failure() {
        // Degraded while anything is driven.
        for driven in ApplyState::ALL.into_iter().filter(|s| is_driven(*s)) {
            assert_eq!(
                state_of(vec![op(Failed), op(driven)]),
                RunningDegraded,
                "{driven}"
            );
        }
        let halted = derive_apply_state(&rollout(vec![
            op(Failed),
            with(WaitingForCutover, Barrier, Halt),
        ]));
        assert_eq!(halted.state, Failed);
        assert_eq!(
            halted.error_message.as_deref(),
            Some("halted: d0 failed: boom")
        );
        assert_eq!(
            state_of(vec![op(Failed), with(Pending, Rolling, Pause)]),
            Paused,
            "every blocked sibling waits for a release"
        );
        assert_eq!(
            state_of(vec![
                op(Failed),
                with(Pending, Rolling, Halt),
                with(Pending, Rolling, Pause)
            ]),
            Failed
        );
        assert_eq!(
            state_of(vec![op(Reverted), with(Pending, Parallel, Halt)]),
            Failed,
            "a revert is a failure"
        );
        // A failure blocks only later siblings.
        assert_eq!(
            state_of(vec![with(Pending, Rolling, Halt), op(Failed)]),
            RunningDegraded
        );
    }

    #[test]
    fn rule_5_a_release_lets_pause_siblings_through() {
        let released = |view: OperationView<'static>| OperationView {
            released_through: Some(1),
            ..view
        };
        assert_eq!(
            state_of(vec![op(Failed), released(with(Pending, Rolling, Pause))]),
            RunningDegraded
        );
        assert_eq!(
            state_of(vec![released(op(Failed)), with(Pending, Rolling, Pause)]),
            Paused,
            "a release must name the waiting operation or the whole apply"
        );
        assert_eq!(
            state_of(vec![op(Failed), released(with(Pending, Rolling, Halt))]),
            Failed,
            "halt ignores it"
        );
    }

    #[test]
    fn rule_5_a_release_lets_through_only_the_failures_before_it() {
        let second_failure = OperationView {
            failure_seq: Some(2),
            ..op(Failed)
        };
        let released_first = OperationView {
            released_through: Some(1),
            ..with(Pending, Parallel, Pause)
        };
        assert_eq!(
            state_of(vec![op(Failed), second_failure, released_first]),
            Paused,
            "failure 2 came after the release: the rollout pauses again"
        );
        let released_both = OperationView {
            released_through: Some(2),
            ..released_first
        };
        assert_eq!(
            state_of(vec![op(Failed), second_failure, released_both]),
            RunningDegraded,
            "one release lets every failure before it through"
        );
        assert!(
            !lets_failure_through(Pause, Some(5), None),
            "unnumbered: closed"
        );
        assert!(!lets_failure_through(Halt, Some(5), Some(1)));
        assert!(lets_failure_through(Continue, None, None));
    }

    #[test]
    fn rule_6_nothing_active_and_stopped_or_paused() {
        assert_eq!(
            state_of(vec![op(Stopped), with(Pending, Rolling, Halt)]),
            Stopped
        );
        assert_eq!(state_of(vec![op(Stopped), op(Stopped)]), Stopped);
        assert_eq!(state_of(vec![op(Paused), op(Stopped)]), Stopped);
        assert_eq!(state_of(vec![op(Completed), op(Paused)]), Paused);
        assert_eq!(
            state_of(vec![op(Stopped), op(Running)]),
            Running,
            "something is active"
        );
    }

    #[test]
    fn rules_7_and_8_reverting_then_cutting_over() {
        assert_eq!(state_of(vec![op(CuttingOver), op(Reverting)]), Reverting);
        assert_eq!(
            state_of(vec![op(Reverting), op(WaitingForCutover)]),
            Reverting
        );
        assert_eq!(
            state_of(vec![op(WaitingForCutover), op(CuttingOver)]),
            CuttingOver
        );
        assert_eq!(state_of(vec![op(CuttingOver), op(Running)]), CuttingOver);
    }

    #[test]
    fn rule_9_every_operation_parked_or_done() {
        assert_eq!(
            state_of(vec![op(RevertWindow), op(WaitingForCutover)]),
            WaitingForCutover
        );
        assert_eq!(
            state_of(vec![op(WaitingForDeploy), op(WaitingForCutover)]),
            WaitingForDeploy
        );
        assert_eq!(
            state_of(vec![op(Completed), op(RevertWindow)]),
            RevertWindow
        );
        assert_eq!(
            state_of(vec![op(Cancelled), op(WaitingForCutover)]),
            WaitingForCutover
        );
        assert_eq!(
            state_of(vec![op(Failed), with(WaitingForCutover, Barrier, Continue)]),
            WaitingForCutover,
            "a passed failure is ignored"
        );
        assert_eq!(
            state_of(vec![op(WaitingForCutover), op(Pending)]),
            Running,
            "not all parked"
        );
    }

    #[test]
    fn rule_10_degraded_or_a_passed_failure() {
        assert_eq!(
            state_of(vec![op(RunningDegraded), op(Running)]),
            RunningDegraded
        );
        assert_eq!(
            state_of(vec![op(Failed), with(Pending, Rolling, Continue)]),
            RunningDegraded
        );
    }

    #[test]
    fn rules_11_and_12_running_or_pending() {
        assert_eq!(state_of(vec![op(Running), op(Pending)]), Running);
        assert_eq!(
            state_of(vec![op(Completed), op(Pending)]),
            Running,
            "started"
        );
        let restarted = OperationView {
            started: true,
            ..op(Pending)
        };
        assert_eq!(state_of(vec![restarted, op(Pending)]), Running);
        assert_eq!(state_of(vec![op(Pending), op(Pending)]), Pending);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn view() -> impl Strategy<Value = OperationView<'static>> {
            (
                0..ApplyState::ALL.len(),
                0..CutoverPolicy::ALL.len(),
                0..FailurePolicy::ALL.len(),
                any::<bool>(),
                prop::option::of(0..4i64),
                1..4i64,
            )
                .prop_map(|(state, cutover, failure, started, released, seq)| {
                    let state = ApplyState::ALL[state];
                    OperationView {
                        state,
                        cutover_policy: CutoverPolicy::ALL[cutover],
                        on_failure: FailurePolicy::ALL[failure],
                        // Anything past pending has started.
                        started: started || !matches!(state, Pending),
                        released_through: released,
                        failure_seq: is_failure(state).then_some(seq),
                        deployment: "d",
                        error_message: None,
                    }
                })
        }

        /// A plain pending operation: `rolling`, `halt`, never released.
        const PLAIN: OperationView<'static> = OperationView {
            state: Pending,
            cutover_policy: Rolling,
            on_failure: FailurePolicy::Halt,
            started: false,
            released_through: None,
            failure_seq: None,
            deployment: "d",
            error_message: None,
        };

        /// An operation in a state a `running` apply without a message can hold (no failure, no
        /// `failed_retryable`, `running_degraded`, `reverting` or `cutting_over`), so that
        /// `after_start` often decides a generated rollout.
        fn quiet_view() -> impl Strategy<Value = OperationView<'static>> {
            let quiet: Vec<ApplyState> = ApplyState::ALL
                .into_iter()
                .filter(|&s| {
                    !is_failure(s)
                        && !matches!(
                            s,
                            FailedRetryable | RunningDegraded | Reverting | CuttingOver
                        )
                })
                .collect();
            (view(), 0..quiet.len()).prop_map(move |(view, state)| {
                let state = quiet[state];
                OperationView {
                    state,
                    started: view.started || state != Pending,
                    failure_seq: None,
                    ..view
                }
            })
        }

        /// Whether a start claim would take operation `i` now, by the rules the derivation assumes:
        /// its start order (rolling: earlier siblings done; barrier: at or past the barrier;
        /// parallel: none), a failure being judged by its failure policy instead.
        fn startable(ops: &[OperationView<'_>], i: usize) -> bool {
            let me = &ops[i];
            me.state == Pending
                && ops[..i].iter().all(|earlier| {
                    if is_failure(earlier.state) {
                        return lets_through(me, earlier);
                    }
                    match me.cutover_policy {
                        Parallel => true,
                        Barrier => matches!(
                            earlier.state,
                            WaitingForCutover | CuttingOver | RevertWindow | Completed | Cancelled
                        ),
                        Rolling => matches!(earlier.state, Completed | Cancelled),
                    }
                })
        }

        proptest! {
            #[test]
            fn invariants_hold_for_any_rollout(ops in prop::collection::vec(view(), 1..8)) {
                let state = derive_apply_state(&ops).state;
                let all = |f: fn(ApplyState) -> bool| ops.iter().all(|op| f(op.state));
                prop_assert_eq!(state == Completed, all(|s| s == Completed));
                let finished = matches!(state, Completed | Failed | Cancelled | Reverted);
                if all(is_settled) {
                    prop_assert!(finished, "{:?}", state);
                }
                if ops.iter().any(|op| is_driven(op.state)) {
                    prop_assert!(!finished, "{:?}", state);
                }
                if matches!(state, Running | RunningDegraded) {
                    // Driven, parked under a holder (its lease moves to a claim when free), or
                    // startable now.
                    let moving = (0..ops.len())
                        .any(|i| ops[i].state.is_active() || startable(&ops, i));
                    prop_assert!(moving, "{:?}", ops);
                }
                if ops.iter().any(|op| op.state.is_active() || op.started) {
                    prop_assert_ne!(state, Pending);
                }
            }

            #[test]
            fn a_start_makes_of_an_apply_what_after_start_says(
                quiet in prop::collection::vec(quiet_view(), 0..6),
                with_running in any::<bool>(),
                running_at in any::<prop::sample::Index>(),
                pending_at in any::<prop::sample::Index>(),
                pick in any::<prop::sample::Index>(),
            ) {
                // Half the time a running operation (so the apply is then `running`), and always
                // a pending one (the one a start would take), anywhere in claim order.
                let mut ops = quiet;
                if with_running {
                    let running = OperationView {
                        state: Running,
                        started: true,
                        ..ops.first().copied().unwrap_or(PLAIN)
                    };
                    ops.insert(running_at.index(ops.len() + 1), running);
                }
                let pending = OperationView {
                    state: Pending,
                    started: false,
                    ..PLAIN
                };
                ops.insert(pending_at.index(ops.len() + 1), pending);
                let before = derive_apply_state(&ops);
                let pending: Vec<usize> =
                    (0..ops.len()).filter(|&i| ops[i].state == Pending).collect();
                let Some(expected) = after_start(&before) else {
                    return Err(TestCaseError::reject("after_start cannot tell"));
                };
                let mut after = ops.clone();
                let i = pending[pick.index(pending.len())];
                after[i] = OperationView {
                    state: Running,
                    started: true,
                    ..after[i]
                };
                prop_assert_eq!(derive_apply_state(&after), expected, "{:?}", ops);
            }
        }
    }
}
