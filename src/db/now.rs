//! The current time as an SQL expression, read from the database's clock.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::mysql::Mysql;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Timestamp;
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

use super::MultiBackend;

/// "Now" in UTC with microseconds, taken from the database server's clock where there is a server.
///
/// Every timestamp the store writes comes from here, so rows written by workers on different machines
/// order by one clock: on MySQL/MariaDB it renders `UTC_TIMESTAMP(6)`, evaluated once per statement; on
/// SQLite, which runs in-process, it binds the process clock read when the expression was built
/// (SQLite's own `'now'` has only millisecond resolution).
#[derive(Debug, Clone, Copy, QueryId)]
pub struct DbNow {
    process_clock: NaiveDateTime,
}

/// The current time as a [`DbNow`] expression, for use in Diesel queries:
/// `update(t).set(updated_at.eq(now()))`.
pub fn now() -> DbNow {
    DbNow {
        process_clock: process_clock(),
    }
}

/// The process clock in UTC, truncated to the microseconds both backends store.
pub(super) fn process_clock() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

impl Expression for DbNow {
    type SqlType = Timestamp;
}

impl<QS> AppearsOnTable<QS> for DbNow {}

impl<QS> SelectableExpression<QS> for DbNow {}

impl<GroupBy> ValidGrouping<GroupBy> for DbNow {
    type IsAggregate = is_aggregate::Never;
}

impl QueryFragment<Mysql> for DbNow {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("UTC_TIMESTAMP(6)");
        Ok(())
    }
}

impl QueryFragment<Sqlite> for DbNow {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_bind_param::<Timestamp, _>(&self.process_clock)
    }
}

impl QueryFragment<MultiBackend> for DbNow {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        MultiBackend::walk_variant_ast(self, pass)
    }
}
