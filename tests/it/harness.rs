//! Test harness: a fresh, migrated database per test on any backend, and schema introspection
//! helpers that work on all three.
//!
//! Migrations run once per test process and backend, into a template; each test gets a copy of it
//! (see [`TestDb::new`]).
//!
//! MySQL server discovery, once per test process:
//! 1. `TEST_DATABASE_URL` (a `mysql://user:password@host:port` server URL; any database path is ignored);
//! 2. `mysql://root@127.0.0.1:3306` if a server answers there;
//! 3. where Docker is available, one MySQL 8 container for the whole process (testcontainers);
//! 4. otherwise the test fails, saying how to provide a server.
//!
//! Each MySQL test gets `CREATE DATABASE applyops_t_<pid>_<unix secs>_<random>`, dropped when the
//! guard drops; the process's template, `applyops_t_<pid>_<unix secs>_tmpl`, is left for a later
//! run's sweep. Databases left behind by killed runs are swept once per process: those whose process
//! is gone (local server) or that are over two hours old, a template only while no process holds its
//! lock. Each SQLite test gets a file in its own temp dir.
//!
//! PostgreSQL server discovery, once per test process: `TEST_POSTGRES_URL` (a `postgres://` server
//! URL of a user allowed to create databases; any database path is ignored), else
//! `postgres://postgres@127.0.0.1:5432`; otherwise the test fails, saying how to provide one. Each
//! test gets `CREATE DATABASE applyops_t_… TEMPLATE <the process's migrated template>`, dropped
//! (`WITH (FORCE)`) when the guard drops; leftovers are swept as on MySQL.

use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use applyops::db::{self, DbConnection};
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

/// The backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mysql,
    Postgres,
    Sqlite,
}

const DB_PREFIX: &str = "applyops_t_";
/// Ends the name of a process's MySQL template database, in place of a test database's random part.
const TEMPLATE_SUFFIX: &str = "_tmpl";

/// A fresh database, dropped (MySQL, PostgreSQL) or deleted (SQLite) when this guard drops.
pub struct TestDb {
    kind: Kind,
    url: String,
    mysql_name: Option<String>,
    pg_name: Option<String>,
    _sqlite_dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A fresh database with every migration applied: a copy of this process's migrated template
    /// for the backend, which the first call builds. MySQL: `CREATE TABLE ... LIKE` each of the
    /// template's tables, and its `__diesel_schema_migrations` rows. SQLite: a copy of the template
    /// file. `harness::*::a_copied_test_database_matches_a_freshly_migrated_one` checks the copy.
    pub fn new(kind: Kind) -> TestDb {
        match kind {
            Kind::Mysql => {
                let template = mysql_template();
                let conn = &mut admin_connection();
                let db = TestDb::create_mysql(conn);
                let name = db.mysql_name.as_deref().expect("a MySQL test database");
                let from = &template.name;
                let mut copy = String::new();
                for table in &template.tables {
                    write!(
                        copy,
                        "CREATE TABLE `{name}`.`{table}` LIKE `{from}`.`{table}`;"
                    )
                    .unwrap();
                }
                write!(
                    copy,
                    "INSERT INTO `{name}`.`__diesel_schema_migrations` \
                     SELECT * FROM `{from}`.`__diesel_schema_migrations`;"
                )
                .unwrap();
                conn.batch_execute(&copy)
                    .expect("copy the template database");
                db
            }
            Kind::Postgres => TestDb::create_pg(Some(pg_template())),
            Kind::Sqlite => {
                let db = TestDb::unmigrated(Kind::Sqlite);
                std::fs::write(db.sqlite_path(), sqlite_template())
                    .expect("copy the template file");
                db
            }
        }
    }

    /// A fresh database with every migration run in it, the way the templates are built: what a
    /// [`TestDb::new`] copy is checked against.
    pub fn freshly_migrated(kind: Kind) -> TestDb {
        let db = TestDb::unmigrated(kind);
        db::run_migrations(&mut db.conn()).expect("migrations run on a fresh database");
        db
    }

    /// A fresh, empty database.
    pub fn unmigrated(kind: Kind) -> TestDb {
        match kind {
            Kind::Mysql => TestDb::create_mysql(&mut admin_connection()),
            Kind::Postgres => TestDb::create_pg(None),
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDb {
                    kind,
                    url,
                    mysql_name: None,
                    pg_name: None,
                    _sqlite_dir: Some(dir),
                }
            }
        }
    }

    /// An empty MySQL database, created over `conn`.
    fn create_mysql(conn: &mut MysqlConnection) -> TestDb {
        let server = mysql_server();
        let name = format!(
            "{DB_PREFIX}{}_{}_{:08x}",
            std::process::id(),
            unix_secs(),
            rand::random::<u32>()
        );
        conn.batch_execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .expect("create test database");
        TestDb {
            kind: Kind::Mysql,
            url: format!("{server}/{name}"),
            mysql_name: Some(name),
            pg_name: None,
            _sqlite_dir: None,
        }
    }

    /// A PostgreSQL database: a copy of `template`, or an empty one.
    fn create_pg(template: Option<&str>) -> TestDb {
        let server = pg_server();
        let name = format!(
            "{DB_PREFIX}{}_{}_{:08x}",
            std::process::id(),
            unix_secs(),
            rand::random::<u32>()
        );
        let from = template.map_or(String::new(), |t| format!(" TEMPLATE \"{t}\""));
        pg_admin_connection()
            .batch_execute(&format!("CREATE DATABASE \"{name}\"{from}"))
            .expect("create test database");
        TestDb {
            kind: Kind::Postgres,
            url: format!("{server}/{name}"),
            mysql_name: None,
            pg_name: Some(name),
            _sqlite_dir: None,
        }
    }

    fn sqlite_path(&self) -> std::path::PathBuf {
        let dir = self._sqlite_dir.as_ref().expect("a SQLite test database");
        dir.path().join("test.db")
    }

    /// The backend.
    pub fn kind(&self) -> Kind {
        self.kind
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
        if let Some(name) = &self.pg_name {
            // Best effort: a leftover is swept by a later run.
            let _ = pg_admin_connection()
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }
}

/// This process's migrated PostgreSQL template database, by name. Built by the first caller (test
/// threads that ask meanwhile wait for it); no connection to it stays open, since `CREATE DATABASE …
/// TEMPLATE` refuses a template anyone is connected to. A session-level advisory lock on the
/// server's `postgres` database, held for the life of the process, tells other processes' sweeps
/// that it is in use.
fn pg_template() -> &'static str {
    static TEMPLATE: OnceLock<(String, Mutex<PgConnection>)> = OnceLock::new();
    &TEMPLATE
        .get_or_init(|| {
            let name = format!(
                "{DB_PREFIX}{}_{}{TEMPLATE_SUFFIX}",
                std::process::id(),
                unix_secs()
            );
            let mut lock = pg_admin_connection();
            assert!(pg_try_lock(&mut lock, &name), "the template's lock is free");
            lock.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .expect("create the template database");
            {
                let mut conn = db::establish(&format!("{}/{name}", pg_server())).expect("connect");
                db::run_migrations(&mut conn).expect("migrations run on the template database");
            }
            (name, Mutex::new(lock))
        })
        .0
}

/// The PostgreSQL server URL without a database path, discovered once per process.
pub fn pg_server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = match std::env::var("TEST_POSTGRES_URL") {
            Ok(url) => {
                let server = strip_database(&url);
                // Through applyops first: it initialises OpenSSL as libpq needs it (see
                // `db::postgres::connect`).
                if let Err(err) = db::establish(&format!("{server}/postgres")) {
                    panic!(
                        "TEST_POSTGRES_URL={:?} is set but cannot be reached: {err}",
                        db::redact_url(&url)
                    );
                }
                server
            }
            Err(_) => {
                let local = "postgres://postgres@127.0.0.1:5432".to_owned();
                if let Err(err) = db::establish(&format!("{local}/postgres")) {
                    panic!(
                        "no PostgreSQL server for the tests ({err}). Provide one of:\n\
                         - TEST_POSTGRES_URL=postgres://USER:PASSWORD@HOST:PORT (a user allowed to \
                         CREATE DATABASE);\n\
                         - PostgreSQL listening on 127.0.0.1:5432 for user postgres without a \
                         password (Debian: apt-get install postgresql, trust auth for 127.0.0.1)."
                    );
                }
                local
            }
        };
        sweep_pg_leftovers(&server);
        server
    })
}

/// A connection to the server's `postgres` database, for CREATE and DROP DATABASE.
pub fn pg_admin_connection() -> PgConnection {
    PgConnection::establish(&format!("{}/postgres", pg_server()))
        .expect("connect to the PostgreSQL test server")
}

/// Takes the session-level advisory lock named `name` on `conn` if it is free: true when taken
/// (false too when the server cannot tell).
fn pg_try_lock(conn: &mut PgConnection, name: &str) -> bool {
    diesel::sql_query(
        "SELECT CASE WHEN pg_try_advisory_lock(hashtext($1)) THEN 1::bigint ELSE 0 END AS n",
    )
    .bind::<Text, _>(name)
    .get_result::<Count>(conn)
    .is_ok_and(|taken| taken.n == Some(1))
}

/// [`sweep_leftovers`] on PostgreSQL.
fn sweep_pg_leftovers(server: &str) {
    let Ok(mut conn) = PgConnection::establish(&format!("{server}/postgres")) else {
        return;
    };
    let Ok(names) = diesel::sql_query(
        "SELECT datname::text AS name FROM pg_database WHERE datname LIKE 'applyops\\_t\\_%'",
    )
    .load::<SchemaName>(&mut conn) else {
        return;
    };
    let local = server.contains("@127.0.0.1") || server.contains("@localhost");
    for SchemaName { name } in names {
        if !leftover(&name, local) {
            continue;
        }
        if name.ends_with(TEMPLATE_SUFFIX) {
            if !pg_try_lock(&mut conn, &name) {
                continue;
            }
            let _ = diesel::sql_query("SELECT pg_advisory_unlock(hashtext($1))")
                .bind::<Text, _>(&name)
                .execute(&mut conn);
        }
        let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    }
}

/// True for a test database named by a process that is gone (on a local server, where /proc
/// tells) or created over two hours ago.
fn leftover(name: &str, local: bool) -> bool {
    let mut parts = name[DB_PREFIX.len()..].split('_');
    let (Some(Ok(pid)), Some(Ok(created))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    let process_gone = local && !std::path::Path::new(&format!("/proc/{pid}")).exists();
    process_gone || unix_secs().saturating_sub(created) > 2 * 60 * 60
}

/// This process's migrated MySQL template database.
struct MysqlTemplate {
    name: String,
    /// Every table of the template, `__diesel_schema_migrations` included, read from
    /// information_schema.
    tables: Vec<String>,
    /// The connection holding `GET_LOCK(name)` for the life of the process: the lock tells the
    /// sweep of any process that this template is in use.
    _lock: Mutex<MysqlConnection>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

/// Built by the first caller; test threads that ask meanwhile wait for it.
fn mysql_template() -> &'static MysqlTemplate {
    static TEMPLATE: OnceLock<MysqlTemplate> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = format!(
            "{DB_PREFIX}{}_{}{TEMPLATE_SUFFIX}",
            std::process::id(),
            unix_secs()
        );
        // The lock first, so that no sweep ever sees the database without it.
        let mut lock = admin_connection();
        let held = diesel::sql_query("SELECT CAST(GET_LOCK(?, 0) AS SIGNED) AS n")
            .bind::<Text, _>(&name)
            .get_result::<Count>(&mut lock)
            .expect("lock the template's name")
            .n;
        assert_eq!(held, Some(1), "GET_LOCK('{name}') is free");
        lock.batch_execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .expect("create the template database");
        let mut conn = db::establish(&format!("{}/{name}", mysql_server())).expect("connect");
        db::run_migrations(&mut conn).expect("migrations run on the template database");
        let DbConnection::Mysql(conn) = &mut conn else {
            unreachable!("a mysql:// URL")
        };
        // CREATE TABLE ... LIKE copies a table's columns, indexes and options, nothing else.
        let uncopied: Vec<String> = diesel::sql_query(
            "SELECT CONCAT(TABLE_TYPE, ' ', TABLE_NAME) AS name FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE <> 'BASE TABLE' \
             UNION ALL SELECT CONCAT('TRIGGER ', TRIGGER_NAME) FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = DATABASE() \
             UNION ALL SELECT CONCAT('ROUTINE ', ROUTINE_NAME) FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = DATABASE() \
             UNION ALL SELECT CONCAT('EVENT ', EVENT_NAME) FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA = DATABASE() \
             UNION ALL SELECT CONCAT('FOREIGN KEY ', CONSTRAINT_NAME) \
             FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = DATABASE()",
        )
        .load::<SchemaName>(conn)
        .expect("read the template's other objects")
        .into_iter()
        .map(|o| o.name)
        .collect();
        assert!(
            uncopied.is_empty(),
            "the migrations create objects TestDb::new does not copy: {uncopied:?}"
        );
        let tables: Vec<String> = diesel::sql_query(
            "SELECT TABLE_NAME AS name FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
        )
        .load::<SchemaName>(conn)
        .expect("list the template's tables")
        .into_iter()
        .map(|t| t.name)
        .collect();
        assert!(tables.iter().any(|t| t == "__diesel_schema_migrations"));
        for table in tables.iter().filter(|t| *t != "__diesel_schema_migrations") {
            let rows = diesel::sql_query(format!("SELECT COUNT(*) AS n FROM `{table}`"))
                .get_result::<Count>(conn)
                .expect("count the template's rows")
                .n;
            assert_eq!(
                rows,
                Some(0),
                "a migration stores rows in {table}, which TestDb::new does not copy"
            );
        }
        MysqlTemplate {
            name,
            tables,
            _lock: Mutex::new(lock),
        }
    })
}

/// The bytes of this process's migrated SQLite template: a single file, no WAL beside it.
/// Built by the first caller; test threads that ask meanwhile wait for it.
fn sqlite_template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        // Kept in memory, not in a file: a static is never dropped, so a temp dir holding the
        // template for the whole run would be left behind by every run.
        let db = TestDb::freshly_migrated(Kind::Sqlite);
        let file = db.sqlite_path().with_file_name("template.db");
        let into = file
            .to_str()
            .expect("a UTF-8 temp path")
            .replace('\'', "''");
        db.conn()
            .batch_execute(&format!("VACUUM INTO '{into}'"))
            .expect("write the template file");
        std::fs::read(&file).expect("read the template file")
    })
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
            panic!(
                "TEST_DATABASE_URL={:?} is set but cannot be reached: {err}",
                db::redact_url(&url)
            );
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
    for SchemaName { name } in names {
        if !leftover(&name, local) {
            continue;
        }
        // A template's process holds a lock named after it while it runs, wherever it runs.
        if name.ends_with(TEMPLATE_SUFFIX) && !lock_is_free(&mut conn, &name) {
            continue;
        }
        let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"));
    }
}

/// False when the lock is held, or when the server cannot tell.
fn lock_is_free(conn: &mut MysqlConnection, name: &str) -> bool {
    diesel::sql_query("SELECT CAST(IS_FREE_LOCK(?) AS SIGNED) AS n")
        .bind::<Text, _>(name)
        .get_result::<Count>(conn)
        .is_ok_and(|free| free.n == Some(1))
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

#[test]
fn the_sweep_drops_a_template_only_while_no_process_holds_its_lock() {
    let server = mysql_server();
    let now = unix_secs();
    let no_such_pid = || 4_000_000_000 + rand::random::<u32>() % 100_000_000;
    let template = |pid: u32, created: u64| format!("{DB_PREFIX}{pid}_{created}{TEMPLATE_SUFFIX}");
    // Over two hours old, but its process (this one) holds the lock: kept.
    let old_locked = template(std::process::id(), now - 3 * 60 * 60);
    // Its pid is not running here, but a process holds the lock (as one on another host would):
    // kept.
    let gone_locked = template(no_such_pid(), now);
    // Its pid is not running and nobody holds the lock: dropped.
    let gone_free = template(no_such_pid(), now);
    let mut holder = admin_connection();
    for name in [&old_locked, &gone_locked] {
        let held = diesel::sql_query("SELECT CAST(GET_LOCK(?, 0) AS SIGNED) AS n")
            .bind::<Text, _>(name)
            .get_result::<Count>(&mut holder)
            .unwrap()
            .n;
        assert_eq!(held, Some(1));
    }
    for name in [&old_locked, &gone_locked, &gone_free] {
        admin_connection()
            .batch_execute(&format!("CREATE DATABASE `{name}`"))
            .unwrap();
    }
    sweep_leftovers(server);
    let kept = [&old_locked, &gone_locked, &gone_free].map(|name| schema_exists(name));
    drop(holder);
    for name in [&old_locked, &gone_locked, &gone_free] {
        admin_connection()
            .batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"))
            .unwrap();
    }
    assert_eq!(
        kept,
        [true, true, false],
        "kept: old but locked, gone but locked, gone and free"
    );
}

fn schema_exists(name: &str) -> bool {
    diesel::sql_query(
        "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind::<Text, _>(name)
    .load::<SchemaName>(&mut admin_connection())
    .unwrap()
    .len()
        == 1
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
        DbConnection::Pg(c) => diesel::sql_query(
            "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS declared_type, \
             (CASE WHEN a.attnotnull THEN 0 ELSE 1 END)::bigint AS nullable \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = $1 \
             AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
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
        DbConnection::Pg(c) => diesel::sql_query(
            "SELECT (CASE WHEN ix.indisunique THEN 0 ELSE 1 END)::bigint AS non_unique, \
             a.attname::text AS column_name \
             FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid \
             JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
             CROSS JOIN LATERAL unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE n.nspname = current_schema() AND t.relname = $1 AND i.relname = $2 ORDER BY k.ord",
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
        DbConnection::Pg(c) => diesel::sql_query(
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             AND table_name <> '__diesel_schema_migrations' ORDER BY table_name COLLATE \"C\"",
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
        DbConnection::Pg(c) => pg_schema_lines(c, "<> '__diesel_schema_migrations'"),
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

/// Instantiates test functions once per backend, as `<module>::mysql::<name>`,
/// `<module>::postgres::<name>` and `<module>::sqlite::<name>`. Each named function is an ordinary `fn name(db: &TestDb)` in the
/// invoking module; the generated tests call it with a fresh, migrated [`TestDb`] of their backend.
/// A test function left out of the list is dead code, which `-D warnings` rejects.
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
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::harness::TestDb::new($crate::harness::Kind::Postgres));
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

backend_tests!(a_copied_test_database_matches_a_freshly_migrated_one);

/// [`TestDb::new`] copies a template: the copy has the schema, the Diesel bookkeeping table and the
/// applied migrations of a database migrated from scratch.
fn a_copied_test_database_matches_a_freshly_migrated_one(db: &TestDb) {
    let fresh_db = TestDb::freshly_migrated(db.kind());
    let (copy, fresh) = (&mut db.conn(), &mut fresh_db.conn());
    let snapshot = schema_snapshot(copy);
    assert!(
        snapshot.len() >= 4,
        "the tables and indexes are copied: {snapshot:?}"
    );
    assert_eq!(snapshot, schema_snapshot(fresh));
    assert_eq!(migrations_table_ddl(copy), migrations_table_ddl(fresh));
    let versions = applied_versions(copy);
    assert!(!versions.is_empty(), "the applied migrations are copied");
    assert_eq!(versions, applied_versions(fresh));
    assert_eq!(db::pending_migrations(copy).unwrap(), Vec::<String>::new());
    if db.kind() == Kind::Mysql {
        assert_eq!(text_collations(copy), text_collations(fresh));
    }
}

/// PostgreSQL: one line per column (type, nullability, default, generation, collation), index and
/// constraint of the current schema's tables whose name satisfies `table_filter` (an SQL
/// condition's tail, written here), sorted.
fn pg_schema_lines(c: &mut applyops::db::PgConn, table_filter: &str) -> Vec<String> {
    diesel::sql_query(format!(
        "SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
         || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
         || CASE a.attidentity WHEN 'd' THEN ' IDENTITY BY DEFAULT' WHEN 'a' THEN ' IDENTITY' ELSE '' END \
         || CASE a.attgenerated WHEN 's' THEN ' GENERATED ' ELSE '' END \
         || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') \
         || COALESCE(' COLLATE ' || co.collname, '') AS name \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0 \
           AND co.collname <> 'default' \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 \
           AND NOT a.attisdropped AND c.relname {table_filter} \
         UNION ALL SELECT indexdef FROM pg_indexes \
         WHERE schemaname = current_schema() AND tablename {table_filter} \
         UNION ALL SELECT t.relname || ' CONSTRAINT ' || k.conname || ' ' || pg_get_constraintdef(k.oid) \
         FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname {table_filter} \
         ORDER BY 1"
    ))
    .load::<SchemaName>(c)
    .expect("read the schema from pg_catalog")
    .into_iter()
    .map(|line| line.name)
    .collect()
}

/// The DDL of Diesel's `__diesel_schema_migrations`, which [`schema_snapshot`] leaves out.
fn migrations_table_ddl(conn: &mut DbConnection) -> String {
    match conn {
        DbConnection::Pg(c) => pg_schema_lines(c, "= '__diesel_schema_migrations'").join("\n"),
        DbConnection::Mysql(c) => {
            diesel::sql_query("SHOW CREATE TABLE `__diesel_schema_migrations`")
                .get_result::<CreateTable>(c)
                .expect("show create table")
                .create_table
        }
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT name, sql FROM sqlite_master WHERE tbl_name = '__diesel_schema_migrations' \
             ORDER BY type, name",
        )
        .load::<SqliteObject>(c)
        .expect("read sqlite_master")
        .into_iter()
        .map(|o| format!("{}: {}", o.name, o.sql.unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n"),
    }
}

/// The versions recorded in `__diesel_schema_migrations`, oldest first.
fn applied_versions(conn: &mut DbConnection) -> Vec<String> {
    let query = diesel::sql_query(
        "SELECT version AS name FROM __diesel_schema_migrations ORDER BY version",
    );
    match conn {
        DbConnection::Mysql(c) => query.load::<SchemaName>(c),
        DbConnection::Pg(c) => query.load::<SchemaName>(c),
        DbConnection::Sqlite(c) => query.load::<SchemaName>(c),
    }
    .expect("read the applied migrations")
    .into_iter()
    .map(|v| v.name)
    .collect()
}
