use super::Backend;
use crate::error::{StoreError, StoreResult};

/// What to use instead of a URL this build cannot open, naming only the backends it has.
#[cfg(all(feature = "mysql", feature = "postgres", feature = "sqlite"))]
macro_rules! use_instead {
    () => {
        "use mysql://…, postgres://… or a SQLite path"
    };
}
#[cfg(all(feature = "mysql", feature = "postgres", not(feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        "use mysql://… or postgres://… (this build has no SQLite support)"
    };
}
#[cfg(all(feature = "mysql", not(feature = "postgres"), feature = "sqlite"))]
macro_rules! use_instead {
    () => {
        "use mysql://… or a SQLite path (this build has no PostgreSQL support)"
    };
}
#[cfg(all(not(feature = "mysql"), feature = "postgres", feature = "sqlite"))]
macro_rules! use_instead {
    () => {
        "use postgres://… or a SQLite path (this build has no MySQL support)"
    };
}
#[cfg(all(feature = "mysql", not(feature = "postgres"), not(feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        "use mysql://… (this build has only MySQL support)"
    };
}
#[cfg(all(not(feature = "mysql"), feature = "postgres", not(feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        "use postgres://… (this build has only PostgreSQL support)"
    };
}
#[cfg(all(not(feature = "mysql"), not(feature = "postgres"), feature = "sqlite"))]
macro_rules! use_instead {
    () => {
        "use a SQLite path (this build has only SQLite support)"
    };
}
// Without a backend `db/mod.rs` stops the build; this only keeps the error list short.
#[cfg(not(any(feature = "mysql", feature = "postgres", feature = "sqlite")))]
macro_rules! use_instead {
    () => {
        ""
    };
}

/// A database URL, sorted by backend before any connection is attempted.
///
/// Every variant exists in every build, but [`parse`](DatabaseUrl::parse) only returns the ones whose
/// backend this build was compiled with.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `mysql://…`, passed to the MySQL client library as is.
    Mysql(String),
    /// `postgres://…` or `postgresql://…`, passed to libpq as is (so several hosts and libpq's
    /// parameters, `target_session_attrs=read-write` among them, work as libpq documents them).
    Postgres(String),
    /// The SQLite database to open: a path, `:memory:` or a `file:` URI.
    Sqlite(String),
}

impl DatabaseUrl {
    /// Sorts `url` by backend.
    ///
    /// - `mysql://…` is MySQL/MariaDB; `postgres://…` and `postgresql://…` are PostgreSQL.
    /// - `sqlite://path` is the SQLite file `path` (`sqlite:///abs/path` for an absolute path,
    ///   `sqlite://:memory:` for an in-memory database); `file:…` URIs, `:memory:` and anything else
    ///   that does not start with a scheme are SQLite paths as given.
    /// - A string that starts like a URL is never taken for a file name: any other `scheme://`, a scheme
    ///   followed by `:` without `//` (`mysql:u:pw@h`, `mysql:/h/db`; a scheme has two characters or
    ///   more, so `C:\x.db` is a path), and a backend's name followed by `//` (`mysql//h/db`) are
    ///   rejected. A file whose name starts that way is written `./mysql:x.db` or
    ///   `sqlite://mysql:x.db`.
    /// - Leading or trailing whitespace and control characters are rejected, never trimmed: a
    ///   password or a file name may end in a space.
    /// - A URL for a backend this build was compiled without (its Cargo feature, `mysql`, `postgres`
    ///   or `sqlite`, was off) is rejected too, never opened with the other backend.
    ///
    /// Errors: [`StoreError::UnsupportedDatabaseUrl`], showing the URL as [`redact_url`] does
    /// (without its password).
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
                Backend::Mysql => concat!(
                    "this build of applyops lacks the `mysql` feature (MySQL/MariaDB support); \
                     rebuild with it enabled, or ",
                    use_instead!()
                ),
                Backend::Postgres => concat!(
                    "this build of applyops lacks the `postgres` feature (PostgreSQL support); \
                     rebuild with it enabled, or ",
                    use_instead!()
                ),
                Backend::Sqlite => concat!(
                    "this build of applyops lacks the `sqlite` feature (SQLite support); rebuild \
                     with it enabled, or ",
                    use_instead!()
                ),
            },
        }
    }

    /// Sorts `url` by backend, whichever backends this build has.
    fn sort(url: &str) -> StoreResult<DatabaseUrl> {
        classify(url).map_err(|reason| StoreError::UnsupportedDatabaseUrl {
            url: redact_url(url),
            reason,
        })
    }

    /// False for a MySQL URL without a database (`mysql://user@host:3306`, `mysql://host/`): the
    /// server can be reached, but there are no applyops tables to read or migrate. True for every
    /// SQLite database and every PostgreSQL URL (libpq then connects to the user's own database, or
    /// the one a `dbname` parameter names).
    ///
    /// ```
    /// use applyops::db::DatabaseUrl;
    /// assert!(!DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306".into()).names_database());
    /// assert!(!DatabaseUrl::Mysql("mysql://root@db/?ssl-mode=required".into()).names_database());
    /// assert!(DatabaseUrl::Mysql("mysql://root@db/applyops".into()).names_database());
    /// ```
    pub fn names_database(&self) -> bool {
        let DatabaseUrl::Mysql(url) = self else {
            return true;
        };
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        // The host starts after the userinfo, which ends at the last '@' (see `redact_url`).
        let host_and_path = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
        let path = host_and_path
            .split_once('/')
            .map_or("", |(_, path)| path)
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        !path.is_empty()
    }
    /// The backend this URL opens.
    pub fn backend(&self) -> Backend {
        match self {
            DatabaseUrl::Mysql(_) => Backend::Mysql,
            DatabaseUrl::Postgres(_) => Backend::Postgres,
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
            DatabaseUrl::Postgres(url) => {
                f.debug_tuple("Postgres").field(&redact_url(url)).finish()
            }
            DatabaseUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

/// The backends' URL schemes, and the other database schemes people type: followed by `//`
/// without the `:` they are a URL missing its colon, never a file name.
const KNOWN_SCHEMES: [&str; 5] = ["mysql", "mariadb", "sqlite", "postgres", "postgresql"];

/// The scheme `text` starts with as a URL does (`scheme:`; RFC 3986: a letter, then letters,
/// digits, `+`, `-` or `.`), when it is at least two characters long: a one-letter "scheme" is a
/// Windows drive (`C:\x.db`).
fn scheme_prefix(text: &str) -> Option<&str> {
    let end = text.find(':')?;
    let scheme = &text[..end];
    let is_scheme = scheme.len() >= 2
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some(scheme)
}

/// Sorts `url` by backend, or says why it is not a database URL applyops takes; nothing is
/// redacted here (the caller does it), so that [`redact_url`] can use it too.
fn classify(url: &str) -> Result<DatabaseUrl, &'static str> {
    if url.is_empty() {
        return Err("the URL is empty");
    }
    if url.trim() != url {
        return Err("it starts or ends with whitespace; remove it (it is never trimmed)");
    }
    if url.chars().any(char::is_control) {
        return Err("it contains a control character");
    }
    if url.starts_with("mysql://") {
        return Ok(DatabaseUrl::Mysql(url.to_owned()));
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("a sqlite:// URL needs a path, e.g. sqlite://applyops.db");
        }
        return Ok(DatabaseUrl::Sqlite(path.to_owned()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(url.to_owned()));
    }
    match scheme_prefix(url) {
        // SQLite's URI filenames.
        Some(scheme) if scheme.eq_ignore_ascii_case("file") => {}
        Some(_) if url.contains("://") => return Err(concat!("unknown scheme; ", use_instead!())),
        Some(_) => {
            return Err(concat!(
                "it starts with a scheme but lacks the `//` after its `:` (mysql://user@host/db), \
                 and is never taken for a file name; ",
                use_instead!(),
                " (a file whose name starts that way: ./NAME or sqlite://NAME)"
            ))
        }
        None => {}
    }
    let starts_like_a_url = KNOWN_SCHEMES.iter().any(|scheme| {
        url.get(..scheme.len() + 2).is_some_and(|head| {
            head[..scheme.len()].eq_ignore_ascii_case(scheme) && head.ends_with("//")
        })
    });
    if starts_like_a_url {
        return Err(concat!(
            "it starts with a scheme and `//` but lacks the `:` between them \
             (mysql://user@host/db), and is never taken for a file name; ",
            use_instead!(),
            " (a file whose name starts that way: ./NAME or sqlite://NAME)"
        ));
    }
    Ok(DatabaseUrl::Sqlite(url.to_owned()))
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
/// Malformed URLs, which [`DatabaseUrl::parse`] rejects, lose their whole userinfo, up to the last
/// `@`: with leading whitespace (` mysql://u:pw@h` → ` mysql://u:***@h`, as above), without `//`
/// (`mysql:u:pw@h` → `mysql:***@h`, `mysql:/u:pw@h/db` → `mysql:/***@h/db`) or without `:`
/// (`mysql//u:pw@h/db` → `mysql//***@h/db`).
///
/// A `password=` query parameter (libpq reads one) is shown as `password=***`.
///
/// Unchanged: what `parse` takes for SQLite (`sqlite://` URLs, paths, `:memory:`, `file:` URIs),
/// which carries no credentials and is shown as the file name it is; URLs without a `:` before their
/// last `@` (no password: `mysql://root@db/x`); anything without an `@`.
///
/// ```
/// use applyops::db::redact_url;
/// assert_eq!(redact_url("mysql://app:hun/ter2@db:3306/x"), "mysql://app:***@db:3306/x");
/// assert_eq!(redact_url("mysql://root@db/x"), "mysql://root@db/x");
/// assert_eq!(redact_url("sqlite:///var/lib/applyops.db"), "sqlite:///var/lib/applyops.db");
/// assert_eq!(redact_url(" mysql://app:s3cret@db/x"), " mysql://app:***@db/x");
/// assert_eq!(redact_url("mysql:app:s3cret@db"), "mysql:***@db");
/// ```
pub fn redact_url(url: &str) -> String {
    if matches!(classify(url), Ok(DatabaseUrl::Sqlite(_))) {
        return url.to_owned();
    }
    redact_password_parameter(&redact_userinfo(url))
}

/// The password of a well-formed `scheme://user:password@host…` URL, read as [`redact_url`] reads it
/// (the userinfo ends at the last `@`), or `None`.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(super) fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let at = rest.rfind('@')?;
    rest[..at].split_once(':').map(|(_, password)| password)
}

/// `url` with the value of a `password=` query parameter (libpq takes one) replaced by `***`.
fn redact_password_parameter(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let parameters: Vec<String> = query
        .split('&')
        .map(|parameter| match parameter.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => parameter.to_owned(),
        })
        .collect();
    format!("{head}?{}", parameters.join("&"))
}

/// [`redact_url`]'s userinfo part.
fn redact_userinfo(url: &str) -> String {
    let body = url.trim_start();
    let lead = &url[..url.len() - body.len()];
    // The scheme, however spelt, then the separator, however malformed (any run of ':' and '/').
    let scheme_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(body.len());
    let (scheme, after_scheme) = body.split_at(scheme_end);
    let separator_end = after_scheme
        .find(|c: char| c != ':' && c != '/')
        .unwrap_or(after_scheme.len());
    let (separator, rest) = after_scheme.split_at(separator_end);
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    let well_formed = separator == "://" && scheme.starts_with(|c: char| c.is_ascii_alphabetic());
    if !well_formed {
        return format!("{lead}{scheme}{separator}***{}", &rest[at..]);
    }
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{lead}{scheme}://{user}:***{}", &rest[at..]),
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

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_urls_are_postgres_as_written() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h:5432/db",
            "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write",
        ] {
            assert_eq!(
                DatabaseUrl::parse(url).unwrap(),
                DatabaseUrl::Postgres(url.into())
            );
            assert!(DatabaseUrl::parse(url).unwrap().names_database());
        }
    }

    #[test]
    fn a_password_parameter_is_not_shown() {
        assert_eq!(
            redact_url("postgresql://app@h1,h2/db?sslmode=require&password=hunter2&x=1"),
            "postgresql://app@h1,h2/db?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            redact_url("postgres://h/db?password=hunter2"),
            "postgres://h/db?password=***"
        );
    }

    #[test]
    fn other_schemes_are_rejected_not_taken_for_file_names() {
        for input in ["redis://h", "mongodb://u@h/db", "sqlite://", ""] {
            let err = DatabaseUrl::parse(input).unwrap_err();
            assert!(
                matches!(err, StoreError::UnsupportedDatabaseUrl { .. }),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        let err = DatabaseUrl::parse("redis://app:hunter2@db:5432/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("app:***@db:5432"), "{err}");
        let url = DatabaseUrl::Mysql("mysql://app:hunter2@db/x".into());
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = DatabaseUrl::Postgres("postgres://app:hunter2@db/x".into());
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(redact_url("mysql://root@h/x"), "mysql://root@h/x");
    }

    #[test]
    fn a_password_with_a_slash_is_not_shown() {
        let err = DatabaseUrl::parse("redis://app:hun/ter2@db/x").unwrap_err();
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

    #[test]
    fn strings_that_start_like_a_url_are_never_file_names() {
        for input in [
            "mysql:u:pw@h",
            "mysql:/u:pw@h/db",
            "mysql:u@h/db",
            "sqlite:x.db",
            "MySQL:u:pw@h",
            "mysql//u:pw@h/db",
            "MYSQL//h/db",
            "mariadb//u:pw@h/db",
            "postgres//h/db",
            "sqlite//x.db",
            "mariadb://u:pw@h/db",
            "MYSQL://u:pw@h/db",
        ] {
            let err = DatabaseUrl::parse(input).unwrap_err();
            assert!(
                matches!(err, StoreError::UnsupportedDatabaseUrl { .. }),
                "{input}: {err}"
            );
            assert!(!err.to_string().contains("pw@"), "{input}: {err}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn paths_without_a_scheme_stay_sqlite_paths() {
        for path in [
            "C:\\x.db",
            "./mysql:x.db",
            "./x://u:p@h",
            "data/mysql/x.db",
            "mysql.db",
            "mysql/x.db",
            "/tmp/a:b@c.db",
            "file:x.db?mode=rw",
            "FILE:x.db",
        ] {
            assert_eq!(
                DatabaseUrl::parse(path).unwrap(),
                DatabaseUrl::Sqlite(path.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn whitespace_around_and_control_characters_in_a_url_are_rejected() {
        for input in [
            " mysql://u:pw@h/db",
            "\tmysql://u:pw@h/db",
            "mysql://u:pw@h/db ",
            "mysql://u:pw@h/db\n",
            " x.db",
            "x.db\t",
            "mysql://u:pw@h/d\u{1b}b",
        ] {
            let err = DatabaseUrl::parse(input).unwrap_err();
            assert!(
                matches!(err, StoreError::UnsupportedDatabaseUrl { .. }),
                "{input:?}: {err}"
            );
            let message = err.to_string();
            assert!(!message.contains("pw@"), "{input:?}: {message}");
            assert!(
                !message.chars().any(char::is_control),
                "{input:?}: {message:?}"
            );
        }
    }

    #[test]
    fn malformed_urls_lose_their_whole_userinfo() {
        let cases = [
            (" mysql://u:pw@h/db", " mysql://u:***@h/db"),
            ("\tmysql://u:pw@h/db", "\tmysql://u:***@h/db"),
            ("mysql://u:pw@h/db ", "mysql://u:***@h/db "),
            ("mysql:u:pw@h", "mysql:***@h"),
            ("mysql:pw@h", "mysql:***@h"),
            ("mysql:/u:pw@h/db", "mysql:/***@h/db"),
            ("mysql//u:pw@h/db", "mysql//***@h/db"),
            ("mysql///u:p/w@h/db", "mysql///***@h/db"),
            ("MYSQL://u:pw@h/db", "MYSQL://u:***@h/db"),
            ("mariadb://u:pw@h/db", "mariadb://u:***@h/db"),
            ("  ", "  "),
            ("mysql:h/db", "mysql:h/db"),
        ];
        for (input, redacted) in cases {
            assert_eq!(redact_url(input), redacted, "{input:?}");
        }
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn a_mysql_url_without_a_path_names_no_database() {
        for none in [
            "mysql://root@127.0.0.1:3306",
            "mysql://root@127.0.0.1:3306/",
            "mysql://u:p/w@h",
            "mysql://u:p/w@h/?ssl-mode=required",
            "mysql://h#x",
        ] {
            assert!(
                !DatabaseUrl::parse(none).unwrap().names_database(),
                "{none}"
            );
        }
        for some in [
            "mysql://root@127.0.0.1:3306/applyops",
            "mysql://u:p/w@h/db",
            "mysql://h/db?ssl-mode=required",
        ] {
            assert!(DatabaseUrl::parse(some).unwrap().names_database(), "{some}");
        }
    }
}
