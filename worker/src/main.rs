//! A worker process: N threads that claim operations, drive them through their states under a lease
//! and complete them, against SQLite or MySQL/MariaDB.
//!
//! ```text
//! cargo run -p applyops-worker -- --database-url sqlite:///tmp/worker-demo.db --seed 5 --exit-when-idle
//! cargo run -p applyops-worker -- --database-url mysql://root@127.0.0.1:3306/worker_demo --workers 8
//! cargo run -p applyops-worker -- --step-ms 300 --fail-once ap-south   # as `make demo` runs it
//! ```
//!
//! The database: `--database-url`, else `APPLYOPS_DATABASE_URL`, else `DATABASE_URL` (which keep a
//! password out of `ps`), else `sqlite://applyops-worker-demo.db`.
//!
//! `--revert-window MS` keeps each operation in `revert_window` for MS milliseconds after its cutover
//! (held under its lease, heartbeating), so an operator can try `applyops revert APPLY` (the
//! operation is handed to the revert claim and ends `reverted`) or `applyops skip-revert APPLY` (it
//! completes at once); with no decision it completes when the window ends. Without the flag an
//! operation completes right after its cutover.
//!
//! `--fail-once DEPLOYMENT` (repeatable) makes the first attempt of every operation for that
//! deployment fail after its first step (`mark_failed`), so that an operator's `applyops retry`
//! can be shown; the retried attempt succeeds.
//!
//! `--deployment NAME` (repeatable) and `--environment NAME` scope its claims: it takes only
//! operations of those deployments, of applies in that environment (`ClaimScope`), for a worker that
//! runs in one region or holds credentials for some deployments only. With `--exit-when-idle` a
//! scoped worker exits once no apply with unsettled work in its scope has an operation a claim
//! could take or a live lease (an earlier sibling outside the scope still unblocks its own).
//!
//! It logs through `tracing` to stderr, filtered by `RUST_LOG` (default `info`;
//! `RUST_LOG=info,applyops=debug` adds a line per store call with its duration). Logging never takes
//! the worker down: a write to a closed stderr (`worker … 2>&1 | head`, a log shipper that went away)
//! is dropped, and so is the summary on a closed stdout. A worker that died of its log would hold its
//! leases until they expire.
//!
//! Ctrl-C stops it cleanly: each thread finishes its current step, releases the lease it holds and
//! exits, so another worker can take the operation over at once instead of waiting for the lease to
//! expire. A second Ctrl-C exits immediately (held leases then expire after the TTL).

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use applyops::db::redact_url;
use applyops::models::{
    ApplyId, ApplyOperation, ApplyOperationId, NewRollout, NewRolloutOperation,
};
use applyops::schema::apply_operations as ops;
use applyops::state::{
    cutover_claimed, is_cancellable, is_stoppable, ControlRequestKind, CutoverPolicy,
};
use applyops::store::applies::{self, Blocker};
use applyops::store::claims::{ClaimKind, ClaimOptions, ClaimScope, ClaimedOperation};
use applyops::store::leases::OperationLease;
use applyops::{ApplyState, PoolConfig, Store, StoreError, StoreResult};
use diesel::prelude::*;
use tracing::{debug, error, info, warn};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "usage: applyops-worker [--database-url URL] [--workers N] [--seed APPLIES] \
[--lease-ttl-ms MS] [--step-ms MS] [--revert-window MS] [--exit-when-idle] [--fail-once DEPLOYMENT]... \
[--deployment NAME]... [--environment NAME]";
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
/// `--exit-when-idle`: a thread checks whether the database is drained only once no thread has held
/// an operation for this long.
const IDLE_AFTER: Duration = Duration::from_millis(1500);

struct Config {
    database_url: String,
    workers: usize,
    seed: usize,
    lease_ttl: Duration,
    step: Duration,
    exit_when_idle: bool,
    /// `--fail-once`: the deployments whose first attempt fails after its first step (a simulated
    /// copy failure, recorded with `mark_failed`), so an operator's `retry` can be shown.
    fail_once: Vec<String>,
    /// `--revert-window`: how long a cut-over operation waits in `revert_window` (held, heartbeating,
    /// watching for an operator's `revert` or `skip-revert`) before it completes. Zero: it completes
    /// right after its cutover.
    revert_window: Duration,
    /// `--deployment` (repeatable) and `--environment`: claim only operations of these deployments
    /// and of applies in this environment. Open (any operation) by default.
    scope: ClaimScope,
}

/// What every thread shares. The `Store` is a pool: each call checks a connection out briefly.
struct Shared {
    store: Store,
    cfg: Config,
    /// Owner names are `{owner_prefix}-worker-{i}`, so the final check can tell our leases apart.
    owner_prefix: String,
    interrupted: Arc<AtomicBool>,
    /// (threads holding an operation, last claim or release): when `--exit-when-idle` starts looking.
    activity: Mutex<(usize, Instant)>,
    /// Every apply we seeded or claimed from: where a lease of ours could be.
    touched: Mutex<BTreeSet<ApplyId>>,
    /// The lease `--exit-when-idle` last reported waiting for (operation, owner), so each is logged once.
    awaited: Mutex<Option<(ApplyOperationId, String)>>,
    stats: BTreeMap<&'static str, AtomicU64>,
}

/// The first [`STATS`] entries are claim kinds; the rest are outcomes.
const CLAIM_KINDS: usize = 7;

const STATS: [&str; 20] = [
    "start",
    "recovery",
    "resume",
    "retry",
    "cutover",
    "revert",
    "skip_revert",
    "completed",
    "parked",
    "stopped",
    "cancelled",
    "handed_to_revert",
    "request_races",
    "lease_lost",
    "heartbeats",
    "checkpoints",
    "resumed_from_checkpoint",
    "released_on_shutdown",
    "errors",
    "failed_on_purpose",
];

impl Shared {
    fn interrupted(&self) -> bool {
        self.interrupted.load(SeqCst)
    }
    fn count(&self, stat: &str) {
        self.stats[stat].fetch_add(1, SeqCst);
    }
    /// No thread holds an operation, and none has claimed or let one go for [`IDLE_AFTER`].
    fn quiet(&self) -> bool {
        let (busy, last) = *self.activity.lock().unwrap();
        busy == 0 && last.elapsed() >= IDLE_AFTER
    }
    /// Logs, once per lease, that `--exit-when-idle` is waiting for `op`'s.
    fn report_wait(&self, op: &ApplyOperation) {
        let key = (op.id, op.lease_owner.clone());
        let mut awaited = self.awaited.lock().unwrap();
        if awaited.as_ref() != Some(&key) {
            info!(
                op = %op.id,
                apply = %op.apply_id,
                state = %op.state,
                owner = %op.lease_owner,
                expires_at = %op.lease_expires_at.unwrap_or_default(),
                "nothing claimable; waiting for this lease to be released or to expire"
            );
            *awaited = Some(key);
        }
    }
}

fn main() -> ExitCode {
    init_logging();
    let cfg = match parse_args() {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            writeln!(io::stderr(), "{USAGE}").ok();
            return ExitCode::from(2);
        }
    };
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Display, not Debug: "could not connect to the database: …", not `Connect(…)`.
            error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`).
///
/// tracing-subscriber's fmt layer drops an event whose write fails, but the `fmt()` builder turns on
/// `log_internal_errors`, which reports the failure with the standard library's stderr print macro,
/// and that panics when stderr is a closed pipe. It is turned off here, so a closed stderr costs the
/// log and nothing else.
fn init_logging() {
    let (filter, rejected) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(err) => (
            EnvFilter::new("info"),
            std::env::var_os("RUST_LOG").map(|_| err.to_string()),
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        // The store's spans (debug level) then show up as one line per call, with its duration.
        .with_span_events(FmtSpan::CLOSE)
        .log_internal_errors(false)
        .init();
    if let Some(err) = rejected {
        warn!("ignoring RUST_LOG ({err}); logging at info");
    }
}

fn run(cfg: Config) -> Result<(), Box<dyn Error>> {
    // A scope no claim would accept stops the worker here, not in every claim.
    ClaimOptions::new("applyops-worker", cfg.lease_ttl)
        .with_scope(cfg.scope.clone())
        .validate()?;
    info!(url = %redact_url(&cfg.database_url), "opening the database");
    let pool = PoolConfig {
        // One connection per thread plus one for main; claims never need two at once.
        max_size: cfg.workers as u32 + 1,
        ..PoolConfig::default()
    };
    let store = Store::open(&cfg.database_url, pool)?;
    for version in store.run_migrations()? {
        info!(%version, "migrated");
    }
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    // The lease owner is a name operators read: a host name holding control characters (or
    // anything else not printable) is escaped, as the store refuses such names.
    let host: String = host.escape_debug().collect();
    let owner_prefix = format!("{host}-{}", std::process::id());
    let seeded = seed(&store, cfg.seed, &owner_prefix)?;

    // Installed only now: until a thread claims something there is no lease to give back, and a
    // Ctrl-C during migrations or seeding should just kill the process.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    ctrlc::set_handler(move || {
        if flag.swap(true, SeqCst) {
            warn!("second Ctrl-C: exiting now; held leases expire after the TTL");
            std::process::exit(130);
        }
        warn!("Ctrl-C: finishing current steps and releasing leases (Ctrl-C again to force)");
    })?;

    let shared = Arc::new(Shared {
        store,
        owner_prefix,
        interrupted,
        activity: Mutex::new((0, Instant::now())),
        touched: Mutex::new(seeded.iter().copied().collect()),
        awaited: Mutex::new(None),
        stats: STATS.iter().map(|s| (*s, AtomicU64::new(0))).collect(),
        cfg,
    });
    info!(
        workers = shared.cfg.workers,
        owners = %format_args!("{}-worker-*", shared.owner_prefix),
        lease_ttl_ms = shared.cfg.lease_ttl.as_millis() as u64,
        exit_when_idle = shared.cfg.exit_when_idle,
        "started"
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
    if !shared.interrupted() {
        if shared.cfg.scope == ClaimScope::any() {
            info!("drained: nothing claimable and no lease left to wait for");
        } else {
            info!("drained: nothing claimable in our scope, and nothing left that could reach it");
        }
    }
    summarize(&shared, &seeded)
}

fn worker_loop(sh: &Shared, i: usize) {
    let who = format!("worker-{i}");
    let opts = ClaimOptions::new(format!("{}-{who}", sh.owner_prefix), sh.cfg.lease_ttl)
        .with_scope(sh.cfg.scope.clone());
    let mut backoff = BACKOFF_MIN;
    // `--exit-when-idle`: set when a look at the leases found none that could still hand out work.
    // An empty claim right after that look (and only right after it) means the database is drained.
    let mut no_lease_pending = false;
    while !sh.interrupted() {
        let after_lease_check = std::mem::take(&mut no_lease_pending);
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
            Ok(None) if sh.cfg.exit_when_idle && sh.quiet() => {
                if after_lease_check {
                    debug!(worker = %who, "nothing claimable and no lease pending; exiting");
                    break;
                }
                // A scoped worker waits while an apply with unsettled work in its scope has an
                // operation a claim could take or a lease could move on (in its scope or not: an
                // earlier sibling's progress unblocks the later ones).
                if sh.cfg.scope != ClaimScope::any() {
                    match scope_waits(&sh.store, &sh.cfg.scope) {
                        Ok(false) => {
                            debug!(worker = %who, "nothing left that could reach our scope; exiting");
                            break;
                        }
                        Ok(true) => back_off(sh, &mut backoff),
                        Err(err) => look_failed(sh, &who, &err, "looking at our scope's applies"),
                    }
                    continue;
                }
                // Nothing is claimable now. Something still may be once a lease ends: the holder's
                // (maybe dead) operation itself, or the siblings its completion unblocks.
                match pending_lease(&sh.store) {
                    // Claim once more at once: a lease that expired between the claim above and the
                    // look is claimable now, and only a claim made after the look can tell.
                    Ok(None) => no_lease_pending = true,
                    Ok(Some(op)) => {
                        sh.report_wait(&op);
                        back_off(sh, &mut backoff);
                    }
                    Err(err) => look_failed(sh, &who, &err, "looking for pending leases"),
                }
            }
            Ok(None) => back_off(sh, &mut backoff),
            Err(err) => {
                // A failed claim usually took nothing, but not always: if the connection broke after
                // COMMIT was sent, the claim may have committed, leaving the row under a lease whose
                // token we never received. Nothing can write through it; it expires after the TTL and
                // the operation is recovered then (`--exit-when-idle` waits for it). Log and back off.
                warn!(worker = %who, error = %err, "claim failed");
                sh.count("errors");
                nap(sh, BACKOFF_MAX);
            }
        }
    }
}

/// Naps for `backoff`, then doubles it up to [`BACKOFF_MAX`]: an empty claim's wait.
fn back_off(sh: &Shared, backoff: &mut Duration) {
    nap(sh, *backoff);
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

/// `--exit-when-idle`'s look at the database (`what`) failed: logged, counted as an error, and
/// the longest nap before the next claim.
fn look_failed(sh: &Shared, who: &str, err: &StoreError, what: &str) {
    warn!(worker = %who, error = %err, "{what} failed");
    sh.count("errors");
    nap(sh, BACKOFF_MAX);
}

/// For a scoped worker with `--exit-when-idle`: whether work may still come to its scope. Only the
/// applies with an unsettled operation in the scope matter (the claim rules look at siblings within
/// an apply, never across applies); work can still come while one of them has an operation a claim
/// would take ([`Blocker::Claimable`], in the scope or not) or one under a live lease, whose holder
/// moves it on or whose expiry hands it back. With neither, nothing changes without an operator.
fn scope_waits(store: &Store, scope: &ClaimScope) -> StoreResult<bool> {
    let conn = &mut *store.connection()?;
    // `completed_at` is set exactly while an operation is settled.
    let mut unsettled = ops::table
        .filter(ops::completed_at.is_null())
        .select(ops::apply_id)
        .distinct()
        .into_boxed();
    if !scope.deployments.is_empty() {
        unsettled = unsettled.filter(ops::deployment.eq_any(scope.deployments.clone()));
    }
    if let Some(environment) = &scope.environment {
        unsettled = unsettled.filter(ops::environment.eq(environment.clone()));
    }
    if let Some(database_name) = &scope.database_name {
        unsettled = unsettled.filter(ops::database_name.eq(database_name.clone()));
    }
    let applies: Vec<ApplyId> = unsettled.load(conn)?;
    for apply in applies {
        let moving = applies::blockers(conn, apply)?
            .into_iter()
            .any(|(_, blocker)| matches!(blocker, Blocker::Claimable | Blocker::LeaseLive { .. }));
        if moving {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The operation in flight whose live lease expires first, if any: work that nobody can
/// claim now but someone will be able to once that lease is released or expires. Whoever holds it
/// (another process, alive or dead, or one of our threads), and whatever apply it is in: the claims
/// take from the whole database, so that is the scope `--exit-when-idle` waits on.
fn pending_lease(store: &Store) -> StoreResult<Option<ApplyOperation>> {
    let conn = &mut *store.connection()?;
    // Only operations in flight carry an expiry (a settled one keeps its holder's token, not the
    // expiry), so a live one means work that comes back once the lease ends.
    Ok(ops::table
        .filter(ops::lease_token.ne(""))
        // The claims' own test of a live lease, on the same (database) clock.
        .filter(ops::lease_expires_at.gt(applyops::db::now().nullable()))
        .order(ops::lease_expires_at.asc())
        .select(ApplyOperation::as_select())
        .first(conn)
        .optional()?)
}

fn set_activity(sh: &Shared, delta: isize) {
    let mut activity = sh.activity.lock().unwrap();
    activity.0 = activity.0.checked_add_signed(delta).unwrap();
    activity.1 = Instant::now();
}

/// Sleeps up to `d`, waking early on Ctrl-C so an idle worker exits promptly.
fn nap(sh: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while !sh.interrupted() && Instant::now() < until {
        thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
    }
}

/// How a drive ended, when it did not end in an error.
enum Outcome {
    Completed,
    /// Released at `waiting_for_cutover`: the cutover claim takes it once its siblings allow.
    Parked,
    /// Stopped on an operator's `stop` (the store cleared the lease with the state).
    Stopped,
    /// Cancelled on an operator's `cancel`.
    Cancelled,
    /// Released in `revert_window` to the cutover claim's revert arm, on a `revert` or `skip_revert`.
    HandedToRevert,
    /// Shutdown: released in whatever state it had reached.
    Released,
    /// A state no claim should hand out: released untouched.
    Unexpected,
    /// Failed on purpose (`--fail-once`): recorded `failed`, left for an operator's retry.
    FailedOnPurpose,
}

/// One claimed operation, driven under its lease.
struct Job<'a> {
    sh: &'a Shared,
    who: &'a str,
    op: ApplyOperation,
    lease: OperationLease,
    last_beat: Instant,
    /// Steps finished on this operation, by us and by the holders before us (its checkpoint).
    steps_done: u32,
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
        ClaimKind::Revert => "revert",
        ClaimKind::SkipRevert => "skip_revert",
    });
    info!(
        worker = %who,
        op = %op.id,
        apply = %op.apply_id,
        deployment = %op.deployment,
        kind = %format!("{kind:?}").to_lowercase(),
        policy = %op.cutover_policy,
        state = %op.state,
        "claimed"
    );
    // The copy engine's resume point: how many steps earlier holders finished, saved after every
    // step. A recovery claim hands back the dead holder's last checkpoint.
    let steps_done = op.engine_state.as_deref().and_then(checkpoint_steps);
    if let (Some(steps), ClaimKind::Recovery | ClaimKind::Resume) = (steps_done, kind) {
        sh.count("resumed_from_checkpoint");
        info!(worker = %who, op = %op.id, steps, "resuming from the last checkpoint");
    }
    let mut job = Job {
        sh,
        who,
        op,
        lease,
        last_beat: Instant::now(),
        steps_done: steps_done.unwrap_or(0),
    };
    let id = job.op.id;
    match job.run() {
        Ok(Outcome::Completed) => sh.count("completed"),
        Ok(Outcome::Parked) => sh.count("parked"),
        Ok(Outcome::Stopped) => sh.count("stopped"),
        Ok(Outcome::Cancelled) => sh.count("cancelled"),
        Ok(Outcome::HandedToRevert) => sh.count("handed_to_revert"),
        Ok(Outcome::Unexpected) => sh.count("errors"),
        Ok(Outcome::FailedOnPurpose) => sh.count("failed_on_purpose"),
        Ok(Outcome::Released) => {
            sh.count("released_on_shutdown");
            info!(worker = %who, op = %id, state = %job.op.state, "released on shutdown");
        }
        Err(StoreError::LeaseLost { .. }) => {
            // Our lease expired and another worker claimed the row: it owns the operation now, and
            // every write through our lease would be refused anyway. Nothing to undo.
            sh.count("lease_lost");
            warn!(worker = %who, op = %id, "lost the lease; dropping the operation");
        }
        Err(err) => {
            // Anything else (e.g. the database went away): give the operation back so another
            // worker can recover it now rather than after the TTL. If even that fails, it expires.
            sh.count("errors");
            error!(worker = %who, op = %id, error = %err, "driving failed; releasing the operation");
            if let Err(err) = sh.store.release(&job.lease) {
                error!(
                    worker = %who,
                    op = %id,
                    error = %err,
                    "release failed too; the lease expires on its own"
                );
            }
        }
    }
}

impl Job<'_> {
    fn run(&mut self) -> StoreResult<Outcome> {
        let store = &self.sh.store;
        // Rolling operations (and lone ones) cut over inside this lease; barrier and parallel ones in
        // a multi-operation apply are cut over by `claim_next_cutover` once their siblings allow, and
        // so is every operation of an apply that defers its cutovers (on an operator's request):
        // the claims' own rule, `state::cutover_claimed`. The store refuses a cutover that is not
        // ours to make anyway.
        let deferred = store
            .applies()
            .get(self.op.apply_id)?
            .is_some_and(|apply| apply.defer_cutover);
        let operations = store
            .apply_operations()
            .list_by_apply(self.op.apply_id)?
            .len();
        let owns_cutover = !cutover_claimed(deferred, self.op.cutover_policy, operations);
        loop {
            // Operators' requests first: a stop or cancel that arrived during the last step wins
            // over the next one, and a revert decision takes a revert_window operation away.
            if let Some(outcome) = self.honour_requests()? {
                return Ok(outcome);
            }
            // Shutdown is checked between steps: the step in progress finishes, then we let go. An
            // operation in revert_window is kept until its window closes (the next step).
            if self.sh.interrupted() && self.op.state != ApplyState::RevertWindow {
                store.release(&self.lease)?;
                return Ok(Outcome::Released);
            }
            let state = self.op.state;
            let next = match state {
                ApplyState::Running => ApplyState::WaitingForCutover,
                ApplyState::WaitingForCutover if owns_cutover => ApplyState::CuttingOver,
                ApplyState::WaitingForCutover => {
                    store.release(&self.lease)?;
                    info!(worker = %self.who, op = %self.op.id, "parked for the cutover claim");
                    return Ok(Outcome::Parked);
                }
                ApplyState::CuttingOver if !self.sh.cfg.revert_window.is_zero() => {
                    ApplyState::RevertWindow
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
                    warn!(worker = %self.who, op = %self.op.id, state = %s, "unexpected state; released");
                    return Ok(Outcome::Unexpected);
                }
            };
            if state == ApplyState::RevertWindow {
                // The window: an operator may revert it or close the window early meanwhile.
                if let Some(outcome) = self.hold_revert_window()? {
                    return Ok(outcome);
                }
            } else {
                self.work()?;
            }
            self.steps_done += 1;
            if state == ApplyState::Running
                && self.op.attempt == 0
                && self.sh.cfg.fail_once.contains(&self.op.deployment)
            {
                store
                    .leased(&self.lease)
                    .mark_failed("simulated copy failure (--fail-once); retry it")?;
                warn!(
                    worker = %self.who,
                    op = %self.op.id,
                    deployment = %self.op.deployment,
                    "failed on purpose (--fail-once)"
                );
                store.release(&self.lease)?;
                return Ok(Outcome::FailedOnPurpose);
            }
            store
                .leased(&self.lease)
                .save_engine_state(&self.steps_done.to_be_bytes())?;
            self.sh.count("checkpoints");
            // Checked right before the write, so a request that arrived during the step wins over it.
            if let Some(outcome) = self.honour_requests()? {
                return Ok(outcome);
            }
            let leased = store.leased(&self.lease);
            let written = match next {
                ApplyState::Completed => leased.mark_completed(),
                ApplyState::Reverted => leased.mark_terminal(next),
                ApplyState::Running => leased.mark_started(),
                _ => leased.update_state(next),
            };
            match written {
                // A stop, cancel or revert decision arrived between our look and the write: the
                // store refused the write; act on the request instead (next round).
                Err(StoreError::StopPending { .. } | StoreError::RevertPending { .. }) => {
                    self.sh.count("request_races");
                    continue;
                }
                // An operator turned deferred cutover on since we claimed it: park it for the
                // cutover claim.
                Err(StoreError::CutoverDeferred { .. }) => {
                    self.sh.count("request_races");
                    store.release(&self.lease)?;
                    return Ok(Outcome::Parked);
                }
                other => other?,
            }
            info!(worker = %self.who, op = %self.op.id, from = %state, to = %next, "moved");
            self.op.state = next;
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

    /// `--revert-window`: holds a `revert_window` operation for the window's length, heartbeating as
    /// [`Job::work`] does and asking for requests every step (at least every 50 ms), so an
    /// operator's `revert` or `skip-revert` hands it to the revert claim at once. `None`: the window
    /// passed with no decision, and the operation completes.
    fn hold_revert_window(&mut self) -> StoreResult<Option<Outcome>> {
        let until = Instant::now() + self.sh.cfg.revert_window;
        let poll = self.sh.cfg.step.max(Duration::from_millis(50));
        let beat_every = self.lease.ttl / 3;
        let mut told_of_shutdown = false;
        info!(worker = %self.who, op = %self.op.id, window_ms = self.sh.cfg.revert_window.as_millis() as u64, "in the revert window");
        loop {
            if self.last_beat.elapsed() >= beat_every {
                self.sh.store.heartbeat(&mut self.lease)?;
                self.last_beat = Instant::now();
                self.sh.count("heartbeats");
            }
            if let Some(outcome) = self.honour_requests()? {
                return Ok(Some(outcome));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            // An operation in its window cannot be released (the store keeps it with its holder):
            // a shutdown waits the window out, and says so once.
            if self.sh.interrupted() && !told_of_shutdown {
                told_of_shutdown = true;
                warn!(
                    worker = %self.who,
                    op = %self.op.id,
                    left_ms = (until - now).as_millis() as u64,
                    "Ctrl-C: holding this operation until its revert window closes; Ctrl-C again \
                     exits now (its lease then expires and another worker holds the window)"
                );
            }
            // Wake for the next request poll, the window's end or the next heartbeat, whichever
            // comes first: the lease never comes close to expiring, whatever --step-ms is.
            let next_beat = beat_every.saturating_sub(self.last_beat.elapsed());
            thread::sleep((until - now).min(poll).min(next_beat));
        }
    }

    /// Acts on the pending requests that cover this operation (one query): a `cancel` cancels it, a
    /// `stop` stops it (the store clears the lease with the state, and completes the request once
    /// nothing it covers is left), and in `revert_window` a `revert` or `skip_revert` hands it to
    /// the cutover claim's revert arm. `None`: nothing to do, carry on.
    fn honour_requests(&mut self) -> StoreResult<Option<Outcome>> {
        let store = &self.sh.store;
        let leased = store.leased(&self.lease);
        let pending = leased.pending_requests()?;
        let asked = |kind| pending.contains(&kind);
        let state = self.op.state;
        // A request superseded (a start after the stop) or resolved between our look and the
        // write: the store says NoPendingRequest and writes nothing; carry on.
        if asked(ControlRequestKind::Cancel) && is_cancellable(state) {
            match leased.mark_terminal(ApplyState::Cancelled) {
                Err(StoreError::NoPendingRequest { .. }) => self.sh.count("request_races"),
                other => {
                    other?;
                    store.release(&self.lease)?;
                    info!(worker = %self.who, op = %self.op.id, "cancelled on request");
                    return Ok(Some(Outcome::Cancelled));
                }
            }
        }
        if asked(ControlRequestKind::Stop) && is_stoppable(state) {
            match leased.update_state(ApplyState::Stopped) {
                Err(StoreError::NoPendingRequest { .. }) => self.sh.count("request_races"),
                other => {
                    other?;
                    info!(worker = %self.who, op = %self.op.id, "stopped on request");
                    return Ok(Some(Outcome::Stopped));
                }
            }
        }
        if state == ApplyState::RevertWindow
            && (asked(ControlRequestKind::Revert) || asked(ControlRequestKind::SkipRevert))
        {
            store.release(&self.lease)?;
            info!(worker = %self.who, op = %self.op.id, "handed to the revert claim on request");
            return Ok(Some(Outcome::HandedToRevert));
        }
        Ok(None)
    }
}

/// The step count a checkpoint this worker saved holds (4 bytes, big-endian), or `None` for bytes
/// of another shape.
fn checkpoint_steps(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Creates `applies` demo rollouts of three deployments each (one task per deployment), cycling
/// through the cutover policies, each with [`Store::create_rollout`]: the apply, its operations and
/// their tasks in one transaction. Each demo apply changes a database of its own, so none waits for
/// another to let its targets go.
fn seed(store: &Store, applies: usize, owner_prefix: &str) -> StoreResult<Vec<ApplyId>> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut ids = Vec::with_capacity(applies);
    for n in 0..applies {
        let policy = POLICIES[n % POLICIES.len()];
        let rollout = DEPLOYMENTS.iter().fold(
            NewRollout::new(
                format!("demo-{owner_prefix}-{stamp}-{n}"),
                format!("demo_{stamp}_{n}"),
                "production",
                format!("{owner_prefix}-seed"),
            ),
            |rollout, deployment| {
                rollout.operation(
                    NewRolloutOperation::new(*deployment)
                        .with_cutover_policy(policy)
                        .task("orders", "ALTER TABLE orders ADD COLUMN note TEXT"),
                )
            },
        );
        let created = store.create_rollout(&rollout)?;
        info!(apply = %created.apply.id, identifier = %created.apply.apply_identifier, %policy, "created rollout");
        ids.push(created.apply.id);
    }
    if applies > 0 {
        info!(applies, operations = applies * DEPLOYMENTS.len(), "seeded");
    }
    Ok(ids)
}

/// Prints what the threads did to stdout, then checks the database: no operation may still carry a
/// lease of ours. Fails (non-zero exit) if one does. A closed stdout loses the summary, not the check.
fn summarize(sh: &Shared, seeded: &[ApplyId]) -> Result<(), Box<dyn Error>> {
    let stat = |s: &str| sh.stats[s].load(SeqCst);
    let line = |stats: &[&str]| {
        stats
            .iter()
            .map(|s| format!("{s}={}", stat(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut summary = format!(
        "claims: {}\noutcomes: {}\n",
        line(&STATS[..CLAIM_KINDS]),
        line(&STATS[CLAIM_KINDS..])
    );

    let ours = format!("{}-worker-", sh.owner_prefix);
    let mut seeded_states: BTreeMap<String, usize> = BTreeMap::new();
    let mut stranded = 0;
    for &apply_id in sh.touched.lock().unwrap().iter() {
        for op in sh.store.apply_operations().list_by_apply(apply_id)? {
            if op.lease_owner.starts_with(&ours) {
                stranded += 1;
                error!(op = %op.id, state = %op.state, owner = ?op.lease_owner, "still leased to us");
            }
            if seeded.contains(&apply_id) {
                *seeded_states.entry(op.state.to_string()).or_default() += 1;
            }
        }
    }
    if !seeded.is_empty() {
        let states: Vec<_> = seeded_states
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        summary += &format!("seeded operations: {}\n", states.join(" "));
        // The apply's own state, derived from its operations by the store.
        let mut apply_states: BTreeMap<String, usize> = BTreeMap::new();
        for &apply_id in seeded {
            if let Some(apply) = sh.store.applies().get(apply_id)? {
                *apply_states.entry(apply.state.to_string()).or_default() += 1;
            }
        }
        let states: Vec<_> = apply_states
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        summary += &format!("seeded applies: {}\n", states.join(" "));
    }
    summary += &format!("leases still held by this process: {stranded}\n");
    if let Err(err) = io::stdout().lock().write_all(summary.as_bytes()) {
        debug!(error = %err, "could not print the summary");
    }
    if stranded > 0 {
        return Err(format!("{stranded} operation(s) still carry a lease of this process").into());
    }
    Ok(())
}

/// The command line, or `None` after printing `--help`.
fn parse_args() -> Result<Option<Config>, String> {
    let mut cfg = Config {
        // An empty variable counts as unset, as in the CLI.
        database_url: ["APPLYOPS_DATABASE_URL", "DATABASE_URL"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|url| !url.is_empty()))
            .unwrap_or_else(|| "sqlite://applyops-worker-demo.db".into()),
        workers: 4,
        seed: 0,
        lease_ttl: Duration::from_secs(10),
        step: Duration::from_millis(20),
        exit_when_idle: false,
        fail_once: Vec::new(),
        revert_window: Duration::ZERO,
        scope: ClaimScope::any(),
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
            "--fail-once" => cfg.fail_once.push(value()?),
            "--revert-window" => cfg.revert_window = Duration::from_millis(number(value()?)?),
            "--deployment" => cfg.scope.deployments.push(value()?),
            "--environment" => cfg.scope.environment = Some(value()?),
            "-h" | "--help" => {
                writeln!(io::stdout(), "{USAGE}").ok();
                return Ok(None);
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if cfg.workers == 0 || cfg.lease_ttl.is_zero() {
        return Err("--workers and --lease-ttl-ms must be ≥ 1".into());
    }
    Ok(Some(cfg))
}
