//! `examples/worker.rs` runs against both backends: it seeds applies, drains them with several
//! threads and exits when idle, leaving every operation completed and no lease behind.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use applyops::schema::apply_operations as ops;
use diesel::prelude::*;

use crate::backend_tests;

/// The example binary, built once per test run with the Cargo that runs the tests (`cargo test` builds
/// examples under hashed names only, so the plain `target/debug/examples/worker` may be missing or
/// stale). Fast when it is up to date.
fn worker_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "--example", "worker"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --example worker");
            assert!(status.success(), "cargo build --example worker failed");
            let deps = std::env::current_exe().unwrap();
            let target = deps.parent().unwrap().parent().unwrap();
            let binary = target.join("examples").join("worker");
            assert!(binary.exists(), "{} was built", binary.display());
            binary
        })
        .clone()
}

/// Runs the example to completion (at most 120 s) and returns its stdout.
fn run_worker(url: &str) -> String {
    let mut child = Command::new(worker_binary())
        .args(["--database-url", url, "--seed", "4", "--workers", "3"])
        .args(["--step-ms", "1", "--exit-when-idle"])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example worker");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("the example worker did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "worker failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

backend_tests! {
    fn the_example_worker_drains_its_seeded_applies(db) {
        run_worker(db.url());
        let conn = &mut db.conn();
        let states: Vec<(String, String)> = ops::table
            .select((ops::state, ops::lease_token))
            .load(conn)
            .unwrap();
        assert_eq!(states.len(), 12, "4 applies x 3 deployments");
        for (state, token) in states {
            assert_eq!(state, "completed");
            assert_eq!(token, "", "no lease left behind");
        }
    }
}
