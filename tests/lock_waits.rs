//! `Innodb_row_lock_waits` over a 4-worker drain of 300 operations on MySQL/MariaDB. Claims never wait
//! (SKIP LOCKED) and keep no lock on a row they reject, so the hundreds of waits the old locking scan
//! of the claim index caused (374 measured on MariaDB 10.11) are gone. What remains, measured at 0 to 2
//! per drain: a claimer's locking read can lock, for the microseconds it takes to evaluate and release
//! it, a row another worker claimed and committed since the candidate read, and that worker's next
//! leased write to it then waits that long. The bound below is far under the old count and above that
//! residue; getting the residue to 0 is open work (see the CHANGELOG).
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

fn row_lock_waits(conn: &mut MysqlConnection) -> i64 {
    diesel::sql_query("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
        .get_result::<Status>(conn)
        .unwrap()
        .value
        .parse()
        .unwrap()
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

#[test]
fn mysql_a_four_worker_drain_of_300_operations_has_no_row_lock_waits() {
    let server = server().expect("a MySQL/MariaDB server (see tests/it/harness.rs)");
    let name = format!("applyops_t_lockwaits_{}", std::process::id());
    let mut admin = MysqlConnection::establish(&server).unwrap();
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        ))
        .unwrap();
    let url = format!("{server}/{name}");
    let store = Store::open(&url, PoolConfig::default()).unwrap();
    store.run_migrations().unwrap();
    // 100 applies x 3 deployments, every policy: rolling successors and barriers are rows the claim
    // index walks and rejects while their siblings run.
    let policies = [
        CutoverPolicy::Rolling,
        CutoverPolicy::Barrier,
        CutoverPolicy::Parallel,
    ];
    for a in 0..100 {
        let apply_id = store
            .applies()
            .insert(&NewApply::new(format!("drain-{a}"), "db", "prod", "main"))
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
    let before = row_lock_waits(&mut admin);
    let barrier = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let options = ClaimOptions::new(format!("w{w}"), Duration::from_secs(60));
                barrier.wait();
                let mut completed = 0;
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
                    let leased = store.leased(&claimed.lease);
                    let barrier_or_parallel = claimed.operation.cutover_policy != "rolling";
                    if barrier_or_parallel && claimed.operation.state == "running" {
                        leased
                            .update_state(applyops::ApplyState::WaitingForCutover)
                            .unwrap();
                        store.release(&claimed.lease).unwrap();
                    } else {
                        leased.mark_completed().unwrap();
                        completed += 1;
                    }
                }
                completed
            })
        })
        .collect();
    let completed: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let after = row_lock_waits(&mut admin);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS `{name}`"))
        .unwrap();
    assert_eq!(completed, 300, "the drain finished every operation");
    eprintln!("Innodb_row_lock_waits over the drain: {}", after - before);
    assert!(
        after - before <= 10,
        "Innodb_row_lock_waits over the drain: {} (before {before}, after {after})",
        after - before
    );
}
