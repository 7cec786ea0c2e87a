//! Why is it waiting: each blocker built on purpose, and cross-checked against the claims themselves
//! (an operation is `Claimable` exactly when a claim takes it).

use std::collections::BTreeSet;

use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::applies::{self, Blocker};
use applyops::store::apply_operations;
use applyops::DbConnection;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

use CutoverPolicy::{Barrier, Parallel, Rolling};
use FailurePolicy::{Continue, Halt, Pause};

backend_tests!(each_blocker_is_built_and_the_claims_agree_with_every_verdict,);

fn each_blocker_is_built_and_the_claims_agree_with_every_verdict(db: &TestDb) {
    let conn = &mut db.conn();
    let mut all = Vec::new();
    let mut expect = |apply, wanted: Vec<Blocker>, conn: &mut DbConnection| {
        let found = applies::blockers(conn, apply).unwrap();
        let blockers: Vec<Blocker> = found.iter().map(|(_, b)| b.clone()).collect();
        assert_eq!(blockers, wanted, "apply {apply}");
        all.extend(found);
    };

    // Claimable, then waiting for it under rolling.
    let (rolling, r) = rollout(conn, 2, Rolling, Halt);
    let deployment = apply_operations::get(conn, r[0])
        .unwrap()
        .unwrap()
        .deployment;
    expect(
        rolling,
        vec![
            Blocker::Claimable,
            Blocker::WaitingForSibling {
                id: r[0],
                deployment,
                state: ApplyState::Pending,
            },
        ],
        conn,
    );

    // A live lease: a running operation a worker holds.
    let (held, h) = rollout(conn, 1, Parallel, Halt);
    let until = chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    {
        use applyops::schema::apply_operations as ops;
        use diesel::prelude::*;
        diesel::update(ops::table.find(h[0]))
            .set((
                ops::state.eq(ApplyState::Running),
                ops::lease_owner.eq("holder"),
                ops::lease_token.eq("0123456789abcdef0123456789abcdef"),
                ops::lease_expires_at.eq(Some(until)),
            ))
            .execute(conn)
            .unwrap();
    }
    expect(
        held,
        vec![Blocker::LeaseLive {
            owner: "holder".into(),
            expires_at: until,
        }],
        conn,
    );
    // The same operation once its holder is gone: recovery takes it.
    let (recovered, rc) = rollout(conn, 1, Parallel, Halt);
    force_state(conn, rc[0], ApplyState::Running);
    dead_lease(conn, rc[0]);
    expect(recovered, vec![Blocker::Claimable], conn);

    // A pending stop or cancel. Recording one stops (cancels) at once what nobody drives, and so
    // does every write of the apply while it is pending: a pending operation under one is a row an
    // operator wrote by hand. The first operation's holder keeps the request pending.
    for (kind, blocker) in [
        (ControlRequestKind::Stop, Blocker::StopPending),
        (ControlRequestKind::Cancel, Blocker::CancelPending),
    ] {
        let (gated, g) = rollout(conn, 2, Parallel, Halt);
        {
            use applyops::schema::apply_operations as ops;
            use diesel::prelude::*;
            diesel::update(ops::table.find(g[0]))
                .set((
                    ops::state.eq(ApplyState::Running),
                    ops::lease_owner.eq("holder"),
                    ops::lease_token.eq("0123456789abcdef0123456789abcdef"),
                    ops::lease_expires_at.eq(Some(until)),
                ))
                .execute(conn)
                .unwrap();
        }
        request(conn, gated, None, kind);
        force_state(conn, g[1], ApplyState::Pending);
        expect(
            gated,
            vec![
                Blocker::LeaseLive {
                    owner: "holder".into(),
                    expires_at: until,
                },
                blocker,
            ],
            conn,
        );
    }

    // Stopped without a start, and paused.
    let (idle, i) = rollout(conn, 2, Parallel, Halt);
    force_state(conn, i[0], ApplyState::Stopped);
    force_state(conn, i[1], ApplyState::Paused);
    expect(
        idle,
        vec![Blocker::AwaitingStart, Blocker::AwaitingStart],
        conn,
    );

    // Halted and paused by a failure.
    let (halted, f) = rollout(conn, 2, Parallel, Halt);
    apply_operations::mark_failed(conn, f[0], "boom").unwrap();
    expect(halted, vec![Blocker::HaltedBy { id: f[0] }], conn);
    let (paused, p) = rollout(conn, 2, Parallel, Pause);
    apply_operations::mark_failed(conn, p[0], "boom").unwrap();
    expect(paused, vec![Blocker::PausedUntilRelease { id: p[0] }], conn);
    let (continued, c) = rollout(conn, 2, Parallel, Continue);
    apply_operations::mark_failed(conn, c[0], "boom").unwrap();
    expect(continued, vec![Blocker::Claimable], conn);

    // Cutover: deferred without a request, and the cutover order.
    let deferred = apply(conn, true);
    let d: Vec<_> = (0..2)
        .map(|n| {
            apply_operations::insert(
                conn,
                &applyops::models::NewApplyOperation::new(deferred, format!("d{n}"))
                    .with_cutover_policy(Barrier),
            )
            .unwrap()
        })
        .collect();
    for id in &d {
        force_state(conn, *id, ApplyState::WaitingForCutover);
    }
    expect(
        deferred,
        vec![
            Blocker::AwaitingOperatorCutover,
            Blocker::AwaitingOperatorCutover,
        ],
        conn,
    );
    let (ordered, o) = rollout(conn, 2, Barrier, Halt);
    for id in &o {
        force_state(conn, *id, ApplyState::WaitingForCutover);
    }
    expect(
        ordered,
        vec![
            Blocker::Claimable,
            Blocker::WaitingForCutoverOrder { id: o[0] },
        ],
        conn,
    );

    // The retry budget: the apply's. (Attempt 0 is always taken: only an operator's retry leaves an
    // operation retryable there once its budget is spent.)
    let (retry, t) = rollout(conn, 1, Parallel, Halt);
    force_state(conn, t[0], ApplyState::FailedRetryable);
    set_attempt(conn, t[0], 1);
    set_max_attempts(conn, retry, 1);
    expect(retry, vec![Blocker::RetryBudgetExhausted], conn);
    set_max_attempts(conn, retry, 2);
    expect(retry, vec![Blocker::Claimable], conn);

    // The concurrency cap: a start waits while the apply's cap of operations is driven; recovery
    // never does.
    let (capped, k) = rollout(conn, 2, Parallel, Halt);
    set_max_concurrency(conn, capped, Some(1));
    force_state(conn, k[0], ApplyState::Running);
    expect(
        capped,
        vec![Blocker::Claimable, Blocker::ConcurrencyCap { limit: 1 }],
        conn,
    );

    // An unknown apply has no blockers.
    assert!(
        applies::blockers(conn, applyops::ApplyId(retry.get() + 1_000))
            .unwrap()
            .is_empty()
    );

    // Settled operations are not listed.
    assert!(applies::blockers(conn, halted)
        .unwrap()
        .iter()
        .all(|(id, _)| *id != f[0]));

    // One source of truth: Claimable exactly for what the claims take.
    let claimable: BTreeSet<_> = all
        .iter()
        .filter(|(_, b)| *b == Blocker::Claimable)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(claimable, taken_by(conn, &opts("probe")));
}
