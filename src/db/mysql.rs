//! Everything MySQL/MariaDB-specific.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use super::mysql_connection::MysqlConn;
use super::watchdog::Watch;
use super::{ConnectOptions, ViolatedKey};
use crate::error::{StoreError, StoreResult};

/// The MySQL/MariaDB migration tree (`migrations/mysql`, the one `diesel.toml` points at).
pub(super) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// Strict mode makes over-long or malformed values an error instead of a silent truncation; the rest
/// are the modes MySQL 8 enables by default, spelled out so MariaDB behaves the same. The message
/// language is pinned to English because the store reads the server's duplicate-key message to tell
/// which unique key was violated (Diesel reports no key name): a server started with another
/// `lc_messages` would otherwise turn `ApplyOperationExists` into a plain database error.
///
/// The session is READ COMMITTED, set once here rather than before each transaction: every
/// transaction of the store locks what it decides on first (the apply's row, the claimed row), and
/// at READ COMMITTED each later statement reads what was committed before that lock was granted (a
/// REPEATABLE READ snapshot can be taken before the wait and miss the commit it waited for); a
/// locking read keeps only the rows it returns, and no gap locks are taken. Callers' own
/// transactions on these connections run at READ COMMITTED too.
const SESSION_SETUP: &str = "SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,STRICT_ALL_TABLES,\
NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00', \
lc_messages = 'en_US'; SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

define_sql_function! {
    /// MySQL's id of the last AUTO_INCREMENT value this connection generated.
    #[sql_name = "LAST_INSERT_ID"]
    fn last_insert_id_sql() -> Unsigned<BigInt>;
}
define_sql_function! {
    /// The current database (NULL when none is selected).
    fn database() -> Nullable<Text>;
}
define_sql_function! {
    /// Hex SHA-1 of a string.
    fn sha1(value: Nullable<Text>) -> Nullable<Text>;
}
define_sql_function! {
    /// String concatenation.
    fn concat(a: Text, b: Nullable<Text>) -> Nullable<Text>;
}
define_sql_function! {
    /// Takes a named server-wide lock: 1 when taken, 0 on timeout, NULL on error.
    fn get_lock(name: Nullable<Text>, timeout_secs: Integer) -> Nullable<BigInt>;
}
define_sql_function! {
    /// Releases a lock taken by `get_lock`.
    fn release_lock(name: Nullable<Text>) -> Nullable<BigInt>;
}

/// What a connection to a node of a Galera cluster (`wsrep_on`) sets once: causal reads. Every
/// `SELECT`, `SHOW` and `BEGIN` first waits until this node has applied what any node committed
/// before it was sent, so a claim's gates (a stop, a failure, an earlier sibling) and its
/// concurrency cap read what another node's workers and operators wrote. Only reads wait: a write
/// that raced a write on another node fails certification instead.
///
/// And a 20 s `wait_timeout`: MariaDB 10.11 with galera-4 was seen to consume a prepared statement of
/// a transaction that conflicted with a replicated write without ever answering it (the session
/// idle, the client waiting). The server then closes the session after 20 s idle, so the client
/// gets a lost connection instead of waiting for ever. The pool pings a connection idle for longer
/// than `ping_after_idle` (5 s by default) at checkout, so one the server closed is replaced.
const CLUSTER_SESSION_SETUP: &str = "SET SESSION wsrep_sync_wait = 1, wait_timeout = 20";

/// Opens a connection with applyops' session settings, within `options.connect_timeout`, and
/// watches its socket for `options.read_timeout` (see `db::watchdog`).
///
/// With a connect timeout, the whole opening (TCP connect, handshake, session setup, finding the
/// socket) runs on a thread of its own (see [`within`](super::connection::within)): libmariadb's
/// default waits for ever on a server that accepts connections but does not answer.
pub(super) fn connect(url: &str, options: &ConnectOptions) -> StoreResult<MysqlConn> {
    let (url, read_timeout) = (url.to_owned(), options.read_timeout);
    super::connection::within(options.connect_timeout, move || open(&url, read_timeout))
}

/// [`connect`]'s work: the connection, its session settings and its read timeout's watch.
fn open(url: &str, read_timeout: Option<Duration>) -> StoreResult<MysqlConn> {
    let mut conn = MysqlConnection::establish(url)?;
    conn.batch_execute(SESSION_SETUP)?;
    let cluster_node = is_galera_node(&mut conn)?;
    if cluster_node {
        conn.batch_execute(CLUSTER_SESSION_SETUP)?;
    }
    let watch = match read_timeout {
        Some(timeout) => find_socket(&mut conn, url)?.map(|fd| Watch::new(fd, timeout)),
        None => None,
    };
    let mut conn = MysqlConn::new(conn);
    if let Some(watch) = watch {
        conn = conn.watched(watch);
    }
    Ok(if cluster_node {
        conn.on_cluster_node()
    } else {
        conn
    })
}

/// This connection's TCP socket: the one whose peer is the URL's server and whose local port is the
/// port the server reports for this session. `None` over a Unix socket (or when it cannot be told).
fn find_socket(conn: &mut MysqlConnection, url: &str) -> StoreResult<Option<std::os::fd::RawFd>> {
    #[derive(QueryableByName)]
    struct Client {
        #[diesel(sql_type = Nullable<Text>)]
        host: Option<String>,
    }
    let Some(servers) = server_addresses(url) else {
        return Ok(None);
    };
    let client: Client = diesel::sql_query(
        "SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()",
    )
    .get_result(conn)?;
    let port = client
        .host
        .as_deref()
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    Ok(port.and_then(|port| super::watchdog::find_socket(&servers, port)))
}

/// The addresses the URL's host and port resolve to, or `None` when the URL names a Unix socket or
/// `localhost` (which libmariadb reaches through the default Unix socket).
fn server_addresses(url: &str) -> Option<Vec<std::net::SocketAddr>> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    if rest.contains("unix_socket=") {
        return None;
    }
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() || host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let port: u16 = port.map_or(Some(3306), |port| port.parse().ok())?;
    let host = percent_decoded(host);
    Some((host.as_str(), port).to_socket_addrs().ok()?.collect())
}

/// `text` with its `%XX` escapes decoded (a host in a URL may be percent-encoded).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the server is a node of a Galera cluster (`wsrep_on` is `ON`). A server without the
/// variable (MySQL) is not.
fn is_galera_node(conn: &mut MysqlConnection) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Variable {
        #[diesel(sql_type = Text, column_name = "Value")]
        value: String,
    }
    let found: Vec<Variable> = diesel::sql_query("SHOW VARIABLES LIKE 'wsrep_on'").load(conn)?;
    Ok(found
        .iter()
        .any(|variable| variable.value.eq_ignore_ascii_case("ON")))
}

/// `EXPLAIN` of `query`, one line per plan row with the columns that show index use.
pub(crate) fn explain<Q>(conn: &mut MysqlConnection, query: Q) -> QueryResult<Vec<String>>
where
    Q: diesel::query_builder::QueryFragment<diesel::mysql::Mysql> + diesel::query_builder::QueryId,
{
    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text)]
        select_type: String,
        #[diesel(sql_type = Nullable<Text>)]
        table: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        r#type: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        key: Option<String>,
        #[diesel(sql_type = Nullable<Text>, column_name = "Extra")]
        extra: Option<String>,
    }
    let rows: Vec<PlanRow> = super::Explain::new("EXPLAIN ", query).load(conn)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            format!(
                "select_type={} table={} type={} key={} extra={}",
                row.select_type,
                row.table.unwrap_or_default(),
                row.r#type.unwrap_or_default(),
                row.key.unwrap_or_default(),
                row.extra.unwrap_or_default()
            )
        })
        .collect())
}

pub(super) fn last_insert_id(conn: &mut MysqlConnection) -> QueryResult<i64> {
    let id: u64 = diesel::select(last_insert_id_sql()).get_result(conn)?;
    i64::try_from(id).map_err(|err| diesel::result::Error::DeserializationError(Box::new(err)))
}

/// Reads the key out of `Duplicate entry '…' for key 'name'` (MariaDB, MySQL before 8.0.19) or
/// `… for key 'table.name'` (MySQL 8.0.19+). The entry echoes user data, which may itself contain
/// `for key '`, so the key is taken from the *last* occurrence, which the server always appends.
pub(super) fn violated_key(message: &str) -> Option<ViolatedKey> {
    const MARKER: &str = " for key '";
    let start = message.rfind(MARKER)? + MARKER.len();
    let key = message[start..].strip_suffix('\'')?;
    let (table, name) = match key.split_once('.') {
        Some((table, name)) => (Some(table.to_owned()), name.to_owned()),
        None => (None, key.to_owned()),
    };
    (!name.is_empty()).then_some(ViolatedKey::Named { table, name })
}

/// The migration lock is scoped to the current database, so runners for different databases on one
/// server do not wait for each other. The name is hashed on the server: lock names are capped at 64
/// characters, database names are not much shorter.
fn migration_lock_name() -> concat<&'static str, sha1<database>> {
    concat("applyops_migrations.", sha1(database()))
}

fn with_migration_lock<T>(
    conn: &mut MysqlConnection,
    wait: Duration,
    run: impl FnOnce(&mut MysqlConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    let wait_secs = i32::try_from(wait.as_secs()).unwrap_or(i32::MAX);
    // The lock is named after the current database; with none selected there is nothing to migrate
    // into (and GET_LOCK would be given NULL).
    if diesel::select(database())
        .get_result::<Option<String>>(conn)?
        .is_none()
    {
        return Err(StoreError::invalid(
            "database_url",
            "names no database; migrations need one (mysql://user:password@host:port/DATABASE)",
        ));
    }
    if is_galera_node(conn)? {
        return with_cluster_migration_lock(conn, wait, run);
    }
    let acquired: Option<i64> =
        diesel::select(get_lock(migration_lock_name(), wait_secs)).get_result(conn)?;
    match acquired {
        Some(1) => {}
        Some(_) => {
            return Err(StoreError::MigrationLockTimeout {
                waited_secs: wait_secs.unsigned_abs().into(),
            })
        }
        // GET_LOCK answers NULL on an error (out of memory, the thread killed while waiting), not on
        // a timeout: say so instead of claiming another runner held the lock.
        None => return Err(StoreError::MigrationLockFailed),
    }
    let result = run(conn);
    // Released explicitly so a pooled connection does not keep it; it would also go with the session.
    let released =
        diesel::select(release_lock(migration_lock_name())).get_result::<Option<i64>>(conn);
    match (result, released) {
        (Ok(value), Ok(_)) => Ok(value),
        (Err(err), _) => Err(err),
        (Ok(_), Err(err)) => Err(err.into()),
    }
}

/// How long the cluster migration lock stays taken without its holder releasing it (a runner that
/// died mid-migration): after that, another runner may take it.
const CLUSTER_LOCK_TTL_SECS: i64 = 600;

/// The cluster's migration lock: `GET_LOCK` is local to one node of a Galera cluster, so runners on
/// two nodes would both migrate. This lock is a row, `__applyops_migration_lock`, taken by an
/// UPDATE in its own (autocommit) transaction, which Galera certifies cluster-wide: of two nodes
/// taking it at once, one fails certification (a deadlock error) and waits like a runner that
/// found it taken. Released by the holder; a holder that died loses it after
/// [`CLUSTER_LOCK_TTL_SECS`]. Waits up to `wait`, then [`StoreError::MigrationLockTimeout`].
fn with_cluster_migration_lock<T>(
    conn: &mut MysqlConnection,
    wait: Duration,
    run: impl FnOnce(&mut MysqlConnection) -> StoreResult<T>,
) -> StoreResult<T> {
    use diesel::sql_types::BigInt;
    // Both statements are idempotent; a certification conflict between two nodes running them at
    // once is retried.
    let prepare = |conn: &mut MysqlConnection| -> QueryResult<()> {
        conn.batch_execute(
            "CREATE TABLE IF NOT EXISTS __applyops_migration_lock (\
             id TINYINT NOT NULL PRIMARY KEY, holder VARCHAR(64) NOT NULL, \
             expires_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
        )?;
        diesel::sql_query(
            "INSERT IGNORE INTO __applyops_migration_lock (id, holder, expires_at) \
             VALUES (1, '', '1970-01-01 00:00:00')",
        )
        .execute(conn)
        .map(drop)
    };
    let token = {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|err| StoreError::Random(err.to_string()))?;
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    let deadline = std::time::Instant::now() + wait;
    let lost_race = super::transaction::is_lost_race;
    loop {
        match prepare(conn) {
            Ok(()) => break,
            Err(err) if lost_race(&err) && std::time::Instant::now() < deadline => {}
            Err(err) => return Err(err.into()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    loop {
        let taken = diesel::sql_query(
            "UPDATE __applyops_migration_lock SET holder = ?, \
             expires_at = UTC_TIMESTAMP(6) + INTERVAL ? SECOND \
             WHERE id = 1 AND (holder = '' OR expires_at < UTC_TIMESTAMP(6))",
        )
        .bind::<Text, _>(&token)
        .bind::<BigInt, _>(CLUSTER_LOCK_TTL_SECS)
        .execute(conn);
        match taken {
            Ok(1) => break,
            Ok(_) => {}
            Err(err) if lost_race(&err) => {}
            Err(err) => return Err(err.into()),
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::MigrationLockTimeout {
                waited_secs: wait.as_secs(),
            });
        }
        let mut jitter = [0u8; 1];
        let _ = getrandom::fill(&mut jitter);
        std::thread::sleep(Duration::from_millis(100 + u64::from(jitter[0])));
    }
    let result = run(conn);
    let mut released = Ok(0);
    for _ in 0..10 {
        released = diesel::sql_query(
            "UPDATE __applyops_migration_lock SET holder = '', \
             expires_at = '1970-01-01 00:00:00' WHERE id = 1 AND holder = ?",
        )
        .bind::<Text, _>(&token)
        .execute(conn);
        match &released {
            Err(err) if lost_race(err) => std::thread::sleep(Duration::from_millis(50)),
            _ => break,
        }
    }
    match (result, released) {
        (Ok(value), Ok(_)) => Ok(value),
        (Err(err), _) => Err(err),
        (Ok(_), Err(err)) => Err(err.into()),
    }
}

pub(super) fn run_migrations(
    conn: &mut MysqlConnection,
    lock_wait: Duration,
) -> StoreResult<Vec<String>> {
    with_migration_lock(conn, lock_wait, |conn| {
        super::migrations::apply_pending(conn, MIGRATIONS)
    })
}

pub(super) fn revert_last_migration(
    conn: &mut MysqlConnection,
    lock_wait: Duration,
) -> StoreResult<Option<String>> {
    with_migration_lock(conn, lock_wait, |conn| {
        super::migrations::revert_newest(conn, MIGRATIONS)
    })
}

/// The number of rows in `table`, or `None` when the current database has no such table. `table` must
/// be a plain identifier: it is spliced into the count query.
pub(super) fn table_rows(conn: &mut MysqlConnection, table: &str) -> StoreResult<Option<u64>> {
    use super::migration_plan::{check_identifier, RowCount};
    check_identifier(table)?;
    let found: RowCount = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind::<Text, _>(table)
    .get_result(conn)?;
    if found.n == 0 {
        return Ok(None);
    }
    let rows: RowCount =
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM `{table}`")).get_result(conn)?;
    Ok(Some(rows.n.unsigned_abs()))
}

/// [`revert_last_migration`] after `check`, both under the migration lock. When `check` refuses, nothing
/// is reverted and its error comes back as the inner result.
pub(super) fn revert_last_migration_checked<E>(
    conn: &mut MysqlConnection,
    lock_wait: Duration,
    check: impl FnOnce(&mut MysqlConnection) -> Result<(), E>,
) -> StoreResult<Result<Option<String>, E>> {
    with_migration_lock(conn, lock_wait, |conn| match check(conn) {
        Ok(()) => super::migrations::revert_newest(conn, MIGRATIONS).map(Ok),
        Err(refused) => Ok(Err(refused)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(table: Option<&str>, name: &str) -> Option<ViolatedKey> {
        Some(ViolatedKey::Named {
            table: table.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    #[test]
    fn reads_the_mariadb_form() {
        let message = "Duplicate entry '7-east' for key 'apply_operations_apply_id_deployment_key'";
        assert_eq!(
            violated_key(message),
            named(None, "apply_operations_apply_id_deployment_key")
        );
    }

    #[test]
    fn reads_the_mysql_8_0_19_form_with_table() {
        let message = "Duplicate entry '7-east' for key 'apply_operations.apply_operations_apply_id_deployment_key'";
        assert_eq!(
            violated_key(message),
            named(
                Some("apply_operations"),
                "apply_operations_apply_id_deployment_key"
            )
        );
    }

    #[test]
    fn user_data_imitating_the_key_clause_is_ignored() {
        let message = "Duplicate entry 'x' for key 'apply_operations_apply_id_deployment_key'' for key 'applies_apply_identifier_key'";
        assert_eq!(
            violated_key(message),
            named(None, "applies_apply_identifier_key")
        );
    }

    #[test]
    fn other_messages_name_no_key() {
        assert_eq!(
            violated_key("Lost connection to MySQL server during query"),
            None
        );
        assert_eq!(violated_key("Duplicate entry 'x' for key ''"), None);
        assert_eq!(
            violated_key("Duplicate entry 'x' for key 'unterminated"),
            None
        );
    }
}
