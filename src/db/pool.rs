//! The r2d2 connection pool.

use std::time::Duration;

use diesel::r2d2::R2D2Connection;

use super::{establish_with, ConnectOptions, DatabaseUrl, DbConnection};
use crate::error::{StoreError, StoreResult};

/// A pool of [`DbConnection`]s.
pub type DbPool = r2d2::Pool<ConnectionManager>;

/// A connection checked out of a [`DbPool`]; it dereferences to [`DbConnection`] and goes back to the
/// pool when dropped.
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// Pool settings. The defaults suit a worker process of a few threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections open at once. Default 10.
    pub max_size: u32,
    /// Idle connections kept open; `None` keeps `max_size`. Default `None`.
    pub min_idle: Option<u32>,
    /// How long a checkout waits for a free connection before failing with [`StoreError::Pool`].
    /// Default 10 s.
    pub connection_timeout: Duration,
    /// Idle connections above `min_idle` are closed after this long. Default 10 min.
    pub idle_timeout: Option<Duration>,
    /// Connections are replaced after this long, well before MySQL's default `wait_timeout` (8 h)
    /// closes them from the server side. Default 30 min.
    pub max_lifetime: Option<Duration>,
    /// Check a connection before handing it out, replacing it if the server dropped it: a MySQL
    /// connection idle for longer than [`ping_after_idle`](Self::ping_after_idle) is pinged
    /// (`SELECT 1`, one round trip); one used more recently is handed out as it is, and a SQLite
    /// one (no server can drop it) always. Default `true`.
    ///
    /// Without any check, a connection the server closed (restart, failover, `wait_timeout`,
    /// `KILL`) would stay in the pool: Diesel cannot tell it is dead, so every checkout of it would
    /// fail until `max_lifetime` retired it. A ping on every checkout cost about 75 µs on loopback,
    /// which made a one-statement read about 4x slower (`cargo bench --bench pool_checkout`). A
    /// connection that died within `ping_after_idle` of its last use is caught by the
    /// [`Store`](crate::Store) instead, which runs a call whose first statement finds the connection
    /// lost once more on a new one.
    pub test_on_check_out: bool,
    /// How long a MySQL connection may sit idle before a checkout pings it (with
    /// [`test_on_check_out`](Self::test_on_check_out)). Default 5 s; `Duration::ZERO` pings on every
    /// checkout.
    pub ping_after_idle: Duration,
    /// SQLite only: see [`ConnectOptions::sqlite_busy_timeout`]. Default 30 s.
    pub sqlite_busy_timeout: Duration,
    /// MySQL only: see [`ConnectOptions::connect_timeout`]. Default 10 s.
    pub connect_timeout: Option<Duration>,
    /// MySQL only: see [`ConnectOptions::read_timeout`]. Default 60 s.
    pub read_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 10,
            min_idle: None,
            connection_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            test_on_check_out: true,
            ping_after_idle: Duration::from_secs(5),
            sqlite_busy_timeout: ConnectOptions::default().sqlite_busy_timeout,
            connect_timeout: ConnectOptions::default().connect_timeout,
            read_timeout: ConnectOptions::default().read_timeout,
        }
    }
}

/// The longest any pool timeout may be: long enough for any real setting, short enough that adding
/// it to the clock cannot overflow.
pub const MAX_POOL_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl PoolConfig {
    /// Rejects settings the pool cannot honour, before anything is opened: zero timeouts and
    /// lifetimes (r2d2 would panic on them), durations over [`MAX_POOL_DURATION`] (they would
    /// overflow the clock), and a SQLite busy timeout over [`ConnectOptions::check`]'s limit.
    fn check(&self) -> StoreResult<()> {
        positive_duration("connection_timeout", self.connection_timeout)?;
        if let Some(idle_timeout) = self.idle_timeout {
            positive_duration("idle_timeout", idle_timeout)?;
        }
        if let Some(max_lifetime) = self.max_lifetime {
            positive_duration("max_lifetime", max_lifetime)?;
        }
        self.connect_options().check()
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            sqlite_busy_timeout: self.sqlite_busy_timeout,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        }
    }
}

fn positive_duration(field: &'static str, value: Duration) -> StoreResult<()> {
    if value.is_zero() {
        return Err(StoreError::invalid(
            field,
            "must be positive (use None where the setting is optional)",
        ));
    }
    if value > MAX_POOL_DURATION {
        return Err(StoreError::invalid(
            field,
            format!(
                "must be at most {} days",
                MAX_POOL_DURATION.as_secs() / 86_400
            ),
        ));
    }
    Ok(())
}

/// Opens pool connections with [`establish_with`], so every pooled connection gets the session
/// settings and a URL is never sent to the wrong backend. Its `Debug` output (and so a pool's or a
/// [`Store`](crate::Store)'s) shows the URL without its password.
pub struct ConnectionManager {
    url: String,
    options: ConnectOptions,
    ping_after_idle: Duration,
}

impl ConnectionManager {
    /// A manager for `url` (see [`DatabaseUrl::parse`]) that pings a connection on checkout (with
    /// the pool's `test_on_check_out`) once it has been idle for [`PoolConfig::ping_after_idle`]'s
    /// default.
    pub fn new(url: impl Into<String>, options: ConnectOptions) -> Self {
        ConnectionManager {
            url: url.into(),
            options,
            ping_after_idle: PoolConfig::default().ping_after_idle,
        }
    }

    /// This manager, pinging a connection on checkout once it has been idle for `idle`.
    pub fn ping_after_idle(mut self, idle: Duration) -> Self {
        self.ping_after_idle = idle;
        self
    }
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("url", &super::redact_url(&self.url))
            .field("options", &self.options)
            .field("ping_after_idle", &self.ping_after_idle)
            .finish()
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = StoreError;

    fn connect(&self) -> Result<DbConnection, StoreError> {
        establish_with(&self.url, &self.options)
    }

    /// Pings only a MySQL connection idle for longer than the manager's `ping_after_idle`.
    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), StoreError> {
        match super::connection::idle_for(conn) {
            Some(idle) if idle > self.ping_after_idle || self.ping_after_idle.is_zero() => {
                conn.ping().map_err(StoreError::from)
            }
            _ => Ok(()),
        }
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        // A connection dropped while a thread panics may be mid-transaction: never reuse it.
        std::thread::panicking() || conn.is_broken()
    }
}

/// Checks that `conn` still talks to its server: one round trip on MySQL (`SELECT 1`), nothing on
/// SQLite (no server can drop it).
pub fn ping(conn: &mut DbConnection) -> StoreResult<()> {
    match super::connection::idle_for(conn) {
        Some(_) => conn.ping().map_err(StoreError::from),
        None => Ok(()),
    }
}

/// Builds a pool for `url` and opens its first `min_idle` connections, so a wrong URL or an unreachable
/// server fails here rather than at the first query.
///
/// An in-memory SQLite database exists per connection and vanishes when its connection closes, so a
/// pool cannot share one: `:memory:` and every other in-memory spelling
/// ([`DatabaseUrl::is_sqlite_in_memory`]) are rejected with [`StoreError::InvalidInput`]; use a file.
/// So are settings the pool cannot honour (see [`PoolConfig`]'s fields): zero timeouts, durations
/// over [`MAX_POOL_DURATION`], `max_size` 0, `min_idle` over `max_size`.
///
/// ```no_run
/// use applyops::db::{pool, PoolConfig};
/// let pool = pool("mysql://root@127.0.0.1:3306/applyops", PoolConfig::default())?;
/// let mut conn = pool.get()?;
/// applyops::db::run_migrations(&mut conn)?;
/// # Ok::<(), applyops::StoreError>(())
/// ```
pub fn pool(url: &str, config: PoolConfig) -> StoreResult<DbPool> {
    if DatabaseUrl::parse(url)?.is_sqlite_in_memory() {
        return Err(StoreError::invalid(
            "database_url",
            "an in-memory SQLite database cannot be pooled (each connection would get its own, empty \
             database); use a SQLite file",
        ));
    }
    config.check()?;
    if config.max_size == 0 {
        return Err(StoreError::invalid(
            "max_size",
            "a pool needs at least one connection",
        ));
    }
    if config
        .min_idle
        .is_some_and(|min_idle| min_idle > config.max_size)
    {
        return Err(StoreError::invalid("min_idle", "must not exceed max_size"));
    }
    let manager = ConnectionManager::new(url, config.connect_options())
        .ping_after_idle(config.ping_after_idle);
    let pool = r2d2::Pool::builder()
        .max_size(config.max_size)
        .min_idle(config.min_idle)
        .connection_timeout(config.connection_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        .test_on_check_out(config.test_on_check_out)
        .build(manager)?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let manager =
            ConnectionManager::new("mysql://app:hun/ter2@db/x", ConnectOptions::default());
        let shown = format!("{manager:?}");
        assert!(!shown.contains("ter2"), "{shown}");
        assert!(shown.contains("app:***@db/x"), "{shown}");
    }
}
