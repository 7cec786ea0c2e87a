//! Typed rows: enum columns and id newtypes in and out of the database, and the raw rows an operator
//! reads (and repairs) a row with when its stored value names nothing this version knows.

use applyops::models::raw::{ApplyOperationRow, ControlRequestRow};
use applyops::models::{ApplyId, ApplyOperationId};
use applyops::schema::{apply_control_requests as reqs, apply_operations as ops};
use applyops::state::{
    ApplyState, ControlRequestKind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
};
use applyops::store::{apply_operations, control_requests};
use applyops::{PoolConfig, Store, StoreError};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    typed_values_are_stored_as_their_names_and_read_back_typed,
    a_raw_row_reads_an_unknown_policy_and_the_repaired_row_reads_typed,
    a_raw_request_row_reads_an_unknown_status_and_the_repaired_row_reads_typed,
    store_run_serves_any_store_function_on_a_pooled_connection,
    ids_serialise_as_bare_numbers,
);

fn typed_values_are_stored_as_their_names_and_read_back_typed(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, CutoverPolicy::Barrier, FailurePolicy::Pause);
    apply_operations::update_state(conn, ids[0], ApplyState::RunningDegraded).unwrap();
    let stored: (String, String, String) = ops::table
        .find(ids[0])
        .select((ops::state, ops::cutover_policy, ops::on_failure))
        .first(conn)
        .unwrap();
    assert_eq!(
        stored,
        (
            ApplyState::RunningDegraded.as_str().to_owned(),
            CutoverPolicy::Barrier.as_str().to_owned(),
            FailurePolicy::Pause.as_str().to_owned()
        )
    );
    let op = apply_operations::get(conn, ids[0]).unwrap().unwrap();
    assert_eq!(
        (op.state, op.cutover_policy, op.on_failure),
        (
            ApplyState::RunningDegraded,
            CutoverPolicy::Barrier,
            FailurePolicy::Pause
        )
    );
    // A single typed column reads typed too.
    let state: ApplyState = ops::table
        .find(ids[0])
        .select(ops::state)
        .first(conn)
        .unwrap();
    assert_eq!(state, ApplyState::RunningDegraded);
}

fn a_raw_row_reads_an_unknown_policy_and_the_repaired_row_reads_typed(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    force_policy(conn, ids[0], "turbo", "halt");
    for result in [
        apply_operations::get(conn, ids[0]).map(|_| ()),
        apply_operations::list_by_apply(conn, apply_id).map(|_| ()),
    ] {
        match result {
            Err(StoreError::UnknownValue {
                table,
                id,
                column,
                value,
            }) => assert_eq!(
                (table, id, column, value.as_str()),
                ("apply_operations", ids[0].get(), "cutover_policy", "turbo")
            ),
            other => panic!("expected UnknownValue, got {other:?}"),
        }
    }
    let raw = ops::table
        .find(ids[0])
        .select(ApplyOperationRow::as_select())
        .first(conn)
        .unwrap();
    assert_eq!((raw.id, raw.cutover_policy.as_str()), (ids[0], "turbo"));
    // The operator's repair: a typed write of a known value.
    diesel::update(ops::table.find(raw.id))
        .set(ops::cutover_policy.eq(CutoverPolicy::Rolling))
        .execute(conn)
        .unwrap();
    let op = apply_operations::get(conn, ids[0]).unwrap().unwrap();
    assert_eq!(op.cutover_policy, CutoverPolicy::Rolling);
}

fn a_raw_request_row_reads_an_unknown_status_and_the_repaired_row_reads_typed(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, _) = rollout(conn, 1, CutoverPolicy::Rolling, FailurePolicy::Halt);
    let id = request(conn, apply_id, None, ControlRequestKind::Stop);
    diesel::update(reqs::table.find(id))
        .set(reqs::status.eq("PENDING"))
        .execute(conn)
        .unwrap();
    assert!(matches!(
        control_requests::get(conn, id),
        Err(StoreError::UnknownValue { table: "apply_control_requests", column: "status", id: row, value })
            if row == id.get() && value == "PENDING"
    ));
    let raw = reqs::table
        .find(id)
        .select(ControlRequestRow::as_select())
        .first(conn)
        .unwrap();
    assert_eq!(
        (raw.kind.as_str(), raw.status.as_str()),
        ("stop", "PENDING")
    );
    diesel::update(reqs::table.find(id))
        .set(reqs::status.eq(ControlRequestStatus::Failed))
        .execute(conn)
        .unwrap();
    let repaired = control_requests::get(conn, id).unwrap().unwrap();
    assert_eq!(repaired.status, ControlRequestStatus::Failed);
}

fn store_run_serves_any_store_function_on_a_pooled_connection(db: &TestDb) {
    let store = Store::open(db.url(), PoolConfig::default()).unwrap();
    let (apply_id, ids) = store
        .run(|conn| {
            Ok(rollout(
                conn,
                2,
                CutoverPolicy::Rolling,
                FailurePolicy::Halt,
            ))
        })
        .unwrap();
    let listed = store
        .run(|conn| apply_operations::list_by_apply(conn, apply_id))
        .unwrap();
    assert_eq!(listed.iter().map(|op| op.id).collect::<Vec<_>>(), ids);
    let missing = ApplyOperationId(ids[1].get() + 1_000);
    assert!(matches!(
        store.run(|conn| apply_operations::mark_started(conn, missing)),
        Err(StoreError::ApplyOperationNotFound { id }) if id == missing
    ));
}

fn ids_serialise_as_bare_numbers(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = rollout(conn, 1, CutoverPolicy::Parallel, FailurePolicy::Continue);
    let op = apply_operations::get(conn, ids[0]).unwrap().unwrap();
    let json = serde_json::to_value(&op).unwrap();
    assert_eq!(json["id"], serde_json::json!(ids[0].get()));
    assert_eq!(json["apply_id"], serde_json::json!(apply_id.get()));
    assert_eq!(
        json["state"],
        serde_json::json!(ApplyState::Pending.as_str())
    );
    assert_eq!(
        json["cutover_policy"],
        serde_json::json!(CutoverPolicy::Parallel.as_str())
    );
    let back: applyops::models::ApplyOperation = serde_json::from_value(json).unwrap();
    assert_eq!(back, op);
    assert_eq!("42".parse::<ApplyId>().unwrap(), ApplyId(42));
    assert_eq!(ApplyId(42).to_string(), "42");
}
