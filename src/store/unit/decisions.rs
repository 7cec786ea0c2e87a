//! The unit of work's part of the claim rules: what it reads of an apply's operations, the decision
//! it makes over them ([`crate::state::decide`], a pure function) and how it stores it
//! (`apply_operations.copy_claim`, `cutover_claim`). The refresh runs it last in every unit of work,
//! with the apply locked, so the stored decision is always the one the rows call for; `blockers`
//! reads the same facts and the same decision.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::requests::PendingRequest;
use crate::db::{self, DbConnection};
use crate::error::StoreResult;
use crate::models::{ApplyId, ApplyOperationId};
use crate::schema::apply_operations as ops;
use crate::state::{
    blocking_failure, decide, ApplyRules, ApplyState, ClaimAction, ControlRequestKind,
    CutoverPolicy, Decision, FailurePolicy, OperationRules, PendingFor,
};
use crate::store::moves::{Columns, Move};
use crate::store::predicates::released_through;

/// What the refresh and `blockers` read of one operation: the raw vocabulary columns (an unknown
/// value must not fail the refresh), whether a counted `release` names its apply or it, and the
/// decision stored last.
#[derive(Debug, Clone, Queryable)]
pub(in crate::store) struct OperationFacts {
    pub(in crate::store) id: ApplyOperationId,
    pub(in crate::store) deployment: String,
    pub(in crate::store) state: String,
    pub(in crate::store) cutover_policy: String,
    pub(in crate::store) on_failure: String,
    pub(in crate::store) started_at: Option<NaiveDateTime>,
    pub(in crate::store) error_message: Option<String>,
    pub(in crate::store) holds_target: Option<bool>,
    pub(in crate::store) failure_seq: Option<i64>,
    pub(in crate::store) attempt: i32,
    pub(in crate::store) copy_claim: Option<String>,
    pub(in crate::store) cutover_claim: Option<String>,
    pub(in crate::store) released_through: Option<i64>,
}

impl OperationFacts {
    /// The columns a [`Move`] reads of the row.
    fn columns(&self) -> Columns {
        Columns {
            started_at: self.started_at,
            error_message: self.error_message.clone(),
            attempt: self.attempt,
            holds_target: self.holds_target,
            failure_seq: self.failure_seq,
        }
    }

    /// The decision stored on the row: `None` for a claim that never takes it; an unknown stored
    /// value reads as [`ClaimAction::Undecided`].
    pub(in crate::store) fn stored(&self) -> Stored {
        let read = |value: &Option<String>| {
            value
                .as_deref()
                .map(|v| ClaimAction::from_stored(v).unwrap_or(ClaimAction::Undecided))
        };
        (read(&self.copy_claim), read(&self.cutover_claim))
    }
}

/// The operations of apply `apply_id` in claim order (`created_at`, `id`). One SELECT.
pub(in crate::store) fn read_facts(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<OperationFacts>> {
    Ok(ops::table
        .filter(ops::apply_id.eq(apply_id))
        .order((ops::created_at.asc(), ops::id.asc()))
        .select((
            ops::id,
            ops::deployment,
            ops::state,
            ops::cutover_policy,
            ops::on_failure,
            ops::started_at,
            ops::error_message,
            ops::holds_target,
            ops::failure_seq,
            ops::attempt,
            ops::copy_claim,
            ops::cutover_claim,
            released_through(),
        ))
        .load(conn)?)
}

/// The apply's settings the rules read.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::store) struct ApplySettings {
    pub(in crate::store) defer_cutover: bool,
    pub(in crate::store) max_concurrency: Option<i64>,
    pub(in crate::store) max_attempts: i32,
}

impl ApplySettings {
    /// The settings of a locked apply row.
    pub(in crate::store) fn of(row: &crate::store::rows::ApplyLockRow) -> Self {
        ApplySettings {
            defer_cutover: row.defer_cutover,
            max_concurrency: row.max_concurrency,
            max_attempts: row.max_attempts,
        }
    }
}

/// The claim rules' decision for `facts` (in claim order), given the apply's settings and its
/// requests still pending.
pub(in crate::store) fn decisions(
    apply: ApplySettings,
    facts: &[OperationFacts],
    pending: &[PendingRequest],
) -> Vec<Decision> {
    let (apply, operations) = rules(apply, facts, pending);
    decide(&apply, &operations)
}

/// The decisions for the operations of a new apply, all `pending`, never started, with no request
/// yet, given their policies in claim order: what `create_rollout` stores with them as it inserts
/// them.
pub(in crate::store) fn decisions_for_new(
    apply: ApplySettings,
    policies: &[(CutoverPolicy, FailurePolicy)],
) -> Vec<Stored> {
    let rules = ApplyRules {
        defer_cutover: apply.defer_cutover,
        max_concurrency: apply.max_concurrency,
        max_attempts: apply.max_attempts,
        cutover_requested: false,
    };
    let operations: Vec<OperationRules> = policies
        .iter()
        .map(|&(cutover_policy, on_failure)| OperationRules {
            state: Some(ApplyState::Pending),
            cutover_policy: Some(cutover_policy),
            on_failure: Some(on_failure),
            ..OperationRules::default()
        })
        .collect();
    decide(&rules, &operations)
        .into_iter()
        .map(|decision| (decision.copy, decision.cutover))
        .collect()
}

/// The earlier failure that holds operation `operation_id` of apply `apply_id` back under its failure
/// policy, if any ([`blocking_failure`], the failure gate of the claims). One SELECT.
pub(in crate::store) fn failure_holding_back(
    conn: &mut DbConnection,
    apply_id: ApplyId,
    operation_id: ApplyOperationId,
) -> StoreResult<Option<ApplyOperationId>> {
    let facts = read_facts(conn, apply_id)?;
    let Some(index) = facts.iter().position(|fact| fact.id == operation_id) else {
        return Ok(None);
    };
    let (_, operations) = rules(ApplySettings::default(), &facts, &[]);
    Ok(blocking_failure(&operations, index).map(|failed| facts[failed].id))
}

/// What the rules read, from the apply's settings, its operations and its pending requests.
fn rules(
    apply: ApplySettings,
    facts: &[OperationFacts],
    pending: &[PendingRequest],
) -> (ApplyRules, Vec<OperationRules>) {
    let rules = ApplyRules {
        defer_cutover: apply.defer_cutover,
        max_concurrency: apply.max_concurrency,
        max_attempts: apply.max_attempts,
        cutover_requested: pending
            .iter()
            .any(|(_, kind, scope)| *kind == Some(ControlRequestKind::Cutover) && scope.is_none()),
    };
    let operations: Vec<OperationRules> = facts
        .iter()
        .map(|fact| OperationRules {
            state: ApplyState::from_stored(&fact.state),
            cutover_policy: CutoverPolicy::from_stored(&fact.cutover_policy),
            on_failure: FailurePolicy::from_stored(&fact.on_failure),
            started: fact.started_at.is_some(),
            attempt: fact.attempt,
            failure_seq: fact.failure_seq,
            released_through: fact.released_through,
            pending: pending_for(fact.id, pending),
        })
        .collect();
    (rules, operations)
}

/// The pending requests that cover operation `id`.
fn pending_for(id: ApplyOperationId, pending: &[PendingRequest]) -> PendingFor {
    let mut found = PendingFor::default();
    for (_, kind, scope) in pending {
        let covers = scope.is_none_or(|scope| scope == id);
        if !covers {
            continue;
        }
        match kind {
            Some(ControlRequestKind::Stop) => found.stop = true,
            Some(ControlRequestKind::Cancel) => found.cancel = true,
            Some(ControlRequestKind::Start) => found.start = true,
            Some(ControlRequestKind::Revert) => found.revert = true,
            Some(ControlRequestKind::SkipRevert) => found.skip_revert = true,
            Some(ControlRequestKind::Cutover) => found.cutover |= scope.is_some(),
            Some(ControlRequestKind::Release | ControlRequestKind::Retry) => {}
            None => found.unknown = true,
        }
    }
    found
}

/// What each claim does with one operation: (copy claim, cutover claim).
pub(in crate::store) type Stored = (Option<ClaimAction>, Option<ClaimAction>);

impl OperationFacts {
    /// Whether the row stores exactly `decision`.
    fn stores(&self, (copy, cutover): Stored) -> bool {
        self.copy_claim.as_deref() == copy.map(ClaimAction::as_str)
            && self.cutover_claim.as_deref() == cutover.map(ClaimAction::as_str)
    }

    /// Notes that the row now stores `decision`.
    fn set_stored(&mut self, (copy, cutover): Stored) {
        self.copy_claim = copy.map(|a| a.as_str().to_owned());
        self.cutover_claim = cutover.map(|a| a.as_str().to_owned());
    }
}

/// Stores `decided` on the operations whose stored decision differs: one UPDATE per operation that
/// changes (a statement prepared once per connection), usually none or one.
pub(in crate::store) fn store(
    conn: &mut DbConnection,
    facts: &[OperationFacts],
    decided: &[Decision],
) -> StoreResult<()> {
    for (fact, decision) in facts.iter().zip(decided) {
        let wanted = (decision.copy, decision.cutover);
        if fact.stores(wanted) {
            continue;
        }
        db::cached_update(
            ops::table,
            ops::id.eq(fact.id),
            (
                ops::copy_claim.eq(wanted.0),
                ops::cutover_claim.eq(wanted.1),
            ),
        )
        .execute(conn)?;
    }
    Ok(())
}

/// An apply as a claim's unit of work sees it under the apply's lock: its settings, its pending
/// requests and its operations, so that the claim can write a taken operation's new decision in
/// the same UPDATE that takes it, and the refresh need not read the operations again.
#[derive(Debug)]
pub(in crate::store) struct ApplyView {
    settings: ApplySettings,
    pending: Vec<PendingRequest>,
    /// The operations in claim order, as stored.
    pub(in crate::store) facts: Vec<OperationFacts>,
}

impl ApplyView {
    /// Reads the locked apply's operations (one SELECT) and, when it has any, its pending requests
    /// (one more).
    pub(in crate::store) fn read(
        conn: &mut DbConnection,
        locked: &super::LockedApply,
    ) -> StoreResult<Self> {
        let pending = if locked.requests_pending {
            super::requests::pending_of(conn, locked.row.id)?
        } else {
            Vec::new()
        };
        Ok(ApplyView {
            settings: ApplySettings::of(&locked.row),
            pending,
            facts: read_facts(conn, locked.row.id)?,
        })
    }

    /// Stores the rules' decision for the operations as read, where it differs from what they store.
    pub(in crate::store) fn store_decisions(&self, conn: &mut DbConnection) -> StoreResult<()> {
        store(
            conn,
            &self.facts,
            &decisions(self.settings, &self.facts, &self.pending),
        )
    }

    /// The operations once `row` (one of them) is written as given, with the decision the rules
    /// make for it then marked as stored on it; and that decision. The others keep what they store:
    /// the refresh writes theirs where it changes. `None` when `row` is not one of them.
    pub(in crate::store) fn after(
        &self,
        row: &crate::models::ApplyOperation,
    ) -> Option<(Vec<OperationFacts>, Stored)> {
        self.decided_after(row.id, |fact| {
            row.state.as_str().clone_into(&mut fact.state);
            fact.attempt = row.attempt;
            fact.started_at = row.started_at;
            fact.error_message.clone_from(&row.error_message);
        })
    }

    /// True when a [`Move`] of operation `id` makes it take its target, holding it where it did
    /// not: the one kind of state write that can collide with another apply on the target key.
    /// True for an operation not among those read (the write will find out).
    pub(in crate::store) fn move_takes_target(
        &self,
        id: ApplyOperationId,
        moved: &Move<'_>,
        now: NaiveDateTime,
    ) -> bool {
        self.facts
            .iter()
            .find(|fact| fact.id == id)
            .is_none_or(|fact| {
                fact.holds_target != Some(true)
                    && moved.leaves(fact.columns(), now).holds_target == Some(true)
            })
    }

    /// [`after`](Self::after) a [`Move`] of operation `id`, made at `now`.
    pub(in crate::store) fn after_move(
        &self,
        id: ApplyOperationId,
        moved: &Move<'_>,
        now: NaiveDateTime,
    ) -> Option<(Vec<OperationFacts>, Stored)> {
        self.decided_after(id, |fact| {
            let after = moved.leaves(fact.columns(), now);
            moved.state().as_str().clone_into(&mut fact.state);
            fact.started_at = after.started_at;
            fact.error_message = after.error_message;
            fact.attempt = after.attempt;
            fact.holds_target = after.holds_target;
            fact.failure_seq = after.failure_seq;
        })
    }

    /// The operations with operation `id` edited by `edit`, and the decision for it then, marked as
    /// stored on it.
    fn decided_after(
        &self,
        id: ApplyOperationId,
        edit: impl FnOnce(&mut OperationFacts),
    ) -> Option<(Vec<OperationFacts>, Stored)> {
        let index = self.facts.iter().position(|fact| fact.id == id)?;
        let mut facts = self.facts.clone();
        edit(&mut facts[index]);
        let decided = decisions(self.settings, &facts, &self.pending)[index];
        let stored = (decided.copy, decided.cutover);
        facts[index].set_stored(stored);
        Some((facts, stored))
    }
}
