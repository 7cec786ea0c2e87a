//! Queries, one module per table. Every function takes `&mut DbConnection`, so callers can run
//! several in one transaction of their own (see [`crate::db::write_transaction`]); for pooled use
//! see [`crate::Store`].
//!
//! Conventions every module keeps:
//! - Input is validated before any SQL runs; a rejected value is [`StoreError::InvalidInput`] and
//!   nothing is written. Accepted text is stored verbatim (quotes, unicode, SQL metacharacters).
//! - Timestamps come from the database's clock ([`crate::db::now`]).
//! - Rows are typed ([`crate::models`]); a row whose state (or another vocabulary column) this version
//!   does not know fails the read with [`StoreError::UnknownState`] (or `UnknownValue`), naming the
//!   row; [`crate::models::raw`] reads it as stored.
//!
//! [`StoreError::InvalidInput`]: StoreError::InvalidInput
//! [`StoreError::UnknownState`]: StoreError::UnknownState

use diesel::sql_types::Nullable;

use crate::error::{StoreError, StoreResult};
use crate::models::{ApplyId, ApplyOperationId};

// The modules depend on each other one way, bottom to top (`tests/layers.rs` fails on a circle):
// - the row-level predicates and input checks: `predicates` (a free lease, the requests covering a
//   row, a claim's scope) and `validate`;
// - row helpers: `rows` (who may write an operation row, lease columns, plain reads of an apply's
//   rows), `targets` (one holder per target) and `moves` (what a move into a state writes);
// - `unit`: the unit of work every write that touches an apply runs as (lock, write, requests,
//   derivation, the claim rules' decision, target holds, retries), and `writes`, the operation
//   state writes built on it;
// - `claims` (with `blockers`) and `rollouts` (creating an apply with its operations);
// - the public per-table modules, which never name each other.
pub mod applies;
pub mod apply_operations;
pub mod claims;
pub mod control_requests;
pub mod leases;
mod moves;
mod predicates;
mod rollouts;
mod rows;
mod targets;
pub mod tasks;
mod unit;
mod validate;
mod writes;

// `col = COALESCE(col, now)` is how a timestamp is stamped once. MySQL evaluates a single-table UPDATE's
// assignments left to right, each seeing the ones before it, while SQLite reads the old row: every
// assignment in the store reads only its own column, so the two backends agree.
diesel::define_sql_function! {
    /// `COALESCE` for timestamps: stamps a column once and keeps it on repeats.
    #[sql_name = "COALESCE"]
    fn coalesce_timestamp(value: Nullable<crate::schema_types::Datetime>, fallback: Nullable<crate::schema_types::Datetime>) -> Nullable<crate::schema_types::Datetime>;
}

/// Checks that operation `operation_id`, whose stored apply is `owner` (`None`: no such operation),
/// belongs to `apply_id`; `field` names the argument in the error.
fn check_operation_owner(
    owner: Option<ApplyId>,
    operation_id: ApplyOperationId,
    apply_id: ApplyId,
    field: &'static str,
) -> StoreResult<()> {
    match owner {
        None => Err(StoreError::ApplyOperationNotFound { id: operation_id }),
        Some(owner) if owner != apply_id => Err(StoreError::invalid(
            field,
            format!("operation {operation_id} belongs to apply {owner}, not to apply {apply_id}"),
        )),
        Some(_) => Ok(()),
    }
}
