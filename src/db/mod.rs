//! Connections, migrations and the pool: everything that knows which backend it is talking to.
//!
//! [`DbConnection`] is one Diesel connection type over MySQL/MariaDB (production) and SQLite (the
//! embedded default). Everything above this module is written once in Diesel's DSL against it. Where the
//! backends differ (session setup, last-insert-id, reading a duplicate-key error, migrations, write
//! transactions, the server clock) the code is matched on the variant here and lives in one file per
//! backend: `src/db/mysql.rs` and `src/db/sqlite.rs`. A PostgreSQL variant slots in as a third arm and a third file.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::error::{StoreError, StoreResult};

mod migration_plan;
mod mysql;
mod now;
mod pool;
mod sqlite;
mod url;

pub use now::{now, now_when_read, now_when_read_plus, DbNow, DbNowWhenRead, DbNowWhenReadPlus};
pub use pool::{pool, ConnectionManager, DbPool, PoolConfig, PooledConnection, MAX_POOL_DURATION};
pub use url::{redact_url, DatabaseUrl};

pub use migration_plan::{
    ensure_migrated, pending_migrations, preview_revert, revert_last_migration_checked, Dropped,
    DroppedData, RevertPreview,
};

pub use connection::{DbConnection, MultiBackend};

mod connection {
    // The derive generates public helper types (the `MultiBackend` and its row and value types) that
    // carry no docs of their own.
    #![allow(missing_docs)]

    use diesel::mysql::MysqlConnection;
    use diesel::sqlite::SqliteConnection;

    /// A connection to either backend. Open it with [`establish`](super::establish), never with
    /// Diesel's derived `Connection::establish`, which would fall back to creating a SQLite file when
    /// a MySQL server is unreachable and skips applyops' session settings.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// MySQL 8.0+ or MariaDB 10.6+.
        Mysql(MysqlConnection),
        /// SQLite (bundled libsqlite3), a file or `:memory:`.
        Sqlite(SqliteConnection),
    }
}

/// Which backend a [`DbConnection`] or [`DatabaseUrl`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

impl DbConnection {
    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            DbConnection::Mysql(_) => Backend::Mysql,
            DbConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Per-connection settings applied by [`establish_with`] and by the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// SQLite only: how long a statement waits for another connection's write lock before failing with
    /// "database is locked". Default 5 s.
    pub sqlite_busy_timeout: Duration,
}

/// The longest SQLite busy timeout: SQLite takes it in milliseconds as a C `int`.
pub const MAX_SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl ConnectOptions {
    /// Rejects a `sqlite_busy_timeout` over [`MAX_SQLITE_BUSY_TIMEOUT`] (about 24.8 days) with
    /// [`StoreError::InvalidInput`].
    pub fn check(&self) -> StoreResult<()> {
        if self.sqlite_busy_timeout > MAX_SQLITE_BUSY_TIMEOUT {
            return Err(StoreError::invalid(
                "sqlite_busy_timeout",
                format!("must be at most {} ms", MAX_SQLITE_BUSY_TIMEOUT.as_millis()),
            ));
        }
        Ok(())
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens a connection with the default [`ConnectOptions`].
///
/// `url` is `mysql://user:password@host:port/database` for MySQL/MariaDB, or for SQLite a file path,
/// `sqlite://path` (`sqlite:///abs/path` for an absolute one) or `:memory:`. See [`DatabaseUrl`].
///
/// ```no_run
/// let mut conn = applyops::db::establish("sqlite://applyops.db")?;
/// applyops::db::run_migrations(&mut conn)?;
/// # Ok::<(), applyops::StoreError>(())
/// ```
pub fn establish(url: &str) -> StoreResult<DbConnection> {
    establish_with(url, &ConnectOptions::default())
}

/// Opens a connection and applies the session settings: on MySQL a strict `sql_mode` and UTC time zone
/// (so bad data is an error, never a silent truncation, and timestamps mean the same on every server);
/// on SQLite WAL journaling and a busy timeout (so readers never block the writer and writers queue).
///
/// Errors: [`StoreError::InvalidInput`] for options [`ConnectOptions::check`] rejects, before connecting.
pub fn establish_with(url: &str, options: &ConnectOptions) -> StoreResult<DbConnection> {
    options.check()?;
    match DatabaseUrl::parse(url)? {
        DatabaseUrl::Mysql(url) => Ok(DbConnection::Mysql(mysql::connect(&url)?)),
        DatabaseUrl::Sqlite(path) => {
            url::check_sqlite_directory(&path)?;
            Ok(DbConnection::Sqlite(sqlite::connect(&path, options)?))
        }
    }
}

/// How migration runners wait for each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOptions {
    /// MySQL: how long to wait for another runner's migration lock before failing with
    /// [`StoreError::MigrationLockTimeout`], in whole seconds.
    /// Default 60 s. SQLite runners wait for the connection's busy timeout instead.
    pub lock_wait: Duration,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            lock_wait: Duration::from_secs(60),
        }
    }
}

/// Runs every pending migration of the connection's backend and returns the versions it applied.
///
/// Concurrent runners are serialised: on MySQL with a named `GET_LOCK` scoped to the current database
/// (waiting up to 60 s), on SQLite with one immediate transaction around the whole run. Every MySQL
/// migration is a single idempotent DDL statement, so a run cut off half-way can simply be repeated.
pub fn run_migrations(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    run_migrations_with(conn, &MigrationOptions::default())
}

/// [`run_migrations`] with explicit [`MigrationOptions`].
pub fn run_migrations_with(
    conn: &mut DbConnection,
    options: &MigrationOptions,
) -> StoreResult<Vec<String>> {
    match conn {
        DbConnection::Mysql(inner) => mysql::run_migrations(inner, options.lock_wait),
        DbConnection::Sqlite(inner) => sqlite::run_migrations(inner),
    }
}

/// Reverts the most recently applied migration, returning its version, or `None` when none is applied.
/// Serialised with other runners like [`run_migrations`]. Meant for operators and tests: the store
/// needs every migration.
pub fn revert_last_migration(conn: &mut DbConnection) -> StoreResult<Option<String>> {
    match conn {
        DbConnection::Mysql(inner) => {
            mysql::revert_last_migration(inner, MigrationOptions::default().lock_wait)
        }
        DbConnection::Sqlite(inner) => sqlite::revert_last_migration(inner),
    }
}

/// Applies every pending migration of `source`; the caller holds its backend's migration lock.
fn apply_pending<DB: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<DB>,
    source: EmbeddedMigrations,
) -> StoreResult<Vec<String>> {
    let applied = conn
        .run_pending_migrations(source)
        .map_err(StoreError::Migration)?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Reverts the newest applied migration of `source`, if any; the caller holds the migration lock.
fn revert_newest<DB: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<DB>,
    source: EmbeddedMigrations,
) -> StoreResult<Option<String>> {
    if conn
        .applied_migrations()
        .map_err(StoreError::Migration)?
        .is_empty()
    {
        return Ok(None);
    }
    let reverted = conn
        .revert_last_migration(source)
        .map_err(StoreError::Migration)?;
    Ok(Some(reverted.to_string()))
}

/// Runs `f` in a transaction that holds the write lock from its first statement.
///
/// On SQLite this is `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can fail
/// with "database is locked" without waiting, because SQLite cannot upgrade its read lock while another
/// connection writes. On MySQL it is an ordinary transaction (row locks are taken per statement). When
/// the connection is already inside a transaction, `f` runs in a savepoint of it instead, so callers can
/// compose store functions in transactions of their own. `f`'s error rolls everything back.
pub fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    let began_immediate = match conn {
        DbConnection::Sqlite(inner) => {
            match AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
                Ok(()) => true,
                Err(DieselError::AlreadyInTransaction) => false,
                Err(err) => return Err(err.into()),
            }
        }
        DbConnection::Mysql(_) => false,
    };
    if !began_immediate {
        return conn.transaction(f);
    }
    type Manager = <DbConnection as Connection>::TransactionManager;
    match f(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(err),
            Err(rollback_err) => Err(rollback_err.into()),
        },
    }
}

/// Runs `f` so that the "now" it reads is taken while its writes are serialised with every other
/// writer's: on SQLite inside [`write_transaction`] (`BEGIN IMMEDIATE`: build the [`now`] expressions
/// inside `f`, and they are read once the database's write lock is held); on MySQL `f` runs as it is,
/// each statement taking its own row locks, and the stamps that must follow those locks use
/// [`now_when_read`] or [`now_when_read_plus`].
///
/// For stamps that order rows or decide a lease: an insert whose `created_at` was read before it
/// waited for the lock could otherwise come out earlier than a sibling committed (and claimed)
/// meanwhile.
pub(crate) fn serialized_write<T, F>(conn: &mut DbConnection, f: F) -> StoreResult<T>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    if write_lock_is_database_wide(conn) {
        write_transaction(conn, f)
    } else {
        f(conn)
    }
}

/// How a transaction whose body succeeded ended.
#[derive(Debug)]
pub(crate) enum TransactionOutcome<T> {
    /// COMMIT was acknowledged (or the body ran in a savepoint of the caller's transaction, which
    /// the caller commits).
    Committed(T),
    /// COMMIT was sent but not acknowledged: the connection failed in between, so the transaction
    /// may or may not have committed. `value` is what the body returned.
    Unknown {
        /// What the body returned.
        value: T,
        /// What the connection reported instead of the acknowledgement.
        error: DieselError,
    },
}

/// Runs `f` in the transaction a claim needs: with the claim's one-row `FOR UPDATE SKIP LOCKED`
/// reads, concurrent claimers never wait on each other's rows and never take the same one.
///
/// On MySQL the transaction is READ COMMITTED: a locking read then keeps only the rows it returns
/// (a row it reads and rejects is unlocked at once, and no gap locks are taken), and its subqueries
/// read the latest committed siblings and requests. On SQLite it is `BEGIN IMMEDIATE`, which excludes
/// every other writer for its duration. Inside a caller's transaction, `f` runs in a savepoint of it,
/// at the caller's isolation level.
///
/// A COMMIT that fails is reported as [`TransactionOutcome::Unknown`], never as a plain error: the
/// server may have committed before the connection failed (Diesel sends COMMIT and then a
/// `COM_SET_OPTION`, and either can be the one that finds the connection dead).
pub(crate) fn claim_transaction<T, F>(
    conn: &mut DbConnection,
    f: F,
) -> StoreResult<TransactionOutcome<T>>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    let top_level = Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_none();
    if !top_level {
        return write_transaction(conn, f).map(TransactionOutcome::Committed);
    }
    match conn {
        DbConnection::Mysql(inner) => {
            mysql::read_committed_next_transaction(inner)?;
            Manager::begin_transaction(conn)?;
        }
        DbConnection::Sqlite(inner) => {
            AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?
        }
    }
    match f(conn) {
        Ok(value) => match Manager::commit_transaction(conn) {
            Ok(()) => Ok(TransactionOutcome::Committed(value)),
            Err(error) => Ok(TransactionOutcome::Unknown { value, error }),
        },
        Err(err) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(err),
            Err(rollback_err) => Err(rollback_err.into()),
        },
    }
}

/// Marks `conn` broken, so a pool drops it when it is returned instead of handing it out again. For a
/// connection whose last statement failed in a way that may have killed it: Diesel cannot tell a dead
/// MySQL connection from a live one outside a transaction.
pub fn discard_on_return(conn: &mut DbConnection) {
    type Manager = <DbConnection as Connection>::TransactionManager;
    Manager::transaction_manager_status_mut(conn).set_in_error();
}

/// True when a write transaction locks the whole database (SQLite) rather than rows (MySQL). There,
/// a claim first looks for a candidate without a transaction, so idle workers polling for work read
/// (which WAL never blocks) instead of queueing for the one write lock and starving real writers.
pub(crate) fn write_lock_is_database_wide(conn: &DbConnection) -> bool {
    match conn {
        DbConnection::Mysql(_) => false,
        DbConnection::Sqlite(_) => true,
    }
}

/// Loads the first row of `$query` with the row lock a claim takes: MySQL `FOR UPDATE SKIP LOCKED`
/// (a row another claimer holds is passed over, never waited for); on SQLite the plain query, as the
/// surrounding [`claim_transaction`] already excludes every other writer. A macro because the locked and
/// unlocked queries are different types.
macro_rules! first_for_claim {
    ($conn:expr, $query:expr) => {
        match $conn {
            $crate::db::DbConnection::Mysql(inner) => {
                ::diesel::RunQueryDsl::first($query.for_update().skip_locked(), inner)
            }
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::first($query, inner),
        }
    };
}
pub(crate) use first_for_claim;

/// Loads the first row of `$query` as it is committed now, whatever snapshot the surrounding
/// transaction reads from: MySQL `FOR UPDATE`, a locking read, which reads the latest committed row
/// (a plain read in a REPEATABLE READ transaction sees the transaction's snapshot, which can miss a
/// row another session committed since) and holds it until the transaction ends; SQLite the plain
/// query, as a SQLite transaction that writes sees every commit. A macro because the locked and
/// unlocked queries are different types.
macro_rules! first_current {
    ($conn:expr, $query:expr) => {
        match $conn {
            $crate::db::DbConnection::Mysql(inner) => {
                ::diesel::RunQueryDsl::first($query.for_update(), inner)
            }
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::first($query, inner),
        }
    };
}
pub(crate) use first_current;

/// The plan of `$query`, read without locks, as text lines: MySQL `EXPLAIN`, SQLite
/// `EXPLAIN QUERY PLAN`.
macro_rules! explain {
    ($conn:expr, $query:expr) => {
        match $conn {
            $crate::db::DbConnection::Mysql(inner) => $crate::db::mysql_explain(inner, $query),
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
            $crate::db::DbConnection::Mysql(inner) => {
                $crate::db::mysql_explain(inner, $query.for_update().skip_locked())
            }
            $crate::db::DbConnection::Sqlite(inner) => $crate::db::sqlite_explain(inner, $query),
        }
    };
}
pub(crate) use explain_for_claim;
pub(crate) use mysql::explain as mysql_explain;
pub(crate) use sqlite::explain as sqlite_explain;

/// A query prefixed with its backend's explain keyword, its bind parameters kept: Diesel has no
/// `EXPLAIN`, and formatting the query into a string would lose the binds.
#[derive(Debug)]
pub(crate) struct Explain<Q> {
    keyword: &'static str,
    query: Q,
}

impl<Q> Explain<Q> {
    fn new(keyword: &'static str, query: Q) -> Self {
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

/// The identity of a unique key, as the store declares it, so that a duplicate-key error can be
/// attributed to exactly this key and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UniqueKey {
    /// The table the key is on.
    pub table: &'static str,
    /// The index name (the same on both backends).
    pub name: &'static str,
    /// The key's columns, in order.
    pub columns: &'static [&'static str],
}

/// A unique key as a backend names it in its duplicate-key message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ViolatedKey {
    /// MySQL/MariaDB name the index, MySQL 8.0.19+ prefixed with its table.
    Named {
        /// The table, when the server names it.
        table: Option<String>,
        /// The index name.
        name: String,
    },
    /// SQLite names the columns, each as `table.column`.
    Columns {
        /// `(table, column)` pairs in key order.
        columns: Vec<(String, String)>,
    },
}

impl UniqueKey {
    /// True when `violated` is this key.
    pub fn matches(&self, violated: &ViolatedKey) -> bool {
        match violated {
            ViolatedKey::Named { table, name } => {
                name == self.name && table.as_deref().is_none_or(|table| table == self.table)
            }
            ViolatedKey::Columns { columns } => {
                columns.len() == self.columns.len()
                    && columns
                        .iter()
                        .zip(self.columns)
                        .all(|((table, column), expected)| {
                            table == self.table && column == expected
                        })
            }
        }
    }
}

/// True when `err` is a unique violation of `key` (and of no other key).
///
/// Diesel reports no constraint name on MySQL or SQLite, so the server's message is read, with the
/// parser of the backend that produced it.
pub(crate) fn is_unique_violation_of(
    conn: &DbConnection,
    err: &DieselError,
    key: &UniqueKey,
) -> bool {
    let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = err else {
        return false;
    };
    let violated = match conn {
        DbConnection::Mysql(_) => mysql::violated_key(info.message()),
        DbConnection::Sqlite(_) => sqlite::violated_key(info.message()),
    };
    violated.is_some_and(|violated| key.matches(&violated))
}

/// The id the last INSERT on this connection generated.
pub(crate) fn last_insert_id(conn: &mut DbConnection) -> QueryResult<i64> {
    match conn {
        DbConnection::Mysql(inner) => mysql::last_insert_id(inner),
        DbConnection::Sqlite(inner) => sqlite::last_insert_id(inner),
    }
}

/// Reads `apply_operations.apply_id` of operation `id`, locking the row against concurrent deletes
/// until the surrounding [`write_transaction`] ends (MySQL `FOR UPDATE`; SQLite's immediate
/// transaction already excludes every other writer).
pub(crate) fn apply_id_of_operation_locked(
    conn: &mut DbConnection,
    id: i64,
) -> QueryResult<Option<i64>> {
    use crate::schema::apply_operations::dsl as ops;
    let query = ops::apply_operations
        .select(ops::apply_id)
        .filter(ops::id.eq(id));
    match conn {
        DbConnection::Mysql(inner) => query.for_update().first(inner).optional(),
        DbConnection::Sqlite(inner) => query.first(inner).optional(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: UniqueKey = UniqueKey {
        table: "apply_operations",
        name: "apply_operations_apply_id_deployment_key",
        columns: &["apply_id", "deployment"],
    };

    #[test]
    fn a_named_key_matches_with_or_without_its_table() {
        let bare = ViolatedKey::Named {
            table: None,
            name: KEY.name.into(),
        };
        let qualified = ViolatedKey::Named {
            table: Some("apply_operations".into()),
            name: KEY.name.into(),
        };
        assert!(KEY.matches(&bare));
        assert!(KEY.matches(&qualified));
    }

    #[test]
    fn another_key_or_table_does_not_match() {
        let other_name = ViolatedKey::Named {
            table: None,
            name: "PRIMARY".into(),
        };
        let other_table = ViolatedKey::Named {
            table: Some("tasks".into()),
            name: KEY.name.into(),
        };
        assert!(!KEY.matches(&other_name));
        assert!(!KEY.matches(&other_table));
    }

    #[test]
    fn sqlite_columns_must_match_exactly_and_in_order() {
        let cols = |pairs: &[(&str, &str)]| ViolatedKey::Columns {
            columns: pairs
                .iter()
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect(),
        };
        assert!(KEY.matches(&cols(&[
            ("apply_operations", "apply_id"),
            ("apply_operations", "deployment")
        ])));
        assert!(!KEY.matches(&cols(&[
            ("apply_operations", "deployment"),
            ("apply_operations", "apply_id")
        ])));
        assert!(!KEY.matches(&cols(&[("apply_operations", "apply_id")])));
        assert!(!KEY.matches(&cols(&[("tasks", "apply_id"), ("tasks", "deployment")])));
    }
}
