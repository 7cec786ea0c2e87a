//! Statements the connection prepares once and reuses: UPDATEs, and tests against fixed sets.

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::query_source::Table;
use diesel::result::QueryResult;
use diesel::serialize::ToSql;
use diesel::sql_types::HasSqlType;
use diesel::{AsChangeset, RunQueryDsl};

/// `UPDATE table SET changes WHERE filter`, kept in the connection's statement cache (keyed by its
/// SQL text) so that after its first use on a connection it costs one round trip, the execution.
///
/// Diesel's own `UpdateStatement` marks itself unsafe to cache (its cache could otherwise key it by
/// its Rust type, and one update type can render different SQL between calls: a changeset with
/// optional fields, a boxed filter), so every call prepares it anew, executes it and closes it.
/// This one renders the same three parts, built with Diesel's DSL, and is keyed by the SQL it
/// renders, never by its type: a different text is a different statement, so reuse is always
/// correct. Only for statements with a bounded number of shapes (each shape is one prepared
/// statement held on the server for the connection's life): the store's fixed-shape writes.
pub(crate) struct CachedUpdate<T: Table, W, C> {
    from_clause: T::FromClause,
    filter: W,
    changes: C,
}

/// `UPDATE table SET changes WHERE filter`, prepared once per connection: see [`CachedUpdate`].
pub(crate) fn cached_update<T, W, V>(
    table: T,
    filter: W,
    changes: V,
) -> CachedUpdate<T, W, V::Changeset>
where
    T: Table,
    V: AsChangeset<Target = T>,
{
    CachedUpdate {
        from_clause: table.from_clause(),
        filter,
        changes: changes.as_changeset(),
    }
}

impl<T: Table, W, C> QueryId for CachedUpdate<T, W, C> {
    // Keyed by the SQL, never by the type.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<T, W, C, DB> QueryFragment<DB> for CachedUpdate<T, W, C>
where
    DB: Backend,
    T: Table,
    T::FromClause: QueryFragment<DB>,
    W: QueryFragment<DB>,
    C: QueryFragment<DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE ");
        self.from_clause.walk_ast(out.reborrow())?;
        out.push_sql(" SET ");
        self.changes.walk_ast(out.reborrow())?;
        out.push_sql(" WHERE ");
        self.filter.walk_ast(out.reborrow())
    }
}

impl<T: Table, W, C, Conn> RunQueryDsl<Conn> for CachedUpdate<T, W, C> {}

/// `column IN (values…)` (or `NOT IN`), with one bind per value, that leaves its statement cacheable.
///
/// Diesel's `eq_any` and `ne_all` mark every statement holding them unsafe to cache (the number
/// of placeholders follows the number of values), so a claim's gates and candidate reads, which
/// test fixed sets of states and kinds, were prepared anew on every call. The statement cache
/// keys these statements by their SQL text, so each number of values is a statement of its own:
/// fine for the store's fixed sets and short lists, never for a list an input can grow.
#[derive(Debug, Clone)]
pub(crate) struct OneOf<C, T> {
    column: C,
    values: Vec<T>,
    negated: bool,
    /// No values: true (every row), instead of what `negated` says.
    empty_is_all: bool,
}

impl<C, T> OneOf<C, T> {
    fn new(
        column: C,
        values: impl IntoIterator<Item = T>,
        negated: bool,
        empty_is_all: bool,
    ) -> Self {
        OneOf {
            column,
            values: values.into_iter().collect(),
            negated,
            empty_is_all,
        }
    }
}

/// `column IN (values…)`: see [`OneOf`]. No values: false.
pub(crate) fn one_of<C, T>(column: C, values: impl IntoIterator<Item = T>) -> OneOf<C, T> {
    OneOf::new(column, values, false, false)
}

/// `column IN (values…)`, or true when there are no values (no restriction): see [`OneOf`]. For a
/// filter an input may leave open, such as a claim's scope.
pub(crate) fn within<C, T>(column: C, values: impl IntoIterator<Item = T>) -> OneOf<C, T> {
    OneOf::new(column, values, false, true)
}

/// `column NOT IN (values…)`: see [`OneOf`]. No values: true.
pub(crate) fn none_of<C, T>(column: C, values: impl IntoIterator<Item = T>) -> OneOf<C, T> {
    OneOf::new(column, values, true, true)
}

impl<C: Expression, T> Expression for OneOf<C, T> {
    type SqlType = diesel::sql_types::Bool;
}

impl<C: ValidGrouping<GB>, T, GB> ValidGrouping<GB> for OneOf<C, T> {
    type IsAggregate = C::IsAggregate;
}

impl<C: AppearsOnTable<QS>, T, QS: ?Sized> AppearsOnTable<QS> for OneOf<C, T> {}

impl<C: SelectableExpression<QS>, T, QS: ?Sized> SelectableExpression<QS> for OneOf<C, T> {}

impl<C, T> QueryId for OneOf<C, T> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<C, T, DB> QueryFragment<DB> for OneOf<C, T>
where
    DB: Backend + HasSqlType<C::SqlType>,
    C: Expression + QueryFragment<DB>,
    T: ToSql<C::SqlType, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        if self.values.is_empty() {
            out.push_sql(if self.empty_is_all { "1=1" } else { "1=0" });
            return Ok(());
        }
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(if self.negated { " NOT IN (" } else { " IN (" });
        for (n, value) in self.values.iter().enumerate() {
            if n > 0 {
                out.push_sql(", ");
            }
            out.push_bind_param::<C::SqlType, T>(value)?;
        }
        out.push_sql(")");
        Ok(())
    }
}

/// The type of [`one_of`]`(column, values)`, for `#[diesel::dsl::auto_type]`.
#[allow(non_camel_case_types)]
pub(crate) type one_of<C, V> = OneOf<C, <V as IntoIterator>::Item>;

/// The type of [`within()`]`(column, values)`, for `#[diesel::dsl::auto_type]`.
#[allow(non_camel_case_types)]
pub(crate) type within<C, V> = OneOf<C, <V as IntoIterator>::Item>;

/// The type of [`none_of`]`(column, values)`, for `#[diesel::dsl::auto_type]`.
#[allow(non_camel_case_types)]
pub(crate) type none_of<C, V> = OneOf<C, <V as IntoIterator>::Item>;
