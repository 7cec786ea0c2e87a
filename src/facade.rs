//! [`Store`]: the pool-owning entry point for worker binaries.

use crate::db::{self, DbConnection, DbPool, PoolConfig, PooledConnection};
use crate::error::{StoreError, StoreResult};
use chrono::NaiveDateTime;

use crate::models::{
    Apply, ApplyId, ApplyOperation, ApplyOperationId, ClaimedOperation, ControlRequest,
    ControlRequestId, DeletedRollout, LiveLease, NewApply, NewApplyOperation, NewControlRequest,
    NewRollout, NewTask, OperationLease, Rollout, Task, TaskId, UnknownClaim,
};
use crate::state::{ApplyState, ControlRequestKind};
use crate::store::applies::{ApplyFilter, ApplyProgress, Blocker, Page};
use crate::store::claims::{ClaimOptions, ClaimScope};
use crate::store::{applies, apply_operations, claims, control_requests, leases, tasks};

/// A connection pool plus the store's operations, for worker binaries that share one database.
///
/// Each call checks a connection out for its duration. Every function of [`crate::store`] runs on a
/// pooled connection through [`Store::run`] (and in one transaction through
/// [`Store::write_transaction`]); the handles ([`Store::apply_operations`], [`Store::leased`], …)
/// are shorthands for the common ones, generated from one list. `Store` is cheap to clone and
/// safe to share between threads: clones share the pool.
///
/// Every call that reaches the database runs in a [`tracing`] span at `debug` level, named after
/// the call (`store.claim_next`, `leased.mark_completed`, `apply_operations.list_by_apply`, …) and
/// carrying the ids it was given, never a lease token or a password. The pool checkout inside each
/// call is a `trace`-level `store.connection` span. Without a subscriber, or with these levels
/// filtered out (e.g. `RUST_LOG=info` with `tracing-subscriber`), a span costs one cached
/// "disabled" check.
///
/// **A connection the server closed while it sat in the pool** (restart, failover, `KILL`,
/// `wait_timeout`) costs no error: the pool pings a connection idle for longer than
/// [`PoolConfig::ping_after_idle`] before handing it out, and a call whose very first statement
/// finds its connection lost (MySQL's "Lost connection" or "gone away", before anything succeeded on
/// the connection in this call) is run once more on a new connection. Nothing of the first try can
/// have taken effect but that first statement, and every call retried is safe to repeat from the
/// start: a read, a transaction (its first statement is `BEGIN`), or one idempotent leased write.
/// [`Store::run`] and [`Store::write_transaction`] take a closure that runs once and are not
/// retried.
///
/// ```
/// use applyops::models::{NewApply, NewApplyOperation};
/// use applyops::{PoolConfig, Store};
///
/// let dir = std::env::temp_dir().join(format!("applyops-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let store = Store::open(dir.join("doc.db").to_str().unwrap(), PoolConfig::default())?;
/// store.run_migrations()?;
///
/// let apply = store
///     .applies()
///     .insert(&NewApply::new("doc", "shop", "production", "eu-west-1"))?;
/// let ops = store.apply_operations();
/// let id = ops.insert(&NewApplyOperation::new(apply, "eu-west-1"))?;
/// ops.mark_started(id)?;
/// ops.mark_completed(id)?;
/// assert_eq!(ops.list_by_apply(apply)?.len(), 1);
/// // Any store function, on a pooled connection:
/// let op = store.run(|conn| applyops::store::apply_operations::get(conn, id))?;
/// assert!(op.is_some());
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

    /// Runs `call` on a pooled connection and, when its first statement finds the connection lost
    /// (see the type's docs), once more on a live one ([`Store::live_connection`]); the dead
    /// connection is dropped, not returned to the pool.
    fn with_connection<T>(
        &self,
        mut call: impl FnMut(&mut DbConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.connection()?;
        let before = db::statements_succeeded(&conn);
        match call(&mut conn) {
            Err(err)
                if db::is_connection_lost(&err) && db::statements_succeeded(&conn) == before =>
            {
                db::discard_on_return(&mut conn);
                drop(conn);
                tracing::debug!(error = %err, "the pooled connection was dead; once more on a live one");
                call(&mut *self.live_connection()?)
            }
            other => other,
        }
    }

    /// Runs `call`, a write to operation `operation_id` that is idempotent under its lease, like
    /// [`Store::with_connection`]; when its outcome is unknown (the connection failed after the write
    /// was sent: [`StoreError::WriteOutcomeUnknown`], or a lost connection after its first
    /// statement), runs it once more on a live connection, which either finds it done (a repeat under
    /// the lease succeeds) or does it. `settled` tells, on that connection, whether a write whose
    /// repeat says `LeaseLost` had taken effect (a write that clears the lease cannot be repeated
    /// under it). Only when the repeat fails the same way is the outcome
    /// [`StoreError::WriteOutcomeUnknown`].
    fn resolving_lost_write<T>(
        &self,
        operation_id: ApplyOperationId,
        mut call: impl FnMut(&mut DbConnection) -> StoreResult<T>,
        settled: impl FnOnce(&mut DbConnection) -> StoreResult<Option<T>>,
    ) -> StoreResult<T> {
        let unknown = |err: &StoreError| {
            matches!(err, StoreError::WriteOutcomeUnknown { .. }) || db::is_connection_lost(err)
        };
        let first = self.with_connection(&mut call);
        let Err(err) = first else {
            return first;
        };
        if !unknown(&err) {
            return Err(err);
        }
        tracing::debug!(error = %err, "a write's answer was lost; once more on a live connection");
        let mut conn = self.live_connection()?;
        let again = match call(&mut conn) {
            Err(StoreError::LeaseLost { .. }) => match settled(&mut conn)? {
                Some(done) => Ok(done),
                None => Err(StoreError::LeaseLost { operation_id }),
            },
            other => other,
        };
        match again {
            Err(err) if unknown(&err) => {
                db::discard_on_return(&mut conn);
                Err(match err {
                    StoreError::WriteOutcomeUnknown { .. } => err,
                    StoreError::Database(source) => StoreError::WriteOutcomeUnknown {
                        operation_id,
                        source,
                    },
                    other => other,
                })
            }
            other => other,
        }
    }

    /// A pooled connection that answers a ping. After a call found its connection dead, the others
    /// in the pool may be dead too (a server restart, a failover or a `KILL` storm closes them
    /// together) and a checkout hands out one used within `ping_after_idle` without a ping: each is
    /// pinged here, and a dead one dropped, until a live one is found, at most as many times as the
    /// pool has connections, and then a new one is opened by the pool (a connection checked out
    /// after the pool dropped them all).
    fn live_connection(&self) -> StoreResult<PooledConnection> {
        for _ in 0..self.pool.max_size() {
            let mut conn = self.connection()?;
            if db::ping(&mut conn).is_ok() {
                return Ok(conn);
            }
            db::discard_on_return(&mut conn);
        }
        self.connection()
    }

    /// Runs pending migrations (see [`db::run_migrations`]).
    #[tracing::instrument(name = "store.run_migrations", level = "debug", skip_all)]
    pub fn run_migrations(&self) -> StoreResult<Vec<String>> {
        db::run_migrations(&mut *self.connection()?)
    }

    /// Runs `f` on one pooled connection: any function of [`crate::store`], or several in a row, with
    /// the connection checked out for `f`'s duration.
    #[tracing::instrument(name = "store.run", level = "debug", skip_all)]
    pub fn run<T>(&self, f: impl FnOnce(&mut DbConnection) -> StoreResult<T>) -> StoreResult<T> {
        f(&mut *self.connection()?)
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

    /// Creates a whole rollout in one transaction: see [`applies::create_rollout`].
    pub fn create_rollout(&self, new: &NewRollout) -> StoreResult<Rollout> {
        self.applies().create_rollout(new)
    }

    /// The `tasks` store.
    pub fn tasks(&self) -> TasksHandle<'_> {
        TasksHandle { store: self }
    }

    /// The `apply_control_requests` store.
    pub fn control_requests(&self) -> ControlRequestsHandle<'_> {
        ControlRequestsHandle { store: self }
    }

    /// Operators' reads of the leases workers hold (for writes through a lease, see
    /// [`Store::leased`]).
    pub fn leases(&self) -> LeasesHandle<'_> {
        LeasesHandle { store: self }
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
        let claimed = self.with_connection(|conn| {
            let claimed = claims::claim_next(conn, options);
            discarding_on_unknown(conn, claimed)
        });
        self.resolving_unknown(claimed)
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
        let claimed = self.with_connection(|conn| {
            let claimed = claims::claim_next_cutover(conn, options);
            discarding_on_unknown(conn, claimed)
        });
        self.resolving_unknown(claimed)
    }

    /// Finds out on a fresh pooled connection whether a claim whose COMMIT went unacknowledged took
    /// effect: the claim (with the operation as it is now) or `None`. See
    /// [`claims::resolve_unknown`].
    pub fn resolve_unknown_claim(
        &self,
        unknown: &UnknownClaim,
    ) -> StoreResult<Option<ClaimedOperation>> {
        claims::resolve_unknown(&mut *self.connection()?, unknown)
    }

    /// A claim's result, with [`StoreError::ClaimOutcomeUnknown`] resolved on a fresh connection
    /// (the claim's own went back to the pool marked to be dropped: [`discarding_on_unknown`]).
    /// When the fresh connection fails too, the original error is returned, so the caller still
    /// holds what it needs to resolve the claim later.
    fn resolving_unknown(
        &self,
        claimed: StoreResult<Option<ClaimedOperation>>,
    ) -> StoreResult<Option<ClaimedOperation>> {
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

    /// Renews `lease`: see [`leases::heartbeat`]. A renewal whose answer was lost is repeated on a
    /// live connection (see [`LeasedHandle`]).
    #[tracing::instrument(
        name = "store.heartbeat",
        level = "debug",
        skip_all,
        fields(operation_id = %lease.operation_id)
    )]
    pub fn heartbeat(&self, lease: &mut OperationLease) -> StoreResult<NaiveDateTime> {
        let operation_id = lease.operation_id;
        self.resolving_lost_write(
            operation_id,
            |conn| leases::heartbeat(conn, lease),
            |_| Ok(None),
        )
    }

    /// Gives `lease`'s operation up: see [`leases::release`].
    ///
    /// When the release fails with a database error (for instance the connection died, before or
    /// after the UPDATE reached the server), a fresh pooled connection checks whether the row still
    /// carries the lease: if not, the operation is no longer held through it and this returns `Ok`,
    /// so a lost acknowledgement is not reported as a failure (and a retry would otherwise say
    /// [`StoreError::LeaseLost`]); if it does, the release never took effect and runs once more on
    /// that connection. When that fails too, the original error is returned.
    #[tracing::instrument(
        name = "store.release",
        level = "debug",
        skip_all,
        fields(operation_id = %lease.operation_id)
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
            Err(StoreError::Database(err)) => {
                let again = |conn: &mut DbConnection| {
                    if leases::is_held(conn, lease)? {
                        leases::release(conn, lease)
                    } else {
                        Ok(())
                    }
                };
                self.connection()
                    .and_then(|mut conn| again(&mut conn))
                    .map_err(|_| StoreError::Database(err))
            }
            other => other,
        }
    }
}

/// `claimed`, after marking `conn` to be dropped when the claim's COMMIT failed
/// ([`StoreError::ClaimOutcomeUnknown`]): the pool must not hand it out for the check that resolves
/// the claim.
fn discarding_on_unknown(
    conn: &mut DbConnection,
    claimed: StoreResult<Option<ClaimedOperation>>,
) -> StoreResult<Option<ClaimedOperation>> {
    if matches!(claimed, Err(StoreError::ClaimOutcomeUnknown(_))) {
        db::discard_on_return(conn);
    }
    claimed
}

/// Generates a handle type from a list of store functions: each method checks a connection out of the
/// pool, runs the function of the same name in `$module` on it inside a `debug` [`tracing`] span named
/// `module.function` (its arguments recorded with `Debug`), and returns the connection. A function
/// written in the store is exposed by adding its signature here, once.
macro_rules! handle {
    (
        $(#[$meta:meta])*
        $handle:ident => $module:ident {
            $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $handle<'a> {
            store: &'a Store,
        }

        impl $handle<'_> {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($name), "`].")]
                pub fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                    let _span = tracing::debug_span!(
                        concat!(stringify!($module), ".", stringify!($name)),
                        $($arg = ?$arg),*
                    )
                    .entered();
                    self.store.with_connection(|conn| $module::$name(conn, $($arg),*))
                }
            )+
        }
    };
    (
        $(#[$meta:meta])*
        $handle:ident => $module:ident through lease {
            $(fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $handle<'a> {
            store: &'a Store,
            lease: &'a OperationLease,
        }

        impl $handle<'_> {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($name), "`].")]
                pub fn $name(&self, $($arg: $ty),*) -> StoreResult<$ret> {
                    let _span = tracing::debug_span!(
                        concat!("leased.", stringify!($name)),
                        operation_id = %self.lease.operation_id,
                        $($arg = ?$arg),*
                    )
                    .entered();
                    self.store.resolving_lost_write(
                        self.lease.operation_id,
                        |conn| $module::$name(conn, self.lease, $($arg),*),
                        |_| Ok(None),
                    )
                }
            )+
        }
    };
}

impl LeasedHandle<'_> {
    /// See [`leases::update_state`]. A write whose answer was lost is resolved as the type's docs
    /// say.
    pub fn update_state(&self, state: ApplyState) -> StoreResult<()> {
        let _span = tracing::debug_span!(
            "leased.update_state",
            operation_id = %self.lease.operation_id,
            state = ?state
        )
        .entered();
        self.store.resolving_lost_write(
            self.lease.operation_id,
            |conn| leases::update_state(conn, self.lease, state),
            |conn| {
                let done = crate::state::clears_lease(state)
                    && leases::is_unheld_in(conn, self.lease, state)?;
                Ok(done.then_some(()))
            },
        )
    }
}

handle! {
    /// [`crate::store::leases`] writes through one lease, on pooled connections. The lease's token is
    /// never recorded in a span.
    ///
    /// **A write whose answer is lost** (the connection failed after it was sent, so it may have
    /// taken effect: [`StoreError::WriteOutcomeUnknown`]) is repeated once on a live connection:
    /// every write here is idempotent under the lease, so the repeat finds it done or does it, and
    /// returns success or the write's own error. A write of a state that clears the lease
    /// ([`update_state`](LeasedHandle::update_state) to `pending`, `stopped`, `paused` or
    /// `failed_retryable`) cannot be repeated under it: its repeat checks that the operation is in that
    /// state with nobody holding it. Only a repeat that fails the same way returns
    /// [`StoreError::WriteOutcomeUnknown`].
    LeasedHandle => leases through lease {
        fn mark_started() -> ();
        fn mark_completed() -> ();
        fn mark_failed(message: &str) -> ();
        fn mark_terminal(state: ApplyState) -> ();
        fn save_engine_state(engine_state: &[u8]) -> ();
        fn pending_requests() -> Vec<ControlRequestKind>;
        fn set_external_id(external_id: &str) -> ();
    }
}

handle! {
    /// [`crate::store::leases`] reads for operators, on pooled connections.
    LeasesHandle => leases {
        fn live(owner_prefix: Option<&str>) -> Vec<LiveLease>;
    }
}

handle! {
    /// [`crate::store::control_requests`] on pooled connections.
    ControlRequestsHandle => control_requests {
        fn request(new: &NewControlRequest) -> ControlRequest;
        fn get(id: ControlRequestId) -> Option<ControlRequest>;
        fn complete(id: ControlRequestId) -> ();
        fn fail(id: ControlRequestId, reason: &str) -> ();
        fn list_pending(apply_id: ApplyId) -> Vec<ControlRequest>;
    }
}

handle! {
    /// [`crate::store::apply_operations`] on pooled connections; see there for each operation's
    /// contract.
    ApplyOperationsHandle => apply_operations {
        fn insert(new: &NewApplyOperation) -> ApplyOperationId;
        fn get(id: ApplyOperationId) -> Option<ApplyOperation>;
        fn get_by_apply_and_deployment(
            apply_id: ApplyId,
            deployment: &str,
        ) -> Option<ApplyOperation>;
        fn get_by_external_id(external_id: &str) -> Option<ApplyOperation>;
        fn list_by_apply(apply_id: ApplyId) -> Vec<ApplyOperation>;
        fn update_state(id: ApplyOperationId, state: ApplyState) -> ();
        fn mark_started(id: ApplyOperationId) -> ();
        fn mark_completed(id: ApplyOperationId) -> ();
        fn mark_failed(id: ApplyOperationId, message: &str) -> ();
        fn mark_terminal(id: ApplyOperationId, state: ApplyState) -> ();
        fn delete_by_apply(apply_id: ApplyId) -> usize;
    }
}

handle! {
    /// [`crate::store::applies`] on pooled connections.
    AppliesHandle => applies {
        fn insert(new: &NewApply) -> ApplyId;
        fn get(id: ApplyId) -> Option<Apply>;
        fn get_by_identifier(apply_identifier: &str) -> Option<Apply>;
        fn set_defer_cutover(id: ApplyId, defer_cutover: bool) -> ();
        fn rollout(id: ApplyId) -> Option<Rollout>;
        fn delete(id: ApplyId) -> DeletedRollout;
        fn list(filter: &ApplyFilter) -> Page<Apply>;
        fn progress(ids: &[ApplyId]) -> Vec<ApplyProgress>;
        fn counts_by_state(filter: &ApplyFilter) -> Vec<(ApplyState, i64)>;
        fn create_rollout(new: &NewRollout) -> Rollout;
        fn refresh(id: ApplyId) -> Apply;
        fn blockers(apply_id: ApplyId) -> Vec<(ApplyOperationId, Blocker)>;
        fn blockers_in(apply_id: ApplyId, scope: &ClaimScope) -> Vec<(ApplyOperationId, Blocker)>;
        fn target_holder(database_name: &str, environment: &str, deployment: &str) -> Option<ApplyId>;
    }
}

handle! {
    /// [`crate::store::tasks`] on pooled connections.
    TasksHandle => tasks {
        fn insert(new: &NewTask) -> TaskId;
        fn get(id: TaskId) -> Option<Task>;
        fn list_by_apply(apply_id: ApplyId) -> Vec<Task>;
        fn list_by_operation(apply_operation_id: ApplyOperationId) -> Vec<Task>;
    }
}
