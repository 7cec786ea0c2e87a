//! Everything SQLite-specific.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};

use super::{ConnectOptions, ViolatedKey};
use crate::error::{StoreError, StoreResult};

/// The SQLite migration tree (`migrations/sqlite`).
pub(super) const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

define_sql_function! {
    /// SQLite's rowid of the last row this connection inserted.
    fn last_insert_rowid() -> BigInt;
}

pub(super) fn connect(path: &str, options: &ConnectOptions) -> StoreResult<SqliteConnection> {
    let opened = (|| -> StoreResult<SqliteConnection> {
        let mut conn = SqliteConnection::establish(path)?;
        // PRAGMA values cannot be bound; this is an integer we computed, not caller text.
        // At most i32::MAX: ConnectOptions::check ran first.
        let busy_ms = options.sqlite_busy_timeout.as_millis();
        conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms};"))?;
        // WAL lets readers run while one connection writes. An in-memory database ignores it.
        switch_to_wal(&mut conn, options.sqlite_busy_timeout)?;
        Ok(conn)
    })();
    // Opening writes too (the WAL and its index): on a full disk that is a "disk I/O error".
    opened.map_err(|err| {
        let file = std::path::Path::new(path.strip_prefix("file:").unwrap_or(path));
        let said = err.to_string();
        let io = said.contains("disk I/O error") || said.contains("database or disk is full");
        if io && filesystem_is_full(file) {
            StoreError::DiskFull(Box::new(err))
        } else {
            err
        }
    })
}

/// Sets WAL journaling, retrying within the busy timeout. While a new database is still in rollback
/// mode, connections opened at the same moment all try to switch it, and SQLite answers "database is
/// locked" at once, without the busy handler, to the one that would otherwise deadlock; the retry
/// then finds the database already in WAL mode, where the switch is a no-op.
fn switch_to_wal(conn: &mut SqliteConnection, busy_timeout: Duration) -> QueryResult<()> {
    // checked_add: a deadline past what the clock can represent means "no deadline".
    let deadline = Instant::now().checked_add(busy_timeout);
    loop {
        match conn.batch_execute("PRAGMA journal_mode = WAL;") {
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("database is locked")
                    && deadline.is_none_or(|deadline| Instant::now() < deadline) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

pub(super) fn last_insert_id(conn: &mut SqliteConnection) -> QueryResult<i64> {
    diesel::select(last_insert_rowid()).get_result(conn)
}

/// True when `err` says the disk holding the database is full: SQLite's `SQLITE_FULL` ("database or
/// disk is full", what a write that cannot get space reports), or an I/O error met while the
/// database's filesystem has no room left (growing the WAL index on a full disk is reported as a
/// "disk I/O error").
pub(super) fn is_disk_full(conn: &mut SqliteConnection, err: &diesel::result::Error) -> bool {
    let diesel::result::Error::DatabaseError(_, info) = err else {
        return false;
    };
    match info.message() {
        "database or disk is full" => true,
        "disk I/O error" => database_file(conn).is_some_and(|file| filesystem_is_full(&file)),
        _ => false,
    }
}

/// The main database's file, or `None` for an in-memory one.
fn database_file(conn: &mut SqliteConnection) -> Option<std::path::PathBuf> {
    #[derive(QueryableByName)]
    struct Database {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        file: String,
    }
    let databases: Vec<Database> = diesel::sql_query("PRAGMA database_list").load(conn).ok()?;
    databases
        .into_iter()
        .find(|db| db.name == "main" && !db.file.is_empty())
        .map(|db| db.file.into())
}

/// True when the filesystem holding `file` has less room left than SQLite needs for a page of its
/// write-ahead log (64 KiB, comfortably above the largest page size in use here).
fn filesystem_is_full(file: &std::path::Path) -> bool {
    const ROOM_FOR_A_WRITE: u64 = 64 * 1024;
    let dir = file.parent().unwrap_or(file);
    rustix::fs::statvfs(dir)
        .is_ok_and(|fs| fs.f_bavail.saturating_mul(fs.f_frsize) < ROOM_FOR_A_WRITE)
}

/// Reads `UNIQUE constraint failed: t.a, t.b` into its `(table, column)` pairs. SQLite names columns,
/// not the index, and echoes no user data in this message.
pub(super) fn violated_key(message: &str) -> Option<ViolatedKey> {
    let list = message.strip_prefix("UNIQUE constraint failed: ")?;
    let columns = list
        .split(", ")
        .map(|qualified| {
            let (table, column) = qualified.split_once('.')?;
            Some((table.to_owned(), column.to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ViolatedKey::Columns { columns })
}

/// One immediate transaction around the whole run serialises concurrent runners: the second waits
/// (busy timeout), then finds nothing pending. Diesel runs each migration in a savepoint of it.
pub(super) fn run_migrations(conn: &mut SqliteConnection) -> StoreResult<Vec<String>> {
    conn.immediate_transaction(|conn| super::migrations::apply_pending(conn, MIGRATIONS))
}

pub(super) fn revert_last_migration(conn: &mut SqliteConnection) -> StoreResult<Option<String>> {
    conn.immediate_transaction(|conn| super::migrations::revert_newest(conn, MIGRATIONS))
}

/// `EXPLAIN QUERY PLAN` of `query`, one line per plan step (its `detail` column).
pub(crate) fn explain<Q>(conn: &mut SqliteConnection, query: Q) -> QueryResult<Vec<String>>
where
    Q: diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite>
        + diesel::query_builder::QueryId,
{
    #[derive(QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = diesel::sql_types::Text)]
        detail: String,
    }
    let rows: Vec<PlanRow> = super::Explain::new("EXPLAIN QUERY PLAN ", query).load(conn)?;
    Ok(rows.into_iter().map(|row| row.detail).collect())
}

/// The number of rows in `table`, or `None` when the database has no such table. `table` must be a
/// plain identifier: it is spliced into the count query.
pub(super) fn table_rows(conn: &mut SqliteConnection, table: &str) -> StoreResult<Option<u64>> {
    use super::migration_plan::{check_identifier, RowCount};
    check_identifier(table)?;
    let found: RowCount = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result(conn)?;
    if found.n == 0 {
        return Ok(None);
    }
    let rows: RowCount =
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM \"{table}\"")).get_result(conn)?;
    Ok(Some(rows.n.unsigned_abs()))
}

/// [`revert_last_migration`] after `check`, both in one immediate transaction. When `check` refuses,
/// nothing is reverted and its error comes back as the inner result.
pub(super) fn revert_last_migration_checked<E>(
    conn: &mut SqliteConnection,
    check: impl FnOnce(&mut SqliteConnection) -> Result<(), E>,
) -> StoreResult<Result<Option<String>, E>> {
    conn.immediate_transaction(|conn| match check(conn) {
        Ok(()) => super::migrations::revert_newest(conn, MIGRATIONS).map(Ok),
        Err(refused) => Ok(Err(refused)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_columns_of_a_composite_key() {
        let message =
            "UNIQUE constraint failed: apply_operations.apply_id, apply_operations.deployment";
        assert_eq!(
            violated_key(message),
            Some(ViolatedKey::Columns {
                columns: vec![
                    ("apply_operations".into(), "apply_id".into()),
                    ("apply_operations".into(), "deployment".into()),
                ]
            })
        );
    }

    #[test]
    fn reads_a_single_column_key() {
        let message = "UNIQUE constraint failed: applies.apply_identifier";
        assert_eq!(
            violated_key(message),
            Some(ViolatedKey::Columns {
                columns: vec![("applies".into(), "apply_identifier".into())]
            })
        );
    }

    #[test]
    fn other_messages_name_no_key() {
        assert_eq!(violated_key("database is locked"), None);
        assert_eq!(violated_key("UNIQUE constraint failed: nodot"), None);
    }
}
