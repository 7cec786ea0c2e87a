//! `EXPLAIN` of a Diesel query on either backend, its bind parameters kept.

use diesel::prelude::*;

/// The plan of `$query`, read without locks, as text lines: MySQL and PostgreSQL `EXPLAIN`, SQLite
/// `EXPLAIN QUERY PLAN`.
macro_rules! explain {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => $crate::db::mysql_explain(inner, $query),
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => $crate::db::postgres_explain(inner, $query),
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => $crate::db::sqlite_explain(inner, $query),
        }
    };
}
pub(crate) use explain;

/// The plan of `$query` locked as [`first_for_claim!`] locks it, as text lines: MySQL `EXPLAIN`,
/// SQLite `EXPLAIN QUERY PLAN`.
macro_rules! explain_for_claim {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => {
                $crate::db::mysql_explain(inner, $query.for_update().skip_locked())
            }
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => {
                $crate::db::postgres_explain(inner, $query.for_update().skip_locked())
            }
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => $crate::db::sqlite_explain(inner, $query),
        }
    };
}
pub(crate) use explain_for_claim;

/// A query prefixed with its backend's explain keyword, its bind parameters kept: Diesel has no
/// `EXPLAIN`, and formatting the query into a string would lose the binds.
#[derive(Debug)]
pub(crate) struct Explain<Q> {
    keyword: &'static str,
    query: Q,
}

impl<Q> Explain<Q> {
    pub(crate) fn new(keyword: &'static str, query: Q) -> Self {
        Explain { keyword, query }
    }
}

impl<Q: diesel::query_builder::QueryId> diesel::query_builder::QueryId for Explain<Q> {
    type QueryId = ();
    // Not cached as a prepared statement: the keyword is a runtime value.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> diesel::query_builder::Query for Explain<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q, DB> diesel::query_builder::QueryFragment<DB> for Explain<Q>
where
    DB: diesel::backend::Backend,
    Q: diesel::query_builder::QueryFragment<DB>,
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        out.push_sql(self.keyword);
        self.query.walk_ast(out.reborrow())
    }
}

impl<Q, Conn> RunQueryDsl<Conn> for Explain<Q> {}
