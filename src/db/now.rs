//! The current time as an SQL expression, read from the database's clock.

#[cfg(feature = "sqlite")]
use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
#[cfg(feature = "mysql")]
use diesel::mysql::Mysql;
#[cfg(feature = "postgres")]
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
#[cfg(feature = "sqlite")]
use diesel::sqlite::Sqlite;
use diesel::QueryResult;

use super::MultiBackend;
use crate::schema_types::Datetime;

/// "Now" in UTC with microseconds, taken from the database server's clock where there is a server.
///
/// Every timestamp the store writes comes from here, so rows written by workers on different machines
/// order by one clock: on MySQL/MariaDB it renders `UTC_TIMESTAMP(6)`, evaluated once per statement
/// (on PostgreSQL `statement_timestamp() AT TIME ZONE 'UTC'`, the same); on
/// SQLite, which runs in-process, it binds the process clock read when the expression was built
/// (SQLite's own `'now'` has only millisecond resolution).
#[derive(Debug, Clone, Copy, QueryId)]
pub struct DbNow {
    /// Bound on SQLite; MySQL reads its own clock, so a MySQL-only build has no field.
    #[cfg(feature = "sqlite")]
    process_clock: NaiveDateTime,
}

/// "Now" as of the moment the database produces a row; see [`now_when_read`]. A type of its own, not
/// a flag on [`DbNow`]: Diesel caches prepared statements by query type, so two SQL texts must never
/// share one.
#[derive(Debug, Clone, Copy, QueryId)]
pub struct DbNowWhenRead {
    /// Bound on SQLite.
    #[cfg(feature = "sqlite")]
    process_clock: NaiveDateTime,
}

/// The current time as a [`DbNow`] expression, for use in Diesel queries:
/// `update(t).set(updated_at.eq(now()))`.
pub fn now() -> DbNow {
    DbNow {
        #[cfg(feature = "sqlite")]
        process_clock: process_clock(),
    }
}

/// "Now" as of the moment the database produces a row, not when the statement began: on MySQL
/// `SYSDATE(6)` (the session time zone is UTC, see [`establish`](super::establish)), on PostgreSQL
/// `clock_timestamp() AT TIME ZONE 'UTC'`; on SQLite the same as [`now`].
///
/// For a claim's timestamps. A MySQL statement's `UTC_TIMESTAMP(6)` is fixed when the statement
/// starts, but its subqueries read the rows committed when they run, which can be later: a claim stamped
/// with the statement's start could carry a `started_at` earlier than the `completed_at` of a sibling
/// whose completion it saw. A row's `SYSDATE(6)` is read after the row's conditions were evaluated, so
/// it is later than every commit they saw. (A server run with `--sysdate-is-now` loses that guarantee
/// for the timestamps, not for the claim's decisions.)
pub fn now_when_read() -> DbNowWhenRead {
    DbNowWhenRead {
        #[cfg(feature = "sqlite")]
        process_clock: process_clock(),
    }
}

/// The process clock in UTC, truncated to the microseconds both backends store.
#[cfg(feature = "sqlite")]
fn process_clock() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// The expression impls both "now" types share; only the servers' SQL differs.
macro_rules! timestamp_expression {
    ($type:ident, $mysql_sql:literal, $pg_sql:literal) => {
        impl Expression for $type {
            type SqlType = Datetime;
        }

        impl<QS> AppearsOnTable<QS> for $type {}

        impl<QS> SelectableExpression<QS> for $type {}

        impl<GroupBy> ValidGrouping<GroupBy> for $type {
            type IsAggregate = is_aggregate::Never;
        }

        #[cfg(feature = "mysql")]
        impl QueryFragment<Mysql> for $type {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
                out.push_sql($mysql_sql);
                Ok(())
            }
        }

        #[cfg(feature = "postgres")]
        impl QueryFragment<Pg> for $type {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                out.push_sql($pg_sql);
                Ok(())
            }
        }

        #[cfg(feature = "sqlite")]
        impl QueryFragment<Sqlite> for $type {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
                out.push_bind_param::<Datetime, _>(&self.process_clock)
            }
        }

        impl QueryFragment<MultiBackend> for $type {
            fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
                MultiBackend::walk_variant_ast(self, pass)
            }
        }
    };
}

timestamp_expression!(
    DbNow,
    "UTC_TIMESTAMP(6)",
    "(statement_timestamp() AT TIME ZONE 'UTC')"
);

/// "Now plus a duration" as of the moment the database writes the row; see [`now_when_read_plus`].
#[derive(Debug, Clone, Copy, QueryId)]
pub struct DbNowWhenReadPlus {
    /// The duration in microseconds (bound on MySQL and PostgreSQL).
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    micros: i64,
    /// The process clock plus the duration (bound on SQLite).
    #[cfg(feature = "sqlite")]
    process_clock: NaiveDateTime,
}

/// "Now" plus `micros` microseconds, read when the database evaluates the row, not when the statement
/// began: on MySQL `DATE_ADD(SYSDATE(6), INTERVAL ? MICROSECOND)` (PostgreSQL: the same from
/// `clock_timestamp()`), so an UPDATE that waited for a
/// row lock computes it once the lock is held; on SQLite the process clock read when this is built,
/// so build it once the write lock is held (inside a `BEGIN IMMEDIATE` transaction).
///
/// For a lease's new expiry: computed from a clock read before a wait, it could already be in the
/// past when the row is written.
pub fn now_when_read_plus(micros: i64) -> DbNowWhenReadPlus {
    DbNowWhenReadPlus {
        #[cfg(any(feature = "mysql", feature = "postgres"))]
        micros,
        #[cfg(feature = "sqlite")]
        process_clock: process_clock() + chrono::Duration::microseconds(micros),
    }
}

impl Expression for DbNowWhenReadPlus {
    type SqlType = Datetime;
}

impl<QS> AppearsOnTable<QS> for DbNowWhenReadPlus {}

impl<QS> SelectableExpression<QS> for DbNowWhenReadPlus {}

impl<GroupBy> ValidGrouping<GroupBy> for DbNowWhenReadPlus {
    type IsAggregate = is_aggregate::Never;
}

#[cfg(feature = "mysql")]
impl QueryFragment<Mysql> for DbNowWhenReadPlus {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql("DATE_ADD(SYSDATE(6), INTERVAL ");
        out.push_bind_param::<diesel::sql_types::BigInt, _>(&self.micros)?;
        out.push_sql(" MICROSECOND)");
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl QueryFragment<Pg> for DbNowWhenReadPlus {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // An interval of whole microseconds: `interval * float8` rounds to the microsecond, exact
        // for any duration under 2^53 µs (285 years).
        out.push_sql("((clock_timestamp() AT TIME ZONE 'UTC') + ");
        out.push_bind_param::<diesel::sql_types::BigInt, _>(&self.micros)?;
        out.push_sql(" * INTERVAL '1 microsecond')");
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
impl QueryFragment<Sqlite> for DbNowWhenReadPlus {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_bind_param::<Datetime, _>(&self.process_clock)
    }
}

impl QueryFragment<MultiBackend> for DbNowWhenReadPlus {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, MultiBackend>) -> QueryResult<()> {
        MultiBackend::walk_variant_ast(self, pass)
    }
}
timestamp_expression!(
    DbNowWhenRead,
    "SYSDATE(6)",
    "(clock_timestamp() AT TIME ZONE 'UTC')"
);
