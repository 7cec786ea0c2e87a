//! Everything PostgreSQL-specific.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use super::pg_connection::PgConn;
use super::{ConnectOptions, ViolatedKey};
use crate::error::{StoreError, StoreResult};

/// The PostgreSQL migration tree (`migrations/postgres`).
pub(super) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// UTC, so that the timestamps the server computes (`clock_timestamp() AT TIME ZONE 'UTC'`) and the
/// ones the client binds mean the same whatever the server's own zone; READ COMMITTED set for the
/// session, as on MySQL (every transaction of the store locks what it decides on first, and each
/// later statement then reads what was committed before that lock was granted). PostgreSQL's
/// messages are never read (only SQLSTATEs and constraint names), so the server's language does
/// not matter.
const SESSION_SETUP: &str = "SET TIME ZONE 'UTC'; \
SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

define_sql_function! {
    /// The value the last `nextval` of this session returned: the id of the row it last inserted.
    fn lastval() -> BigInt;
}
define_sql_function! {
    /// Takes a session-level advisory lock if it is free: true when taken.
    fn pg_try_advisory_lock(key: BigInt) -> Bool;
}
define_sql_function! {
    /// Releases a session-level advisory lock this session holds.
    fn pg_advisory_unlock(key: BigInt) -> Bool;
}

/// Opens a connection with applyops' session settings, within `options.connect_timeout` (see
/// [`within`](super::connection::within)). `options.read_timeout` is not applied on PostgreSQL.
pub(super) fn connect(url: &str, options: &ConnectOptions) -> StoreResult<PgConn> {
    // Before libpq first uses OpenSSL: initialised without the cleanup at exit, which would free
    // OpenSSL's locks under a pool thread still connecting while the process exits (a segfault).
    // Later initialisations (libpq's own) keep that choice.
    openssl_sys::init();
    let url = url.to_owned();
    super::connection::within(options.connect_timeout, move || open(&url))
}

/// [`connect`]'s work: the connection and its session settings.
fn open(url: &str) -> StoreResult<PgConn> {
    let mut conn = PgConnection::establish(&without_gss_unless_asked(url))
        .map_err(|err| StoreError::Connect(without_password(err, url)))?;
    conn.batch_execute(SESSION_SETUP)?;
    Ok(PgConn::new(conn))
}

/// `url` with `gssencmode=disable` added when it does not set `gssencmode` itself. libpq's default
/// (`prefer`) initialises Kerberos on every connect, even where no ticket exists; a process that
/// exits while a pool thread is inside that initialisation aborts in Kerberos' own mutex checks
/// (seen with Debian's libpq 15: `k5_mutex_lock: Assertion 'r == 0' failed`). Deployments that
/// use GSSAPI encryption say so in their URL (`gssencmode=prefer` or `require`), which is kept.
fn without_gss_unless_asked(url: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let asked = query.split('&').any(|parameter| {
        parameter
            .split_once('=')
            .is_some_and(|(name, _)| name.eq_ignore_ascii_case("gssencmode"))
    });
    match (asked, url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&gssencmode=disable"),
        (false, false) => format!("{url}?gssencmode=disable"),
    }
}

/// `err` with every piece of `url`'s password replaced by `***`: libpq's messages quote what it
/// could not parse, and a password holding a raw `/` or `?` is read as the host or port (seen:
/// `invalid integer value "S3cret" for connection option "port"` for `postgres://app:S3cret/x@db/x`).
/// The line break libpq ends its messages with goes too, so the error reads as one line.
fn without_password(err: diesel::ConnectionError, url: &str) -> diesel::ConnectionError {
    let password = super::url::password_of(url).filter(|p| !p.is_empty());
    let scrub = |message: String| {
        let message = message.trim_end().to_owned();
        let Some(password) = password else {
            return message;
        };
        let mut pieces: Vec<&str> = password
            .split(['/', '?', '#', '@', ':', '&', '=', ',', ' '])
            .filter(|piece| piece.len() >= 2)
            .collect();
        pieces.push(password);
        pieces.sort_by_key(|piece| std::cmp::Reverse(piece.len()));
        pieces
            .into_iter()
            .fold(message, |message, piece| message.replace(piece, "***"))
    };
    match err {
        diesel::ConnectionError::BadConnection(message) => {
            diesel::ConnectionError::BadConnection(scrub(message))
        }
        diesel::ConnectionError::InvalidConnectionUrl(message) => {
            diesel::ConnectionError::InvalidConnectionUrl(scrub(message))
        }
        other => other,
    }
}

/// The id of the row this connection last inserted (the value its sequence last handed out).
pub(super) fn last_insert_id(conn: &mut PgConn) -> QueryResult<i64> {
    diesel::select(lastval()).get_result(&mut **conn)
}

/// The unique key a unique violation names: PostgreSQL reports the constraint (or unique index)
/// and its table with the error itself (SQLSTATE 23505), in every server language.
pub(super) fn violated_key(info: &dyn DatabaseErrorInformation) -> Option<ViolatedKey> {
    let name = info.constraint_name()?;
    (!name.is_empty()).then(|| ViolatedKey::Named {
        table: info.table_name().map(str::to_owned),
        name: name.to_owned(),
    })
}

/// True when `err` says the connection to the server is gone: libpq reports the connection bad
/// (Diesel's `ClosedConnection`, also for the SQLSTATE class 08 errors).
pub(super) fn lost_connection(err: &diesel::result::Error) -> bool {
    matches!(
        err,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
    )
}

/// The key of the migration lock: a constant, since PostgreSQL's advisory locks are scoped to the
/// current database already (runners for different databases on one server do not wait for each
/// other).
const MIGRATION_LOCK_KEY: i64 = 0x6170_706c_796f_7073; // "applyops"

/// Runs `run` holding the migration lock, polling for it every 100 ms up to `wait`, then
/// [`StoreError::MigrationLockTimeout`]. A session-level advisory lock: it stays taken across the
/// transactions Diesel runs each migration in, and goes with the session should the runner die.
fn with_migration_lock<T>(
    conn: &mut PgConn,
    wait: Duration,
    run: impl FnOnce(&mut PgConn) -> StoreResult<T>,
) -> StoreResult<T> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let taken: bool =
            diesel::select(pg_try_advisory_lock(MIGRATION_LOCK_KEY)).get_result(conn)?;
        if taken {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::MigrationLockTimeout {
                waited_secs: wait.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = run(conn);
    // Released explicitly so a pooled connection does not keep it; it would also go with the session.
    let released = diesel::select(pg_advisory_unlock(MIGRATION_LOCK_KEY)).get_result::<bool>(conn);
    match (result, released) {
        (Ok(value), Ok(_)) => Ok(value),
        (Err(err), _) => Err(err),
        (Ok(_), Err(err)) => Err(err.into()),
    }
}

pub(super) fn run_migrations(conn: &mut PgConn, lock_wait: Duration) -> StoreResult<Vec<String>> {
    with_migration_lock(conn, lock_wait, |conn| {
        super::migrations::apply_pending(conn, MIGRATIONS)
    })
}

pub(super) fn revert_last_migration(
    conn: &mut PgConn,
    lock_wait: Duration,
) -> StoreResult<Option<String>> {
    with_migration_lock(conn, lock_wait, |conn| {
        super::migrations::revert_newest(conn, MIGRATIONS)
    })
}

/// [`revert_last_migration`] after `check`, both under the migration lock. When `check` refuses,
/// nothing is reverted and its error comes back as the inner result.
pub(super) fn revert_last_migration_checked<E>(
    conn: &mut PgConn,
    lock_wait: Duration,
    check: impl FnOnce(&mut PgConn) -> Result<(), E>,
) -> StoreResult<Result<Option<String>, E>> {
    with_migration_lock(conn, lock_wait, |conn| match check(conn) {
        Ok(()) => super::migrations::revert_newest(conn, MIGRATIONS).map(Ok),
        Err(refused) => Ok(Err(refused)),
    })
}

/// The number of rows in `table`, or `None` when the current schema has no such table. `table` must
/// be a plain identifier: it is spliced into the count query.
pub(super) fn table_rows(conn: &mut PgConn, table: &str) -> StoreResult<Option<u64>> {
    use super::migration_plan::{check_identifier, RowCount};
    check_identifier(table)?;
    let found: RowCount = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind::<Text, _>(table)
    .get_result(conn)?;
    if found.n == 0 {
        return Ok(None);
    }
    let rows: RowCount =
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM \"{table}\"")).get_result(conn)?;
    Ok(Some(rows.n.unsigned_abs()))
}

/// `EXPLAIN` of `query`, one line per line of the plan's text.
pub(crate) fn explain<Q>(conn: &mut PgConn, query: Q) -> QueryResult<Vec<String>>
where
    Q: diesel::query_builder::QueryFragment<diesel::pg::Pg> + diesel::query_builder::QueryId,
{
    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let rows: Vec<PlanRow> = super::Explain::new("EXPLAIN ", query).load(conn)?;
    Ok(rows.into_iter().map(|row| row.line).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_never_quotes_the_password() {
        let url = "postgres://app:S3cret/x@db/x";
        let err = diesel::ConnectionError::BadConnection(
            "invalid integer value \"S3cret\" for connection option \"port\"".into(),
        );
        let said = without_password(err, url).to_string();
        assert!(!said.contains("S3cret"), "{said}");
        assert!(said.contains("\"***\""), "{said}");
        let err = diesel::ConnectionError::BadConnection("FATAL:  no such database\n".into());
        assert_eq!(
            without_password(err, "postgres://u@h/db").to_string(),
            "FATAL:  no such database"
        );
    }

    #[test]
    fn gss_encryption_is_off_unless_the_url_asks_for_it() {
        assert_eq!(
            without_gss_unless_asked("postgres://u@h/db"),
            "postgres://u@h/db?gssencmode=disable"
        );
        assert_eq!(
            without_gss_unless_asked("postgres://u@h1,h2/db?target_session_attrs=read-write"),
            "postgres://u@h1,h2/db?target_session_attrs=read-write&gssencmode=disable"
        );
        assert_eq!(
            without_gss_unless_asked("postgres://u@h/db?gssencmode=require"),
            "postgres://u@h/db?gssencmode=require"
        );
    }
}
