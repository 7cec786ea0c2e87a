//! The database a command works on: its URL, where that came from, and how it is opened. Only
//! `migrate` creates a database: every other command refuses a SQLite file that does not exist
//! (opening it would create it) and a MySQL URL that names no database, saying which URL it tried
//! and where it came from. Every URL shown is redacted ([`db::redact_url`]).

use std::fmt;

use applyops::db::{self, DatabaseUrl, DbConnection};
use applyops::{PoolConfig, Store, StoreError};

use super::Failure;

/// Where the database URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url`.
    Flag,
    /// `DATABASE_URL`.
    Environment,
    /// Neither: the default, `sqlite://applyops.db`.
    Default,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlSource::Flag => "from --database-url",
            UrlSource::Environment => "from DATABASE_URL",
            UrlSource::Default => "the default: neither --database-url nor DATABASE_URL is set",
        })
    }
}

/// A database URL and where it came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    url: String,
    source: UrlSource,
}

/// Never the password: the URL is redacted.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &db::redact_url(&self.url))
            .field("source", &self.source)
            .finish()
    }
}

impl Database {
    /// `url`, from `source`.
    pub fn new(url: String, source: UrlSource) -> Database {
        Database { url, source }
    }

    /// The URL as it may be shown: redacted, quoted (so that a space around it shows, and escaped
    /// by `{:?}`), and where it came from.
    pub fn describe(&self) -> String {
        format!("{:?} ({})", db::redact_url(&self.url), self.source)
    }

    /// `err`, with the URL tried and where it came from.
    fn failed(&self, err: StoreError) -> Failure {
        match err {
            // Shows the URL already.
            StoreError::UnsupportedDatabaseUrl { .. } => {
                Failure::Refused(format!("{err} ({})", self.source))
            }
            err => Failure::Refused(format!("{err}; the database URL was {}", self.describe())),
        }
    }

    /// A connection for `migrate`, which may create the database (a SQLite file).
    pub fn connect_creating(&self) -> Result<DbConnection, Failure> {
        db::establish(&self.url).map_err(|err| self.failed(err))
    }

    /// A connection to a database that exists, has every migration, and was not created by opening
    /// it: a SQLite file that does not exist and a MySQL URL without a database are refused first.
    pub fn connect_existing(&self) -> Result<DbConnection, Failure> {
        self.check_exists()?;
        let mut conn = db::establish(&self.url).map_err(|err| self.failed(err))?;
        db::ensure_migrated(&mut conn).map_err(|err| self.failed(err))?;
        Ok(conn)
    }

    /// A store on the existing database (see [`Database::connect_existing`]). Two connections:
    /// `watch` reads while nothing else runs.
    pub fn store(&self) -> Result<Store, Failure> {
        // One connection first: a wrong URL or an unreachable server fails at once with the
        // connection's own error, not after the pool's wait for a connection.
        drop(self.connect_existing()?);
        let config = PoolConfig {
            max_size: 2,
            min_idle: Some(1),
            ..PoolConfig::default()
        };
        Store::open(&self.url, config).map_err(|err| self.failed(err))
    }

    /// Refuses, before anything is opened, what opening would create or what holds no applyops
    /// tables: a SQLite file that does not exist, a MySQL URL without a database.
    pub fn check_exists(&self) -> Result<(), Failure> {
        let parsed = DatabaseUrl::parse(&self.url).map_err(|err| self.failed(err))?;
        if !parsed.names_database() {
            return Err(Failure::Refused(format!(
                "the database URL {} names no database: add one, as in \
                 mysql://user@host:3306/applyops",
                self.describe()
            )));
        }
        let DatabaseUrl::Sqlite(path) = &parsed else {
            return Ok(());
        };
        // `:memory:` and `file:` URIs are SQLite's to open as they say (`file:x.db?mode=rw` never
        // creates); a plain path is checked, so that opening it cannot create it.
        if parsed.is_sqlite_in_memory() || path.starts_with("file:") {
            return Ok(());
        }
        if std::path::Path::new(path).exists() {
            return Ok(());
        }
        Err(Failure::Refused(format!(
            "no database at {}: the SQLite file {:?} does not exist, and only `applyops migrate` \
             creates a database",
            self.describe(),
            path
        )))
    }
}
