//! The claim queries' plans on MySQL/MariaDB and PostgreSQL with a production-like table: each
//! claim walks its own index (`apply_operations_copy_walk_idx`,
//! `apply_operations_cutover_walk_idx`) in (created_at, id) order, with no full scan and no sort
//! anywhere.

use applyops::db::DbConnection;
use applyops::models::ApplyOperationId;
use applyops::schema::{applies, apply_control_requests as reqs, apply_operations as ops};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, ControlRequestKind, ControlRequestStatus, CutoverPolicy};
use applyops::store::claims::{self, ClaimScope};
use diesel::prelude::*;

use crate::harness::{Kind, TestDb};

const APPLIES: i64 = 1_000;
const DEPLOYMENTS: i64 = 12;

/// [`seed`]'s rows, on a backend's own connection.
macro_rules! seed_rows {
    ($conn:expr) => {{
        let conn = $conn;
        let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let apply_rows: Vec<_> = (0..APPLIES)
            .map(|a| {
                (
                    applies::apply_identifier.eq(format!("apply-{a}")),
                    applies::database_name.eq("db"),
                    applies::environment.eq("production"),
                    applies::deployment.eq("main"),
                    applies::defer_cutover.eq(a % 10 == 0),
                    applies::state.eq(ApplyState::Running),
                    applies::created_at.eq(datetime(at)),
                    applies::updated_at.eq(datetime(at)),
                )
            })
            .collect();
        for chunk in apply_rows.chunks(500) {
            diesel::insert_into(applies::table)
                .values(chunk)
                .execute(conn)
                .unwrap();
        }
        use ApplyState::{Cancelled, Completed, Failed, Pending, Running, WaitingForCutover};
        let states = [
            Completed,
            Completed,
            Completed,
            Completed,
            Failed,
            Cancelled,
            Completed,
            Running,
            WaitingForCutover,
            Pending,
        ];
        let policies = CutoverPolicy::ALL;
        let mut op_rows = Vec::new();
        for a in 0..APPLIES {
            for d in 0..DEPLOYMENTS {
                let n = a * DEPLOYMENTS + d;
                let created = at + chrono::Duration::seconds(n);
                op_rows.push((
                    ops::apply_id.eq(a + 1),
                    ops::deployment.eq(format!("deployment-{d}")),
                    ops::state.eq(states[(n % 10) as usize]),
                    ops::cutover_policy.eq(policies[(a % 3) as usize]),
                    ops::created_at.eq(datetime(created)),
                    ops::updated_at.eq(datetime(created)),
                ));
            }
        }
        for chunk in op_rows.chunks(1_000) {
            diesel::insert_into(ops::table)
                .values(chunk)
                .execute(conn)
                .unwrap();
        }
        let kinds = ControlRequestKind::ALL;
        let request_rows: Vec<_> = (0..2_000)
            .map(|n| {
                (
                    reqs::apply_id.eq(n % APPLIES + 1),
                    reqs::kind.eq(kinds[(n % 4) as usize]),
                    reqs::status.eq(if n % 50 == 0 && n < APPLIES {
                        ControlRequestStatus::Pending
                    } else {
                        ControlRequestStatus::Completed
                    }),
                    reqs::created_at.eq(datetime(at)),
                    reqs::updated_at.eq(datetime(at)),
                )
            })
            .collect();
        for chunk in request_rows.chunks(1_000) {
            diesel::insert_into(reqs::table)
                .values(chunk)
                .execute(conn)
                .unwrap();
        }
    }};
}

/// 12,000 operations over 1,000 applies, mostly history (completed, failed, cancelled), some live
/// (running, waiting) and some pending; plus control requests of every kind and status.
fn seed(conn: &mut DbConnection) {
    // Multi-row inserts go through the backend's own connection (MultiConnection cannot batch).
    match conn {
        DbConnection::Mysql(conn) => {
            seed_rows!(&mut *conn);
            diesel::sql_query("ANALYZE TABLE applies, apply_operations, apply_control_requests")
                .execute(conn)
                .unwrap();
        }
        DbConnection::Pg(conn) => {
            seed_rows!(&mut *conn);
            diesel::sql_query("ANALYZE applies, apply_operations, apply_control_requests")
                .execute(conn)
                .unwrap();
        }
        DbConnection::Sqlite(_) => panic!("seeded on MySQL and PostgreSQL only"),
    }
}

fn assert_indexed(plan: &[String], index: &str) {
    assert_walks(plan, index, false);
}

/// The plan's outer read walks index `key` of `apply_operations`, no read in it scans a whole
/// table, and none sorts unless `sorts` (the outer read, of what the index found).
fn assert_walks(plan: &[String], key: &str, sorts: bool) {
    let outer = &plan[0];
    assert!(outer.contains("table=apply_operations "), "{plan:#?}");
    assert!(
        outer.contains(&format!("key={key} ")),
        "the claim walks {key}: {plan:#?}"
    );
    for line in plan {
        assert!(
            !line.contains("type=ALL"),
            "no full scan: {line}\n{plan:#?}"
        );
        if !(sorts && line == outer) {
            assert!(!line.contains("filesort"), "no filesort: {line}\n{plan:#?}");
        }
        assert!(
            !line.contains("key= "),
            "every table read uses an index: {line}\n{plan:#?}"
        );
    }
}

#[test]
fn mysql_the_claim_queries_walk_the_claim_index_without_scan_or_filesort() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    seed(conn);
    let count: i64 = ops::table.count().get_result(conn).unwrap();
    assert!(count >= 10_000);
    let plan = claims::explain_claim_next(conn).unwrap();
    eprintln!("claim_next plan:\n{}", plan.join("\n"));
    assert_indexed(&plan, "apply_operations_copy_walk_idx");
    assert_indexed(
        &claims::explain_claim_next_cutover(conn).unwrap(),
        "apply_operations_cutover_walk_idx",
    );
    assert_the_claim_takes_the_oldest_claimable_row(conn);
}

/// The plan is not just on paper: the claim takes the oldest claimable row of [`seed`]'s.
fn assert_the_claim_takes_the_oldest_claimable_row(conn: &mut DbConnection) {
    let claimed = crate::fixtures::claim(conn, "explain").expect("a row is claimable");
    let oldest_running: i64 = ops::table
        .filter(ops::state.eq_any([ApplyState::Running, ApplyState::Pending]))
        .order((ops::created_at.asc(), ops::id.asc()))
        .select(ops::id)
        .first(conn)
        .unwrap();
    assert_eq!(claimed.operation.id, ApplyOperationId(oldest_running));
}

/// The PostgreSQL plan of each claim reads `apply_operations` through its walk index, already in
/// claim order: no sequential scan and no sort anywhere.
#[test]
fn postgres_the_claim_queries_walk_the_claim_index_without_scan_or_sort() {
    let db = TestDb::new(Kind::Postgres);
    let conn = &mut db.conn();
    seed(conn);
    let plan = claims::explain_claim_next(conn).unwrap();
    eprintln!("claim_next plan:\n{}", plan.join("\n"));
    assert_pg_walks(&plan, "apply_operations_copy_walk_idx");
    assert_pg_walks(
        &claims::explain_claim_next_cutover(conn).unwrap(),
        "apply_operations_cutover_walk_idx",
    );
    assert_the_claim_takes_the_oldest_claimable_row(conn);
}

/// The PostgreSQL plan reads `apply_operations` through `index`, scans no table and sorts nothing.
fn assert_pg_walks(plan: &[String], index: &str) {
    assert!(
        plan.iter()
            .any(|line| line.contains(&format!("Scan using {index} on apply_operations"))),
        "the claim walks {index}: {plan:#?}"
    );
    for line in plan {
        assert!(
            !line.contains("Seq Scan"),
            "no table scan: {line}\n{plan:#?}"
        );
        assert!(
            !line
                .trim_start()
                .trim_start_matches("->")
                .trim_start()
                .starts_with("Sort"),
            "no sort: {line}\n{plan:#?}"
        );
    }
}

#[test]
fn sqlite_the_claim_query_uses_the_claim_index() {
    let db = TestDb::new(Kind::Sqlite);
    let conn = &mut db.conn();
    assert_sqlite_walks(
        &claims::explain_claim_next(conn).unwrap(),
        "apply_operations_copy_walk_idx",
    );
}

/// The SQLite plan reads through `index` and builds no sort.
fn assert_sqlite_walks(plan: &[String], index: &str) {
    assert!(plan.iter().any(|line| line.contains(index)), "{plan:#?}");
    assert!(
        !plan
            .iter()
            .any(|line| line.contains("TEMP B-TREE FOR ORDER BY")),
        "{plan:#?}"
    );
}

/// A claim scoped to a deployment reads only that deployment's rows: through
/// the claim's scope index (`apply_operations_copy_scope_idx`: `copy_walk`, `deployment`,
/// `created_at`, `id`; the cutover claim's likewise), already in
/// claim order, or through `apply_operations_deployment_state_idx` (`deployment`, `state`), sorting
/// what it found (the deployment's rows in a claimable state: the index skips its history). The
/// optimizer picks between the two by its estimates; never the whole claim index.
#[test]
fn mysql_a_claim_scoped_to_a_deployment_reads_only_that_deployments_rows() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    seed(conn);
    let scope = ClaimScope::any().deployments(["deployment-3"]);
    for (plan, index) in [
        (
            claims::explain_claim_next_in(conn, &scope).unwrap(),
            "apply_operations_copy_scope_idx",
        ),
        (
            claims::explain_claim_next_cutover_in(conn, &scope).unwrap(),
            "apply_operations_cutover_scope_idx",
        ),
    ] {
        eprintln!("scoped plan:\n{}", plan.join("\n"));
        if plan[0].contains(&format!("key={index} ")) {
            assert_walks(&plan, index, false);
        } else {
            assert_walks(&plan, "apply_operations_deployment_state_idx", true);
        }
    }
    let options = crate::fixtures::opts("explain").with_scope(scope);
    let claimed = claims::claim_next(conn, &options)
        .unwrap()
        .expect("a row of deployment-3 is claimable");
    assert_eq!(claimed.operation.deployment, "deployment-3");
}

#[test]
fn sqlite_a_claim_scoped_to_a_deployment_reads_only_that_deployments_rows() {
    let db = TestDb::new(Kind::Sqlite);
    let conn = &mut db.conn();
    let scope = ClaimScope::any().deployments(["deployment-3"]);
    assert_sqlite_walks(
        &claims::explain_claim_next_in(conn, &scope).unwrap(),
        "apply_operations_copy_scope_idx (copy_walk=? AND deployment=?)",
    );
}
