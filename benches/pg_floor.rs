//! Benchmark: what applyops calls cost on PostgreSQL, as ratios to a floor: the raw `postgres`
//! crate (a synchronous client, no Diesel, no pool, its statements prepared once) doing the
//! minimal equivalent on the same server in the same run, both over TCP.
//!
//! Run with `cargo bench --bench pg_floor` (about a minute once built). It needs a PostgreSQL
//! server: `TEST_POSTGRES_URL` (a `postgres://user:password@host:port` server URL) or
//! `postgres://postgres@127.0.0.1:5432`. It creates its own database
//! (`applyops_bench_pg_floor_<pid>`), migrates it with `Store::run_migrations`, seeds it through the
//! store, and drops it at the end. Without `--bench` (as under `cargo test --all-targets`) it only
//! prints a line.
//!
//! # Method
//!
//! applyops runs through a [`Store`] with a one-connection pool; raw is one `postgres::Client`
//! held for the whole run with the session applyops gives its connections (UTC). Every case is
//! warmed up, then measured in `ROUNDS` rounds of `ITERATIONS` back-to-back calls per side, the
//! sides alternately (applyops first in even rounds), so machine noise hits both alike. The table
//! shows each side's median time per call over the rounds, their ratio, and the lowest and highest
//! ratio of a single round.
//!
//! # The cases, and what the raw side does
//!
//! 1. **get**: `store.apply_operations().get(id)`. Raw: a prepared `SELECT` of the operation's
//!    columns by id, the row's values decoded.
//! 2. **insert**: an operation into an apply that has none yet (a fresh apply per call). Raw:
//!    `BEGIN`; `SELECT database_name, environment FROM applies WHERE id = $1 FOR UPDATE`; `INSERT …
//!    RETURNING id`; `COMMIT`.
//! 3. **leased state write**: `waiting_for_cutover` and `running` in turn on a held operation whose
//!    apply stays `running`. Raw: `BEGIN`; locking the apply's row; the guarded `UPDATE` (id and
//!    lease token); `COMMIT`.
//! 4. **heartbeat**: `store.heartbeat(&mut lease)`. Raw: one guarded `UPDATE … SET
//!    lease_expires_at = clock_timestamp() … RETURNING lease_expires_at`.
//! 5. **claim_next**: over pending operations of `parallel` rollouts, one per apply, which both
//!    sides drain from the oldest. Raw: the one-statement claim, `UPDATE apply_operations SET state
//!    = 'running', the lease … WHERE id = (SELECT id FROM apply_operations WHERE copy_walk AND state
//!    = 'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id`.

use std::time::{Duration, Instant};

use applyops::db::PoolConfig;
use applyops::models::{
    ApplyId, ApplyOperationId, NewApplyOperation, NewRollout, NewRolloutOperation,
};
use applyops::state::{ApplyState, CutoverPolicy};
use applyops::store::claims::ClaimOptions;
use applyops::Store;

const ROUNDS: usize = 15;
const ITERATIONS: usize = 40;
const WARMUP: usize = 10;
const CALLS_PER_SIDE: usize = WARMUP + ROUNDS * ITERATIONS;
const LEASE_TTL: Duration = Duration::from_secs(3_600);

const GET: &str = "SELECT id, apply_id, deployment, target, state, error_message, started_at, \
     completed_at, created_at, updated_at, cutover_policy, on_failure, attempt, lease_owner, \
     lease_acquired_at, lease_expires_at, database_name, environment, holds_target, engine_state, \
     external_id, failure_seq FROM apply_operations WHERE id = $1 LIMIT 1";
const INSERT_LOCK: &str = "SELECT database_name, environment FROM applies WHERE id = $1 FOR UPDATE";
const INSERT: &str = "INSERT INTO apply_operations (apply_id, deployment, target, \
     cutover_policy, on_failure, state, database_name, environment, holds_target, created_at, \
     updated_at) VALUES ($1, $2, '', 'parallel', 'halt', 'pending', $3, $4, TRUE, \
     statement_timestamp() AT TIME ZONE 'UTC', statement_timestamp() AT TIME ZONE 'UTC') \
     RETURNING id";
const LOCK_APPLY: &str = "SELECT id FROM applies WHERE id = $1 FOR UPDATE";
const WRITE: &str = "UPDATE apply_operations SET state = $1, \
     updated_at = statement_timestamp() AT TIME ZONE 'UTC' \
     WHERE id = $2 AND lease_token = $3 AND lease_owner = $4";
const HEARTBEAT: &str = "UPDATE apply_operations SET lease_expires_at = \
     (clock_timestamp() AT TIME ZONE 'UTC') + $1::int8 * INTERVAL '1 microsecond' \
     WHERE id = $2 AND lease_token = $3 AND lease_owner = $4 RETURNING lease_expires_at";
const CLAIM: &str = "UPDATE apply_operations SET state = 'running', \
     started_at = COALESCE(started_at, clock_timestamp() AT TIME ZONE 'UTC'), \
     lease_owner = $1, lease_token = md5(random()::text), \
     lease_acquired_at = clock_timestamp() AT TIME ZONE 'UTC', \
     lease_expires_at = (clock_timestamp() AT TIME ZONE 'UTC') + INTERVAL '1 hour', \
     updated_at = clock_timestamp() AT TIME ZONE 'UTC' \
     WHERE id = (SELECT id FROM apply_operations WHERE copy_walk AND state = 'pending' \
     ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Get,
    Insert,
    LeasedWrite,
    Heartbeat,
    Claim,
}

const CASES: [Case; 5] = [
    Case::Get,
    Case::Insert,
    Case::LeasedWrite,
    Case::Heartbeat,
    Case::Claim,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Get => "get",
            Case::Insert => "insert",
            Case::LeasedWrite => "leased state write",
            Case::Heartbeat => "heartbeat",
            Case::Claim => "claim_next",
        }
    }
}

/// The PostgreSQL server: `TEST_POSTGRES_URL` without its database path, else the local one.
fn pg_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
            format!(
                "{scheme}://{}",
                rest.split(['/', '?']).next().unwrap_or(rest)
            )
        })
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// What one side needs for its calls: its own held operations, its own empty applies.
struct SideRows {
    /// An operation to read.
    get: ApplyOperationId,
    /// Applies without operations, one per insert.
    empty_applies: Vec<ApplyId>,
    /// The held operation the leased writes and heartbeats go to.
    lease: applyops::models::OperationLease,
}

fn seed_side(store: &Store, side: &str) -> SideRows {
    let held = store
        .create_rollout(
            &NewRollout::new(
                format!("{side}-held"),
                format!("{side}-db"),
                "production",
                "bench",
            )
            .operation(
                NewRolloutOperation::new("held").with_cutover_policy(CutoverPolicy::Parallel),
            )
            .operation(
                NewRolloutOperation::new("second").with_cutover_policy(CutoverPolicy::Parallel),
            ),
        )
        .expect("seed the held rollout");
    let options = ClaimOptions::new(format!("bench-{side}"), LEASE_TTL);
    let first = store
        .claim_next(&options)
        .unwrap()
        .expect("the held operation");
    let second = store.claim_next(&options).unwrap().expect("its sibling");
    assert_eq!(first.operation.apply_id, held.apply.id);
    assert_eq!(second.operation.apply_id, held.apply.id);
    let empty_applies = (0..CALLS_PER_SIDE)
        .map(|n| {
            store
                .applies()
                .insert(&applyops::models::NewApply::new(
                    format!("{side}-empty-{n}"),
                    format!("{side}-db-{n}"),
                    "production",
                    "main",
                ))
                .expect("seed an empty apply")
        })
        .collect();
    SideRows {
        get: first.operation.id,
        empty_applies,
        lease: first.lease,
    }
}

struct Applyops {
    store: Store,
    rows: SideRows,
    options: ClaimOptions,
    flip: bool,
}

impl Applyops {
    fn call(&mut self, case: Case, n: usize) {
        match case {
            Case::Get => {
                assert!(self
                    .store
                    .apply_operations()
                    .get(self.rows.get)
                    .unwrap()
                    .is_some());
            }
            Case::Insert => {
                let apply = self.rows.empty_applies[n];
                self.store
                    .apply_operations()
                    .insert(
                        &NewApplyOperation::new(apply, "only")
                            .with_cutover_policy(CutoverPolicy::Parallel),
                    )
                    .unwrap();
            }
            Case::LeasedWrite => {
                self.flip = !self.flip;
                let state = if self.flip {
                    ApplyState::WaitingForCutover
                } else {
                    ApplyState::Running
                };
                self.store
                    .leased(&self.rows.lease)
                    .update_state(state)
                    .unwrap();
            }
            Case::Heartbeat => {
                self.store.heartbeat(&mut self.rows.lease).unwrap();
            }
            Case::Claim => {
                self.store
                    .claim_next(&self.options)
                    .unwrap()
                    .expect("a pending operation");
            }
        }
    }
}

struct Raw {
    client: postgres::Client,
    rows: SideRows,
    get: postgres::Statement,
    insert_lock: postgres::Statement,
    insert: postgres::Statement,
    lock_apply: postgres::Statement,
    write: postgres::Statement,
    heartbeat: postgres::Statement,
    claim: postgres::Statement,
    flip: bool,
}

impl Raw {
    fn open(url: &str, rows: SideRows) -> Raw {
        let mut client = postgres::Client::connect(url, postgres::NoTls).expect("raw connect");
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .expect("raw session");
        let mut prepare = |sql: &str| client.prepare(sql).expect("prepare");
        let (get, insert_lock, insert, lock_apply, write, heartbeat, claim) = (
            prepare(GET),
            prepare(INSERT_LOCK),
            prepare(INSERT),
            prepare(LOCK_APPLY),
            prepare(WRITE),
            prepare(HEARTBEAT),
            prepare(CLAIM),
        );
        Raw {
            client,
            rows,
            get,
            insert_lock,
            insert,
            lock_apply,
            write,
            heartbeat,
            claim,
            flip: false,
        }
    }

    fn call(&mut self, case: Case, n: usize) {
        let lease = &self.rows.lease;
        let id = lease.operation_id.0;
        let token = lease.token.expose().to_owned();
        match case {
            Case::Get => {
                let row = self
                    .client
                    .query_one(&self.get, &[&self.rows.get.0])
                    .unwrap();
                let _: i64 = row.get(0);
                let _: String = row.get(4);
                let _: Option<chrono::NaiveDateTime> = row.get(15);
            }
            Case::Insert => {
                let apply = self.rows.empty_applies[n].0;
                let mut tx = self.client.transaction().unwrap();
                let names = tx.query_one(&self.insert_lock, &[&apply]).unwrap();
                let (database, environment): (String, String) = (names.get(0), names.get(1));
                let row = tx
                    .query_one(&self.insert, &[&apply, &"only", &database, &environment])
                    .unwrap();
                let _: i64 = row.get(0);
                tx.commit().unwrap();
            }
            Case::LeasedWrite => {
                self.flip = !self.flip;
                let state = if self.flip {
                    "waiting_for_cutover"
                } else {
                    "running"
                };
                let mut tx = self.client.transaction().unwrap();
                tx.query_one(&self.lock_apply, &[&lease.apply_id.0])
                    .unwrap();
                let matched = tx
                    .execute(&self.write, &[&state, &id, &token, &lease.owner])
                    .unwrap();
                assert_eq!(matched, 1);
                tx.commit().unwrap();
            }
            Case::Heartbeat => {
                let micros = i64::try_from(LEASE_TTL.as_micros()).unwrap();
                let row = self
                    .client
                    .query_one(&self.heartbeat, &[&micros, &id, &token, &lease.owner])
                    .unwrap();
                let _: chrono::NaiveDateTime = row.get(0);
            }
            Case::Claim => {
                let row = self
                    .client
                    .query_one(&self.claim, &[&"bench-raw-claims"])
                    .unwrap();
                let _: i64 = row.get(0);
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("pg_floor: run with `cargo bench --bench pg_floor`");
        return;
    }
    let server = pg_server();
    let name = format!("applyops_bench_pg_floor_{}", std::process::id());
    let mut admin =
        postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls).expect("admin");
    // One statement per call: several in one string run as one transaction, which these refuse.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop a leftover bench database");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create the bench database");
    let url = format!("{server}/{name}");
    let result = std::panic::catch_unwind(|| run(&url));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .expect("drop the bench database");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn run(url: &str) {
    let store = Store::open(
        url,
        PoolConfig {
            max_size: 1,
            ..PoolConfig::default()
        },
    )
    .expect("open the store");
    store.run_migrations().expect("migrate");
    let ours = seed_side(&store, "applyops");
    let theirs = seed_side(&store, "raw");
    // Pending operations both sides' claims drain, one parallel rollout per operation.
    for n in 0..2 * CALLS_PER_SIDE + 20 {
        store
            .create_rollout(
                &NewRollout::new(
                    format!("pending-{n}"),
                    format!("pdb-{n}"),
                    "production",
                    "bench",
                )
                .operation(
                    NewRolloutOperation::new("only").with_cutover_policy(CutoverPolicy::Parallel),
                ),
            )
            .expect("seed a pending rollout");
    }
    store
        .run(|conn| {
            diesel::connection::SimpleConnection::batch_execute(conn, "ANALYZE")?;
            Ok(())
        })
        .expect("analyze");
    let mut applyops = Applyops {
        store,
        rows: ours,
        options: ClaimOptions::new("bench-applyops-claims", LEASE_TTL),
        flip: false,
    };
    let mut raw = Raw::open(url, theirs);
    println!(
        "pg_floor: {ROUNDS} rounds of {ITERATIONS} calls per case and side, after {WARMUP} \
         warm-up calls; median µs per call"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>7} {:>14}",
        "case", "applyops", "raw", "ratio", "round ratios"
    );
    for case in CASES {
        let mut next = [0usize; 2];
        for _ in 0..WARMUP {
            applyops.call(case, next[0]);
            next[0] += 1;
            raw.call(case, next[1]);
            next[1] += 1;
        }
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut sample = [0.0f64; 2];
            for side in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let started = Instant::now();
                for _ in 0..ITERATIONS {
                    if side == 0 {
                        applyops.call(case, next[0]);
                    } else {
                        raw.call(case, next[1]);
                    }
                    next[side] += 1;
                }
                sample[side] = started.elapsed().as_secs_f64() * 1e6 / ITERATIONS as f64;
            }
            ours.push(sample[0]);
            theirs.push(sample[1]);
            ratios.push(sample[0] / sample[1]);
        }
        let (a, r) = (median(&mut ours), median(&mut theirs));
        ratios.sort_by(f64::total_cmp);
        println!(
            "{:<20} {:>10.0} {:>10.0} {:>6.2}× {:>6.2}–{:.2}×",
            case.name(),
            a,
            r,
            a / r,
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
}
