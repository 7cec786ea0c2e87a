//! The `applies` store: the parent rows operations and tasks belong to.

use diesel::prelude::*;

use super::unit::{self, Lock, OnLostRace};
use super::{rows, validate};
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::schema_types::datetime;
use chrono::NaiveDateTime;

use crate::models::{Apply, ApplyId, DeletedRollout, NewApply, Rollout};
use crate::schema::{
    applies, apply_control_requests, apply_operations as ops, tasks as tasks_table,
};
use crate::state::ApplyState;

pub use super::claims::{blockers, blockers_in, Blocker};
pub use super::rollouts::{
    create_rollout, validate_rollout, MAX_OPERATION_TASKS, MAX_ROLLOUT_DDL_BYTES,
    MAX_ROLLOUT_OPERATIONS, MAX_ROLLOUT_TASKS,
};
pub use super::targets::{explain_target_holder, target_holder};
pub use crate::models::DEFAULT_MAX_ATTEMPTS;

/// Inserts a `pending` apply with no operations and returns its id. To create an apply with its
/// operations and tasks at once, use [`create_rollout`].
///
/// Errors: [`StoreError::InvalidInput`] for an empty or over-long (255 characters) field, an
/// identifier ending in a space, a `requested_by` over 255 characters, or a `max_concurrency` or
/// `max_attempts` out of range; [`StoreError::ApplyExists`] when the identifier is taken.
pub fn insert(conn: &mut DbConnection, new: &NewApply) -> StoreResult<ApplyId> {
    validate::key_varchar("apply_identifier", &new.apply_identifier)?;
    validate::required_varchar("database_name", &new.database_name)?;
    validate::required_varchar("environment", &new.environment)?;
    validate::required_varchar("deployment", &new.deployment)?;
    validate::optional_varchar("requested_by", &new.requested_by)?;
    validate::max_concurrency(new.max_concurrency)?;
    validate::max_attempts(new.max_attempts)?;
    db::serialized_write(conn, |conn| rows::insert_apply(conn, new))
}

/// Brings apply `id`'s derived state and its operations' claim decisions (what each claim does with
/// them, see [`crate::state::decide`]) up to date and returns the apply as stored afterwards. Every
/// state write already does this in its own transaction; this is for operators (after repairing a row
/// by hand, or for an apply written before the aggregate existed). Writes only when something
/// changes. [`StoreError::ApplyNotFound`] for an unknown apply.
pub fn refresh(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Apply> {
    unit::run_known(
        conn,
        Lock::Apply(id),
        OnLostRace::RetryBriefly,
        |_, locked| locked.map(|_| ()).ok_or(StoreError::ApplyNotFound { id }),
    )?;
    // Read after the commit: the apply as stored once refreshed (or as a later write left it).
    rows::apply(conn, id)?.ok_or(StoreError::ApplyNotFound { id })
}

/// The apply with this id, or `None`.
pub fn get(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Option<Apply>> {
    rows::apply(conn, id)
}

/// The apply with this user-facing identifier, or `None`.
///
/// The identifier is compared exactly, byte for byte, on every backend. One that [`insert`] would
/// reject (empty, over 255 characters, a trailing space) finds nothing, without a query.
pub fn get_by_identifier(
    conn: &mut DbConnection,
    apply_identifier: &str,
) -> StoreResult<Option<Apply>> {
    if !validate::is_storable_key(apply_identifier) {
        return Ok(None);
    }
    rows::apply_by_identifier(conn, apply_identifier)
}

/// Turns automatic cutover off (`true`) or on (`false`) for apply `id`. Idempotent.
/// [`StoreError::ApplyNotFound`] when there is no such apply. A unit of work on the apply, like
/// every write that changes what its operations may do: the apply locked, then the UPDATE, then its
/// refresh.
pub fn set_defer_cutover(
    conn: &mut DbConnection,
    id: ApplyId,
    defer_cutover: bool,
) -> StoreResult<()> {
    unit::run_known(
        conn,
        Lock::Apply(id),
        OnLostRace::RetryBriefly,
        |conn, locked| {
            let locked = locked.ok_or(StoreError::ApplyNotFound { id })?;
            diesel::update(applies::table.find(id))
                .set((
                    applies::defer_cutover.eq(defer_cutover),
                    applies::updated_at.eq(db::now()),
                ))
                .execute(conn)?;
            // The refresh decides the claim rules from the apply as written.
            locked.row.defer_cutover = defer_cutover;
            Ok(())
        },
    )
}

/// The apply with everything it owns: its operations in claim order with their tasks, its tasks no
/// operation owns, and its pending control requests; `None` for an unknown apply.
///
/// Four SELECTs in one read transaction that reads one moment of the database (see
/// [`db::snapshot_read`](crate::db)), whatever the rollout's size: seven statements on MySQL, with
/// `SET TRANSACTION` (REPEATABLE READ, READ ONLY), `BEGIN` and `COMMIT`. A writer that commits
/// between the SELECTs is never seen half-way.
pub fn rollout(conn: &mut DbConnection, id: ApplyId) -> StoreResult<Option<Rollout>> {
    db::snapshot_read(conn, |conn| {
        let Some(apply) = get(conn, id)? else {
            return Ok(None);
        };
        let operations = rows::operations_of(conn, id)?;
        let tasks = rows::tasks_of(conn, id)?;
        let pending_requests = rows::pending_requests_of(conn, id)?;
        Ok(Some(Rollout::assemble(
            apply,
            operations,
            tasks,
            pending_requests,
        )))
    })
}

/// Deletes a finished apply with everything it owns: its operations, their tasks (and its tasks no
/// operation owns) and its control requests, in one write transaction, and returns how many of each.
///
/// Only when every operation is settled (`completed`, `failed`, `cancelled`, `reverted`); otherwise
/// [`StoreError::ApplyActive`] and nothing is deleted. The apply row, and then its unsettled
/// operations, are read with a locking read, so an operation cannot be moved out of a settled state
/// (an operator's retry) between the check and the delete. [`StoreError::ApplyNotFound`] for an
/// unknown apply.
pub fn delete(conn: &mut DbConnection, id: ApplyId) -> StoreResult<DeletedRollout> {
    const SETTLED: [ApplyState; 4] = [
        ApplyState::Completed,
        ApplyState::Failed,
        ApplyState::Cancelled,
        ApplyState::Reverted,
    ];
    db::write_transaction(conn, |conn| {
        let found: Option<ApplyId> =
            db::first_current!(conn, applies::table.find(id).select(applies::id)).optional()?;
        if found.is_none() {
            return Err(StoreError::ApplyNotFound { id });
        }
        let unsettled: Option<crate::models::ApplyOperationId> = db::first_current!(
            conn,
            ops::table
                .filter(ops::apply_id.eq(id))
                .filter(ops::state.ne_all(SETTLED))
                .select(ops::id)
        )
        .optional()?;
        if unsettled.is_some() {
            return Err(StoreError::ApplyActive { id });
        }
        let tasks = diesel::delete(tasks_table::table.filter(tasks_table::apply_id.eq(id)))
            .execute(conn)?;
        let control_requests = diesel::delete(
            apply_control_requests::table.filter(apply_control_requests::apply_id.eq(id)),
        )
        .execute(conn)?;
        let operations = diesel::delete(ops::table.filter(ops::apply_id.eq(id))).execute(conn)?;
        diesel::delete(applies::table.find(id)).execute(conn)?;
        Ok(DeletedRollout {
            operations,
            tasks,
            control_requests,
        })
    })
}

/// Which applies [`list`] and [`counts_by_state`] read. Every field narrows; the default reads every
/// apply, the first [`DEFAULT_PAGE`] of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyFilter {
    /// Only applies in one of these states (none: any state).
    pub states: Vec<ApplyState>,
    /// Only applies of this logical database (compared exactly).
    pub database_name: Option<String>,
    /// Only applies for this environment (compared exactly).
    pub environment: Option<String>,
    /// Only applies with an operation for this deployment (compared exactly).
    pub deployment: Option<String>,
    /// Only applies created at or after this time (UTC).
    pub created_since: Option<NaiveDateTime>,
    /// The page size for [`list`]: 1 to [`MAX_PAGE`]; `None` is [`DEFAULT_PAGE`].
    pub limit: Option<u32>,
    /// For [`list`]: continue after this cursor (from the previous page's [`Page::next`]).
    pub after: Option<ApplyCursor>,
}

/// The page size [`list`] uses when the filter sets none.
pub const DEFAULT_PAGE: u32 = 100;

/// The largest page [`list`] returns.
pub const MAX_PAGE: u32 = 1_000;

/// Where a page of [`list`] ended: pass it as [`ApplyFilter::after`] to read the next one. Opaque:
/// its text is stable, so it can travel through a command line or a URL, but its content is not API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApplyCursor {
    created_at: NaiveDateTime,
    id: ApplyId,
}

impl std::fmt::Display for ApplyCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.created_at.and_utc().timestamp_micros(),
            self.id
        )
    }
}

impl std::str::FromStr for ApplyCursor {
    type Err = StoreError;

    /// Reads a cursor [`Display`](std::fmt::Display) wrote; anything else is
    /// [`StoreError::InvalidInput`] for the field `after`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            || StoreError::invalid("after", format!("{text:?} is not a cursor list returned"));
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        let id: i64 = id.parse().map_err(|_| invalid())?;
        let created_at = chrono::DateTime::from_timestamp_micros(micros)
            .ok_or_else(invalid)?
            .naive_utc();
        if validate::datetime("after", created_at).is_err() {
            return Err(invalid());
        }
        Ok(ApplyCursor {
            created_at,
            id: ApplyId(id),
        })
    }
}

/// One page of a listing, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Pass as [`ApplyFilter::after`] to read the next page; `None` when there is none.
    pub next: Option<ApplyCursor>,
}

/// A condition on `applies`, built at run time from a filter.
type AppliesCondition =
    Box<dyn BoxableExpression<applies::table, db::MultiBackend, SqlType = diesel::sql_types::Bool>>;

/// The condition every filter of `filter` but the page puts on `applies` (`TRUE` when none does).
fn condition(filter: &ApplyFilter) -> AppliesCondition {
    let mut condition: AppliesCondition = Box::new(true.into_sql::<diesel::sql_types::Bool>());
    if !filter.states.is_empty() {
        condition = Box::new(condition.and(applies::state.eq_any(filter.states.clone())));
    }
    if let Some(database_name) = filter.database_name.clone() {
        condition = Box::new(condition.and(applies::database_name.eq(database_name)));
    }
    if let Some(environment) = filter.environment.clone() {
        condition = Box::new(condition.and(applies::environment.eq(environment)));
    }
    if let Some(deployment) = filter.deployment.clone() {
        condition = Box::new(
            condition.and(diesel::dsl::exists(
                ops::table
                    .filter(ops::apply_id.eq(applies::id))
                    .filter(ops::deployment.eq(deployment))
                    .select(ops::id),
            )),
        );
    }
    if let Some(since) = filter.created_since {
        condition = Box::new(condition.and(applies::created_at.ge(datetime(since))));
    }
    condition
}

/// Checks the parts of `filter` that can be wrong before any SQL; `Ok(false)` when a text filter
/// could never match a stored key (the listing is then empty without a query).
fn check_filter(filter: &ApplyFilter) -> StoreResult<bool> {
    if let Some(limit) = filter.limit {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(StoreError::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE}, not {limit}"),
            ));
        }
    }
    if let Some(since) = filter.created_since {
        validate::datetime("created_since", since)?;
    }
    let storable = |value: &Option<String>| {
        value
            .as_deref()
            .is_none_or(|value| validate::required_varchar("filter", value).is_ok())
    };
    Ok(storable(&filter.database_name)
        && storable(&filter.environment)
        && filter
            .deployment
            .as_deref()
            .is_none_or(validate::is_storable_key))
}

/// The applies `filter` selects, newest first by (`created_at`, `id`), one page at a time: keyset
/// pagination (the next page starts after the last row's `created_at` and `id`, never at an
/// offset), so pages neither skip nor repeat rows when applies are added meanwhile. One SELECT, in
/// the order of `applies_created_at_id_idx`, read backwards: a page reads about as many index entries
/// as it returns when the filter matches densely (`tests/it/rollouts.rs` measures it at 100,000
/// applies).
///
/// Errors: [`StoreError::InvalidInput`] for a limit outside 1 to [`MAX_PAGE`], or a `created_since`
/// outside what a datetime column holds ([`MIN_DATETIME`](crate::schema_types::MIN_DATETIME) to
/// [`MAX_DATETIME`](crate::schema_types::MAX_DATETIME)), before any SQL.
pub fn list(conn: &mut DbConnection, filter: &ApplyFilter) -> StoreResult<Page<Apply>> {
    if !check_filter(filter)? {
        return Ok(Page {
            items: Vec::new(),
            next: None,
        });
    }
    let limit = filter.limit.unwrap_or(DEFAULT_PAGE);
    let mut query = applies::table.filter(condition(filter)).into_boxed();
    if let Some(after) = &filter.after {
        query = query.filter(
            applies::created_at
                .lt(datetime(after.created_at))
                .or(applies::created_at
                    .eq(datetime(after.created_at))
                    .and(applies::id.lt(after.id))),
        );
    }
    let mut items: Vec<Apply> = query
        .order((applies::created_at.desc(), applies::id.desc()))
        .limit(i64::from(limit) + 1)
        .select(Apply::as_select())
        .load(conn)?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|last| ApplyCursor {
            created_at: last.created_at,
            id: last.id,
        })
    } else {
        None
    };
    Ok(Page { items, next })
}

/// How many applies `filter` selects, per state (states with none are left out), in the order of
/// [`ApplyState::ALL`]. The page fields of the filter are ignored. One SELECT.
///
/// A stored state this version does not know is [`StoreError::UnknownState`], naming one such row;
/// a `created_since` outside what a datetime column holds is [`StoreError::InvalidInput`], before
/// any SQL.
pub fn counts_by_state(
    conn: &mut DbConnection,
    filter: &ApplyFilter,
) -> StoreResult<Vec<(ApplyState, i64)>> {
    let unpaged = ApplyFilter {
        limit: None,
        after: None,
        ..filter.clone()
    };
    if !check_filter(&unpaged)? {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, i64, Option<ApplyId>)> = applies::table
        .filter(condition(&unpaged))
        .group_by(applies::state)
        .select((
            applies::state,
            diesel::dsl::count_star(),
            diesel::dsl::min(applies::id),
        ))
        .load(conn)?;
    let mut counts = Vec::with_capacity(rows.len());
    for (value, count, example) in rows {
        let state = ApplyState::from_stored(&value).ok_or_else(|| StoreError::UnknownState {
            table: "applies",
            id: example.map_or(0, ApplyId::get),
            value,
        })?;
        counts.push((state, count));
    }
    counts.sort_by_key(|(state, _)| ApplyState::ALL.iter().position(|s| s == state));
    Ok(counts)
}

/// How far an apply's operations are: how many it has, and how many of them are `completed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyProgress {
    /// The apply.
    pub apply_id: ApplyId,
    /// Its operations.
    pub operations: i64,
    /// Those of them that are `completed`.
    pub completed: i64,
}

/// [`ApplyProgress`] of each of `ids` that exists, in the order of `ids` (an apply with no
/// operations counts 0 of 0). Two grouped SELECTs whatever the number of applies, so a page of
/// [`list`] gets its progress at a fixed cost; nothing is read for an empty `ids`.
pub fn progress(conn: &mut DbConnection, ids: &[ApplyId]) -> StoreResult<Vec<ApplyProgress>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let totals: Vec<(ApplyId, i64)> = ops::table
        .filter(ops::apply_id.eq_any(ids))
        .group_by(ops::apply_id)
        .select((ops::apply_id, diesel::dsl::count_star()))
        .load(conn)?;
    let completed: Vec<(ApplyId, i64)> = ops::table
        .filter(ops::apply_id.eq_any(ids))
        .filter(ops::state.eq(ApplyState::Completed))
        .group_by(ops::apply_id)
        .select((ops::apply_id, diesel::dsl::count_star()))
        .load(conn)?;
    let count_of = |rows: &[(ApplyId, i64)], id: ApplyId| {
        rows.iter()
            .find(|(apply, _)| *apply == id)
            .map_or(0, |(_, n)| *n)
    };
    Ok(ids
        .iter()
        .map(|&apply_id| ApplyProgress {
            apply_id,
            operations: count_of(&totals, apply_id),
            completed: count_of(&completed, apply_id),
        })
        .collect())
}
