//! A worker process: N threads that claim operations, drive them through their states under a lease
//! and complete them, against SQLite or MySQL/MariaDB.
//!
//! ```text
//! cargo run --example worker -- --database-url sqlite:///tmp/worker-demo.db --seed 5 --exit-when-idle
//! cargo run --example worker -- --database-url mysql://root@127.0.0.1:3306/worker_demo --workers 8
//! ```
//!
//! Ctrl-C stops it cleanly: each thread finishes its current step, releases the lease it holds and
//! exits, so another worker can take the operation over at once instead of waiting for the lease to
//! expire. A second Ctrl-C exits immediately (held leases then expire after the TTL).

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use applyops::models::{ApplyOperation, ControlRequest, NewApply, NewApplyOperation};
use applyops::state::{ControlRequestKind, CutoverPolicy, HasApplyState};
use applyops::store::claims::{ClaimKind, ClaimOptions, ClaimedOperation};
use applyops::store::leases::OperationLease;
use applyops::{ApplyState, PoolConfig, Store, StoreError, StoreResult};

const USAGE: &str = "usage: worker [--database-url URL] [--workers N] [--seed APPLIES] \
[--lease-ttl-ms MS] [--step-ms MS] [--exit-when-idle]";
const DEPLOYMENTS: [&str; 3] = ["us-east", "us-west", "eu-central"];
const POLICIES: [CutoverPolicy; 3] = [
    CutoverPolicy::Rolling,
    CutoverPolicy::Barrier,
    CutoverPolicy::Parallel,
];
/// Back-off between empty claims: short enough to pick up released work quickly, capped so an idle
/// fleet does not hammer the database.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// `--exit-when-idle`: stop once no thread holds an operation and none has claimed one for this long.
const IDLE_AFTER: Duration = Duration::from_millis(1500);

struct Config {
    database_url: String,
    workers: usize,
    seed: usize,
    lease_ttl: Duration,
    step: Duration,
    exit_when_idle: bool,
}

/// What every thread shares. The `Store` is a pool: each call checks a connection out briefly.
struct Shared {
    store: Store,
    cfg: Config,
    /// Owner names are `{owner_prefix}-worker-{i}`, so the final check can tell our leases apart.
    owner_prefix: String,
    interrupted: Arc<AtomicBool>,
    idle: AtomicBool,
    /// (threads holding an operation, last claim or release): the `--exit-when-idle` test.
    activity: Mutex<(usize, Instant)>,
    /// Every apply we seeded or claimed from: where a lease of ours could be.
    touched: Mutex<BTreeSet<i64>>,
    stats: BTreeMap<&'static str, AtomicU64>,
}

const STATS: [&str; 12] = [
    "start",
    "recovery",
    "resume",
    "retry",
    "cutover",
    "completed",
    "parked",
    "stopped",
    "lease_lost",
    "heartbeats",
    "released_on_shutdown",
    "errors",
];

impl Shared {
    fn stopping(&self) -> bool {
        self.interrupted.load(SeqCst) || self.idle.load(SeqCst)
    }
    fn count(&self, stat: &str) {
        self.stats[stat].fetch_add(1, SeqCst);
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let cfg = parse_args()?;
    let pool = PoolConfig {
        // One connection per thread plus one for main; claims never need two at once.
        max_size: cfg.workers as u32 + 1,
        ..PoolConfig::default()
    };
    let store = Store::open(&cfg.database_url, pool)?;
    for version in store.run_migrations()? {
        eprintln!("migrated {version}");
    }
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let owner_prefix = format!("{host}-{}", std::process::id());
    let seeded = seed(&store, cfg.seed, &owner_prefix)?;

    // Installed only now: until a thread claims something there is no lease to give back, and a
    // Ctrl-C during migrations or seeding should just kill the process.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || {
        if flag.swap(true, SeqCst) {
            eprintln!("second Ctrl-C: exiting now; held leases expire after the TTL");
            std::process::exit(130);
        }
        eprintln!("Ctrl-C: finishing current steps and releasing leases (Ctrl-C again to force)");
    })?;

    let shared = Arc::new(Shared {
        store,
        owner_prefix,
        interrupted,
        idle: AtomicBool::new(false),
        activity: Mutex::new((0, Instant::now())),
        touched: Mutex::new(seeded.iter().copied().collect()),
        stats: STATS.iter().map(|s| (*s, AtomicU64::new(0))).collect(),
        cfg,
    });
    eprintln!(
        "{} workers on {} as {}-worker-*",
        shared.cfg.workers, shared.cfg.database_url, shared.owner_prefix
    );
    let threads: Vec<_> = (0..shared.cfg.workers)
        .map(|i| {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker_loop(&shared, i))
        })
        .collect::<Result<_, _>>()?;
    for t in threads {
        t.join().map_err(|_| "a worker thread panicked")?;
    }
    summarize(&shared, &seeded)
}

fn worker_loop(sh: &Shared, i: usize) {
    let who = format!("worker-{i}");
    let opts = ClaimOptions::new(format!("{}-{who}", sh.owner_prefix), sh.cfg.lease_ttl);
    let mut backoff = BACKOFF_MIN;
    while !sh.stopping() {
        // Cutovers first: finishing an operation unblocks its later siblings; starting one does not.
        let claimed = match sh.store.claim_next_cutover(&opts) {
            Ok(None) => sh.store.claim_next(&opts),
            other => other,
        };
        match claimed {
            Ok(Some(claimed)) => {
                backoff = BACKOFF_MIN;
                set_activity(sh, 1);
                drive(sh, &who, claimed);
                set_activity(sh, -1);
            }
            Ok(None) => {
                let (busy, last) = *sh.activity.lock().unwrap();
                if sh.cfg.exit_when_idle && busy == 0 && last.elapsed() >= IDLE_AFTER {
                    if !sh.idle.swap(true, SeqCst) {
                        eprintln!("{who}: nothing claimable for {IDLE_AFTER:?}; exiting");
                    }
                    break;
                }
                nap(sh, backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(err) => {
                // A claim is one transaction: a failed one leaves nothing behind. Log and back off.
                eprintln!("{who}: claim failed: {err}");
                sh.count("errors");
                nap(sh, BACKOFF_MAX);
            }
        }
    }
}

fn set_activity(sh: &Shared, delta: isize) {
    let mut activity = sh.activity.lock().unwrap();
    activity.0 = activity.0.checked_add_signed(delta).unwrap();
    activity.1 = Instant::now();
}

/// Sleeps up to `d`, waking early on shutdown so an idle worker exits promptly.
fn nap(sh: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !sh.stopping() && Instant::now() < until {
        thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
    }
}

/// How a drive ended, when it did not end in an error.
enum Outcome {
    Completed,
    /// Released at `waiting_for_cutover`: the cutover claim takes it once its siblings allow.
    Parked,
    Stopped,
    /// Shutdown: released in whatever state it had reached.
    Released,
    /// A state no claim should hand out: released untouched.
    Unexpected,
}

/// One claimed operation, driven under its lease.
struct Job<'a> {
    sh: &'a Shared,
    who: &'a str,
    op: ApplyOperation,
    lease: OperationLease,
    last_beat: Instant,
}

fn drive(sh: &Shared, who: &str, claimed: ClaimedOperation) {
    let ClaimedOperation {
        operation: op,
        kind,
        lease,
        ..
    } = claimed;
    sh.touched.lock().unwrap().insert(op.apply_id);
    sh.count(match kind {
        ClaimKind::Start => "start",
        ClaimKind::Recovery => "recovery",
        ClaimKind::Resume => "resume",
        ClaimKind::Retry => "retry",
        ClaimKind::Cutover => "cutover",
    });
    let kind_name = format!("{kind:?}").to_lowercase();
    eprintln!(
        "{who} claimed op {} (apply {}, {}) {kind_name} [{}, now {}]",
        op.id, op.apply_id, op.deployment, op.cutover_policy, op.state
    );
    let mut job = Job {
        sh,
        who,
        op,
        lease,
        last_beat: Instant::now(),
    };
    let id = job.op.id;
    match job.run(kind) {
        Ok(Outcome::Completed) => sh.count("completed"),
        Ok(Outcome::Parked) => sh.count("parked"),
        Ok(Outcome::Stopped) => sh.count("stopped"),
        Ok(Outcome::Unexpected) => sh.count("errors"),
        Ok(Outcome::Released) => {
            sh.count("released_on_shutdown");
            eprintln!("{who} released op {id} ({}) on shutdown", job.op.state);
        }
        Err(StoreError::LeaseLost { .. }) => {
            // Our lease expired and another worker claimed the row: it owns the operation now, and
            // every write through our lease would be refused anyway. Nothing to undo.
            sh.count("lease_lost");
            eprintln!("{who} lost the lease on op {id}; dropping it");
        }
        Err(err) => {
            // Anything else (e.g. the database went away): give the operation back so another
            // worker can recover it now rather than after the TTL. If even that fails, it expires.
            sh.count("errors");
            eprintln!("{who} op {id}: {err}; releasing it");
            if let Err(err) = sh.store.release(&job.lease) {
                eprintln!("{who} op {id}: release failed too ({err}); it expires on its own");
            }
        }
    }
}

impl Job<'_> {
    fn run(&mut self, kind: ClaimKind) -> StoreResult<Outcome> {
        let store = &self.sh.store;
        if kind == ClaimKind::Resume {
            // The start request this claim acted on is done; leaving it pending would resume the
            // operation again the next time it is stopped.
            let pending = store.control_requests().list_pending(self.op.apply_id)?;
            self.complete_requests(&pending, ControlRequestKind::Start, |o| {
                o.state == "stopped"
            })?;
        }
        // Rolling operations (and lone ones) cut over inside this lease; barrier and parallel ones in
        // a multi-operation apply are cut over by `claim_next_cutover` once their siblings allow.
        // Like the claims, an unknown policy counts as rolling.
        let owns_cutover = !is_cutover_claimed(&self.op)
            || store
                .apply_operations()
                .list_by_apply(self.op.apply_id)?
                .len()
                == 1;
        loop {
            // Shutdown is checked between steps: the step in progress finishes, then we let go.
            if self.sh.stopping() {
                store.release(&self.lease)?;
                return Ok(Outcome::Released);
            }
            let state = self.op.apply_state()?;
            let next = match state {
                ApplyState::Running => ApplyState::WaitingForCutover,
                ApplyState::WaitingForCutover if owns_cutover => ApplyState::CuttingOver,
                ApplyState::WaitingForCutover => {
                    store.release(&self.lease)?;
                    eprintln!(
                        "{} parked op {} for the cutover claim",
                        self.who, self.op.id
                    );
                    return Ok(Outcome::Parked);
                }
                ApplyState::CuttingOver | ApplyState::RevertWindow | ApplyState::SkippingRevert => {
                    ApplyState::Completed
                }
                ApplyState::Reverting => ApplyState::Reverted,
                // resuming, recovering, degraded, setup phases: (back) to copying.
                s if s.is_active() => ApplyState::Running,
                s => {
                    // A claim never hands out these; give it back rather than guess.
                    store.release(&self.lease)?;
                    eprintln!("{} op {}: unexpected {s}; released", self.who, self.op.id);
                    return Ok(Outcome::Unexpected);
                }
            };
            self.work()?;
            // Checked right before the write, so a stop that arrived during the step wins over it.
            if self.honour_stop()? {
                return Ok(Outcome::Stopped);
            }
            let leased = store.leased(&self.lease);
            match next {
                ApplyState::Completed => leased.mark_completed()?,
                ApplyState::Reverted => leased.mark_terminal(next)?,
                ApplyState::Running => leased.mark_started()?,
                _ => leased.update_state(next)?,
            }
            eprintln!("{} op {}: {state} -> {next}", self.who, self.op.id);
            self.op.state = next.as_str().to_owned();
            if next.is_terminal() {
                // A completed row keeps its lease (so a repeated write succeeds); we clear it so
                // the table shows no lease held by a worker that has moved on.
                store.release(&self.lease)?;
                return Ok(Outcome::Completed);
            }
        }
    }

    /// Simulated work for one step, heartbeating whenever a third of the TTL has passed since the
    /// last renewal, so the lease never comes close to expiring while we hold it.
    fn work(&mut self) -> StoreResult<()> {
        let beat_every = self.lease.ttl / 3;
        let until = Instant::now() + self.sh.cfg.step;
        loop {
            if self.last_beat.elapsed() >= beat_every {
                self.sh.store.heartbeat(&mut self.lease)?;
                self.last_beat = Instant::now();
                self.sh.count("heartbeats");
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            thread::sleep((until - now).min(beat_every.saturating_sub(self.last_beat.elapsed())));
        }
    }

    /// A pending `stop` for the whole apply or for this operation: stop it, release it, and complete
    /// the request(s) it satisfied.
    fn honour_stop(&mut self) -> StoreResult<bool> {
        let store = &self.sh.store;
        let pending = store.control_requests().list_pending(self.op.apply_id)?;
        let stops: Vec<_> = pending
            .into_iter()
            .filter(|r| r.kind == ControlRequestKind::Stop.as_str())
            .filter(|r| r.apply_operation_id.is_none_or(|id| id == self.op.id))
            .collect();
        if stops.is_empty() {
            return Ok(false);
        }
        let leased = store.leased(&self.lease);
        leased.update_state(ApplyState::Stopped)?;
        store.release(&self.lease)?;
        eprintln!("{} stopped op {} on request", self.who, self.op.id);
        // A whole-apply stop is done once no other operation is still moving. Parked barrier and
        // parallel operations are not: nobody holds them and the stop keeps their cutover blocked.
        self.complete_requests(&stops, ControlRequestKind::Stop, |o| {
            let parked = o.state == "waiting_for_cutover"
                && o.lease_owner.is_empty()
                && is_cutover_claimed(o);
            o.apply_state().is_ok_and(|s| s.is_active()) && !parked
        })?;
        Ok(true)
    }

    /// Completes the pending `kind` requests this operation has acted on: the one naming it, and the
    /// whole-apply one once no other operation of the apply still `needs_it`. The last worker to act
    /// writes its own row before reading the others, so some worker always sees none left.
    fn complete_requests(
        &self,
        pending: &[ControlRequest],
        kind: ControlRequestKind,
        needs_it: impl Fn(&ApplyOperation) -> bool,
    ) -> StoreResult<()> {
        let requests = self.sh.store.control_requests();
        for request in pending.iter().filter(|r| r.kind == kind.as_str()) {
            let done = match request.apply_operation_id {
                Some(id) => id == self.op.id,
                None => !self
                    .sh
                    .store
                    .apply_operations()
                    .list_by_apply(self.op.apply_id)?
                    .iter()
                    .any(|o| o.id != self.op.id && needs_it(o)),
            };
            match done.then(|| requests.complete(request.id)).transpose() {
                // An operator failed it meanwhile: theirs is the last word.
                Ok(_) | Err(StoreError::ControlRequestResolved { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

fn is_cutover_claimed(op: &ApplyOperation) -> bool {
    matches!(op.cutover_policy.as_str(), "barrier" | "parallel")
}

/// Inserts `applies` demo applies of three deployments each, cycling through the cutover policies.
fn seed(store: &Store, applies: usize, owner_prefix: &str) -> StoreResult<Vec<i64>> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut ids = Vec::with_capacity(applies);
    for n in 0..applies {
        let policy = POLICIES[n % POLICIES.len()];
        let apply = NewApply::new(
            format!("demo-{owner_prefix}-{stamp}-{n}"),
            "demo",
            "production",
            DEPLOYMENTS[0],
        );
        let apply_id = store.applies().insert(&apply)?;
        for deployment in DEPLOYMENTS {
            let op = NewApplyOperation::new(apply_id, deployment).with_cutover_policy(policy);
            store.apply_operations().insert(&op)?;
        }
        ids.push(apply_id);
    }
    if applies > 0 {
        eprintln!(
            "seeded {applies} applies of {} operations",
            DEPLOYMENTS.len()
        );
    }
    Ok(ids)
}

/// Prints what the threads did, then checks the database: no operation may still carry a lease of
/// ours. Fails (non-zero exit) if one does.
fn summarize(sh: &Shared, seeded: &[i64]) -> Result<(), Box<dyn Error>> {
    let stat = |s: &str| sh.stats[s].load(SeqCst);
    let line = |stats: &[&str]| {
        stats
            .iter()
            .map(|s| format!("{s}={}", stat(s)))
            .collect::<Vec<_>>()
    };
    println!("claims: {}", line(&STATS[..5]).join(" "));
    println!("outcomes: {}", line(&STATS[5..]).join(" "));

    let ours = format!("{}-worker-", sh.owner_prefix);
    let mut seeded_states: BTreeMap<String, usize> = BTreeMap::new();
    let mut stranded = 0;
    for &apply_id in sh.touched.lock().unwrap().iter() {
        for op in sh.store.apply_operations().list_by_apply(apply_id)? {
            if op.lease_owner.starts_with(&ours) {
                stranded += 1;
                eprintln!(
                    "op {} ({}) still leased to {}",
                    op.id, op.state, op.lease_owner
                );
            }
            if seeded.contains(&apply_id) {
                *seeded_states.entry(op.state).or_default() += 1;
            }
        }
    }
    if !seeded.is_empty() {
        let states: Vec<_> = seeded_states
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        println!("seeded operations: {}", states.join(" "));
    }
    println!("leases still held by this process: {stranded}");
    if stranded > 0 {
        return Err(format!("{stranded} operation(s) still carry a lease of this process").into());
    }
    Ok(())
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://applyops-worker-demo.db".into()),
        workers: 4,
        seed: 0,
        lease_ttl: Duration::from_secs(10),
        step: Duration::from_millis(20),
        exit_when_idle: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let flag = arg;
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--database-url" => cfg.database_url = value()?,
            "--workers" => cfg.workers = number(value()?)? as usize,
            "--seed" => cfg.seed = number(value()?)? as usize,
            "--lease-ttl-ms" => cfg.lease_ttl = Duration::from_millis(number(value()?)?),
            "--step-ms" => cfg.step = Duration::from_millis(number(value()?)?),
            "--exit-when-idle" => cfg.exit_when_idle = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    if cfg.workers == 0 || cfg.lease_ttl.is_zero() {
        return Err(format!("--workers and --lease-ttl-ms must be ≥ 1\n{USAGE}"));
    }
    Ok(cfg)
}
