//! What the benchmarks share.

/// The MySQL server the benchmarks use: `TEST_DATABASE_URL` with any database path dropped, else
/// `mysql://root@127.0.0.1:3306` (the test suite's default).
pub fn mysql_server() -> String {
    std::env::var("TEST_DATABASE_URL")
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", &url));
            format!(
                "{scheme}://{}",
                rest.split(['/', '?']).next().unwrap_or(rest)
            )
        })
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}
