//! What the benchmarks share.

use applyops::schema::applies;
use applyops::schema_types::DatetimeValue;
use applyops::state::ApplyState;
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// The MySQL server the benchmarks use: `TEST_DATABASE_URL` with any database path dropped, else
/// `mysql://root@127.0.0.1:3306` (the test suite's default).
pub fn mysql_server() -> String {
    std::env::var("TEST_DATABASE_URL")
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", &url));
            format!(
                "{scheme}://{}",
                rest.split(['/', '?']).next().unwrap_or(rest)
            )
        })
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// An `applies` row as the benchmarks seed it, every column given.
#[derive(Insertable)]
#[diesel(table_name = applies)]
#[diesel(treat_none_as_default_value = false)]
pub struct SeedApply {
    pub id: i64,
    pub apply_identifier: String,
    pub database_name: String,
    pub environment: String,
    pub deployment: String,
    pub state: ApplyState,
    pub created_at: DatetimeValue,
    pub updated_at: DatetimeValue,
    pub started_at: Option<NaiveDateTime>,
    pub completed_at: Option<NaiveDateTime>,
    pub defer_cutover: bool,
}

/// Lets the store decide the claim rules of every apply (`applies::refresh` on each): operations
/// seeded by hand start `undecided`, and the first claims would otherwise decide their applies as
/// they meet them, inside the measured calls.
#[allow(dead_code)] // pool_checkout seeds no operation.
pub fn decide_all(conn: &mut applyops::DbConnection) {
    let ids: Vec<applyops::models::ApplyId> = applies::table
        .select(applies::id)
        .load(conn)
        .expect("apply ids");
    for id in ids {
        applyops::store::applies::refresh(conn, id).expect("decide a seeded apply");
    }
}
