//! Invariants the stress tests check over whole databases: every row's timestamps are ordered, and
//! an apply whose state promises progress has something that will move.

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::schema::{applies, apply_control_requests as reqs, apply_operations as ops, tasks};
use applyops::state::ApplyState;
use applyops::store::applies::Blocker;
use applyops::DbConnection;
use chrono::NaiveDateTime;
use diesel::prelude::*;

/// Rows whose timestamps are out of order: `created_at ≤ started_at ≤ completed_at` where set, and
/// `created_at ≤ updated_at` (worker contract revision 3, point 21), in every table.
pub fn timestamps_out_of_order(conn: &mut DbConnection) -> Vec<String> {
    type Stamps = (
        i64,
        NaiveDateTime,
        NaiveDateTime,
        Option<NaiveDateTime>,
        Option<NaiveDateTime>,
    );
    let mut found = Vec::new();
    let mut check = |table: &str, rows: Vec<Stamps>| {
        for (id, created, updated, started, completed) in rows {
            let ordered = created <= updated
                && started.is_none_or(|started| created <= started)
                && completed.is_none_or(|completed| created <= completed)
                && match (started, completed) {
                    (Some(started), Some(completed)) => started <= completed,
                    _ => true,
                };
            if !ordered {
                found.push(format!(
                    "{table} {id}: created {created}, updated {updated}, started {started:?}, \
                     completed {completed:?}"
                ));
            }
        }
    };
    check(
        "applies",
        applies::table
            .select((
                applies::id,
                applies::created_at,
                applies::updated_at,
                applies::started_at,
                applies::completed_at,
            ))
            .load::<(ApplyId, _, _, _, _)>(conn)
            .unwrap()
            .into_iter()
            .map(|(id, c, u, s, d)| (id.get(), c, u, s, d))
            .collect(),
    );
    check(
        "apply_operations",
        ops::table
            .select((
                ops::id,
                ops::created_at,
                ops::updated_at,
                ops::started_at,
                ops::completed_at,
            ))
            .load::<(ApplyOperationId, _, _, _, _)>(conn)
            .unwrap()
            .into_iter()
            .map(|(id, c, u, s, d)| (id.get(), c, u, s, d))
            .collect(),
    );
    check(
        "tasks",
        tasks::table
            .select((
                tasks::id,
                tasks::created_at,
                tasks::updated_at,
                tasks::started_at,
                tasks::completed_at,
            ))
            .load::<(applyops::models::TaskId, _, _, _, _)>(conn)
            .unwrap()
            .into_iter()
            .map(|(id, c, u, s, d)| (id.get(), c, u, s, d))
            .collect(),
    );
    check(
        "apply_control_requests",
        reqs::table
            .select((
                reqs::id,
                reqs::created_at,
                reqs::updated_at,
                reqs::completed_at,
            ))
            .load::<(applyops::models::ControlRequestId, _, _, _)>(conn)
            .unwrap()
            .into_iter()
            .map(|(id, c, u, d)| (id.get(), c, u, None, d))
            .collect(),
    );
    found
}

/// Fails the test when any row's timestamps are out of order; says how many rows were checked.
#[track_caller]
pub fn assert_timestamps_ordered(conn: &mut DbConnection) {
    let wrong = timestamps_out_of_order(conn);
    assert!(
        wrong.is_empty(),
        "timestamps out of order:\n{}",
        wrong.join("\n")
    );
}

/// The apply states that promise progress: something is being done, or will be without an operator.
pub const PROMISING: [ApplyState; 5] = [
    ApplyState::Running,
    ApplyState::RunningDegraded,
    ApplyState::Resuming,
    ApplyState::Recovering,
    ApplyState::FailedRetryable,
];

/// `Err` (saying why) when apply `apply_id`'s stored state promises progress ([`PROMISING`]) and no
/// operation will move: none a claim takes now (`Claimable`) or once a lease expires (`LeaseLive`:
/// its holder drives it, or recovery takes it), none that a claim or its holder acts on for a pending
/// stop or cancel, and none parked where the rules park it (`waiting_for_cutover` for an operator or
/// the cutover order, `revert_window`). Read in one transaction, so the apply and its operations are
/// one snapshot on SQLite; on MySQL the caller checks at a quiescent point.
pub fn progress_possible(conn: &mut DbConnection, apply_id: ApplyId) -> Result<(), String> {
    let Some(apply) = applyops::store::applies::get(conn, apply_id).unwrap() else {
        return Ok(());
    };
    if !PROMISING.contains(&apply.state) {
        return Ok(());
    }
    let blockers = applyops::store::applies::blockers(conn, apply_id).unwrap();
    let operations = applyops::store::apply_operations::list_by_apply(conn, apply_id).unwrap();
    let moves = blockers.iter().any(|(id, blocker)| {
        let parked = operations.iter().any(|op| {
            op.id == *id
                && matches!(
                    op.state,
                    ApplyState::WaitingForCutover | ApplyState::RevertWindow
                )
        });
        parked
            || matches!(
                blocker,
                Blocker::Claimable
                    | Blocker::LeaseLive { .. }
                    | Blocker::StopPending
                    | Blocker::CancelPending
            )
    });
    if moves {
        Ok(())
    } else {
        Err(format!(
            "apply {apply_id} is {} but nothing will move: {blockers:?}",
            apply.state
        ))
    }
}

/// [`progress_possible`] for each of `apply_ids`, all read in one snapshot while workers run: on
/// MySQL a REPEATABLE READ transaction (the session's level is READ COMMITTED; `conn` is switched for
/// good, so give it a connection of its own), on SQLite a read transaction. Every committed state
/// must keep the promise, so a snapshot of committed states is enough. The violations found.
pub fn progress_possible_in_one_snapshot(
    conn: &mut DbConnection,
    apply_ids: &[ApplyId],
) -> Vec<String> {
    use diesel::connection::SimpleConnection;
    if let DbConnection::Mysql(inner) = conn {
        inner
            .batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .unwrap();
    }
    let mut found = Vec::new();
    conn.transaction::<(), diesel::result::Error, _>(|conn| {
        for &apply_id in apply_ids {
            if let Err(why) = progress_possible(conn, apply_id) {
                found.push(why);
            }
        }
        Ok(())
    })
    .unwrap();
    found
}
