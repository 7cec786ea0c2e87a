//! Everything MySQL/MariaDB-specific.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use super::mysql_connection::MysqlConn;
use super::ViolatedKey;
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

pub(super) fn connect(url: &str) -> StoreResult<MysqlConn> {
    let mut conn = MysqlConnection::establish(url)?;
    conn.batch_execute(SESSION_SETUP)?;
    Ok(MysqlConn::new(conn))
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
