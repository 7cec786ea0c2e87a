//! A MariaDB server of a test's own, for what the shared server cannot show: a server clock set to
//! another date (through libfaketime). A temporary datadir, a free loopback port below the kernel's
//! ephemeral range (32768–60999, where any outgoing connection may take a port between a check and
//! the server's bind), stopped and removed when the guard drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// A running private server.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

/// Where the Debian package `faketime` puts the preload library (installed by `make deps`).
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"))
        .find(|path| path.exists());
    found.expect("libfaketime is not installed: run `make deps` (Debian package faketime)")
}

/// A port on 127.0.0.1 below the ephemeral range that nothing is bound to now.
fn free_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn need(path: &str) -> &str {
    assert!(
        Path::new(path).exists() || which(path),
        "{path} is missing: the private-server tests need MariaDB's server binaries \
         (Debian: apt-get install mariadb-server)"
    );
    path
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl PrivateServer {
    /// A server with the machine's clock.
    pub fn start() -> PrivateServer {
        PrivateServer::with_env(&[])
    }

    /// A server whose clock starts at `clock` (libfaketime's `@YYYY-MM-DD hh:mm:ss` form) and runs
    /// on from there.
    pub fn with_clock(clock: &str) -> PrivateServer {
        let faketime = libfaketime();
        PrivateServer::with_env(&[
            ("LD_PRELOAD", faketime.to_str().expect("a UTF-8 path")),
            ("FAKETIME", clock),
        ])
    }

    fn with_env(env: &[(&str, &str)]) -> PrivateServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        // A temp directory of its own: bootstraps running side by side in the shared /tmp were
        // seen to trip over each other's temporary tables ("Could not remove temporary table
        // '/tmp/#sql-temptable-…'", then "Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let install = Command::new(need("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .env("TMPDIR", &tmp)
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            install.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut child = Command::new(need("/usr/sbin/mariadbd"))
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .arg(format!(
                    "--log-error={}",
                    dir.path().join("error.log").display()
                ))
                .arg(format!("--port={port}"))
                .args([
                    "--user=root",
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=16M",
                    "--performance-schema=OFF",
                ])
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start mariadbd");
            let url = format!("mysql://root@127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if MysqlConnection::establish(&url).is_ok() {
                    return PrivateServer { dir, child, port };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!(
                        "mariadbd exited ({status}): {}",
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = "mariadbd did not answer within 60 s".to_owned();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("could not start a private MariaDB server: {last_error}");
    }

    /// Freezes the server (`SIGSTOP`): its TCP stack still accepts connections and acknowledges
    /// data, but nothing answers. [`PrivateServer::thaw`] (or the guard's drop) ends it.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Lets a frozen server run again (`SIGCONT`).
    pub fn thaw(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// A new, empty database on the server, and its URL.
    pub fn database(&self, name: &str) -> String {
        let server = format!("mysql://root@127.0.0.1:{}", self.port);
        MysqlConnection::establish(&server)
            .expect("connect to the private server")
            .batch_execute(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
            .expect("create a database");
        format!("{server}/{name}")
    }
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {signal} {pid}");
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen (stopped) server too.
        // SIGKILL: nothing of it is kept (the datadir goes with the temp dir).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// What a frozen server does to callers: with timeouts set, connecting and waiting for an answer end
/// with `StoreError::Timeout` naming what timed out, instead of blocking for ever.
mod frozen {
    use std::time::{Duration, Instant};

    use applyops::db::{self, ConnectOptions};
    use applyops::{PoolConfig, Store, StoreError, TimedOut};

    use super::PrivateServer;

    /// A short read timeout; the default connect timeout (10 s), so that connecting to a live
    /// server on a loaded machine never times out.
    fn quick_reads() -> ConnectOptions {
        ConnectOptions {
            read_timeout: Some(Duration::from_millis(800)),
            ..ConnectOptions::default()
        }
    }

    /// A short connect timeout, for the frozen server.
    fn quick_connect() -> ConnectOptions {
        ConnectOptions {
            connect_timeout: Some(Duration::from_millis(800)),
            ..ConnectOptions::default()
        }
    }

    #[test]
    fn mysql_a_statement_on_a_frozen_server_times_out_and_says_so() {
        let server = PrivateServer::start();
        let url = server.database("frozen");
        let conn = &mut db::establish_with(&url, &quick_reads()).unwrap();
        db::run_migrations(conn).unwrap();
        server.freeze();
        let started = Instant::now();
        let read = applyops::store::applies::get(conn, applyops::ApplyId(1));
        let waited = started.elapsed();
        server.thaw();
        match read {
            Err(StoreError::Timeout {
                operation: TimedOut::Read,
                after,
            }) => assert_eq!(after, Duration::from_millis(800)),
            other => panic!("expected a read timeout, got {other:?}"),
        }
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
        let said = applyops::store::applies::get(conn, applyops::ApplyId(1))
            .unwrap_err()
            .to_string();
        assert!(
            !said.is_empty(),
            "the timed-out connection is closed for good"
        );
        // A new connection to the thawed server works.
        let fresh = &mut db::establish_with(&url, &quick_reads()).unwrap();
        assert_eq!(
            applyops::store::applies::get(fresh, applyops::ApplyId(1)).unwrap(),
            None
        );
    }

    #[test]
    fn mysql_connecting_to_a_frozen_server_times_out_and_says_so() {
        let server = PrivateServer::start();
        let url = server.database("frozen");
        server.freeze();
        let started = Instant::now();
        let opened = db::establish_with(&url, &quick_connect());
        let waited = started.elapsed();
        match opened {
            Err(StoreError::Timeout {
                operation: TimedOut::Connect,
                ..
            }) => {}
            Err(other) => panic!("expected a connect timeout, got {other:?}"),
            Ok(_) => panic!("connected to a frozen server"),
        }
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
        // Through a pool, the checkout says what timed out too.
        let pooled = Store::open(
            &url,
            PoolConfig {
                connect_timeout: Some(Duration::from_millis(500)),
                connection_timeout: Duration::from_secs(2),
                min_idle: Some(0),
                ..PoolConfig::default()
            },
        )
        .and_then(|store| store.applies().get(applyops::ApplyId(1)));
        server.thaw();
        let said = pooled.unwrap_err().to_string();
        assert!(said.contains("timed out"), "{said}");
    }

    /// `applyops status` against a frozen server ends with the timeout's error instead of blocking
    /// until killed.
    #[test]
    fn mysql_the_cli_on_a_frozen_server_exits_saying_what_timed_out() {
        let server = PrivateServer::start();
        let url = server.database("frozen");
        {
            let conn = &mut db::establish(&url).unwrap();
            db::run_migrations(conn).unwrap();
        }
        server.freeze();
        let started = Instant::now();
        let output = assert_cmd::Command::cargo_bin("applyops")
            .unwrap()
            .env_remove("DATABASE_URL")
            .env_remove("APPLYOPS_DATABASE_URL")
            .args(["--database-url", &url, "status", "1"])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let waited = started.elapsed();
        server.thaw();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("timed out"), "{stderr}");
        assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    }
}
