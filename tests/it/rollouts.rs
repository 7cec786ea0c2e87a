//! Rollouts as a whole: reading an apply with everything it owns, and deleting a finished one.

use applyops::models::{ApplyOperationId, NewTask};
use applyops::models::{NewApply, NewApplyOperation};
use applyops::schema::applies as applies_table;
use applyops::schema::{
    apply_control_requests as reqs, apply_operations as ops, tasks as tasks_table,
};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy, FailurePolicy};
use applyops::store::applies::{ApplyCursor, ApplyFilter};
use applyops::store::{applies, apply_operations, control_requests, tasks};
use applyops::{DbConnection, StoreError};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    rollout_reads_one_snapshot_while_a_writer_commits_between_its_reads,
    rollout_reads_the_apply_its_operations_in_claim_order_their_tasks_and_pending_requests,
    rollout_of_an_unknown_apply_is_none,
    delete_removes_a_finished_apply_and_everything_it_owns,
    delete_refuses_an_apply_with_an_unsettled_operation_and_writes_nothing,
    delete_of_an_unknown_apply_is_apply_not_found,
    list_is_newest_first_and_pages_by_keyset_without_skips_or_repeats,
    list_and_counts_filter_by_state_database_environment_deployment_and_time,
    list_rejects_a_bad_limit_and_a_foreign_cursor_before_any_sql,
);

fn task(
    conn: &mut applyops::DbConnection,
    apply_id: applyops::ApplyId,
    operation: Option<ApplyOperationId>,
    table: &str,
) -> applyops::TaskId {
    tasks::insert(
        conn,
        &NewTask {
            apply_id,
            apply_operation_id: operation,
            table_name: table.to_owned(),
            ddl: format!("ALTER TABLE `{table}` ADD COLUMN c INT"),
        },
    )
    .unwrap()
}

fn rollout_reads_the_apply_its_operations_in_claim_order_their_tasks_and_pending_requests(
    db: &TestDb,
) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 3, CutoverPolicy::Barrier, FailurePolicy::Halt);
    let (other_apply, other_ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let t0 = task(conn, apply_id, Some(ids[2]), "users");
    let t1 = task(conn, apply_id, Some(ids[0]), "orders");
    let t2 = task(conn, apply_id, Some(ids[2]), "items");
    let loose = task(conn, apply_id, None, "audit");
    task(conn, other_apply, Some(other_ids[0]), "elsewhere");
    // ids[0] runs under a live lease, so the stop stays pending; the apply defers its cutovers.
    force_state(conn, ids[0], ApplyState::Running);
    live_lease(conn, ids[0]);
    applies::set_defer_cutover(conn, apply_id, true).unwrap();
    let stop = request(conn, apply_id, Some(ids[0]), ControlRequestKind::Stop);
    let cutover = request(conn, apply_id, Some(ids[1]), ControlRequestKind::Cutover);
    let done = request(conn, apply_id, None, ControlRequestKind::Release);
    control_requests::complete(conn, done).unwrap();
    apply_operations::mark_started(conn, ids[1]).unwrap();

    let rollout = applies::rollout(conn, apply_id)
        .unwrap()
        .expect("the apply exists");
    assert_eq!(
        rollout.apply,
        applies::get(conn, apply_id).unwrap().unwrap()
    );
    let operations: Vec<_> = rollout.operations.iter().map(|o| o.operation.id).collect();
    assert_eq!(operations, ids, "claim order");
    assert_eq!(rollout.operations[1].operation.state, ApplyState::Running);
    let task_ids = |i: usize| {
        rollout.operations[i]
            .tasks
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(task_ids(0), [t1]);
    assert!(task_ids(1).is_empty());
    assert_eq!(task_ids(2), [t0, t2], "oldest first");
    assert_eq!(
        rollout
            .unlinked_tasks
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [loose]
    );
    let pending: Vec<_> = rollout.pending_requests.iter().map(|r| r.id).collect();
    assert_eq!(pending, [stop, cutover], "pending only, oldest first");
}

fn rollout_of_an_unknown_apply_is_none(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    assert_eq!(
        applies::rollout(conn, applyops::ApplyId(apply_id.get() + 1)).unwrap(),
        None
    );
}

fn delete_removes_a_finished_apply_and_everything_it_owns(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 4, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let (kept, kept_ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    task(conn, apply_id, Some(ids[0]), "a");
    task(conn, apply_id, Some(ids[1]), "b");
    task(conn, apply_id, None, "c");
    task(conn, kept, Some(kept_ids[0]), "d");
    let stop = request(conn, apply_id, None, ControlRequestKind::Stop);
    control_requests::complete(conn, stop).unwrap();
    applies::set_defer_cutover(conn, apply_id, true).unwrap();
    request(conn, apply_id, Some(ids[3]), ControlRequestKind::Cutover);
    request(conn, kept, None, ControlRequestKind::Stop);
    apply_operations::mark_completed(conn, ids[0]).unwrap();
    apply_operations::mark_failed(conn, ids[1], "boom").unwrap();
    apply_operations::mark_terminal(conn, ids[2], ApplyState::Cancelled).unwrap();
    apply_operations::mark_terminal(conn, ids[3], ApplyState::Reverted).unwrap();

    let deleted = applies::delete(conn, apply_id).unwrap();
    assert_eq!(
        (deleted.operations, deleted.tasks, deleted.control_requests),
        (4, 3, 2)
    );
    assert_eq!(applies::get(conn, apply_id).unwrap(), None);
    let left = |conn: &mut applyops::DbConnection| -> (i64, i64, i64) {
        (
            ops::table.count().get_result(conn).unwrap(),
            tasks_table::table.count().get_result(conn).unwrap(),
            reqs::table.count().get_result(conn).unwrap(),
        )
    };
    assert_eq!(left(conn), (1, 1, 1), "the other apply's rows are kept");
    assert!(applies::rollout(conn, kept).unwrap().is_some());
}

fn delete_refuses_an_apply_with_an_unsettled_operation_and_writes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    for unsettled in ApplyState::ALL.into_iter().filter(|s| {
        !matches!(
            s,
            ApplyState::Completed
                | ApplyState::Failed
                | ApplyState::Cancelled
                | ApplyState::Reverted
        )
    }) {
        let (apply_id, ids) = rollout(conn, 2, CutoverPolicy::Rolling, FailurePolicy::Halt);
        apply_operations::mark_completed(conn, ids[0]).unwrap();
        force_state(conn, ids[1], unsettled);
        task(conn, apply_id, Some(ids[1]), "t");
        let before = applies::rollout(conn, apply_id).unwrap();
        assert!(
            matches!(applies::delete(conn, apply_id), Err(StoreError::ApplyActive { id }) if id == apply_id),
            "{unsettled}"
        );
        assert_eq!(
            applies::rollout(conn, apply_id).unwrap(),
            before,
            "{unsettled}: nothing deleted"
        );
    }
    // A state this version does not know counts as unsettled: it fails closed.
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    force_raw_state(conn, ids[0], "exploded");
    assert!(matches!(
        applies::delete(conn, apply_id),
        Err(StoreError::ApplyActive { .. })
    ));
}

fn delete_of_an_unknown_apply_is_apply_not_found(db: &TestDb) {
    let conn = &mut db.conn();
    let missing = applyops::ApplyId(4_242);
    assert!(matches!(
        applies::delete(conn, missing),
        Err(StoreError::ApplyNotFound { id }) if id == missing
    ));
}

/// Inserts an apply for `database`/`environment` with one operation per deployment, its
/// `created_at` set to `at` (seconds into 2026) and its stored state to `state`.
fn listed_apply(
    conn: &mut applyops::DbConnection,
    name: &str,
    (database, environment): (&str, &str),
    deployments: &[&str],
    at: i64,
    state: ApplyState,
) -> applyops::ApplyId {
    let id = applies::insert(conn, &NewApply::new(name, database, environment, "main")).unwrap();
    for deployment in deployments {
        apply_operations::insert(conn, &NewApplyOperation::new(id, *deployment)).unwrap();
        // Listing does not care about targets: let this one go so the next apply can share it.
        diesel::update(
            applyops::schema::apply_operations::table
                .filter(applyops::schema::apply_operations::apply_id.eq(id)),
        )
        .set(applyops::schema::apply_operations::holds_target.eq(None::<bool>))
        .execute(conn)
        .unwrap();
    }
    let created = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        + chrono::Duration::seconds(at);
    diesel::update(applies_table::table.find(id))
        .set((
            applies_table::created_at.eq(datetime(created)),
            applies_table::state.eq(state),
        ))
        .execute(conn)
        .unwrap();
    id
}

fn ids(page: &applies::Page<applyops::models::Apply>) -> Vec<applyops::ApplyId> {
    page.items.iter().map(|a| a.id).collect()
}

fn list_is_newest_first_and_pages_by_keyset_without_skips_or_repeats(db: &TestDb) {
    let conn = &mut db.conn();
    let scope = ("commerce", "production");
    // Two applies share a created_at: the id breaks the tie.
    let made: Vec<_> = [10, 20, 20, 30, 40, 50, 60]
        .iter()
        .enumerate()
        .map(|(n, at)| {
            listed_apply(
                conn,
                &format!("a{n}"),
                scope,
                &["east"],
                *at,
                ApplyState::Pending,
            )
        })
        .collect();
    // Newest first by (created_at, id): a1 and a2 share created_at 20, so a2 (the higher id) first.
    let mut newest_first = made.clone();
    newest_first.sort_by(|a, b| {
        let at = |id: &applyops::ApplyId| {
            [10, 20, 20, 30, 40, 50, 60][made.iter().position(|m| m == id).unwrap()]
        };
        at(b).cmp(&at(a)).then(b.cmp(a))
    });
    let page = |after: Option<ApplyCursor>, conn: &mut applyops::DbConnection| {
        applies::list(
            conn,
            &ApplyFilter {
                limit: Some(3),
                after,
                ..ApplyFilter::default()
            },
        )
        .unwrap()
    };
    let first = page(None, conn);
    assert_eq!(ids(&first), newest_first[..3]);
    // An apply added meanwhile, newer than everything, does not shift the next page.
    listed_apply(conn, "late", scope, &["east"], 100, ApplyState::Pending);
    // The cursor travels as text.
    let cursor: ApplyCursor = first.next.clone().unwrap().to_string().parse().unwrap();
    let second = page(Some(cursor), conn);
    assert_eq!(ids(&second), newest_first[3..6]);
    let third = page(second.next.clone(), conn);
    assert_eq!(ids(&third), newest_first[6..]);
    assert_eq!(third.next, None, "the last page says so");
    let everything = applies::list(conn, &ApplyFilter::default()).unwrap();
    assert_eq!(everything.items.len(), 8);
    assert_eq!(everything.next, None);
}

fn list_and_counts_filter_by_state_database_environment_deployment_and_time(db: &TestDb) {
    let conn = &mut db.conn();
    let a = listed_apply(
        conn,
        "a",
        ("commerce", "production"),
        &["east", "west"],
        10,
        ApplyState::Running,
    );
    let b = listed_apply(
        conn,
        "b",
        ("commerce", "staging"),
        &["east"],
        20,
        ApplyState::Completed,
    );
    let c = listed_apply(
        conn,
        "c",
        ("billing", "production"),
        &["west"],
        30,
        ApplyState::Running,
    );
    let d = listed_apply(
        conn,
        "d",
        ("commerce", "production"),
        &["north"],
        40,
        ApplyState::Failed,
    );
    let list = |conn: &mut applyops::DbConnection, filter: ApplyFilter| {
        ids(&applies::list(conn, &filter).unwrap())
    };
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                states: vec![ApplyState::Running],
                ..Default::default()
            }
        ),
        [c, a]
    );
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                states: vec![ApplyState::Running, ApplyState::Failed],
                ..Default::default()
            }
        ),
        [d, c, a]
    );
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                database_name: Some("commerce".into()),
                ..Default::default()
            }
        ),
        [d, b, a]
    );
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                environment: Some("production".into()),
                ..Default::default()
            }
        ),
        [d, c, a]
    );
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                deployment: Some("east".into()),
                ..Default::default()
            }
        ),
        [b, a],
        "any operation's deployment"
    );
    assert!(
        list(
            conn,
            ApplyFilter {
                deployment: Some("east ".into()),
                ..Default::default()
            }
        )
        .is_empty(),
        "compared exactly"
    );
    let since = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 30)
        .unwrap();
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                created_since: Some(since),
                ..Default::default()
            }
        ),
        [d, c]
    );
    assert_eq!(
        list(
            conn,
            ApplyFilter {
                database_name: Some("commerce".into()),
                environment: Some("production".into()),
                deployment: Some("north".into()),
                ..Default::default()
            }
        ),
        [d]
    );
    assert_eq!(
        applies::counts_by_state(conn, &ApplyFilter::default()).unwrap(),
        [
            (ApplyState::Running, 2),
            (ApplyState::Completed, 1),
            (ApplyState::Failed, 1)
        ]
    );
    assert_eq!(
        applies::counts_by_state(
            conn,
            &ApplyFilter {
                environment: Some("production".into()),
                limit: Some(1),
                ..Default::default()
            }
        )
        .unwrap(),
        [(ApplyState::Running, 2), (ApplyState::Failed, 1)],
        "the page fields are ignored"
    );
    diesel::update(applies_table::table.find(b))
        .set(applies_table::state.eq("exploded"))
        .execute(conn)
        .unwrap();
    assert!(matches!(
        applies::counts_by_state(conn, &ApplyFilter::default()),
        Err(StoreError::UnknownState { table: "applies", id, value }) if id == b.get() && value == "exploded"
    ));
}

fn list_rejects_a_bad_limit_and_a_foreign_cursor_before_any_sql(db: &TestDb) {
    let conn = &mut db.conn();
    for limit in [0, 1_001] {
        assert!(matches!(
            applies::list(
                conn,
                &ApplyFilter {
                    limit: Some(limit),
                    ..Default::default()
                }
            ),
            Err(StoreError::InvalidInput { field: "limit", .. })
        ));
    }
    for text in ["", "12", "x.1", "1.x", "1.2.3", "99999999999999999999.1"] {
        assert!(
            matches!(
                text.parse::<ApplyCursor>(),
                Err(StoreError::InvalidInput { field: "after", .. })
            ),
            "{text:?}"
        );
    }
    assert!(applies::list(
        conn,
        &ApplyFilter {
            limit: Some(1_000),
            ..Default::default()
        }
    )
    .is_ok());
}

/// The `Handler_read_*` counters of this session, summed: every row or index entry the server read.
fn rows_touched(conn: &mut diesel::mysql::MysqlConnection) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
        value: String,
    }
    diesel::sql_query("SHOW SESSION STATUS LIKE 'Handler_read%'")
        .load::<Status>(conn)
        .unwrap()
        .iter()
        .map(|s| s.value.parse::<i64>().unwrap())
        .sum()
}

/// A page of `list` reads about as many index entries as it returns, at 100,000 applies: the query
/// walks `applies_created_at_id_idx` backwards instead of sorting the table (which would read every
/// row). Measured by the server's own row counters, so it checks the query `list` really sends.
#[test]
fn mysql_a_list_page_reads_about_its_own_rows_at_100000_applies() {
    const APPLIES: usize = 100_000;
    let db = TestDb::new(crate::harness::Kind::Mysql);
    let mut conn = db.conn();
    let applyops::DbConnection::Mysql(mysql) = &mut conn else {
        unreachable!("a MySQL test database")
    };
    let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let rows: Vec<_> = (0..APPLIES)
        .map(|n| {
            let at = start + chrono::Duration::seconds(n as i64);
            let state = if n % 2 == 0 {
                ApplyState::Running
            } else {
                ApplyState::Completed
            };
            (
                applies_table::apply_identifier.eq(format!("apply-{n}")),
                applies_table::database_name.eq("commerce"),
                applies_table::environment.eq("production"),
                applies_table::deployment.eq("main"),
                applies_table::state.eq(state),
                applies_table::created_at.eq(datetime(at)),
                applies_table::updated_at.eq(datetime(at)),
            )
        })
        .collect();
    for chunk in rows.chunks(2_000) {
        diesel::insert_into(applies_table::table)
            .values(chunk)
            .execute(mysql)
            .unwrap();
    }
    diesel::sql_query("ANALYZE TABLE applies")
        .execute(mysql)
        .unwrap();
    for (filter, bound) in [
        (
            ApplyFilter {
                limit: Some(10),
                ..Default::default()
            },
            30,
        ),
        (
            ApplyFilter {
                limit: Some(10),
                states: vec![ApplyState::Running],
                database_name: Some("commerce".into()),
                ..Default::default()
            },
            60,
        ),
    ] {
        let DbConnection::Mysql(mysql) = &mut conn else {
            unreachable!()
        };
        let before = rows_touched(mysql);
        let page = applies::list(&mut conn, &filter).unwrap();
        let DbConnection::Mysql(mysql) = &mut conn else {
            unreachable!()
        };
        let touched = rows_touched(mysql) - before;
        assert_eq!(page.items.len(), 10);
        assert!(page
            .items
            .windows(2)
            .all(|w| w[0].created_at > w[1].created_at));
        // The first page continues from the cursor the same way.
        let next = applies::list(
            &mut conn,
            &ApplyFilter {
                after: page.next.clone(),
                ..filter.clone()
            },
        )
        .unwrap();
        assert!(next.items[0].created_at < page.items[9].created_at);
        assert!(
            touched < bound,
            "{touched} rows read for a page of 10 under {filter:?}"
        );
    }
}

/// `rollout` (what `applyops status` shows) reads the apply, its operations, tasks and requests as
/// one moment of the database: a writer that changes the apply and all its operations together in
/// each transaction, as fast as it can, is never seen half-way (the apply from one of its commits,
/// an operation from the next).
fn rollout_reads_one_snapshot_while_a_writer_commits_between_its_reads(db: &TestDb) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::sync::Arc;

    let (apply_id, _) = rollout(
        &mut db.conn(),
        3,
        CutoverPolicy::Parallel,
        FailurePolicy::Halt,
    );
    // One moment before the writer's first: the apply's budget and every attempt at 0.
    diesel::update(applies_table::table.find(apply_id))
        .set(applies_table::max_attempts.eq(0))
        .execute(&mut db.conn())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut conn) = (Arc::clone(&stop), db.conn());
        std::thread::spawn(move || {
            let mut n = 1;
            while !stop.load(SeqCst) {
                conn.transaction(|c| {
                    diesel::update(applies_table::table.find(apply_id))
                        .set(applies_table::max_attempts.eq(n))
                        .execute(c)?;
                    diesel::update(ops::table.filter(ops::apply_id.eq(apply_id)))
                        .set(ops::attempt.eq(n))
                        .execute(c)
                })
                .expect("the writer's transaction");
                n += 1;
            }
            n
        })
    };
    let conn = &mut db.conn();
    for _ in 0..300 {
        let read = applies::rollout(conn, apply_id).unwrap().unwrap();
        for op in read.operations.iter().map(|o| &o.operation) {
            assert_eq!(
                op.attempt, read.apply.max_attempts,
                "operation {} read from another moment than its apply",
                op.id
            );
        }
    }
    stop.store(true, SeqCst);
    let commits = writer.join().unwrap();
    assert!(
        commits > 10,
        "the writer committed while we read ({commits})"
    );
}

/// A snapshot read that fails half-way (here its table of tasks is gone) leaves its connection as
/// it found it: the next transaction on it writes, at the session's READ COMMITTED, rather than
/// inheriting the read's REPEATABLE READ, READ ONLY.
#[test]
fn mysql_a_failed_snapshot_read_leaves_its_connection_writable() {
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::Text;

    #[derive(QueryableByName)]
    struct Level {
        #[diesel(sql_type = Text)]
        level: String,
    }

    let db = TestDb::new(crate::harness::Kind::Mysql);
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    conn.batch_execute("DROP TABLE tasks").unwrap();
    assert!(applies::rollout(conn, apply_id).is_err(), "the read fails");
    conn.transaction(|c| {
        let level: Level = diesel::sql_query("SELECT @@tx_isolation AS level").get_result(c)?;
        assert_eq!(level.level, "READ-COMMITTED");
        diesel::update(ops::table.find(ids[0]))
            .set(ops::attempt.eq(1))
            .execute(c)
    })
    .expect("the next transaction writes");
}
