//! `Innodb_row_lock_waits` over 4-worker drains of 300 operations on MySQL/MariaDB.
//!
//! Claims never wait for an operation row (SKIP LOCKED) and keep no lock on a row they reject. Since
//! the apply aggregate, every state write and claim is serialised per apply: it locks the apply's row
//! first. A claim skips an apply whose row is locked (SKIP LOCKED) and waits for one only when no
//! other candidate is left; a state write waits its turn, which is the point of the serialisation
//! (two writers finishing an apply's last operations must see each other). So waits now happen, on
//! apply rows, when a worker's write meets a claim or write of the same apply: measured at 133-181
//! and (without think time) up to 318 over these drains, each a fraction of a millisecond. The test
//! bounds them by the writes the workers made: a write locks its apply's row once and so waits at
//! most once, and a claim waits only for the last busy apply when nothing else is left. Claims that
//! waited for the operation rows they walk (the locking scan before SKIP LOCKED) caused 185 waits in
//! the think-time drain when writes took no lock at all.
//!
//! A test binary of its own: the counter is server-wide, and Cargo runs test binaries one after
//! another, so no other test of this suite adds to it while this one runs.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use applyops::models::{NewApply, NewApplyOperation};
use applyops::state::{CutoverPolicy, FailurePolicy};
use applyops::store::claims::ClaimOptions;
use applyops::{PoolConfig, Store};
use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;

#[derive(QueryableByName)]
struct Status {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
    value: String,
}

/// Row lock waits and their total time (ms) since the server started.
fn row_lock_waits(conn: &mut MysqlConnection) -> (i64, i64) {
    let read = |conn: &mut MysqlConnection, name: &str| -> i64 {
        diesel::sql_query(format!("SHOW GLOBAL STATUS LIKE '{name}'"))
            .get_result::<Status>(conn)
            .unwrap()
            .value
            .parse()
            .unwrap()
    };
    (
        read(conn, "Innodb_row_lock_waits"),
        read(conn, "Innodb_row_lock_time"),
    )
}

fn server() -> Option<String> {
    let url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
    let server = match url.rfind('/') {
        Some(slash) if slash > "mysql://".len() => url[..slash].to_owned(),
        _ => url,
    };
    MysqlConnection::establish(&server).ok().map(|_| server)
}

/// Seeds 100 applies x 3 deployments (every policy: rolling successors and barriers are rows the
/// claim walks and rejects while their siblings run), drains them with 4 workers that wait `think`
/// between a claim and its first write.
fn drain(server: &str, think: Duration) -> Drain {
    let name = format!(
        "applyops_t_lockwaits_{}_{}",
        std::process::id(),
        think.as_millis()
    );
    let mut admin = MysqlConnection::establish(server).unwrap();
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        ))
        .unwrap();
    let store = Store::open(&format!("{server}/{name}"), PoolConfig::default()).unwrap();
    store.run_migrations().unwrap();
    let policies = [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ];
    for a in 0..100 {
        let apply_id = store
            .applies()
            .insert(&NewApply::new(
                format!("drain-{a}"),
                format!("db{a}"),
                "prod",
                "main",
            ))
            .unwrap();
        for d in ["east", "west", "central"] {
            store
                .apply_operations()
                .insert(
                    &NewApplyOperation::new(apply_id, d)
                        .with_cutover_policy(policies[a % 3])
                        .with_on_failure(FailurePolicy::Halt),
                )
                .unwrap();
        }
    }
    let (waits_before, ms_before) = row_lock_waits(&mut admin);
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let options = ClaimOptions::new(format!("w{w}"), Duration::from_secs(60));
                barrier.wait();
                let mut completed = 0;
                let mut writes = 0;
                let mut idle = 0;
                while idle < 50 {
                    let claimed = match store.claim_next_cutover(&options).unwrap() {
                        Some(claimed) => Some(claimed),
                        None => store.claim_next(&options).unwrap(),
                    };
                    let Some(claimed) = claimed else {
                        idle += 1;
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    idle = 0;
                    std::thread::sleep(think);
                    let leased = store.leased(&claimed.lease);
                    let cut_over_by_claim =
                        claimed.operation.cutover_policy != applyops::state::CutoverPolicy::Rolling;
                    if cut_over_by_claim && claimed.operation.state == applyops::ApplyState::Running
                    {
                        leased
                            .update_state(applyops::ApplyState::WaitingForCutover)
                            .unwrap();
                        store.release(&claimed.lease).unwrap();
                        writes += 2;
                    } else {
                        leased.mark_completed().unwrap();
                        completed += 1;
                        writes += 1;
                    }
                }
                (completed, writes)
            })
        })
        .collect();
    let (completed, writes) = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .fold((0, 0), |(c, w), (dc, dw)| (c + dc, w + dw));
    let (waits_after, ms_after) = row_lock_waits(&mut admin);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .unwrap();
    Drain {
        completed,
        writes,
        waits: waits_after - waits_before,
        ms: ms_after - ms_before,
    }
}

/// What one drain did and cost.
struct Drain {
    /// Operations the workers completed.
    completed: usize,
    /// State writes and releases the workers made: each locks its apply's row and may wait once.
    writes: i64,
    /// `Innodb_row_lock_waits` over the drain.
    waits: i64,
    /// `Innodb_row_lock_time` over the drain (ms).
    ms: i64,
}

#[test]
fn mysql_four_worker_drains_of_300_operations_have_no_row_lock_waits_from_claims() {
    let server = server().expect("a MySQL/MariaDB server (see tests/it/harness.rs)");
    // Run one after the other: the counter is server-wide.
    for (think, label) in [
        (
            Duration::from_millis(5),
            "with 5 ms between claim and write",
        ),
        (Duration::ZERO, "writing at once after each claim"),
    ] {
        let drain = drain(&server, think);
        eprintln!(
            "drain {label}: {} row lock waits over {} writes, {} ms waited",
            drain.waits, drain.writes, drain.ms
        );
        assert_eq!(drain.completed, 300, "the drain finished every operation");
        assert!(
            drain.waits <= drain.writes,
            "Innodb_row_lock_waits over a drain {label}: {} for {} writes; only writes may wait \
             (once each, for their apply's row), claims skip what is locked",
            drain.waits,
            drain.writes
        );
    }
}
