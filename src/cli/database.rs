//! The database a command works on: its URL, where that came from, and how it is opened. Only
//! `migrate` creates a database: every other command refuses a SQLite file that does not exist
//! (opening it would create it) and a MySQL URL that names no database, saying which URL it tried
//! and where it came from. Every URL shown is redacted ([`db::redact_url`]).

use std::ffi::OsString;
use std::fmt;

use applyops::db::{self, DatabaseUrl, DbConnection};
use applyops::{PoolConfig, Store, StoreError};

use super::Failure;

/// The environment variables a database URL is taken from when `--database-url` is not given, in
/// order: the first set and not empty wins. `APPLYOPS_DATABASE_URL` first, so that a shell whose
/// `DATABASE_URL` is another program's can still name ours.
pub const URL_VARIABLES: [&str; 2] = ["APPLYOPS_DATABASE_URL", "DATABASE_URL"];

/// The URL used when neither `--database-url` nor any of [`URL_VARIABLES`] gives one.
pub const DEFAULT_URL: &str = "sqlite://applyops.db";

/// Where the database URL came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url`.
    Flag,
    /// This environment variable (one of [`URL_VARIABLES`]).
    Environment(&'static str),
    /// None of them: [`DEFAULT_URL`].
    Default,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Flag => f.write_str("from --database-url"),
            UrlSource::Environment(name) => write!(f, "from {name}"),
            UrlSource::Default => f.write_str(
                "the default: neither --database-url, APPLYOPS_DATABASE_URL nor DATABASE_URL is set",
            ),
        }
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

    /// The database this process works on: `--database-url` (`flag`), else the first of
    /// [`URL_VARIABLES`] set and not empty, else [`DEFAULT_URL`]. A variable that is not UTF-8 is a
    /// usage error (its value is never shown).
    pub fn from_environment(flag: Option<String>) -> Result<Database, Failure> {
        Database::from_sources(flag, |name| std::env::var_os(name))
    }

    /// [`Database::from_environment`] with the environment given.
    fn from_sources(
        flag: Option<String>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Database, Failure> {
        if let Some(url) = flag {
            return Ok(Database::new(url, UrlSource::Flag));
        }
        for name in URL_VARIABLES {
            let Some(value) = env(name).filter(|value| !value.is_empty()) else {
                continue;
            };
            let url = value.into_string().map_err(|_| {
                Failure::Usage(format!(
                    "{name} is not valid UTF-8, so it is not a database URL; nothing was done"
                ))
            })?;
            return Ok(Database::new(url, UrlSource::Environment(name)));
        }
        Ok(Database::new(DEFAULT_URL.to_owned(), UrlSource::Default))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn from(flag: Option<&str>, vars: &[(&str, &str)]) -> Database {
        Database::from_sources(flag.map(str::to_owned), |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| OsString::from(value))
        })
        .unwrap()
    }

    #[test]
    fn the_flag_then_applyops_database_url_then_database_url_then_the_default() {
        let both = [
            ("APPLYOPS_DATABASE_URL", "sqlite://ours.db"),
            ("DATABASE_URL", "sqlite://theirs.db"),
        ];
        assert_eq!(
            from(Some("sqlite://flag.db"), &both),
            Database::new("sqlite://flag.db".into(), UrlSource::Flag)
        );
        assert_eq!(
            from(None, &both),
            Database::new(
                "sqlite://ours.db".into(),
                UrlSource::Environment("APPLYOPS_DATABASE_URL")
            )
        );
        assert_eq!(
            from(None, &both[1..]),
            Database::new(
                "sqlite://theirs.db".into(),
                UrlSource::Environment("DATABASE_URL")
            )
        );
        assert_eq!(
            from(None, &[("APPLYOPS_DATABASE_URL", ""), ("DATABASE_URL", "")]),
            Database::new(DEFAULT_URL.into(), UrlSource::Default)
        );
    }

    #[test]
    fn debug_and_describe_never_show_the_password() {
        let db = from(None, &[("DATABASE_URL", "mysql://app:S3cret@db/x")]);
        assert!(!format!("{db:?}").contains("S3cret"), "{db:?}");
        assert!(!db.describe().contains("S3cret"), "{}", db.describe());
        assert!(
            db.describe().contains("from DATABASE_URL"),
            "{}",
            db.describe()
        );
    }
}
