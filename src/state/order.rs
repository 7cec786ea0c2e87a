//! The sibling order, as pure functions of an earlier sibling's state: what lets a later operation
//! start or cut over. The claims' gates ([`crate::store::claims`]) and `blockers` are built from these,
//! so the SQL and the explanation cannot disagree.
//!
//! A `cancelled` earlier sibling never holds anyone back, under any policy. A failure (`failed` or
//! `reverted`) passes the order gates too: whether it holds a later operation back is the failure
//! gate's business ([`super::FailurePolicy`]), under every cutover policy, `parallel` included.

use super::{is_failure, ApplyState, CutoverPolicy};

/// True when an earlier sibling in state `earlier` lets an operation under `policy` start, as far as
/// the start order goes: `rolling` waits for it to complete, `barrier` for it to reach the barrier
/// (`waiting_for_cutover`, `cutting_over`, `revert_window` or `completed`), `parallel` for nothing.
/// `cancelled` and the failures always pass.
pub const fn start_order_passes(policy: CutoverPolicy, earlier: ApplyState) -> bool {
    if passes_every_order(earlier) {
        return true;
    }
    match policy {
        CutoverPolicy::Parallel => true,
        CutoverPolicy::Barrier => matches!(
            earlier,
            ApplyState::WaitingForCutover
                | ApplyState::CuttingOver
                | ApplyState::RevertWindow
                | ApplyState::Completed
        ),
        CutoverPolicy::Rolling => matches!(earlier, ApplyState::Completed),
    }
}

/// True when an earlier sibling in state `earlier` lets an operation cut over (the automatic
/// cutover order, and a whole-apply `cutover` request's): it is `completed` (so one in
/// `revert_window` still blocks), `cancelled`, or a failure.
pub const fn cutover_order_passes(earlier: ApplyState) -> bool {
    passes_every_order(earlier) || matches!(earlier, ApplyState::Completed)
}

/// `cancelled` or a failure: passes every order gate.
const fn passes_every_order(earlier: ApplyState) -> bool {
    matches!(earlier, ApplyState::Cancelled) || is_failure(earlier)
}

/// The states [`start_order_passes`] lets through for `policy`, for the claims' SQL.
pub fn start_order_passing(policy: CutoverPolicy) -> Vec<ApplyState> {
    ApplyState::ALL
        .into_iter()
        .filter(|state| start_order_passes(policy, *state))
        .collect()
}

/// The states [`cutover_order_passes`] lets through, for the claims' SQL.
pub fn cutover_order_passing() -> Vec<ApplyState> {
    ApplyState::ALL
        .into_iter()
        .filter(|state| cutover_order_passes(*state))
        .collect()
}

/// The failure states (`failed`, `reverted`), for the claims' SQL.
pub fn failure_states() -> Vec<ApplyState> {
    ApplyState::ALL
        .into_iter()
        .filter(|s| is_failure(*s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApplyState::*;

    #[test]
    fn cancelled_passes_every_start_order_and_the_cutover_order() {
        for policy in CutoverPolicy::ALL {
            assert!(start_order_passes(*policy, Cancelled), "{policy}");
        }
        assert!(cutover_order_passes(Cancelled));
    }

    #[test]
    fn reverted_passes_the_orders_exactly_as_failed_does() {
        for policy in CutoverPolicy::ALL {
            assert_eq!(
                start_order_passes(*policy, Reverted),
                start_order_passes(*policy, Failed)
            );
        }
        assert_eq!(cutover_order_passes(Reverted), cutover_order_passes(Failed));
        assert_eq!(failure_states(), [Failed, Reverted]);
    }

    #[test]
    fn rolling_waits_for_completion_and_barrier_for_the_barrier() {
        assert_eq!(
            start_order_passing(CutoverPolicy::Rolling),
            [Completed, Failed, Cancelled, Reverted]
        );
        assert_eq!(
            start_order_passing(CutoverPolicy::Barrier),
            [
                WaitingForCutover,
                CuttingOver,
                RevertWindow,
                Completed,
                Failed,
                Cancelled,
                Reverted
            ]
        );
        assert_eq!(
            start_order_passing(CutoverPolicy::Parallel),
            ApplyState::ALL
        );
        assert_eq!(
            cutover_order_passing(),
            [Completed, Failed, Cancelled, Reverted]
        );
    }
}
