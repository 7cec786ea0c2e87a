//! Leases: how a worker holds the operation it claimed, and the guarded writes it drives it with.
//!
//! A claim (`claims`) stamps the row with a fresh random token, the owner's name and an expiry
//! taken from the database's clock, and returns them as an [`OperationLease`]. Every write in this
//! module acts only while the row still carries that token and owner: the token is the fence. Once
//! another worker claims the row (after the lease expired, or after [`release`]), every write through
//! the old lease is [`StoreError::LeaseLost`] and changes nothing. A lease past its expiry that nobody
//! has claimed yet still writes. Repeating a write under the current lease is idempotent.
//!
//! Each write is one UPDATE; only when it matches nothing does a second statement tell a missing row
//! ([`StoreError::ApplyOperationNotFound`]) from a lost lease. A state write runs as the store's
//! unit of work on the operation's apply: one transaction that first locks the apply and last
//! refreshes its derived state; `heartbeat` and `release` change no state and need no transaction
//! (a heartbeat reads its new expiry back).
//!
//! When to heartbeat, what to do on [`StoreError::LeaseLost`], when to release, and what each error
//! asks of a worker: `docs/worker-contract.md` in the repository.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::predicates::revert_decision_requested;
use super::rows::{self, held_row, Writer};
use super::{validate, writes};
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyOperation, ApplyOperationId, LiveLease};
use crate::schema::{apply_control_requests as reqs, apply_operations as ops};
use crate::state::{ApplyState, ControlRequestKind, ControlRequestStatus};

pub use super::validate::MAX_LEASE_TTL;
pub use crate::models::OperationLease;

/// Moves the held operation to `state` (not a completing state); see
/// `apply_operations::update_state` for the rules.
pub fn update_state(
    conn: &mut DbConnection,
    lease: &OperationLease,
    state: ApplyState,
) -> StoreResult<()> {
    writes::write_state(conn, Writer::Lease(lease), state)
}

/// Moves the held operation to `running`, stamping `started_at` the first time only.
pub fn mark_started(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    writes::write_started(conn, Writer::Lease(lease))
}

/// Moves the held operation to `completed`, stamping `completed_at` the first time only. The lease
/// stays on the row, so a repeat under it succeeds; a completed row is never claimed again.
pub fn mark_completed(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    writes::write_completion(conn, Writer::Lease(lease), ApplyState::Completed, None)
}

/// Moves the held operation to `failed` with `message` (1 to 65,535 bytes).
pub fn mark_failed(
    conn: &mut DbConnection,
    lease: &OperationLease,
    message: &str,
) -> StoreResult<()> {
    writes::write_failed(conn, Writer::Lease(lease), message)
}

/// Moves the held operation to `cancelled`, `reverted` or `completed`; see
/// `apply_operations::mark_terminal`.
pub fn mark_terminal(
    conn: &mut DbConnection,
    lease: &OperationLease,
    state: ApplyState,
) -> StoreResult<()> {
    writes::write_terminal(conn, Writer::Lease(lease), state)
}

/// Renews the lease: its expiry becomes the database's now plus the lease's TTL, "now" being read when
/// the row is written (after any wait for a lock), so the new expiry is never already past. Updates
/// `lease.expires_at` and returns the new expiry as stored. [`StoreError::LeaseLost`] once another
/// worker has claimed the row. Two statements on MySQL (the UPDATE, then reading the expiry back);
/// one on PostgreSQL (the UPDATE locks the row in a sub-select first and returns the expiry).
pub fn heartbeat(
    conn: &mut DbConnection,
    lease: &mut OperationLease,
) -> StoreResult<NaiveDateTime> {
    validate::lease(lease)?;
    let ttl_micros = rows::ttl_micros(lease.ttl);
    let held: &OperationLease = lease;
    let expires_at = db::retry_fenced_write(conn, |conn| {
        db::serialized_write(conn, |conn| heartbeat_once(conn, held, ttl_micros))
    })?;
    lease.expires_at = expires_at;
    Ok(expires_at)
}

/// One attempt of [`heartbeat`]: the UPDATE of the expiry, then its read.
fn heartbeat_once(
    conn: &mut DbConnection,
    lease: &OperationLease,
    ttl_micros: i64,
) -> StoreResult<NaiveDateTime> {
    let writer = Writer::Lease(lease);
    let renewed: Option<diesel::QueryResult<Option<Option<NaiveDateTime>>>> = db::update_after_locking!(
        &mut *conn,
        held_row(lease.operation_id, lease.token.clone(), lease.owner.clone()),
        ops::id,
        {
            let locked = diesel::alias!(ops as locked_operation);
            locked
                .filter(locked.field(ops::id).eq(lease.operation_id))
                .select(locked.field(ops::id))
        },
        ops::lease_expires_at.eq(db::now_when_read_plus(ttl_micros).nullable()),
        ops::lease_expires_at
    );
    if let Some(renewed) = renewed {
        return match renewed? {
            Some(Some(expires_at)) => Ok(expires_at),
            // Not held (or gone): the UPDATE matched nothing; say why.
            _ => writer.expect_row(conn, 0).and(Err(StoreError::LeaseLost {
                operation_id: lease.operation_id,
            })),
        };
    }
    let matched = writer.execute(
        conn,
        ops::lease_expires_at.eq(db::now_when_read_plus(ttl_micros).nullable()),
    )?;
    writer.expect_row(conn, matched)?;
    let stored: Option<Option<NaiveDateTime>> =
        held_row(lease.operation_id, lease.token.clone(), lease.owner.clone())
            .select(ops::lease_expires_at)
            .first(conn)
            .optional()?;
    match stored {
        Some(Some(expires_at)) => Ok(expires_at),
        // Claimed away between the two statements (MySQL; impossible while SQLite's lock is held).
        _ => Err(StoreError::LeaseLost {
            operation_id: lease.operation_id,
        }),
    }
}

/// Saves the copy engine's checkpoint on the held operation: `engine_state` (at most 65,535 bytes,
/// opaque to the store) replaces the one saved before. The claim that takes the operation over
/// (recovery, after this holder died or released it) returns it in
/// [`ApplyOperation::engine_state`](crate::models::ApplyOperation::engine_state), so the new holder
/// resumes from it. The state is not changed. One UPDATE (a second statement only when it matched
/// nothing).
///
/// Errors: [`StoreError::InvalidInput`] for more than 65,535 bytes, before any SQL;
/// [`StoreError::LeaseLost`]; [`StoreError::ApplyOperationNotFound`].
pub fn save_engine_state(
    conn: &mut DbConnection,
    lease: &OperationLease,
    engine_state: &[u8],
) -> StoreResult<()> {
    validate::lease(lease)?;
    validate::blob("engine_state", engine_state)?;
    let writer = Writer::Lease(lease);
    db::retry_fenced_write(conn, |conn| {
        let matched = writer.execute(
            conn,
            (
                ops::engine_state.eq(Some(engine_state)),
                ops::updated_at.eq(db::now()),
            ),
        )?;
        writer.expect_row(conn, matched)
    })
}

/// Records the remote system's id for the held operation (1 to 255 characters, no trailing space),
/// replacing any earlier one. External ids are unique across operations: find the operation again
/// with `get_by_external_id`. Setting the id the
/// operation already has succeeds. One UPDATE.
///
/// Errors: [`StoreError::InvalidInput`] for an empty or over-long id, before any SQL;
/// [`StoreError::ExternalIdTaken`] naming the operation that carries it (nothing written);
/// [`StoreError::LeaseLost`]; [`StoreError::ApplyOperationNotFound`].
pub fn set_external_id(
    conn: &mut DbConnection,
    lease: &OperationLease,
    external_id: &str,
) -> StoreResult<()> {
    validate::lease(lease)?;
    validate::key_varchar("external_id", external_id)?;
    let writer = Writer::Lease(lease);
    let written = db::retry_fenced_write(conn, |conn| {
        writer
            .execute(
                conn,
                (
                    ops::external_id.eq(Some(external_id)),
                    ops::updated_at.eq(db::now()),
                ),
            )
            .map_err(StoreError::from)
    });
    match written {
        Ok(matched) => writer.expect_row(conn, matched),
        Err(StoreError::Database(err))
            if db::is_unique_violation_of(conn, &err, &EXTERNAL_ID_KEY) =>
        {
            let holder = ops::table
                .filter(ops::external_id.eq(external_id))
                .select(ops::id)
                .first::<ApplyOperationId>(conn)
                .optional()?;
            match holder {
                Some(operation_id) => Err(StoreError::ExternalIdTaken {
                    external_id: external_id.to_owned(),
                    operation_id,
                }),
                // Its holder let it go in between: the write failed, and nothing was written.
                None => Err(err.into()),
            }
        }
        Err(err) => Err(err),
    }
}

/// External ids are unique across operations. The name is the same on both backends.
const EXTERNAL_ID_KEY: UniqueKey = UniqueKey {
    table: "apply_operations",
    name: "apply_operations_external_id_key",
    columns: &["external_id"],
};

/// The kinds of the pending control requests that cover the held operation: those naming it and
/// those naming its whole apply, oldest first. A holder asks at least once per heartbeat and acts on
/// them: a `cancel` ([`mark_terminal`] with `cancelled`) before a `stop` ([`update_state`] with
/// `stopped`), and in `revert_window` a `revert` or `skip_revert` by releasing the operation to the
/// cutover claim's revert arms. Kinds this version does not know are left out. One SELECT; it does
/// not check the lease (a lost lease shows on the next write).
pub fn pending_requests(
    conn: &mut DbConnection,
    lease: &OperationLease,
) -> StoreResult<Vec<ControlRequestKind>> {
    validate::lease(lease)?;
    let kinds: Vec<String> = reqs::table
        .filter(reqs::apply_id.eq(lease.apply_id))
        .filter(reqs::status.eq(ControlRequestStatus::Pending))
        .filter(
            reqs::apply_operation_id
                .is_null()
                .or(reqs::apply_operation_id.eq(lease.operation_id)),
        )
        .order((reqs::created_at.asc(), reqs::id.asc()))
        .select(reqs::kind)
        .load(conn)?;
    Ok(kinds
        .iter()
        .filter_map(|kind| ControlRequestKind::from_stored(kind))
        .collect())
}

/// True while operation `lease.operation_id` still carries the lease (its token and owner). One
/// SELECT. For a caller whose write through the lease failed with an unknown outcome (the connection
/// died after sending it): on a new connection, this tells whether the lease is still held.
pub fn is_held(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<bool> {
    validate::lease(lease)?;
    Ok(
        held_row(lease.operation_id, lease.token.clone(), lease.owner.clone())
            .select(ops::id)
            .first::<ApplyOperationId>(conn)
            .optional()?
            .is_some(),
    )
}

/// True when operation `lease.operation_id` is in `state` and nobody holds it (no token). One SELECT.
/// For a write of a state that clears the lease (`pending`, `stopped`, `paused`,
/// `failed_retryable`) whose answer was lost: repeating it meets no lease, so this tells whether
/// the operation is where the write was taking it.
pub fn is_unheld_in(
    conn: &mut DbConnection,
    lease: &OperationLease,
    state: ApplyState,
) -> StoreResult<bool> {
    validate::lease(lease)?;
    let none: &'static str = "";
    Ok(ops::table
        .find(lease.operation_id)
        .filter(ops::state.eq(state))
        .filter(ops::lease_token.eq(none))
        .select(ops::id)
        .first::<ApplyOperationId>(conn)
        .optional()?
        .is_some())
}

/// Gives the operation up: clears owner, token and expiry, keeping the state, so any worker can claim
/// it at once (as recovery, resume or retry, whichever its state calls for). The lease is spent: a
/// second release, like any other write through it, is [`StoreError::LeaseLost`].
///
/// An operation in `revert_window` is kept by its holder until the window closes (it writes
/// `completed`) or a `revert` or `skip_revert` request arrives, which the cutover claim's revert arms
/// then take: releasing it otherwise is [`StoreError::HeldInRevertWindow`] and changes nothing.
pub fn release(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    validate::lease(lease)?;
    db::retry_fenced_write(conn, |conn| release_once(conn, lease))
}

/// One attempt of [`release`].
fn release_once(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    let matched = db::cached_update(
        ops::table,
        rows::is_held_by(lease.operation_id, lease.token.clone(), lease.owner.clone())
            .and(releasable()),
        rows::unleased(),
    )
    .execute(conn)?;
    if matched > 0 {
        return Ok(());
    }
    // Why not, in one read: gone, held by someone else, or kept in its revert window.
    let still_held = ops::lease_token
        .eq(lease.token.clone())
        .and(ops::lease_owner.eq(lease.owner.clone()));
    let found: Option<bool> = ops::table
        .find(lease.operation_id)
        .select(still_held)
        .first(conn)
        .optional()?;
    let operation_id = lease.operation_id;
    Err(match found {
        None => StoreError::ApplyOperationNotFound { id: operation_id },
        Some(false) => StoreError::LeaseLost { operation_id },
        Some(true) => StoreError::HeldInRevertWindow { operation_id },
    })
}

/// An operation its holder may release: anywhere but `revert_window`, unless a revert decision is
/// pending for it.
#[diesel::dsl::auto_type]
fn releasable() -> _ {
    let window: ApplyState = ApplyState::RevertWindow;
    ops::state.ne(window).or(revert_decision_requested())
}

/// Every lease held now (not expired by the database's clock, not released), soonest expiry first,
/// for operators: which worker holds what, and for how long yet. `owner_prefix` keeps only holders
/// whose name starts with it (compared exactly, case-sensitively, on every backend). One SELECT,
/// through the lease expiry index.
///
/// A stored state this version does not know is [`StoreError::UnknownState`], naming the row.
pub fn live(conn: &mut DbConnection, owner_prefix: Option<&str>) -> StoreResult<Vec<LiveLease>> {
    let now = db::now();
    let none: &'static str = "";
    let rows: Vec<(ApplyOperation, NaiveDateTime)> = ops::table
        .filter(ops::lease_expires_at.gt(now.nullable()))
        .filter(ops::lease_token.ne(none))
        .order((ops::lease_expires_at.asc(), ops::id.asc()))
        .select((ApplyOperation::as_select(), db::now_when_read()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|(op, _)| owner_prefix.is_none_or(|prefix| op.lease_owner.starts_with(prefix)))
        .filter_map(|(op, read_at)| {
            Some(LiveLease {
                expires_at: op.lease_expires_at?,
                operation_id: op.id,
                apply_id: op.apply_id,
                deployment: op.deployment,
                state: op.state,
                owner: op.lease_owner,
                acquired_at: op.lease_acquired_at,
                read_at,
            })
        })
        .collect())
}
