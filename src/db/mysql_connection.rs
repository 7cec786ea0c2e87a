//! The MySQL/MariaDB connection of [`DbConnection`](super::DbConnection): Diesel's
//! `MysqlConnection` with what a store's round trips need on top.
//!
//! - **Transaction statements prepared once.** Diesel's transaction manager sends `BEGIN`,
//!   `COMMIT` and `ROLLBACK` through `batch_execute`, which on MySQL turns multi-statement mode on
//!   and off around the text query: three round trips each. Here they run as statements the
//!   connection's statement cache prepares once: one round trip each. A server that refuses to
//!   prepare one (MySQL 8 does not prepare `BEGIN`; MariaDB does) gets it as text from then on.
//!   Savepoints and every other batch go to Diesel's `batch_execute` unchanged, and Diesel's own
//!   transaction manager keeps the depth and the error handling.
//! - **Its last use, timed**, so the pool pings only a connection that has been idle (see
//!   [`PoolConfig::ping_after_idle`](super::PoolConfig::ping_after_idle)).
//! - **No prepared statement reused after a failed read.** When a read fails after the server
//!   started its result (a lock wait timeout or a deadlock met while scanning rows; on a Galera
//!   cluster a brute-force abort), libmariadb leaves the statement in a state where its next
//!   execution first waits for the rest of the old result, which never comes: the call would
//!   block for good. Diesel keeps such a statement in its cache. After any failed read, the
//!   connection's next statement first drops the statement cache (closing every prepared
//!   statement), so each statement is prepared again on its next use. Tested by
//!   `tests/it/failed_statements.rs`.
//!
//! Everything else is Diesel's `MysqlConnection`, which this dereferences to.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::{
    AnsiTransactionManager, CacheSize, Connection, ConnectionSealed, DefaultLoadingMode,
    Instrumentation, LoadConnection, MultiConnectionHelper, SimpleConnection, TransactionManager,
};
use diesel::expression::QueryMetadata;
use diesel::migration::MigrationConnection;
use diesel::mysql::{Mysql, MysqlConnection};
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::R2D2Connection;
use diesel::result::{ConnectionResult, DatabaseErrorKind, Error as DieselError, QueryResult};

use super::watchdog::Watch;

/// Diesel's `MysqlConnection` with what a store's round trips need on top, which it dereferences
/// to:
/// - `BEGIN`, `COMMIT` and `ROLLBACK` run as statements prepared once per connection (one round
///   trip each instead of Diesel's three); a server that refuses to prepare one gets it as text;
/// - its last use is timed, so the pool pings only a connection that has been idle (see
///   [`PoolConfig::ping_after_idle`](super::PoolConfig::ping_after_idle));
/// - it knows whether the server is a node of a Galera cluster ([`MysqlConn::is_cluster_node`]).
///
/// Open one with [`establish`](super::establish).
pub struct MysqlConn {
    inner: MysqlConnection,
    last_used: Instant,
    /// False once the server refused to prepare a transaction statement: they go as text since.
    prepares_transactions: bool,
    /// Statements (and batches) that succeeded on this connection.
    succeeded: u64,
    /// The server is a node of a Galera cluster (`wsrep_on`).
    cluster_node: bool,
    /// A read failed: the statement cache may hold a statement libmariadb would block on (see the
    /// module doc). Dropped before the next statement.
    stale_statements: bool,
    /// The statement cache's size as last set (Diesel's default, unbounded, until then).
    cache_size: CacheSize,
    /// The read timeout's watch of this connection's socket (`None`: no read timeout).
    watch: Option<Arc<Watch>>,
    /// A statement was cut off by the read timeout: the socket is shut down for good.
    timed_out: bool,
}

impl MysqlConn {
    pub(super) fn new(inner: MysqlConnection) -> Self {
        MysqlConn {
            inner,
            last_used: Instant::now(),
            prepares_transactions: true,
            succeeded: 0,
            cluster_node: false,
            stale_statements: false,
            cache_size: CacheSize::Unbounded,
            watch: None,
            timed_out: false,
        }
    }

    /// Enforces `watch`'s read timeout on every statement of this connection.
    pub(super) fn watched(mut self, watch: Arc<Watch>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The read timeout enforced on this connection's statements, if any.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.watch.as_ref().map(|watch| watch.timeout())
    }

    /// Runs one statement (or batch) under the read timeout: its error, if the timeout cut it off, is
    /// the timeout's.
    fn timed<T>(
        &mut self,
        run: impl FnOnce(&mut MysqlConnection) -> QueryResult<T>,
    ) -> QueryResult<T> {
        let Some(watch) = self.watch.clone() else {
            return run(&mut self.inner);
        };
        watch.arm();
        let result = run(&mut self.inner);
        if watch.disarm() {
            self.timed_out = true;
        }
        match result {
            Err(_) if self.timed_out => Err(DieselError::DatabaseError(
                DatabaseErrorKind::Unknown,
                Box::new(crate::error::read_timed_out_message(watch.timeout())),
            )),
            other => other,
        }
    }

    /// Marks the connection as one to a node of a Galera cluster.
    pub(super) fn on_cluster_node(mut self) -> Self {
        self.cluster_node = true;
        self
    }

    /// True when the server is a node of a Galera cluster (`wsrep_on` was `ON` at connect).
    pub fn is_cluster_node(&self) -> bool {
        self.cluster_node
    }

    /// How long since the connection last ran a statement (or was opened).
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// How many statements and batches have succeeded on this connection since it was opened.
    pub fn statements_succeeded(&self) -> u64 {
        self.succeeded
    }

    /// True while `BEGIN`, `COMMIT` and `ROLLBACK` run as prepared statements; false once the server
    /// refused to prepare one and they go as text.
    pub fn prepares_transaction_statements(&self) -> bool {
        self.prepares_transactions
    }

    /// Before a statement: after a failed read, closes every prepared statement of the connection
    /// (the cache is replaced by an empty one), so none is executed in the state libmariadb left
    /// it in.
    fn forget_statements_after_a_failed_read(&mut self) {
        if std::mem::take(&mut self.stale_statements) && self.cache_size != CacheSize::Disabled {
            tracing::debug!("a read failed: dropping the connection's prepared statements");
            self.inner
                .set_prepared_statement_cache_size(CacheSize::Disabled);
            self.inner
                .set_prepared_statement_cache_size(self.cache_size);
        }
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

impl Drop for MysqlConn {
    fn drop(&mut self) {
        // Before the socket is closed: the watchdog must never shut down a descriptor number this
        // connection no longer owns.
        if let Some(watch) = &self.watch {
            watch.release();
        }
    }
}

impl std::fmt::Debug for MysqlConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConn")
            .field("idle_for", &self.idle_for())
            .field("prepares_transactions", &self.prepares_transactions)
            .field("read_timeout", &self.read_timeout())
            .finish_non_exhaustive()
    }
}

impl Deref for MysqlConn {
    type Target = MysqlConnection;

    fn deref(&self) -> &MysqlConnection {
        &self.inner
    }
}

impl DerefMut for MysqlConn {
    fn deref_mut(&mut self) -> &mut MysqlConnection {
        &mut self.inner
    }
}

/// Makes the next transaction read one snapshot (`db::snapshot_read`): the session is READ
/// COMMITTED, where each statement reads the latest commits.
pub(crate) const NEXT_TRANSACTION_READS_A_SNAPSHOT: &str =
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Gives the next transaction the session's own characteristics back (READ COMMITTED, READ
/// WRITE: `db::mysql`), should [`NEXT_TRANSACTION_READS_A_SNAPSHOT`] not have been used up.
pub(crate) const NEXT_TRANSACTION_AS_THE_SESSION: &str =
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE";

/// `BEGIN`, `COMMIT`, `ROLLBACK` or [`NEXT_TRANSACTION_READS_A_SNAPSHOT`] as a statement the
/// statement cache can keep (keyed by its SQL): one round trip each once prepared, where text sent
/// through `batch_execute` costs three (multi-statements on, the query, off).
#[derive(Debug, Clone, Copy)]
struct TransactionStatement(&'static str);

impl TransactionStatement {
    /// The statement Diesel's transaction manager (or `db::snapshot_read`) sends as `sql`, if it is
    /// one of these.
    fn of(sql: &str) -> Option<Self> {
        [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            NEXT_TRANSACTION_READS_A_SNAPSHOT,
        ]
        .into_iter()
        .find(|known| *known == sql)
        .map(TransactionStatement)
    }
}

impl QueryId for TransactionStatement {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Mysql> for TransactionStatement {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Mysql>) -> QueryResult<()> {
        out.push_sql(self.0);
        Ok(())
    }
}

/// True for the server's refusal to prepare a statement (`ER_UNSUPPORTED_PS`, 1295). The session
/// pins `lc_messages` to English, and Diesel reports no error number.
fn is_unsupported_prepare(err: &DieselError) -> bool {
    matches!(err, DieselError::DatabaseError(_, info)
        if info.message().contains("not supported in the prepared statement protocol"))
}

impl SimpleConnection for MysqlConn {
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.forget_statements_after_a_failed_read();
        let prepares = self.prepares_transactions;
        let mut refused_prepare = false;
        let result = self.timed(|inner| match TransactionStatement::of(query) {
            Some(statement) if prepares => match inner.execute_returning_count(&statement) {
                Err(err) if is_unsupported_prepare(&err) => {
                    refused_prepare = true;
                    inner.batch_execute(query)
                }
                other => other.map(drop),
            },
            _ => inner.batch_execute(query),
        });
        if refused_prepare {
            tracing::debug!(
                statement = query,
                "the server does not prepare transaction statements; sending them as text"
            );
            self.prepares_transactions = false;
        }
        self.used(result)
    }
}

impl ConnectionSealed for MysqlConn {}

impl Connection for MysqlConn {
    type Backend = Mysql;
    type TransactionManager = AnsiTransactionManager;

    /// Opens a bare connection, without applyops' session settings: use
    /// [`establish`](super::establish).
    fn establish(database_url: &str) -> ConnectionResult<Self> {
        MysqlConnection::establish(database_url).map(MysqlConn::new)
    }

    fn execute_returning_count<T>(&mut self, source: &T) -> QueryResult<usize>
    where
        T: QueryFragment<Mysql> + QueryId,
    {
        self.forget_statements_after_a_failed_read();
        let result = self.timed(|inner| inner.execute_returning_count(source));
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
        self.cache_size = size;
        self.inner.set_prepared_statement_cache_size(size);
    }
}

impl LoadConnection<DefaultLoadingMode> for MysqlConn {
    type Cursor<'conn, 'query> =
        <MysqlConnection as LoadConnection<DefaultLoadingMode>>::Cursor<'conn, 'query>;
    type Row<'conn, 'query> =
        <MysqlConnection as LoadConnection<DefaultLoadingMode>>::Row<'conn, 'query>;

    fn load<'conn, 'query, T>(
        &'conn mut self,
        source: T,
    ) -> QueryResult<Self::Cursor<'conn, 'query>>
    where
        T: Query + QueryFragment<Mysql> + QueryId + 'query,
        Mysql: QueryMetadata<T::SqlType>,
    {
        self.forget_statements_after_a_failed_read();
        self.last_used = Instant::now();
        // The rows are read from the server here (Diesel's MySQL cursor is a buffered result): the
        // statement's wait ends with this call.
        let watch = self.watch.clone();
        if let Some(watch) = &watch {
            watch.arm();
        }
        let cursor = self.inner.load(source);
        let cut_off = watch.as_ref().is_some_and(|watch| watch.disarm());
        self.timed_out |= cut_off;
        match cursor {
            Ok(_) => self.succeeded += 1,
            Err(_) if cut_off => {
                self.stale_statements = true;
                return Err(DieselError::DatabaseError(
                    DatabaseErrorKind::Unknown,
                    Box::new(crate::error::read_timed_out_message(
                        watch.map_or(Duration::ZERO, |watch| watch.timeout()),
                    )),
                ));
            }
            Err(_) => self.stale_statements = true,
        }
        cursor
    }
}

impl MultiConnectionHelper for MysqlConn {
    fn to_any<'a>(lookup: &mut ()) -> &mut (dyn std::any::Any + 'a) {
        lookup
    }

    fn from_any(lookup: &mut dyn std::any::Any) -> Option<&mut ()> {
        lookup.downcast_mut()
    }
}

impl R2D2Connection for MysqlConn {
    fn ping(&mut self) -> QueryResult<()> {
        let result = self.timed(|inner| inner.ping());
        self.used(result)
    }

    fn is_broken(&mut self) -> bool {
        self.timed_out || AnsiTransactionManager::is_broken_transaction_manager(self)
    }
}

impl MigrationConnection for MysqlConn {
    fn setup(&mut self) -> QueryResult<usize> {
        self.inner.setup()
    }
}
