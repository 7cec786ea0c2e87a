//! Benchmark: what `test_on_check_out` costs per pool checkout, and per one-statement store call.
//!
//! Run with `cargo bench` (or `make bench`). MySQL numbers need a server: `TEST_DATABASE_URL`
//! (a `mysql://user:password@host:port` server URL) or `mysql://root@127.0.0.1:3306`; the benchmark
//! creates and drops its own database. SQLite runs in a temp file. Variants are measured in
//! interleaved rounds in one process and reported as ratios, so machine noise affects both alike.

mod common;

use std::time::{Duration, Instant};

use applyops::models::{ApplyId, ApplyOperationId, NewApplyOperation};
use applyops::{PoolConfig, Store};
use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection};

const ROUNDS: usize = 15;
const ITERATIONS_PER_ROUND: usize = 400;

struct Variant {
    name: &'static str,
    store: Store,
    op_id: ApplyOperationId,
}

fn open(url: &str, test_on_check_out: bool, name: &'static str) -> Variant {
    // "ping on" pings every checkout (`ping_after_idle` 0), the cost the idle rule now avoids.
    let config = PoolConfig {
        max_size: 1,
        test_on_check_out,
        ping_after_idle: Duration::ZERO,
        ..PoolConfig::default()
    };
    let store = Store::open(url, config).expect("open pool");
    store.run_migrations().expect("migrate");
    let op_id = match store
        .apply_operations()
        .get_by_apply_and_deployment(ApplyId(1), "bench")
        .unwrap()
    {
        Some(op) => op.id,
        None => store
            .apply_operations()
            .insert(&NewApplyOperation::new(ApplyId(1), "bench"))
            .unwrap(),
    };
    Variant { name, store, op_id }
}

/// Median nanoseconds per call of `f` over interleaved rounds, one entry per variant.
fn measure(variants: &[Variant], f: impl Fn(&Variant)) -> Vec<f64> {
    let mut samples = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for variant in variants {
        for _ in 0..ITERATIONS_PER_ROUND / 4 {
            f(variant); // warm-up
        }
    }
    for _ in 0..ROUNDS {
        for (i, variant) in variants.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..ITERATIONS_PER_ROUND {
                f(variant);
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / ITERATIONS_PER_ROUND as f64);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

fn report(backend: &str, what: &str, variants: &[Variant], ns: &[f64]) {
    for (variant, ns) in variants.iter().zip(ns) {
        println!(
            "{backend:<7} {what:<34} {:<26} {:>10.1} µs/op",
            variant.name,
            ns / 1_000.0
        );
    }
    println!(
        "{backend:<7} {what:<34} {:<26} {:>10.2}x",
        "ratio (ping / no ping)",
        ns[1] / ns[0]
    );
}

fn bench_backend(backend: &str, url: &str) {
    let variants = [
        open(url, false, "test_on_check_out = false"),
        open(url, true, "test_on_check_out = true"),
    ];
    let ns = measure(&variants, |v| drop(v.store.connection().unwrap()));
    report(backend, "checkout + return", &variants, &ns);
    let ns = measure(&variants, |v| {
        v.store.apply_operations().get(v.op_id).unwrap();
    });
    report(backend, "Store get (1 statement)", &variants, &ns);
    let ns = measure(&variants, |v| {
        v.store.apply_operations().mark_started(v.op_id).unwrap()
    });
    report(backend, "Store mark_started (1 statement)", &variants, &ns);
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pool_checkout: run with `cargo bench` to measure");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = dir.path().join("bench.db").display().to_string();
    bench_backend("sqlite", &sqlite_url);

    let server = common::mysql_server();
    let Ok(mut admin) = MysqlConnection::establish(&server) else {
        println!("mysql   skipped: no server at {server} (set TEST_DATABASE_URL)");
        return;
    };
    let name = format!("applyops_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE `{name}`"))
        .unwrap();
    bench_backend("mysql", &format!("{server}/{name}"));
    admin
        .batch_execute(&format!("DROP DATABASE `{name}`"))
        .unwrap();
}
