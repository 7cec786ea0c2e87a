//! Worker contract revision 2, point 14: operations under a live lease cost a claim no row reads.
//! On MySQL, with 500 live leases on operations older than 10,000 claimable ones, a claim reads about
//! as many rows (the server's `Handler_read_*` counters) as the same claim with no lease at all: the
//! claim index holds only unheld rows, and expired leases are found through the expiry index.

use applyops::db::DbConnection;
use applyops::schema::{applies, apply_operations as ops};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, CutoverPolicy};
use applyops::store::claims;
use diesel::prelude::*;

use crate::harness::{Kind, TestDb};

const APPLIES: i64 = 1_050;
const DEPLOYMENTS: i64 = 10;
/// The oldest operations (the first 50 applies') run under a live lease.
const HELD: i64 = 500;

fn seed(conn: &mut DbConnection) {
    let DbConnection::Mysql(conn) = conn else {
        panic!("seeded on MySQL only")
    };
    let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let apply_rows: Vec<_> = (0..APPLIES)
        .map(|a| {
            (
                applies::apply_identifier.eq(format!("apply-{a}")),
                applies::database_name.eq(format!("db-{a}")),
                applies::environment.eq("production"),
                applies::deployment.eq("main"),
                // As the refresh keeps them: the first 50 run their held operations, the rest
                // have not started.
                applies::state.eq(if a * DEPLOYMENTS < HELD {
                    ApplyState::Running
                } else {
                    ApplyState::Pending
                }),
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
    let live_until = chrono::NaiveDate::from_ymd_opt(2030, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut op_rows = Vec::new();
    for a in 0..APPLIES {
        for d in 0..DEPLOYMENTS {
            let n = a * DEPLOYMENTS + d;
            let held = n < HELD;
            let created = at + chrono::Duration::seconds(n);
            op_rows.push((
                ops::apply_id.eq(a + 1),
                ops::deployment.eq(format!("deployment-{d}")),
                ops::database_name.eq(format!("db-{a}")),
                ops::environment.eq("production"),
                ops::state.eq(if held {
                    ApplyState::Running
                } else {
                    ApplyState::Pending
                }),
                ops::cutover_policy.eq(CutoverPolicy::Parallel),
                ops::lease_owner.eq(if held { "busy" } else { "" }),
                ops::lease_token.eq(if held {
                    "0123456789abcdef0123456789abcdef"
                } else {
                    ""
                }),
                ops::lease_expires_at.eq(held.then_some(live_until)),
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
    diesel::sql_query("ANALYZE TABLE applies, apply_operations, apply_control_requests")
        .execute(conn)
        .unwrap();
}

/// Lets the store decide the claim rules of applies `ids`, whose rows were written by hand.
fn decide(conn: &mut DbConnection, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        applyops::store::applies::refresh(conn, applyops::models::ApplyId(id)).unwrap();
    }
}

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
    value: String,
}

/// The session's `Handler_read_*` counters, summed: the rows and index entries it has read.
fn rows_read(conn: &mut DbConnection) -> i64 {
    diesel::sql_query("SHOW SESSION STATUS LIKE 'Handler_read%'")
        .load::<Status>(conn)
        .unwrap()
        .iter()
        .map(|s| s.value.parse::<i64>().unwrap())
        .sum()
}

/// Rows read by one claim, which must take the pending operation with id `expected`.
fn one_claim(conn: &mut DbConnection, owner: &str, expected: i64) -> i64 {
    let before = rows_read(conn);
    let claimed = claims::claim_next(conn, &crate::fixtures::opts(owner))
        .unwrap()
        .expect("a pending operation");
    let after = rows_read(conn);
    assert_eq!(claimed.operation.state, ApplyState::Running);
    assert_eq!(claimed.previous_state, ApplyState::Pending);
    assert_eq!(claimed.operation.id.get(), expected);
    // The reads of the counters themselves are in both numbers alike.
    after - before
}

/// Puts operation `claimed` and its apply back as they were before a claim took it, so that the next
/// claim takes the same operation, reading the same candidates.
fn unclaim(conn: &mut DbConnection, claimed: i64) {
    unclaim_in(conn, claimed, HELD / DEPLOYMENTS + 1);
}

/// [`unclaim`] of operation `claimed` of apply `apply_id`.
fn unclaim_in(conn: &mut DbConnection, claimed: i64, apply_id: i64) {
    diesel::update(ops::table.find(claimed))
        .set((
            ops::state.eq(ApplyState::Pending),
            ops::attempt.eq(0),
            ops::started_at.eq(None::<chrono::NaiveDateTime>),
            ops::holds_target.eq(None::<bool>),
            ops::lease_owner.eq(""),
            ops::lease_token.eq(""),
            ops::lease_acquired_at.eq(None::<chrono::NaiveDateTime>),
            ops::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .unwrap();
    diesel::update(applies::table.find(apply_id))
        .set((
            applies::state.eq(ApplyState::Pending),
            applies::started_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .unwrap();
    decide(conn, apply_id..=apply_id);
}

#[test]
fn mysql_live_leases_cost_a_claim_no_row_reads() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    seed(conn);
    decide(conn, 1..=APPLIES);
    let claimed = HELD + 1;
    // A first claim prepares the claim's statements on this connection (which reads rows of its
    // own); the measured ones reuse them.
    one_claim(conn, "warm", claimed);
    unclaim(conn, claimed);
    let with_leases = one_claim(conn, "a", claimed);
    // The same table with no lease anywhere: the held operations settle (and let their leases go).
    unclaim(conn, claimed);
    diesel::update(ops::table.filter(ops::lease_token.ne("")))
        .set((
            ops::state.eq(ApplyState::Completed),
            ops::lease_owner.eq(""),
            ops::lease_token.eq(""),
            ops::lease_expires_at.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)
        .unwrap();
    decide(conn, 1..=HELD / DEPLOYMENTS);
    let without = one_claim(conn, "b", claimed);
    eprintln!(
        "rows read by one claim: {with_leases} with {HELD} live leases ahead of 10,000 pending \
         operations, {without} with none"
    );
    assert!(
        with_leases <= without + 4,
        "{HELD} live leases cost the claim {} more row reads",
        with_leases - without
    );
}

/// Server work per claim: with 10,000 completed operations and 500 under a live lease ahead of the
/// only pending ones, a claim reads a handful of rows and index entries (`Handler_read_*`): the walk
/// starts at the first unheld row a claim takes, and every rule was decided when the apply was
/// written.
#[test]
fn mysql_a_claim_reads_a_handful_of_rows_past_history_and_live_leases() {
    let db = TestDb::new(Kind::Mysql);
    let conn = &mut db.conn();
    seed(conn);
    // All but the last apply's operations are history (the held ones keep running).
    let last_apply = APPLIES;
    diesel::update(
        ops::table
            .filter(ops::lease_token.eq(""))
            .filter(ops::apply_id.ne(last_apply)),
    )
    .set(ops::state.eq(ApplyState::Completed))
    .execute(conn)
    .unwrap();
    decide(conn, 1..=APPLIES);
    let claimed = (last_apply - 1) * DEPLOYMENTS + 1;
    one_claim(conn, "warm", claimed);
    unclaim_in(conn, claimed, last_apply);
    let read = one_claim(conn, "measured", claimed);
    eprintln!("rows read by one claim past 10,000 completed and {HELD} leased operations: {read}");
    assert!(read <= HANDFUL, "one claim read {read} rows");
}

/// What a claim may read on MySQL (`Handler_read_*`): the candidate read's index entries, the apply's
/// row, its operations (ten, each with its releases looked up), the taken row and the counters' own
/// reads: 48 measured on MariaDB 10.11, whatever the 10,500 other rows.
const HANDFUL: i64 = 56;
