//! Benchmark: copy claims per second with 1, 2, 4 and 8 concurrent workers, on SQLite, PostgreSQL
//! and MySQL/MariaDB, plus what one claim costs the MySQL server in statements. PostgreSQL:
//! `TEST_POSTGRES_URL` or `postgres://postgres@127.0.0.1:5432`, on a database the benchmark creates
//! and drops.
//!
//! Run with `cargo bench --bench claims` (about a minute). MySQL numbers need a server:
//! `TEST_DATABASE_URL` (a `mysql://user:password@host:port` server URL) or
//! `mysql://root@127.0.0.1:3306`; the benchmark creates and drops its own database. SQLite runs in a
//! temp file. Without `--bench` (as under `cargo test --all-targets`) it only prints a line.
//!
//! **Throughput.** Every drain starts from the same freshly seeded tables: `PENDING` operations with
//! the `parallel` cutover policy (so every one is startable at once; `rolling` would serialise an
//! apply's operations), `DEPLOYMENTS` per apply, their applies interleaved in claim order, on top of
//! `HISTORY` older completed operations that the claim index has to skip. `W` threads share one
//! `Store` (a pool of `MAX_WORKERS` connections, production defaults otherwise, so
//! `test_on_check_out` is on) and each loops `claim_next`, then `mark_completed` through the lease,
//! until nothing is `pending`. Claims/s is claims over the wall time of the drain. Each worker count
//! is drained `ROUNDS` times, in alternating order (1, 2, 4, 8, then 8, 4, 2, 1), and the table sums
//! the rounds and shows each round's rate. Every drain checks that each seeded operation was claimed
//! exactly once, as a start, and ended `completed`, and panics otherwise.
//!
//! A "lost race" is a `claim_next` that returned `None` while `pending` rows were still left (all of
//! them locked by in-flight claims, the row changed between the SELECT and the UPDATE, or on a
//! cluster the claim's transaction lost a certification or brute-force race to another node's and
//! every retry lost too); the worker then tries again.
//!
//! **Raw row.** On MySQL, every drain is followed by the same drain through the raw `mysql` crate:
//! per worker its own connection, the 4-statement claim (BEGIN; the oldest `pending` row of the
//! copy claim's walk, `FOR UPDATE SKIP LOCKED`; its UPDATE; COMMIT) and a one-statement fenced
//! completion, no rule evaluated. The `raw` row's 4-worker/1-worker ratio is the scaling a claim is
//! compared with (printed below the table).
//!
//! **Galera.** With `CLUSTER_URLS` set (one server URL per node; `scripts/cluster.sh` sets it:
//! `./scripts/cluster.sh cargo bench --bench claims`), a third table row, `galera`, drains with the
//! workers spread over the nodes, one store per node. Errors from `claim_next` or `mark_completed` are not hidden: they are counted,
//! printed verbatim with their `Debug` form, and the call retried.
//!
//! **Statements.** On a one-connection pool, with and without `test_on_check_out`, one worker makes
//! `STATEMENT_CLAIMS` claims and then completes them, while the server counts: the global `Questions`
//! (server-wide, so other clients would inflate it) and the pool connection's own session `Questions`
//! and `Com_*` counters (exact, per command). Counter reads are themselves counted; their cost is
//! measured by two reads back to back and subtracted.

mod common;

use common::SeedApply;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use applyops::db::DbConnection;
use applyops::schema::{applies, apply_operations};
use applyops::schema_types::{datetime, DatetimeValue};
use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{ClaimKind, ClaimOptions};
use applyops::{PoolConfig, Store};
use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

/// The worker counts measured, in order; the first is the baseline of the ratios.
const WORKERS: [usize; 4] = [1, 2, 4, 8];
const MAX_WORKERS: usize = 8;
/// Claimable operations seeded for each drain.
const PENDING: usize = 1_000;
/// Drains per worker count; the table sums them.
const ROUNDS: usize = 2;
/// Completed operations seeded underneath them.
const HISTORY: usize = 10_000;
/// Operations per apply.
const DEPLOYMENTS: usize = 10;
/// Claims in each statement-count measurement (MySQL).
const STATEMENT_CLAIMS: usize = 500;
/// Rows per multi-row INSERT while seeding.
const BATCH: usize = 1_000;
/// Long enough that no lease expires during a run, so every claim is a start, never a recovery.
const LEASE_TTL: Duration = Duration::from_secs(600);
/// A worker gives up (panics) after this many errors: something is broken, not contended.
const MAX_ERRORS_PER_WORKER: usize = 1_000;

#[derive(Insertable)]
#[diesel(table_name = apply_operations)]
#[diesel(treat_none_as_default_value = false)]
struct SeedOperation {
    id: i64,
    apply_id: i64,
    deployment: String,
    target: String,
    state: ApplyState,
    started_at: Option<NaiveDateTime>,
    completed_at: Option<NaiveDateTime>,
    created_at: DatetimeValue,
    updated_at: DatetimeValue,
    cutover_policy: CutoverPolicy,
    on_failure: FailurePolicy,
}

/// What a seed put in the database: the pending operations are ids `first_pending..=last_pending`.
struct Seeded {
    first_pending: i64,
    last_pending: i64,
}

impl Seeded {
    fn count(&self) -> usize {
        (self.last_pending - self.first_pending + 1) as usize
    }
}

/// Empties the tables and seeds `history` completed and `pending` claimable (`parallel`) operations.
/// History is older than the pending rows, as in production; pending rows of different applies are
/// interleaved in claim order.
fn reset_and_seed(store: &Store, history: usize, pending: usize) -> Seeded {
    let base = Utc::now().naive_utc().trunc_subsecs(6);
    let history_start = base - chrono::Duration::days(2);
    let pending_start = base - chrono::Duration::hours(1);
    let ms = chrono::Duration::milliseconds;
    let history_applies = history.div_ceil(DEPLOYMENTS);
    let pending_applies = pending.div_ceil(DEPLOYMENTS);

    let mut seed_applies = Vec::with_capacity(history_applies + pending_applies);
    for a in 0..history_applies + pending_applies {
        let done = a < history_applies;
        let created = if done {
            history_start + ms(a as i64)
        } else {
            pending_start
        };
        seed_applies.push(SeedApply {
            id: a as i64 + 1,
            apply_identifier: format!("bench-apply-{a}"),
            database_name: "bench".into(),
            environment: "production".into(),
            deployment: "bench".into(),
            state: if done {
                ApplyState::Completed
            } else {
                ApplyState::Pending
            },
            created_at: datetime(created),
            updated_at: datetime(created),
            started_at: done.then_some(created),
            completed_at: done.then_some(created),
            defer_cutover: false,
        });
    }
    let mut seed_ops = Vec::with_capacity(history + pending);
    for h in 0..history {
        let created = history_start + ms(h as i64);
        seed_ops.push(SeedOperation {
            id: h as i64 + 1,
            apply_id: (h / DEPLOYMENTS) as i64 + 1,
            deployment: format!("deploy-{:02}", h % DEPLOYMENTS),
            target: String::new(),
            state: ApplyState::Completed,
            started_at: Some(created),
            completed_at: Some(created + ms(1)),
            created_at: datetime(created),
            updated_at: datetime(created + ms(1)),
            cutover_policy: CutoverPolicy::Rolling,
            on_failure: FailurePolicy::Halt,
        });
    }
    for p in 0..pending {
        // Round-robin over the pending applies, so consecutive claims hit different applies.
        let created = pending_start + ms(p as i64);
        seed_ops.push(SeedOperation {
            id: (history + p) as i64 + 1,
            apply_id: (history_applies + p % pending_applies) as i64 + 1,
            deployment: format!("deploy-{:02}", p / pending_applies),
            target: String::new(),
            state: ApplyState::Pending,
            started_at: None,
            completed_at: None,
            created_at: datetime(created),
            updated_at: datetime(created),
            cutover_policy: CutoverPolicy::Parallel,
            on_failure: FailurePolicy::Halt,
        });
    }

    // Typed multi-row INSERTs, written once per backend (the connection types differ).
    macro_rules! insert_all {
        ($conn:expr) => {
            $conn
                .transaction::<_, diesel::result::Error, _>(|c| {
                    for chunk in seed_applies.chunks(BATCH) {
                        diesel::insert_into(applies::table)
                            .values(chunk)
                            .execute(c)?;
                    }
                    for chunk in seed_ops.chunks(BATCH) {
                        diesel::insert_into(apply_operations::table)
                            .values(chunk)
                            .execute(c)?;
                    }
                    Ok(())
                })
                .expect("seed")
        };
    }
    let mut conn = store.connection().expect("checkout for seeding");
    match &mut *conn {
        DbConnection::Mysql(c) => {
            c.batch_execute(
                "TRUNCATE TABLE apply_control_requests; TRUNCATE TABLE apply_operations; \
                 TRUNCATE TABLE applies;",
            )
            .expect("truncate");
            insert_all!(c);
            // InnoDB would recalculate statistics in the background after this much change anyway;
            // doing it now makes every drain start from the same plan.
            c.batch_execute("ANALYZE TABLE applies, apply_operations")
                .expect("analyze");
        }
        DbConnection::Pg(c) => {
            c.batch_execute(
                "TRUNCATE TABLE apply_control_requests, apply_operations, applies RESTART IDENTITY",
            )
            .expect("truncate");
            insert_all!(c);
            // As on MySQL: every drain starts from statistics of the seeded tables.
            c.batch_execute("ANALYZE applies, apply_operations")
                .expect("analyze");
        }
        DbConnection::Sqlite(c) => {
            c.batch_execute(
                "DELETE FROM apply_control_requests; DELETE FROM apply_operations; \
                 DELETE FROM applies;",
            )
            .expect("delete");
            // No ANALYZE: the store never runs one, so production plans come without sqlite_stat1.
            insert_all!(c);
        }
    }
    common::decide_all(&mut conn);
    Seeded {
        first_pending: history as i64 + 1,
        last_pending: (history + pending) as i64,
    }
}

fn count_in_state(store: &Store, state: ApplyState, ids: &Seeded) -> i64 {
    apply_operations::table
        .filter(apply_operations::state.eq(state))
        .filter(apply_operations::id.between(ids.first_pending, ids.last_pending))
        .count()
        .get_result(&mut *store.connection().expect("checkout"))
        .expect("count")
}

fn pending_left(store: &Store) -> i64 {
    apply_operations::table
        .filter(apply_operations::state.eq(ApplyState::Pending))
        .count()
        .get_result(&mut *store.connection().expect("checkout"))
        .expect("count pending")
}

#[derive(Default)]
struct WorkerResult {
    ids: Vec<i64>,
    lost_races: usize,
    claim_errors: Vec<String>,
    complete_errors: Vec<String>,
}

fn worker(store: &Store, owner: String, start: &Barrier) -> WorkerResult {
    let options = ClaimOptions::new(owner, LEASE_TTL);
    let mut out = WorkerResult::default();
    start.wait();
    loop {
        match store.claim_next(&options) {
            Ok(Some(claimed)) => {
                assert_eq!(
                    claimed.kind,
                    ClaimKind::Start,
                    "operation {} was claimed as {:?}, not a start",
                    claimed.operation.id,
                    claimed.kind
                );
                out.ids.push(claimed.operation.id.get());
                let leased = store.leased(&claimed.lease);
                while let Err(err) = leased.mark_completed() {
                    out.complete_errors.push(format!("{err} [{err:?}]"));
                    assert!(
                        out.complete_errors.len() <= MAX_ERRORS_PER_WORKER,
                        "mark_completed keeps failing: {err} [{err:?}]"
                    );
                }
            }
            Ok(None) => {
                if pending_left(store) == 0 {
                    break;
                }
                out.lost_races += 1;
            }
            Err(err) => {
                out.claim_errors.push(format!("{err} [{err:?}]"));
                assert!(
                    out.claim_errors.len() <= MAX_ERRORS_PER_WORKER,
                    "claim_next keeps failing: {err} [{err:?}]"
                );
            }
        }
    }
    out
}

/// One or more drains with the same worker count, summed.
struct Drain {
    workers: usize,
    claims: usize,
    seconds: f64,
    /// Claims/s of each drain summed in, in the order run.
    rates: Vec<f64>,
    lost_races: usize,
    claim_errors: Vec<String>,
    complete_errors: Vec<String>,
}

impl Drain {
    fn per_second(&self) -> f64 {
        self.claims as f64 / self.seconds
    }

    fn merge(&mut self, other: Drain) {
        assert_eq!(self.workers, other.workers);
        self.claims += other.claims;
        self.seconds += other.seconds;
        self.rates.extend(other.rates);
        self.lost_races += other.lost_races;
        self.claim_errors.extend(other.claim_errors);
        self.complete_errors.extend(other.complete_errors);
    }
}

/// Seeds, drains with `workers` threads, and checks that every seeded operation was claimed once.
/// Worker `t` claims through `stores[t % stores.len()]` (one store per cluster node; one store
/// otherwise); the seeding and the checks go through the first.
fn drain(backend: &str, stores: &[Store], workers: usize) -> Drain {
    let store = &stores[0];
    let seeded = reset_and_seed(store, HISTORY, PENDING);
    let start = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|t| {
            let store = stores[t % stores.len()].clone();
            let start = Arc::clone(&start);
            let owner = format!("bench-{backend}-w{workers}-t{t}");
            thread::spawn(move || worker(&store, owner, &start))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let results: Vec<WorkerResult> = handles
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .collect();
    let seconds = began.elapsed().as_secs_f64();

    let mut ids = Vec::with_capacity(seeded.count());
    let (mut lost_races, mut claim_errors, mut complete_errors) = (0, Vec::new(), Vec::new());
    for r in results {
        ids.extend(r.ids);
        lost_races += r.lost_races;
        claim_errors.extend(r.claim_errors);
        complete_errors.extend(r.complete_errors);
    }
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{backend}, {workers} workers: {} claims were of an operation already claimed",
        ids.len() - unique.len()
    );
    assert_eq!(
        ids.len(),
        seeded.count(),
        "{backend}, {workers} workers: {} claims for {} seeded operations",
        ids.len(),
        seeded.count()
    );
    assert!(
        ids.iter()
            .all(|id| (seeded.first_pending..=seeded.last_pending).contains(id)),
        "{backend}, {workers} workers: a history row was claimed"
    );
    assert_eq!(
        count_in_state(store, ApplyState::Completed, &seeded),
        seeded.count() as i64,
        "{backend}, {workers} workers: not every seeded operation ended completed"
    );
    Drain {
        workers,
        claims: ids.len(),
        seconds,
        rates: vec![ids.len() as f64 / seconds],
        lost_races,
        claim_errors,
        complete_errors,
    }
}

/// The raw driver's claim (the `mysql` crate, no applyops): BEGIN; the oldest `pending` row of the
/// copy claim's walk, locked unless another claimer holds it; take it (state, lease, stamps);
/// COMMIT. Four round trips, no rule evaluated: the floor a claim is measured against.
const RAW_CLAIM_SELECT: &str = "SELECT id FROM apply_operations WHERE copy_walk = 1 AND state = \
'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED";
/// The raw claim's UPDATE: binds owner, token, TTL in µs, id.
const RAW_CLAIM_UPDATE: &str = "UPDATE apply_operations SET state = 'running', \
started_at = COALESCE(started_at, UTC_TIMESTAMP(6)), lease_owner = ?, lease_token = ?, \
lease_acquired_at = UTC_TIMESTAMP(6), \
lease_expires_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), \
updated_at = UTC_TIMESTAMP(6) WHERE id = ?";
/// The raw completion: binds id, owner, token (the lease's fence).
const RAW_COMPLETE: &str = "UPDATE apply_operations SET state = 'completed', \
completed_at = UTC_TIMESTAMP(6), lease_expires_at = NULL, updated_at = UTC_TIMESTAMP(6) \
WHERE id = ? AND lease_owner = ? AND lease_token = ?";

/// One raw worker: claims with the raw driver's 4-statement claim and completes each claim with one
/// fenced UPDATE, until nothing is `pending`.
fn raw_worker(url: &str, owner: String, start: &Barrier) -> WorkerResult {
    use mysql::prelude::Queryable as _;
    let mut conn = mysql::Conn::new(mysql::Opts::from_url(url).expect("a MySQL URL")).expect("raw");
    // The isolation applyops' sessions run at.
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .expect("READ COMMITTED");
    let select = conn.prep(RAW_CLAIM_SELECT).expect("prepare");
    let update = conn.prep(RAW_CLAIM_UPDATE).expect("prepare");
    let complete = conn.prep(RAW_COMPLETE).expect("prepare");
    let ttl = LEASE_TTL.as_micros() as i64;
    let mut out = WorkerResult::default();
    start.wait();
    let mut n = 0u64;
    loop {
        conn.query_drop("BEGIN").expect("BEGIN");
        let id: Option<i64> = conn.exec_first(&select, ()).expect("raw claim select");
        let Some(id) = id else {
            conn.query_drop("COMMIT").expect("COMMIT");
            let left: Option<i64> = conn
                .query_first("SELECT COUNT(*) FROM apply_operations WHERE state = 'pending'")
                .expect("count pending");
            if left == Some(0) {
                break;
            }
            out.lost_races += 1;
            continue;
        };
        n += 1;
        let token = format!("{:016x}{:016x}", std::process::id(), n);
        if let Err(err) = conn.exec_drop(&update, (&owner, &token, ttl, id)) {
            // A deadlock with another claimer (the server rolled the transaction back): a lost
            // race, as applyops counts its own.
            assert!(
                matches!(&err, mysql::Error::MySqlError(e) if e.code == 1213),
                "raw claim update: {err:?}"
            );
            conn.query_drop("ROLLBACK").expect("ROLLBACK");
            out.lost_races += 1;
            continue;
        }
        conn.query_drop("COMMIT").expect("COMMIT");
        out.ids.push(id);
        conn.exec_drop(&complete, (id, &owner, &token))
            .expect("raw completion");
    }
    out
}

/// Drains with every worker count through the raw driver ([`raw_worker`]), seeded like [`drain`].
fn raw_drain(store: &Store, url: &str, workers: usize) -> Drain {
    let seeded = reset_and_seed(store, HISTORY, PENDING);
    let start = Arc::new(Barrier::new(workers + 1));
    let handles: Vec<_> = (0..workers)
        .map(|t| {
            let start = Arc::clone(&start);
            let url = url.to_owned();
            let owner = format!("bench-raw-w{workers}-t{t}");
            thread::spawn(move || raw_worker(&url, owner, &start))
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let results: Vec<WorkerResult> = handles
        .into_iter()
        .map(|h| h.join().expect("raw worker panicked"))
        .collect();
    let seconds = began.elapsed().as_secs_f64();
    let ids: Vec<i64> = results.iter().flat_map(|r| r.ids.iter().copied()).collect();
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "raw, {workers} workers: a row claimed twice"
    );
    assert_eq!(
        ids.len(),
        seeded.count(),
        "raw, {workers} workers: claims vs seeded"
    );
    Drain {
        workers,
        claims: ids.len(),
        seconds,
        rates: vec![ids.len() as f64 / seconds],
        lost_races: results.iter().map(|r| r.lost_races).sum(),
        claim_errors: Vec::new(),
        complete_errors: Vec::new(),
    }
}

/// Drains with every worker count, through one store per URL in `urls` (see [`drain`]); with
/// `raw_url`, each drain is followed by the same drain through the raw driver ([`raw_drain`]), so
/// the two rows are measured interleaved, in the same run.
fn bench_throughput(backend: &str, urls: &[String]) -> Vec<Drain> {
    bench_throughput_beside_raw(backend, urls, None).0
}

/// [`bench_throughput`], and the raw driver's drains beside it when `raw_url` is given.
fn bench_throughput_beside_raw(
    backend: &str,
    urls: &[String],
    raw_url: Option<&str>,
) -> (Vec<Drain>, Vec<Drain>) {
    let config = PoolConfig {
        max_size: MAX_WORKERS as u32,
        ..PoolConfig::default()
    };
    let stores: Vec<Store> = urls
        .iter()
        .map(|url| Store::open(url, config.clone()).expect("open pool"))
        .collect();
    stores[0].run_migrations().expect("migrate");
    // Rounds alternate the order (1, 2, 4, 8, then 8, 4, 2, 1, ...), so a drift in machine load over
    // the run does not favour one end of the table.
    let mut drains: Vec<Option<Drain>> = WORKERS.iter().map(|_| None).collect();
    let mut raw_drains: Vec<Option<Drain>> = WORKERS.iter().map(|_| None).collect();
    let add = |slot: &mut Option<Drain>, d: Drain| match slot {
        Some(sum) => sum.merge(d),
        empty => *empty = Some(d),
    };
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..WORKERS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            add(&mut drains[i], drain(backend, &stores, WORKERS[i]));
            if let Some(url) = raw_url {
                add(&mut raw_drains[i], raw_drain(&stores[0], url, WORKERS[i]));
            }
        }
    }
    let measured = |d: Vec<Option<Drain>>| d.into_iter().flatten().collect();
    (measured(drains), measured(raw_drains))
}

/// The 4-worker/1-worker ratio of the MySQL row against the raw driver's own, measured in the same
/// run.
fn print_scaling(rows: &[(&str, Vec<Drain>)]) {
    let scaling = |name: &str| {
        let drains = &rows.iter().find(|(backend, _)| *backend == name)?.1;
        let one = drains.iter().find(|d| d.workers == 1)?.per_second();
        let four = drains.iter().find(|d| d.workers == 4)?.per_second();
        Some(four / one)
    };
    if let (Some(mysql), Some(raw)) = (scaling("mysql"), scaling("raw")) {
        println!();
        println!(
            "4 workers / 1 worker: applyops {mysql:.2}x, raw driver {raw:.2}x; applyops' scaling \
             is {:.2} of the raw driver's",
            mysql / raw
        );
    }
}

fn print_table(rows: &[(&str, Vec<Drain>)]) {
    println!();
    println!(
        "{:<8} {:>7} {:>7} {:>8} {:>9} {:>9} {:>21} {:>10} {:>7}",
        "backend",
        "workers",
        "claims",
        "seconds",
        "claims/s",
        "vs 1 wkr",
        "claims/s per round",
        "lost races",
        "errors"
    );
    for (backend, drains) in rows {
        let baseline = drains[0].per_second();
        for d in drains {
            println!(
                "{:<8} {:>7} {:>7} {:>8.2} {:>9.0} {:>8.2}x {:>21} {:>10} {:>7}",
                backend,
                d.workers,
                d.claims,
                d.seconds,
                d.per_second(),
                d.per_second() / baseline,
                d.rates
                    .iter()
                    .map(|r| format!("{r:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                d.lost_races,
                d.claim_errors.len() + d.complete_errors.len()
            );
        }
    }
    for (backend, drains) in rows {
        for d in drains {
            for (what, errors) in [
                ("claim_next", &d.claim_errors),
                ("mark_completed", &d.complete_errors),
            ] {
                let mut distinct: BTreeMap<&str, usize> = BTreeMap::new();
                for e in errors {
                    *distinct.entry(e).or_default() += 1;
                }
                for (text, n) in distinct {
                    println!(
                        "{backend} {} workers: {what} failed {n}x: {text}",
                        d.workers
                    );
                }
            }
        }
    }
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    value: i64,
    #[diesel(sql_type = BigInt)]
    connection: i64,
}

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

/// The server-wide `Questions` counter, read on the benchmark's own admin connection.
fn global_questions(admin: &mut MysqlConnection) -> i64 {
    diesel::sql_query("SHOW GLOBAL STATUS LIKE 'Questions'")
        .get_result::<Status>(admin)
        .expect("SHOW GLOBAL STATUS")
        .value
        .parse()
        .expect("Questions is a number")
}

/// Where the session status lives: MariaDB keeps it in `information_schema`, MySQL 8 only in
/// `performance_schema`.
const SESSION_STATUS_TABLES: [&str; 2] = [
    "information_schema.SESSION_STATUS",
    "performance_schema.session_status",
];

/// `Questions`, the `Com_*` command counters and the `Handler_read_*` / `Rows_read` row counters of
/// the pool's only connection, with that
/// connection's id (to prove it stayed the same one).
#[derive(Debug)]
struct Session {
    connection: i64,
    counters: BTreeMap<String, i64>,
}

impl Session {
    fn query(table: &str) -> String {
        format!(
            "SELECT UPPER(VARIABLE_NAME) AS name, CAST(VARIABLE_VALUE AS SIGNED) AS value, \
             CAST(CONNECTION_ID() AS SIGNED) AS connection FROM {table} \
             WHERE UPPER(VARIABLE_NAME) IN ('QUESTIONS', 'ROWS_READ') \
             OR UPPER(VARIABLE_NAME) LIKE 'COM\\_%' OR UPPER(VARIABLE_NAME) LIKE 'HANDLER\\_READ\\_%'"
        )
    }

    /// The first of [`SESSION_STATUS_TABLES`] this server has.
    fn table(store: &Store) -> &'static str {
        let conn = &mut *store.connection().expect("checkout");
        SESSION_STATUS_TABLES
            .into_iter()
            .find(|table| {
                diesel::sql_query(Session::query(table))
                    .load::<StatusRow>(conn)
                    .is_ok()
            })
            .expect("no readable session status table")
    }

    fn read(store: &Store, table: &str) -> Session {
        let rows = diesel::sql_query(Session::query(table))
            .load::<StatusRow>(&mut *store.connection().expect("checkout"))
            .expect("read session status");
        Session {
            connection: rows[0].connection,
            counters: rows.into_iter().map(|r| (r.name, r.value)).collect(),
        }
    }

    /// `self - earlier`, counter by counter.
    fn since(&self, earlier: &Session) -> BTreeMap<String, i64> {
        assert_eq!(
            self.connection, earlier.connection,
            "the one-connection pool replaced its connection mid-measurement"
        );
        self.counters
            .iter()
            .map(|(name, value)| (name.clone(), value - earlier.counters[name]))
            .collect()
    }
}

/// `a - b`, counter by counter.
fn minus(a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    a.iter().map(|(k, v)| (k.clone(), v - b[k])).collect()
}

/// `into += d`, counter by counter.
fn add(into: &mut BTreeMap<String, i64>, d: BTreeMap<String, i64>) {
    for (k, v) in d {
        *into.entry(k).or_default() += v;
    }
}

/// Per call: `total / n`, keeping only the counters that moved.
fn per_call(total: &BTreeMap<String, i64>, n: usize) -> BTreeMap<String, f64> {
    total
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| (k.clone(), *v as f64 / n as f64))
        .collect()
}

fn questions(counters: &BTreeMap<String, f64>) -> f64 {
    counters.get("QUESTIONS").copied().unwrap_or(0.0)
}

struct StatementCount {
    test_on_check_out: bool,
    /// Global `Questions` per claim + `mark_completed` pair.
    pair_global: f64,
    /// Per call, session-exact: `QUESTIONS` and every other counter that moved.
    claim: BTreeMap<String, f64>,
    complete: BTreeMap<String, f64>,
    claim_micros: f64,
    complete_micros: f64,
    /// Per claim while every earlier claim's lease is still held (the rows stay `running`).
    held_claim: BTreeMap<String, f64>,
    held_claim_micros: f64,
}

/// Statements per claim and per `mark_completed` on a one-connection pool, one worker, counted by the
/// server two ways:
/// - the pool connection's own session counters, read around every call (exact, and broken down by
///   command and by rows read);
/// - the global `Questions` counter around the whole run of claim + complete pairs (server-wide, so
///   any other client would inflate it); per claim that is the pair minus the measured cost of a
///   `mark_completed`.
///
/// Every counter read is itself counted; the cost of a read is measured by two reads back to back
/// and subtracted. A second run claims `STATEMENT_CLAIMS` rows without completing any, to show what
/// rows already held (`running`, still in the claim index) cost later claims.
fn count_statements(
    url: &str,
    admin: &mut MysqlConnection,
    test_on_check_out: bool,
) -> StatementCount {
    let n = STATEMENT_CLAIMS;
    let config = PoolConfig {
        max_size: 1,
        test_on_check_out,
        ..PoolConfig::default()
    };
    let store = Store::open(url, config).expect("open pool");
    let seeded = reset_and_seed(&store, HISTORY, 2 * n + 1);
    let options = ClaimOptions::new("bench-statements", LEASE_TTL);
    let claim = || {
        store
            .claim_next(&options)
            .unwrap()
            .expect("a claimable row")
    };
    // One claim outside the windows, so first-use work is done (PREPARE of the cached statements,
    // which the server does not count as a question anyway).
    store.leased(&claim().lease).mark_completed().unwrap();

    let g_before = global_questions(admin);
    let g_read = global_questions(admin) - g_before;
    let table = Session::table(&store);
    let s_before = Session::read(&store, table);
    let s_read = Session::read(&store, table).since(&s_before);
    let s_read_questions = s_read["QUESTIONS"];

    // Claim, complete, claim, complete, ...: as a worker does.
    let (mut claim_total, mut complete_total) = (BTreeMap::new(), BTreeMap::new());
    let (mut claim_time, mut complete_time) = (Duration::ZERO, Duration::ZERO);
    let g1 = global_questions(admin);
    let mut previous = Session::read(&store, table);
    for _ in 0..n {
        let began = Instant::now();
        let claimed = claim();
        claim_time += began.elapsed();
        let after_claim = Session::read(&store, table);
        add(
            &mut claim_total,
            minus(&after_claim.since(&previous), &s_read),
        );

        let began = Instant::now();
        store.leased(&claimed.lease).mark_completed().unwrap();
        complete_time += began.elapsed();
        let after_complete = Session::read(&store, table);
        add(
            &mut complete_total,
            minus(&after_complete.since(&after_claim), &s_read),
        );
        previous = after_complete;
    }
    let g2 = global_questions(admin);
    // g2 - g1 = the pairs + (2n + 1) session reads + the global read g2 itself.
    let pair_global = (g2 - g1 - (2 * n as i64 + 1) * s_read_questions - g_read) as f64 / n as f64;

    // Claims only: each one's predecessors are still `running` under live leases.
    let s1 = Session::read(&store, table);
    let began = Instant::now();
    let leases: Vec<_> = (0..n).map(|_| claim().lease).collect();
    let held_time = began.elapsed();
    let s2 = Session::read(&store, table);
    for lease in &leases {
        store.leased(lease).mark_completed().unwrap();
    }
    assert_eq!(
        count_in_state(&store, ApplyState::Completed, &seeded),
        seeded.count() as i64
    );

    let micros = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    StatementCount {
        test_on_check_out,
        pair_global,
        claim: per_call(&claim_total, n),
        complete: per_call(&complete_total, n),
        claim_micros: micros(claim_time),
        complete_micros: micros(complete_time),
        held_claim: per_call(&minus(&s2.since(&s1), &s_read), n),
        held_claim_micros: micros(held_time),
    }
}

fn print_statements(counts: &[StatementCount]) {
    println!();
    println!(
        "mysql, one worker on a one-connection pool, {STATEMENT_CLAIMS} claim + mark_completed \
         pairs; Questions per call (counter reads subtracted)"
    );
    println!(
        "{:<24} {:>13} {:>13} {:>11} {:>13} {:>11}",
        "pool", "claim session", "claim global", "claim µs", "complete sess", "complete µs"
    );
    for c in counts {
        println!(
            "{:<24} {:>13.2} {:>13.2} {:>11.0} {:>13.2} {:>11.0}",
            format!("test_on_check_out={}", c.test_on_check_out),
            questions(&c.claim),
            c.pair_global - questions(&c.complete),
            c.claim_micros,
            questions(&c.complete),
            c.complete_micros,
        );
    }
    println!(
        "(claim global = global Questions per pair minus the session-measured mark_completed cost)"
    );
    for c in counts {
        for (what, counters) in [
            ("claim_next", &c.claim),
            ("mark_completed", &c.complete),
            ("claim, held", &c.held_claim),
        ] {
            for (kind, prefixes) in [
                ("commands", &["COM_"][..]),
                ("rows", &["HANDLER_", "ROWS_"]),
            ] {
                let moved: Vec<String> = counters
                    .iter()
                    .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
                    .map(|(k, v)| format!("{}={v:.2}", k.to_lowercase()))
                    .collect();
                println!(
                    "  test_on_check_out={:<5} {what:<14} {kind:<8} per call: {}",
                    c.test_on_check_out,
                    moved.join(" ")
                );
            }
        }
    }
    if let [with_ping, without] = counts {
        println!(
            "checkout ping: {:.2} question(s) per claim_next, {:.2} per mark_completed \
             (test_on_check_out=true minus false)",
            questions(&with_ping.claim) - questions(&without.claim),
            questions(&with_ping.complete) - questions(&without.complete),
        );
    }
    for c in counts {
        let read = |m: &BTreeMap<String, f64>| m.get("ROWS_READ").copied().unwrap_or(0.0);
        println!(
            "claims while holding every earlier lease (test_on_check_out={}): {:.0} rows read and \
             {:.0} µs per claim, vs {:.0} rows and {:.0} µs when each claim is completed at once",
            c.test_on_check_out,
            read(&c.held_claim),
            c.held_claim_micros,
            read(&c.claim),
            c.claim_micros
        );
    }
    if counts
        .iter()
        .any(|c| (c.pair_global - questions(&c.claim) - questions(&c.complete)).abs() > 0.005)
    {
        println!(
            "note: global and session Questions differ: another client was active on the server \
             during the window; the session figures are the exact ones"
        );
    }
}

/// Drops the benchmark's MySQL database even if the benchmark panics.
/// The throughput drains on a Galera cluster (`CLUSTER_URLS`, one server URL per node, as
/// `scripts/cluster.sh` sets it): the workers spread over the nodes, one store per node.
fn bench_cluster(nodes: &str) -> Vec<Drain> {
    let nodes: Vec<&str> = nodes.split(',').collect();
    let name = format!("applyops_bench_claims_galera_{}", std::process::id());
    let mut admin = MysqlConnection::establish(nodes[0]).expect("connect to the first node");
    admin
        .batch_execute(&format!("CREATE DATABASE `{name}`"))
        .unwrap();
    let guard = DropDatabase {
        server: nodes[0],
        name,
    };
    let urls: Vec<String> = nodes
        .iter()
        .map(|node| format!("{node}/{}", guard.name))
        .collect();
    // The database reaches the other nodes in total order, a moment after the first answers.
    for url in &urls {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while MysqlConnection::establish(url).is_err() {
            assert!(Instant::now() < deadline, "{url} never had the database");
            thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    bench_throughput("galera", &urls)
}

struct DropDatabase<'a> {
    server: &'a str,
    name: String,
}

impl Drop for DropDatabase<'_> {
    fn drop(&mut self) {
        match MysqlConnection::establish(self.server) {
            Ok(mut admin) => {
                if let Err(err) = admin.batch_execute(&format!("DROP DATABASE `{}`", self.name)) {
                    eprintln!("could not drop database {}: {err}", self.name);
                }
            }
            Err(err) => eprintln!("could not drop database {}: {err}", self.name),
        }
    }
}

/// The PostgreSQL drains, on a database of their own on `TEST_POSTGRES_URL`'s server (else
/// `postgres://postgres@127.0.0.1:5432`), dropped afterwards; `None` when no server answers.
fn bench_postgres() -> Option<Vec<Drain>> {
    let server = std::env::var("TEST_POSTGRES_URL")
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
            format!(
                "{scheme}://{}",
                rest.split(['/', '?']).next().unwrap_or(rest)
            )
        })
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let admin = || diesel::pg::PgConnection::establish(&format!("{server}/postgres"));
    let Ok(mut conn) = admin() else {
        println!("postgres skipped: no server at {server} (set TEST_POSTGRES_URL)");
        return None;
    };
    let name = format!("applyops_bench_claims_{}", std::process::id());
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .unwrap();
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let drains =
        std::panic::catch_unwind(|| bench_throughput("postgres", &[format!("{server}/{name}")]));
    admin()
        .and_then(|mut conn| {
            conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .map_err(|err| diesel::ConnectionError::BadConnection(err.to_string()))
        })
        .expect("drop the PostgreSQL bench database");
    match drains {
        Ok(drains) => Some(drains),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("claims: run with `cargo bench --bench claims` to measure");
        return;
    }
    println!(
        "claims: {PENDING} pending `parallel` operations over {} applies on top of {HISTORY} \
         completed ones, drained by 1, 2, 4, 8 workers (claim_next + leased mark_completed), \
         {ROUNDS} rounds in alternating order; claims/s = all claims / all drain seconds",
        PENDING.div_ceil(DEPLOYMENTS)
    );
    let overall = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = dir.path().join("claims.db").display().to_string();
    let mut rows = vec![("sqlite", bench_throughput("sqlite", &[sqlite_url]))];
    if let Some(postgres) = bench_postgres() {
        rows.push(("postgres", postgres));
    }

    let server = common::mysql_server();
    let Ok(mut admin) = MysqlConnection::establish(&server) else {
        print_table(&rows);
        println!("mysql   skipped: no server at {server} (set TEST_DATABASE_URL)");
        return;
    };
    let name = format!("applyops_bench_claims_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE `{name}`"))
        .unwrap();
    let guard = DropDatabase {
        server: &server,
        name,
    };
    let url = format!("{server}/{}", guard.name);
    let (mysql, raw) = bench_throughput_beside_raw("mysql", std::slice::from_ref(&url), Some(&url));
    rows.push(("mysql", mysql));
    rows.push(("raw", raw));
    let counts = [true, false].map(|ping| count_statements(&url, &mut admin, ping));
    drop(guard);
    if let Ok(nodes) = std::env::var("CLUSTER_URLS") {
        rows.push(("galera", bench_cluster(&nodes)));
    }

    print_table(&rows);
    print_scaling(&rows);
    print_statements(&counts);
    println!();
    println!("total {:.1} s", overall.elapsed().as_secs_f64());
}
