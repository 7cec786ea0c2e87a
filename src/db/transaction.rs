//! Transactions as the store needs them: write transactions that hold the write lock from their first
//! statement, the claim's transaction, and the locking reads that go with them.

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use diesel::connection::AnsiTransactionManager;
use diesel::connection::TransactionManager;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::DbConnection;
use crate::error::{StoreError, StoreResult};

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
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => {
            match AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
                Ok(()) => true,
                Err(DieselError::AlreadyInTransaction) => false,
                Err(err) => return Err(err.into()),
            }
        }
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => false,
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => false,
    };
    if !began_immediate {
        return conn.transaction(f);
    }
    finish_begun(conn, f)
}

/// Runs `f` in the transaction the caller has just begun with a `BEGIN` of its own, then commits
/// it, or rolls it back on `f`'s error.
fn finish_begun<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError>,
{
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

/// Runs `f`, a read of several statements, so that every statement reads the same moment of the
/// database: whatever other connections commit meanwhile, `f` never sees a row from before a commit
/// beside one from after it.
///
/// On MySQL the session is READ COMMITTED (`db::mysql`), where each statement reads what was
/// committed when it ran; the transaction is made REPEATABLE READ and READ ONLY
/// (`SET TRANSACTION …`, which applies to the next transaction only: one statement more), so its
/// statements read the snapshot its first one took. On PostgreSQL the same in one statement
/// (`BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY`). On SQLite a transaction reads one snapshot
/// already. Inside a caller's transaction `f` runs in a savepoint of it, at the caller's level.
pub(crate) fn snapshot_read<T, F>(conn: &mut DbConnection, f: F) -> StoreResult<T>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)] // a PostgreSQL-only build
    if let DbConnection::Pg(inner) = conn {
        match AnsiTransactionManager::begin_transaction_sql(
            &mut **inner,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        ) {
            Ok(()) => return finish_begun(conn, f),
            Err(DieselError::AlreadyInTransaction) => return conn.transaction(f),
            Err(err) => return Err(err.into()),
        }
    }
    #[cfg(feature = "mysql")]
    if matches!(conn, DbConnection::Mysql(_)) && !in_transaction(conn)? {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(super::mysql_connection::NEXT_TRANSACTION_READS_A_SNAPSHOT)?;
        let read = conn.transaction(f);
        if read.is_err() {
            // Should BEGIN itself have failed, the setting would still wait for the pooled
            // connection's next transaction (a claim, a heartbeat: refused as READ ONLY). Setting
            // the session's own characteristics back is harmless when it was used up.
            let _ = conn.batch_execute(super::mysql_connection::NEXT_TRANSACTION_AS_THE_SESSION);
        }
        return read;
    }
    conn.transaction(f)
}

/// Runs `f` so that the "now" it reads is taken while its writes are serialised with every other
/// writer's: on SQLite inside [`write_transaction`] (`BEGIN IMMEDIATE`: build the [`now`] expressions
/// inside `f`, and they are read once the database's write lock is held); on MySQL `f` runs as it is,
/// each statement taking its own row locks, and the stamps that must follow those locks use
/// [`now_when_read`] or [`now_when_read_plus`]; on PostgreSQL likewise, except that an UPDATE
/// computes its new values before it waits for a row's lock, so a stamp that must follow the lock
/// is written by [`update_after_locking!`].
///
/// For stamps that order rows or decide a lease: an insert whose `created_at` was read before it
/// waited for the lock could otherwise come out earlier than a sibling committed (and claimed)
/// meanwhile.
pub(crate) fn serialized_write<T, F>(conn: &mut DbConnection, f: F) -> StoreResult<T>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    if write_lock_is_database_wide(conn) {
        let written = write_transaction(conn, f);
        written.map_err(|err| storage_error(conn, err))
    } else {
        f(conn)
    }
}

/// On PostgreSQL, `UPDATE … $target AND $id = ($lock FOR UPDATE) … RETURNING $returning`: one
/// statement that takes the row's lock in its sub-select (`$lock` selects the row's id, from an
/// alias of the table), which runs before the UPDATE reads the row. A PostgreSQL UPDATE computes its
/// new values when it reads the row, before any wait for the row's lock, and keeps them when the
/// lock's holder commits without changing the row (seen: a heartbeat that waited 1.5 s for a
/// locked row stored an expiry computed before the wait); locked first, `clock_timestamp()` in
/// `$changes` is read after the wait. `Some(Ok(Some(row's $returning)))`, `Some(Ok(None))` when
/// `$target` matched nothing, on PostgreSQL; `None` elsewhere, where the caller runs its portable
/// form ([`now_when_read_plus`] is read after the lock there).
macro_rules! update_after_locking {
    ($conn:expr, $target:expr, $id:expr, $lock:expr, $changes:expr, $returning:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => Some(::diesel::OptionalExtension::optional(
                ::diesel::RunQueryDsl::get_result(
                    ::diesel::update(
                        $target.filter($id.nullable().eq($lock.for_update().single_value())),
                    )
                    .set($changes)
                    .returning($returning),
                    inner,
                ),
            )),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    };
}
pub(crate) use update_after_locking;

/// `err`, as [`StoreError::DiskFull`] when it says the database's disk is full (see
/// `sqlite::is_disk_full`): a write's error, whatever statement met it.
fn storage_error(conn: &mut DbConnection, err: StoreError) -> StoreError {
    match err {
        #[cfg(feature = "sqlite")]
        StoreError::Database(source) if is_disk_full(conn, &source) => {
            StoreError::DiskFull(Box::new(source))
        }
        other => {
            let _ = conn;
            other
        }
    }
}

/// True when `err`, met on `conn`, says the disk holding the database is full. Only SQLite reports
/// it to the client (a MySQL server waits for space instead).
#[cfg(feature = "sqlite")]
fn is_disk_full(conn: &mut DbConnection, err: &DieselError) -> bool {
    match conn {
        DbConnection::Sqlite(inner) => super::sqlite::is_disk_full(inner, err),
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => false,
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => false,
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
/// On MySQL and PostgreSQL the transaction is READ COMMITTED: a locking read then keeps only the rows it returns
/// (a row it reads and rejects is unlocked at once, and no gap locks are taken), and its subqueries
/// read the latest committed siblings and requests. On SQLite it is `BEGIN IMMEDIATE`, which excludes
/// every other writer for its duration. Inside a caller's transaction, `f` runs in a savepoint of it,
/// at the caller's isolation level.
///
/// A COMMIT that fails is reported as [`TransactionOutcome::Unknown`], never as a plain error: the
/// server may have committed before the connection failed.
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
        // READ COMMITTED: the session's level (`db::mysql`, `db::postgres`).
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => Manager::begin_transaction(conn)?,
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => Manager::begin_transaction(conn)?,
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => {
            AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")?
        }
    }
    match f(conn) {
        Ok(value) => match Manager::commit_transaction(conn) {
            Ok(()) => Ok(TransactionOutcome::Committed(value)),
            // The connection failed after COMMIT was sent: the server may have committed. Only a
            // server at the other end of a connection leaves that open; SQLite runs in this
            // process, and a COMMIT it refuses (a full disk, say) is rolled back.
            Err(error) if commit_outcome_unknown(conn, &error) => {
                Ok(TransactionOutcome::Unknown { value, error })
            }
            // Refused with an answer (a Galera node's certification failure, reported as a
            // deadlock; a full disk): rolled back, a known outcome.
            Err(error) => Err(storage_error(conn, StoreError::Database(error))),
        },
        Err(err) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(storage_error(conn, err)),
            Err(rollback_err) => Err(rollback_err.into()),
        },
    }
}

/// True when a COMMIT that failed with `error` may still have committed: the connection to the
/// server failed before its answer arrived. A COMMIT the server answered with an error (a lost
/// race, a full disk) was rolled back, and SQLite, in this process, always answers.
fn commit_outcome_unknown(conn: &DbConnection, error: &DieselError) -> bool {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => !is_lost_race(error) && super::connection::lost_connection(error),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => !is_lost_race(error) && super::connection::lost_connection(error),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => {
            let _ = error;
            false
        }
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
fn write_lock_is_database_wide(conn: &DbConnection) -> bool {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => false,
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => false,
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => true,
    }
}

/// Loads the first row of `$query` on the backend's own connection rather than through
/// [`DbConnection`]: Diesel then finds the prepared statement by the query's type. Through the
/// `MultiConnection` the query travels in a wrapper with no static query id, so Diesel renders its
/// whole SQL text on every call to look the statement up in its cache (callgrind, a `get` of one
/// operation on MariaDB 10.11: 106,700 client instructions per call through `DbConnection`, 43 % of
/// them rendering the SELECT and 21 % checking it is cacheable, against 8,750 for the `mysql`
/// crate). For the hot reads; a macro because each backend's connection is a different type.
macro_rules! first_native {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => ::diesel::RunQueryDsl::first($query, inner),
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => ::diesel::RunQueryDsl::first($query, inner),
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::first($query, inner),
        }
    };
}
pub(crate) use first_native;

/// Loads the first row of `$query` with the row lock a claim takes: MySQL `FOR UPDATE SKIP LOCKED`
/// (a row another claimer holds is passed over, never waited for); on SQLite the plain query, as the
/// surrounding [`claim_transaction`] already excludes every other writer. A macro because the locked and
/// unlocked queries are different types.
macro_rules! first_for_claim {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => {
                ::diesel::RunQueryDsl::first($query.for_update().skip_locked(), inner)
            }
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => {
                ::diesel::RunQueryDsl::first($query.for_update().skip_locked(), inner)
            }
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::first($query, inner),
        }
    };
}
pub(crate) use first_for_claim;

/// Loads `$first UNION ALL $second` on the backend's own connection (Diesel's `MultiBackend` cannot
/// render a combination). Each side keeps its own ORDER BY and LIMIT: MySQL wraps it in
/// parentheses, SQLite in `SELECT * FROM (…)`. The rows come back in that order, the first side's
/// first.
macro_rules! load_union_all {
    ($conn:expr, $first:expr, $second:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => ::diesel::RunQueryDsl::load(
                ::diesel::query_dsl::CombineDsl::union_all($first, $second),
                inner,
            ),
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => ::diesel::RunQueryDsl::load(
                ::diesel::query_dsl::CombineDsl::union_all($first, $second),
                inner,
            ),
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::load(
                ::diesel::query_dsl::CombineDsl::union_all($first, $second),
                inner,
            ),
        }
    };
}
pub(crate) use load_union_all;

/// Loads the first row of `$query` as it is committed now, whatever snapshot the surrounding
/// transaction reads from: MySQL `FOR UPDATE`, a locking read, which reads the latest committed row
/// (a plain read in a REPEATABLE READ transaction sees the transaction's snapshot, which can miss a
/// row another session committed since) and holds it until the transaction ends; SQLite the plain
/// query, as a SQLite transaction that writes sees every commit; PostgreSQL the locking read, then
/// the plain query (two statements, see the arm). A macro because the locked and unlocked queries
/// are different types.
macro_rules! first_current {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => {
                ::diesel::RunQueryDsl::first($query.for_update(), inner)
            }
            // The lock, then the read: a PostgreSQL statement reads the snapshot taken when it
            // began, before any wait for the lock, so the columns it computes besides the row
            // (a sub-select, the clock) could miss what the lock's holder committed. The plain
            // read that follows takes a new snapshot, once the row is ours.
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => {
                ::diesel::RunQueryDsl::execute($query.for_update(), &mut *inner)
                    .and_then(|_| ::diesel::RunQueryDsl::first($query, inner))
            }
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => ::diesel::RunQueryDsl::first($query, inner),
        }
    };
}
pub(crate) use first_current;

/// True when `conn` talks to a node of a Galera cluster (never for SQLite).
pub(crate) fn is_cluster_node(conn: &DbConnection) -> bool {
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => inner.is_cluster_node(),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => false,
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => false,
    }
}

/// Executes the INSERT `$insert` of one row and returns the id it generated: on PostgreSQL in one
/// statement (`RETURNING $id`), elsewhere the INSERT and then the connection's last insert id (MySQL
/// `LAST_INSERT_ID()`, SQLite `last_insert_rowid()`). A macro because `RETURNING` is a statement of
/// the backend's own type.
macro_rules! insert_returning_id {
    ($conn:expr, $insert:expr, $id:expr) => {
        match $conn {
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => {
                ::diesel::RunQueryDsl::get_result::<i64>($insert.returning($id), inner)
            }
            #[allow(unreachable_patterns)]
            other => ::diesel::RunQueryDsl::execute($insert, &mut *other)
                .and_then(|_| $crate::db::last_insert_id(other)),
        }
    };
}
pub(crate) use insert_returning_id;

/// Runs `f`, one statement whose failure the caller handles and then goes on in the same
/// transaction (a unique key's violation, answered by reading who holds the key). On PostgreSQL a
/// failed statement aborts the transaction it ran in (every later statement is refused until it
/// ends), so inside a transaction `f` runs in a savepoint of its own, which its failure rolls back
/// (two statements more: `SAVEPOINT` and `RELEASE SAVEPOINT` or `ROLLBACK TO SAVEPOINT`). On MySQL
/// and SQLite a failed statement leaves the transaction usable, and `f` runs as it is.
pub(crate) fn recoverable<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    #[cfg(feature = "postgres")]
    if matches!(conn, DbConnection::Pg(_)) {
        type Manager = <DbConnection as Connection>::TransactionManager;
        if Manager::transaction_manager_status_mut(conn)
            .transaction_depth()?
            .is_some()
        {
            return conn.transaction(f);
        }
    }
    f(conn)
}

/// True while `conn` is inside a transaction (the caller's, or one of ours).
pub(crate) fn in_transaction(conn: &mut DbConnection) -> StoreResult<bool> {
    type Manager = <DbConnection as Connection>::TransactionManager;
    Ok(Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_some())
}

/// How many times [`retry_contention`] runs a write that keeps losing deadlocks.
pub(crate) const CONTENTION_ATTEMPTS: u32 = 5;

/// True for an error that means the transaction lost a race and was rolled back by the database: a
/// deadlock (MySQL 1213, which Diesel reports as a serialisation failure) or a serialisation failure.
pub(crate) fn is_contention(err: &StoreError) -> bool {
    matches!(err, StoreError::Database(source) if is_lost_race(source))
}

/// True for a database error that means the statement or transaction lost a race and was rolled
/// back: a deadlock (MySQL 1213; on a Galera node also a certification failure or a brute-force
/// abort by a replicated write), which Diesel reports as a serialisation failure; on PostgreSQL a
/// serialisation failure (40001) or a deadlock (40P01).
pub(crate) fn is_lost_race(err: &DieselError) -> bool {
    match err {
        DieselError::DatabaseError(diesel::result::DatabaseErrorKind::SerializationFailure, _) => {
            true
        }
        // The same error from a statement sent as text (a COMMIT the server would not prepare),
        // which Diesel does not classify: 1213's message (sessions pin `lc_messages = en_US`).
        // PostgreSQL's deadlock (SQLSTATE 40P01), which Diesel 2.3 reports as `Unknown` without
        // its SQLSTATE: its message, as a server with English messages (the default) words it.
        DieselError::DatabaseError(_, info) => {
            info.message().starts_with("Deadlock found") || info.message() == "deadlock detected"
        }
        DieselError::RollbackErrorOnCommit { commit_error, .. } => is_lost_race(commit_error),
        _ => false,
    }
}

/// Runs `f` (which opens its own transaction) again when it loses a deadlock, up to
/// [`CONTENTION_ATTEMPTS`] times with a short random pause, then returns
/// [`StoreError::Contention`]. Inside a caller's transaction the first loss is returned at once as
/// [`StoreError::Contention`]: the database rolled the caller's whole transaction back.
pub(crate) fn retry_contention<T>(
    conn: &mut DbConnection,
    f: impl FnMut(&mut DbConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    retry_lost_races(conn, Patience::Attempts(CONTENTION_ATTEMPTS), f)
}

/// How long [`retry_fenced_write`] retries a write that keeps losing races.
pub(crate) const FENCED_WRITE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `f`, a write that is idempotent (fenced by its lease, or an operator's state write, which
/// writes the same values again), again each time it loses a race: a deadlock, or on a Galera node
/// a certification failure or brute-force abort, which under contention on a cluster can repeat
/// many times in a row. Pauses grow from about 1 ms to 100 ms, jittered, for up to
/// [`FENCED_WRITE_PATIENCE`]; only then [`StoreError::Contention`]. So a leased write ends in
/// success or in its own error (`LeaseLost` once the lease is gone), not in a lost race. Inside a
/// caller's transaction the first loss is returned at once, as [`retry_contention`] does.
pub(crate) fn retry_fenced_write<T>(
    conn: &mut DbConnection,
    f: impl FnMut(&mut DbConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    retry_lost_races(conn, Patience::For(FENCED_WRITE_PATIENCE), f)
}

/// How long a retry loop keeps going.
#[derive(Debug, Clone, Copy)]
enum Patience {
    /// At most this many runs, short pauses (claims: they pass over what keeps losing).
    Attempts(u32),
    /// Until this much time has passed, pauses growing to 100 ms (fenced writes).
    For(std::time::Duration),
}

fn retry_lost_races<T>(
    conn: &mut DbConnection,
    patience: Patience,
    mut f: impl FnMut(&mut DbConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    type Manager = <DbConnection as Connection>::TransactionManager;
    let nested = Manager::transaction_manager_status_mut(conn)
        .transaction_depth()?
        .is_some();
    let started = std::time::Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match f(conn) {
            Err(err) if is_contention(&err) => {
                let StoreError::Database(source) = err else {
                    unreachable!("is_contention matched a database error")
                };
                let exhausted = match patience {
                    Patience::Attempts(most) => attempts >= most,
                    Patience::For(budget) => started.elapsed() >= budget,
                };
                if nested || exhausted {
                    return Err(StoreError::Contention { attempts, source });
                }
                std::thread::sleep(pause(patience, attempts));
            }
            other => return other,
        }
    }
}

/// The jittered pause before run `attempts + 1`.
fn pause(patience: Patience, attempts: u32) -> std::time::Duration {
    let mut jitter = [0u8; 1];
    let _ = getrandom::fill(&mut jitter);
    let jitter = u64::from(jitter[0]);
    std::time::Duration::from_micros(match patience {
        Patience::Attempts(_) => 200 + jitter * 20 * u64::from(attempts),
        Patience::For(_) => {
            // 1 ms doubling to 100 ms, then between half of that and all of it.
            let ceiling = (1_000u64 << attempts.min(8).saturating_sub(1)).min(100_000);
            ceiling / 2 + ceiling / 2 * jitter / 255
        }
    })
}

/// Executes a multi-row INSERT (`insert_into(t).values(vec)`) on the backend's own connection.
/// Diesel builds each backend's batch insert its own way (SQLite's goes through its connection,
/// not through a query fragment), so [`DbConnection`]'s shared backend cannot render one; the query
/// is the same value on both. A macro because the two connections are different types.
macro_rules! execute_batch_insert {
    ($conn:expr, $query:expr) => {
        match $conn {
            #[cfg(feature = "mysql")]
            $crate::db::DbConnection::Mysql(inner) => ::diesel::RunQueryDsl::execute($query, inner),
            #[cfg(feature = "postgres")]
            $crate::db::DbConnection::Pg(inner) => ::diesel::RunQueryDsl::execute($query, inner),
            #[cfg(feature = "sqlite")]
            $crate::db::DbConnection::Sqlite(inner) => {
                ::diesel::RunQueryDsl::execute($query, inner)
            }
        }
    };
}
pub(crate) use execute_batch_insert;

/// Runs `f` in the transaction every write serialised per apply uses (operation state writes,
/// control requests, rollout creation, the apply refresh): on MySQL READ COMMITTED, so each statement
/// after the apply's row lock reads what was committed before the lock was granted (a REPEATABLE READ
/// snapshot can be taken before the wait, by a subquery of the locking read, and miss the commit of
/// the writer it waited for); on SQLite `BEGIN IMMEDIATE`. Inside a caller's transaction, `f` runs in
/// a savepoint of it, at the caller's isolation level. `f`'s error rolls everything back.
pub(crate) fn apply_transaction<T, F>(conn: &mut DbConnection, f: F) -> StoreResult<T>
where
    F: FnOnce(&mut DbConnection) -> StoreResult<T>,
{
    match claim_transaction(conn, f)? {
        TransactionOutcome::Committed(value) => Ok(value),
        TransactionOutcome::Unknown { error, .. } => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::DatabaseErrorKind;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[cfg(feature = "sqlite")] // used only by the tests that run on SQLite
    fn lost_race() -> StoreError {
        StoreError::Database(database_error(
            DatabaseErrorKind::SerializationFailure,
            "Deadlock found when trying to get lock; try restarting transaction",
        ))
    }

    #[cfg(feature = "sqlite")] // used only by the tests that run on SQLite
    /// A run of `f` that loses `losses` races, then succeeds.
    fn losing(losses: u32) -> impl FnMut(&mut DbConnection) -> StoreResult<u32> {
        let mut runs = 0;
        move |_| {
            runs += 1;
            if runs <= losses {
                Err(lost_race())
            } else {
                Ok(runs)
            }
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_fenced_write_outlasts_more_lost_races_than_a_claim_gives_up_after() {
        let conn = &mut crate::db::establish(":memory:").unwrap();
        let losses = CONTENTION_ATTEMPTS + 7;
        assert!(matches!(
            retry_contention(conn, losing(losses)),
            Err(StoreError::Contention { attempts, .. }) if attempts == CONTENTION_ATTEMPTS
        ));
        assert_eq!(
            retry_fenced_write(conn, losing(losses)).unwrap(),
            losses + 1
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_fenced_write_that_always_loses_ends_in_contention_once_its_patience_is_spent() {
        let conn = &mut crate::db::establish(":memory:").unwrap();
        let patience = std::time::Duration::from_millis(300);
        let started = std::time::Instant::now();
        let result = retry_lost_races(conn, Patience::For(patience), losing(u32::MAX));
        assert!(
            matches!(result, Err(StoreError::Contention { attempts, .. }) if attempts > 1),
            "{result:?}"
        );
        assert!(started.elapsed() >= patience);
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_lost_race_inside_the_callers_transaction_is_returned_at_once() {
        use diesel::Connection as _;
        let conn = &mut crate::db::establish(":memory:").unwrap();
        let result: Result<(), DieselError> = conn.transaction(|conn| {
            let inner = retry_fenced_write(conn, losing(1));
            assert!(
                matches!(inner, Err(StoreError::Contention { attempts: 1, .. })),
                "{inner:?}"
            );
            Ok(())
        });
        result.unwrap();
    }

    #[test]
    fn fenced_pauses_grow_to_100_ms_and_stay_there() {
        let patience = Patience::For(FENCED_WRITE_PATIENCE);
        let first = pause(patience, 1);
        assert!(
            first >= std::time::Duration::from_micros(500)
                && first <= std::time::Duration::from_millis(1)
        );
        for attempts in [8, 20, 1_000] {
            let later = pause(patience, attempts);
            assert!(
                later >= std::time::Duration::from_millis(50)
                    && later <= std::time::Duration::from_millis(100),
                "{attempts}: {later:?}"
            );
        }
    }

    #[test]
    fn a_deadlock_is_a_lost_race_however_diesel_classified_it() {
        let deadlock = "Deadlock found when trying to get lock; try restarting transaction";
        assert!(is_lost_race(&database_error(
            DatabaseErrorKind::SerializationFailure,
            deadlock
        )));
        // A text statement's error (a COMMIT sent as text) is not classified by Diesel.
        assert!(is_lost_race(&database_error(
            DatabaseErrorKind::Unknown,
            deadlock
        )));
        // A COMMIT that failed and whose rollback failed too.
        assert!(is_lost_race(&DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(DieselError::BrokenTransactionManager),
            commit_error: Box::new(database_error(DatabaseErrorKind::Unknown, deadlock)),
        }));
    }

    #[test]
    fn a_postgresql_deadlock_is_a_lost_race() {
        assert!(is_lost_race(&database_error(
            DatabaseErrorKind::Unknown,
            "deadlock detected"
        )));
        assert!(is_lost_race(&database_error(
            DatabaseErrorKind::SerializationFailure,
            "could not serialize access due to concurrent update"
        )));
    }

    #[test]
    fn other_errors_are_not_lost_races() {
        assert!(!is_lost_race(&database_error(
            DatabaseErrorKind::Unknown,
            "Lock wait timeout exceeded; try restarting transaction"
        )));
        assert!(!is_lost_race(&database_error(
            DatabaseErrorKind::UniqueViolation,
            "Duplicate entry '1' for key 'PRIMARY'"
        )));
        assert!(!is_lost_race(&DieselError::NotFound));
        assert!(!is_contention(&StoreError::Database(DieselError::NotFound)));
    }
}
