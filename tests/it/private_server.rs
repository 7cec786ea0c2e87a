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
    /// A server whose clock starts at `clock` (libfaketime's `@YYYY-MM-DD hh:mm:ss` form) and runs
    /// on from there.
    pub fn with_clock(clock: &str) -> PrivateServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let install = Command::new(need("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
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
                .env("LD_PRELOAD", libfaketime())
                .env("FAKETIME", clock)
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

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // SIGKILL: nothing of it is kept (the datadir goes with the temp dir).
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
