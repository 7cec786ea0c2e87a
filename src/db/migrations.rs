//! Running and reverting the embedded migrations, serialised with other runners.

use std::time::Duration;

use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

#[cfg(feature = "mysql")]
use super::mysql;
#[cfg(feature = "postgres")]
use super::postgres;
#[cfg(feature = "sqlite")]
use super::sqlite;
use super::DbConnection;
use crate::error::{StoreError, StoreResult};

/// How migration runners wait for each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOptions {
    /// MySQL and PostgreSQL: how long to wait for another runner's migration lock before failing with
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
/// (waiting up to 60 s), on PostgreSQL with an advisory lock (scoped to the current database by
/// PostgreSQL itself, same wait), on SQLite with one immediate transaction around the whole run.
/// Every MySQL migration is idempotent, so a run cut off half-way can simply be repeated; on
/// PostgreSQL each migration runs in a transaction of its own, so a cut-off run leaves whole
/// migrations behind.
pub fn run_migrations(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    run_migrations_with(conn, &MigrationOptions::default())
}

/// [`run_migrations`] with explicit [`MigrationOptions`].
pub fn run_migrations_with(
    conn: &mut DbConnection,
    options: &MigrationOptions,
) -> StoreResult<Vec<String>> {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => mysql::run_migrations(inner, options.lock_wait),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => postgres::run_migrations(inner, options.lock_wait),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => {
            let _ = options; // SQLite runners wait for the busy timeout instead.
            sqlite::run_migrations(inner)
        }
    }
}

/// Reverts the most recently applied migration, returning its version, or `None` when none is applied.
/// Serialised with other runners like [`run_migrations`]. Meant for operators and tests: the store
/// needs every migration.
pub fn revert_last_migration(conn: &mut DbConnection) -> StoreResult<Option<String>> {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => {
            mysql::revert_last_migration(inner, MigrationOptions::default().lock_wait)
        }
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => {
            postgres::revert_last_migration(inner, MigrationOptions::default().lock_wait)
        }
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => sqlite::revert_last_migration(inner),
    }
}

/// Applies every pending migration of `source`; the caller holds its backend's migration lock.
pub(super) fn apply_pending<DB: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<DB>,
    source: EmbeddedMigrations,
) -> StoreResult<Vec<String>> {
    let applied = conn
        .run_pending_migrations(source)
        .map_err(StoreError::Migration)?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// Reverts the newest applied migration of `source`, if any; the caller holds the migration lock.
pub(super) fn revert_newest<DB: diesel::backend::Backend>(
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
