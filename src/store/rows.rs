//! Row helpers every writer of the store shares, below the unit of work: who may write an operation
//! row ([`Writer`]) and the filters that say so, the lease columns, fencing tokens, the apply row as
//! the per-apply lock reads it, the pending requests that cover an operation, and the plain reads of
//! an apply's rows. Nothing here locks, derives or retries; it imports no other store module but the
//! rules and the input checks.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::query_dsl::methods::ExecuteDsl;

use super::predicates::request_pending_for_row;
use super::validate;
use crate::db::{self, DbConnection, UniqueKey};
use crate::error::{StoreError, StoreResult};
use crate::models::{
    Apply, ApplyId, ApplyOperation, ApplyOperationId, ControlRequest, LeaseToken, NewApply,
    OperationLease, Task,
};
use crate::schema::{applies, apply_control_requests as reqs, apply_operations, tasks};
use crate::state::{ApplyState, ControlRequestStatus};

/// Who is writing an operation row, and so which rows an UPDATE may touch.
#[derive(Clone, Copy)]
pub(in crate::store) enum Writer<'a> {
    /// An operator or migration: the row with this id, whoever holds it.
    Operator(ApplyOperationId),
    /// A worker: the row only while it still carries this lease's token and owner.
    Lease(&'a OperationLease),
}

impl Writer<'_> {
    /// Runs the UPDATE that writes `changes` to the row, filtered by the lease when there is one,
    /// and returns the rows it matched. Two concrete statements, not one boxed one, each prepared
    /// once per connection ([`db::cached_update`]; Diesel alone would prepare an UPDATE anew on every
    /// call).
    pub(in crate::store) fn execute<V>(
        self,
        conn: &mut DbConnection,
        changes: V,
    ) -> QueryResult<usize>
    where
        V: AsChangeset<Target = apply_operations::table>,
        Update<is_operation, V>: ExecuteDsl<DbConnection>,
        Update<is_held_by, V>: ExecuteDsl<DbConnection>,
    {
        match self {
            Writer::Operator(id) => {
                db::cached_update(apply_operations::table, is_operation(id), changes).execute(conn)
            }
            Writer::Lease(lease) => db::cached_update(
                apply_operations::table,
                is_held_by(lease.operation_id, lease.token.clone(), lease.owner.clone()),
                changes,
            )
            .execute(conn),
        }
    }

    /// Turns an UPDATE's matched-row count into `Ok` or why nothing matched: the row is gone
    /// ([`StoreError::ApplyOperationNotFound`]) or, for a lease, the row carries another token
    /// ([`StoreError::LeaseLost`]). Both backends report rows *matched* (MySQL through Diesel's
    /// `CLIENT_FOUND_ROWS`), so an idempotent repeat counts 1.
    pub(in crate::store) fn expect_row(
        self,
        conn: &mut DbConnection,
        matched: usize,
    ) -> StoreResult<()> {
        if matched > 0 {
            return Ok(());
        }
        match self {
            Writer::Operator(id) => Err(StoreError::ApplyOperationNotFound { id }),
            Writer::Lease(lease) => Err(lease_miss(conn, lease.operation_id)?),
        }
    }

    /// The operation written.
    pub(in crate::store) fn operation_id(self) -> ApplyOperationId {
        match self {
            Writer::Operator(id) => id,
            Writer::Lease(lease) => lease.operation_id,
        }
    }

    /// Like [`execute`](Self::execute), for a write that moves the operation out of its state into a
    /// non-completing one: through a lease, only while the operation is not settled. A settled
    /// operation keeps its holder's lease (a repeated completion succeeds), but its holder can never
    /// move it on again: such a write is [`StoreError::LeaseLost`] (only an operator's retry revives a
    /// settled operation).
    pub(in crate::store) fn execute_moving<V>(
        self,
        conn: &mut DbConnection,
        changes: V,
    ) -> QueryResult<usize>
    where
        V: AsChangeset<Target = apply_operations::table>,
        Update<is_operation, V>: ExecuteDsl<DbConnection>,
        Update<is_unsettled_held_by, V>: ExecuteDsl<DbConnection>,
    {
        match self {
            Writer::Operator(id) => {
                db::cached_update(apply_operations::table, is_operation(id), changes).execute(conn)
            }
            Writer::Lease(lease) => db::cached_update(
                apply_operations::table,
                is_unsettled_held_by(lease.operation_id, lease.token.clone(), lease.owner.clone()),
                changes,
            )
            .execute(conn),
        }
    }

    /// Rejects a lease that cannot be a real one before any SQL runs.
    pub(in crate::store) fn check(self) -> StoreResult<()> {
        match self {
            Writer::Operator(_) => Ok(()),
            Writer::Lease(lease) => validate::lease(lease),
        }
    }
}

/// The UPDATE of the operation rows `W` selects, prepared once per connection.
pub(in crate::store) type Update<W, V> =
    db::CachedUpdate<apply_operations::table, W, <V as AsChangeset>::Changeset>;

/// The operation with this id, whoever holds it.
#[diesel::dsl::auto_type]
pub(in crate::store) fn is_operation(operation_id: ApplyOperationId) -> _ {
    apply_operations::id.eq(operation_id)
}

/// The operation while it carries this token and owner.
#[diesel::dsl::auto_type]
pub(in crate::store) fn is_held_by(
    operation_id: ApplyOperationId,
    token: LeaseToken,
    owner: String,
) -> _ {
    apply_operations::id
        .eq(operation_id)
        .and(apply_operations::lease_token.eq(token))
        .and(apply_operations::lease_owner.eq(owner))
}

/// The operation row while it carries this token and owner.
#[diesel::dsl::auto_type]
pub(in crate::store) fn held_row(
    operation_id: ApplyOperationId,
    token: LeaseToken,
    owner: String,
) -> _ {
    let held: is_held_by = is_held_by(operation_id, token, owner);
    apply_operations::table.filter(held)
}

/// [`is_held_by`] while the operation is not settled: four inequalities rather than `NOT IN`, so the
/// statement has one fixed SQL text.
#[diesel::dsl::auto_type]
pub(in crate::store) fn is_unsettled_held_by(
    operation_id: ApplyOperationId,
    token: LeaseToken,
    owner: String,
) -> _ {
    let completed: ApplyState = ApplyState::Completed;
    let failed: ApplyState = ApplyState::Failed;
    let cancelled: ApplyState = ApplyState::Cancelled;
    let reverted: ApplyState = ApplyState::Reverted;
    let held: is_held_by = is_held_by(operation_id, token, owner);
    held.and(apply_operations::state.ne(completed))
        .and(apply_operations::state.ne(failed))
        .and(apply_operations::state.ne(cancelled))
        .and(apply_operations::state.ne(reverted))
}

/// Why a leased write matched no row: the row is gone, or its token is no longer the lease's.
pub(in crate::store) fn lease_miss(
    conn: &mut DbConnection,
    operation_id: ApplyOperationId,
) -> StoreResult<StoreError> {
    let exists = apply_operations::table
        .find(operation_id)
        .select(apply_operations::id)
        .first::<ApplyOperationId>(conn)
        .optional()?
        .is_some();
    Ok(if exists {
        StoreError::LeaseLost { operation_id }
    } else {
        StoreError::ApplyOperationNotFound { id: operation_id }
    })
}

/// The changeset of [`unleased`].
pub(in crate::store) type Unleased = (
    diesel::dsl::Eq<apply_operations::lease_owner, &'static str>,
    diesel::dsl::Eq<apply_operations::lease_token, &'static str>,
    diesel::dsl::Eq<apply_operations::lease_acquired_at, Option<chrono::NaiveDateTime>>,
    diesel::dsl::Eq<apply_operations::lease_expires_at, Option<chrono::NaiveDateTime>>,
);

/// The lease columns of an operation nobody holds.
pub(in crate::store) fn unleased() -> Unleased {
    (
        apply_operations::lease_owner.eq(""),
        apply_operations::lease_token.eq(""),
        apply_operations::lease_acquired_at.eq(None),
        apply_operations::lease_expires_at.eq(None),
    )
}

/// `now + ttl`, at the microseconds both backends store.
pub(in crate::store) fn expiry(now: NaiveDateTime, ttl: Duration) -> NaiveDateTime {
    now + chrono::Duration::microseconds(ttl_micros(ttl))
}

/// A checked TTL (at most a day) in microseconds.
pub(in crate::store) fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).expect("ttl is checked to be at most a day")
}

/// A new fencing token: 128 bits from the operating system's random source, as 32 lowercase hex digits.
pub(in crate::store) fn mint_token() -> StoreResult<LeaseToken> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| StoreError::Random(err.to_string()))?;
    Ok(LeaseToken::from(
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>(),
    ))
}

/// An apply row as the per-apply lock reads it: what the refresh compares against and what the
/// claims' cap and budget need.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = applies)]
pub(in crate::store) struct ApplyLockRow {
    pub(in crate::store) id: ApplyId,
    pub(in crate::store) database_name: String,
    pub(in crate::store) environment: String,
    /// As stored: the refresh replaces whatever is there, known or not.
    pub(in crate::store) state: String,
    pub(in crate::store) error_message: Option<String>,
    pub(in crate::store) started_at: Option<NaiveDateTime>,
    pub(in crate::store) completed_at: Option<NaiveDateTime>,
    pub(in crate::store) max_attempts: i32,
    pub(in crate::store) max_concurrency: Option<i64>,
    pub(in crate::store) defer_cutover: bool,
    /// The apply's last failure sequence number (what a `release` records as `releases_through`).
    pub(in crate::store) failure_seq: i64,
}

/// The pending requests that cover one operation, and its stored state: what a leased write checks
/// before it stops, cancels, cuts over or leaves `revert_window`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub(in crate::store) struct Covering {
    /// The operation's state as stored.
    pub(in crate::store) state: String,
    /// A pending `stop` names it or its apply.
    pub(in crate::store) stop: bool,
    /// A pending `cancel` names it or its apply.
    pub(in crate::store) cancel: bool,
    /// A pending `revert` names it.
    pub(in crate::store) revert: bool,
    /// A pending `skip_revert` names it.
    pub(in crate::store) skip_revert: bool,
}

/// [`Covering`] for operation `id`, in one SELECT (`None`: no such operation), from the same
/// predicate the claims use for each kind.
pub(in crate::store) fn covering(
    conn: &mut DbConnection,
    id: ApplyOperationId,
) -> StoreResult<Option<Covering>> {
    use crate::state::ControlRequestKind as Kind;
    Ok(apply_operations::table
        .find(id)
        .select((
            apply_operations::state,
            request_pending_for_row(Kind::Stop),
            request_pending_for_row(Kind::Cancel),
            request_pending_for_row(Kind::Revert),
            request_pending_for_row(Kind::SkipRevert),
        ))
        .first(conn)
        .optional()?)
}

/// The apply with this id, or `None`.
pub(in crate::store) fn apply(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Option<Apply>> {
    Ok(applies::table
        .find(id)
        .select(Apply::as_select())
        .first(conn)
        .optional()?)
}

/// The operation with this id, or `None`.
pub(in crate::store) fn operation(
    conn: &mut DbConnection,
    id: ApplyOperationId,
) -> StoreResult<Option<ApplyOperation>> {
    Ok(db::first_native!(
        conn,
        apply_operations::table
            .find(id)
            .select(ApplyOperation::as_select())
    )
    .optional()?)
}

/// The operations of `apply_id` in claim order: oldest first by (`created_at`, `id`).
pub(in crate::store) fn operations_of(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<ApplyOperation>> {
    Ok(apply_operations::table
        .filter(apply_operations::apply_id.eq(apply_id))
        .order((
            apply_operations::created_at.asc(),
            apply_operations::id.asc(),
        ))
        .select(ApplyOperation::as_select())
        .load(conn)?)
}

/// The tasks of `apply_id`, oldest first by (`created_at`, `id`).
pub(in crate::store) fn tasks_of(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<Task>> {
    Ok(tasks::table
        .filter(tasks::apply_id.eq(apply_id))
        .order((tasks::created_at.asc(), tasks::id.asc()))
        .select(Task::as_select())
        .load(conn)?)
}

/// The pending requests of `apply_id` (whole-apply and per-operation), oldest first by
/// (`created_at`, `id`).
pub(in crate::store) fn pending_requests_of(
    conn: &mut DbConnection,
    apply_id: ApplyId,
) -> StoreResult<Vec<ControlRequest>> {
    Ok(reqs::table
        .filter(reqs::apply_id.eq(apply_id))
        .filter(reqs::status.eq(ControlRequestStatus::Pending))
        .order((reqs::created_at.asc(), reqs::id.asc()))
        .select(ControlRequest::as_select())
        .load(conn)?)
}

/// The unique key of apply identifiers. The name is the same on both backends.
const IDENTIFIER_KEY: UniqueKey = UniqueKey {
    table: "applies",
    name: "applies_apply_identifier_key",
    columns: &["apply_identifier"],
};

/// The INSERT of a validated apply, and reading its id back.
pub(in crate::store) fn insert_apply(
    conn: &mut DbConnection,
    new: &NewApply,
) -> StoreResult<ApplyId> {
    let now = db::now();
    let inserted = db::recoverable(conn, |conn| {
        db::insert_returning_id!(
            conn,
            diesel::insert_into(applies::table).values((
                new,
                applies::state.eq(ApplyState::Pending),
                applies::created_at.eq(now),
                applies::updated_at.eq(now),
            )),
            applies::id
        )
    });
    let exists = || StoreError::ApplyExists {
        apply_identifier: new.apply_identifier.clone(),
    };
    match inserted {
        Ok(id) => Ok(ApplyId(id)),
        Err(err) if db::is_unique_violation_of(conn, &err, &IDENTIFIER_KEY) => Err(exists()),
        // A duplicate whose message names no key (another message language): the identifier's
        // lookup says whether it was this key, as an operation's insert confirms its own.
        Err(err)
            if db::is_unreadable_unique_violation(conn, &err)
                && apply_by_identifier(conn, &new.apply_identifier)?.is_some() =>
        {
            Err(exists())
        }
        Err(err) => Err(err.into()),
    }
}

/// The apply with this identifier, or `None`; the caller checked that it is one an apply could have.
pub(in crate::store) fn apply_by_identifier(
    conn: &mut DbConnection,
    apply_identifier: &str,
) -> StoreResult<Option<Apply>> {
    Ok(applies::table
        .filter(applies::apply_identifier.eq(apply_identifier))
        .select(Apply::as_select())
        .first(conn)
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let a = mint_token().unwrap();
        let b = mint_token().unwrap();
        assert_eq!(a.expose().len(), 32);
        assert!(validate::is_minted_token(a.expose()), "{}", a.expose());
        assert_ne!(a, b);
    }

    #[test]
    fn expiry_adds_the_ttl_at_microsecond_precision() {
        let at = chrono::DateTime::from_timestamp(100, 0)
            .unwrap()
            .naive_utc();
        let later = expiry(at, Duration::from_nanos(2_500_900));
        assert_eq!(later - at, chrono::Duration::microseconds(2_500));
    }
}
