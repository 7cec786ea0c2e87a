//! What a database's migrations still need, and what reverting the newest one would drop.
//!
//! Reverting a migration runs its `down.sql`, which may drop tables or columns that hold data. Diesel's
//! embedded migrations do not expose their SQL, so `build.rs` embeds every `down.sql` by version, and
//! [`parse_drops`] reads which tables and columns it drops. The reading is deliberately conservative:
//! it finds `DROP TABLE` and `ALTER TABLE … DROP [COLUMN]` anywhere, string literals included (so DDL
//! run through `PREPARE … FROM '…'` counts), and a table that is dropped after its rows were copied
//! elsewhere still counts as dropped.

use std::collections::BTreeSet;
use std::fmt;

use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

#[cfg(feature = "mysql")]
use super::mysql;
#[cfg(feature = "postgres")]
use super::postgres;
#[cfg(feature = "sqlite")]
use super::sqlite;
use super::DbConnection;
#[cfg(any(feature = "mysql", feature = "postgres"))]
use super::MigrationOptions;
use crate::error::{StoreError, StoreResult};

// MYSQL_DOWN_SQL, POSTGRES_DOWN_SQL and SQLITE_DOWN_SQL: `(version, down.sql)` of each tree, written by build.rs, each
// only with its backend's feature.
include!(concat!(env!("OUT_DIR"), "/down_sql.rs"));

diesel::table! {
    /// Diesel's migration bookkeeping, read here without Diesel's harness, which would create the
    /// table on a database that was never migrated.
    __diesel_schema_migrations (version) {
        version -> Varchar,
        run_on -> Timestamp,
    }
}

/// What reverting the newest applied migration would remove, according to its `down.sql`.
///
/// Returned by [`preview_revert`] and shown to the check of [`revert_last_migration_checked`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertPreview {
    /// The version of the migration that would be reverted, e.g. `20261125000003`.
    pub version: String,
    /// What its `down.sql` drops, one entry per table, in the order the script first names them.
    /// Tables that do not exist are left out. Empty when it drops nothing, or when this build of
    /// applyops does not know the migration (reverting it then fails without changing anything).
    pub drops: Vec<DroppedData>,
}

impl RevertPreview {
    /// The drops that would lose rows: whole tables, or columns of tables, holding at least one row.
    pub fn data_loss(&self) -> impl Iterator<Item = &DroppedData> {
        self.drops.iter().filter(|drop| drop.rows > 0)
    }
}

/// What a revert would drop from one table, and how many rows the table holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedData {
    /// The table.
    pub table: String,
    /// The whole table or some of its columns.
    pub dropped: Dropped,
    /// The number of rows in the table when the preview was taken.
    pub rows: u64,
}

/// Whether a `down.sql` drops a whole table or columns of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// `DROP TABLE`.
    Table,
    /// `ALTER TABLE … DROP COLUMN`, with the columns in script order.
    Columns(Vec<String>),
}

/// `table apply_control_requests (3 rows)`, `columns lease_owner, attempt of apply_operations (0 rows)`.
impl fmt::Display for DroppedData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = match self.rows {
            1 => "1 row".to_owned(),
            n => format!("{n} rows"),
        };
        match &self.dropped {
            Dropped::Table => write!(f, "table {} ({rows})", self.table),
            Dropped::Columns(columns) => {
                let noun = if columns.len() == 1 {
                    "column"
                } else {
                    "columns"
                };
                write!(
                    f,
                    "{noun} {} of {} ({rows})",
                    columns.join(", "),
                    self.table
                )
            }
        }
    }
}

/// The versions of this build's migrations for the connection's backend that the database has not
/// applied, oldest first: all of them on a database that was never migrated, none on an up-to-date
/// one. Only reads: Diesel's bookkeeping table is not created when it is missing.
///
/// ```no_run
/// let mut conn = applyops::db::establish("sqlite://applyops.db")?;
/// if !applyops::db::pending_migrations(&mut conn)?.is_empty() {
///     applyops::db::run_migrations(&mut conn)?;
/// }
/// # Ok::<(), applyops::StoreError>(())
/// ```
pub fn pending_migrations(conn: &mut DbConnection) -> StoreResult<Vec<String>> {
    let (embedded, bookkeeping) = match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => (
            embedded_versions::<diesel::mysql::Mysql>(&mysql::MIGRATIONS)?,
            mysql::table_rows(inner, BOOKKEEPING_TABLE)?,
        ),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => (
            embedded_versions::<diesel::pg::Pg>(&postgres::MIGRATIONS)?,
            postgres::table_rows(inner, BOOKKEEPING_TABLE)?,
        ),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => (
            embedded_versions::<diesel::sqlite::Sqlite>(&sqlite::MIGRATIONS)?,
            sqlite::table_rows(inner, BOOKKEEPING_TABLE)?,
        ),
    };
    let applied: BTreeSet<String> = match bookkeeping {
        Some(_) => __diesel_schema_migrations::table
            .select(__diesel_schema_migrations::version)
            .load(conn)?
            .into_iter()
            .collect(),
        None => BTreeSet::new(),
    };
    let mut pending: Vec<String> = embedded
        .into_iter()
        .filter(|version| !applied.contains(version))
        .collect();
    pending.sort();
    Ok(pending)
}

/// `Ok` when every migration of this build has been applied; otherwise
/// [`StoreError::MigrationsPending`], which lists them and says how to run them. For tools that must
/// not run against a database that was never migrated, or only partly.
pub fn ensure_migrated(conn: &mut DbConnection) -> StoreResult<()> {
    let pending = pending_migrations(conn)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(StoreError::MigrationsPending { pending })
    }
}

/// What [`revert_last_migration`](super::revert_last_migration) would drop now, or `None` when no
/// migration is applied. Only reads; the answer can be stale by the time a revert runs, so a revert
/// that must not lose data uses [`revert_last_migration_checked`], which takes the preview under the
/// migration lock.
pub fn preview_revert(conn: &mut DbConnection) -> StoreResult<Option<RevertPreview>> {
    let newest = match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => mysql::table_rows(inner, BOOKKEEPING_TABLE)?,
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => postgres::table_rows(inner, BOOKKEEPING_TABLE)?,
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => sqlite::table_rows(inner, BOOKKEEPING_TABLE)?,
    }
    .map(|_| {
        __diesel_schema_migrations::table
            .select(diesel::dsl::max(__diesel_schema_migrations::version))
            .first::<Option<String>>(conn)
    })
    .transpose()?
    .flatten();
    match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => preview(newest, MYSQL_DOWN_SQL, |table| {
            mysql::table_rows(inner, table)
        }),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => preview(newest, POSTGRES_DOWN_SQL, |table| {
            postgres::table_rows(inner, table)
        }),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => preview(newest, SQLITE_DOWN_SQL, |table| {
            sqlite::table_rows(inner, table)
        }),
    }
}

/// Reverts the newest applied migration like [`revert_last_migration`](super::revert_last_migration),
/// after showing `check` what it would drop; when `check` returns an error, nothing is reverted and
/// that error is returned. Returns the reverted version, or `None` when no migration is applied (then
/// `check` is not called).
///
/// The preview, the check and the revert run under the migration lock (MySQL, PostgreSQL) or in one immediate
/// transaction (SQLite), so no other runner can apply or revert a migration in between, and on SQLite
/// no row can be written in between either. On MySQL, rows written by other sessions between the
/// preview and the `DROP` are not seen.
///
/// ```no_run
/// # use applyops::StoreError;
/// let mut conn = applyops::db::establish("sqlite://applyops.db")?;
/// let reverted = applyops::db::revert_last_migration_checked(&mut conn, |preview| {
///     match preview.data_loss().next() {
///         Some(drop) => Err(StoreError::InvalidInput {
///             field: "revert",
///             reason: format!("{} would drop {drop}", preview.version),
///         }),
///         None => Ok(()),
///     }
/// })?;
/// # Ok::<(), applyops::StoreError>(())
/// ```
pub fn revert_last_migration_checked<E, F>(
    conn: &mut DbConnection,
    check: F,
) -> Result<Option<String>, E>
where
    E: From<StoreError>,
    F: FnOnce(&RevertPreview) -> Result<(), E>,
{
    let outcome = match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(inner) => {
            let lock_wait = MigrationOptions::default().lock_wait;
            mysql::revert_last_migration_checked(inner, lock_wait, |inner| {
                let newest = newest_applied(inner)?;
                match preview(newest, MYSQL_DOWN_SQL, |table| {
                    mysql::table_rows(inner, table)
                })? {
                    Some(preview) => check(&preview),
                    None => Ok(()),
                }
            })
        }
        #[cfg(feature = "postgres")]
        DbConnection::Pg(inner) => {
            let lock_wait = MigrationOptions::default().lock_wait;
            postgres::revert_last_migration_checked(inner, lock_wait, |inner| {
                let newest = newest_applied(inner)?;
                match preview(newest, POSTGRES_DOWN_SQL, |table| {
                    postgres::table_rows(inner, table)
                })? {
                    Some(preview) => check(&preview),
                    None => Ok(()),
                }
            })
        }
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(inner) => sqlite::revert_last_migration_checked(inner, |inner| {
            let newest = newest_applied(inner)?;
            match preview(newest, SQLITE_DOWN_SQL, |table| {
                sqlite::table_rows(inner, table)
            })? {
                Some(preview) => check(&preview),
                None => Ok(()),
            }
        }),
    };
    outcome?
}

/// The table Diesel records applied migrations in.
const BOOKKEEPING_TABLE: &str = "__diesel_schema_migrations";

/// The versions of the migrations in `source`.
fn embedded_versions<DB: diesel::backend::Backend>(
    source: &EmbeddedMigrations,
) -> StoreResult<Vec<String>> {
    let migrations = MigrationSource::<DB>::migrations(source).map_err(StoreError::Migration)?;
    Ok(migrations
        .iter()
        .map(|migration| migration.name().version().to_string())
        .collect())
}

/// The newest applied version, through Diesel's harness (which creates its bookkeeping table if it is
/// missing, as the revert that follows would anyway).
fn newest_applied<DB: diesel::backend::Backend>(
    conn: &mut impl MigrationHarness<DB>,
) -> StoreResult<Option<String>> {
    let applied = conn.applied_migrations().map_err(StoreError::Migration)?;
    Ok(applied.first().map(ToString::to_string))
}

/// The preview of reverting `newest`, with `down_sql` the backend's embedded scripts and `table_rows`
/// its row counter (`None` for a missing table).
fn preview(
    newest: Option<String>,
    down_sql: &[(&str, &str)],
    mut table_rows: impl FnMut(&str) -> StoreResult<Option<u64>>,
) -> StoreResult<Option<RevertPreview>> {
    let Some(version) = newest else {
        return Ok(None);
    };
    let script = down_sql
        .iter()
        .find(|(known, _)| *known == version)
        .map_or("", |(_, sql)| *sql);
    let mut drops = Vec::new();
    for (table, dropped) in parse_drops(script) {
        if let Some(rows) = table_rows(&table)? {
            drops.push(DroppedData {
                table,
                dropped,
                rows,
            });
        }
    }
    Ok(Some(RevertPreview { version, drops }))
}

/// Rejects a table name that is not a plain identifier (ASCII letters, digits, `_`, `$`), before it is
/// spliced into a row-count query. [`parse_drops`] only produces such names.
pub(super) fn check_identifier(table: &str) -> StoreResult<()> {
    let plain = !table.is_empty()
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if plain {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "table",
            format!("{table:?} is not a plain identifier"),
        ))
    }
}

/// A row count read by `table_rows` in the backend files.
#[derive(QueryableByName)]
pub(super) struct RowCount {
    /// `COUNT(*)`.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// A token of a SQL script: a word (identifier or keyword) or one of `;` `,` `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Punct(char),
}

/// Splits `sql` into words and `;` `,` `.`, dropping comments (`-- …`, `# …`, `/* … */`). Quotes,
/// backticks and brackets only separate words, so names are read the same quoted or not, and the
/// contents of string literals are read as SQL.
fn tokenize(sql: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut chars = sql.chars().peekable();
    let flush = |word: &mut String, tokens: &mut Vec<Token>| {
        if !word.is_empty() {
            tokens.push(Token::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '$' => word.push(c),
            '-' if chars.peek() == Some(&'-') => {
                flush(&mut word, &mut tokens);
                chars.by_ref().find(|&c| c == '\n');
            }
            '#' => {
                flush(&mut word, &mut tokens);
                chars.by_ref().find(|&c| c == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                flush(&mut word, &mut tokens);
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            ';' | ',' | '.' => {
                flush(&mut word, &mut tokens);
                tokens.push(Token::Punct(c));
            }
            _ => flush(&mut word, &mut tokens),
        }
    }
    flush(&mut word, &mut tokens);
    tokens
}

/// What a `down.sql` drops: each table once, in the order the script first names it, with
/// [`Dropped::Table`] when it drops the table (whatever else it does to it) and otherwise the columns
/// it drops.
///
/// Recognised: `DROP [TEMPORARY] TABLE [IF EXISTS] t[, u…]` and, within `ALTER [ONLINE|IGNORE] TABLE t …`
/// up to the next `;`, every `DROP [COLUMN] [IF EXISTS] c` (but not `DROP KEY`, `INDEX`, `PRIMARY KEY`,
/// `FOREIGN KEY`, `CONSTRAINT`, `CHECK`, `PARTITION`, `DEFAULT`, `NOT NULL`). Names may be quoted or
/// qualified (`db.t`, read as `t`).
pub(super) fn parse_drops(sql: &str) -> Vec<(String, Dropped)> {
    let mut parser = DropParser {
        tokens: tokenize(sql),
        drops: Vec::new(),
    };
    let mut altering: Option<String> = None;
    let mut i = 0;
    while i < parser.tokens.len() {
        if parser.tokens[i] == Token::Punct(';') {
            altering = None;
            i += 1;
        } else if let Some((table, next)) = parser.alter_table_at(i) {
            altering = Some(table);
            i = next;
        } else if let Some(next) = parser.drop_tables_at(i) {
            i = next;
        } else if let Some(next) = altering
            .as_deref()
            .and_then(|table| parser.drop_column_at(i, table))
        {
            i = next;
        } else if let Some(next) = altering
            .as_deref()
            .and_then(|table| parser.add_generated_column_at(i, table))
        {
            i = next;
        } else {
            i += 1;
        }
    }
    parser.drops
}

/// Words that may follow `DROP` inside `ALTER TABLE` without naming a column.
const NOT_A_COLUMN: [&str; 12] = [
    "KEY",
    "INDEX",
    "PRIMARY",
    "FOREIGN",
    "CONSTRAINT",
    "CHECK",
    "PARTITION",
    "DEFAULT",
    "NOT",
    "UNIQUE",
    "SYSTEM",
    "PERIOD",
];

/// The state of [`parse_drops`]: the tokens, and what they drop so far (per table, in first-seen order).
struct DropParser {
    tokens: Vec<Token>,
    drops: Vec<(String, Dropped)>,
}

impl DropParser {
    /// True when token `i` is the word `keyword`, in any letter case.
    fn is(&self, i: usize, keyword: &str) -> bool {
        matches!(self.tokens.get(i), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    /// The index after an optional `IF EXISTS` at `i`.
    fn skip_if_exists(&self, i: usize) -> usize {
        if self.is(i, "IF") && self.is(i + 1, "EXISTS") {
            i + 2
        } else {
            i
        }
    }

    /// A possibly qualified name at `i` (`db.t` reads as `t`): the name and the index after it.
    fn name_at(&self, i: usize) -> Option<(String, usize)> {
        let Some(Token::Word(first)) = self.tokens.get(i) else {
            return None;
        };
        match (self.tokens.get(i + 1), self.tokens.get(i + 2)) {
            (Some(Token::Punct('.')), Some(Token::Word(second))) => Some((second.clone(), i + 3)),
            _ => Some((first.clone(), i + 1)),
        }
    }

    /// `ALTER [ONLINE|IGNORE] TABLE t` at `i`: the table and the index after its name.
    fn alter_table_at(&self, i: usize) -> Option<(String, usize)> {
        if !self.is(i, "ALTER") {
            return None;
        }
        let mut j = i + 1;
        while self.is(j, "ONLINE") || self.is(j, "IGNORE") {
            j += 1;
        }
        if !self.is(j, "TABLE") {
            return None;
        }
        self.name_at(j + 1)
    }

    /// `DROP [TEMPORARY] TABLE [IF EXISTS] t[, u…]` at `i`: records the tables, returns the index after.
    fn drop_tables_at(&mut self, i: usize) -> Option<usize> {
        if !self.is(i, "DROP") {
            return None;
        }
        let mut j = i + 1;
        if self.is(j, "TEMPORARY") {
            j += 1;
        }
        if !self.is(j, "TABLE") {
            return None;
        }
        j = self.skip_if_exists(j + 1);
        while let Some((table, next)) = self.name_at(j) {
            self.record(table, None);
            j = next;
            if self.tokens.get(j) != Some(&Token::Punct(',')) {
                break;
            }
            j += 1;
        }
        Some(j)
    }

    /// `DROP [COLUMN] [IF EXISTS] c` at `i`, inside `ALTER TABLE table`: records the column, returns the
    /// index after it. `None` for a `DROP` of something else (a key, a constraint, …).
    fn drop_column_at(&mut self, i: usize, table: &str) -> Option<usize> {
        if !self.is(i, "DROP") {
            return None;
        }
        let mut j = i + 1;
        if self.is(j, "COLUMN") {
            j += 1;
        }
        j = self.skip_if_exists(j);
        if NOT_A_COLUMN.iter().any(|keyword| self.is(j, keyword)) {
            return None;
        }
        let Some(Token::Word(column)) = self.tokens.get(j) else {
            return None;
        };
        let column = column.clone();
        self.record(table.to_owned(), Some(column));
        Some(j + 1)
    }

    /// `ADD [COLUMN] c … AS …` / `… GENERATED …` at `i`, inside `ALTER TABLE table`: a generated column
    /// added back after the script dropped it (to change its expression) loses no data, so it is
    /// taken off the dropped columns. Returns the index after its name; `None` for any other `ADD`.
    /// The definition is read up to its first `,` or `;`, which comes after `AS` or `GENERATED`.
    fn add_generated_column_at(&mut self, i: usize, table: &str) -> Option<usize> {
        if !self.is(i, "ADD") {
            return None;
        }
        let mut j = i + 1;
        if self.is(j, "COLUMN") {
            j += 1;
        }
        let Some(Token::Word(column)) = self.tokens.get(j) else {
            return None;
        };
        let column = column.clone();
        let generated = self.tokens[j + 1..]
            .iter()
            .take_while(|token| !matches!(token, Token::Punct(',' | ';')))
            .any(|token| {
                matches!(token, Token::Word(w)
                    if w.eq_ignore_ascii_case("AS") || w.eq_ignore_ascii_case("GENERATED"))
            });
        if !generated {
            return None;
        }
        if let Some((_, Dropped::Columns(columns))) =
            self.drops.iter_mut().find(|(t, _)| t == table)
        {
            columns.retain(|c| *c != column);
        }
        self.drops
            .retain(|(_, dropped)| !matches!(dropped, Dropped::Columns(c) if c.is_empty()));
        Some(j + 1)
    }

    /// Records that `table` is dropped (`column` `None`) or loses `column`. A dropped table absorbs
    /// its column drops; a column is listed once.
    fn record(&mut self, table: String, column: Option<String>) {
        let entry = match self.drops.iter().position(|(t, _)| *t == table) {
            Some(index) => &mut self.drops[index].1,
            None => {
                self.drops.push((table, Dropped::Columns(Vec::new())));
                &mut self.drops.last_mut().expect("just pushed").1
            }
        };
        match (entry, column) {
            (entry, None) => *entry = Dropped::Table,
            (Dropped::Columns(columns), Some(column)) => {
                if !columns.contains(&column) {
                    columns.push(column);
                }
            }
            (Dropped::Table, Some(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `down.sql` tables this build embeds: one per backend it has.
    fn embedded_trees() -> Vec<&'static [(&'static str, &'static str)]> {
        vec![
            #[cfg(feature = "mysql")]
            MYSQL_DOWN_SQL,
            #[cfg(feature = "postgres")]
            POSTGRES_DOWN_SQL,
            #[cfg(feature = "sqlite")]
            SQLITE_DOWN_SQL,
        ]
    }

    fn table(name: &str) -> (String, Dropped) {
        (name.to_owned(), Dropped::Table)
    }

    fn columns(name: &str, columns: &[&str]) -> (String, Dropped) {
        (
            name.to_owned(),
            Dropped::Columns(columns.iter().map(|c| c.to_string()).collect()),
        )
    }

    #[test]
    fn drop_table_in_its_forms() {
        assert_eq!(parse_drops("DROP TABLE applies;"), [table("applies")]);
        assert_eq!(
            parse_drops("drop table if exists `tasks`, \"apply_operations\""),
            [table("tasks"), table("apply_operations")]
        );
        assert_eq!(
            parse_drops("DROP TEMPORARY TABLE IF EXISTS db.scratch;"),
            [table("scratch")]
        );
    }

    #[test]
    fn alter_table_drop_columns_but_not_keys_or_defaults() {
        let sql = "ALTER TABLE apply_operations\n    DROP KEY apply_operations_claim_idx,\n    \
                   DROP COLUMN claimable,\n    DROP lease_token, DROP INDEX x, DROP PRIMARY KEY,\n    \
                   DROP FOREIGN KEY fk, DROP CONSTRAINT c, DROP CHECK k,\n    \
                   ALTER COLUMN state DROP DEFAULT, DROP COLUMN IF EXISTS attempt;";
        assert_eq!(
            parse_drops(sql),
            [columns(
                "apply_operations",
                &["claimable", "lease_token", "attempt"]
            )]
        );
    }

    #[test]
    fn a_generated_column_added_back_is_not_dropped_but_a_plain_one_is() {
        let mysql = "ALTER TABLE apply_operations DROP INDEX k, DROP COLUMN claimable,\n\
                     ADD COLUMN claimable BOOLEAN AS (state IN ('a', 'b')) VIRTUAL,\n\
                     ADD KEY k (claimable), DROP COLUMN failure_seq;";
        assert_eq!(
            parse_drops(mysql),
            [columns("apply_operations", &["failure_seq"])]
        );
        let sqlite = "ALTER TABLE t DROP COLUMN g;\n\
                      ALTER TABLE t ADD COLUMN g BOOLEAN GENERATED ALWAYS AS (x = 1) VIRTUAL;";
        assert_eq!(parse_drops(sqlite), []);
        let plain = "ALTER TABLE t DROP COLUMN c; ALTER TABLE t ADD COLUMN c INT NULL;";
        assert_eq!(
            parse_drops(plain),
            [columns("t", &["c"])],
            "its data is gone"
        );
    }

    #[test]
    fn sqlite_style_one_statement_per_column_and_drop_index() {
        let sql = "DROP INDEX apply_operations_claim_idx;\n\
                   ALTER TABLE apply_operations DROP COLUMN claimable;\n\
                   ALTER TABLE apply_operations DROP COLUMN attempt;\n\
                   ALTER TABLE applies DROP COLUMN defer_cutover;";
        assert_eq!(
            parse_drops(sql),
            [
                columns("apply_operations", &["claimable", "attempt"]),
                columns("applies", &["defer_cutover"])
            ]
        );
    }

    #[test]
    fn a_dropped_table_stays_dropped_and_a_rebuild_counts_as_a_drop() {
        let sql = "ALTER TABLE t DROP COLUMN a; CREATE TABLE t_new (id INTEGER);\n\
                   INSERT INTO t_new SELECT id FROM t; DROP TABLE t;\n\
                   ALTER TABLE t_new RENAME TO t; ALTER TABLE u DROP COLUMN b; DROP TABLE u;";
        assert_eq!(parse_drops(sql), [table("t"), table("u")]);
    }

    #[test]
    fn comments_are_ignored_and_string_literals_are_read() {
        let sql = "-- DROP TABLE commented;\n# DROP TABLE hashed;\n/* DROP TABLE blocked; */\n\
                   SET @s = 'ALTER TABLE applies DROP COLUMN defer_cutover';\n\
                   PREPARE s FROM @s; EXECUTE s;";
        assert_eq!(parse_drops(sql), [columns("applies", &["defer_cutover"])]);
    }

    #[test]
    fn statements_that_drop_nothing() {
        assert_eq!(parse_drops(""), []);
        assert_eq!(
            parse_drops(
                "ALTER TABLE applies MODIFY state VARCHAR(64) COLLATE utf8mb4_bin NOT NULL;"
            ),
            []
        );
        assert_eq!(parse_drops("DROP INDEX tasks_idx ON tasks;"), []);
        assert_eq!(parse_drops("DROP VIEW v; DROP TRIGGER t;"), []);
    }

    #[test]
    fn the_embedded_scripts_are_keyed_by_version_and_name_plain_tables() {
        for (version, sql) in embedded_trees().into_iter().flatten() {
            assert!(
                version.len() == 14 && version.chars().all(|c| c.is_ascii_digit()),
                "{version}"
            );
            for (table, dropped) in parse_drops(sql) {
                assert!(check_identifier(&table).is_ok(), "{version}: {table}");
                if let Dropped::Columns(columns) = dropped {
                    assert!(!columns.is_empty(), "{version}: {table}");
                }
            }
        }
        for scripts in embedded_trees() {
            let first = scripts.first().expect("embedded scripts");
            assert_eq!(first.0, "20261124000001");
            assert_eq!(parse_drops(first.1), [table("applies")]);
        }
    }

    #[test]
    fn identifiers_outside_the_plain_set_are_rejected() {
        assert!(check_identifier("apply_operations").is_ok());
        assert!(check_identifier("t$1").is_ok());
        assert!(check_identifier("").is_err());
        assert!(check_identifier("a`; DROP TABLE b").is_err());
        assert!(check_identifier("a b").is_err());
    }

    #[test]
    fn dropped_data_reads_well() {
        let whole = DroppedData {
            table: "tasks".into(),
            dropped: Dropped::Table,
            rows: 1,
        };
        assert_eq!(whole.to_string(), "table tasks (1 row)");
        let some = DroppedData {
            table: "apply_operations".into(),
            dropped: Dropped::Columns(vec!["attempt".into(), "lease_owner".into()]),
            rows: 0,
        };
        assert_eq!(
            some.to_string(),
            "columns attempt, lease_owner of apply_operations (0 rows)"
        );
    }
}
