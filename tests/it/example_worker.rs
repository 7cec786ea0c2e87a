//! The example worker (`worker/src/main.rs`) runs against both backends: it seeds applies, drains them with several
//! threads and exits when idle, leaving every operation completed and no lease behind. It also keeps
//! working when nobody reads its output, waits out a dead worker's lease before calling itself idle,
//! and never shows a database password.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use applyops::models::ApplyOperationId;
use applyops::schema::apply_operations as ops;
use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{self, ClaimOptions};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::rollout;
use crate::harness::TestDb;

/// The example worker (the `applyops-worker` package), built once per test run with the Cargo that
/// runs the tests (`cargo test --test it` alone does not build another package's binary, so
/// `target/debug/applyops-worker` may be missing or stale). Fast when it is up to date.
pub fn worker_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "--quiet", "-p", "applyops-worker"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // Cargo sets these for the test process. Inherited, they differ from what the outer
            // `cargo test` gave build scripts that watch them (`ring`'s watches `CARGO_PKG_NAME`),
            // so every run rebuilt a chain of dependencies here and again in the next `cargo test`.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                let per_crate = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
                    .iter()
                    .any(|prefix| name.starts_with(prefix))
                    || [
                        "CARGO_CRATE_NAME",
                        "CARGO_PRIMARY_PACKAGE",
                        "CARGO_TARGET_TMPDIR",
                        "CARGO_RUSTC_CURRENT_DIR",
                        "OUT_DIR",
                    ]
                    .contains(&name.as_ref());
                if per_crate {
                    build.env_remove(name.as_ref());
                }
            }
            let status = build.status().expect("run cargo build -p applyops-worker");
            assert!(status.success(), "cargo build -p applyops-worker failed");
            let deps = std::env::current_exe().unwrap();
            let target = deps.parent().unwrap().parent().unwrap();
            let binary = target.join("applyops-worker");
            assert!(binary.exists(), "{} was built", binary.display());
            binary
        })
        .clone()
}

/// The worker on `url` with `args`, its stdout and stderr piped, at the default log level.
fn spawn_worker(url: &str, args: &[&str]) -> Child {
    Command::new(worker_binary())
        .args(["--database-url", url])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example worker")
}

/// Waits for `child` to exit, killing it and failing the test after `limit`.
fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            panic!("the example worker did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the worker to completion (at most 120 s); returns its exit status, stdout and stderr.
fn run_worker_with(url: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = spawn_worker(url, args);
    // Read both pipes while it runs, so a chatty worker never blocks on a full pipe.
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).ok();
            text
        })
    };
    let (stdout, stderr) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let status = wait_at_most(&mut child, Duration::from_secs(120));
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Runs the worker to completion, asserts it succeeded and returns its stdout.
fn run_worker_ok(url: &str, args: &[&str]) -> String {
    let (status, stdout, stderr) = run_worker_with(url, args);
    assert!(
        status.success(),
        "worker failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

const DRAIN_SEEDED: [&str; 7] = [
    "--seed",
    "4",
    "--workers",
    "3",
    "--step-ms",
    "1",
    "--exit-when-idle",
];

/// Every operation is `completed` and none carries a lease; returns how many there are.
fn assert_all_completed_and_unleased(db: &crate::harness::TestDb) -> usize {
    let rows: Vec<(ApplyOperationId, ApplyState, String)> = ops::table
        .select((ops::id, ops::state, ops::lease_token))
        .load(&mut db.conn())
        .unwrap();
    for (id, state, token) in &rows {
        assert_eq!(*state, ApplyState::Completed, "operation {id}");
        assert_eq!(token, "", "operation {id}: no lease left behind");
    }
    rows.len()
}

backend_tests!(
    the_example_worker_drains_its_seeded_applies,
    the_example_worker_keeps_working_when_stderr_and_stdout_are_closed,
    exit_when_idle_waits_out_a_dead_workers_lease_and_finishes_its_work,
    a_worker_killed_mid_copy_is_resumed_from_its_checkpoint,
    operators_requests_interleaved_into_an_eight_worker_drain_all_finish,
    a_host_name_with_control_characters_is_escaped_in_lease_owners_and_logs,
    an_operator_reverts_or_skips_operations_in_the_example_workers_revert_window,
    the_example_workers_revert_window_closes_on_its_own_and_the_operation_completes,
    the_example_worker_heartbeats_through_a_revert_window_longer_than_its_lease,
    workers_scoped_to_disjoint_deployments_drain_rollouts_together_each_claiming_only_its_own,
);

/// Three example workers, each claiming only one deployment (`--deployment`), drain three rollouts
/// (rolling, barrier, parallel) of three deployments together: every operation completes, each
/// worker claimed something, and every claim a worker logged was of its own deployment. A scoped
/// worker waits while an earlier sibling outside its scope is still on its way (the rolling and
/// barrier gates hold across scopes), and exits once nothing can reach its scope any more.
fn workers_scoped_to_disjoint_deployments_drain_rollouts_together_each_claiming_only_its_own(
    db: &TestDb,
) {
    worker_binary();
    for policy in [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ] {
        rollout(&mut db.conn(), 3, policy, FailurePolicy::Halt);
    }
    let deployments = ["deployment-0", "deployment-1", "deployment-2"];
    let logs: Vec<(String, String, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = deployments
            .iter()
            .map(|deployment| {
                scope.spawn(move || {
                    let args = [
                        "--workers",
                        "2",
                        "--step-ms",
                        "1",
                        "--exit-when-idle",
                        "--deployment",
                        deployment,
                    ];
                    let (status, stdout, stderr) = run_worker_with(db.url(), &args);
                    assert!(
                        status.success(),
                        "worker for {deployment} failed ({status})\n{stdout}\n{stderr}"
                    );
                    (deployment.to_string(), stdout, stderr)
                })
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });
    assert_eq!(assert_all_completed_and_unleased(db), 9);
    for (deployment, stdout, stderr) in &logs {
        let claims: Vec<&str> = stderr.lines().filter(|l| l.contains(" claimed")).collect();
        assert!(
            !claims.is_empty(),
            "the worker for {deployment} claimed something\n{stdout}\n{stderr}"
        );
        for line in claims {
            assert!(
                line.contains(&format!("deployment={deployment} ")),
                "the worker for {deployment} claimed only its own: {line}"
            );
        }
    }
}

/// A window longer than the lease and a step (the window's request poll) longer than the lease: the
/// holder still renews its lease in time, so the other thread, waiting to recover a lapsed lease,
/// never takes it away, and the operation completes.
fn the_example_worker_heartbeats_through_a_revert_window_longer_than_its_lease(db: &TestDb) {
    let (_, ids) = rollout(
        &mut db.conn(),
        1,
        CutoverPolicy::Rolling,
        FailurePolicy::Halt,
    );
    let (status, stdout, stderr) = run_worker_with(
        db.url(),
        &[
            "--workers",
            "2",
            "--lease-ttl-ms",
            "600",
            "--step-ms",
            "1500",
            "--revert-window",
            "2000",
            "--exit-when-idle",
        ],
    );
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert_eq!(states_of(db, &ids), [ApplyState::Completed]);
    assert!(stdout.contains("lease_lost=0"), "{stdout}\n{stderr}");
    assert!(stderr.contains("to=revert_window"), "{stderr}");
}

/// A worker killed when the test lets go of it (a failed assertion included).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The states of the operations `ids`, in that order.
fn states_of(db: &TestDb, ids: &[ApplyOperationId]) -> Vec<ApplyState> {
    ids.iter()
        .map(|id| {
            ops::table
                .find(*id)
                .select(ops::state)
                .first(&mut db.conn())
                .unwrap()
        })
        .collect()
}

/// `--revert-window`: after its cutover each operation waits in `revert_window`, held by the
/// worker; an operator's `revert` hands one to the revert claim (it ends `reverted`), a
/// `skip-revert` closes the other's window at once (it ends `completed`, long before the window's
/// two minutes), and the worker then finds nothing left and exits.
fn an_operator_reverts_or_skips_operations_in_the_example_workers_revert_window(db: &TestDb) {
    use applyops::models::NewControlRequest;
    use applyops::state::ControlRequestKind as Kind;
    use applyops::store::control_requests;

    worker_binary();
    let (apply_id, ids) = rollout(
        &mut db.conn(),
        2,
        CutoverPolicy::Parallel,
        FailurePolicy::Continue,
    );
    let mut worker = spawn_worker(
        db.url(),
        &[
            "--workers",
            "2",
            "--step-ms",
            "1",
            "--revert-window",
            "120000",
            "--exit-when-idle",
        ],
    );
    // Nobody reads its output here: drain the pipes so the worker never blocks on a full one.
    let mut out = worker.stdout.take().unwrap();
    let mut err = worker.stderr.take().unwrap();
    // A failed assertion must not leave the worker holding a two-minute window.
    let mut worker = KillOnDrop(worker);
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let started = Instant::now();
    let conn = &mut db.conn();
    // The cutovers go in order, and an operation in its window holds the next one back: the first
    // is reverted (a failure its `continue` policy lets the second pass), then the second skipped.
    for (id, kind) in [(ids[0], Kind::Revert), (ids[1], Kind::SkipRevert)] {
        while states_of(db, &[id]) != [ApplyState::RevertWindow] {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "operation {id} reaches revert_window: {:?}",
                states_of(db, &ids)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let new = NewControlRequest::new(apply_id, kind, "operator").for_operation(id);
        control_requests::request(conn, &new).unwrap();
    }
    let status = wait_at_most(&mut worker.0, Duration::from_secs(60));
    assert!(status.success(), "the worker exits cleanly: {status}");
    assert_eq!(
        states_of(db, &ids),
        [ApplyState::Reverted, ApplyState::Completed]
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "the decisions ended the window, not its length"
    );
}

/// `--revert-window` with no operator's decision: the operation passes through `revert_window`
/// (the worker logs the move) and completes when the window ends.
fn the_example_workers_revert_window_closes_on_its_own_and_the_operation_completes(db: &TestDb) {
    let (_, ids) = rollout(
        &mut db.conn(),
        1,
        CutoverPolicy::Rolling,
        FailurePolicy::Halt,
    );
    let (status, stdout, stderr) = run_worker_with(
        db.url(),
        &[
            "--workers",
            "1",
            "--step-ms",
            "1",
            "--revert-window",
            "300",
            "--exit-when-idle",
        ],
    );
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert_eq!(states_of(db, &ids), [ApplyState::Completed]);
    assert!(
        stderr.contains("to=revert_window"),
        "the operation went through its revert window:\n{stderr}"
    );
}

/// The lease owner comes from `$HOSTNAME`, which anyone who runs a worker can set: one holding a
/// terminal escape sequence and a line break is escaped into a printable owner name (the store
/// refuses control characters in names), and nothing the worker prints holds a control character
/// but the line ends.
fn a_host_name_with_control_characters_is_escaped_in_lease_owners_and_logs(db: &TestDb) {
    let output = Command::new(worker_binary())
        .args(["--database-url", db.url()])
        .args(DRAIN_SEEDED)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "debug")
        .env("HOSTNAME", "evil\u{1b}]0;pwned\u{7}\nINFO fake line")
        .output()
        .expect("run the example worker");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(assert_all_completed_and_unleased(db) > 0);
    for text in [&stdout, &stderr] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the output:\n{text}"
        );
        assert!(
            !text.lines().any(|line| line.starts_with("INFO fake line")),
            "a forged line:\n{text}"
        );
    }
    // The owners it claimed under, as its startup line names them: escaped, printable.
    let logged = format!("{stdout}{stderr}");
    assert!(
        logged.contains(r"evil\u{1b}]0;pwned\u{7}\nINFO fake line-"),
        "{logged}"
    );
}

fn the_example_worker_drains_its_seeded_applies(db: &TestDb) {
    let stdout = run_worker_ok(db.url(), &DRAIN_SEEDED);
    assert_eq!(
        assert_all_completed_and_unleased(db),
        12,
        "4 applies x 3 deployments"
    );
    assert!(
        stdout.contains("seeded applies: completed=4\n"),
        "the derived apply states: {stdout}"
    );
    let tasks: i64 = applyops::schema::tasks::table
        .count()
        .get_result(&mut db.conn())
        .unwrap();
    assert_eq!(
        tasks, 12,
        "one task per operation, created with the rollout"
    );
}

fn the_example_worker_keeps_working_when_stderr_and_stdout_are_closed(db: &TestDb) {
    // `worker … 2>&1 | head`, or a log shipper that went away: every write to either pipe fails
    // with EPIPE. A panic there would kill the threads and strand their leases.
    let mut child = spawn_worker(db.url(), &DRAIN_SEEDED);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = wait_at_most(&mut child, Duration::from_secs(120));
    assert!(status.success(), "exit status {status} (101 is a panic)");
    assert_eq!(
        assert_all_completed_and_unleased(db),
        12,
        "4 applies x 3 deployments"
    );
}

fn exit_when_idle_waits_out_a_dead_workers_lease_and_finishes_its_work(db: &TestDb) {
    // A worker that claimed the first operation of a rolling apply and died: its lease runs for
    // 3 s, and the later operations cannot start before the first completes, so nothing is
    // claimable until the lease expires. (Built first, so the lease does not run out while
    // Cargo builds the example: the worker must start well within the 3 s.)
    worker_binary();
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 3, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let dead = ClaimOptions::new("dead-worker", Duration::from_secs(3));
    let held = claims::claim_next(conn, &dead)
        .unwrap()
        .expect("the dead worker's claim");
    assert_eq!(held.operation.id, ids[0]);

    let stdout = run_worker_ok(
        db.url(),
        &[
            "--seed",
            "0",
            "--workers",
            "2",
            "--step-ms",
            "1",
            "--exit-when-idle",
        ],
    );
    assert_eq!(
        assert_all_completed_and_unleased(db),
        3,
        "the dead worker's apply is done"
    );
    assert!(
        stdout.contains("recovery=1"),
        "the held operation was recovered:\n{stdout}"
    );
}

/// The operation's checkpoint as the example worker saves it: steps done, 4 bytes big-endian.
fn checkpoint_steps(db: &TestDb, id: ApplyOperationId) -> Option<u32> {
    let bytes: Option<Vec<u8>> = ops::table
        .find(id)
        .select(ops::engine_state)
        .first(&mut db.conn())
        .unwrap();
    bytes.map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

fn a_worker_killed_mid_copy_is_resumed_from_its_checkpoint(db: &TestDb) {
    worker_binary();
    let (_, ids) = rollout(
        &mut db.conn(),
        1,
        CutoverPolicy::Rolling,
        FailurePolicy::Halt,
    );
    // Slow steps, so the kill lands mid-copy: after a checkpoint, before completion.
    let mut first = spawn_worker(
        db.url(),
        &[
            "--seed",
            "0",
            "--workers",
            "1",
            "--step-ms",
            "300",
            "--lease-ttl-ms",
            "2000",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let saved = loop {
        if let Some(steps) = checkpoint_steps(db, ids[0]) {
            break steps;
        }
        assert!(Instant::now() < deadline, "no checkpoint within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    first.kill().expect("SIGKILL the worker");
    first.wait().unwrap();
    let state: ApplyState = ops::table
        .find(ids[0])
        .select(ops::state)
        .first(&mut db.conn())
        .unwrap();
    assert_ne!(state, ApplyState::Completed, "killed mid-copy");
    let saved_after_kill = checkpoint_steps(db, ids[0]).unwrap();
    assert!(saved_after_kill >= saved);

    let stdout = run_worker_ok(
        db.url(),
        &[
            "--seed",
            "0",
            "--workers",
            "1",
            "--step-ms",
            "1",
            "--exit-when-idle",
        ],
    );
    assert!(
        stdout.contains("recovery=1") && stdout.contains("resumed_from_checkpoint=1"),
        "the recovery claim resumed from the checkpoint:\n{stdout}"
    );
    assert_eq!(assert_all_completed_and_unleased(db), 1);
    assert!(
        checkpoint_steps(db, ids[0]).unwrap() > saved_after_kill,
        "the new holder counted on from the dead one's steps"
    );
}

/// The startup line and the error it exits with show no password, and the error reads as a sentence
/// (Display), not as `Pool(Error(Some("…")))`.
#[test]
fn the_example_worker_never_shows_the_password_and_prints_errors_with_display() {
    // Unreachable (nothing listens on port 1): the pool gives up after its connection timeout.
    // A PostgreSQL URL with a '/' in the password, which libpq reads as host and port and quotes
    // in its error. And an unsupported scheme, rejected before any connection.
    for (url, expected) in [
        (
            "mysql://app:S3cret@127.0.0.1:1/x",
            "could not get a connection from the pool",
        ),
        (
            "postgres://app:S3cret/x@db/x",
            "could not get a connection from the pool",
        ),
        ("mongodb://app:S3cret/x@db/x", "unsupported database URL"),
    ] {
        let (status, stdout, stderr) = run_worker_with(url, &["--workers", "1"]);
        assert!(!status.success(), "{url}: the worker cannot have succeeded");
        let output = format!("{stdout}{stderr}");
        assert!(
            !output.contains("S3cret"),
            "{url}: password shown:\n{output}"
        );
        assert!(
            output.contains("app:***@"),
            "{url}: the redacted URL is logged:\n{output}"
        );
        assert!(
            output.contains(expected),
            "{url}: {expected:?} missing:\n{output}"
        );
        for debug_form in ["Pool(", "Connect(", "Error(", "UnsupportedDatabaseUrl {"] {
            assert!(
                !output.contains(debug_form),
                "{url}: Debug output:\n{output}"
            );
        }
    }
}

/// A small deterministic generator (xorshift64*) for the operators' choices.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Worker contract revision 2, point 17: operators' stop, start, cancel, release, retry and cutover
/// requests (and operator-written failures) interleaved at random into a drain by the example worker
/// with 8 threads. At the end, after a whole-apply cancel of whatever is unsettled: every request is
/// completed or failed, every operation settled, every apply's state its derivation, and the workers
/// counted no error (a lost lease is not one).
fn operators_requests_interleaved_into_an_eight_worker_drain_all_finish(db: &TestDb) {
    use applyops::models::{ApplyId, NewControlRequest, NewRollout, NewRolloutOperation};
    use applyops::state::{is_settled, ControlRequestKind as Kind, ControlRequestStatus};
    use applyops::store::{applies, apply_operations, control_requests};
    use applyops::StoreError;

    worker_binary();
    let conn = &mut db.conn();
    let policies = [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ];
    let failures = [
        FailurePolicy::Halt,
        FailurePolicy::Continue,
        FailurePolicy::Pause,
    ];
    let mut apply_ids: Vec<ApplyId> = Vec::new();
    for a in 0..24 {
        let mut new = NewRollout::new(format!("stress-{a}"), format!("db{a}"), "prod", "stress")
            .with_defer_cutover(a % 4 == 3);
        for d in ["east", "west", "north"] {
            new.operations.push(
                NewRolloutOperation::new(d)
                    .with_cutover_policy(policies[a % 3])
                    .with_on_failure(failures[(a / 3) % 3]),
            );
        }
        apply_ids.push(applies::create_rollout(conn, &new).unwrap().apply.id);
    }
    let mut worker = spawn_worker(
        db.url(),
        &[
            "--seed",
            "0",
            "--workers",
            "8",
            "--step-ms",
            "40",
            "--lease-ttl-ms",
            "3000",
        ],
    );
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let kinds = [
        Kind::Stop,
        Kind::Start,
        Kind::Start,
        Kind::Cancel,
        Kind::Release,
        Kind::Retry,
        Kind::Cutover,
    ];
    let mut recorded = 0;
    // Checked along the way, in snapshots of what the workers and operators committed: an apply
    // whose state promises progress always has something that will move.
    let mut checker = db.conn();
    let mut stuck = Vec::new();
    for step in 0..500 {
        if step % 25 == 0 {
            stuck.extend(crate::invariants::progress_possible_in_one_snapshot(
                &mut checker,
                &apply_ids,
            ));
        }
        let apply_id = apply_ids[dice.below(apply_ids.len())];
        let ops = apply_operations::list_by_apply(conn, apply_id).unwrap();
        let op = &ops[dice.below(ops.len())];
        // One action in eight is an operator's failure of an operation nobody holds.
        if dice.below(8) == 0 {
            if op.state == ApplyState::Pending && op.lease_owner.is_empty() {
                apply_operations::mark_failed(conn, op.id, "operator says no").unwrap();
            }
            continue;
        }
        let kind = kinds[dice.below(kinds.len())];
        // Cancels are final: fewer of them, and only for one operation.
        let whole = kind != Kind::Cancel && kind != Kind::Retry && dice.below(2) == 0;
        let mut new = NewControlRequest::new(apply_id, kind, "stress-operator");
        if !whole {
            new = new.for_operation(op.id);
        }
        match control_requests::request(conn, &new) {
            Ok(_) => recorded += 1,
            Err(
                StoreError::RequestRejected { .. }
                | StoreError::HaltedBy { .. }
                | StoreError::OppositeRequestPending { .. }
                | StoreError::TargetBusy { .. },
            ) => {}
            Err(err) => panic!("{kind} on apply {apply_id}: {err}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        recorded > 100,
        "the operators got requests through: {recorded}"
    );
    assert_eq!(stuck, Vec::<String>::new(), "applies promising progress");
    // Wind down: cancel whatever is unsettled (what is cutting over or in its window finishes).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut unsettled = 0;
        for &apply_id in &apply_ids {
            let ops = apply_operations::list_by_apply(conn, apply_id).unwrap();
            if ops.iter().any(|op| !is_settled(op.state)) {
                unsettled += 1;
                let cancel = NewControlRequest::new(apply_id, Kind::Cancel, "stress-operator");
                control_requests::request(conn, &cancel).unwrap();
            }
        }
        let pending: usize = apply_ids
            .iter()
            .map(|&a| control_requests::list_pending(conn, a).unwrap().len())
            .sum();
        if unsettled == 0 && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{unsettled} applies unsettled, {pending} requests pending after 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped = Command::new("kill")
        .args(["-INT", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = wait_at_most(&mut worker, Duration::from_secs(60));
    let mut stdout = String::new();
    std::io::Read::read_to_string(worker.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "worker exit {status}: {stdout}");
    assert!(
        stdout.contains(" errors=0"),
        "no errors but lost leases:\n{stdout}"
    );
    eprintln!("{recorded} requests recorded; the worker's summary:\n{stdout}");
    for &apply_id in &apply_ids {
        let stored = applies::get(conn, apply_id).unwrap().unwrap();
        assert_eq!(
            applies::refresh(conn, apply_id).unwrap(),
            stored,
            "apply {apply_id}: its state is its derivation"
        );
        let all: Vec<ControlRequestStatus> = {
            use applyops::schema::apply_control_requests as reqs;
            reqs::table
                .filter(reqs::apply_id.eq(apply_id))
                .select(reqs::status)
                .load(conn)
                .unwrap()
        };
        assert!(all.iter().all(|s| matches!(
            s,
            ControlRequestStatus::Completed | ControlRequestStatus::Failed
        )));
    }
    crate::invariants::assert_timestamps_ordered(conn);
}
