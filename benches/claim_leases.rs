//! Benchmark: what 500 live leases cost a claim (worker contract revision 2, point 14; issue 10).
//!
//! Two MySQL databases are seeded alike: 1,050 applies of 10 `parallel` operations each. In
//! `held`, the oldest 500 operations run under a live lease (the rest, 10,000, are `pending`); in
//! `free`, nothing is held (all 10,500 are `pending`). A `Store` on a one-connection pool claims
//! from each in turn: 15 interleaved rounds (the side that goes first alternates) of 100
//! `claim_next` calls, each timed alone; every claimed operation is then completed through its
//! lease, untimed, so the number of live leases stays 500 and 0. Printed: each side's median of the
//! rounds' mean µs per claim, and their ratio (the bound: at most 1.2×).
//!
//! Run with `cargo bench --bench claim_leases` (also run by `make bench`). It needs the MySQL
//! server of the test suite (`TEST_DATABASE_URL` or `mysql://root@127.0.0.1:3306`), and creates and
//! drops its own two databases. Without `--bench` (as under `cargo test --all-targets`) it only
//! prints a line. `tests/it/claim_walk.rs` pins the rows such a claim reads.

mod common;

use std::time::{Duration, Instant};

use applyops::schema::{applies, apply_operations as ops};
use applyops::schema_types::datetime;
use applyops::state::{ApplyState, CutoverPolicy};
use applyops::store::claims::ClaimOptions;
use applyops::{PoolConfig, Store};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::MysqlConnection;

const APPLIES: i64 = 1_050;
const DEPLOYMENTS: i64 = 10;
const HELD: i64 = 500;
const ROUNDS: usize = 15;
const CLAIMS_PER_ROUND: usize = 100;

/// A database of this run, dropped at the end (also on a panic).
struct Database {
    server: String,
    name: String,
}

impl Database {
    fn create(server: &str, name: String) -> Database {
        let mut admin = MysqlConnection::establish(server).expect("connect to the MySQL server");
        admin
            .batch_execute(&format!("CREATE DATABASE `{name}`"))
            .expect("create the benchmark database");
        Database {
            server: server.to_owned(),
            name,
        }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Ok(mut admin) = MysqlConnection::establish(&self.server) {
            if let Err(err) = admin.batch_execute(&format!("DROP DATABASE `{}`", self.name)) {
                eprintln!("could not drop database {}: {err}", self.name);
            }
        }
    }
}

/// Seeds the applies and operations; with `held`, the oldest [`HELD`] operations run under a
/// lease that outlives the run.
fn seed(url: &str, held: bool) {
    let mut conn = MysqlConnection::establish(url).expect("seeding connection");
    let at = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a date");
    let live_until = at + chrono::Duration::days(3650);
    let apply_rows: Vec<_> = (0..APPLIES)
        .map(|a| {
            (
                applies::apply_identifier.eq(format!("apply-{a}")),
                applies::database_name.eq(format!("db-{a}")),
                applies::environment.eq("production"),
                applies::deployment.eq("main"),
                applies::state.eq(ApplyState::Running),
                applies::created_at.eq(datetime(at)),
                applies::updated_at.eq(datetime(at)),
            )
        })
        .collect();
    for chunk in apply_rows.chunks(500) {
        diesel::insert_into(applies::table)
            .values(chunk)
            .execute(&mut conn)
            .expect("seed applies");
    }
    let op_rows: Vec<_> = (0..APPLIES * DEPLOYMENTS)
        .map(|n| {
            let leased = held && n < HELD;
            let created = at + chrono::Duration::seconds(n);
            (
                ops::apply_id.eq(n / DEPLOYMENTS + 1),
                ops::deployment.eq(format!("deployment-{}", n % DEPLOYMENTS)),
                ops::database_name.eq(format!("db-{}", n / DEPLOYMENTS)),
                ops::environment.eq("production"),
                ops::state.eq(if leased {
                    ApplyState::Running
                } else {
                    ApplyState::Pending
                }),
                ops::cutover_policy.eq(CutoverPolicy::Parallel),
                ops::lease_owner.eq(if leased { "busy" } else { "" }),
                ops::lease_token.eq(if leased {
                    "0123456789abcdef0123456789abcdef"
                } else {
                    ""
                }),
                ops::lease_expires_at.eq(leased.then_some(live_until)),
                ops::created_at.eq(datetime(created)),
                ops::updated_at.eq(datetime(created)),
            )
        })
        .collect();
    for chunk in op_rows.chunks(1_000) {
        diesel::insert_into(ops::table)
            .values(chunk)
            .execute(&mut conn)
            .expect("seed operations");
    }
    common::decide_all(&mut applyops::db::establish(url).expect("deciding connection"));
}

/// One side: its store and the claims' options.
struct Side {
    label: &'static str,
    store: Store,
    options: ClaimOptions,
    round_means: Vec<f64>,
}

impl Side {
    fn open(label: &'static str, database: &Database, held: bool) -> Side {
        let config = PoolConfig {
            max_size: 1,
            ..PoolConfig::default()
        };
        let store = Store::open(&database.url(), config).expect("open the store");
        store.run_migrations().expect("migrate");
        seed(&database.url(), held);
        Side {
            label,
            store,
            options: ClaimOptions::new("bench-worker", Duration::from_secs(600)),
            round_means: Vec::new(),
        }
    }

    /// One round: [`CLAIMS_PER_ROUND`] claims, each timed alone and completed untimed.
    fn round(&mut self) {
        let mut spent = Duration::ZERO;
        for _ in 0..CLAIMS_PER_ROUND {
            let started = Instant::now();
            let claimed = self
                .store
                .claim_next(&self.options)
                .expect("claim")
                .expect("a pending operation is left");
            spent += started.elapsed();
            self.store
                .leased(&claimed.lease)
                .mark_completed()
                .expect("complete");
        }
        self.round_means
            .push(spent.as_secs_f64() * 1e6 / CLAIMS_PER_ROUND as f64);
    }

    fn median(&self) -> f64 {
        let mut sorted = self.round_means.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

fn main() {
    // `cargo test --all-targets` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("claim_leases: run with `cargo bench --bench claim_leases`");
        return;
    }
    let server = common::mysql_server();
    let stamp = format!("{}_{}", std::process::id(), chrono::Utc::now().timestamp());
    let free_db = Database::create(&server, format!("applyops_bench_leases_{stamp}_free"));
    let held_db = Database::create(&server, format!("applyops_bench_leases_{stamp}_held"));
    let mut free = Side::open("no live lease", &free_db, false);
    let mut held = Side::open("500 live leases", &held_db, true);
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            free.round();
            held.round();
        } else {
            held.round();
            free.round();
        }
    }
    println!(
        "claim_leases: claim_next through Store (one-connection pool) on {APPLIES} applies of \
         {DEPLOYMENTS} parallel operations; {ROUNDS} interleaved rounds of {CLAIMS_PER_ROUND} claims"
    );
    println!("{:<18} | {:>20}", "side", "µs per claim (median)");
    println!("{:-<18}-|-{:->20}", "", "");
    for side in [&free, &held] {
        println!("{:<18} | {:>20.1}", side.label, side.median());
    }
    println!(
        "ratio (500 live leases / none): {:.2}x (bound: 1.2x)",
        held.median() / free.median()
    );
}
