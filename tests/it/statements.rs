//! Statements per store operation, counted by the server (MySQL/MariaDB session status `Questions`).
//! Every state write is one UPDATE of the operation in a transaction that locks its apply first and
//! refreshes the apply's derived state last, on the found and the not-found path alike.

use applyops::db::DbConnection;
use applyops::models::{ApplyId, ApplyOperationId, NewApplyOperation, NewTask};
use applyops::state::ApplyState;
use applyops::store::{apply_operations as store, tasks};
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::harness::{Kind, TestDb};

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

fn questions(conn: &mut DbConnection) -> i64 {
    diesel::sql_query("SHOW SESSION STATUS LIKE 'Questions'")
        .get_result::<Status>(conn)
        .unwrap()
        .value
        .parse()
        .unwrap()
}

/// Statements the server saw while `op` ran, net of the counter reads themselves.
fn statements<T>(conn: &mut DbConnection, op: impl FnOnce(&mut DbConnection) -> T) -> (i64, T) {
    let a = questions(conn);
    let b = questions(conn);
    let read_cost = b - a;
    let out = op(conn);
    let c = questions(conn);
    (c - b - read_cost, out)
}

#[test]
fn mysql_statements_per_operation() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    crate::fixtures::ensure_apply(conn, ApplyId(99));
    // Warm Diesel's prepared-statement cache so the first-use PREPARE is not in the numbers
    // (the server does not count PREPARE in Questions either way).
    let warm = store::insert(conn, &NewApplyOperation::new(ApplyId(99), "warm")).unwrap();
    store::mark_started(conn, warm).unwrap();

    let (n, id) = statements(conn, |c| {
        store::insert(c, &NewApplyOperation::new(ApplyId(1), "a")).unwrap()
    });
    assert_eq!(
        n,
        1 + 6 + 4,
        "insert: SET TRANSACTION (READ COMMITTED) + transaction + locking the apply, INSERT, LAST_INSERT_ID(), the refresh's read \
         (a pending operation leaves a pending apply as it is)"
    );
    let (n, conflict) = statements(conn, |c| {
        store::insert(c, &NewApplyOperation::new(ApplyId(1), "a"))
    });
    assert!(conflict.is_err());
    assert_eq!(
        n,
        1 + 6 + 2,
        "conflicting insert: SET TRANSACTION + transaction (rolled back) + locking the apply, INSERT"
    );
    let (n, _) = statements(conn, |c| {
        store::insert(c, &NewApplyOperation::new(ApplyId(1), ""))
    });
    assert_eq!(n, 0, "invalid input is rejected before any SQL");

    type Update = fn(&mut DbConnection, ApplyOperationId) -> applyops::StoreResult<()>;
    let updates: [(&str, Update); 6] = [
        ("update_state", |c, id| {
            store::update_state(c, id, ApplyState::WaitingForDeploy)
        }),
        ("mark_started", store::mark_started),
        ("mark_completed", store::mark_completed),
        ("mark_failed", |c, id| store::mark_failed(c, id, "boom")),
        ("mark_terminal", |c, id| {
            store::mark_terminal(c, id, ApplyState::Cancelled)
        }),
        ("update_state again", |c, id| {
            store::update_state(c, id, ApplyState::Pending)
        }),
    ];
    // Each write changes the apply's derived state (waiting_for_deploy, running, completed,
    // failed, cancelled, running again), so the refresh writes the apply once; the repeat changes
    // nothing, so it does not.
    for (name, update) in updates {
        let (n, result) = statements(conn, |c| update(c, id));
        result.unwrap();
        // A move into a failure also numbers it in the apply's failure sequence (one UPDATE of the
        // operation; the apply's new number rides on its refresh write).
        let numbering = i64::from(name == "mark_failed");
        assert_eq!(
            n,
            1 + 6 + 4 + numbering,
            "{name} on an existing row: SET TRANSACTION + transaction + locking the apply, the UPDATE, the refresh's \
             read and its write of the apply"
        );
        let (n, repeat) = statements(conn, |c| update(c, id));
        repeat.unwrap();
        assert_eq!(
            n,
            1 + 6 + 3,
            "{name} repeated: the derived state is unchanged, so the apply is not rewritten"
        );
        let (n, missing) = statements(conn, |c| update(c, ApplyOperationId(987_654)));
        assert!(missing.is_err());
        assert_eq!(
            n,
            1 + 6 + 2,
            "{name} on a missing row: the apply lock finds nothing, the UPDATE matches nothing"
        );
    }

    let (n, _) = statements(conn, |c| store::get(c, id).unwrap());
    assert_eq!(n, 1, "get");
    let (n, _) = statements(conn, |c| {
        store::get_by_apply_and_deployment(c, ApplyId(1), "a").unwrap()
    });
    assert_eq!(n, 1, "get_by_apply_and_deployment");
    let (n, _) = statements(conn, |c| store::list_by_apply(c, ApplyId(1)).unwrap());
    assert_eq!(n, 1, "list_by_apply");

    let task = NewTask {
        apply_id: ApplyId(1),
        apply_operation_id: Some(id),
        table_name: "t".into(),
        ddl: "ALTER TABLE t ADD c INT".into(),
    };
    // Diesel sends BEGIN and COMMIT through `batch_execute`, which wraps the query in two
    // COM_SET_OPTION commands (multi-statements on, then off); the server counts each, so a
    // transaction's BEGIN and COMMIT cost 3 each here.
    let (n, _) = statements(conn, |c| {
        c.transaction(|_| Ok::<_, diesel::result::Error>(()))
            .unwrap()
    });
    assert_eq!(
        n, 6,
        "an empty Diesel transaction: BEGIN and COMMIT, 3 each"
    );
    let (n, _) = statements(conn, |c| tasks::insert(c, &task).unwrap());
    assert_eq!(
        n,
        6 + 3,
        "linked task insert: transaction + SELECT … FOR UPDATE, INSERT, LAST_INSERT_ID()"
    );
    let unlinked = NewTask {
        apply_operation_id: None,
        ..task.clone()
    };
    let (n, _) = statements(conn, |c| tasks::insert(c, &unlinked).unwrap());
    assert_eq!(
        n, 2,
        "unlinked task insert: INSERT, LAST_INSERT_ID(), no transaction"
    );
    let (n, _) = statements(conn, |c| store::delete_by_apply(c, ApplyId(1)).unwrap());
    assert_eq!(
        n,
        6 + 2,
        "delete_by_apply: transaction + DELETE, UPDATE tasks"
    );
    let (n, _) = statements(conn, |c| store::delete_by_apply(c, ApplyId(1)).unwrap());
    assert_eq!(n, 6 + 1, "delete_by_apply of nothing: transaction + DELETE");
}

/// The worker contract's statement costs: a claim is the unlocked candidate read, then SET
/// TRANSACTION, the transaction bracket (6, see above), locking the apply's row, the one-row SELECT
/// … FOR UPDATE SKIP LOCKED, the UPDATE and the apply refresh's read (and its write when the
/// derived state changes); one that finds nothing is the candidate read alone. A leased state write
/// is a transaction with the apply lock, the UPDATE and the refresh; heartbeat and release, which
/// change no state, are the UPDATE (and reading the new expiry back).
#[test]
fn mysql_statements_per_claim_and_leased_write() {
    use applyops::state::{CutoverPolicy, FailurePolicy};
    use applyops::store::{claims, leases};

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    crate::fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let options = crate::fixtures::opts("counted");
    // Warm the prepared-statement cache.
    let warm = claims::claim_next(conn, &options).unwrap().unwrap();
    leases::mark_completed(conn, &warm.lease).unwrap();

    let (n, claimed) = statements(conn, |c| claims::claim_next(c, &options).unwrap());
    let mut claimed = claimed.expect("claimable");
    assert_eq!(
        n,
        1 + 1 + 6 + 4,
        "claim_next: candidate SELECT + SET TRANSACTION + BEGIN/COMMIT + locking the apply + \
         locking SELECT + UPDATE + the refresh's read (the apply stays running: no write)"
    );
    let (n, _) = statements(conn, |c| {
        leases::update_state(c, &claimed.lease, ApplyState::WaitingForCutover).unwrap()
    });
    assert_eq!(
        n,
        1 + 6 + 3,
        "a leased write: SET TRANSACTION + transaction + locking the apply, the UPDATE, the refresh's read"
    );
    let (n, _) = statements(conn, |c| {
        leases::update_state(c, &claimed.lease, ApplyState::WaitingForCutover).unwrap()
    });
    assert_eq!(n, 1 + 6 + 3, "the same write again");
    let (n, _) = statements(conn, |c| leases::heartbeat(c, &mut claimed.lease).unwrap());
    assert_eq!(n, 2, "heartbeat: UPDATE + reading the stored expiry");
    let (n, _) = statements(conn, |c| {
        leases::save_engine_state(c, &claimed.lease, b"checkpoint").unwrap()
    });
    assert_eq!(n, 1, "a checkpoint: the UPDATE alone");
    let (n, _) = statements(conn, |c| {
        leases::set_external_id(c, &claimed.lease, "job-1").unwrap()
    });
    assert_eq!(n, 1, "an external id: the UPDATE alone");
    let (n, _) = statements(conn, |c| leases::release(c, &claimed.lease).unwrap());
    assert_eq!(n, 1, "release");
    let (n, lost) = statements(conn, |c| leases::release(c, &claimed.lease));
    assert!(lost.is_err());
    assert_eq!(
        n, 2,
        "a lost lease: the UPDATE, then the row check that tells lost from missing"
    );
    while let Some(rest) = claims::claim_next(conn, &options).unwrap() {
        leases::mark_completed(conn, &rest.lease).unwrap();
    }
    let (n, none) = statements(conn, |c| claims::claim_next(c, &options).unwrap());
    assert!(none.is_none());
    assert_eq!(
        n, 1,
        "an empty claim: the candidate SELECT alone, no transaction"
    );
}

#[test]
fn mysql_a_rollout_is_read_in_the_same_statements_whatever_its_size() {
    use crate::fixtures::{request, rollout};
    use applyops::state::{ControlRequestKind, CutoverPolicy, FailurePolicy};
    use applyops::store::applies;

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let mut counts = Vec::new();
    for size in [1, 10] {
        let (apply_id, ids) = rollout(conn, size, CutoverPolicy::Rolling, FailurePolicy::Halt);
        for (n, id) in ids.iter().enumerate() {
            for t in 0..3 {
                tasks::insert(
                    conn,
                    &NewTask {
                        apply_id,
                        apply_operation_id: Some(*id),
                        table_name: format!("t{n}_{t}"),
                        ddl: "ALTER TABLE t ADD COLUMN c INT".to_owned(),
                    },
                )
                .unwrap();
            }
        }
        request(conn, apply_id, None, ControlRequestKind::Stop);
        let (n, read) = statements(conn, |c| applies::rollout(c, apply_id).unwrap().unwrap());
        assert_eq!(read.operations.len(), size);
        counts.push(n);
    }
    assert_eq!(counts[0], counts[1], "1 and 10 operations");
    assert_eq!(
        counts[0],
        3 + 4 + 3,
        "BEGIN (with Diesel's session options), 4 SELECTs, COMMIT"
    );
}

#[test]
fn mysql_create_rollout_takes_the_same_statements_for_1_and_50_operations() {
    use applyops::models::{NewRollout, NewRolloutOperation};
    use applyops::store::applies;

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let rollout = |name: &str, operations: usize, tasks: usize| {
        (0..operations).fold(
            NewRollout::new(name, format!("db-{name}"), "production", "tester"),
            |rollout, o| {
                rollout.operation((0..tasks).fold(
                    NewRolloutOperation::new(format!("deployment-{o}")),
                    |operation, t| {
                        operation.task(format!("t{t}"), "ALTER TABLE t ADD COLUMN c INT")
                    },
                ))
            },
        )
    };
    // Warm the prepared-statement cache.
    applies::create_rollout(conn, &rollout("warm", 2, 2)).unwrap();
    let (one, created) = statements(conn, |c| {
        applies::create_rollout(c, &rollout("one", 1, 10)).unwrap()
    });
    assert_eq!(created.operations.len(), 1);
    let (fifty, created) = statements(conn, |c| {
        applies::create_rollout(c, &rollout("fifty", 50, 10)).unwrap()
    });
    assert_eq!(created.operations.len(), 50);
    assert!(created.operations.iter().all(|o| o.tasks.len() == 10));
    assert_eq!(one, fifty, "1 and 50 operations with 10 tasks each");
    assert_eq!(
        one,
        1 + 6 + 7,
        "SET TRANSACTION + transaction + INSERT apply, LAST_INSERT_ID(), INSERT operations, SELECT them, INSERT \
         tasks, SELECT them, SELECT the apply"
    );
    let (none, _) = statements(conn, |c| {
        applies::create_rollout(c, &rollout("bare", 3, 0)).unwrap()
    });
    assert_eq!(
        none,
        1 + 6 + 5,
        "without tasks: no task INSERT nor task SELECT"
    );
}
