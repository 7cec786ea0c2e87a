//! SQLite on a full filesystem: a write that cannot be stored is an error its caller sees, saying
//! the disk is full, never "nothing to claim" (workers that were told so exited 0, "drained", with
//! claimable work left). A small tmpfs of its own is filled up for the test (it needs root to
//! mount one, as `make test` runs; without root it says so and checks nothing else).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use applyops::models::{NewRollout, NewRolloutOperation};
use applyops::store::claims::ClaimOptions;
use applyops::{PoolConfig, Store, StoreError};

/// A tmpfs mounted on a temporary directory, unmounted (and the directory removed) on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root).
    fn mount(size: &str) -> Option<SmallDisk> {
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs as root");
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem: writes a filler file until no byte is left.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..1]).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn rollout(n: usize) -> NewRollout {
    (0..4).fold(
        NewRollout::new(
            format!("full-{n}"),
            format!("db{n}"),
            "production",
            "tester",
        ),
        |r, d| {
            r.operation(
                NewRolloutOperation::new(format!("d{d}"))
                    .with_cutover_policy(applyops::state::CutoverPolicy::Parallel)
                    .task("t", "ALTER TABLE t ADD c INT"),
            )
        },
    )
}

/// A small disk holding a migrated database with 20 rollouts of 4 operations (80 to claim), and
/// the database's URL and store; `None` without root.
fn seeded_disk() -> Option<(SmallDisk, String, Store)> {
    let Some(disk) = SmallDisk::mount("3m") else {
        eprintln!("skipped: mounting a tmpfs needs root (make test runs as root)");
        return None;
    };
    let url = format!("sqlite://{}", disk.path().join("full.db").display());
    let store = Store::open(&url, PoolConfig::default()).unwrap();
    store.run_migrations().unwrap();
    for n in 0..20 {
        store.create_rollout(&rollout(n)).unwrap();
    }
    Some((disk, url, store))
}

/// Claims on a full disk until one fails: it must fail with `DiskFull`, and no claim may say
/// "nothing claimable" while work is left.
#[test]
fn sqlite_a_claim_on_a_full_disk_is_an_error_saying_so_never_nothing_to_claim() {
    let Some((disk, _, store)) = seeded_disk() else {
        return;
    };
    let filler = disk.fill();
    let options = ClaimOptions::new("w", Duration::from_secs(60));
    let mut claimed = 0;
    let failure = loop {
        match store.claim_next(&options) {
            Ok(Some(_)) => claimed += 1,
            Ok(None) => panic!(
                "a claim said nothing is claimable on a full disk, after {claimed} claims, with \
                 80 operations to take"
            ),
            Err(err) => break err,
        }
        assert!(claimed < 80, "every claim succeeded on a full disk");
    };
    assert!(
        matches!(failure, StoreError::DiskFull { .. }),
        "expected DiskFull, got {failure:?}"
    );
    let said = failure.to_string();
    assert!(said.contains("disk holding the database is full"), "{said}");
    // Room again: the claims go on where they stopped, and nothing was half taken.
    std::fs::remove_file(filler).unwrap();
    let next = store.claim_next(&options).unwrap();
    assert!(next.is_some(), "work is left once the disk has room");
}

/// The example worker on a full disk (`--exit-when-idle`) never reports "drained": it logs that the
/// disk is full and keeps trying (the disk may get room) until it is stopped.
#[test]
fn sqlite_the_example_worker_on_a_full_disk_says_so_and_never_reports_drained() {
    let Some((disk, url, store)) = seeded_disk() else {
        return;
    };
    drop(store);
    let mut worker = Command::new(crate::example_worker::worker_binary())
        .args(["--database-url", &url, "--workers", "2", "--exit-when-idle"])
        .args(["--step-ms", "100"])
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the example worker");
    // The disk fills while it works.
    std::thread::sleep(Duration::from_millis(1_500));
    disk.fill();
    std::thread::sleep(Duration::from_secs(4));
    let still_running = worker.try_wait().unwrap().is_none();
    let _ = Command::new("kill")
        .args(["-INT", &worker.id().to_string()])
        .status();
    let output = worker.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(still_running, "it did not stop on a full disk:\n{text}");
    assert!(text.contains("disk holding the database is full"), "{text}");
    assert!(!text.contains("drained"), "{text}");
}
