//! Test harness: a fresh, migrated database per test on either backend, and schema introspection
//! helpers that work on both.
//!
//! MySQL server discovery, once per test process:
//! 1. `TEST_DATABASE_URL` (a `mysql://user:password@host:port` server URL; any database path is ignored);
//! 2. `mysql://root@127.0.0.1:3306` if a server answers there;
//! 3. where Docker is available, one MySQL 8 container for the whole process (testcontainers);
//! 4. otherwise the test fails, saying how to provide a server.
//!
//! Each MySQL test gets `CREATE DATABASE applyops_t_<pid>_<unix secs>_<random>`, dropped when the guard
//! drops. Databases left behind by killed runs are swept once per process: those whose process is gone
//! (local server) or that are over two hours old. Each SQLite test gets a file in its own temp dir.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use applyops::db::{self, DbConnection};
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

/// The backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mysql,
    Sqlite,
}

const DB_PREFIX: &str = "applyops_t_";

/// A fresh database, dropped (MySQL) or deleted (SQLite) when this guard drops.
pub struct TestDb {
    url: String,
    mysql_name: Option<String>,
    _sqlite_dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub fn new(kind: Kind) -> TestDb {
        let db = TestDb::unmigrated(kind);
        db::run_migrations(&mut db.conn()).expect("migrations run on a fresh database");
        db
    }

    /// A fresh, empty database.
    pub fn unmigrated(kind: Kind) -> TestDb {
        match kind {
            Kind::Mysql => {
                let server = mysql_server();
                let name = format!(
                    "{DB_PREFIX}{}_{}_{:08x}",
                    std::process::id(),
                    unix_secs(),
                    rand::random::<u32>()
                );
                admin_connection()
                    .batch_execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
                    .expect("create test database");
                TestDb {
                    url: format!("{server}/{name}"),
                    mysql_name: Some(name),
                    _sqlite_dir: None,
                }
            }
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    url,
                    mysql_name: None,
                    _sqlite_dir: Some(dir),
                }
            }
        }
    }

    /// The database URL, as a worker would be given it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection with applyops' session settings.
    pub fn conn(&self) -> DbConnection {
        db::establish(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.mysql_name {
            // Best effort: a leftover is swept by a later run.
            let _ = admin_connection().batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"));
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The MySQL server URL without a database path, discovered once per process.
pub fn mysql_server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = discover_server();
        sweep_leftovers(&server);
        server
    })
}

/// A connection to the server with no database selected, for CREATE/DROP DATABASE and KILL.
pub fn admin_connection() -> MysqlConnection {
    MysqlConnection::establish(mysql_server()).expect("connect to the MySQL test server")
}

fn discover_server() -> String {
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        let server = strip_database(&url);
        if let Err(err) = MysqlConnection::establish(&server) {
            panic!("TEST_DATABASE_URL={url:?} is set but cannot be reached: {err}");
        }
        return server;
    }
    let local = "mysql://root@127.0.0.1:3306".to_owned();
    if MysqlConnection::establish(&local).is_ok() {
        return local;
    }
    if docker_available() {
        return start_container();
    }
    panic!(
        "no MySQL server for the tests. Provide one of:\n\
         - TEST_DATABASE_URL=mysql://USER:PASSWORD@HOST:PORT (a user allowed to CREATE and DROP DATABASE);\n\
         - MariaDB or MySQL listening on 127.0.0.1:3306 for user root with an empty password\n\
           (Debian: apt-get install mariadb-server && service mariadb start);\n\
         - a running Docker engine, so the tests can start a MySQL 8 container."
    );
}

/// `mysql://u:p@h:3306/db?x` → `mysql://u:p@h:3306`.
fn strip_database(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

fn docker_available() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// One MySQL 8 container for the whole test process. It is kept in a static, so it lives until the
/// process exits.
fn start_container() -> String {
    use testcontainers::runners::SyncRunner;
    use testcontainers_modules::mysql::Mysql;

    static CONTAINER: OnceLock<testcontainers::Container<Mysql>> = OnceLock::new();
    let container =
        CONTAINER.get_or_init(|| Mysql::default().start().expect("start a MySQL 8 container"));
    let host = container.get_host().expect("container host");
    let port = container.get_host_port_ipv4(3306).expect("container port");
    format!("mysql://root@{host}:{port}")
}

#[derive(QueryableByName)]
struct SchemaName {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Drops test databases left by runs that were killed before their guards dropped: those whose process
/// is gone (on a local server, where /proc tells) or that are over two hours old.
pub fn sweep_leftovers(server: &str) {
    let Ok(mut conn) = MysqlConnection::establish(server) else {
        return;
    };
    let Ok(names) = diesel::sql_query(
        "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'applyops\\_t\\_%'",
    )
    .load::<SchemaName>(&mut conn) else {
        return;
    };
    let local = server.contains("@127.0.0.1") || server.contains("@localhost");
    let now = unix_secs();
    for SchemaName { name } in names {
        let mut parts = name[DB_PREFIX.len()..].split('_');
        let (Some(Ok(pid)), Some(Ok(created))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        let process_gone = local && !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if process_gone || now.saturating_sub(created) > 2 * 60 * 60 {
            let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"));
        }
    }
}

#[test]
fn the_sweep_drops_databases_of_dead_or_old_runs_and_keeps_live_ones() {
    let server = mysql_server();
    let now = unix_secs();
    let dead = format!("{DB_PREFIX}4000000000_{now}_00000001"); // no such pid
    let old = format!(
        "{DB_PREFIX}{}_{}_00000002",
        std::process::id(),
        now - 3 * 60 * 60
    );
    let live = format!("{DB_PREFIX}{}_{now}_00000003", std::process::id());
    let exists = |name: &str| {
        diesel::sql_query(
            "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        )
        .bind::<Text, _>(name)
        .load::<SchemaName>(&mut admin_connection())
        .unwrap()
        .len()
            == 1
    };
    for name in [&dead, &old, &live] {
        admin_connection()
            .batch_execute(&format!("CREATE DATABASE `{name}`"))
            .unwrap();
    }
    sweep_leftovers(server);
    let (dead_kept, old_kept, live_kept) = (exists(&dead), exists(&old), exists(&live));
    admin_connection()
        .batch_execute(&format!("DROP DATABASE IF EXISTS `{live}`"))
        .unwrap();
    assert!(!dead_kept, "a dead process's database is dropped");
    assert!(!old_kept, "a database over two hours old is dropped");
    assert!(live_kept, "a live run's database is kept");
}

/// A column as the live database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// Lower-cased declared type, e.g. `bigint`, `varchar(255)`, `datetime(6)`, `timestamp`.
    pub declared_type: String,
    pub nullable: bool,
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    declared_type: String,
    #[diesel(sql_type = BigInt)]
    nullable: i64,
}

#[derive(QueryableByName)]
struct CollationRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    collation_name: String,
}

/// MySQL: (table, column, collation) of every text column of the current database's tables.
pub fn text_collations(conn: &mut DbConnection) -> Vec<(String, String, String)> {
    let DbConnection::Mysql(c) = conn else {
        panic!("collations are read on MySQL only")
    };
    let rows: Vec<CollationRow> = diesel::sql_query(
        "SELECT CAST(TABLE_NAME AS CHAR) AS table_name, CAST(COLUMN_NAME AS CHAR) AS column_name, \
         CAST(COLLATION_NAME AS CHAR) AS collation_name FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME IS NOT NULL \
         AND TABLE_NAME <> '__diesel_schema_migrations' ORDER BY TABLE_NAME, ORDINAL_POSITION",
    )
    .load(c)
    .expect("read collations");
    rows.into_iter()
        .map(|row| (row.table_name, row.column_name, row.collation_name))
        .collect()
}

/// The table's columns in table order (empty when the table does not exist).
pub fn columns(conn: &mut DbConnection, table: &str) -> Vec<ColumnInfo> {
    let rows: Vec<ColumnRow> = match conn {
        DbConnection::Mysql(c) => diesel::sql_query(
            "SELECT COLUMN_NAME AS name, CAST(COLUMN_TYPE AS CHAR) AS declared_type, \
             CAST(IS_NULLABLE = 'YES' AS SIGNED) AS nullable \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
        )
        .bind::<Text, _>(table)
        .load(c),
        DbConnection::Sqlite(c) => diesel::sql_query(
            // table_xinfo, unlike table_info, lists generated columns; SQLite reports their type with
            // a " GENERATED ALWAYS" suffix, removed below.
            "SELECT name, type AS declared_type, CAST(\"notnull\" = 0 AND pk = 0 AS INTEGER) AS nullable \
             FROM pragma_table_xinfo(?) ORDER BY cid",
        )
        .bind::<Text, _>(table)
        .load(c),
    }
    .expect("read columns");
    rows.into_iter()
        .map(|row| ColumnInfo {
            name: row.name,
            declared_type: row
                .declared_type
                .to_ascii_lowercase()
                .trim_end_matches(" generated always")
                .to_owned(),
            nullable: row.nullable != 0,
        })
        .collect()
}

/// True when the table exists.
pub fn table_exists(conn: &mut DbConnection, table: &str) -> bool {
    !columns(conn, table).is_empty()
}

/// `Some(nullable)` when the column exists.
pub fn column_exists(conn: &mut DbConnection, table: &str, column: &str) -> Option<bool> {
    columns(conn, table)
        .into_iter()
        .find(|c| c.name == column)
        .map(|c| c.nullable)
}

/// An index as the live database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    pub unique: bool,
    /// The indexed columns in index order.
    pub columns: Vec<String>,
}

#[derive(QueryableByName)]
struct IndexColumnRow {
    #[diesel(sql_type = BigInt)]
    non_unique: i64,
    #[diesel(sql_type = Nullable<Text>)]
    column_name: Option<String>,
}

/// The named index of `table`, with its ordered columns, or `None`.
pub fn index_exists(conn: &mut DbConnection, table: &str, index: &str) -> Option<IndexInfo> {
    let rows: Vec<IndexColumnRow> = match conn {
        DbConnection::Mysql(c) => diesel::sql_query(
            "SELECT CAST(NON_UNIQUE AS SIGNED) AS non_unique, COLUMN_NAME AS column_name \
             FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ? ORDER BY SEQ_IN_INDEX",
        )
        .bind::<Text, _>(table)
        .bind::<Text, _>(index)
        .load(c),
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT CAST(1 - il.\"unique\" AS INTEGER) AS non_unique, ii.name AS column_name \
             FROM pragma_index_list(?) AS il, pragma_index_info(il.name) AS ii \
             WHERE il.name = ? ORDER BY ii.seqno",
        )
        .bind::<Text, _>(table)
        .bind::<Text, _>(index)
        .load(c),
    }
    .expect("read index");
    let first = rows.first()?;
    Some(IndexInfo {
        unique: first.non_unique == 0,
        columns: rows.iter().filter_map(|r| r.column_name.clone()).collect(),
    })
}

/// The user tables (everything but Diesel's migration bookkeeping), sorted.
pub fn tables(conn: &mut DbConnection) -> Vec<String> {
    let rows: Vec<SchemaName> = match conn {
        DbConnection::Mysql(c) => diesel::sql_query(
            "SELECT TABLE_NAME AS name FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> '__diesel_schema_migrations' ORDER BY TABLE_NAME",
        )
        .load(c),
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name <> '__diesel_schema_migrations' ORDER BY name",
        )
        .load(c),
    }
    .expect("list tables");
    rows.into_iter().map(|r| r.name).collect()
}

#[derive(QueryableByName)]
struct CreateTable {
    #[diesel(sql_type = Text, column_name = "Create Table")]
    create_table: String,
}

#[derive(QueryableByName)]
struct SqliteObject {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    sql: Option<String>,
}

/// The full DDL of every user table and index, for exact before/after comparisons.
pub fn schema_snapshot(conn: &mut DbConnection) -> Vec<String> {
    let tables = tables(conn);
    match conn {
        DbConnection::Mysql(c) => tables
            .iter()
            .map(|table| {
                diesel::sql_query(format!("SHOW CREATE TABLE `{table}`"))
                    .get_result::<CreateTable>(c)
                    .expect("show create table")
                    .create_table
            })
            .collect(),
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
             AND name <> '__diesel_schema_migrations' ORDER BY type, name",
        )
        .load::<SqliteObject>(c)
        .expect("read sqlite_master")
        .into_iter()
        .map(|o| format!("{}: {}", o.name, o.sql.unwrap_or_default()))
        .collect(),
    }
}

/// Instantiates each named test function once per backend, as `<module>::mysql::<name>` and
/// `<module>::sqlite::<name>`. Each function is an ordinary `fn name(db: &TestDb)` in the module (so
/// rustfmt formats it), called with a fresh, migrated [`TestDb`] of the backend.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod mysql {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::harness::TestDb::new($crate::harness::Kind::Mysql));
                }
            )*
        }
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::harness::TestDb::new($crate::harness::Kind::Sqlite));
                }
            )*
        }
    };
}
