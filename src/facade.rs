//! [`Store`]: the pool-owning entry point for worker binaries.

use crate::db::{self, DbConnection, DbPool, PoolConfig, PooledConnection};
use crate::error::{StoreError, StoreResult};
use chrono::NaiveDateTime;

use crate::models::{
    Apply, ApplyOperation, ControlRequest, NewApply, NewApplyOperation, NewTask, Task,
};
use crate::state::{ApplyState, ControlRequestKind};
use crate::store::claims::{ClaimOptions, ClaimedOperation};
use crate::store::leases::OperationLease;
use crate::store::{applies, apply_operations, claims, control_requests, leases, tasks};

/// A connection pool plus the store's operations, for worker binaries that share one database.
///
/// Each call checks a connection out for its duration. To run several calls in one transaction, use
/// [`Store::write_transaction`] with the functions in [`crate::store`]. `Store` is cheap to clone and
/// safe to share between threads: clones share the pool.
///
/// Every call that reaches the database runs in a [`tracing`] span at `debug` level, named after
/// the call (`store.claim_next`, `leased.mark_completed`, `apply_operations.list_by_apply`, …) and
/// carrying the ids it was given, never a lease token or a password. The pool checkout inside each
/// call is a `trace`-level `store.connection` span. Without a subscriber, or with these levels
/// filtered out (e.g. `RUST_LOG=info` with `tracing-subscriber`), a span costs one cached
/// "disabled" check.
///
/// ```
/// use applyops::{models::NewApplyOperation, PoolConfig, Store};
///
/// let dir = std::env::temp_dir().join(format!("applyops-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = Store::open(dir.join("doc.db").to_str().unwrap(), PoolConfig::default())?;
/// store.run_migrations()?;
///
/// let ops = store.apply_operations();
/// let id = ops.insert(&NewApplyOperation::new(7, "eu-west-1"))?;
/// ops.mark_started(id)?;
/// ops.mark_completed(id)?;
/// assert_eq!(ops.list_by_apply(7)?.len(), 1);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), applyops::StoreError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    pool: DbPool,
}

impl Store {
    /// Builds a pool for `url` (see [`db::pool`]) and wraps it.
    #[tracing::instrument(
        name = "store.open",
        level = "debug",
        skip_all,
        fields(url = %db::redact_url(url))
    )]
    pub fn open(url: &str, config: PoolConfig) -> StoreResult<Store> {
        Ok(Store::from_pool(db::pool(url, config)?))
    }

    /// Wraps an existing pool.
    pub fn from_pool(pool: DbPool) -> Store {
        Store { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Checks a connection out of the pool.
    #[tracing::instrument(name = "store.connection", level = "trace", skip_all)]
    pub fn connection(&self) -> StoreResult<PooledConnection> {
        Ok(self.pool.get()?)
    }

    /// Runs pending migrations (see [`db::run_migrations`]).
    #[tracing::instrument(name = "store.run_migrations", level = "debug", skip_all)]
    pub fn run_migrations(&self) -> StoreResult<Vec<String>> {
        db::run_migrations(&mut *self.connection()?)
    }

    /// Runs `f` on one connection inside [`db::write_transaction`]: everything `f` does commits
    /// together, or rolls back together when it returns an error.
    #[tracing::instrument(name = "store.write_transaction", level = "debug", skip_all)]
    pub fn write_transaction<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        db::write_transaction(&mut *self.connection()?, f)
    }

    /// The `apply_operations` store.
    pub fn apply_operations(&self) -> ApplyOperationsHandle<'_> {
        ApplyOperationsHandle { store: self }
    }

    /// The `applies` store.
    pub fn applies(&self) -> AppliesHandle<'_> {
        AppliesHandle { store: self }
    }

    /// The `tasks` store.
    pub fn tasks(&self) -> TasksHandle<'_> {
        TasksHandle { store: self }
    }

    /// The `apply_control_requests` store.
    pub fn control_requests(&self) -> ControlRequestsHandle<'_> {
        ControlRequestsHandle { store: self }
    }

    /// The copy claim: see [`claims::claim_next`]. A claim whose COMMIT went unacknowledged is
    /// resolved on a fresh connection (see [`Store::resolve_unknown_claim`]).
    #[tracing::instrument(
        name = "store.claim_next",
        level = "debug",
        skip_all,
        fields(owner = %options.owner)
    )]
    pub fn claim_next(&self, options: &ClaimOptions) -> StoreResult<Option<ClaimedOperation>> {
        let mut conn = self.connection()?;
        let claimed = claims::claim_next(&mut conn, options);
        self.resolving_unknown(conn, claimed)
    }

    /// The cutover claim: see [`claims::claim_next_cutover`]. Resolves an unacknowledged COMMIT like
    /// [`Store::claim_next`].
    #[tracing::instrument(
        name = "store.claim_next_cutover",
        level = "debug",
        skip_all,
        fields(owner = %options.owner)
    )]
    pub fn claim_next_cutover(
        &self,
        options: &ClaimOptions,
    ) -> StoreResult<Option<ClaimedOperation>> {
        let mut conn = self.connection()?;
        let claimed = claims::claim_next_cutover(&mut conn, options);
        self.resolving_unknown(conn, claimed)
    }

    /// Finds out on a fresh pooled connection whether a claim whose COMMIT went unacknowledged took
    /// effect: the claim (with the operation as it is now) or `None`. See
    /// [`claims::resolve_unknown`].
    pub fn resolve_unknown_claim(
        &self,
        unknown: &claims::UnknownClaim,
    ) -> StoreResult<Option<ClaimedOperation>> {
        claims::resolve_unknown(&mut *self.connection()?, unknown)
    }

    /// A claim's result, with [`StoreError::ClaimOutcomeUnknown`] resolved. The connection the claim
    /// used goes back to the pool first, marked to be dropped when its COMMIT failed. When the fresh
    /// connection fails too, the original error is returned, so the caller still holds what it needs
    /// to resolve the claim later.
    fn resolving_unknown(
        &self,
        mut claim_conn: PooledConnection,
        claimed: StoreResult<Option<ClaimedOperation>>,
    ) -> StoreResult<Option<ClaimedOperation>> {
        if matches!(claimed, Err(StoreError::ClaimOutcomeUnknown(_))) {
            // Its connection failed at COMMIT: the pool must not hand it out for the check below.
            db::discard_on_return(&mut claim_conn);
        }
        drop(claim_conn);
        match claimed {
            Err(StoreError::ClaimOutcomeUnknown(unknown)) => {
                match self.resolve_unknown_claim(&unknown) {
                    Ok(resolved) => Ok(resolved),
                    Err(_) => Err(StoreError::ClaimOutcomeUnknown(unknown)),
                }
            }
            other => other,
        }
    }

    /// The leased writes of a worker holding `lease`: see [`crate::store::leases`].
    pub fn leased<'a>(&'a self, lease: &'a OperationLease) -> LeasedHandle<'a> {
        LeasedHandle { store: self, lease }
    }

    /// Renews `lease`: see [`leases::heartbeat`].
    #[tracing::instrument(
        name = "store.heartbeat",
        level = "debug",
        skip_all,
        fields(operation_id = lease.operation_id)
    )]
    pub fn heartbeat(&self, lease: &mut OperationLease) -> StoreResult<NaiveDateTime> {
        leases::heartbeat(&mut *self.connection()?, lease)
    }

    /// Gives `lease`'s operation up: see [`leases::release`].
    ///
    /// When the release fails with a database error (for instance the connection died after the
    /// UPDATE was sent, so it may have been applied), a fresh pooled connection checks whether the
    /// row still carries the lease: if not, the operation is no longer held through it and this
    /// returns `Ok`, so a lost acknowledgement is not reported as a failure (and a retry would
    /// otherwise say [`StoreError::LeaseLost`]). If it still does, or the check fails too, the
    /// original error is returned.
    #[tracing::instrument(
        name = "store.release",
        level = "debug",
        skip_all,
        fields(operation_id = lease.operation_id)
    )]
    pub fn release(&self, lease: &OperationLease) -> StoreResult<()> {
        let mut conn = self.connection()?;
        let released = leases::release(&mut conn, lease);
        if matches!(released, Err(StoreError::Database(_))) {
            // The connection may be dead: make sure the pool drops it rather than handing it out
            // for the check below.
            db::discard_on_return(&mut conn);
        }
        drop(conn);
        match released {
            Err(StoreError::Database(err)) => match self
                .connection()
                .and_then(|mut conn| leases::is_held(&mut conn, lease))
            {
                Ok(false) => Ok(()),
                _ => Err(StoreError::Database(err)),
            },
            other => other,
        }
    }
}

/// [`crate::store::leases`] writes through one lease, on pooled connections.
#[derive(Debug, Clone, Copy)]
pub struct LeasedHandle<'a> {
    store: &'a Store,
    lease: &'a OperationLease,
}

impl LeasedHandle<'_> {
    /// See [`leases::update_state`].
    #[tracing::instrument(
        name = "leased.update_state",
        level = "debug",
        skip_all,
        fields(operation_id = self.lease.operation_id, state = %state)
    )]
    pub fn update_state(&self, state: ApplyState) -> StoreResult<()> {
        leases::update_state(&mut *self.store.connection()?, self.lease, state)
    }

    /// See [`leases::mark_started`].
    #[tracing::instrument(
        name = "leased.mark_started",
        level = "debug",
        skip_all,
        fields(operation_id = self.lease.operation_id)
    )]
    pub fn mark_started(&self) -> StoreResult<()> {
        leases::mark_started(&mut *self.store.connection()?, self.lease)
    }

    /// See [`leases::mark_completed`].
    #[tracing::instrument(
        name = "leased.mark_completed",
        level = "debug",
        skip_all,
        fields(operation_id = self.lease.operation_id)
    )]
    pub fn mark_completed(&self) -> StoreResult<()> {
        leases::mark_completed(&mut *self.store.connection()?, self.lease)
    }

    /// See [`leases::mark_failed`].
    #[tracing::instrument(
        name = "leased.mark_failed",
        level = "debug",
        skip_all,
        fields(operation_id = self.lease.operation_id)
    )]
    pub fn mark_failed(&self, message: &str) -> StoreResult<()> {
        leases::mark_failed(&mut *self.store.connection()?, self.lease, message)
    }

    /// See [`leases::mark_terminal`].
    #[tracing::instrument(
        name = "leased.mark_terminal",
        level = "debug",
        skip_all,
        fields(operation_id = self.lease.operation_id, state = %state)
    )]
    pub fn mark_terminal(&self, state: ApplyState) -> StoreResult<()> {
        leases::mark_terminal(&mut *self.store.connection()?, self.lease, state)
    }
}

/// [`crate::store::control_requests`] on pooled connections.
#[derive(Debug, Clone, Copy)]
pub struct ControlRequestsHandle<'a> {
    store: &'a Store,
}

impl ControlRequestsHandle<'_> {
    /// See [`control_requests::request`].
    #[tracing::instrument(
        name = "control_requests.request",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id, operation_id = ?operation_id, kind = %kind)
    )]
    pub fn request(
        &self,
        apply_id: i64,
        operation_id: Option<i64>,
        kind: ControlRequestKind,
        reason: Option<&str>,
    ) -> StoreResult<ControlRequest> {
        control_requests::request(
            &mut *self.store.connection()?,
            apply_id,
            operation_id,
            kind,
            reason,
        )
    }

    /// See [`control_requests::get`].
    #[tracing::instrument(
        name = "control_requests.get",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn get(&self, id: i64) -> StoreResult<Option<ControlRequest>> {
        control_requests::get(&mut *self.store.connection()?, id)
    }

    /// See [`control_requests::complete`].
    #[tracing::instrument(
        name = "control_requests.complete",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn complete(&self, id: i64) -> StoreResult<()> {
        control_requests::complete(&mut *self.store.connection()?, id)
    }

    /// See [`control_requests::fail`].
    #[tracing::instrument(
        name = "control_requests.fail",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn fail(&self, id: i64, reason: &str) -> StoreResult<()> {
        control_requests::fail(&mut *self.store.connection()?, id, reason)
    }

    /// See [`control_requests::list_pending`].
    #[tracing::instrument(
        name = "control_requests.list_pending",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id)
    )]
    pub fn list_pending(&self, apply_id: i64) -> StoreResult<Vec<ControlRequest>> {
        control_requests::list_pending(&mut *self.store.connection()?, apply_id)
    }
}

/// [`crate::store::apply_operations`] on pooled connections; see there for each operation's contract.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOperationsHandle<'a> {
    store: &'a Store,
}

impl ApplyOperationsHandle<'_> {
    /// See [`apply_operations::insert`].
    #[tracing::instrument(
        name = "apply_operations.insert",
        level = "debug",
        skip_all,
        fields(apply_id = new.apply_id, deployment = %new.deployment)
    )]
    pub fn insert(&self, new: &NewApplyOperation) -> StoreResult<i64> {
        apply_operations::insert(&mut *self.store.connection()?, new)
    }

    /// See [`apply_operations::get`].
    #[tracing::instrument(
        name = "apply_operations.get",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn get(&self, id: i64) -> StoreResult<Option<ApplyOperation>> {
        apply_operations::get(&mut *self.store.connection()?, id)
    }

    /// See [`apply_operations::get_by_apply_and_deployment`].
    #[tracing::instrument(
        name = "apply_operations.get_by_apply_and_deployment",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id, deployment = %deployment)
    )]
    pub fn get_by_apply_and_deployment(
        &self,
        apply_id: i64,
        deployment: &str,
    ) -> StoreResult<Option<ApplyOperation>> {
        apply_operations::get_by_apply_and_deployment(
            &mut *self.store.connection()?,
            apply_id,
            deployment,
        )
    }

    /// See [`apply_operations::list_by_apply`].
    #[tracing::instrument(
        name = "apply_operations.list_by_apply",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id)
    )]
    pub fn list_by_apply(&self, apply_id: i64) -> StoreResult<Vec<ApplyOperation>> {
        apply_operations::list_by_apply(&mut *self.store.connection()?, apply_id)
    }

    /// See [`apply_operations::update_state`].
    #[tracing::instrument(
        name = "apply_operations.update_state",
        level = "debug",
        skip_all,
        fields(id = id, state = %state)
    )]
    pub fn update_state(&self, id: i64, state: ApplyState) -> StoreResult<()> {
        apply_operations::update_state(&mut *self.store.connection()?, id, state)
    }

    /// See [`apply_operations::mark_started`].
    #[tracing::instrument(
        name = "apply_operations.mark_started",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn mark_started(&self, id: i64) -> StoreResult<()> {
        apply_operations::mark_started(&mut *self.store.connection()?, id)
    }

    /// See [`apply_operations::mark_completed`].
    #[tracing::instrument(
        name = "apply_operations.mark_completed",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn mark_completed(&self, id: i64) -> StoreResult<()> {
        apply_operations::mark_completed(&mut *self.store.connection()?, id)
    }

    /// See [`apply_operations::mark_failed`].
    #[tracing::instrument(
        name = "apply_operations.mark_failed",
        level = "debug",
        skip_all,
        fields(id = id)
    )]
    pub fn mark_failed(&self, id: i64, message: &str) -> StoreResult<()> {
        apply_operations::mark_failed(&mut *self.store.connection()?, id, message)
    }

    /// See [`apply_operations::mark_terminal`].
    #[tracing::instrument(
        name = "apply_operations.mark_terminal",
        level = "debug",
        skip_all,
        fields(id = id, state = %state)
    )]
    pub fn mark_terminal(&self, id: i64, state: ApplyState) -> StoreResult<()> {
        apply_operations::mark_terminal(&mut *self.store.connection()?, id, state)
    }

    /// See [`apply_operations::delete_by_apply`].
    #[tracing::instrument(
        name = "apply_operations.delete_by_apply",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id)
    )]
    pub fn delete_by_apply(&self, apply_id: i64) -> StoreResult<usize> {
        apply_operations::delete_by_apply(&mut *self.store.connection()?, apply_id)
    }
}

/// [`crate::store::applies`] on pooled connections.
#[derive(Debug, Clone, Copy)]
pub struct AppliesHandle<'a> {
    store: &'a Store,
}

impl AppliesHandle<'_> {
    /// See [`applies::insert`].
    #[tracing::instrument(
        name = "applies.insert",
        level = "debug",
        skip_all,
        fields(apply_identifier = %new.apply_identifier)
    )]
    pub fn insert(&self, new: &NewApply) -> StoreResult<i64> {
        applies::insert(&mut *self.store.connection()?, new)
    }

    /// See [`applies::get`].
    #[tracing::instrument(name = "applies.get", level = "debug", skip_all, fields(id = id))]
    pub fn get(&self, id: i64) -> StoreResult<Option<Apply>> {
        applies::get(&mut *self.store.connection()?, id)
    }

    /// See [`applies::get_by_identifier`].
    #[tracing::instrument(
        name = "applies.get_by_identifier",
        level = "debug",
        skip_all,
        fields(apply_identifier = %apply_identifier)
    )]
    pub fn get_by_identifier(&self, apply_identifier: &str) -> StoreResult<Option<Apply>> {
        applies::get_by_identifier(&mut *self.store.connection()?, apply_identifier)
    }

    /// See [`applies::set_defer_cutover`].
    #[tracing::instrument(
        name = "applies.set_defer_cutover",
        level = "debug",
        skip_all,
        fields(id = id, defer_cutover = defer_cutover)
    )]
    pub fn set_defer_cutover(&self, id: i64, defer_cutover: bool) -> StoreResult<()> {
        applies::set_defer_cutover(&mut *self.store.connection()?, id, defer_cutover)
    }
}

/// [`crate::store::tasks`] on pooled connections.
#[derive(Debug, Clone, Copy)]
pub struct TasksHandle<'a> {
    store: &'a Store,
}

impl TasksHandle<'_> {
    /// See [`tasks::insert`].
    #[tracing::instrument(
        name = "tasks.insert",
        level = "debug",
        skip_all,
        fields(apply_id = new.apply_id)
    )]
    pub fn insert(&self, new: &NewTask) -> StoreResult<i64> {
        tasks::insert(&mut *self.store.connection()?, new)
    }

    /// See [`tasks::get`].
    #[tracing::instrument(name = "tasks.get", level = "debug", skip_all, fields(id = id))]
    pub fn get(&self, id: i64) -> StoreResult<Option<Task>> {
        tasks::get(&mut *self.store.connection()?, id)
    }

    /// See [`tasks::list_by_apply`].
    #[tracing::instrument(
        name = "tasks.list_by_apply",
        level = "debug",
        skip_all,
        fields(apply_id = apply_id)
    )]
    pub fn list_by_apply(&self, apply_id: i64) -> StoreResult<Vec<Task>> {
        tasks::list_by_apply(&mut *self.store.connection()?, apply_id)
    }

    /// See [`tasks::list_by_operation`].
    #[tracing::instrument(
        name = "tasks.list_by_operation",
        level = "debug",
        skip_all,
        fields(apply_operation_id = apply_operation_id)
    )]
    pub fn list_by_operation(&self, apply_operation_id: i64) -> StoreResult<Vec<Task>> {
        tasks::list_by_operation(&mut *self.store.connection()?, apply_operation_id)
    }
}
