//! The connection type over every backend, and how one is opened.

use std::time::Duration;

use diesel::prelude::*;

#[cfg(feature = "mysql")]
use super::mysql;
#[cfg(feature = "postgres")]
use super::postgres;
use super::url::DatabaseUrl;
#[cfg(feature = "sqlite")]
use super::{sqlite, url};
use crate::error::{StoreError, StoreResult};

#[cfg(feature = "mysql")]
pub use multi::MysqlConn;
#[cfg(feature = "postgres")]
pub use multi::PgConn;
pub use multi::{DbConnection, MultiBackend};

mod multi {
    // The derive generates public helper types (the `MultiBackend` and its row and value types) that
    // carry no docs of their own.
    #![allow(missing_docs)]

    #[cfg(feature = "mysql")]
    pub use crate::db::mysql_connection::MysqlConn;
    #[cfg(feature = "postgres")]
    pub use crate::db::pg_connection::PgConn;
    #[cfg(feature = "sqlite")]
    use diesel::sqlite::SqliteConnection;

    /// A connection to any of the backends. Open it with [`establish`](super::establish), never
    /// with Diesel's derived `Connection::establish`, which would fall back to creating a SQLite
    /// file when a server is unreachable and skips applyops' session settings.
    ///
    /// Each variant exists only in builds with its Cargo feature (`mysql`, `postgres`, `sqlite`); match on
    /// [`backend`](DbConnection::backend) rather than on the variants to stay feature-independent.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// MySQL 8.0+ or MariaDB 10.6+: Diesel's `MysqlConnection` with its transaction statements
        /// prepared once (see [`MysqlConn`]).
        #[cfg(feature = "mysql")]
        Mysql(MysqlConn),
        /// PostgreSQL 15+: Diesel's `PgConnection` with its use counted (see [`PgConn`]).
        #[cfg(feature = "postgres")]
        Pg(PgConn),
        /// SQLite (bundled libsqlite3), a file or `:memory:`.
        #[cfg(feature = "sqlite")]
        Sqlite(SqliteConnection),
    }
}

/// [`Datetime`](crate::schema_types::Datetime) on every backend of [`DbConnection`]: each variant
/// binds and reads it as its own backend does (`MYSQL_TYPE_DATETIME` on MySQL, `timestamp` on
/// PostgreSQL, text on SQLite).
mod datetime {
    use chrono::NaiveDateTime;
    use diesel::deserialize::{self, FromSql};
    use diesel::serialize::{self, IsNull, Output, ToSql};
    use diesel::sql_types::HasSqlType;

    use super::MultiBackend;
    use crate::schema_types::Datetime;

    impl HasSqlType<Datetime> for MultiBackend {
        fn metadata(lookup: &mut Self::MetadataLookup) -> Self::TypeMetadata {
            MultiBackend::lookup_sql_type::<Datetime>(lookup)
        }
    }

    impl FromSql<Datetime, MultiBackend> for NaiveDateTime {
        fn from_sql(
            value: <MultiBackend as diesel::backend::Backend>::RawValue<'_>,
        ) -> deserialize::Result<Self> {
            value.from_sql::<NaiveDateTime, Datetime>()
        }
    }

    impl ToSql<Datetime, MultiBackend> for NaiveDateTime {
        fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
            out.set_value((Datetime, self));
            Ok(IsNull::No)
        }
    }
}

/// Which backend a [`DbConnection`] or [`DatabaseUrl`] talks to.
///
/// Every variant exists in every build; [`is_compiled_in`](Backend::is_compiled_in) tells which
/// ones this build can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// True when this build of applyops was compiled with the backend's Cargo feature (`mysql`,
    /// `postgres`, `sqlite`) and so can open it.
    pub const fn is_compiled_in(self) -> bool {
        match self {
            Backend::Mysql => cfg!(feature = "mysql"),
            Backend::Postgres => cfg!(feature = "postgres"),
            Backend::Sqlite => cfg!(feature = "sqlite"),
        }
    }

    /// The backend's name as people write it: `MySQL`, `PostgreSQL`, `SQLite`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Mysql => "MySQL",
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

impl DbConnection {
    /// The backend this connection talks to.
    pub fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "mysql")]
            DbConnection::Mysql(_) => Backend::Mysql,
            #[cfg(feature = "postgres")]
            DbConnection::Pg(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            DbConnection::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Per-connection settings applied by [`establish_with`] and by the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// SQLite only: how long a statement waits for another connection's write lock before failing with
    /// "database is locked". Default 30 s: every state write is a short write transaction, and
    /// under many concurrent writers SQLite's busy handler (which is not fair) can keep one waiting
    /// for seconds.
    pub sqlite_busy_timeout: Duration,
    /// MySQL and PostgreSQL: how long opening a connection (TCP connect, handshake, session setup)
    /// may take before it fails with [`StoreError::Timeout`]. `None` waits as long as the operating system
    /// does. Default 10 s.
    pub connect_timeout: Option<Duration>,
    /// MySQL only: how long a statement may wait for the server's answer (sending it included)
    /// before its connection is closed and the call fails with [`StoreError::Timeout`]: a frozen
    /// server (`SIGSTOP`, a hung host whose TCP stack still answers) otherwise blocks a call for
    /// ever. It must exceed the longest lock wait a statement may meet (`innodb_lock_wait_timeout`,
    /// 50 s by default). Migrations run without it (a long `ALTER TABLE` is not a frozen server).
    /// Applies to TCP connections; a connection over a Unix socket has none. `None` waits for ever.
    /// Default 60 s.
    pub read_timeout: Option<Duration>,
}

/// The default [`ConnectOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ConnectOptions::read_timeout`]: above InnoDB's default lock wait (50 s), which a
/// statement of the store may legitimately meet.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

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
        for (field, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if let Some(timeout) = timeout {
                if timeout < Duration::from_millis(1) || timeout > super::MAX_POOL_DURATION {
                    return Err(StoreError::invalid(
                        field,
                        format!(
                            "must be 1 ms to {} s (None waits for ever)",
                            super::MAX_POOL_DURATION.as_secs()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            sqlite_busy_timeout: Duration::from_secs(30),
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            read_timeout: Some(DEFAULT_READ_TIMEOUT),
        }
    }
}

/// Opens a connection with the default [`ConnectOptions`].
///
/// `url` is `mysql://user:password@host:port/database` for MySQL/MariaDB,
/// `postgres://user:password@host:port/database` (or `postgresql://`, with any of libpq's
/// parameters, several hosts included) for PostgreSQL, or for SQLite a file path,
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
/// on PostgreSQL the UTC time zone and READ COMMITTED; on SQLite WAL journaling and a busy timeout
/// (so readers never block the writer and writers queue).
///
/// Errors: [`StoreError::InvalidInput`] for options [`ConnectOptions::check`] rejects, before connecting;
/// [`StoreError::UnsupportedDatabaseUrl`] for a URL [`DatabaseUrl::parse`] rejects, including one for a
/// backend this build was compiled without.
pub fn establish_with(url: &str, options: &ConnectOptions) -> StoreResult<DbConnection> {
    options.check()?;
    let parsed = DatabaseUrl::parse(url)?;
    match parsed {
        #[cfg(feature = "mysql")]
        DatabaseUrl::Mysql(url) => Ok(DbConnection::Mysql(mysql::connect(&url, options)?)),
        #[cfg(feature = "postgres")]
        DatabaseUrl::Postgres(url) => Ok(DbConnection::Pg(postgres::connect(&url, options)?)),
        #[cfg(feature = "sqlite")]
        DatabaseUrl::Sqlite(path) => {
            url::check_sqlite_directory(&path)?;
            Ok(DbConnection::Sqlite(sqlite::connect(&path, options)?))
        }
        // `parse` has already refused a backend this build lacks; still an error, never a panic.
        #[cfg(not(all(feature = "mysql", feature = "postgres", feature = "sqlite")))]
        other => Err(DatabaseUrl::not_compiled_in(url, other.backend())),
    }
}

/// Runs `open` on a thread of its own and stops waiting for it after `timeout` with
/// [`StoreError::Timeout`] (`None`: runs it here and waits as long as it takes). Neither client
/// library's own connect timeout covers a server that accepts connections but never answers its
/// handshake, and Diesel gives no access to them anyway. The thread ends when the server answers or
/// the operating system gives up on the connection; what it opened late is closed.
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub(super) fn within<C: Send + 'static>(
    timeout: Option<Duration>,
    open: impl FnOnce() -> StoreResult<C> + Send + 'static,
) -> StoreResult<C> {
    let Some(timeout) = timeout else {
        return open();
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("applyops-connect".into())
        .spawn(move || {
            // The caller may have stopped waiting: a connection it no longer wants is closed.
            let _ = sender.send(open());
        })
        .map_err(|err| {
            StoreError::Connect(diesel::ConnectionError::BadConnection(format!(
                "could not start the connecting thread: {err}"
            )))
        })?;
    match receiver.recv_timeout(timeout) {
        Ok(opened) => opened,
        Err(_) => Err(StoreError::Timeout {
            operation: crate::error::TimedOut::Connect,
            after: timeout,
        }),
    }
}

/// How many statements have succeeded on `conn` since it was opened, on MySQL and PostgreSQL; always 0 on SQLite,
/// whose connections no server can close. Compared before and after a call, it tells whether the
/// call's first statement was the one that failed.
pub fn statements_succeeded(conn: &DbConnection) -> u64 {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => inner.statements_succeeded(),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => inner.statements_succeeded(),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => 0,
    }
}

/// True for an error that says the connection to the server is gone: on MySQL the client library's
/// "Lost connection to … server during query" and "… server has gone away" (Diesel reports them
/// as unknown database errors, by message only); on PostgreSQL a connection libpq reports bad.
pub fn is_connection_lost(err: &StoreError) -> bool {
    match err {
        StoreError::Database(err) => lost_connection(err),
        _ => false,
    }
}

/// [`is_connection_lost`] of a Diesel error (a failed COMMIT whose rollback failed too is judged by
/// the COMMIT's error).
pub(crate) fn lost_connection(err: &diesel::result::Error) -> bool {
    #[cfg(feature = "postgres")]
    if postgres::lost_connection(err) {
        return true;
    }
    match err {
        diesel::result::Error::DatabaseError(_, info) => {
            let message = info.message().to_ascii_lowercase();
            message.starts_with("lost connection to") || message.contains("server has gone away")
        }
        diesel::result::Error::RollbackErrorOnCommit { commit_error, .. } => {
            lost_connection(commit_error)
        }
        _ => false,
    }
}

/// How long a pooled connection has been idle, or `None` for a SQLite one (which has no server to
/// drop it, and so never needs a ping).
pub(crate) fn idle_for(conn: &DbConnection) -> Option<Duration> {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => Some(inner.idle_for()),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => Some(inner.idle_for()),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => None,
    }
}

/// The id the last INSERT on this connection generated.
pub(crate) fn last_insert_id(conn: &mut DbConnection) -> QueryResult<i64> {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => mysql::last_insert_id(inner),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => postgres::last_insert_id(inner),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => sqlite::last_insert_id(inner),
    }
}

// The refusals only exist in single-backend builds: `make check-features` runs them.
#[cfg(all(
    test,
    not(all(feature = "mysql", feature = "postgres", feature = "sqlite"))
))]
mod tests {
    use super::*;

    /// `err` is the typed refusal of a URL whose backend this build lacks: the URL shown without its
    /// password, the reason naming the missing feature.
    fn assert_not_compiled_in<T>(result: StoreResult<T>, shown: &str, feature: &str) {
        let Err(err) = result else {
            panic!("{shown} was opened by a build without the `{feature}` feature");
        };
        match &err {
            StoreError::UnsupportedDatabaseUrl { url, reason } => {
                assert_eq!(url, shown, "{err}");
                assert!(
                    reason.contains(&format!("lacks the `{feature}` feature")),
                    "{err}"
                );
            }
            other => panic!("expected UnsupportedDatabaseUrl, got {other:?}"),
        }
    }

    #[cfg(not(feature = "mysql"))]
    #[test]
    fn a_build_without_mysql_refuses_mysql_urls() {
        assert!(!Backend::Mysql.is_compiled_in());
        let url = "mysql://app:hun/ter2@127.0.0.1:3306/applyops";
        let shown = "mysql://app:***@127.0.0.1:3306/applyops";
        assert_not_compiled_in(establish(url), shown, "mysql");
        // Refused before any connection or pool is built, not as a pool timeout.
        let pool = crate::db::pool(url, crate::db::PoolConfig::default());
        assert_not_compiled_in(pool, shown, "mysql");
    }

    #[cfg(not(feature = "sqlite"))]
    #[test]
    fn a_build_without_sqlite_refuses_sqlite_urls() {
        assert!(!Backend::Sqlite.is_compiled_in());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.db").display().to_string();
        for url in [
            format!("sqlite://{file}"),
            file.clone(),
            ":memory:".to_owned(),
            "file:x.db?mode=memory".to_owned(),
        ] {
            assert_not_compiled_in(establish(&url), &url, "sqlite");
            let pool = crate::db::pool(&url, crate::db::PoolConfig::default());
            assert_not_compiled_in(pool, &url, "sqlite");
        }
        // Refused, not opened: no database file was created.
        assert!(!std::path::Path::new(&file).exists());
    }
}

#[cfg(test)]
mod connection_lost_tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error};

    fn database_error(message: &str) -> StoreError {
        StoreError::Database(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn the_client_librarys_lost_connection_messages_are_connection_lost() {
        for message in [
            "Lost connection to server during query",
            "Lost connection to MySQL server during query",
            "MySQL server has gone away",
            "Server has gone away",
        ] {
            assert!(is_connection_lost(&database_error(message)), "{message}");
        }
    }

    #[test]
    fn other_errors_are_not_connection_lost() {
        for message in [
            "Duplicate entry 'x' for key 'k'",
            "Deadlock found when trying to get lock; try restarting transaction",
            "Table 'x.y' doesn't exist",
        ] {
            assert!(!is_connection_lost(&database_error(message)), "{message}");
        }
        assert!(!is_connection_lost(&StoreError::Database(Error::NotFound)));
    }
}
