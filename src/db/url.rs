use crate::error::{StoreError, StoreResult};

/// A database URL, sorted by backend before any connection is attempted.
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
    pub fn parse(url: &str) -> StoreResult<DatabaseUrl> {
        let unsupported = |reason| StoreError::UnsupportedDatabaseUrl {
            url: redact_password(url),
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
            return Err(unsupported(
                "PostgreSQL is not supported yet; use mysql:// or a SQLite path",
            ));
        }
        if url.contains("://") {
            return Err(unsupported(
                "unknown scheme; use mysql://… or a SQLite path",
            ));
        }
        if url.is_empty() {
            return Err(unsupported("the URL is empty"));
        }
        Ok(DatabaseUrl::Sqlite(url.to_owned()))
    }

    /// The backend this URL opens.
    pub fn backend(&self) -> super::Backend {
        match self {
            DatabaseUrl::Mysql(_) => super::Backend::Mysql,
            DatabaseUrl::Sqlite(_) => super::Backend::Sqlite,
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
            DatabaseUrl::Mysql(url) => f.debug_tuple("Mysql").field(&redact_password(url)).finish(),
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, so URLs can appear in errors and logs.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
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

    #[test]
    fn mysql_urls_are_mysql() {
        let url = DatabaseUrl::parse("mysql://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(
            url,
            DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306/test".into())
        );
    }

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
        assert!(!DatabaseUrl::parse("mysql://h/x")
            .unwrap()
            .is_sqlite_in_memory());
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
        let url = DatabaseUrl::parse("mysql://app:hunter2@db/x").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(redact_password("mysql://root@h/x"), "mysql://root@h/x");
    }
}
