//! Datetimes across everything the columns can hold (1000-01-01 to 9999-12-31), not only the
//! `TIMESTAMP` range (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC): on MySQL a value bound as a
//! `TIMESTAMP` outside that range became NULL without an error, so filters matched nothing, keyset
//! pages dropped rows, and a lease written past 2038 was stored as no lease at all.

use applyops::models::{ApplyId, ApplyOperationId, NewRollout, NewRolloutOperation};
use applyops::schema::{applies, apply_control_requests as reqs, apply_operations as ops, tasks};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, ControlRequestKind};
use applyops::store::applies::{ApplyFilter, Blocker};
use applyops::store::{applies as applies_store, claims, leases};
use chrono::{NaiveDate, NaiveDateTime};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::{self, opts};
use crate::harness::TestDb;

backend_tests!(
    every_datetime_column_round_trips_dates_from_1000_to_9999,
    created_since_filters_and_counts_match_dates_outside_the_timestamp_range,
    keyset_pages_walk_applies_created_across_the_whole_range,
    claims_order_and_recover_by_dates_outside_the_timestamp_range,
    a_lease_expiring_after_2038_is_live_and_one_expired_before_1970_is_recovered,
    filters_and_cursors_outside_what_a_column_holds_are_refused,
);

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .unwrap()
        .and_hms_micro_opt(h, mi, s, micros)
        .unwrap()
}

/// Values inside and outside the `TIMESTAMP` range, its edges, and the ends of the `DATETIME` range.
fn range() -> Vec<NaiveDateTime> {
    vec![
        at(1000, 1, 1, 0, 0, 0, 0),
        at(1960, 6, 15, 12, 34, 56, 789_012),
        at(1970, 1, 1, 0, 0, 0, 0),
        at(2026, 12, 7, 10, 0, 0, 1),
        at(2038, 1, 19, 3, 14, 7, 999_999),
        at(2038, 1, 19, 3, 14, 8, 0),
        at(2040, 2, 29, 23, 59, 59, 500_000),
        at(2099, 12, 31, 12, 0, 0, 0),
        at(9999, 12, 31, 23, 59, 59, 999_999),
    ]
}

/// One rollout (one operation, one task) and one control request: a row in every table.
fn one_of_each(conn: &mut applyops::DbConnection) -> (ApplyId, ApplyOperationId) {
    let created = applies_store::create_rollout(
        conn,
        &NewRollout::new("range", "shop", "production", "tester").operation(
            NewRolloutOperation::new("east").task("orders", "ALTER TABLE orders ADD x INT"),
        ),
    )
    .unwrap();
    let apply_id = created.apply.id;
    fixtures::request(conn, apply_id, None, ControlRequestKind::Release);
    (apply_id, created.operations[0].operation.id)
}

/// Writes `value` into one datetime column of every row of `$table` and reads it back.
macro_rules! round_trip {
    ($conn:expr, $table:ident :: $column:ident, not_null, $value:expr) => {{
        diesel::update($table::table)
            .set($table::$column.eq(datetime($value)))
            .execute($conn)
            .unwrap();
        let read: Vec<NaiveDateTime> = $table::table.select($table::$column).load($conn).unwrap();
        assert_eq!(
            read,
            vec![$value],
            "{}.{}",
            stringify!($table),
            stringify!($column)
        );
    }};
    ($conn:expr, $table:ident :: $column:ident, nullable, $value:expr) => {{
        diesel::update($table::table)
            .set($table::$column.eq(Some($value)))
            .execute($conn)
            .unwrap();
        let read: Vec<Option<NaiveDateTime>> =
            $table::table.select($table::$column).load($conn).unwrap();
        assert_eq!(
            read,
            vec![Some($value)],
            "{}.{}",
            stringify!($table),
            stringify!($column)
        );
        // Compared as a bound value too, not only read back.
        let matched: i64 = $table::table
            .filter($table::$column.eq(Some($value)))
            .count()
            .get_result($conn)
            .unwrap();
        assert_eq!(
            matched,
            1,
            "{}.{} = bound",
            stringify!($table),
            stringify!($column)
        );
    }};
}

fn every_datetime_column_round_trips_dates_from_1000_to_9999(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = one_of_each(conn);
    for value in range() {
        round_trip!(conn, applies::created_at, not_null, value);
        round_trip!(conn, applies::updated_at, not_null, value);
        round_trip!(conn, applies::started_at, nullable, value);
        round_trip!(conn, applies::completed_at, nullable, value);
        round_trip!(conn, ops::created_at, not_null, value);
        round_trip!(conn, ops::updated_at, not_null, value);
        round_trip!(conn, ops::started_at, nullable, value);
        round_trip!(conn, ops::completed_at, nullable, value);
        round_trip!(conn, ops::lease_acquired_at, nullable, value);
        round_trip!(conn, ops::lease_expires_at, nullable, value);
        round_trip!(conn, tasks::created_at, not_null, value);
        round_trip!(conn, tasks::updated_at, not_null, value);
        round_trip!(conn, tasks::started_at, nullable, value);
        round_trip!(conn, tasks::completed_at, nullable, value);
        round_trip!(conn, reqs::created_at, not_null, value);
        round_trip!(conn, reqs::updated_at, not_null, value);
        round_trip!(conn, reqs::completed_at, nullable, value);
    }
    // And the typed models read what was written last.
    let last = *range().last().unwrap();
    let op = applyops::store::apply_operations::list_by_apply(conn, apply_id).unwrap();
    assert!(op.iter().all(|op| op.lease_expires_at == Some(last)));
}

/// Creates one apply per value of [`range`], with that `created_at`; returns their ids in order.
fn applies_created_across_the_range(conn: &mut applyops::DbConnection) -> Vec<ApplyId> {
    range()
        .into_iter()
        .enumerate()
        .map(|(n, created)| {
            let apply_id = fixtures::apply(conn, false);
            diesel::update(applies::table.find(apply_id))
                .set((
                    applies::created_at.eq(datetime(created)),
                    applies::updated_at.eq(datetime(created)),
                ))
                .execute(conn)
                .unwrap();
            assert_eq!(apply_id.get() as usize, n + 1);
            apply_id
        })
        .collect()
}

fn created_since_filters_and_counts_match_dates_outside_the_timestamp_range(db: &TestDb) {
    let conn = &mut db.conn();
    let ids = applies_created_across_the_range(conn);
    for (n, since) in range().into_iter().enumerate() {
        let filter = ApplyFilter {
            created_since: Some(since),
            limit: Some(1_000),
            ..ApplyFilter::default()
        };
        let mut found: Vec<ApplyId> = applies_store::list(conn, &filter)
            .unwrap()
            .items
            .into_iter()
            .map(|apply| apply.id)
            .collect();
        found.sort();
        assert_eq!(found, ids[n..].to_vec(), "created since {since}");
        let counted: i64 = applies_store::counts_by_state(conn, &filter)
            .unwrap()
            .into_iter()
            .map(|(_, count)| count)
            .sum();
        assert_eq!(counted as usize, ids.len() - n, "counted since {since}");
    }
}

fn keyset_pages_walk_applies_created_across_the_whole_range(db: &TestDb) {
    let conn = &mut db.conn();
    let mut ids = applies_created_across_the_range(conn);
    ids.reverse(); // newest first
    let mut seen = Vec::new();
    let mut filter = ApplyFilter {
        limit: Some(2),
        ..ApplyFilter::default()
    };
    loop {
        let page = applies_store::list(conn, &filter).unwrap();
        seen.extend(page.items.iter().map(|apply| apply.id));
        let Some(next) = page.next else { break };
        // Through the cursor's text, as the CLI passes it.
        filter.after = Some(next.to_string().parse().unwrap());
    }
    assert_eq!(seen, ids, "every apply once, newest first");
}

fn claims_order_and_recover_by_dates_outside_the_timestamp_range(db: &TestDb) {
    let conn = &mut db.conn();
    // Three independent applies whose only operations were created in 2099, 1960 and 2040: the claim
    // walks them oldest first.
    let mut by_age = Vec::new();
    for created in [
        at(2099, 1, 1, 0, 0, 0, 0),
        at(1960, 1, 1, 0, 0, 0, 0),
        at(2040, 1, 1, 0, 0, 0, 0),
    ] {
        let (_, ids) = fixtures::rollout(
            conn,
            1,
            applyops::state::CutoverPolicy::Rolling,
            applyops::state::FailurePolicy::Halt,
        );
        diesel::update(ops::table.find(ids[0]))
            .set(ops::created_at.eq(datetime(created)))
            .execute(conn)
            .unwrap();
        by_age.push((created, ids[0]));
    }
    by_age.sort();
    for (created, id) in by_age {
        let claimed = fixtures::claim(conn, "w").expect("a claim");
        assert_eq!(claimed.operation.id, id, "created {created}");
        assert_eq!(claimed.operation.created_at, created);
    }
    assert!(fixtures::claim(conn, "w").is_none());
}

fn a_lease_expiring_after_2038_is_live_and_one_expired_before_1970_is_recovered(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = fixtures::rollout(
        conn,
        2,
        applyops::state::CutoverPolicy::Parallel,
        applyops::state::FailurePolicy::Halt,
    );
    for id in &ids {
        fixtures::force_state(conn, *id, ApplyState::Running);
    }
    let far = at(2040, 2, 29, 12, 0, 0, 0);
    let long_ago = at(1960, 1, 1, 0, 0, 0, 0);
    for (id, expires) in [(ids[0], far), (ids[1], long_ago)] {
        diesel::update(ops::table.find(id))
            .set((
                ops::lease_owner.eq("holder"),
                ops::lease_token.eq("0123456789abcdef0123456789abcdef"),
                ops::lease_expires_at.eq(Some(expires)),
            ))
            .execute(conn)
            .unwrap();
    }
    let live = leases::live(conn, None).unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!((live[0].operation_id, live[0].expires_at), (ids[0], far));
    let blockers = applies_store::blockers(conn, apply_id).unwrap();
    assert_eq!(
        blockers,
        vec![
            (
                ids[0],
                Blocker::LeaseLive {
                    owner: "holder".to_owned(),
                    expires_at: far
                }
            ),
            (ids[1], Blocker::Claimable),
        ]
    );
    let recovered = claims::claim_next(conn, &opts("rescuer"))
        .unwrap()
        .expect("recovery");
    assert_eq!(recovered.operation.id, ids[1]);
    assert_eq!(recovered.kind, applyops::store::claims::ClaimKind::Recovery);
    assert!(
        claims::claim_next(conn, &opts("rescuer"))
            .unwrap()
            .is_none(),
        "the 2040 lease is live"
    );
}

/// A server whose clock reads 2038-01-18 12:00 (libfaketime): a claim with a 24 h lease returns an
/// expiry past 2038-01-19 03:14:07, and the row stores exactly that expiry (it stored NULL, so the
/// lease was invisible to `leases` and, once its holder died, never recovered). The heartbeat and the
/// apply's derived timestamps come from the same clock.
#[test]
fn a_claim_on_a_server_whose_clock_reads_2038_stores_the_lease_it_returns() {
    use crate::private_server::PrivateServer;
    let server = PrivateServer::with_clock("@2038-01-18 12:00:00");
    let conn = &mut applyops::db::establish(&server.database("clock2038")).unwrap();
    applyops::db::run_migrations(conn).unwrap();
    let (apply_id, ids) = fixtures::rollout(
        conn,
        1,
        applyops::state::CutoverPolicy::Rolling,
        applyops::state::FailurePolicy::Halt,
    );
    let options = claims::ClaimOptions::new("w-2038", std::time::Duration::from_secs(24 * 3600));
    let mut claimed = claims::claim_next(conn, &options)
        .unwrap()
        .expect("a claim");
    let last_timestamp = at(2038, 1, 19, 3, 14, 7, 0);
    assert!(
        claimed.lease.acquired_at < last_timestamp,
        "{:?}",
        claimed.lease
    );
    assert!(
        claimed.lease.expires_at > last_timestamp,
        "{:?}",
        claimed.lease
    );
    let (row, _) = fixtures::row(conn, ids[0]);
    assert_eq!(row.lease_expires_at, Some(claimed.lease.expires_at));
    assert_eq!(row.lease_acquired_at, Some(claimed.lease.acquired_at));
    let live = leases::live(conn, None).unwrap();
    assert_eq!(live.len(), 1, "the lease is listed: {live:?}");
    assert_eq!(live[0].expires_at, claimed.lease.expires_at);
    assert!(matches!(
        applies_store::blockers(conn, apply_id).unwrap()[0].1,
        Blocker::LeaseLive { .. }
    ));
    let renewed = leases::heartbeat(conn, &mut claimed.lease).unwrap();
    assert!(renewed >= claimed.lease.acquired_at + chrono::Duration::hours(24));
    assert_eq!(
        fixtures::row(conn, ids[0]).0.lease_expires_at,
        Some(renewed)
    );
    let apply = applies_store::get(conn, apply_id).unwrap().unwrap();
    assert_eq!(apply.state, ApplyState::Running);
    assert!(apply
        .started_at
        .is_some_and(|started| started > at(2038, 1, 1, 0, 0, 0, 0)));
}

fn filters_and_cursors_outside_what_a_column_holds_are_refused(db: &TestDb) {
    let conn = &mut db.conn();
    applies_created_across_the_range(conn);
    for since in [
        at(999, 12, 31, 23, 59, 59, 999_999),
        at(10_000, 1, 1, 0, 0, 0, 0),
    ] {
        let filter = ApplyFilter {
            created_since: Some(since),
            ..ApplyFilter::default()
        };
        for result in [
            applies_store::list(conn, &filter).map(drop),
            applies_store::counts_by_state(conn, &filter).map(drop),
        ] {
            assert!(
                matches!(
                    result,
                    Err(applyops::StoreError::InvalidInput {
                        field: "created_since",
                        ..
                    })
                ),
                "{since}: {result:?}"
            );
        }
    }
    // A cursor names a stored row: one before year 1000 or after 9999 cannot.
    for micros in [
        applyops::schema_types::MIN_DATETIME
            .and_utc()
            .timestamp_micros()
            - 1,
        applyops::schema_types::MAX_DATETIME
            .and_utc()
            .timestamp_micros()
            + 1,
    ] {
        let parsed = format!("{micros}.1").parse::<applies_store::ApplyCursor>();
        assert!(
            matches!(
                parsed,
                Err(applyops::StoreError::InvalidInput { field: "after", .. })
            ),
            "{micros}: {parsed:?}"
        );
    }
    // The edges themselves are fine.
    for since in [
        applyops::schema_types::MIN_DATETIME,
        applyops::schema_types::MAX_DATETIME,
    ] {
        let filter = ApplyFilter {
            created_since: Some(since),
            ..ApplyFilter::default()
        };
        applies_store::list(conn, &filter).unwrap();
    }
}
