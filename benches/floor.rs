//! Benchmark: what applyops calls cost, as ratios to a floor: the raw `mysql` crate (a pure-Rust
//! client, no Diesel, no pool) doing the minimal equivalent on the same server in the same run.
//!
//! Run with `cargo bench --bench floor` (about 20 seconds once built). It needs a MySQL/MariaDB
//! server: `TEST_DATABASE_URL` (a `mysql://user:password@host:port` server URL) or
//! `mysql://root@127.0.0.1:3306`. Both sides connect over TCP, never the Unix socket: the raw
//! client is told not to switch to the socket (its default for 127.0.0.1), and both connections
//! are checked in `information_schema.PROCESSLIST` (the host must be `address:port`). The
//! benchmark creates its own database (`applyops_bench_floor_<pid>`), migrates it with
//! `Store::run_migrations`, seeds it with Diesel multi-row INSERTs on a `diesel::MysqlConnection`,
//! and drops it at the end, also after a panic. Without `--bench` (as under
//! `cargo test --all-targets`) it only prints a line. `cargo bench --bench floor -- --print-sql`
//! also prints every statement each applyops call sent (captured through Diesel's
//! instrumentation, binds included; a lease token shows as `***`).
//!
//! # Method
//!
//! **applyops** runs through a [`Store`] with a one-connection pool (`PoolConfig { max_size: 1,
//! .. }`, defaults otherwise, as in production: `test_on_check_out` is on, and the checkout pings
//! a connection only after `ping_after_idle`, 5 s, which a busy run never reaches). **raw** is one `mysql::Conn` held for the whole run, its
//! statements prepared once and reused; `BEGIN` and `COMMIT` are text queries (one round trip
//! each). It gets the session settings applyops gives its connections (`sql_mode`, UTC
//! `time_zone`, `lc_messages`), READ COMMITTED as the session's isolation level (as applyops sets it
//! at connect), and `CLIENT_FOUND_ROWS`, so an UPDATE
//! reports rows matched, as on Diesel's connections; each raw write checks that it matched its
//! row.
//!
//! Every case is warmed up with `WARMUP` calls per side, then measured in `ROUNDS` rounds: each
//! round times `ITERATIONS` back-to-back calls of every case on each side, the two sides
//! alternately (applyops first in even rounds, raw first in odd ones), so machine noise hits both
//! alike. A round's sample is its mean time per call; the table shows each side's median over the
//! rounds, their ratio (applyops / raw), and the lowest and highest ratio of a single round.
//!
//! # The cases, and what the raw side does
//!
//! 1. **get**: `store.apply_operations().get(id)`. Raw: one prepared statement, the very SELECT
//!    Diesel renders for it (the model's 22 columns, `WHERE id = ? LIMIT ?`), on the held
//!    connection; the row is read as a `mysql::Row` (values decoded, not converted to a model).
//! 2. **insert**: `store.apply_operations().insert(..)` of a `pending` operation into an apply
//!    that has no operation yet (a fresh apply per call, so no apply grows during the run). Raw,
//!    the minimal equivalent: `BEGIN`; `SELECT database_name, environment FROM applies WHERE id =
//!    ? FOR UPDATE` (lock the apply and read what the operation copies from it); applyops's own
//!    `INSERT INTO apply_operations (…) VALUES (…)`; the new id from the INSERT's OK packet (where
//!    applyops sends `SELECT LAST_INSERT_ID()`); `COMMIT`. No validation, no duplicate-key
//!    diagnosis, no refresh of the apply's derived state.
//! 3. **leased state write**: `store.leased(&lease).update_state(WaitingForCutover)` and
//!    `.mark_started()` in turn, on an operation whose apply has a second operation `running`
//!    (so the apply stays `running` and its row is never rewritten). Raw: the statements applyops
//!    sends for it, prepared with the same SQL text: `BEGIN`; the locking read of the operation's
//!    apply (`FOR UPDATE`, with `SYSDATE(6)` and the pending-request check); the SELECT of the
//!    apply's operations; the guarded UPDATE (id, lease token and owner, not settled) with the
//!    claim rules' decision, its `waiting_for_cutover` or its `running` form in turn; `COMMIT`. It
//!    skips what applyops does in Rust in between (deciding the claim rules and deriving the
//!    apply's state from the rows read).
//! 4. **heartbeat**: `store.heartbeat(&mut lease)`. Raw: the two statements applyops sends, with
//!    the same SQL text: the guarded UPDATE of `lease_expires_at` (`DATE_ADD(SYSDATE(6), INTERVAL
//!    ? MICROSECOND)`), then the SELECT that reads it back.
//! 5. **claim_next**: `store.claim_next(&options)` over `PENDING` claimable `pending` operations
//!    with `cutover_policy = parallel`, one per apply, which both sides drain from the oldest. Raw,
//!    a minimal 4-round-trip claim: `BEGIN`; `SELECT id FROM apply_operations WHERE copy_walk = 1
//!    AND state = 'pending' ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED` (the copy
//!    claim's walk index); `UPDATE apply_operations SET state = 'running'`, `started_at`, the lease
//!    columns and `updated_at` `WHERE id = ?`; `COMMIT`. No apply lock, no decision, no refresh,
//!    and only the id comes back (applyops returns the whole claimed row).
//! 6. **empty claim_next**: `store.claim_next(&options)` scoped to a deployment no operation has, so
//!    it finds nothing (one statement: the expired leases and the walk of the scope index, `UNION
//!    ALL`). Raw: the indexed read it comes down to, `SELECT id, apply_id FROM apply_operations
//!    WHERE copy_walk = 1 AND deployment = ? ORDER BY created_at, id LIMIT 16`.
//!
//! Where the raw side uses applyops's SQL (cases 1, 3, 4 and the INSERT of 2), the texts below
//! are copied from `-- --print-sql`. Each run first makes `CAPTURED_CALLS` calls of every case on
//! a separate instrumented store and warns, above the table, about any such text applyops no
//! longer sends: the store's SQL changed and this file was not updated.
//!
//! # Statements per call
//!
//! After the timed rounds, each case runs `COUNTED_CALLS` more times per side while the server
//! counts `Questions` (statements, each a round trip) and `Com_stmt_prepare` (statements prepared
//! anew), the way `benches/claims.rs` counts: the global counters (`SHOW GLOBAL STATUS` on the
//! benchmark's own admin connection: server-wide, so another client's traffic inflates them) and
//! the side's own session counters (exact: for applyops read on the pool's only connection,
//! checked to stay the same connection; for raw on its held connection). Every counter read is
//! itself counted; the cost of one read is measured by two reads back to back and subtracted.
//! These show where applyops's extra time goes. Before issue 10's claim-cost work they showed the
//! checkout ping (one more question per call), Diesel's `BEGIN` and `COMMIT` at three each
//! (`COM_SET_OPTION` around them) and every UPDATE prepared again on every call; now a warm call
//! prepares nothing and the statement counts differ only where applyops does more work (the
//! claim's candidate read and apply lock, the insert's apply lock and refresh).

mod common;

use common::SeedApply;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use applyops::models::{ApplyId, ApplyOperationId, LeaseToken, NewApplyOperation, OperationLease};
use applyops::schema::{applies, apply_operations};
use applyops::schema_types::{datetime, DatetimeValue};
use applyops::state::{ApplyState, CutoverPolicy, FailurePolicy};
use applyops::store::claims::{ClaimKind, ClaimOptions, ClaimScope};
use applyops::{PoolConfig, Store};
use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use mysql::prelude::Queryable as _;

/// Measured rounds; each side's figure is the median over them.
const ROUNDS: usize = 15;
/// Calls per case, side and round.
const ITERATIONS: usize = 100;
/// Calls per case and side before the first round.
const WARMUP: usize = 20;
/// Calls per case and side while the statement counters are read.
const COUNTED_CALLS: usize = 100;
/// Calls per case on the instrumented store that captures applyops's SQL.
const CAPTURED_CALLS: usize = 2;
/// Calls of each case per side over the whole run: inserts and claims each use up a row per call.
const CALLS_PER_SIDE: usize = WARMUP + ROUNDS * ITERATIONS + COUNTED_CALLS + CAPTURED_CALLS;
/// Claimable operations seeded: both sides' claims, and a backlog that is still left at the end.
const PENDING: usize = 2 * CALLS_PER_SIDE + 1_000;
/// Rows per multi-row INSERT while seeding.
const BATCH: usize = 1_000;
/// The claims' TTL, and the heartbeat's: no lease taken during the run expires before it ends.
const LEASE_TTL: Duration = Duration::from_secs(3_600);
/// The owner of every lease the benchmark seeds or takes.
const OWNER: &str = "bench-floor";

/// The session settings applyops gives every MySQL connection (`src/db/mysql.rs`), for the raw one.
const SESSION_SETUP: &str = "SET SESSION sql_mode = 'ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,\
STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', \
time_zone = '+00:00', lc_messages = 'en_US'";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Get,
    Insert,
    StateWrite,
    Heartbeat,
    Claim,
    EmptyClaim,
}

const CASES: [Case; 6] = [
    Case::Get,
    Case::Insert,
    Case::StateWrite,
    Case::Heartbeat,
    Case::Claim,
    Case::EmptyClaim,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Get => "get",
            Case::Insert => "insert",
            Case::StateWrite => "leased state write",
            Case::Heartbeat => "heartbeat",
            Case::Claim => "claim_next",
            Case::EmptyClaim => "empty claim_next",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw side's SQL. Where a text is applyops's own (see `mirrored`), it is exactly what Diesel
// renders for it, checked at run time against what applyops sent; `?` are bound in order.
// ---------------------------------------------------------------------------------------------

/// Case 1, `apply_operations::get`: binds id, 1 (the LIMIT).
const GET: &str = "SELECT `apply_operations`.`id`, `apply_operations`.`apply_id`, \
`apply_operations`.`deployment`, `apply_operations`.`target`, `apply_operations`.`state`, \
`apply_operations`.`error_message`, `apply_operations`.`started_at`, \
`apply_operations`.`completed_at`, `apply_operations`.`created_at`, \
`apply_operations`.`updated_at`, `apply_operations`.`cutover_policy`, \
`apply_operations`.`on_failure`, `apply_operations`.`attempt`, \
`apply_operations`.`lease_owner`, `apply_operations`.`lease_acquired_at`, \
`apply_operations`.`lease_expires_at`, `apply_operations`.`database_name`, \
`apply_operations`.`environment`, `apply_operations`.`holds_target`, \
`apply_operations`.`engine_state`, `apply_operations`.`external_id`, \
`apply_operations`.`failure_seq` FROM `apply_operations` WHERE (`apply_operations`.`id` = ?) \
LIMIT ?";

/// Case 2, raw only: lock the apply and read what a new operation copies from it. Binds apply id.
const INSERT_LOCK: &str = "SELECT database_name, environment FROM applies WHERE id = ? FOR UPDATE";
/// Case 2, applyops's INSERT of a new operation: binds apply id, deployment, target, cutover
/// policy, failure policy, state, database, environment, holds_target.
const INSERT: &str =
    "INSERT INTO `apply_operations` (`apply_id`, `deployment`, `target`, `cutover_policy`, \
`on_failure`, `state`, `database_name`, `environment`, `holds_target`, `created_at`, \
`updated_at`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))";

/// Case 3, the apply lock of a state write (`aggregate::lock_apply_of`), with the database's time
/// and whether the apply has a pending control request: binds 'pending' (the request status), the
/// operation id, 1, 1 (the LIMITs).
const LOCK_APPLY_OF: &str =
    "SELECT `applies`.`id`, `applies`.`database_name`, `applies`.`environment`, \
`applies`.`state`, `applies`.`error_message`, `applies`.`started_at`, \
`applies`.`completed_at`, `applies`.`max_attempts`, `applies`.`max_concurrency`, \
`applies`.`defer_cutover`, `applies`.`failure_seq`, SYSDATE(6), EXISTS (SELECT `apply_control_requests`.`id` FROM \
`apply_control_requests` WHERE ((`apply_control_requests`.`apply_id` = `applies`.`id`) AND \
(`apply_control_requests`.`status` = ?))) FROM `applies` WHERE (`applies`.`id` = (SELECT \
`apply_operations`.`apply_id` FROM `apply_operations` WHERE (`apply_operations`.`id` = ?) \
LIMIT ?)) LIMIT ? FOR UPDATE";
/// Case 3, `update_state(waiting_for_cutover)` through a lease: binds the state, NULL
/// (`completed_at`), 1 (`holds_target`), NULL (`failure_seq`), the claim rules' decision for the
/// row (copy claim, cutover claim), the operation id, token and owner, and the four settled states
/// it must not be in.
const WRITE_WAITING: &str =
    "UPDATE `apply_operations` SET `state` = ?, `completed_at` = ?, `holds_target` = ?, \
`failure_seq` = ?, `updated_at` = UTC_TIMESTAMP(6), `copy_claim` = ?, `cutover_claim` = ? WHERE (((((((`apply_operations`.`id` = ?) \
AND (`apply_operations`.`lease_token` = ?)) AND (`apply_operations`.`lease_owner` = ?)) AND \
(`apply_operations`.`state` != ?)) AND (`apply_operations`.`state` != ?)) AND \
(`apply_operations`.`state` != ?)) AND (`apply_operations`.`state` != ?))";
/// Case 3, `mark_started` through a lease: binds as [`WRITE_WAITING`].
const WRITE_RUNNING: &str = "UPDATE `apply_operations` SET `state` = ?, `started_at` = \
COALESCE(`apply_operations`.`started_at`, UTC_TIMESTAMP(6)), `completed_at` = ?, \
`holds_target` = ?, `failure_seq` = ?, `updated_at` = UTC_TIMESTAMP(6), `copy_claim` = ?, \
`cutover_claim` = ? WHERE \
(((((((`apply_operations`.`id` = ?) AND (`apply_operations`.`lease_token` = ?)) AND \
(`apply_operations`.`lease_owner` = ?)) AND (`apply_operations`.`state` != ?)) AND \
(`apply_operations`.`state` != ?)) AND (`apply_operations`.`state` != ?)) AND \
(`apply_operations`.`state` != ?))";
/// Case 3, the read of the apply's operations in claim order before the write (`unit::read_facts`,
/// which the refresh then reuses), each with the highest release that names it: binds 'release',
/// 'completed', 1 (the LIMIT), the apply id.
const REFRESH: &str =
    "SELECT `apply_operations`.`id`, `apply_operations`.`deployment`, `apply_operations`.`state`, \
`apply_operations`.`cutover_policy`, `apply_operations`.`on_failure`, \
`apply_operations`.`started_at`, `apply_operations`.`error_message`, \
`apply_operations`.`holds_target`, `apply_operations`.`failure_seq`, \
`apply_operations`.`attempt`, `apply_operations`.`copy_claim`, \
`apply_operations`.`cutover_claim`, (SELECT \
max(`apply_control_requests`.`releases_through`) FROM `apply_control_requests` WHERE \
((((`apply_control_requests`.`apply_id` = `apply_operations`.`apply_id`) AND \
((`apply_control_requests`.`apply_operation_id` IS NULL) OR \
(`apply_control_requests`.`apply_operation_id` = `apply_operations`.`id`))) AND \
(`apply_control_requests`.`kind` = ?)) AND (`apply_control_requests`.`status` = ?)) LIMIT ?) \
FROM `apply_operations` WHERE (`apply_operations`.`apply_id` = ?) ORDER BY \
`apply_operations`.`created_at` ASC, `apply_operations`.`id` ASC";

/// Case 4, the heartbeat's UPDATE: binds TTL in µs, operation id, token, owner.
const HEARTBEAT_UPDATE: &str =
    "UPDATE `apply_operations` SET `lease_expires_at` = DATE_ADD(SYSDATE(6), INTERVAL ? \
MICROSECOND) WHERE (((`apply_operations`.`id` = ?) AND (`apply_operations`.`lease_token` = \
?)) AND (`apply_operations`.`lease_owner` = ?))";
/// Case 4, the heartbeat's read-back: binds operation id, token, owner, 1 (the LIMIT).
const HEARTBEAT_READ: &str =
    "SELECT `apply_operations`.`lease_expires_at` FROM `apply_operations` WHERE \
(((`apply_operations`.`id` = ?) AND (`apply_operations`.`lease_token` = ?)) AND \
(`apply_operations`.`lease_owner` = ?)) LIMIT ?";

/// Case 5, raw only: the oldest `pending` row in the copy claim's walk (an unheld row the claim
/// takes: `apply_operations_copy_walk_idx`), locked unless another claimer holds it.
const CLAIM_SELECT: &str = "SELECT id FROM apply_operations WHERE copy_walk = 1 AND state = ? \
ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED";
/// Case 5, raw only: take it. Binds state, owner, token, TTL in µs, id.
const CLAIM_UPDATE: &str = "UPDATE apply_operations SET state = ?, \
started_at = COALESCE(started_at, UTC_TIMESTAMP(6)), lease_owner = ?, lease_token = ?, \
lease_acquired_at = UTC_TIMESTAMP(6), \
lease_expires_at = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND), \
updated_at = UTC_TIMESTAMP(6) WHERE id = ?";

/// Case 6, raw only: the indexed read an empty claim comes down to: the oldest rows of the copy
/// claim's walk in one deployment (`apply_operations_copy_scope_idx`), of which there are none.
/// Binds the deployment.
const EMPTY_CLAIM_SELECT: &str = "SELECT id, apply_id FROM apply_operations WHERE copy_walk = 1 \
AND deployment = ? ORDER BY created_at, id LIMIT 16";
/// The deployment no operation has: the empty claim's scope.
const NO_DEPLOYMENT: &str = "no-operation-here";

/// Which raw statements must be among those applyops sent for a case.
fn mirrored(case: Case) -> &'static [&'static str] {
    match case {
        Case::Get => &[GET],
        Case::StateWrite => &[LOCK_APPLY_OF, WRITE_WAITING, WRITE_RUNNING, REFRESH],
        Case::Heartbeat => &[HEARTBEAT_UPDATE, HEARTBEAT_READ],
        Case::Insert => &[INSERT],
        Case::Claim | Case::EmptyClaim => &[],
    }
}

// ---------------------------------------------------------------------------------------------
// Seeding.
// ---------------------------------------------------------------------------------------------

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
    lease_owner: String,
    lease_token: String,
    lease_acquired_at: Option<NaiveDateTime>,
    lease_expires_at: Option<NaiveDateTime>,
    database_name: String,
    environment: String,
    holds_target: Option<bool>,
}

/// A lease the benchmark seeded on an operation (a claim's token shape, 32 lowercase hex digits).
#[derive(Clone)]
struct SeededLease {
    operation_id: i64,
    apply_id: i64,
    token: String,
    acquired_at: NaiveDateTime,
    expires_at: NaiveDateTime,
}

impl SeededLease {
    fn lease(&self) -> OperationLease {
        OperationLease {
            operation_id: ApplyOperationId(self.operation_id),
            apply_id: ApplyId(self.apply_id),
            owner: OWNER.to_owned(),
            token: LeaseToken::from(self.token.clone()),
            acquired_at: self.acquired_at,
            expires_at: self.expires_at,
            ttl: LEASE_TTL,
        }
    }
}

/// What one side works on: every row is its own, except the operation both sides `get` and the
/// pending operations both sides claim from.
struct SideRows {
    /// Case 3: the held operation (its apply has a second operation, `running`, held by another
    /// lease).
    write: SeededLease,
    /// Case 4.
    heartbeat: SeededLease,
    /// Case 2: applies with no operation, one per insert.
    insert_applies: std::ops::Range<i64>,
}

struct Fixture {
    /// Case 1, read by both sides.
    get_id: i64,
    applyops: SideRows,
    raw: SideRows,
}

/// The rows being seeded, numbered as they are added.
struct Seeder {
    now: NaiveDateTime,
    applies: Vec<SeedApply>,
    operations: Vec<SeedOperation>,
}

impl Seeder {
    /// A new apply (its own database, so no two operations share a target) and its id.
    fn apply(&mut self, state: ApplyState, created: NaiveDateTime) -> i64 {
        let id = self.applies.len() as i64 + 1;
        let started = state != ApplyState::Pending;
        self.applies.push(SeedApply {
            id,
            apply_identifier: format!("floor-{id}"),
            database_name: format!("floor-db-{id}"),
            environment: "bench".into(),
            deployment: "bench".into(),
            state,
            created_at: datetime(created),
            updated_at: datetime(created),
            started_at: started.then_some(created),
            completed_at: None,
            defer_cutover: false,
        });
        id
    }

    /// A new operation of `apply_id`: `held`, it is `running` under a live lease (which is
    /// returned); otherwise `pending` with no lease, so claimable.
    fn operation(
        &mut self,
        apply_id: i64,
        deployment: &str,
        held: bool,
        policy: CutoverPolicy,
        created: NaiveDateTime,
    ) -> SeededLease {
        let id = self.operations.len() as i64 + 1;
        let held_until = self.now + chrono::Duration::days(1);
        let token = if held {
            format!("{:032x}", 0xf1_0000 + id)
        } else {
            String::new()
        };
        self.operations.push(SeedOperation {
            id,
            apply_id,
            deployment: deployment.into(),
            target: String::new(),
            state: if held {
                ApplyState::Running
            } else {
                ApplyState::Pending
            },
            started_at: held.then_some(created),
            completed_at: None,
            created_at: datetime(created),
            updated_at: datetime(created),
            cutover_policy: policy,
            on_failure: FailurePolicy::Halt,
            lease_owner: if held { OWNER.into() } else { String::new() },
            lease_token: token.clone(),
            lease_acquired_at: held.then_some(self.now),
            lease_expires_at: held.then_some(held_until),
            database_name: format!("floor-db-{apply_id}"),
            environment: "bench".into(),
            holds_target: Some(true),
        });
        SeededLease {
            operation_id: id,
            apply_id,
            token,
            acquired_at: self.now,
            expires_at: held_until,
        }
    }

    /// One side's own rows (see [`SideRows`]).
    fn side(&mut self, created: NaiveDateTime) -> SideRows {
        let write_apply = self.apply(ApplyState::Running, created);
        let write = self.operation(
            write_apply,
            "written",
            true,
            CutoverPolicy::Parallel,
            created,
        );
        let sibling_created = created + chrono::Duration::milliseconds(1);
        self.operation(
            write_apply,
            "sibling",
            true,
            CutoverPolicy::Parallel,
            sibling_created,
        );
        let heartbeat_apply = self.apply(ApplyState::Running, created);
        let heartbeat = self.operation(
            heartbeat_apply,
            "heartbeat",
            true,
            CutoverPolicy::Rolling,
            created,
        );
        let first = self.applies.len() as i64 + 1;
        for _ in 0..CALLS_PER_SIDE {
            self.apply(ApplyState::Pending, created);
        }
        SideRows {
            write,
            heartbeat,
            insert_applies: first..first + CALLS_PER_SIDE as i64,
        }
    }
}

/// Seeds the fixture and the `PENDING` claimable operations (one per apply, `parallel`) in one
/// transaction of multi-row INSERTs on a plain `diesel::MysqlConnection`. Every other operation is
/// held by a live lease, so the claims find nothing else; the pending ones are older than anything
/// the inserts add, so the claims only ever take seeded ones.
fn seed(url: &str) -> Fixture {
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    let mut seeder = Seeder {
        now,
        applies: Vec::new(),
        operations: Vec::new(),
    };
    let fixture_created = now - chrono::Duration::hours(2);
    let get_apply = seeder.apply(ApplyState::Running, fixture_created);
    let get_id = seeder
        .operation(
            get_apply,
            "get",
            true,
            CutoverPolicy::Rolling,
            fixture_created,
        )
        .operation_id;
    let applyops = seeder.side(fixture_created);
    let raw = seeder.side(fixture_created);
    let pending_created = now - chrono::Duration::hours(1);
    for p in 0..PENDING {
        let created = pending_created + chrono::Duration::milliseconds(p as i64);
        let apply_id = seeder.apply(ApplyState::Pending, created);
        seeder.operation(apply_id, "pending", false, CutoverPolicy::Parallel, created);
    }

    let mut conn = MysqlConnection::establish(url).expect("seeding connection");
    conn.transaction::<_, diesel::result::Error, _>(|c| {
        for chunk in seeder.applies.chunks(BATCH) {
            diesel::insert_into(applies::table)
                .values(chunk)
                .execute(c)?;
        }
        for chunk in seeder.operations.chunks(BATCH) {
            diesel::insert_into(apply_operations::table)
                .values(chunk)
                .execute(c)?;
        }
        Ok(())
    })
    .expect("seed");
    common::decide_all(&mut applyops::db::establish(url).expect("deciding connection"));
    // Statistics for the fresh rows now, rather than whenever InnoDB gets to them mid-run.
    conn.batch_execute("ANALYZE TABLE applies, apply_operations")
        .expect("analyze");
    Fixture {
        get_id,
        applyops,
        raw,
    }
}

// ---------------------------------------------------------------------------------------------
// The two sides.
// ---------------------------------------------------------------------------------------------

/// The counters read around the counted calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    questions: i64,
    prepares: i64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;

    fn sub(self, earlier: Counters) -> Counters {
        Counters {
            questions: self.questions - earlier.questions,
            prepares: self.prepares - earlier.prepares,
        }
    }
}

impl Counters {
    /// From `(name, value)` rows of a status read, names in any case.
    fn of(rows: impl IntoIterator<Item = (String, i64)>) -> Counters {
        let mut counters = Counters::default();
        for (name, value) in rows {
            match name.to_ascii_uppercase().as_str() {
                "QUESTIONS" => counters.questions = value,
                "COM_STMT_PREPARE" => counters.prepares = value,
                _ => {}
            }
        }
        counters
    }
}

/// Where the session status lives: MariaDB keeps it in `information_schema`, MySQL 8 only in
/// `performance_schema`.
const SESSION_STATUS_TABLES: [&str; 2] = [
    "information_schema.SESSION_STATUS",
    "performance_schema.session_status",
];

/// The session counters of the connection it runs on, with that connection's id.
fn session_status_query(table: &str) -> String {
    format!(
        "SELECT UPPER(VARIABLE_NAME) AS name, CAST(VARIABLE_VALUE AS SIGNED) AS value, \
         CAST(CONNECTION_ID() AS SIGNED) AS connection FROM {table} \
         WHERE UPPER(VARIABLE_NAME) IN ('QUESTIONS', 'COM_STMT_PREPARE')"
    )
}

/// How the server sees the connection it runs on: `host:port` over TCP, `localhost` over a socket.
const CONNECTION_HOST: &str =
    "SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()";

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
struct HostRow {
    #[diesel(sql_type = Text)]
    host: String,
}

/// One side of the comparison: a call of each case, and its own connection's counters.
trait Side {
    fn call(&mut self, case: Case);
    /// The session counters of the connection the calls use, and its id.
    fn session(&mut self) -> (Counters, i64);
}

/// applyops through a [`Store`] on a one-connection pool.
struct Applyops {
    store: Store,
    status_table: &'static str,
    get_id: ApplyOperationId,
    next_insert: std::ops::Range<i64>,
    write: OperationLease,
    /// The held operation is `running` now (so the next write is `waiting_for_cutover`).
    write_running: bool,
    heartbeat: OperationLease,
    claim: ClaimOptions,
    /// A claim scoped to [`NO_DEPLOYMENT`]: it finds nothing.
    empty_claim: ClaimOptions,
}

impl Side for Applyops {
    fn call(&mut self, case: Case) {
        match case {
            Case::Get => {
                let found = self.store.apply_operations().get(self.get_id).unwrap();
                black_box(found.expect("the seeded operation"));
            }
            Case::Insert => {
                let apply = self.next_insert.next().expect("an unused insert apply");
                let new = NewApplyOperation::new(ApplyId(apply), "inserted");
                black_box(self.store.apply_operations().insert(&new).unwrap());
            }
            Case::StateWrite => {
                let leased = self.store.leased(&self.write);
                if self.write_running {
                    leased.update_state(ApplyState::WaitingForCutover).unwrap();
                } else {
                    leased.mark_started().unwrap();
                }
                self.write_running = !self.write_running;
            }
            Case::Heartbeat => {
                black_box(self.store.heartbeat(&mut self.heartbeat).unwrap());
            }
            Case::Claim => {
                let claimed = self.store.claim_next(&self.claim).unwrap();
                let claimed = claimed.expect("a pending operation left to claim");
                assert_eq!(claimed.kind, ClaimKind::Start);
                black_box(claimed);
            }
            Case::EmptyClaim => {
                let claimed = self.store.claim_next(&self.empty_claim).unwrap();
                assert!(claimed.is_none(), "nothing to claim in {NO_DEPLOYMENT}");
            }
        }
    }

    fn session(&mut self) -> (Counters, i64) {
        let rows = diesel::sql_query(session_status_query(self.status_table))
            .load::<StatusRow>(&mut *self.store.connection().unwrap())
            .expect("read the pool connection's session status");
        let connection = rows[0].connection;
        (
            Counters::of(rows.into_iter().map(|r| (r.name, r.value))),
            connection,
        )
    }
}

/// The raw `mysql` crate on one held connection, statements prepared once.
struct Raw {
    conn: mysql::Conn,
    status_table: &'static str,
    get_id: i64,
    get: mysql::Statement,
    next_insert: std::ops::Range<i64>,
    insert_lock: mysql::Statement,
    insert: mysql::Statement,
    write: SeededLease,
    /// The held operation is `running` now (so the next write is `waiting_for_cutover`).
    write_running: bool,
    lock_apply_of: mysql::Statement,
    to_waiting: mysql::Statement,
    to_running: mysql::Statement,
    refresh: mysql::Statement,
    heartbeat: SeededLease,
    heartbeat_update: mysql::Statement,
    heartbeat_read: mysql::Statement,
    claim_select: mysql::Statement,
    claim_update: mysql::Statement,
    empty_claim_select: mysql::Statement,
    /// Numbers the raw claims' tokens.
    claims: u64,
}

impl Raw {
    /// Connects over TCP to the database of `url` (a Diesel-style `mysql://` URL) and prepares
    /// every statement.
    fn connect(url: &str, fixture: &Fixture, status_table: &'static str) -> Raw {
        let opts = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url).expect("a mysql URL"))
            // Never switch from TCP to the server's Unix socket (the default for 127.0.0.1).
            .prefer_socket(false)
            .init(vec![
                SESSION_SETUP,
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            ])
            .additional_capabilities(mysql::consts::CapabilityFlags::CLIENT_FOUND_ROWS);
        let mut conn = mysql::Conn::new(opts).expect("raw connection");
        let mut prep = |sql: &str| {
            conn.prep(sql)
                .unwrap_or_else(|err| panic!("prepare {sql}: {err}"))
        };
        let rows = &fixture.raw;
        Raw {
            status_table,
            get_id: fixture.get_id,
            get: prep(GET),
            next_insert: rows.insert_applies.clone(),
            insert_lock: prep(INSERT_LOCK),
            insert: prep(INSERT),
            write: rows.write.clone(),
            write_running: true,
            lock_apply_of: prep(LOCK_APPLY_OF),
            to_waiting: prep(WRITE_WAITING),
            to_running: prep(WRITE_RUNNING),
            refresh: prep(REFRESH),
            heartbeat: rows.heartbeat.clone(),
            heartbeat_update: prep(HEARTBEAT_UPDATE),
            heartbeat_read: prep(HEARTBEAT_READ),
            claim_select: prep(CLAIM_SELECT),
            claim_update: prep(CLAIM_UPDATE),
            empty_claim_select: prep(EMPTY_CLAIM_SELECT),
            claims: 0,
            conn,
        }
    }

    /// Asserts the last statement matched exactly one row.
    fn matched_one(&self, what: &str) {
        assert_eq!(self.conn.affected_rows(), 1, "raw {what} matched no row");
    }
}

impl Side for Raw {
    fn call(&mut self, case: Case) {
        let conn = &mut self.conn;
        match case {
            // applyops's SELECT, one round trip.
            Case::Get => {
                let row: Option<mysql::Row> = conn.exec_first(&self.get, (self.get_id, 1)).unwrap();
                black_box(row.expect("the seeded operation"));
            }
            // BEGIN; lock the apply and read what the operation copies from it; applyops's INSERT
            // (the new id comes in its OK packet); COMMIT: 4 round trips.
            Case::Insert => {
                let apply = self.next_insert.next().expect("an unused insert apply");
                conn.query_drop("BEGIN").unwrap();
                let (database, environment): (String, String) = conn
                    .exec_first(&self.insert_lock, (apply,))
                    .unwrap()
                    .expect("the seeded apply");
                conn.exec_drop(
                    &self.insert,
                    (
                        apply,
                        "inserted",
                        "",
                        "rolling",
                        "halt",
                        "pending",
                        database,
                        environment,
                        true,
                    ),
                )
                .unwrap();
                black_box(conn.last_insert_id());
                conn.query_drop("COMMIT").unwrap();
            }
            // applyops's statements for a leased state write: BEGIN; lock the operation's apply;
            // the read of the apply's operations; the guarded UPDATE; COMMIT.
            Case::StateWrite => {
                let lease = &self.write;
                conn.query_drop("BEGIN").unwrap();
                let apply: mysql::Row = conn
                    .exec_first(&self.lock_apply_of, ("pending", lease.operation_id, 1, 1))
                    .unwrap()
                    .expect("the seeded apply");
                let apply_id: i64 = apply.get(0).expect("the apply's id");
                let siblings: Vec<mysql::Row> = conn
                    .exec(&self.refresh, ("release", "completed", 1, apply_id))
                    .unwrap();
                black_box(siblings);
                let (statement, state, copy, cutover) = if self.write_running {
                    (
                        &self.to_waiting,
                        "waiting_for_cutover",
                        None,
                        Some("cutover"),
                    )
                } else {
                    (&self.to_running, "running", Some("recover"), None)
                };
                let null = mysql::Value::NULL;
                // Thirteen binds: more than the driver's tuples take.
                let binds: Vec<mysql::Value> = vec![
                    state.into(),
                    null.clone(), // completed_at
                    true.into(),  // holds_target
                    null,         // failure_seq
                    copy.into(),
                    cutover.into(),
                    lease.operation_id.into(),
                    lease.token.as_str().into(),
                    OWNER.into(),
                    "completed".into(),
                    "failed".into(),
                    "cancelled".into(),
                    "reverted".into(),
                ];
                conn.exec_drop(statement, binds).unwrap();
                self.matched_one("state write");
                self.conn.query_drop("COMMIT").unwrap();
                self.write_running = !self.write_running;
            }
            // applyops's two statements: the guarded UPDATE of the expiry, then reading it back.
            Case::Heartbeat => {
                let lease = &self.heartbeat;
                let ttl = LEASE_TTL.as_micros() as i64;
                conn.exec_drop(
                    &self.heartbeat_update,
                    (ttl, lease.operation_id, &lease.token, OWNER),
                )
                .unwrap();
                self.matched_one("heartbeat");
                let expires: mysql::Row = self
                    .conn
                    .exec_first(
                        &self.heartbeat_read,
                        (lease.operation_id, &lease.token, OWNER, 1),
                    )
                    .unwrap()
                    .expect("the lease is still held");
                black_box(expires);
            }
            // The minimal claim: BEGIN; lock the oldest claimable `pending` row, passing over rows
            // other transactions hold; take it (state, lease, stamps); COMMIT: 4 round trips.
            Case::Claim => {
                self.claims += 1;
                let token = format!("{:032x}", 0xc1_0000_0000_u64 + self.claims);
                conn.query_drop("BEGIN").unwrap();
                let id: i64 = conn
                    .exec_first(&self.claim_select, ("pending",))
                    .unwrap()
                    .expect("a pending operation left to claim");
                conn.exec_drop(
                    &self.claim_update,
                    ("running", OWNER, token, LEASE_TTL.as_micros() as i64, id),
                )
                .unwrap();
                self.matched_one("claim");
                self.conn.query_drop("COMMIT").unwrap();
            }
            // The indexed read an empty claim comes down to, one round trip.
            Case::EmptyClaim => {
                let rows: Vec<(i64, i64)> = conn
                    .exec(&self.empty_claim_select, (NO_DEPLOYMENT,))
                    .unwrap();
                assert!(rows.is_empty(), "nothing to claim in {NO_DEPLOYMENT}");
            }
        }
    }

    fn session(&mut self) -> (Counters, i64) {
        let rows: Vec<(String, i64, i64)> = self
            .conn
            .query(session_status_query(self.status_table))
            .expect("read the raw connection's session status");
        let connection = rows[0].2;
        (
            Counters::of(rows.into_iter().map(|(name, value, _)| (name, value))),
            connection,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// What applyops sends: captured through Diesel's instrumentation on a separate store.
// ---------------------------------------------------------------------------------------------

/// Every statement the capturing store's connection sent since it was last emptied, as Diesel
/// displays it (`SQL -- binds: [...]`).
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl Instrumentation for Capture {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            CAPTURED.lock().unwrap().push(query.to_string());
        }
    }
}

/// The pool every applyops store of the benchmark gets: one connection, defaults otherwise.
fn one_connection() -> PoolConfig {
    PoolConfig {
        max_size: 1,
        ..PoolConfig::default()
    }
}

/// A store whose connection records every statement it sends in [`CAPTURED`]. Only connections
/// established while the default instrumentation is set get it, so the timed store has none.
fn open_capturing(url: &str) -> Store {
    diesel::connection::set_default_instrumentation(|| Some(Box::new(Capture)))
        .expect("set the capture");
    // The pool establishes its connection before `open` returns.
    let store = Store::open(url, one_connection()).expect("open the capturing pool");
    diesel::connection::set_default_instrumentation(|| None).expect("unset the capture");
    store
}

/// The statements of each of `CAPTURED_CALLS` calls of every case, run on `capturing` in place of
/// `side`'s own store.
fn capture(side: &mut Applyops, capturing: Store) -> BTreeMap<Case, Vec<Vec<String>>> {
    let timed = std::mem::replace(&mut side.store, capturing);
    let mut captured = BTreeMap::new();
    for case in CASES {
        let calls: Vec<Vec<String>> = (0..CAPTURED_CALLS)
            .map(|_| {
                CAPTURED.lock().unwrap().clear();
                side.call(case);
                std::mem::take(&mut *CAPTURED.lock().unwrap())
            })
            .collect();
        captured.insert(case, calls);
    }
    side.store = timed;
    captured
}

/// The SQL of a captured statement, without its binds.
fn sql_of(captured: &str) -> &str {
    captured.split(" -- binds: ").next().unwrap_or(captured)
}

/// A warning for every raw statement that is meant to be applyops's own but is not among the
/// statements applyops sent for its case.
fn drift(captured: &BTreeMap<Case, Vec<Vec<String>>>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (case, calls) in captured {
        for raw in mirrored(*case) {
            if !calls.iter().flatten().any(|sent| sql_of(sent) == *raw) {
                warnings.push(format!(
                    "WARNING: {}: the raw side's statement is no longer one applyops sends \
                     (run with -- --print-sql and update benches/floor.rs): {raw}",
                    case.name()
                ));
            }
        }
    }
    warnings
}

fn print_sql(captured: &BTreeMap<Case, Vec<Vec<String>>>) {
    for (case, calls) in captured {
        for (i, statements) in calls.iter().enumerate() {
            println!(
                "applyops {} (call {} of {}): {} statements",
                case.name(),
                i + 1,
                calls.len(),
                statements.len()
            );
            for statement in statements {
                println!("  {statement}");
            }
        }
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Measuring.
// ---------------------------------------------------------------------------------------------

/// Mean µs per call of `n` back-to-back calls.
fn time(side: &mut dyn Side, case: Case, n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        side.call(case);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Per-round µs per call of one case.
#[derive(Default)]
struct Samples {
    applyops: Vec<f64>,
    raw: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// Warm-up, then `ROUNDS` interleaved rounds: each case on both sides, alternating which goes
/// first.
fn measure(applyops: &mut Applyops, raw: &mut Raw) -> BTreeMap<Case, Samples> {
    for case in CASES {
        time(applyops, case, WARMUP);
        time(raw, case, WARMUP);
    }
    let mut samples: BTreeMap<Case, Samples> = BTreeMap::new();
    for round in 0..ROUNDS {
        for case in CASES {
            let s = samples.entry(case).or_default();
            if round % 2 == 0 {
                s.applyops.push(time(applyops, case, ITERATIONS));
                s.raw.push(time(raw, case, ITERATIONS));
            } else {
                s.raw.push(time(raw, case, ITERATIONS));
                s.applyops.push(time(applyops, case, ITERATIONS));
            }
        }
    }
    samples
}

#[derive(QueryableByName)]
struct GlobalStatusRow {
    #[diesel(sql_type = Text, column_name = "Variable_name")]
    name: String,
    #[diesel(sql_type = Text, column_name = "Value")]
    value: String,
}

/// The server-wide counters, read on the benchmark's admin connection.
fn global(admin: &mut MysqlConnection) -> Counters {
    let rows = diesel::sql_query(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_stmt_prepare')",
    )
    .load::<GlobalStatusRow>(admin)
    .expect("SHOW GLOBAL STATUS");
    Counters::of(
        rows.into_iter()
            .map(|r| (r.name, r.value.parse().expect("a counter is a number"))),
    )
}

/// Counters per call: the side's own session's (exact) and the server's (global).
#[derive(Clone, Copy)]
struct PerCall {
    session_questions: f64,
    session_prepares: f64,
    global_questions: f64,
    global_prepares: f64,
}

/// `COUNTED_CALLS` calls of `case` on `side` between counter reads, the reads' own cost
/// subtracted: `benches/claims.rs`'s method.
fn count(side: &mut dyn Side, admin: &mut MysqlConnection, case: Case) -> PerCall {
    let g = global(admin);
    let global_read = global(admin) - g;
    let (s, connection) = side.session();
    let session_read = side.session().0 - s;

    let g1 = global(admin);
    let (s1, c1) = side.session();
    for _ in 0..COUNTED_CALLS {
        side.call(case);
    }
    let (s2, c2) = side.session();
    let g2 = global(admin);
    assert!(
        c1 == connection && c2 == connection,
        "{}: the side's connection changed mid-count",
        case.name()
    );
    // Between g1 and g2 the server counted: the calls, the two session reads, one global read.
    let session = s2 - s1 - session_read;
    let global = g2 - g1 - session_read - session_read - global_read;
    let n = COUNTED_CALLS as f64;
    PerCall {
        session_questions: session.questions as f64 / n,
        session_prepares: session.prepares as f64 / n,
        global_questions: global.questions as f64 / n,
        global_prepares: global.prepares as f64 / n,
    }
}

// ---------------------------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------------------------

/// Drops the benchmark's database even if the benchmark panics.
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

/// The connection's host as the server sees it, which must be `address:port` (TCP).
fn assert_tcp(side: &str, host: &str) {
    assert!(
        host.contains(':'),
        "the {side} connection is not over TCP (the server sees host {host:?}); use a server URL \
         with an IP address such as mysql://root@127.0.0.1:3306"
    );
}

fn run(url: &str, admin: &mut MysqlConnection, show_sql: bool) {
    let capturing = open_capturing(url);
    let store = Store::open(url, one_connection()).expect("open the pool");
    store.run_migrations().expect("migrate");
    let fixture = seed(url);
    let status_table = {
        let conn = &mut *store.connection().unwrap();
        SESSION_STATUS_TABLES
            .into_iter()
            .find(|table| {
                diesel::sql_query(session_status_query(table))
                    .load::<StatusRow>(conn)
                    .is_ok()
            })
            .expect("no readable session status table")
    };
    let applyops_host = diesel::sql_query(CONNECTION_HOST)
        .get_result::<HostRow>(&mut *store.connection().unwrap())
        .expect("the pool connection's host")
        .host;
    let rows = &fixture.applyops;
    let mut applyops = Applyops {
        store,
        status_table,
        get_id: ApplyOperationId(fixture.get_id),
        next_insert: rows.insert_applies.clone(),
        write: rows.write.lease(),
        write_running: true,
        heartbeat: rows.heartbeat.lease(),
        claim: ClaimOptions::new(OWNER, LEASE_TTL),
        empty_claim: ClaimOptions::new(OWNER, LEASE_TTL)
            .with_scope(ClaimScope::any().deployments([NO_DEPLOYMENT])),
    };
    let captured = capture(&mut applyops, capturing);
    if show_sql {
        print_sql(&captured);
    }
    let warnings = drift(&captured);

    let mut raw = Raw::connect(url, &fixture, status_table);
    let raw_host: String = raw
        .conn
        .query_first(CONNECTION_HOST)
        .expect("the raw connection's host")
        .expect("the raw connection is in the process list");
    assert_tcp("applyops", &applyops_host);
    assert_tcp("raw", &raw_host);
    let version: String = raw
        .conn
        .query_first("SELECT VERSION()")
        .unwrap()
        .expect("a version");

    let samples = measure(&mut applyops, &mut raw);
    let counts: Vec<(Case, PerCall, PerCall)> = CASES
        .into_iter()
        .map(|case| {
            let a = count(&mut applyops, admin, case);
            let r = count(&mut raw, admin, case);
            (case, a, r)
        })
        .collect();

    println!(
        "floor: applyops calls vs the raw `mysql` crate on the same server, both over TCP; \
         {ROUNDS} interleaved rounds of {ITERATIONS} calls per case and side; medians of the \
         rounds' µs per call"
    );
    println!(
        "applyops: Store on a one-connection pool (defaults: a checkout pings only a connection \
         idle past ping_after_idle); raw: one held connection, statements prepared once"
    );
    for warning in &warnings {
        println!("{warning}");
    }
    println!();
    println!(
        "{:<20} | {:>20} | {:>15} | {:>7} | {:>23}",
        "case", "applyops µs (median)", "raw µs (median)", "ratio", "ratio per round min–max"
    );
    println!(
        "{:-<20}-|-{:-<20}-|-{:-<15}-|-{:-<7}-|-{:-<23}",
        "", "", "", "", ""
    );
    for case in CASES {
        let s = &samples[&case];
        let (a, r) = (median(&s.applyops), median(&s.raw));
        let ratios: Vec<f64> = s.applyops.iter().zip(&s.raw).map(|(a, r)| a / r).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<20} | {:>20.1} | {:>15.1} | {:>6.2}x | {:>23}",
            case.name(),
            a,
            r,
            a / r,
            format!("{lo:.2}–{hi:.2}")
        );
    }
    println!();
    println!(
        "statements per call, {COUNTED_CALLS} calls per case and side, counter reads subtracted; \
         each cell is session / global (session: the side's own connection, exact; global: \
         server-wide)"
    );
    println!(
        "{:<20} | {:>25} | {:>25} | {:>25} | {:>25}",
        "case",
        "applyops Questions",
        "applyops Com_stmt_prepare",
        "raw Questions",
        "raw Com_stmt_prepare"
    );
    println!(
        "{:-<20}-|-{:-<25}-|-{:-<25}-|-{:-<25}-|-{:-<25}",
        "", "", "", "", ""
    );
    let pair = |s: f64, g: f64| format!("{s:.2} / {g:.2}");
    let mut interference = false;
    for (case, a, r) in &counts {
        println!(
            "{:<20} | {:>25} | {:>25} | {:>25} | {:>25}",
            case.name(),
            pair(a.session_questions, a.global_questions),
            pair(a.session_prepares, a.global_prepares),
            pair(r.session_questions, r.global_questions),
            pair(r.session_prepares, r.global_prepares),
        );
        for p in [a, r] {
            interference |= (p.session_questions - p.global_questions).abs() > 0.005
                || (p.session_prepares - p.global_prepares).abs() > 0.005;
        }
    }
    if interference {
        println!(
            "note: session and global counts differ: another client was active on the server \
             during a window; the session figures are the exact ones"
        );
    }
    println!();
    println!(
        "command: cargo bench --bench floor; date: {} UTC; server: {version} (applyops from {}, \
         raw from {}, over TCP)",
        Utc::now().format("%Y-%m-%d %H:%M:%S"),
        applyops_host,
        raw_host
    );
}

fn main() {
    // `cargo test --all-targets` runs this with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("floor: run with `cargo bench --bench floor` to measure");
        return;
    }
    let show_sql = std::env::args().any(|a| a == "--print-sql");
    let server = common::mysql_server();
    let Ok(mut admin) = MysqlConnection::establish(&server) else {
        println!("floor: skipped: no MySQL server at {server} (set TEST_DATABASE_URL)");
        return;
    };
    let name = format!("applyops_bench_floor_{}", std::process::id());
    admin
        .batch_execute(&format!("CREATE DATABASE `{name}`"))
        .unwrap();
    let guard = DropDatabase {
        server: &server,
        name,
    };
    let began = Instant::now();
    run(&format!("{server}/{}", guard.name), &mut admin, show_sql);
    drop(guard);
    println!("total {:.1} s", began.elapsed().as_secs_f64());
}
