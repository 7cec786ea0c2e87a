//! The PostgreSQL connection of [`DbConnection`](super::DbConnection): Diesel's `PgConnection`,
//! with its use counted and timed.
//!
//! - **Statements that succeeded, counted**, so that a call whose connection turned out dead
//!   before any of its statements ran can be run again on a live one, and one that died half-way
//!   is not (see `Store`'s connection handling).
//! - **Its last use, timed**, so the pool pings only a connection that has been idle (see
//!   [`PoolConfig::ping_after_idle`](super::PoolConfig::ping_after_idle)).
//!
//! Everything else is Diesel's `PgConnection`, which this dereferences to. Transaction statements
//! need nothing of ours here: `BEGIN`, `COMMIT` and `ROLLBACK` already go as one simple-protocol
//! round trip each.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use diesel::connection::{
    AnsiTransactionManager, CacheSize, Connection, ConnectionSealed, DefaultLoadingMode,
    Instrumentation, LoadConnection, MultiConnectionHelper, SimpleConnection, TransactionManager,
};
use diesel::expression::QueryMetadata;
use diesel::migration::MigrationConnection;
use diesel::pg::{Pg, PgConnection};
use diesel::query_builder::{Query, QueryFragment, QueryId};
use diesel::r2d2::R2D2Connection;
use diesel::result::{ConnectionResult, QueryResult};

/// Diesel's `PgConnection`, which it dereferences to, with its successful statements counted and
/// its last use timed. Open one with [`establish`](super::establish).
pub struct PgConn {
    inner: PgConnection,
    last_used: Instant,
    /// Statements (and batches) that succeeded on this connection.
    succeeded: u64,
}

impl PgConn {
    pub(super) fn new(inner: PgConnection) -> Self {
        PgConn {
            inner,
            last_used: Instant::now(),
            succeeded: 0,
        }
    }

    /// How long since the connection last ran a statement (or was opened).
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// How many statements and batches have succeeded on this connection since it was opened.
    pub fn statements_succeeded(&self) -> u64 {
        self.succeeded
    }

    /// Records the outcome of a statement: a success counts, and either way the connection was used
    /// now.
    fn used<T>(&mut self, result: QueryResult<T>) -> QueryResult<T> {
        self.last_used = Instant::now();
        if result.is_ok() {
            self.succeeded += 1;
        }
        result
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("idle_for", &self.idle_for())
            .field("statements_succeeded", &self.succeeded)
            .finish_non_exhaustive()
    }
}

impl Deref for PgConn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}

impl SimpleConnection for PgConn {
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        let result = self.inner.batch_execute(query);
        self.used(result)
    }
}

impl ConnectionSealed for PgConn {}

impl Connection for PgConn {
    type Backend = Pg;
    type TransactionManager = AnsiTransactionManager;

    /// Opens a bare connection, without applyops' session settings: use
    /// [`establish`](super::establish).
    fn establish(database_url: &str) -> ConnectionResult<Self> {
        PgConnection::establish(database_url).map(PgConn::new)
    }

    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Pg> + QueryId,
    {
        let result = self.inner.execute_returning_count(source);
        self.used(result)
    }

    fn transaction_state(&mut self) -> &mut AnsiTransactionManager {
        self.inner.transaction_state()
    }

    fn instrumentation(&mut self) -> &mut dyn Instrumentation {
        self.inner.instrumentation()
    }

    fn set_instrumentation(&mut self, instrumentation: impl Instrumentation) {
        self.inner.set_instrumentation(instrumentation);
    }

    fn set_prepared_statement_cache_size(&mut self, size: CacheSize) {
        self.inner.set_prepared_statement_cache_size(size);
    }
}

impl LoadConnection<DefaultLoadingMode> for PgConn {
    type Cursor<'conn, 'query> =
        <PgConnection as LoadConnection<DefaultLoadingMode>>::Cursor<'conn, 'query>;
    type Row<'conn, 'query> =
        <PgConnection as LoadConnection<DefaultLoadingMode>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: Query + QueryFragment<Pg> + QueryId + 'query,
        Pg: QueryMetadata<T::SqlType>,
    {
        self.last_used = Instant::now();
        // Diesel's default PostgreSQL cursor holds the whole result: the statement is done here.
        let cursor =
            <PgConnection as LoadConnection<DefaultLoadingMode>>::load(&mut self.inner, source);
        if cursor.is_ok() {
            self.succeeded += 1;
        }
        cursor
    }
}

// The type lookups run on the inner connection (every query is built there), so what they hand
// back is the inner connection, as Diesel's own `PgConnection` does.
impl MultiConnectionHelper for PgConn {
    fn to_any<'a>(
        lookup: &mut <Pg as diesel::sql_types::TypeMetadata>::MetadataLookup,
    ) -> &mut (dyn std::any::Any + 'a) {
        <PgConnection as MultiConnectionHelper>::to_any(lookup)
    }

    fn from_any(
        lookup: &mut dyn std::any::Any,
    ) -> Option<&mut <Pg as diesel::sql_types::TypeMetadata>::MetadataLookup> {
        <PgConnection as MultiConnectionHelper>::from_any(lookup)
    }
}

impl R2D2Connection for PgConn {
    fn ping(&mut self) -> QueryResult<()> {
        let result = self.inner.ping();
        self.used(result)
    }

    fn is_broken(&mut self) -> bool {
        AnsiTransactionManager::is_broken_transaction_manager(self)
    }
}

impl MigrationConnection for PgConn {
    fn setup(&mut self) -> QueryResult<usize> {
        self.inner.setup()
    }
}
