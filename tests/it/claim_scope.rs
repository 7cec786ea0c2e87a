//! Scoped claims: a worker that claims only some deployments, one environment or one database takes
//! nothing outside its scope, every claim rule still holds inside it, `blockers` answers for a scope
//! with the claims' own scope predicate, and a scope a claim would refuse is refused before any SQL.

use std::collections::BTreeSet;

use applyops::models::{ApplyOperationId, NewApply, NewApplyOperation, MAX_SCOPE_DEPLOYMENTS};
use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::applies::{self, Blocker};
use applyops::store::claims::{self, ClaimOptions, ClaimScope};
use applyops::store::{apply_operations, leases};
use applyops::{DbConnection, StoreError};

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    a_scoped_claim_takes_only_operations_of_its_deployments,
    an_unscoped_claim_still_takes_anything,
    a_scope_keeps_the_rolling_gate,
    a_scope_by_environment_or_database_takes_only_those_applies,
    the_cutover_claim_keeps_to_its_scope,
    blockers_in_a_scope_call_the_rest_out_of_scope_and_agree_with_the_scoped_claims,
    a_scope_a_claim_would_refuse_is_invalid_input,
);

/// Claim options for `owner` inside `scope`.
fn scoped(owner: &str, scope: ClaimScope) -> ClaimOptions {
    opts(owner).with_scope(scope)
}

/// The scope of the named deployments.
fn deployments(names: &[&str]) -> ClaimScope {
    ClaimScope::any().deployments(names.iter().copied())
}

fn a_scoped_claim_takes_only_operations_of_its_deployments(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let (_, others) = rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let options = scoped("east", deployments(&["deployment-1"]));
    let first = claims::claim_next(conn, &options)
        .unwrap()
        .expect("in scope");
    let second = claims::claim_next(conn, &options)
        .unwrap()
        .expect("in scope");
    assert_eq!(
        BTreeSet::from([first.operation.id, second.operation.id]),
        BTreeSet::from([ids[1], others[1]]),
        "the oldest first, and only deployment-1"
    );
    assert_eq!(claims::claim_next(conn, &options).unwrap(), None);
    // Two deployments: the rest of those.
    let options = scoped("both", deployments(&["deployment-0", "deployment-2"]));
    assert_eq!(
        taken_by(conn, &options),
        BTreeSet::from([ids[0], ids[2], others[0], others[2]])
    );
}

fn an_unscoped_claim_still_takes_anything(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let scoped_first = claims::claim_next(conn, &scoped("east", deployments(&["deployment-2"])))
        .unwrap()
        .expect("in scope");
    assert_eq!(scoped_first.operation.id, ids[2]);
    assert_eq!(
        taken_by(conn, &opts("anyone")),
        BTreeSet::from([ids[0], ids[1]])
    );
    assert_eq!(opts("anyone").scope, ClaimScope::any());
}

fn a_scope_keeps_the_rolling_gate(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let second = scoped("west", deployments(&["deployment-1"]));
    assert_eq!(
        claims::claim_next(conn, &second).unwrap(),
        None,
        "deployment-1 waits for deployment-0, whoever may claim it"
    );
    let blocked = applies::blockers_in(conn, apply_id, &second.scope).unwrap();
    assert!(
        matches!(blocked[1], (id, Blocker::WaitingForSibling { .. }) if id == ids[1]),
        "{blocked:?}"
    );
    // Another worker, scoped to deployment-0, finishes it.
    let first = scoped("east", deployments(&["deployment-0"]));
    let claimed = claims::claim_next(conn, &first)
        .unwrap()
        .expect("deployment-0");
    assert_eq!(claimed.operation.id, ids[0]);
    leases::mark_completed(conn, &claimed.lease).unwrap();
    let claimed = claims::claim_next(conn, &second)
        .unwrap()
        .expect("now deployment-1");
    assert_eq!(claimed.operation.id, ids[1]);
}

fn a_scope_by_environment_or_database_takes_only_those_applies(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, production) = rollout(conn, 1, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let staging = applies::insert(
        conn,
        &NewApply::new("staging-apply", "inventory", "staging", "main"),
    )
    .unwrap();
    let staged =
        apply_operations::insert(conn, &NewApplyOperation::new(staging, "deployment-0")).unwrap();
    assert_eq!(
        taken_by(conn, &scoped("s", ClaimScope::any().environment("staging"))),
        BTreeSet::from([staged])
    );
    assert_eq!(
        taken_by(
            conn,
            &scoped("i", ClaimScope::any().database_name("inventory"))
        ),
        BTreeSet::from([staged])
    );
    assert_eq!(
        taken_by(
            conn,
            &scoped("p", ClaimScope::any().environment("production"))
        ),
        BTreeSet::from([production[0]])
    );
    assert_eq!(
        taken_by(
            conn,
            &scoped(
                "none",
                deployments(&["deployment-0"])
                    .environment("staging")
                    .database_name("commerce")
            )
        ),
        BTreeSet::new(),
        "every part of a scope must hold"
    );
}

fn the_cutover_claim_keeps_to_its_scope(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, CutoverPolicy::Parallel, FailurePolicy::Continue);
    for id in &ids {
        force_state(conn, *id, ApplyState::WaitingForCutover);
    }
    let (first, second) = (
        scoped("east", deployments(&["deployment-0"])),
        scoped("west", deployments(&["deployment-1"])),
    );
    // deployment-1's cutover waits for deployment-0's, whoever may claim that.
    assert_eq!(claims::claim_next_cutover(conn, &second).unwrap(), None);
    let claimed = claims::claim_next_cutover(conn, &first)
        .unwrap()
        .expect("deployment-0's cutover");
    assert_eq!(claimed.operation.id, ids[0]);
    leases::mark_completed(conn, &claimed.lease).unwrap();
    assert_eq!(claims::claim_next_cutover(conn, &first).unwrap(), None);
    let claimed = claims::claim_next_cutover(conn, &second)
        .unwrap()
        .expect("deployment-1's cutover");
    assert_eq!(claimed.operation.id, ids[1]);
}

fn blockers_in_a_scope_call_the_rest_out_of_scope_and_agree_with_the_scoped_claims(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 4, CutoverPolicy::Parallel, FailurePolicy::Continue);
    claim_id_of(conn, ids[3]);
    let scope = deployments(&["deployment-1", "deployment-3"]);
    let blocked = applies::blockers_in(conn, apply_id, &scope).unwrap();
    assert_eq!(blocked[0], (ids[0], Blocker::OutOfScope));
    assert_eq!(blocked[1], (ids[1], Blocker::Claimable));
    assert_eq!(blocked[2], (ids[2], Blocker::OutOfScope));
    assert!(
        matches!(blocked[3], (id, Blocker::LeaseLive { .. }) if id == ids[3]),
        "{blocked:?}"
    );
    let claimable: BTreeSet<_> = blocked
        .iter()
        .filter(|(_, blocker)| *blocker == Blocker::Claimable)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(claimable, taken_by(conn, &scoped("probe", scope)));
    // The open scope is `blockers` itself.
    assert_eq!(
        applies::blockers_in(conn, apply_id, &ClaimScope::any()).unwrap(),
        applies::blockers(conn, apply_id).unwrap()
    );
}

/// Claims operation `id` for a worker scoped to its deployment, so nothing else is taken.
fn claim_id_of(conn: &mut DbConnection, id: ApplyOperationId) {
    let deployment = apply_operations::get(conn, id).unwrap().unwrap().deployment;
    let claimed = claims::claim_next(conn, &scoped("holder", deployments(&[&deployment])))
        .unwrap()
        .expect("claimable");
    assert_eq!(claimed.operation.id, id);
}

fn a_scope_a_claim_would_refuse_is_invalid_input(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let too_many: Vec<String> = (0..=MAX_SCOPE_DEPLOYMENTS)
        .map(|n| format!("d{n}"))
        .collect();
    let refused = [
        deployments(&[""]),
        deployments(&["east "]),
        deployments(&["east", "west", "east"]),
        ClaimScope::any().deployments(too_many),
        ClaimScope::any().environment(""),
        ClaimScope::any().database_name(""),
    ];
    for scope in refused {
        let options = scoped("w", scope.clone());
        assert!(
            matches!(options.validate(), Err(StoreError::InvalidInput { .. })),
            "{scope:?}"
        );
        assert!(
            matches!(
                claims::claim_next(conn, &options),
                Err(StoreError::InvalidInput { .. })
            ),
            "{scope:?}"
        );
        assert!(
            matches!(
                applies::blockers_in(conn, apply_id, &scope),
                Err(StoreError::InvalidInput { .. })
            ),
            "{scope:?}"
        );
    }
    // Nothing was taken on the way.
    assert!(claim(conn, "after").is_some());
    let most: Vec<String> = (0..MAX_SCOPE_DEPLOYMENTS)
        .map(|n| format!("d{n}"))
        .collect();
    assert_eq!(
        claims::claim_next(conn, &scoped("w", ClaimScope::any().deployments(most))).unwrap(),
        None,
        "the most deployments a scope lists is accepted"
    );
}
