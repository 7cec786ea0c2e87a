//! The one error type every fallible applyops call returns.

use std::error::Error as StdError;

use crate::models::raw::UnknownValue;
use crate::models::{ApplyId, ApplyOperationId, ControlRequestId, UnknownClaim};
use crate::state::{ControlRequestKind, ControlRequestStatus};

/// Everything that can go wrong in applyops, phrased so that its `Display` reads well in a worker's log.
///
/// Variants that wrap a lower-level error keep it as their [`source`](std::error::Error::source), so
/// nothing the driver said is lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No `apply_operations` row has this id.
    #[error("apply operation {id} does not exist")]
    ApplyOperationNotFound {
        /// The id that was looked up.
        id: ApplyOperationId,
    },

    /// An operation for this (apply, deployment) pair already exists.
    #[error("apply {apply_id} already has an operation for deployment {deployment:?}")]
    ApplyOperationExists {
        /// The apply the insert was for.
        apply_id: ApplyId,
        /// The deployment that is already taken.
        deployment: String,
    },

    /// No `applies` row has this id.
    #[error("apply {id} does not exist")]
    ApplyNotFound {
        /// The id that was looked up.
        id: ApplyId,
    },

    /// The operation's row no longer carries this lease's token: another worker claimed it after the
    /// lease expired, or the lease was released. Nothing was written; the holder must stop driving it.
    #[error("lease on apply operation {operation_id} was lost to another claim or released")]
    LeaseLost {
        /// The operation the lease was for.
        operation_id: ApplyOperationId,
    },

    /// A claim's COMMIT was sent but never acknowledged (the connection died in between), so it may or
    /// may not have taken the operation. Pass the [`UnknownClaim`]
    /// to [`resolve_unknown`](crate::store::claims::resolve_unknown) on a new connection to find out;
    /// [`Store`](crate::Store)'s claims do that themselves.
    #[error(
        "the claim of apply operation {} may or may not have committed: the connection failed after \
         COMMIT was sent ({}); resolve it on a new connection",
        .0.operation_id(),
        .0.source()
    )]
    ClaimOutcomeUnknown(Box<UnknownClaim>),

    /// The apply still has an operation that is not settled (`completed`, `failed`, `cancelled` or
    /// `reverted`; a state this version does not know counts as unsettled), so it cannot be deleted.
    /// Nothing was written.
    #[error(
        "apply {id} still has an unsettled operation (one not completed, failed, cancelled or \
         reverted); only a finished apply can be deleted"
    )]
    ApplyActive {
        /// The apply.
        id: ApplyId,
    },

    /// No `apply_control_requests` row has this id.
    #[error("control request {id} does not exist")]
    ControlRequestNotFound {
        /// The id that was looked up.
        id: ControlRequestId,
    },

    /// The control request was already resolved the other way (completing a failed request, or
    /// failing a completed one); nothing was written.
    #[error("control request {id} is already {status}")]
    ControlRequestResolved {
        /// The request.
        id: ControlRequestId,
        /// Its stored status.
        status: ControlRequestStatus,
    },

    /// The target (database, environment, deployment) is held by another apply's operation, so this
    /// write would let two applies change it at once. Nothing was written.
    #[error(
        "deployment {deployment:?} of database {database_name:?} in {environment:?} is held by \
         apply {apply_id}: one active apply per target"
    )]
    TargetBusy {
        /// The target's database.
        database_name: String,
        /// The target's environment.
        environment: String,
        /// The target's deployment.
        deployment: String,
        /// The apply holding it.
        apply_id: ApplyId,
    },

    /// The write lost a deadlock or serialisation race (on a Galera cluster also a certification
    /// failure or brute-force abort) against concurrent writers every time it was tried: a few
    /// times for a rollout's creation, an operation's insert or a control request, for 10 s for a
    /// state or leased write
    /// (inside a caller's own transaction: the first time, as the caller's transaction is gone).
    /// Nothing was written; retrying later is safe.
    #[error("gave up after {attempts} attempt(s) lost to concurrent writers: {source}")]
    Contention {
        /// How many times it was tried.
        attempts: u32,
        /// The last error the database reported.
        #[source]
        source: diesel::result::Error,
    },

    /// A holder wrote `stopped` or `cancelled` while no `stop` or `cancel` covering its operation is
    /// pending: a holder stops or cancels only on an operator's request. Nothing was written.
    #[error("apply operation {operation_id} has no pending {kind} request; its holder cannot write that")]
    NoPendingRequest {
        /// The operation.
        operation_id: ApplyOperationId,
        /// The kind of request the write needs.
        kind: ControlRequestKind,
    },

    /// A holder tried to cut over an operation that a pending `stop` or `cancel` covers. Nothing was
    /// written: stop (or cancel) it instead.
    #[error("apply operation {operation_id} has a pending {kind} request; it cannot cut over")]
    StopPending {
        /// The operation.
        operation_id: ApplyOperationId,
        /// `stop` or `cancel`.
        kind: ControlRequestKind,
    },

    /// A holder tried to cut over an operation of an apply that defers its cutovers: only
    /// `claim_next_cutover`, on an operator's `cutover` request, does that. Nothing was written.
    #[error("apply operation {operation_id} belongs to an apply that defers cutover; it is cut over by the cutover claim on an operator's request")]
    CutoverDeferred {
        /// The operation.
        operation_id: ApplyOperationId,
    },

    /// A holder tried to take an operation out of `revert_window` other than as the pending `revert`
    /// or `skip_revert` request says. Nothing was written.
    #[error("apply operation {operation_id} has a pending {kind} request; it leaves revert_window only that way")]
    RevertPending {
        /// The operation.
        operation_id: ApplyOperationId,
        /// `revert` or `skip_revert`.
        kind: ControlRequestKind,
    },

    /// A holder tried to release an operation in `revert_window`: it keeps it until the window closes
    /// or a revert decision arrives. Nothing was written.
    #[error("apply operation {operation_id} is in revert_window; its holder keeps it until the window closes")]
    HeldInRevertWindow {
        /// The operation.
        operation_id: ApplyOperationId,
    },

    /// A control request that cannot apply to what it names; nothing was written.
    #[error("cannot record {kind}: {reason}")]
    RequestRejected {
        /// The request's kind.
        kind: ControlRequestKind,
        /// Why, as a sentence fragment naming what is wrong.
        reason: String,
    },

    /// A `retry` of an operation that an earlier sibling's failure holds back under its failure
    /// policy. Nothing was written: release or retry that sibling first.
    #[error("apply operation {operation_id} is held back by the failure of apply operation {by}")]
    HaltedBy {
        /// The operation asked to retry.
        operation_id: ApplyOperationId,
        /// The earlier failure.
        by: ApplyOperationId,
    },

    /// The opposite request (`start` for a `stop`, `skip_revert` for a `revert`, and back) is pending
    /// for a wider scope (the whole apply). Nothing was written.
    #[error(
        "control request {id} ({kind} for the whole apply) is pending; it must be resolved first"
    )]
    OppositeRequestPending {
        /// The pending request.
        id: ControlRequestId,
        /// Its kind.
        kind: ControlRequestKind,
    },

    /// Another operation already carries this external id (they are unique across operations).
    /// Nothing was written.
    #[error("external id {external_id:?} already belongs to apply operation {operation_id}")]
    ExternalIdTaken {
        /// The id asked for.
        external_id: String,
        /// The operation that carries it.
        operation_id: ApplyOperationId,
    },

    /// An apply with this user-facing identifier already exists.
    #[error("an apply with identifier {apply_identifier:?} already exists")]
    ApplyExists {
        /// The identifier that is already taken.
        apply_identifier: String,
    },

    /// A caller-supplied value was rejected before any SQL ran; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The argument or field that was rejected.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// A row read from the database carries a state this version of applyops does not know.
    #[error("{table} row {id} has unknown state {value:?}")]
    UnknownState {
        /// The table the row was read from.
        table: &'static str,
        /// The row's primary key.
        id: i64,
        /// The stored value, verbatim.
        value: String,
    },

    /// A row read from the database carries a value (other than a state) this version does not know,
    /// e.g. a control request kind.
    #[error("{table} row {id} has unknown {column} {value:?}")]
    UnknownValue {
        /// The table the row was read from.
        table: &'static str,
        /// The row's primary key.
        id: i64,
        /// The column holding the value.
        column: &'static str,
        /// The stored value, verbatim.
        value: String,
    },

    /// The database URL names a backend applyops cannot open.
    #[error("unsupported database URL {url:?}: {reason}")]
    UnsupportedDatabaseUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Opening a connection failed.
    #[error("could not connect to the database: {0}")]
    Connect(#[from] diesel::ConnectionError),

    /// The connection pool could not hand out a connection in time.
    #[error("could not get a connection from the pool: {0}")]
    Pool(#[from] r2d2::Error),

    /// Another migration runner held the migration lock for longer than the wait allowed.
    #[error(
        "timed out after {waited_secs}s waiting for the migration lock held by another runner"
    )]
    MigrationLockTimeout {
        /// How long this runner waited.
        waited_secs: u64,
    },

    /// The server could not take the migration lock at all (`GET_LOCK` answered NULL: an error such as
    /// the session being killed while it waited), as opposed to another runner holding it.
    #[error("the server could not take the migration lock (GET_LOCK returned NULL); nothing was migrated")]
    MigrationLockFailed,

    /// Running or reverting a migration failed.
    #[error("migration failed: {0}")]
    Migration(#[source] Box<dyn StdError + Send + Sync>),

    /// The operating system's random source failed while minting a lease token.
    #[error("could not read the operating system's random source: {0}")]
    Random(String),

    /// A write to an operation (a leased write, or an operator's) may or may not have taken effect:
    /// the connection failed after its COMMIT (or its single statement) was sent, before the answer
    /// came. Every such write is idempotent under its lease: repeating it is safe, and ends in
    /// success or in its own error (`LeaseLost` once the lease is gone). [`crate::Store`]'s leased
    /// writes and heartbeat repeat it themselves on a live connection, and return this only when
    /// that fails the same way.
    #[error(
        "a write to apply operation {operation_id} may or may not have taken effect: the connection \
         failed before its answer came ({source}); repeat it (it is idempotent under the lease)"
    )]
    WriteOutcomeUnknown {
        /// The operation written.
        operation_id: ApplyOperationId,
        /// What the connection reported instead of the answer.
        #[source]
        source: diesel::result::Error,
    },

    /// The MySQL server did not answer in time: opening a connection took longer than its
    /// `connect_timeout`, or a statement waited longer than its `read_timeout` for an answer (see
    /// [`crate::db::ConnectOptions`]). A timed-out statement's connection is closed; a write's
    /// outcome is then unknown, as with a lost connection.
    #[error(
        "{operation} timed out after {} ms: the MySQL server did not answer{}",
        .after.as_millis(),
        if *.operation == TimedOut::Read { "; the connection was closed" } else { "" }
    )]
    Timeout {
        /// What timed out.
        operation: TimedOut,
        /// The timeout that passed.
        after: std::time::Duration,
    },

    /// The database reported an error (including a lost or killed connection).
    #[error("database error: {0}")]
    Database(#[source] diesel::result::Error),

    /// The disk that holds the database is full: the write failed and nothing of it was stored
    /// (SQLite rolls the transaction back), or a connection could not be opened. It goes through
    /// once space is freed. The source is what the database said.
    #[error("the disk holding the database is full; nothing was written ({0})")]
    DiskFull(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// The database lacks migrations this version of applyops needs: it was never migrated, or only
    /// partly. See [`crate::db::ensure_migrated`].
    #[error(
        "migrations are missing: this database has not applied {} ({}); run them with \
         `applyops migrate` (or `diesel migration run` on MySQL), then retry",
        if .pending.len() == 1 { "1 migration".to_owned() } else { format!("{} migrations", .pending.len()) },
        .pending.join(", ")
    )]
    MigrationsPending {
        /// The versions not applied yet, oldest first.
        pending: Vec<String>,
    },
}

/// What a [`StoreError::Timeout`] timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// Opening a connection (`connect_timeout`).
    Connect,
    /// Waiting for a statement's answer (`read_timeout`).
    Read,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimedOut::Connect => "connecting to the database",
            TimedOut::Read => "waiting for the answer to a statement",
        })
    }
}

/// The message of the Diesel error a connection reports for a statement its read timeout cut off
/// ([`StoreError::from`] turns it into [`StoreError::Timeout`]): Diesel's errors carry no type of
/// ours, so the connection and this module agree on this text.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn read_timed_out_message(after: std::time::Duration) -> String {
    format!("{READ_TIMED_OUT}{} ms", after.as_millis())
}

const READ_TIMED_OUT: &str = "applyops: no answer within the read timeout of ";

impl StoreError {
    /// Shorthand for [`StoreError::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

impl From<diesel::result::Error> for StoreError {
    /// A database error, except that a row whose vocabulary column holds a value this version does not
    /// know (a typed model's load failed with [`UnknownValue`]) is [`StoreError::UnknownState`] or
    /// [`StoreError::UnknownValue`], naming the row.
    fn from(err: diesel::result::Error) -> Self {
        if let diesel::result::Error::DeserializationError(source) = &err {
            if let Some(unknown) = source.downcast_ref::<UnknownValue>() {
                return unknown.clone().into();
            }
        }
        if let diesel::result::Error::DatabaseError(_, info) = &err {
            if let Some(ms) = info
                .message()
                .strip_prefix(READ_TIMED_OUT)
                .and_then(|rest| rest.strip_suffix(" ms"))
                .and_then(|ms| ms.parse().ok())
            {
                return StoreError::Timeout {
                    operation: TimedOut::Read,
                    after: std::time::Duration::from_millis(ms),
                };
            }
        }
        StoreError::Database(err)
    }
}

impl From<UnknownValue> for StoreError {
    fn from(unknown: UnknownValue) -> Self {
        let UnknownValue {
            table,
            id,
            column,
            value,
        } = unknown;
        if column == "state" {
            StoreError::UnknownState { table, id, value }
        } else {
            StoreError::UnknownValue {
                table,
                id,
                column,
                value,
            }
        }
    }
}

/// The result type of every fallible applyops call.
pub type StoreResult<T> = Result<T, StoreError>;
