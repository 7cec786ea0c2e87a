//! Connections, migrations and the pool: everything that knows which backend it is talking to.
//!
//! [`DbConnection`] is one Diesel connection type over MySQL/MariaDB (production), PostgreSQL and
//! SQLite (the embedded default). Everything above this module is written once in Diesel's DSL
//! against it. Where the backends differ (session setup, last-insert-id, reading a duplicate-key
//! error, migrations, write transactions, the server clock) the code is matched on the variant here
//! and lives in one file per backend: `src/db/mysql.rs`, `src/db/postgres.rs` and
//! `src/db/sqlite.rs`. The rest is split by concern: `connection`, `transaction`, `migrations` (and
//! `migration_plan`), `unique_key`, `explain`, `now`, `pool`, `url`. Nothing here names a table of the
//! store.
//!
//! Each backend is a Cargo feature, `mysql`, `postgres` and `sqlite`, all on by default. The backend files, the
//! [`DbConnection`] variants and every arm matched on them exist only with their feature; nothing
//! outside this module depends on them. A URL for a backend the build lacks is refused by [`DatabaseUrl::parse`] (and so by
//! [`establish`] and [`pool`](pool())).

#[cfg(not(any(feature = "mysql", feature = "postgres", feature = "sqlite")))]
compile_error!(
    "applyops needs at least one database backend: enable its `mysql`, `postgres` or `sqlite` \
     feature (all are default features, so this only happens with `default-features = false`)"
);

mod connection;
mod explain;
mod migration_plan;
mod migrations;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "mysql")]
mod mysql_connection;
mod now;
#[cfg(feature = "postgres")]
mod pg_connection;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod reuse;
#[cfg(feature = "sqlite")]
mod sqlite;
mod transaction;
mod unique_key;
mod url;
#[cfg(feature = "mysql")]
mod watchdog;

#[cfg(feature = "mysql")]
pub use connection::MysqlConn;
#[cfg(feature = "postgres")]
pub use connection::PgConn;
pub use connection::{
    establish, establish_with, is_connection_lost, statements_succeeded, Backend, ConnectOptions,
    DbConnection, MultiBackend, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
    MAX_SQLITE_BUSY_TIMEOUT,
};
pub use migration_plan::{
    ensure_migrated, pending_migrations, preview_revert, revert_last_migration_checked, Dropped,
    DroppedData, RevertPreview,
};
pub use migrations::{
    revert_last_migration, run_migrations, run_migrations_with, MigrationOptions,
};
pub use now::{now, now_when_read, now_when_read_plus, DbNow, DbNowWhenRead, DbNowWhenReadPlus};
pub use pool::{
    ping, pool, ConnectionManager, DbPool, PoolConfig, PooledConnection, MAX_POOL_DURATION,
};
pub(crate) use reuse::{cached_update, none_of, one_of, within, CachedUpdate};
pub use transaction::{discard_on_return, write_transaction};
pub use url::{redact_url, DatabaseUrl};

pub(crate) use connection::last_insert_id;
pub(crate) use explain::{explain, explain_for_claim, Explain};
#[cfg(feature = "mysql")]
pub(crate) use mysql::explain as mysql_explain;
#[cfg(feature = "postgres")]
pub(crate) use postgres::explain as postgres_explain;
#[cfg(feature = "sqlite")]
pub(crate) use sqlite::explain as sqlite_explain;
pub(crate) use transaction::{
    apply_transaction, claim_transaction, execute_batch_insert, first_current, first_for_claim,
    first_native, in_transaction, insert_returning_id, is_cluster_node, load_union_all,
    recoverable, retry_contention, retry_fenced_write, serialized_write, snapshot_read,
    update_after_locking, TransactionOutcome,
};
pub(crate) use unique_key::{
    is_unique_violation_of, is_unreadable_unique_violation, UniqueKey, ViolatedKey,
};
