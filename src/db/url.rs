use super::Backend;
use crate::error::{StoreError, StoreResult};

/// What to use instead of a URL this build cannot open, naming only the backends it has.
#[cfg(all(feature = "mysql", feature = "sqlite"))]
macro_rules! use_instead {
    () => {
        "use mysql://… or a SQLite path"
    };
}
#[cfg(all(feature = "mysql", not(feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        "use mysql://… (this build has no SQLite support)"
    };
}
#[cfg(all(feature = "sqlite", not(feature = "mysql")))]
macro_rules! use_instead {
    () => {
        "use a SQLite path (this build has no MySQL support)"
    };
}
// Without a backend `db/mod.rs` stops the build; this only keeps the error list short.
#[cfg(not(any(feature = "mysql", feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        ""
    };
}

/// A database URL, sorted by backend before any connection is attempted.
///
/// Both variants exist in every build, but [`parse`](DatabaseUrl::parse) only returns the ones whose
/// backend this build was compiled with.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `mysql://…`, passed to the MySQL client library as is.
    Mysql(String),
    /// The SQLite database to open: a path, `:memory:` or a `file:` URI.
    Sqlite(String),
}

impl DatabaseUrl {
    /// Sorts `url` by backend.
    ///
    /// - `mysql://…` is MySQL/MariaDB.
    /// - `sqlite://path` is the SQLite file `path` (`sqlite:///abs/path` for an absolute path,
    ///   `sqlite://:memory:` for an in-memory database); `file:…` URIs, `:memory:` and anything without
    ///   a `scheme://` are SQLite paths as given.
    /// - `postgres://` and `postgresql://` are recognised but not supported yet; any other scheme is
    ///   rejected rather than taken for a file name.
    /// - A URL for a backend this build was compiled without (its Cargo feature, `mysql` or `sqlite`,
    ///   was off) is rejected too, never opened with the other backend.
    ///
    /// Errors: [`StoreError::UnsupportedDatabaseUrl`], showing the URL without its password.
    pub fn parse(url: &str) -> StoreResult<DatabaseUrl> {
        let parsed = DatabaseUrl::sort(url)?;
        let backend = parsed.backend();
        if !backend.is_compiled_in() {
            return Err(DatabaseUrl::not_compiled_in(url, backend));
        }
        Ok(parsed)
    }

    /// The error for `url`, whose backend this build lacks.
    pub(super) fn not_compiled_in(url: &str, backend: Backend) -> StoreError {
        StoreError::UnsupportedDatabaseUrl {
            url: redact_url(url),
            reason: match backend {
                Backend::Mysql => {
                    "this build of applyops lacks the `mysql` feature (MySQL/MariaDB support); \
                     rebuild with it enabled, or use a SQLite path"
                }
                Backend::Sqlite => {
                    "this build of applyops lacks the `sqlite` feature (SQLite support); rebuild \
                     with it enabled, or use mysql://…"
                }
            },
        }
    }

    /// Sorts `url` by backend, whichever backends this build has.
    fn sort(url: &str) -> StoreResult<DatabaseUrl> {
        let unsupported = |reason| StoreError::UnsupportedDatabaseUrl {
            url: redact_url(url),
            reason,
        };
        if url.starts_with("mysql://") {
            return Ok(DatabaseUrl::Mysql(url.to_owned()));
        }
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(unsupported(
                    "a sqlite:// URL needs a path, e.g. sqlite://applyops.db",
                ));
            }
            return Ok(DatabaseUrl::Sqlite(path.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(unsupported(concat!(
                "PostgreSQL is not supported yet; ",
                use_instead!()
            )));
        }
        if url.contains("://") {
            return Err(unsupported(concat!("unknown scheme; ", use_instead!())));
        }
        if url.is_empty() {
            return Err(unsupported("the URL is empty"));
        }
        Ok(DatabaseUrl::Sqlite(url.to_owned()))
    }

    /// The backend this URL opens.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Mysql(_) => Backend::Mysql,
            DatabaseUrl::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// True for a SQLite database that lives only as long as its connection, in every spelling SQLite
    /// accepts: `:memory:`, the URIs `file::memory:` and `file:…?mode=memory` (with any other query
    /// parameters), and the temporary database of an empty `file:` path.
    pub fn is_sqlite_in_memory(&self) -> bool {
        let DatabaseUrl::Sqlite(path) = self else {
            return false;
        };
        if path == ":memory:" {
            return true;
        }
        let Some(uri) = path.strip_prefix("file:") else {
            return false;
        };
        let uri = uri.split('#').next().unwrap_or_default();
        let (file, query) = uri.split_once('?').unwrap_or((uri, ""));
        file.is_empty()
            || file == ":memory:"
            || query.split('&').any(|parameter| parameter == "mode=memory")
    }
}

/// Debug output never shows a password.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Mysql(url) => f.debug_tuple("Mysql").field(&redact_url(url)).finish(),
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// `url` with any password replaced by `***`, so that it can appear in errors and logs:
/// `mysql://app:s3cret@db:3306/x` → `mysql://app:***@db:3306/x`.
///
/// Written for URLs as people type them, which are not always valid: a password may hold a raw `/`,
/// `?`, `#` or `@` where it should have been percent-encoded. So the userinfo is taken to end at the
/// **last** `@` after `scheme://` (even one in the path or query), and everything from the first `:`
/// after `scheme://` up to that `@` is replaced. That covers every reading of an ambiguous URL: the real
/// password always lies inside the replaced span. The price is that an unusual URL with an `@` in its
/// path or query and a `:` before it loses more than its password (`mysql://h:3306/db?x=a@b` →
/// `mysql://h:***@b`); it never shows a password.
///
/// Unchanged: URLs without a `:` before their last `@` (no password: `mysql://root@db/x`), URLs
/// without an `@`, `sqlite://` URLs and anything that is not `scheme://…` (SQLite paths, `:memory:`,
/// `file:` URIs), which carry no credentials.
///
/// ```
/// use applyops::db::redact_url;
/// assert_eq!(redact_url("mysql://app:hun/ter2@db:3306/x"), "mysql://app:***@db:3306/x");
/// assert_eq!(redact_url("mysql://root@db/x"), "mysql://root@db/x");
/// assert_eq!(redact_url("sqlite:///var/lib/applyops.db"), "sqlite:///var/lib/applyops.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let is_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme || scheme.eq_ignore_ascii_case("sqlite") {
        return url.to_owned();
    }
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Fails, naming the path, when the SQLite database `path` is to live in a directory that does not
/// exist: SQLite would only say "unable to open database file". applyops does not create
/// directories. `:memory:` and `file:` URIs are left to SQLite.
#[cfg(feature = "sqlite")]
pub(super) fn check_sqlite_directory(path: &str) -> StoreResult<()> {
    if path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    match std::path::Path::new(path).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(StoreError::invalid(
            "database_url",
            format!(
                "SQLite database {path:?} cannot be opened: its directory {:?} does not exist \
                 (applyops does not create directories)",
                dir.display().to_string()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_sqlite_path_in_a_missing_directory_is_named() {
        let err = check_sqlite_directory("/nonexistent-applyops-dir/sub/x.db").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("\"/nonexistent-applyops-dir/sub/x.db\""),
            "{message}"
        );
        assert!(
            message.contains("\"/nonexistent-applyops-dir/sub\" does not exist"),
            "{message}"
        );
        for fine in [
            "x.db",
            ":memory:",
            "file:/nonexistent-applyops-dir/x.db?mode=memory",
            "/tmp/x.db",
        ] {
            assert!(check_sqlite_directory(fine).is_ok(), "{fine}");
        }
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_urls_are_mysql() {
        let url = DatabaseUrl::parse("mysql://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(
            url,
            DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306/test".into())
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_urls_paths_and_memory_are_sqlite() {
        let cases = [
            ("sqlite://applyops.db", "applyops.db"),
            ("sqlite:///var/lib/applyops.db", "/var/lib/applyops.db"),
            ("sqlite://:memory:", ":memory:"),
            (":memory:", ":memory:"),
            ("/tmp/x.db", "/tmp/x.db"),
            ("file:x.db?mode=rwc", "file:x.db?mode=rwc"),
        ];
        for (input, path) in cases {
            assert_eq!(
                DatabaseUrl::parse(input).unwrap(),
                DatabaseUrl::Sqlite(path.into()),
                "{input}"
            );
        }
        assert!(DatabaseUrl::parse(":memory:")
            .unwrap()
            .is_sqlite_in_memory());
        assert!(!DatabaseUrl::parse("x.db").unwrap().is_sqlite_in_memory());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn every_in_memory_spelling_is_recognised() {
        for memory in [
            ":memory:",
            "sqlite://:memory:",
            "file::memory:",
            "file::memory:?cache=shared",
            "file:x.db?mode=memory",
            "file:x.db?cache=shared&mode=memory",
            "file:",
            "file:?cache=shared",
        ] {
            assert!(
                DatabaseUrl::parse(memory).unwrap().is_sqlite_in_memory(),
                "{memory}"
            );
        }
        for file in [
            "x.db",
            "file:x.db",
            "file:x.db?mode=rwc",
            "file:mode=memory.db",
            "memory.db",
            "./:memory:",
        ] {
            assert!(
                !DatabaseUrl::parse(file).unwrap().is_sqlite_in_memory(),
                "{file}"
            );
        }
        assert!(!DatabaseUrl::Mysql("mysql://h/x".into()).is_sqlite_in_memory());
    }

    #[test]
    fn other_schemes_are_rejected_not_taken_for_file_names() {
        for input in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "redis://h",
            "sqlite://",
            "",
        ] {
            let err = DatabaseUrl::parse(input).unwrap_err();
            assert!(
                matches!(err, StoreError::UnsupportedDatabaseUrl { .. }),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let err = DatabaseUrl::parse("postgres://app:hunter2@db:5432/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("app:***@db:5432"), "{err}");
        let url = DatabaseUrl::Mysql("mysql://app:hunter2@db/x".into());
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(redact_url("mysql://root@h/x"), "mysql://root@h/x");
    }

    #[test]
    fn a_password_with_a_slash_is_not_shown() {
        let err = DatabaseUrl::parse("postgres://app:hun/ter2@db/x").unwrap_err();
        assert!(!err.to_string().contains("ter2"), "{err}");
        assert!(err.to_string().contains("app:***@db/x"), "{err}");
        let url = DatabaseUrl::Mysql("mysql://app:hun/ter2@db/x".into());
        assert!(!format!("{url:?}").contains("ter2"), "{url:?}");
    }

    #[test]
    fn redact_url_hides_every_reading_of_the_password() {
        let cases = [
            // Ordinary URLs.
            ("mysql://app:hunter2@db:3306/x", "mysql://app:***@db:3306/x"),
            ("mysql://app:hunter2@db", "mysql://app:***@db"),
            ("mysql://app:@db/x", "mysql://app:***@db/x"),
            (
                "mysql://app:p%2Fw%40d@db/x?ssl-mode=required",
                "mysql://app:***@db/x?ssl-mode=required",
            ),
            // Raw '/', '?', '#', '@' and ':' in the password.
            ("postgres://app:hun/ter2@db/x", "postgres://app:***@db/x"),
            ("mysql://u:p/w@h:1/db", "mysql://u:***@h:1/db"),
            ("mysql://u:p?w@h/db", "mysql://u:***@h/db"),
            ("mysql://u:p#w@h/db", "mysql://u:***@h/db"),
            ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),
            ("mysql://u:a:b@h/db", "mysql://u:***@h/db"),
            ("mysql://u:/@h/db", "mysql://u:***@h/db"),
            // An '@' in the path or query: more than the password goes, never less.
            ("mysql://u:pw@h/d@b", "mysql://u:***@b"),
            ("mysql://h:3306/db?x=a@b", "mysql://h:***@b"),
            // No password.
            (
                "mysql://root@127.0.0.1:3306/x",
                "mysql://root@127.0.0.1:3306/x",
            ),
            ("mysql://root@h/db?x=a@b", "mysql://root@h/db?x=a@b"),
            // No userinfo.
            ("mysql://127.0.0.1:3306/x", "mysql://127.0.0.1:3306/x"),
            ("mysql://h/db?sock=/run/a:b", "mysql://h/db?sock=/run/a:b"),
            // SQLite and other non-URLs.
            ("sqlite:///tmp/a:b@c.db", "sqlite:///tmp/a:b@c.db"),
            ("sqlite://rel/a:b@c.db", "sqlite://rel/a:b@c.db"),
            ("/tmp/a:b@c.db", "/tmp/a:b@c.db"),
            ("./x://u:p@h", "./x://u:p@h"),
            ("file:a:b@c.db?mode=ro", "file:a:b@c.db?mode=ro"),
            (":memory:", ":memory:"),
            ("", ""),
        ];
        for (input, redacted) in cases {
            assert_eq!(redact_url(input), redacted, "{input}");
        }
    }
}
