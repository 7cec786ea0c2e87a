//! applyops on a 3-node MariaDB Galera cluster: `make cluster-test` starts the nodes
//! (`scripts/cluster.sh`), runs these tests with `--ignored`, and stops the nodes. They need
//! `CLUSTER_URLS` (one `mysql://…` server URL per node), `CLUSTER_DIR` (the nodes' files: their
//! configuration, to restart one, and their pid files, for the memory bound) and `WORKER_BIN` (the
//! built example worker); `make test` compiles them but skips them.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use applyops::db::{self, DbConnection};
use applyops::models::{ApplyId, NewControlRequest, NewRollout, NewRolloutOperation};
use applyops::state::{ApplyState, ControlRequestKind, CutoverPolicy};
use applyops::store::claims::ClaimOptions;
use applyops::store::{applies, apply_operations, claims, control_requests};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// Each node's peak resident memory must stay below this (MariaDB with a 64 MB buffer pool and a
/// 32 MB gcache, as `scripts/cluster.sh` starts it).
const NODE_RSS_BOUND_KB: u64 = 1024 * 1024;

/// The nodes' server URLs.
fn nodes() -> Vec<String> {
    let urls = std::env::var("CLUSTER_URLS")
        .expect("CLUSTER_URLS is unset: run these tests with `make cluster-test`");
    let nodes: Vec<String> = urls.split(',').map(str::to_owned).collect();
    assert_eq!(nodes.len(), 3, "three nodes: {urls}");
    nodes
}

/// A database of its own on the cluster, created on node 0 and dropped at the end; `url(n)` is its
/// URL on node n.
struct ClusterDb {
    nodes: Vec<String>,
    name: String,
}

impl ClusterDb {
    fn new() -> ClusterDb {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nodes = nodes();
        let name = format!(
            "applyops_c_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = MysqlConnection::establish(&nodes[0]).unwrap();
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
            ))
            .unwrap();
        ClusterDb { nodes, name }
    }

    fn url(&self, node: usize) -> String {
        format!("{}/{}", self.nodes[node], self.name)
    }

    /// A connection to node `node`, once the database has reached it.
    fn conn(&self, node: usize) -> DbConnection {
        connect(&self.url(node))
    }

    /// Migrated from node 0.
    fn migrated() -> ClusterDb {
        let db = ClusterDb::new();
        db::run_migrations(&mut db.conn(0)).unwrap();
        db
    }
}

impl Drop for ClusterDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&self.nodes[0]) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name));
        }
    }
}

/// A connection to `url`, retried for up to 10 s while the database has not reached that node yet
/// (a `CREATE DATABASE` replicates in total order, but the node answers before the others run it).
fn connect(url: &str) -> DbConnection {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match db::establish(url) {
            Ok(conn) => return conn,
            Err(err) if Instant::now() < deadline => {
                eprintln!("waiting for {url}: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(err) => panic!("connect to {url}: {err}"),
        }
    }
}

/// A rollout of `deployments` operations under `policy` on its own database name.
fn rollout(n: usize, deployments: usize, policy: CutoverPolicy) -> NewRollout {
    (0..deployments).fold(
        NewRollout::new(
            format!("c-{n}"),
            format!("db{n}"),
            "production",
            "cluster-test",
        ),
        |rollout, d| {
            rollout.operation(
                NewRolloutOperation::new(format!("d{d}"))
                    .with_cutover_policy(policy)
                    .task("t", "ALTER TABLE t ADD COLUMN c INT"),
            )
        },
    )
}

/// The states of an apply's operations, in claim order.
fn states(conn: &mut DbConnection, apply_id: ApplyId) -> Vec<ApplyState> {
    apply_operations::list_by_apply(conn, apply_id)
        .unwrap()
        .into_iter()
        .map(|op| op.state)
        .collect()
}

/// The directory `scripts/cluster.sh` keeps the nodes in (`nodeN/my.cnf`, `nodeN/mysqld.pid`).
fn cluster_dir() -> std::path::PathBuf {
    std::env::var("CLUSTER_DIR")
        .expect("CLUSTER_DIR is unset: run these tests with `make cluster-test`")
        .into()
}

/// The running process of node `node` (0-based), from its pid file.
fn node_pid(node: usize) -> u32 {
    let file = cluster_dir().join(format!("node{}/mysqld.pid", node + 1));
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    text.trim().parse().expect("a pid")
}

/// Peak resident memory of each node (`VmHWM`, since the node's process started), in kB.
fn node_peak_rss_kb() -> Vec<u64> {
    (0..3)
        .map(|node| {
            let pid = node_pid(node);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_else(|err| panic!("node {node}, pid {pid}: {err}"));
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
                .expect("VmHWM")
        })
        .collect()
}

fn assert_nodes_rss_bounded() {
    let rss = node_peak_rss_kb();
    eprintln!("node peak RSS (kB): {rss:?}");
    for (node, kb) in rss.iter().enumerate() {
        assert!(
            *kb < NODE_RSS_BOUND_KB,
            "node {node} peaked at {kb} kB, over the bound of {NODE_RSS_BOUND_KB} kB"
        );
    }
}

#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn connections_to_a_cluster_node_read_causally() {
    let db = ClusterDb::new();
    let conn = &mut db.conn(1);
    #[derive(QueryableByName)]
    struct Value {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        value: i64,
    }
    let wait: Value = diesel::sql_query("SELECT @@SESSION.wsrep_sync_wait AS value")
        .get_result(conn)
        .unwrap();
    assert_eq!(wait.value, 1, "reads wait for what any node committed");
    print_causal_read_cost(&db);
}

/// What causal reads cost a claim: 10 interleaved rounds of 100 empty `claim_next` calls (one
/// candidate read each) on node 1, with `wsrep_sync_wait` 1 and 0, while node 0 commits a small
/// write every 5 ms. Printed, not asserted (timings are for benchmarks).
fn print_causal_read_cost(db: &ClusterDb) {
    use std::sync::atomic::{AtomicBool, Ordering};
    db::run_migrations(&mut db.conn(0)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (url, stop) = (db.url(0), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut conn = MysqlConnection::establish(&url).unwrap();
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS write_load (id INT PRIMARY KEY, n BIGINT NOT NULL); \
                 REPLACE INTO write_load VALUES (1, 0)",
            )
            .unwrap();
            while !stop.load(Ordering::Relaxed) {
                conn.batch_execute("UPDATE write_load SET n = n + 1 WHERE id = 1")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let conn = &mut db.conn(1);
    let options = ClaimOptions::new("probe", Duration::from_secs(60));
    let mut totals = [Duration::ZERO; 2];
    for _round in 0..10 {
        for (slot, wait) in [(0, 1), (1, 0)] {
            if let DbConnection::Mysql(inner) = conn {
                inner
                    .batch_execute(&format!("SET SESSION wsrep_sync_wait = {wait}"))
                    .unwrap();
            }
            let started = Instant::now();
            for _ in 0..100 {
                assert!(claims::claim_next(conn, &options).unwrap().is_none());
            }
            totals[slot] += started.elapsed();
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let per_claim = |total: Duration| total.as_micros() as f64 / 1_000.0;
    eprintln!(
        "an empty claim on node 1 while node 0 writes: {:.0} µs with wsrep_sync_wait = 1, {:.0} µs \
         with 0 ({:.2}x)",
        per_claim(totals[0]),
        per_claim(totals[1]),
        totals[0].as_secs_f64() / totals[1].as_secs_f64()
    );
}

#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn migrations_run_from_three_nodes_at_once_all_succeed_and_apply_each_version_once() {
    for round in 0..3 {
        let db = ClusterDb::new();
        let start = Arc::new(Barrier::new(3));
        let runners: Vec<_> = (0..3)
            .map(|node| {
                let url = db.url(node);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let conn = &mut connect(&url);
                    start.wait();
                    db::run_migrations(conn)
                })
            })
            .collect();
        let applied: Vec<Vec<String>> = runners
            .into_iter()
            .map(|runner| runner.join().unwrap().expect("every runner succeeds"))
            .collect();
        let mut all: Vec<String> = applied.concat();
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            total,
            all.len(),
            "round {round}: a version applied twice: {applied:?}"
        );
        assert_eq!(
            applied
                .iter()
                .filter(|versions| !versions.is_empty())
                .count(),
            1,
            "round {round}: one runner applies, the others find nothing pending: {applied:?}"
        );
        for node in 0..3 {
            assert!(db::pending_migrations(&mut db.conn(node))
                .unwrap()
                .is_empty());
        }
    }
}

#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn sixteen_threads_on_three_nodes_racing_for_one_row_take_exactly_one_lease() {
    let db = ClusterDb::migrated();
    for round in 0..20 {
        let created =
            applies::create_rollout(&mut db.conn(0), &rollout(round, 1, CutoverPolicy::Rolling))
                .unwrap();
        let start = Arc::new(Barrier::new(16));
        let racers: Vec<_> = (0..16)
            .map(|i| {
                let url = db.url(i % 3);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let conn = &mut connect(&url);
                    let options = ClaimOptions::new(format!("racer-{i}"), Duration::from_secs(60));
                    start.wait();
                    claims::claim_next(conn, &options)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let errors: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        assert!(
            errors.is_empty(),
            "round {round}: lost races are not errors: {errors:?}"
        );
        let winners = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert_eq!(winners, 1, "round {round}: exactly one lease");
        let op = &created.operations[0].operation;
        for node in 0..3 {
            let row = apply_operations::get(&mut db.conn(node), op.id)
                .unwrap()
                .unwrap();
            assert_eq!(row.state, ApplyState::Running, "node {node}");
            assert!(row.lease_owner.starts_with("racer-"), "node {node}");
        }
        apply_operations::mark_completed(&mut db.conn(0), op.id).unwrap();
    }
}

#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn a_stop_recorded_on_one_node_is_never_passed_by_a_claim_on_another() {
    let db = ClusterDb::migrated();
    let (creator, operator, claimer) = (&mut db.conn(0), &mut db.conn(1), &mut db.conn(2));
    let options = ClaimOptions::new("claimer", Duration::from_secs(60));
    let tries = 1_000;
    for n in 0..tries {
        let created =
            applies::create_rollout(creator, &rollout(n, 2, CutoverPolicy::Parallel)).unwrap();
        let apply_id: ApplyId = created.apply.id;
        control_requests::request(
            operator,
            &NewControlRequest::new(apply_id, ControlRequestKind::Stop, "operator"),
        )
        .unwrap();
        let claimed = claims::claim_next(claimer, &options).unwrap();
        if let Some(claimed) = claimed {
            assert!(
                claimed.operation.apply_id != apply_id,
                "try {n}: a claim on node 2 started an operation of apply {apply_id} after its \
                 stop committed on node 1"
            );
            apply_operations::mark_completed(creator, claimed.operation.id).unwrap();
        }
        assert_eq!(
            states(claimer, apply_id),
            [ApplyState::Stopped, ApplyState::Stopped],
            "try {n}"
        );
        applies::delete(creator, apply_id).ok();
    }
}

/// Seeds 30 rollouts of 3 operations, cycling through every cutover policy; returns how many
/// operations that is.
fn seed_rollouts(conn: &mut DbConnection) -> u64 {
    let policies = [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ];
    (0..30)
        .map(|n| {
            let created = applies::create_rollout(conn, &rollout(n, 3, policies[n % 3])).unwrap();
            created.operations.len() as u64
        })
        .sum()
}

/// Starts the example worker (two threads, a 10 s lease TTL, `--exit-when-idle`) on `url`.
fn spawn_worker(url: &str, step_ms: u64) -> std::process::Child {
    let worker = std::env::var("WORKER_BIN").expect("WORKER_BIN: the built example worker");
    Command::new(worker)
        .args(["--database-url", url, "--workers", "2"])
        .args(["--step-ms", &step_ms.to_string()])
        .args(["--lease-ttl-ms", "10000", "--exit-when-idle"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the example worker")
}

/// Waits for a worker and returns its summary's counts, after checking it exited 0 and reported
/// no error (a lease lost to another node's claim is not one).
fn worker_counts(which: &str, child: std::process::Child) -> BTreeMap<String, u64> {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{which}: {stdout}\n{stderr}");
    let counts = summary_counts(&stdout);
    assert_eq!(
        counts.get("errors"),
        Some(&0),
        "{which}: {stdout}\n{stderr}"
    );
    counts
}

/// Every node holds the 30 seeded applies with every operation `completed`, and each apply
/// `completed` as derived, with its `completed_at`.
fn assert_everything_completed_on_every_node(db: &ClusterDb) {
    for node in 0..3 {
        let conn = &mut db.conn(node);
        let filter = applies::ApplyFilter {
            limit: Some(1_000),
            ..Default::default()
        };
        let page = applies::list(conn, &filter).unwrap();
        assert_eq!(page.items.len(), 30, "node {node}");
        for apply in page.items {
            assert_eq!(
                states(conn, apply.id),
                [ApplyState::Completed; 3],
                "node {node}, apply {}",
                apply.id
            );
            assert_eq!(
                apply.state,
                ApplyState::Completed,
                "node {node}: derived state"
            );
            assert!(apply.completed_at.is_some(), "node {node}");
        }
    }
}

/// Seeds 30 rollouts of 3 operations (every policy) on node 0, then runs one example worker
/// process (two threads) on each of `worker_nodes` until the database is drained. Checks each
/// worker's summary (exit 0, no error: a lease lost to a claim on another node is not one), that
/// every operation was started exactly once, and that every node holds every operation
/// `completed` and every apply `completed`, as derived. Returns the drain's wall time.
fn drain(worker_nodes: &[usize]) -> Duration {
    let db = ClusterDb::migrated();
    let operations = seed_rollouts(&mut db.conn(0));
    let races_before = lost_races_on_nodes();
    let started = Instant::now();
    let children: Vec<_> = worker_nodes
        .iter()
        .map(|&node| spawn_worker(&db.url(node), 5))
        .collect();
    let counts: Vec<_> = children
        .into_iter()
        .zip(worker_nodes)
        .map(|(child, node)| worker_counts(&format!("worker on node {node}"), child))
        .collect();
    let elapsed = started.elapsed();
    let lost_races = lost_races_on_nodes() - races_before;
    let count = |kinds: &[&str]| -> u64 {
        counts
            .iter()
            .flat_map(|c| kinds.iter().map(|kind| c[*kind]))
            .sum()
    };
    let claims = count(&[
        "start",
        "recovery",
        "resume",
        "retry",
        "cutover",
        "revert",
        "skip_revert",
    ]);
    eprintln!(
        "workers on nodes {worker_nodes:?}: {claims} claims, {lost_races} transactions lost a race \
         (certification failures and brute-force aborts), 0 errors"
    );
    assert_eq!(
        count(&["start"]),
        operations,
        "every operation started exactly once"
    );
    assert_everything_completed_on_every_node(&db);
    elapsed
}

/// Transactions that lost a race on any node so far: certification failures and brute-force
/// aborts (`wsrep_local_cert_failures` + `wsrep_local_bf_aborts`, summed over the nodes).
fn lost_races_on_nodes() -> u64 {
    nodes()
        .iter()
        .flat_map(|url| {
            ["wsrep_local_cert_failures", "wsrep_local_bf_aborts"].map(|name| (url, name))
        })
        .map(|(url, name)| {
            node_status(url, name)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} on {url}"))
        })
        .sum()
}

/// Workers spread over the three nodes drain as the same workers on one node do, with no error
/// other than lost leases; the drain times of both are printed.
#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn workers_on_three_nodes_drain_every_rollout_with_no_error() {
    let one_node = drain(&[0, 0, 0]);
    let three_nodes = drain(&[0, 1, 2]);
    eprintln!(
        "drain of 90 operations by 3 worker processes: one node {one_node:?}, three nodes \
         {three_nodes:?} ({:.2}x)",
        three_nodes.as_secs_f64() / one_node.as_secs_f64()
    );
    assert_nodes_rss_bounded();
}

/// Leased writes under the heaviest contention a cluster gives them: 16 threads over the three nodes
/// claim and complete 400 operations of 10 `parallel` applies, so that every completion races the
/// others of its apply (each refreshes the apply's row) across nodes. Every claim answers a lease
/// or `None`, every `mark_completed` succeeds (or finds its lease lost, which never happens here:
/// the TTL is a minute), and each operation is completed once.
#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn leased_writes_racing_across_nodes_end_in_success_not_in_errors() {
    const OPERATIONS: usize = 400;
    let db = ClusterDb::migrated();
    let conn = &mut db.conn(0);
    for n in 0..OPERATIONS / 40 {
        applies::create_rollout(conn, &rollout(n, 40, CutoverPolicy::Parallel)).unwrap();
    }
    let races_before = lost_races_on_nodes();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let url = db.url(t % 3);
            std::thread::spawn(move || {
                let conn = &mut connect(&url);
                let options = ClaimOptions::new(format!("racer-{t}"), Duration::from_secs(60));
                let (mut completed, mut errors) = (Vec::new(), Vec::new());
                loop {
                    match claims::claim_next(conn, &options) {
                        Ok(Some(claimed)) => {
                            match applyops::store::leases::mark_completed(conn, &claimed.lease) {
                                Ok(()) => completed.push(claimed.operation.id),
                                Err(err) => errors.push(format!("mark_completed: {err}")),
                            }
                        }
                        // Nothing claimable: done once every operation is completed (others
                        // hold the rest, or this claim lost its races).
                        Ok(None) if count_completed(conn) == OPERATIONS => break,
                        Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                        Err(err) => errors.push(format!("claim_next: {err}")),
                    }
                }
                (completed, errors)
            })
        })
        .collect();
    let (mut completed, mut errors) = (Vec::new(), Vec::new());
    for thread in threads {
        let (c, e) = thread.join().unwrap();
        completed.extend(c);
        errors.extend(e);
    }
    eprintln!(
        "{OPERATIONS} operations over 16 threads on 3 nodes: {} transactions lost a race, {} errors",
        lost_races_on_nodes() - races_before,
        errors.len()
    );
    assert_eq!(errors, Vec::<String>::new(), "lost races are not errors");
    let total = completed.len();
    completed.sort();
    completed.dedup();
    assert_eq!(total, OPERATIONS, "every operation completed");
    assert_eq!(completed.len(), OPERATIONS, "each once");
    for node in 0..3 {
        assert_eq!(
            count_completed(&mut db.conn(node)),
            OPERATIONS,
            "node {node}"
        );
    }
}

/// A node's status variable, or `None` while the node does not answer.
fn node_status(url: &str, name: &str) -> Option<String> {
    #[derive(QueryableByName)]
    struct Status {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
        value: String,
    }
    let mut conn = MysqlConnection::establish(url).ok()?;
    diesel::sql_query(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
        .get_result::<Status>(&mut conn)
        .ok()
        .map(|status| status.value)
}

/// Waits until node `node`'s status variable `name` reads `value`, for at most `limit`, and returns
/// how long that took.
fn wait_for_status(node: usize, name: &str, value: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while node_status(&nodes()[node], name).as_deref() != Some(value) {
        assert!(
            started.elapsed() < limit,
            "node {node}: {name} did not reach {value} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Commits one small UPDATE on `url` every 20 ms until `stop`, and returns the longest time between
/// two commits: the cluster's write stall while a node is lost.
fn probe_write_stall(url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> Duration {
    let mut conn = MysqlConnection::establish(&url).unwrap();
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS stall_probe (id INT PRIMARY KEY, n BIGINT NOT NULL); \
         REPLACE INTO stall_probe VALUES (1, 0)",
    )
    .unwrap();
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // A write that fails while the cluster re-forms is retried: the stall is what it measures.
        if conn
            .batch_execute("UPDATE stall_probe SET n = n + 1 WHERE id = 1")
            .is_ok()
        {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    longest
}

/// A host lost mid-drain: node 2 and the worker process on it are killed (`SIGKILL`) while the
/// workers on nodes 0 and 1 drain 90 operations. The writes of the surviving nodes stall while the
/// cluster re-forms (measured, and under the lease TTL of 10 s); the dead worker's operations are
/// recovered once their leases expire; node 2, restarted, rejoins by IST and a worker on it finds
/// nothing left. Every operation is completed once on every node, and every apply is `completed`
/// as derived. The survivors' workers report no error.
#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn a_node_killed_mid_drain_rejoins_by_ist_and_nothing_is_lost() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let db = ClusterDb::migrated();
    let conn = &mut db.conn(0);
    seed_rollouts(conn);
    let spawn_worker = |node: usize| spawn_worker(&db.url(node), 40);
    let survivors: Vec<_> = [0, 1].into_iter().map(spawn_worker).collect();
    let mut doomed = spawn_worker(2);
    let stop_probe = Arc::new(AtomicBool::new(false));
    let probe = {
        let (url, stop) = (db.url(0), Arc::clone(&stop_probe));
        std::thread::spawn(move || probe_write_stall(url, stop))
    };
    // Kill once a third of the work is done, at a moment the doomed worker holds a lease. The
    // worker is frozen (SIGSTOP) before its leases are read, so that it cannot finish them
    // between the read and the kill: what is read is what the kill leaves behind.
    let doomed_owner = format!("-{}-worker-", doomed.id());
    let signal = |name: &str, pid: u32| {
        let status = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}: {status}");
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let held_by_doomed = loop {
        let done = count_completed(conn);
        if done >= 30 && !held_by_prefix(conn, &doomed_owner).is_empty() {
            signal("-STOP", doomed.id());
            // A statement the worker sent before it froze has time to finish.
            std::thread::sleep(Duration::from_millis(300));
            let held = held_by_prefix(conn, &doomed_owner);
            if !held.is_empty() {
                break held;
            }
            signal("-CONT", doomed.id());
        }
        assert!(
            Instant::now() < deadline,
            "the drain made no progress: {done}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    signal("-KILL", node_pid(2));
    doomed.kill().unwrap();
    let _ = doomed.wait();
    // The survivors see a cluster of 2.
    let view = wait_for_status(0, "wsrep_cluster_size", "2", Duration::from_secs(60));
    eprintln!("view of 2 after {view:?}");
    // Let the survivors write for a while, then restart the node: it rejoins by IST.
    std::thread::sleep(Duration::from_secs(3));
    // In the background, outliving this test, with the cluster's settings: scripts/cluster.sh
    // stops it with the others.
    let restarted = Command::new(cluster_dir().join("node3/start"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect("restart node 2");
    assert!(restarted.success(), "restart node 2: {restarted}");
    let synced = wait_for_status(
        2,
        "wsrep_local_state_comment",
        "Synced",
        Duration::from_secs(120),
    );
    eprintln!("node 2 synced {synced:?} after its restart");
    let log = std::fs::read_to_string(cluster_dir().join("node3/error.log")).unwrap();
    let since_restart = &log[log.rfind("starting as process").unwrap_or(0)..];
    assert!(
        since_restart.contains("IST received") || since_restart.contains("Receiving IST"),
        "node 2 rejoined by IST, not a full state transfer"
    );
    assert!(
        !since_restart.contains("Proceeding with SST"),
        "node 2 rejoined without SST"
    );
    let rejoined = spawn_worker(2);
    let recoveries: u64 = survivors
        .into_iter()
        .chain(std::iter::once(rejoined))
        .enumerate()
        .map(|(node, child)| worker_counts(&format!("worker on node {node}"), child)["recovery"])
        .sum();
    stop_probe.store(true, Ordering::Relaxed);
    let stall = probe.join().unwrap();
    eprintln!(
        "node 2 killed holding {} operation(s); recovery claims by the others: {recoveries}; \
         longest write stall on node 0: {stall:?}",
        held_by_doomed.len()
    );
    assert!(
        stall < Duration::from_secs(10),
        "the write stall ({stall:?}) stays under the lease TTL"
    );
    assert!(
        recoveries >= 1,
        "the dead worker's operations were recovered"
    );
    assert_everything_completed_on_every_node(&db);
    assert_nodes_rss_bounded();
}

/// How many operations are `completed`.
fn count_completed(conn: &mut DbConnection) -> usize {
    use applyops::schema::apply_operations as ops;
    ops::table
        .filter(ops::state.eq(ApplyState::Completed))
        .count()
        .get_result::<i64>(conn)
        .unwrap() as usize
}

/// The operations whose lease owner starts with `prefix` (one worker process's leases).
fn held_by_prefix(
    conn: &mut DbConnection,
    prefix: &str,
) -> Vec<applyops::models::ApplyOperationId> {
    use applyops::schema::apply_operations as ops;
    ops::table
        .filter(ops::lease_owner.like(format!("%{prefix}%")))
        .filter(ops::lease_token.ne(""))
        .filter(ops::state.ne(ApplyState::Completed))
        .select(ops::id)
        .load(conn)
        .unwrap()
}

#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn every_nodes_peak_memory_stays_under_the_bound() {
    assert_nodes_rss_bounded();
}

/// Counts of `key=value` pairs in a worker's summary lines.
fn summary_counts(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(key, value)| Some((key.to_owned(), value.parse().ok()?)))
        .collect()
}

/// Runs 16 threads over the three nodes, 20 rounds, each locking and updating one shared row in a
/// transaction of prepared statements (`SELECT … FOR UPDATE`, `UPDATE`, `COMMIT`) through the
/// pure-Rust `mysql` crate with a 10 s read timeout: no Diesel, no libmariadb. Each thread has a new
/// connection; with `prepare_inside` its statements are prepared inside the transaction (as a
/// client with a lazily filled statement cache does), else before `BEGIN`. Returns the
/// transactions answered with an error (a deadlock or certification failure is an answer) and the
/// statements never answered (a read that timed out: the server consumed the command and sent
/// nothing, or sent what the client cannot read as the answer), with the statement's name.
fn conflicting_transactions(prepare_inside: bool) -> (usize, Vec<String>) {
    use mysql::prelude::Queryable;
    let nodes = nodes();
    let name = format!("applyops_raw_{}_{}", std::process::id(), prepare_inside);
    let mut admin = MysqlConnection::establish(&nodes[0]).unwrap();
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}; \
             CREATE TABLE {name}.t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB; \
             INSERT INTO {name}.t VALUES (1, 0)"
        ))
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let mut unanswered = Vec::new();
    let mut answered_errors = 0;
    for _round in 0..20 {
        let start = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let url = format!("{}/{name}", nodes[i % 3]);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(&url).unwrap())
                        .read_timeout(Some(Duration::from_secs(10)));
                    let mut conn = mysql::Conn::new(opts).unwrap();
                    const SELECT: &str = "SELECT v FROM t WHERE id = 1 FOR UPDATE";
                    const UPDATE: &str = "UPDATE t SET v = v + 1 WHERE id = 1";
                    let early = (!prepare_inside)
                        .then(|| (conn.prep(SELECT).unwrap(), conn.prep(UPDATE).unwrap()));
                    start.wait();
                    let mut step = "BEGIN";
                    let result: mysql::Result<()> = (|| {
                        conn.query_drop("BEGIN")?;
                        let (select, update) = match early {
                            Some(statements) => statements,
                            None => {
                                step = "prepare the SELECT";
                                let select = conn.prep(SELECT)?;
                                step = "execute the SELECT";
                                let _: Option<i64> = conn.exec_first(&select, ())?;
                                step = "prepare the UPDATE";
                                let update = conn.prep(UPDATE)?;
                                (select, update)
                            }
                        };
                        if !prepare_inside {
                            step = "execute the SELECT";
                            let _: Option<i64> = conn.exec_first(&select, ())?;
                        }
                        step = "execute the UPDATE";
                        conn.exec_drop(&update, ())?;
                        step = "COMMIT";
                        conn.query_drop("COMMIT")
                    })();
                    match result {
                        Ok(()) => (None, 0),
                        Err(mysql::Error::IoError(err))
                            if matches!(
                                err.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            (Some(step.to_owned()), 0)
                        }
                        Err(_) => (None, 1),
                    }
                })
            })
            .collect();
        for thread in threads {
            let (timed_out, errors) = thread.join().unwrap();
            unanswered.extend(timed_out);
            answered_errors += errors;
        }
    }
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
    (answered_errors, unanswered)
}

/// The server answers every statement of a conflicting transaction, whether its statements were
/// prepared before `BEGIN` or inside the transaction: the hangs once seen in the cluster tests
/// were the client library's (see `tests/it/failed_statements.rs`), not the server's.
#[test]
#[ignore = "needs the Galera cluster: make cluster-test"]
fn the_server_answers_every_statement_of_a_conflicting_transaction() {
    for prepare_inside in [false, true] {
        let (errors, unanswered) = conflicting_transactions(prepare_inside);
        eprintln!(
            "320 conflicting transactions through the mysql crate, statements prepared {}: \
             {errors} answered with an error, unanswered: {unanswered:?}",
            if prepare_inside {
                "inside"
            } else {
                "before BEGIN"
            }
        );
        assert_eq!(
            unanswered,
            Vec::<String>::new(),
            "statements never answered"
        );
    }
}
