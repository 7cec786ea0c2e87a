//! SQL type names that `src/schema.rs` imports in place of the MySQL-only ones `diesel print-schema`
//! emits.
//!
//! `diesel.toml` sets `import_types`, so every generated `table!` block imports its column types by
//! name: the portable ones from `diesel::sql_types`, and [`Datetime`] from here. The generated file is
//! used exactly as printed, with no patch to apply (a patch only fits one schema, so it broke
//! `diesel migration revert` and `redo`).

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::expression::{
    is_aggregate, AppearsOnTable, Expression, SelectableExpression, ValidGrouping,
};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::HasSqlType;
use diesel::QueryResult;

/// A date and time column (`DATETIME(6)` on MySQL/MariaDB, `timestamp(6)` holding UTC on PostgreSQL,
/// text on SQLite), read and written as
/// `chrono::NaiveDateTime` in UTC with microseconds.
///
/// Every value the columns can hold round-trips, from `1000-01-01 00:00:00` to
/// `9999-12-31 23:59:59.999999`, in stored rows and in bound parameters (filters, cursors, lease
/// expiries). That is why this is a type of its own and not Diesel's portable `Timestamp`: on MySQL
/// `Timestamp` binds its values as `MYSQL_TYPE_TIMESTAMP`, which the server converts through the
/// `TIMESTAMP` range (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC) and turns into NULL outside it,
/// without an error. `Datetime` binds as `MYSQL_TYPE_DATETIME` on MySQL, and exactly as `Timestamp`
/// on PostgreSQL (`timestamp`, microseconds) and SQLite (ISO 8601 text).
#[derive(
    Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId,
)]
#[diesel(mysql_type(name = "DateTime"))]
#[diesel(postgres_type(oid = 1114, array_oid = 1115))]
#[diesel(sqlite_type(name = "Text"))]
pub struct Datetime;

/// The earliest value a [`Datetime`] column holds on every backend: 1000-01-01 00:00:00.
pub const MIN_DATETIME: NaiveDateTime = match chrono::NaiveDate::from_ymd_opt(1000, 1, 1) {
    Some(date) => match date.and_hms_opt(0, 0, 0) {
        Some(at) => at,
        None => panic!("a time"),
    },
    None => panic!("a date"),
};

/// The latest value a [`Datetime`] column holds on every backend: 9999-12-31 23:59:59.999999.
pub const MAX_DATETIME: NaiveDateTime = match chrono::NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(date) => match date.and_hms_micro_opt(23, 59, 59, 999_999) {
        Some(at) => at,
        None => panic!("a time"),
    },
    None => panic!("a date"),
};

/// A `NaiveDateTime` bound as a [`Datetime`]: what a comparison with, or an assignment to, a `NOT
/// NULL` datetime column takes (`apply_operations::created_at.lt(datetime(at))`). A nullable column
/// takes an `Option<NaiveDateTime>` as it is. In a `#[derive(Insertable)]` or `AsChangeset` struct, a
/// `NaiveDateTime` field for a `NOT NULL` datetime column takes
/// `#[diesel(serialize_as = applyops::schema_types::DatetimeValue)]`. (Diesel lets a SQL type of one
/// crate bind a type of another only through an expression of its own: `NaiveDateTime` cannot be
/// one directly.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatetimeValue(pub NaiveDateTime);

impl From<NaiveDateTime> for DatetimeValue {
    fn from(value: NaiveDateTime) -> Self {
        DatetimeValue(value)
    }
}

/// `value` as a [`Datetime`] expression; see [`DatetimeValue`].
pub fn datetime(value: NaiveDateTime) -> DatetimeValue {
    DatetimeValue(value)
}

impl Expression for DatetimeValue {
    type SqlType = Datetime;
}

impl<QS> AppearsOnTable<QS> for DatetimeValue {}

impl<QS> SelectableExpression<QS> for DatetimeValue {}

impl<GroupBy> ValidGrouping<GroupBy> for DatetimeValue {
    type IsAggregate = is_aggregate::Never;
}

// One SQL text (a placeholder) whatever the value: prepared statements are shared.
impl QueryId for DatetimeValue {
    type QueryId = DatetimeValue;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<DB> QueryFragment<DB> for DatetimeValue
where
    DB: Backend + HasSqlType<Datetime>,
    NaiveDateTime: ToSql<Datetime, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_bind_param::<Datetime, NaiveDateTime>(&self.0)
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use diesel::mysql::{Mysql, MysqlValue};
    use diesel::sql_types::Datetime as MysqlDatetime;

    impl FromSql<Datetime, Mysql> for NaiveDateTime {
        fn from_sql(value: MysqlValue<'_>) -> deserialize::Result<Self> {
            <NaiveDateTime as FromSql<MysqlDatetime, Mysql>>::from_sql(value)
        }
    }

    impl ToSql<Datetime, Mysql> for NaiveDateTime {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Mysql>) -> serialize::Result {
            <NaiveDateTime as ToSql<MysqlDatetime, Mysql>>::to_sql(self, out)
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use diesel::pg::{Pg, PgValue};
    use diesel::sql_types::Timestamp;

    impl FromSql<Datetime, Pg> for NaiveDateTime {
        fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
            <NaiveDateTime as FromSql<Timestamp, Pg>>::from_sql(value)
        }
    }

    impl ToSql<Datetime, Pg> for NaiveDateTime {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
            <NaiveDateTime as ToSql<Timestamp, Pg>>::to_sql(self, out)
        }
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use diesel::sql_types::Timestamp;
    use diesel::sqlite::{Sqlite, SqliteValue};

    impl FromSql<Datetime, Sqlite> for NaiveDateTime {
        fn from_sql(value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
            <NaiveDateTime as FromSql<Timestamp, Sqlite>>::from_sql(value)
        }
    }

    impl ToSql<Datetime, Sqlite> for NaiveDateTime {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
            <NaiveDateTime as ToSql<Timestamp, Sqlite>>::to_sql(self, out)
        }
    }
}
