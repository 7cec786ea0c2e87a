//! The apply aggregate (spec apply-aggregate.md): creating a rollout in one transaction, one active
//! apply per target, the concurrency cap, and `applies.state` kept equal to the derivation by every
//! write.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use applyops::models::{NewRollout, NewRolloutOperation, Rollout};
use applyops::schema::{applies as applies_table, apply_operations as ops, tasks as tasks_table};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::{applies, apply_operations, claims, leases};
use applyops::{ApplyId, DbConnection, StoreError};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::{Kind, TestDb};

backend_tests!(
    create_rollout_writes_the_apply_operations_and_tasks_in_claim_order,
    create_rollout_validates_every_field_before_any_sql,
    a_failure_on_the_last_task_leaves_no_apply_operation_or_task,
    apply_exists_wins_over_target_busy,
    a_held_target_is_target_busy_naming_the_holder_and_nothing_is_written,
    sixteen_threads_creating_rollouts_for_one_target_give_one_success,
    rollouts_sharing_targets_in_different_orders_never_surface_a_deadlock,
    a_completed_cancelled_or_reverted_operation_lets_its_target_go,
    a_failed_operation_holds_its_target_until_its_apply_has_nothing_unsettled,
    a_retry_of_a_settled_operation_whose_target_was_taken_is_target_busy,
    inserting_an_operation_needs_its_apply_and_copies_its_names,
    the_target_check_reads_the_unique_key,
    a_capped_apply_never_drives_more_than_its_cap_during_a_4_worker_drain,
    the_cap_does_not_hold_back_recovery,
    applies_state_follows_every_write_with_started_and_completed_at,
    an_unchanged_derivation_does_not_rewrite_the_apply,
    two_writers_finishing_the_last_two_operations_never_leave_running,
    recording_a_release_refreshes_the_apply,
    an_unknown_operation_state_keeps_the_apply_state_and_says_why,
    refresh_repairs_a_stale_apply,
    an_unknown_stored_policy_is_derived_as_the_strictest,
);

/// A rollout of `deployments` (`d0`, `d1`, …) on database `database`, each with `tasks` tasks.
fn new_rollout(name: &str, database: &str, deployments: usize, tasks: usize) -> NewRollout {
    (0..deployments).fold(
        NewRollout::new(name, database, "production", "tester"),
        |rollout, d| {
            rollout.operation(
                (0..tasks).fold(
                    NewRolloutOperation::new(format!("d{d}"))
                        .with_cutover_policy(CutoverPolicy::Parallel),
                    |operation, t| {
                        operation.task(
                            format!("t{d}_{t}"),
                            format!("ALTER TABLE t{d}_{t} ADD c INT"),
                        )
                    },
                ),
            )
        },
    )
}

fn count_rows(conn: &mut DbConnection) -> (i64, i64, i64) {
    (
        applies_table::table.count().get_result(conn).unwrap(),
        ops::table.count().get_result(conn).unwrap(),
        tasks_table::table.count().get_result(conn).unwrap(),
    )
}

fn apply_state(conn: &mut DbConnection, id: ApplyId) -> ApplyState {
    applies::get(conn, id).unwrap().unwrap().state
}

fn create_rollout_writes_the_apply_operations_and_tasks_in_claim_order(db: &TestDb) {
    let conn = &mut db.conn();
    let new = new_rollout("r1", "shop", 3, 2)
        .with_max_concurrency(Some(2))
        .with_max_attempts(3)
        .with_defer_cutover(true);
    let created: Rollout = applies::create_rollout(conn, &new).unwrap();
    let apply = &created.apply;
    assert_eq!(
        (
            apply.apply_identifier.as_str(),
            apply.database_name.as_str(),
            apply.deployment.as_str(),
            apply.requested_by.as_str(),
            apply.max_concurrency,
            apply.max_attempts,
            apply.defer_cutover,
            apply.state,
        ),
        (
            "r1",
            "shop",
            "d0",
            "tester",
            Some(2),
            3,
            true,
            ApplyState::Pending
        ),
        "applies.deployment defaults to the first operation's"
    );
    let deployments: Vec<_> = created
        .operations
        .iter()
        .map(|o| o.operation.deployment.as_str())
        .collect();
    assert_eq!(
        deployments,
        ["d0", "d1", "d2"],
        "claim order is the list's order"
    );
    for (d, operation) in created.operations.iter().enumerate() {
        let op = &operation.operation;
        assert_eq!(op.apply_id, apply.id);
        assert_eq!(
            (op.database_name.as_str(), op.environment.as_str()),
            ("shop", "production")
        );
        assert!(op.holds_target, "a new operation holds its target");
        assert_eq!(op.state, ApplyState::Pending);
        let tables: Vec<_> = operation
            .tasks
            .iter()
            .map(|t| t.table_name.clone())
            .collect();
        assert_eq!(tables, [format!("t{d}_0"), format!("t{d}_1")]);
        for task in &operation.tasks {
            assert_eq!(
                (task.apply_id, task.apply_operation_id),
                (apply.id, Some(op.id))
            );
        }
    }
    // What it returned is what is stored.
    assert_eq!(applies::rollout(conn, apply.id).unwrap().unwrap(), created);
    // Claim order holds for the claims too.
    let first = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    assert_eq!(first.operation.id, created.operations[0].operation.id);
}

fn create_rollout_validates_every_field_before_any_sql(db: &TestDb) {
    let conn = &mut db.conn();
    let ok = || new_rollout("v", "shop", 2, 1);
    let dup = {
        let mut r = ok();
        r.operations[1].deployment = "d0".into();
        r
    };
    let cases: Vec<(NewRollout, &str)> = vec![
        (
            NewRollout::new("v", "shop", "production", "tester"),
            "operations",
        ),
        (dup, "operations.deployment"),
        (
            NewRollout {
                apply_identifier: String::new(),
                ..ok()
            },
            "apply_identifier",
        ),
        (
            NewRollout {
                apply_identifier: "v ".into(),
                ..ok()
            },
            "apply_identifier",
        ),
        (
            NewRollout {
                database_name: "x".repeat(256),
                ..ok()
            },
            "database_name",
        ),
        (
            NewRollout {
                environment: String::new(),
                ..ok()
            },
            "environment",
        ),
        (
            NewRollout {
                requested_by: String::new(),
                ..ok()
            },
            "requested_by",
        ),
        (
            NewRollout {
                requested_by: "r".repeat(256),
                ..ok()
            },
            "requested_by",
        ),
        (ok().with_max_concurrency(Some(0)), "max_concurrency"),
        (ok().with_max_concurrency(Some(1_001)), "max_concurrency"),
        (ok().with_max_attempts(-1), "max_attempts"),
        (ok().with_max_attempts(1_001), "max_attempts"),
        (
            (0..1_001).fold(NewRollout::new("v", "shop", "production", "t"), |r, d| {
                r.operation(NewRolloutOperation::new(format!("d{d}")))
            }),
            "operations",
        ),
        (
            ok().operation((0..1_001).fold(NewRolloutOperation::new("many"), |o, t| {
                o.task(format!("t{t}"), "ALTER TABLE t ADD c INT")
            })),
            "operations.tasks",
        ),
        // 11 operations of 1,000 tasks each: within every operation's limit, over the rollout's.
        (
            (0..11).fold(NewRollout::new("v", "shop", "production", "t"), |r, d| {
                r.operation(
                    (0..1_000).fold(NewRolloutOperation::new(format!("d{d}")), |o, t| {
                        o.task(format!("t{t}"), "ALTER TABLE t ADD c INT")
                    }),
                )
            }),
            "operations.tasks",
        ),
        // 300 tasks of 60,000 bytes: each fits its column, 18 MB in all does not fit a rollout.
        (
            ok().operation((0..300).fold(NewRolloutOperation::new("big"), |o, t| {
                o.task(format!("t{t}"), "x".repeat(60_000))
            })),
            "operations.tasks.ddl",
        ),
        (
            ok().operation(NewRolloutOperation::new("e").task("t", "")),
            "operations.tasks.ddl",
        ),
        (
            ok().operation(NewRolloutOperation::new("e").task("", "DDL")),
            "operations.tasks.table_name",
        ),
        (
            ok().operation(NewRolloutOperation::new("")),
            "operations.deployment",
        ),
        (
            ok().operation(NewRolloutOperation::new("e ")),
            "operations.deployment",
        ),
        (
            ok().operation(NewRolloutOperation::new("e").with_target("t".repeat(256))),
            "operations.target",
        ),
    ];
    for (new, field) in cases {
        match applies::create_rollout(conn, &new) {
            Err(StoreError::InvalidInput { field: got, reason }) => {
                assert_eq!(got, field, "{reason}")
            }
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    assert_eq!(count_rows(conn), (0, 0, 0), "nothing written");
    // The reason names the operation.
    let mut dup = ok();
    dup.operations[1].deployment = "d0".into();
    let err = applies::create_rollout(conn, &dup).unwrap_err().to_string();
    assert!(err.contains("operations 0 and 1"), "{err}");
}

fn a_failure_on_the_last_task_leaves_no_apply_operation_or_task(db: &TestDb) {
    let conn = &mut db.conn();
    // A test-only trigger refuses the task named `boom`, the last one of the rollout.
    let trigger = match db.kind() {
        Kind::Mysql => "CREATE TRIGGER refuse_boom BEFORE INSERT ON tasks FOR EACH ROW \
                        BEGIN IF NEW.table_name = 'boom' THEN \
                        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom refused'; END IF; END",
        Kind::Sqlite => "CREATE TRIGGER refuse_boom BEFORE INSERT ON tasks \
                         WHEN NEW.table_name = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END",
        Kind::Postgres => "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
                           BEGIN IF NEW.table_name = 'boom' THEN RAISE EXCEPTION 'boom refused'; \
                           END IF; RETURN NEW; END $$; \
                           CREATE TRIGGER refuse_boom BEFORE INSERT ON tasks FOR EACH ROW \
                           EXECUTE FUNCTION refuse_boom()",
    };
    diesel::connection::SimpleConnection::batch_execute(conn, trigger).unwrap();
    let new = new_rollout("atomic", "shop", 3, 2).operation(
        NewRolloutOperation::new("last")
            .task("fine", "DDL")
            .task("boom", "DDL"),
    );
    let err = applies::create_rollout(conn, &new).unwrap_err();
    assert!(err.to_string().contains("boom refused"), "{err}");
    assert_eq!(count_rows(conn), (0, 0, 0), "all of it or none of it");
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d0").unwrap(),
        None
    );
}

fn apply_exists_wins_over_target_busy(db: &TestDb) {
    let conn = &mut db.conn();
    applies::create_rollout(conn, &new_rollout("same", "shop", 1, 0)).unwrap();
    let err = applies::create_rollout(conn, &new_rollout("same", "shop", 1, 0)).unwrap_err();
    assert!(
        matches!(&err, StoreError::ApplyExists { apply_identifier } if apply_identifier == "same"),
        "{err:?}"
    );
}

fn a_held_target_is_target_busy_naming_the_holder_and_nothing_is_written(db: &TestDb) {
    let conn = &mut db.conn();
    let holder = applies::create_rollout(conn, &new_rollout("first", "shop", 2, 1)).unwrap();
    let before = count_rows(conn);
    // Another database or environment is another target.
    applies::create_rollout(conn, &new_rollout("other-db", "billing", 2, 1)).unwrap();
    let mut other_env = new_rollout("other-env", "shop", 2, 1);
    other_env.environment = "staging".into();
    applies::create_rollout(conn, &other_env).unwrap();
    let after_others = count_rows(conn);
    assert_ne!(before, after_others);
    // d1 is held by the first apply.
    let clash = NewRollout::new("second", "shop", "production", "tester")
        .operation(NewRolloutOperation::new("fresh"))
        .operation(NewRolloutOperation::new("d1").task("t", "DDL"));
    match applies::create_rollout(conn, &clash) {
        Err(StoreError::TargetBusy {
            database_name,
            environment,
            deployment,
            apply_id,
        }) => {
            assert_eq!(
                (
                    database_name.as_str(),
                    environment.as_str(),
                    deployment.as_str(),
                    apply_id
                ),
                ("shop", "production", "d1", holder.apply.id)
            );
        }
        other => panic!("expected TargetBusy, got {other:?}"),
    }
    assert_eq!(count_rows(conn), after_others, "nothing written");
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d1").unwrap(),
        Some(holder.apply.id)
    );
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "fresh").unwrap(),
        None
    );
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d1 ").unwrap(),
        None,
        "compared exactly"
    );
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "D1").unwrap(),
        None
    );
}

fn sixteen_threads_creating_rollouts_for_one_target_give_one_success(db: &TestDb) {
    const THREADS: usize = 16;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|n| {
            let barrier = Arc::clone(&barrier);
            let url = db.url().to_owned();
            std::thread::spawn(move || {
                let mut conn = applyops::db::establish(&url).expect("connect");
                let new = NewRollout::new(format!("racer-{n}"), "shop", "production", "tester")
                    .operation(NewRolloutOperation::new("contested").task("t", "DDL"));
                barrier.wait();
                applies::create_rollout(&mut conn, &new).map(|r| r.apply.id)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<ApplyId> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, StoreError::TargetBusy { apply_id, .. } if *apply_id == winners[0]),
                "every loser names the winner: {err:?}"
            );
        }
    }
    let conn = &mut db.conn();
    assert_eq!(count_rows(conn), (1, 1, 1), "the losers wrote nothing");
}

fn rollouts_sharing_targets_in_different_orders_never_surface_a_deadlock(db: &TestDb) {
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [["a", "b", "c"], ["c", "b", "a"]]
            .into_iter()
            .enumerate()
            .map(|(n, order)| {
                let barrier = Arc::clone(&barrier);
                let url = db.url().to_owned();
                std::thread::spawn(move || {
                    let mut conn = applyops::db::establish(&url).expect("connect");
                    let new = order.iter().fold(
                        NewRollout::new(format!("r{round}-{n}"), format!("db{round}"), "p", "t"),
                        |r, d| r.operation(NewRolloutOperation::new(*d)),
                    );
                    barrier.wait();
                    applies::create_rollout(&mut conn, &new)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(StoreError::TargetBusy { .. }))),
            "round {round}: only TargetBusy, never a deadlock: {results:?}"
        );
    }
}

fn a_completed_cancelled_or_reverted_operation_lets_its_target_go(db: &TestDb) {
    let conn = &mut db.conn();
    let first = applies::create_rollout(conn, &new_rollout("first", "shop", 3, 0)).unwrap();
    let ids: Vec<_> = first.operations.iter().map(|o| o.operation.id).collect();
    apply_operations::mark_completed(conn, ids[0]).unwrap();
    apply_operations::mark_terminal(conn, ids[1], ApplyState::Cancelled).unwrap();
    apply_operations::mark_terminal(conn, ids[2], ApplyState::Reverted).unwrap();
    for d in ["d0", "d1", "d2"] {
        assert_eq!(
            applies::target_holder(conn, "shop", "production", d).unwrap(),
            None,
            "{d}"
        );
    }
    let second = applies::create_rollout(conn, &new_rollout("second", "shop", 3, 0)).unwrap();
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d2").unwrap(),
        Some(second.apply.id)
    );
}

fn a_failed_operation_holds_its_target_until_its_apply_has_nothing_unsettled(db: &TestDb) {
    let conn = &mut db.conn();
    let first = applies::create_rollout(conn, &new_rollout("first", "shop", 2, 0)).unwrap();
    let ids: Vec<_> = first.operations.iter().map(|o| o.operation.id).collect();
    apply_operations::mark_failed(conn, ids[0], "half changed").unwrap();
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d0").unwrap(),
        Some(first.apply.id),
        "its apply can still retry it"
    );
    assert!(matches!(
        applies::create_rollout(conn, &new_rollout("second", "shop", 1, 0)),
        Err(StoreError::TargetBusy { .. })
    ));
    // The refresh that settles the last operation lets the failed one's target go.
    apply_operations::mark_terminal(conn, ids[1], ApplyState::Cancelled).unwrap();
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d0").unwrap(),
        None
    );
    applies::create_rollout(conn, &new_rollout("second", "shop", 1, 0)).unwrap();
}

fn a_retry_of_a_settled_operation_whose_target_was_taken_is_target_busy(db: &TestDb) {
    let conn = &mut db.conn();
    let first = applies::create_rollout(conn, &new_rollout("first", "shop", 1, 0)).unwrap();
    let op = first.operations[0].operation.id;
    apply_operations::mark_failed(conn, op, "boom").unwrap();
    assert_eq!(apply_state(conn, first.apply.id), ApplyState::Failed);
    let second = applies::create_rollout(conn, &new_rollout("second", "shop", 1, 0)).unwrap();
    let err = apply_operations::update_state(conn, op, ApplyState::Pending).unwrap_err();
    assert!(
        matches!(&err, StoreError::TargetBusy { apply_id, deployment, .. }
            if *apply_id == second.apply.id && deployment == "d0"),
        "{err:?}"
    );
    let (row, _) = row(conn, op);
    assert_eq!(row.state, ApplyState::Failed, "nothing written");
    assert_eq!(apply_state(conn, first.apply.id), ApplyState::Failed);
    // Once the other apply is done, the retry goes through and holds the target again.
    apply_operations::mark_completed(conn, second.operations[0].operation.id).unwrap();
    apply_operations::update_state(conn, op, ApplyState::Pending).unwrap();
    assert_eq!(
        applies::target_holder(conn, "shop", "production", "d0").unwrap(),
        Some(first.apply.id)
    );
}

fn inserting_an_operation_needs_its_apply_and_copies_its_names(db: &TestDb) {
    let conn = &mut db.conn();
    let missing = ApplyId(4_242);
    assert!(matches!(
        apply_operations::insert(conn, &applyops::models::NewApplyOperation::new(missing, "d")),
        Err(StoreError::ApplyNotFound { id }) if id == missing
    ));
    let holder = applies::create_rollout(conn, &new_rollout("first", "shop", 1, 0)).unwrap();
    let other = applies::insert(
        conn,
        &applyops::models::NewApply::new("other", "shop", "production", "d0"),
    )
    .unwrap();
    let err =
        apply_operations::insert(conn, &applyops::models::NewApplyOperation::new(other, "d0"))
            .unwrap_err();
    assert!(
        matches!(err, StoreError::TargetBusy { apply_id, .. } if apply_id == holder.apply.id),
        "{err:?}"
    );
    let id = apply_operations::insert(conn, &applyops::models::NewApplyOperation::new(other, "d9"))
        .unwrap();
    let (op, _) = row(conn, id);
    assert_eq!(
        (op.database_name.as_str(), op.environment.as_str()),
        ("shop", "production")
    );
    assert!(op.holds_target);
}

fn the_target_check_reads_the_unique_key(db: &TestDb) {
    let conn = &mut db.conn();
    applies::create_rollout(conn, &new_rollout("held", "shop", 3, 0)).unwrap();
    if db.kind() == Kind::Postgres {
        // PostgreSQL plans by statistics: on a table of a few pages a sequential scan is cheapest.
        // Here 3,000 other operations hold targets whose deployment names repeat across databases,
        // as in production, and the statistics are read (autovacuum's ANALYZE does it on a live
        // server). Written by hand: only the plan is looked at.
        diesel::connection::SimpleConnection::batch_execute(
            conn,
            "INSERT INTO apply_operations (apply_id, deployment, database_name, environment, \
             holds_target, created_at, updated_at) \
             SELECT 1000 + g / 3, 'd' || (g % 3), 'db' || (g / 3), 'production', true, \
             LOCALTIMESTAMP, LOCALTIMESTAMP FROM generate_series(0, 2999) AS g",
        )
        .unwrap();
        diesel::connection::SimpleConnection::batch_execute(conn, "ANALYZE apply_operations")
            .unwrap();
    }
    let plan = applies::explain_target_holder(conn, "shop", "production", "d0").unwrap();
    assert!(
        plan.iter()
            .any(|line| line.contains("apply_operations_target_key")),
        "{plan:?}"
    );
    if db.kind() == Kind::Sqlite {
        assert!(plan.iter().all(|line| !line.contains("SCAN")), "{plan:?}");
    }
}

fn a_capped_apply_never_drives_more_than_its_cap_during_a_4_worker_drain(db: &TestDb) {
    const OPERATIONS: usize = 8;
    let conn = &mut db.conn();
    let created = applies::create_rollout(
        conn,
        &new_rollout("capped", "shop", OPERATIONS, 0).with_max_concurrency(Some(1)),
    )
    .unwrap();
    let apply_id = created.apply.id;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let url = db.url().to_owned();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut conn = applyops::db::establish(&url).unwrap();
            let driven: Vec<ApplyState> = ApplyState::ALL
                .into_iter()
                .filter(|s| applyops::state::is_driven(*s))
                .collect();
            let (mut samples, mut most) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let n: i64 = ops::table
                    .filter(ops::apply_id.eq(apply_id))
                    .filter(ops::state.eq_any(&driven))
                    .count()
                    .get_result(&mut conn)
                    .unwrap();
                most = most.max(n);
                samples += 1;
            }
            (samples, most)
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = db.url().to_owned();
            std::thread::spawn(move || {
                let mut conn = applyops::db::establish(&url).unwrap();
                let mut idle = 0;
                while idle < 200 {
                    match claims::claim_next(&mut conn, &opts(&format!("w{w}"))).unwrap() {
                        Some(claimed) => {
                            idle = 0;
                            std::thread::sleep(Duration::from_millis(3));
                            leases::mark_completed(&mut conn, &claimed.lease).unwrap();
                        }
                        None => {
                            if apply_state(&mut conn, apply_id) == ApplyState::Completed {
                                break;
                            }
                            idle += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (samples, most) = probe.join().unwrap();
    assert!(samples > 10, "the probe sampled the drain: {samples}");
    assert_eq!(most, 1, "never two driven at once under a cap of 1");
    assert_eq!(apply_state(conn, apply_id), ApplyState::Completed);
}

fn the_cap_does_not_hold_back_recovery(db: &TestDb) {
    let conn = &mut db.conn();
    let created = applies::create_rollout(
        conn,
        &new_rollout("capped", "shop", 2, 0).with_max_concurrency(Some(1)),
    )
    .unwrap();
    let ids: Vec<_> = created.operations.iter().map(|o| o.operation.id).collect();
    force_state(conn, ids[0], ApplyState::Running);
    force_state(conn, ids[1], ApplyState::Running);
    let taken: Vec<_> = (0..2)
        .filter_map(|_| claims::claim_next(conn, &opts("w")).unwrap())
        .collect();
    assert!(
        taken.iter().all(|c| c.kind == claims::ClaimKind::Recovery),
        "{taken:?}"
    );
    let ids_taken: BTreeSet<_> = taken.iter().map(|c| c.operation.id).collect();
    assert_eq!(
        ids_taken,
        BTreeSet::from([ids[0], ids[1]]),
        "both recovered although two are driven under a cap of 1"
    );
}

fn applies_state_follows_every_write_with_started_and_completed_at(db: &TestDb) {
    let conn = &mut db.conn();
    let created = applies::create_rollout(
        conn,
        &NewRollout::new("rolling", "shop", "production", "t")
            .operation(NewRolloutOperation::new("a"))
            .operation(NewRolloutOperation::new("b")),
    )
    .unwrap();
    let id = created.apply.id;
    let apply = |conn: &mut DbConnection| applies::get(conn, id).unwrap().unwrap();
    assert_eq!(
        (apply(conn).state, apply(conn).started_at),
        (ApplyState::Pending, None)
    );
    let a = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    let running = apply(conn);
    assert_eq!(running.state, ApplyState::Running, "the claim refreshed it");
    assert!(
        running.started_at.is_some(),
        "started_at stamped when the first operation starts"
    );
    leases::update_state(conn, &a.lease, ApplyState::WaitingForCutover).unwrap();
    assert_eq!(apply(conn).state, ApplyState::Running, "b is still pending");
    leases::mark_completed(conn, &a.lease).unwrap();
    let b = claims::claim_next(conn, &opts("w")).unwrap().unwrap();
    leases::update_state(conn, &b.lease, ApplyState::WaitingForCutover).unwrap();
    assert_eq!(apply(conn).state, ApplyState::WaitingForCutover);
    leases::mark_completed(conn, &b.lease).unwrap();
    let done = apply(conn);
    assert_eq!(done.state, ApplyState::Completed);
    assert!(done.completed_at.is_some());
    assert_eq!(done.started_at, running.started_at, "stamped once");
    // An operator's retry un-settles it: completed_at is cleared.
    apply_operations::update_state(conn, b.operation.id, ApplyState::Pending).unwrap();
    let again = apply(conn);
    assert_eq!(
        (again.state, again.completed_at),
        (ApplyState::Running, None)
    );
}

fn an_unchanged_derivation_does_not_rewrite_the_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let created = applies::create_rollout(conn, &new_rollout("r", "shop", 2, 0)).unwrap();
    let ids: Vec<_> = created.operations.iter().map(|o| o.operation.id).collect();
    apply_operations::mark_started(conn, ids[0]).unwrap();
    let before = applies::get(conn, created.apply.id).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    apply_operations::mark_started(conn, ids[1]).unwrap();
    apply_operations::update_state(conn, ids[0], ApplyState::Running).unwrap();
    let after = applies::get(conn, created.apply.id).unwrap().unwrap();
    assert_eq!(
        after, before,
        "still running: not rewritten, updated_at kept"
    );
}

fn two_writers_finishing_the_last_two_operations_never_leave_running(db: &TestDb) {
    let url = db.url().to_owned();
    let mut a = applyops::db::establish(&url).unwrap();
    let mut b = applyops::db::establish(&url).unwrap();
    for race in 0..200 {
        let created = applies::create_rollout(
            &mut a,
            &new_rollout(&format!("race-{race}"), &format!("db{race}"), 2, 0),
        )
        .unwrap();
        let first = claims::claim_next(&mut a, &opts("a")).unwrap().unwrap();
        let second = claims::claim_next(&mut a, &opts("b")).unwrap().unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let other = {
            let barrier = Arc::clone(&barrier);
            let mut conn = std::mem::replace(&mut b, applyops::db::establish(&url).unwrap());
            std::thread::spawn(move || {
                barrier.wait();
                leases::mark_completed(&mut conn, &second.lease).unwrap();
                conn
            })
        };
        barrier.wait();
        leases::mark_completed(&mut a, &first.lease).unwrap();
        b = other.join().unwrap();
        assert_eq!(
            apply_state(&mut a, created.apply.id),
            ApplyState::Completed,
            "race {race}"
        );
    }
}

/// A parallel rollout `a`, `b` where `b` meets a failure of `a` under `on_failure`; returns the
/// apply and the two operation ids.
fn failure_pair(
    conn: &mut DbConnection,
    name: &str,
    on_failure: FailurePolicy,
) -> (ApplyId, Vec<applyops::ApplyOperationId>) {
    let created = applies::create_rollout(
        conn,
        &NewRollout::new(name, "shop", "production", "t")
            .operation(NewRolloutOperation::new("a").with_cutover_policy(CutoverPolicy::Parallel))
            .operation(
                NewRolloutOperation::new("b")
                    .with_cutover_policy(CutoverPolicy::Parallel)
                    .with_on_failure(on_failure),
            ),
    )
    .unwrap();
    let ids = created.operations.iter().map(|o| o.operation.id).collect();
    (created.apply.id, ids)
}

fn recording_a_release_refreshes_the_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = failure_pair(conn, "paused", FailurePolicy::Pause);
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(apply_state(conn, apply_id), ApplyState::Paused);
    request(conn, apply_id, None, ControlRequestKind::Release);
    assert_eq!(
        apply_state(conn, apply_id),
        ApplyState::RunningDegraded,
        "the release lets the pause sibling through: the failure is passed"
    );
}

fn an_unknown_operation_state_keeps_the_apply_state_and_says_why(db: &TestDb) {
    let conn = &mut db.conn();
    let created = applies::create_rollout(conn, &new_rollout("r", "shop", 2, 0)).unwrap();
    let ids: Vec<_> = created.operations.iter().map(|o| o.operation.id).collect();
    apply_operations::mark_started(conn, ids[0]).unwrap();
    force_raw_state(conn, ids[1], "teleporting");
    // A write of the known row still succeeds; the apply keeps its state and says why.
    apply_operations::update_state(conn, ids[0], ApplyState::WaitingForDeploy).unwrap();
    let apply = applies::get(conn, created.apply.id).unwrap().unwrap();
    assert_eq!(apply.state, ApplyState::Running);
    let message = apply.error_message.unwrap();
    assert!(
        message.contains(&ids[1].to_string()) && message.contains("teleporting"),
        "{message}"
    );
}

fn refresh_repairs_a_stale_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let created = applies::create_rollout(conn, &new_rollout("r", "shop", 1, 0)).unwrap();
    let op = created.operations[0].operation.id;
    force_state(conn, op, ApplyState::Completed);
    assert_eq!(
        apply_state(conn, created.apply.id),
        ApplyState::Pending,
        "a hand-written row"
    );
    let repaired = applies::refresh(conn, created.apply.id).unwrap();
    assert_eq!(repaired.state, ApplyState::Completed);
    assert!(repaired.completed_at.is_some());
    assert!(matches!(
        applies::refresh(conn, ApplyId(9_999)),
        Err(StoreError::ApplyNotFound { .. })
    ));
}

fn an_unknown_stored_policy_is_derived_as_the_strictest(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = failure_pair(conn, "strict", FailurePolicy::Continue);
    // `continue` would let b pass a's failure (running_degraded); a value this version does not
    // know reads as `halt`, as the claims read it.
    force_policy(conn, ids[1], "parallel", "carry_on");
    apply_operations::mark_failed(conn, ids[0], "boom").unwrap();
    assert_eq!(apply_state(conn, apply_id), ApplyState::Failed);
    force_policy(conn, ids[1], "parallel", "continue");
    assert_eq!(
        applies::refresh(conn, apply_id).unwrap().state,
        ApplyState::RunningDegraded
    );
}
