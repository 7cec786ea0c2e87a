//! The connection type over every backend, and how one is opened.

use std::time::Duration;

use diesel::prelude::*;

use super::url::{self, DatabaseUrl};
use super::{mysql, sqlite};
use crate::error::{StoreError, StoreResult};

pub use multi::{DbConnection, MultiBackend};

mod multi {
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

/// The id the last INSERT on this connection generated.
pub(crate) fn last_insert_id(conn: &mut DbConnection) -> QueryResult<i64> {
    match conn {
        DbConnection::Mysql(inner) => mysql::last_insert_id(inner),
        DbConnection::Sqlite(inner) => sqlite::last_insert_id(inner),
    }
}
