//! Statements per store operation, counted by the server: MySQL/MariaDB session status `Questions`
//! (every command but a prepare) per call, and `Com_stmt_prepare` (the prepares) over warm calls,
//! which must be 0, so that a warm call's round trips are its `Questions`. Every state write is one
//! UPDATE of the operation in a transaction that locks its apply first and refreshes the apply's
//! derived state last, on the found and the not-found path alike. The session is READ COMMITTED from
//! the start (no `SET TRANSACTION` per transaction), `BEGIN`, `COMMIT` and `ROLLBACK` are one
//! prepared statement each, and after its first use on a connection no statement is prepared again.

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

/// The session's `Questions`: the commands it sent, prepares aside.
fn round_trips(conn: &mut DbConnection) -> i64 {
    diesel::sql_query("SHOW SESSION STATUS LIKE 'Questions'")
        .get_result::<Status>(conn)
        .unwrap()
        .value
        .parse()
        .unwrap()
}

/// The session's `Com_stmt_prepare`.
fn prepares(conn: &mut DbConnection) -> i64 {
    diesel::sql_query("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'")
        .get_result::<Status>(conn)
        .unwrap()
        .value
        .parse()
        .unwrap()
}

/// Statements the server saw while `op` ran, net of the counter reads themselves.
fn statements<T>(conn: &mut DbConnection, op: impl FnOnce(&mut DbConnection) -> T) -> (i64, T) {
    let a = round_trips(conn);
    let b = round_trips(conn);
    let read_cost = b - a;
    let out = op(conn);
    let c = round_trips(conn);
    (c - b - read_cost, out)
}

/// Statements prepared while `op` ran, net of the counter reads themselves.
fn prepared<T>(conn: &mut DbConnection, op: impl FnOnce(&mut DbConnection) -> T) -> (i64, T) {
    let a = prepares(conn);
    let b = prepares(conn);
    let read_cost = b - a;
    let out = op(conn);
    let c = prepares(conn);
    (c - b - read_cost, out)
}

#[test]
fn mysql_statements_per_operation() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    crate::fixtures::ensure_apply(conn, ApplyId(99));
    // Warm the prepared-statement cache so the first-use PREPAREs are not in the numbers.
    let warm = store::insert(conn, &NewApplyOperation::new(ApplyId(99), "warm")).unwrap();
    store::mark_started(conn, warm).unwrap();

    let (n, id) = statements(conn, |c| {
        store::insert(c, &NewApplyOperation::new(ApplyId(1), "a")).unwrap()
    });
    assert_eq!(
        n,
        2 + 5,
        "insert: BEGIN and COMMIT + locking the apply, INSERT, LAST_INSERT_ID(), the refresh's read, \
         its write of the new operation's claim decision (a pending operation leaves a pending \
         apply as it is)"
    );
    let (n, conflict) = statements(conn, |c| {
        store::insert(c, &NewApplyOperation::new(ApplyId(1), "a"))
    });
    assert!(conflict.is_err());
    assert_eq!(
        n,
        2 + 2,
        "conflicting insert: BEGIN and ROLLBACK + locking the apply, INSERT"
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
            2 + 4 + numbering,
            "{name} on an existing row: BEGIN and COMMIT + locking the apply, reading the operations, \
             the UPDATE (with the operation's new claim decision), the apply's write"
        );
        let (n, repeat) = statements(conn, |c| update(c, id));
        repeat.unwrap();
        assert_eq!(
            n,
            2 + 3,
            "{name} repeated: the derived state is unchanged, so the apply is not rewritten"
        );
        let (n, missing) = statements(conn, |c| update(c, ApplyOperationId(987_654)));
        assert!(missing.is_err());
        assert_eq!(
            n,
            2 + 2,
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
    // Diesel alone sends BEGIN and COMMIT through `batch_execute`, which wraps the query in two
    // COM_SET_OPTION commands (multi-statements on, then off): 3 round trips each. `db::MysqlConn`
    // runs them as prepared statements instead.
    let (n, _) = statements(conn, |c| {
        c.transaction(|_| Ok::<_, diesel::result::Error>(()))
            .unwrap()
    });
    assert_eq!(
        n, 2,
        "an empty Diesel transaction: BEGIN and COMMIT, 1 each"
    );
    let (n, _) = statements(conn, |c| tasks::insert(c, &task).unwrap());
    assert_eq!(
        n,
        2 + 3,
        "linked task insert: BEGIN and COMMIT + SELECT … FOR UPDATE, INSERT, LAST_INSERT_ID()"
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
        2 + 2,
        "delete_by_apply: BEGIN and COMMIT + DELETE, UPDATE tasks"
    );
    let (n, _) = statements(conn, |c| store::delete_by_apply(c, ApplyId(1)).unwrap());
    assert_eq!(
        n,
        2 + 1,
        "delete_by_apply of nothing: BEGIN and COMMIT + DELETE"
    );
}

/// The worker contract's round trips: a claim is the unlocked candidate read, then BEGIN, locking the
/// apply's row, reading its operations, the one-row SELECT … FOR UPDATE SKIP LOCKED, the UPDATE
/// (which also stores the taken operation's new claim decision), the apply's write when its derived
/// state changes, and COMMIT: the refresh reuses the operations read before the take. One that
/// finds nothing is the candidate read alone. A leased state write is a transaction with the apply
/// lock, the read of the operations and the UPDATE (which stores the operation's new decision);
/// heartbeat and release, which change no state, are the UPDATE (and reading the new expiry back).
#[test]
fn mysql_statements_per_claim_and_leased_write() {
    use applyops::state::{CutoverPolicy, FailurePolicy};
    use applyops::store::{claims, leases};

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let (apply_id, _) =
        crate::fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let options = crate::fixtures::opts("counted");
    // Warm the prepared-statement cache.
    let warm = claims::claim_next(conn, &options).unwrap().unwrap();
    leases::mark_completed(conn, &warm.lease).unwrap();

    let (n, claimed) = statements(conn, |c| claims::claim_next(c, &options).unwrap());
    let mut claimed = claimed.expect("claimable");
    assert_eq!(
        n,
        1 + 2 + 4,
        "claim_next starting an operation of a running apply: candidate SELECT + BEGIN and COMMIT + \
         locking the apply + reading its operations + locking SELECT + UPDATE, no other write"
    );
    let stored = applyops::store::applies::get(conn, apply_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        applyops::store::applies::refresh(conn, apply_id).unwrap(),
        stored,
        "the refresh the claim did without would have changed nothing"
    );
    let (n, _) = statements(conn, |c| {
        leases::update_state(c, &claimed.lease, ApplyState::WaitingForCutover).unwrap()
    });
    assert_eq!(
        n,
        2 + 3,
        "a leased write: BEGIN and COMMIT + locking the apply, reading the operations, the UPDATE \
         with the operation's new claim decision (running: recovery; waiting_for_cutover: the \
         cutover)"
    );
    let (n, _) = statements(conn, |c| {
        leases::update_state(c, &claimed.lease, ApplyState::WaitingForCutover).unwrap()
    });
    assert_eq!(n, 2 + 3, "the same write again");
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
    crate::fixtures::rollout(conn, 2, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let (n, first) = statements(conn, |c| claims::claim_next(c, &options).unwrap());
    let first = first.expect("claimable");
    assert_eq!(
        n,
        1 + 2 + 5,
        "the first claim of a pending apply: candidate SELECT + BEGIN and COMMIT + locking the \
         apply + reading its operations + locking SELECT + UPDATE + writing the apply running"
    );
    let stored = applyops::store::applies::get(conn, first.operation.apply_id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, ApplyState::Running);
    assert_eq!(
        applyops::store::applies::refresh(conn, first.operation.apply_id).unwrap(),
        stored,
        "what the claim wrote is the derivation"
    );
}

/// [`mysql_statements_per_claim_and_leased_write`] on PostgreSQL, counted on the client (Diesel's
/// `StartQuery` events: each is one round trip of the extended protocol once its statement is
/// prepared, and the calls are warmed first). Where PostgreSQL differs: a unit of work that waits for
/// its apply's lock reads the apply again once the lock is its own (one statement more), and the
/// heartbeat is one UPDATE that locks its row in a sub-select and returns the new expiry. (A state
/// write that takes its operation's target runs in a savepoint, two statements more; none here
/// does.)
#[test]
fn postgres_statements_per_claim_and_leased_write() {
    use applyops::state::{CutoverPolicy, FailurePolicy};
    use applyops::store::{claims, leases};
    use diesel::connection::Connection;

    let db = TestDb::new(Kind::Postgres);
    let conn = &mut db.conn();
    let (apply_id, _) =
        crate::fixtures::rollout(conn, 3, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let options = crate::fixtures::opts("counted");
    // Warm the prepared-statement cache.
    let mut warm = claims::claim_next(conn, &options).unwrap().unwrap();
    leases::update_state(conn, &warm.lease, ApplyState::WaitingForCutover).unwrap();
    leases::heartbeat(conn, &mut warm.lease).unwrap();
    leases::mark_completed(conn, &warm.lease).unwrap();
    let counter = QueryCounter::default();
    conn.set_instrumentation(counter.clone());
    let mut counted = |op: &mut dyn FnMut(&mut DbConnection)| {
        let before = counter.0.load(std::sync::atomic::Ordering::Relaxed);
        op(conn);
        counter.0.load(std::sync::atomic::Ordering::Relaxed) - before
    };

    let mut claimed = None;
    let n = counted(&mut |c| claimed = claims::claim_next(c, &options).unwrap());
    let mut claimed = claimed.expect("claimable");
    assert_eq!(
        n,
        1 + 2 + 4,
        "claim_next starting an operation of a running apply: candidate SELECT + BEGIN and COMMIT + \
         locking the apply + reading its operations + locking SELECT + UPDATE"
    );
    let lease = claimed.lease.clone();
    let n =
        counted(&mut |c| leases::update_state(c, &lease, ApplyState::WaitingForCutover).unwrap());
    assert_eq!(
        n,
        2 + 4,
        "a leased write: BEGIN and COMMIT + locking the apply and reading it again (a new snapshot, \
         once the lock is ours), reading the operations, the UPDATE (no savepoint: the operation \
         holds its target already, so the UPDATE cannot collide on it)"
    );
    let n = counted(&mut |c| {
        leases::heartbeat(c, &mut claimed.lease).unwrap();
    });
    assert_eq!(
        n, 1,
        "heartbeat: one UPDATE that locks the row in its sub-select and returns the new expiry"
    );
    let lease = claimed.lease.clone();
    let n = counted(&mut |c| leases::save_engine_state(c, &lease, b"checkpoint").unwrap());
    assert_eq!(n, 1, "a checkpoint: the UPDATE alone");
    let n = counted(&mut |c| leases::release(c, &lease).unwrap());
    assert_eq!(n, 1, "release");
    let n = counted(&mut |c| assert!(leases::release(c, &lease).is_err()));
    assert_eq!(
        n, 2,
        "a lost lease: the UPDATE, then the row check that tells lost from missing"
    );
    let n = counted(&mut |c| {
        while let Some(rest) = claims::claim_next(c, &options).unwrap() {
            leases::mark_completed(c, &rest.lease).unwrap();
        }
    });
    assert!(n > 0);
    let n = counted(&mut |c| assert!(claims::claim_next(c, &options).unwrap().is_none()));
    assert_eq!(
        n, 1,
        "an empty claim: the candidate SELECT alone, no transaction"
    );
    let n = counted(&mut |c| {
        assert!(applyops::store::applies::get(c, apply_id)
            .unwrap()
            .is_some())
    });
    assert_eq!(n, 1, "get of an apply");
    let other = crate::fixtures::apply(&mut db.conn(), false);
    let n = counted(&mut |c| {
        store::insert(c, &NewApplyOperation::new(other, "warm")).unwrap();
    });
    assert!(n > 0);
    let n = counted(&mut |c| {
        store::insert(c, &NewApplyOperation::new(other, "counted")).unwrap();
    });
    assert_eq!(
        n,
        2 + 7,
        "insert: BEGIN and COMMIT + locking the apply and reading it again, SAVEPOINT, INSERT … \
         RETURNING id, RELEASE SAVEPOINT, the refresh's read, the new operation's decision"
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
    // The first size warms the statement cache; the next two are counted.
    for size in [2, 1, 10] {
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
    assert_eq!(counts[1], counts[2], "1 and 10 operations");
    assert_eq!(
        counts[1],
        1 + 1 + 4 + 1,
        "SET TRANSACTION (one snapshot), BEGIN, 4 SELECTs, COMMIT"
    );
}

/// A rollout named `name` of `operations` operations with `tasks` tasks each.
fn sized_rollout(name: &str, operations: usize, tasks: usize) -> applyops::models::NewRollout {
    use applyops::models::{NewRollout, NewRolloutOperation};
    (0..operations).fold(
        NewRollout::new(name, format!("db-{name}"), "production", "tester"),
        |rollout, o| {
            rollout.operation((0..tasks).fold(
                NewRolloutOperation::new(format!("deployment-{o}")),
                |operation, t| operation.task(format!("t{t}"), "ALTER TABLE t ADD COLUMN c INT"),
            ))
        },
    )
}

#[test]
fn mysql_create_rollout_takes_the_same_statements_for_1_and_50_operations() {
    use applyops::store::applies;

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    let rollout = sized_rollout;
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
        2 + 7,
        "BEGIN and COMMIT + INSERT apply, LAST_INSERT_ID(), INSERT operations, SELECT them, INSERT \
         tasks, SELECT them, SELECT the apply"
    );
    // Not counted above: a multi-row INSERT has as many placeholders as rows, so the operations'
    // INSERT, the tasks' INSERT and the tasks' SELECT by operation ids take a new SQL text per size
    // and are prepared on every call (Diesel does not cache them).
    let (none, _) = statements(conn, |c| {
        applies::create_rollout(c, &rollout("bare", 3, 0)).unwrap()
    });
    assert_eq!(none, 2 + 5, "without tasks: no task INSERT nor task SELECT");
}

/// Counts the statements Diesel sends on a connection (its instrumentation's `StartQuery` events,
/// `BEGIN` and `COMMIT` included): SQLite has no server to count them.
#[derive(Clone, Default)]
struct QueryCounter(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl diesel::connection::Instrumentation for QueryCounter {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::StartQuery { .. } = event {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[test]
fn sqlite_create_rollout_takes_the_same_statements_for_1_and_50_operations() {
    use applyops::store::applies;
    use diesel::connection::Connection;

    let db = TestDb::new(Kind::Sqlite);
    let conn = &mut db.conn();
    let counter = QueryCounter::default();
    conn.set_instrumentation(counter.clone());
    let mut counted = |rollout: applyops::models::NewRollout| {
        let before = counter.0.load(std::sync::atomic::Ordering::Relaxed);
        let created = applies::create_rollout(conn, &rollout).unwrap();
        let after = counter.0.load(std::sync::atomic::Ordering::Relaxed);
        (after - before, created)
    };
    let (one, created) = counted(sized_rollout("one", 1, 10));
    assert_eq!(created.operations.len(), 1);
    let (fifty, created) = counted(sized_rollout("fifty", 50, 10));
    assert_eq!(created.operations.len(), 50);
    assert!(created.operations.iter().all(|o| o.tasks.len() == 10));
    assert_eq!(one, fifty, "1 and 50 operations with 10 tasks each");
    assert_eq!(
        one,
        2 + 7,
        "BEGIN and COMMIT + INSERT apply, its id, INSERT operations, SELECT them, INSERT tasks, \
         SELECT them, SELECT the apply"
    );
    let (none, _) = counted(sized_rollout("bare", 3, 0));
    assert_eq!(none, 2 + 5, "without tasks: no task INSERT nor task SELECT");
}

/// After its first use on a connection, no statement of a claim (copy or cutover), a leased write,
/// a heartbeat, a checkpoint, a release or an operator's write is prepared again: each is executed
/// from the connection's statement cache, its SQL text not re-sent.
#[test]
fn mysql_warm_claims_and_writes_prepare_nothing() {
    use applyops::state::{CutoverPolicy, FailurePolicy};
    use applyops::store::{claims, leases};

    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    crate::fixtures::rollout(conn, 6, CutoverPolicy::Parallel, FailurePolicy::Halt);
    let options = crate::fixtures::opts("counted");
    let cycle = |c: &mut DbConnection| {
        let mut claimed = claims::claim_next(c, &options).unwrap().expect("claimable");
        leases::heartbeat(c, &mut claimed.lease).unwrap();
        leases::save_engine_state(c, &claimed.lease, b"step").unwrap();
        leases::update_state(c, &claimed.lease, ApplyState::WaitingForCutover).unwrap();
        leases::release(c, &claimed.lease).unwrap();
        // The cutover claim completes the cutover requests naming the operation and its apply
        // (none here): its UPDATEs are prepared once too.
        let cut = claims::claim_next_cutover(c, &options)
            .unwrap()
            .expect("a due cutover");
        assert_eq!(cut.operation.id, claimed.operation.id);
        leases::release(c, &cut.lease).unwrap();
        store::update_state(c, claimed.operation.id, ApplyState::Running).unwrap();
        store::mark_completed(c, claimed.operation.id).unwrap();
    };
    let (first, ()) = prepared(conn, cycle);
    assert!(
        first > 0,
        "the first cycle prepares its statements: {first}"
    );
    for round in 0..3 {
        let (n, ()) = prepared(conn, cycle);
        assert_eq!(n, 0, "round {round} prepared {n} statements again");
    }
}
