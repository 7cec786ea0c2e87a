//! The row-level predicates the store's reads share, each a Diesel expression written with
//! [`diesel::dsl::auto_type`] (a concrete type, so the statement cache sees one query shape): a free
//! lease, the requests that cover a row, the releases that reach it, a claim's scope, one row by id.
//!
//! The claim rules themselves are not here: they are decided once per write, in Rust
//! ([`crate::state::decide`]), by the unit of work, and stored on the rows; a claim tests only the
//! stored decision, the lease and the scope.

use diesel::dsl::{exists, max};
use diesel::prelude::*;

use crate::db::{self, DbNow};
use crate::models::ClaimScope;
use crate::schema::{apply_control_requests as reqs, apply_operations as ops};
use crate::state::{
    ApplyState, ControlRequestKind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
};

/// **Free lease**: no lease, or one that has expired by `now`.
#[diesel::dsl::auto_type]
pub(in crate::store) fn lease_free(now: DbNow) -> _ {
    let none: &'static str = "";
    ops::lease_token
        .eq(none)
        .or(ops::lease_expires_at.is_null())
        .or(ops::lease_expires_at.le(now.nullable()))
}

/// The requests for the row's apply that name the whole apply or the row itself.
#[diesel::dsl::auto_type]
fn requests_for_row() -> _ {
    reqs::table.filter(reqs::apply_id.eq(ops::apply_id)).filter(
        reqs::apply_operation_id
            .is_null()
            .or(reqs::apply_operation_id.eq(ops::id.nullable())),
    )
}

/// The highest `releases_through` of the completed releases naming the row's apply or the row (NULL:
/// none). A `pause` row passes an earlier failure numbered at most this. The apply refresh reads it
/// too, so the derived state lets a failure through exactly when the claims do.
#[diesel::dsl::auto_type]
pub(in crate::store) fn released_through() -> _ {
    let release: ControlRequestKind = ControlRequestKind::Release;
    let completed: ControlRequestStatus = ControlRequestStatus::Completed;
    let highest: diesel::helper_types::max<reqs::releases_through> = max(reqs::releases_through);
    requests_for_row()
        .filter(reqs::kind.eq(release))
        .filter(reqs::status.eq(completed))
        .select(highest)
        .single_value()
}

/// A pending request of `kind` for the row's apply or for the row.
#[diesel::dsl::auto_type]
pub(in crate::store) fn request_pending_for_row(kind: ControlRequestKind) -> _ {
    let pending: ControlRequestStatus = ControlRequestStatus::Pending;
    exists(
        requests_for_row()
            .filter(reqs::kind.eq(kind))
            .filter(reqs::status.eq(pending))
            .select(reqs::id),
    )
}

/// A pending `revert` or `skip_revert` for the row (both are recorded per operation).
#[diesel::dsl::auto_type]
pub(in crate::store) fn revert_decision_requested() -> _ {
    let revert: ControlRequestKind = ControlRequestKind::Revert;
    let skip: ControlRequestKind = ControlRequestKind::SkipRevert;
    let revert_pending: request_pending_for_row = request_pending_for_row(revert);
    let skip_pending: request_pending_for_row = request_pending_for_row(skip);
    revert_pending.or(skip_pending)
}

/// **A readable row**: its state and its policies are values this version knows. A claim hands the
/// row out typed, and a stored value it does not know is an error to read, never a default: the
/// claims' locking reads test this too, so a row written by hand with such a value is passed over
/// (fails closed) whatever decision it carries, and does not stop the claims of other rows.
#[diesel::dsl::auto_type]
pub(in crate::store) fn readable() -> _ {
    let states: &'static [ApplyState] = &ApplyState::ALL;
    let cutover: &'static [CutoverPolicy] = CutoverPolicy::ALL;
    let failure: &'static [FailurePolicy] = FailurePolicy::ALL;
    db::one_of(ops::state, states)
        .and(db::one_of(ops::cutover_policy, cutover))
        .and(db::one_of(ops::on_failure, failure))
}

/// A claim's scope ([`ClaimScope`]): the row's deployment among those listed, its environment and
/// its database the ones given; an open part (nothing listed) restricts nothing. Row-local: the
/// scope of a deployment list is served by the claim's scope index (`copy_walk` or `cutover_walk`,
/// `deployment`, `created_at`, `id`).
#[diesel::dsl::auto_type]
pub(in crate::store) fn in_scope(
    deployments: Vec<String>,
    environments: Vec<String>,
    databases: Vec<String>,
) -> _ {
    let deployment: db::within<ops::deployment, Vec<String>> =
        db::within(ops::deployment, deployments);
    let environment: db::within<ops::environment, Vec<String>> =
        db::within(ops::environment, environments);
    let database: db::within<ops::database_name, Vec<String>> =
        db::within(ops::database_name, databases);
    deployment.and(environment).and(database)
}

/// [`in_scope`] of `scope`.
pub(in crate::store) fn scope_filter(scope: &ClaimScope) -> in_scope {
    in_scope(
        scope.deployments.clone(),
        scope.environment.iter().cloned().collect(),
        scope.database_name.iter().cloned().collect(),
    )
}

/// The one row `id`, written as the range `id >= ? AND id <= ?` rather than `id = ?`: the database
/// then reads it as a range on the primary key, and a locking read that rejects the row (it changed
/// since the candidate read) releases it at once under READ COMMITTED. An equality on the primary key
/// is read as a constant before the conditions are evaluated, and its lock is kept until COMMIT
/// (measured on MariaDB 10.11; `tests/it/claim_locks.rs` pins the behaviour). The locking read does
/// not repeat `claimable = 1` either (the state conditions imply it): with it, the optimizer may walk
/// the claim index instead, locking every claimable row it passes.
#[diesel::dsl::auto_type]
pub(in crate::store) fn only_row(id: crate::models::ApplyOperationId) -> _ {
    ops::id.ge(id).and(ops::id.le(id))
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    /// The WHERE clause `filter` renders on SQLite.
    fn rendered(filter: in_scope) -> String {
        let query = ops::table.select(ops::id).filter(filter);
        diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string()
    }

    #[test]
    fn an_open_scope_restricts_nothing_and_a_listed_one_is_in() {
        assert!(
            rendered(scope_filter(&ClaimScope::any())).contains("WHERE ((1=1 AND 1=1) AND 1=1)"),
            "{}",
            rendered(scope_filter(&ClaimScope::any()))
        );
        let scope = ClaimScope::any()
            .deployments(["east", "west"])
            .environment("production");
        let sql = rendered(scope_filter(&scope));
        assert!(
            sql.contains("`deployment` IN (?, ?)") && sql.contains("`environment` IN (?)"),
            "{sql}"
        );
        assert!(sql.contains("AND 1=1"), "the open database part: {sql}");
    }
}
