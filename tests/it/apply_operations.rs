//! The apply_operations store: round trips, ordering, uniqueness, transitions, idempotency, not-found,
//! deletion and input validation, on both backends.

use std::thread::sleep;
use std::time::Duration;

use applyops::db::DbConnection;
use applyops::models::{ApplyId, ApplyOperation, ApplyOperationId, NewApplyOperation};
use applyops::schema::apply_operations as ops;
use applyops::schema_types::datetime;
use applyops::state::ApplyState;
use applyops::store::apply_operations as store;
use applyops::StoreError;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::backend_tests;
use crate::harness::TestDb;

fn insert(conn: &mut DbConnection, apply_id: i64, deployment: &str) -> ApplyOperationId {
    crate::fixtures::insert_operation(conn, ApplyId(apply_id), deployment)
}

fn fetch(conn: &mut DbConnection, id: ApplyOperationId) -> ApplyOperation {
    store::get(conn, id).expect("get").expect("row exists")
}

/// Lets the clock move on so a re-stamped timestamp would differ from the first one.
fn tick() {
    sleep(Duration::from_millis(5));
}

fn set_created_at(conn: &mut DbConnection, id: ApplyOperationId, at: &str) {
    let at = NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S%.f").unwrap();
    diesel::update(ops::table.find(id))
        .set(ops::created_at.eq(datetime(at)))
        .execute(conn)
        .unwrap();
}

fn deployments(rows: &[ApplyOperation]) -> Vec<&str> {
    rows.iter().map(|r| r.deployment.as_str()).collect()
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, id: i64) {
    match result {
        Err(StoreError::ApplyOperationNotFound { id: missing }) => {
            assert_eq!(missing, ApplyOperationId(id))
        }
        other => panic!("expected ApplyOperationNotFound {{ id: {id} }}, got {other:?}"),
    }
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, expected_field: &str) {
    match result {
        Err(StoreError::InvalidInput { field, .. }) => assert_eq!(field, expected_field),
        other => panic!("expected InvalidInput for {expected_field}, got {other:?}"),
    }
}

backend_tests!(
    insert_then_get_round_trips_with_defaults,
    target_defaults_to_empty,
    get_of_a_missing_id_is_none,
    get_by_apply_and_deployment_finds_only_that_pair,
    list_by_apply_orders_by_created_at_then_id,
    a_backdated_created_at_sorts_ahead_of_a_lower_id,
    list_by_apply_only_returns_that_apply,
    the_same_apply_and_deployment_conflicts,
    another_deployment_or_another_apply_is_allowed,
    deployments_differing_only_in_case_are_distinct,
    a_violation_of_another_unique_key_stays_a_database_error,
    update_state_sets_the_state_and_touches_nothing_else,
    update_state_rejects_completing_states,
    stopped_goes_through_update_state_and_keeps_completed_at_null,
    mark_started_runs_and_stamps_started_at_once,
    mark_completed_stamps_completed_at_once,
    mark_failed_records_the_message_and_stamps_completed_at_once,
    mark_failed_again_replaces_the_message_but_not_the_timestamp,
    mark_terminal_cancels_and_reverts_stamping_completed_at_once,
    mark_terminal_rejects_failed_stopped_and_non_terminal_states,
    moving_back_to_a_non_terminal_state_clears_completed_at,
    update_state_repeats_are_idempotent,
    every_update_of_a_missing_id_is_not_found,
    delete_by_apply_deletes_only_that_apply,
    delete_by_apply_of_an_unknown_apply_deletes_nothing,
    a_deployment_can_be_reused_after_delete_by_apply,
    deployment_must_be_1_to_255_characters,
    deployment_limit_counts_characters_not_bytes,
    deployment_must_not_end_in_a_space,
    target_is_at_most_255_characters,
    error_message_is_bounded_by_the_text_column_and_never_truncated,
    quotes_unicode_and_sql_metacharacters_are_stored_verbatim,
    an_unknown_stored_state_is_a_typed_error_naming_row_and_value,
    stored_states_in_other_spellings_are_unknown,
    states_are_stored_as_snake_case,
);

fn insert_then_get_round_trips_with_defaults(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(7));
    let id = store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(7), "us-east-1").with_target("ks/-80"),
    )
    .unwrap();
    let op = fetch(conn, id);
    assert_eq!(op.id, id);
    assert_eq!(op.apply_id, ApplyId(7));
    assert_eq!(op.deployment, "us-east-1");
    assert_eq!(op.target, "ks/-80");
    assert_eq!(op.state, ApplyState::Pending);
    assert_eq!(op.error_message, None);
    assert_eq!(op.started_at, None);
    assert_eq!(op.completed_at, None);
    assert_eq!(op.created_at, op.updated_at);
}

fn target_defaults_to_empty(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    assert_eq!(fetch(conn, id).target, "");
}

fn get_of_a_missing_id_is_none(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "a");
    assert_eq!(store::get(conn, ApplyOperationId(999_999)).unwrap(), None);
}

fn get_by_apply_and_deployment_finds_only_that_pair(db: &TestDb) {
    let conn = &mut db.conn();
    let wanted = insert(conn, 1, "east");
    insert(conn, 1, "west");
    insert(conn, 2, "east");
    let op = store::get_by_apply_and_deployment(conn, ApplyId(1), "east")
        .unwrap()
        .unwrap();
    assert_eq!(op.id, wanted);
    assert_eq!(
        store::get_by_apply_and_deployment(conn, ApplyId(1), "north").unwrap(),
        None
    );
    assert_eq!(
        store::get_by_apply_and_deployment(conn, ApplyId(3), "east").unwrap(),
        None
    );
    assert_eq!(
        store::get_by_apply_and_deployment(conn, ApplyId(1), "EAST").unwrap(),
        None,
        "exact match only"
    );
}

fn list_by_apply_orders_by_created_at_then_id(db: &TestDb) {
    let conn = &mut db.conn();
    let a = insert(conn, 1, "a");
    let b = insert(conn, 1, "b");
    let c = insert(conn, 1, "c");
    // a and c share a timestamp: the id breaks the tie. b is later.
    set_created_at(conn, a, "2030-01-01 00:00:00.000001");
    set_created_at(conn, c, "2030-01-01 00:00:00.000001");
    set_created_at(conn, b, "2030-01-01 00:00:00.000002");
    let rows = store::list_by_apply(conn, ApplyId(1)).unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, c, b]);
}

fn a_backdated_created_at_sorts_ahead_of_a_lower_id(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "first");
    insert(conn, 1, "second");
    let late = insert(conn, 1, "backdated");
    set_created_at(conn, late, "2001-02-03 04:05:06.789012");
    let rows = store::list_by_apply(conn, ApplyId(1)).unwrap();
    assert_eq!(deployments(&rows), ["backdated", "first", "second"]);
}

fn list_by_apply_only_returns_that_apply(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "a");
    insert(conn, 2, "b");
    insert(conn, 1, "c");
    assert_eq!(
        deployments(&store::list_by_apply(conn, ApplyId(1)).unwrap()),
        ["a", "c"]
    );
    assert_eq!(
        deployments(&store::list_by_apply(conn, ApplyId(2)).unwrap()),
        ["b"]
    );
    assert!(store::list_by_apply(conn, ApplyId(3)).unwrap().is_empty());
}

fn the_same_apply_and_deployment_conflicts(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(5));
    let first = insert(conn, 5, "east");
    match store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(5), "east").with_target("other"),
    ) {
        Err(StoreError::ApplyOperationExists {
            apply_id,
            deployment,
        }) => {
            assert_eq!((apply_id, deployment.as_str()), (ApplyId(5), "east"));
        }
        other => panic!("expected ApplyOperationExists, got {other:?}"),
    }
    let rows = store::list_by_apply(conn, ApplyId(5)).unwrap();
    assert_eq!(rows.len(), 1, "nothing written by the conflicting insert");
    assert_eq!((rows[0].id, rows[0].target.as_str()), (first, ""));
}

fn another_deployment_or_another_apply_is_allowed(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 5, "east");
    insert(conn, 5, "west");
    insert(conn, 6, "east");
    assert_eq!(store::list_by_apply(conn, ApplyId(5)).unwrap().len(), 2);
    assert_eq!(store::list_by_apply(conn, ApplyId(6)).unwrap().len(), 1);
}

fn deployments_differing_only_in_case_are_distinct(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 5, "east");
    insert(conn, 5, "East");
    assert_eq!(store::list_by_apply(conn, ApplyId(5)).unwrap().len(), 2);
}

fn a_violation_of_another_unique_key_stays_a_database_error(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    diesel::sql_query("CREATE UNIQUE INDEX test_only_target_key ON apply_operations (target)")
        .execute(conn)
        .unwrap();
    // The duplicate entry echoed in MySQL's message imitates our key's clause; it must not fool the parser.
    let target = "t' for key 'apply_operations_apply_id_deployment_key";
    store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(1), "a").with_target(target),
    )
    .unwrap();
    match store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(1), "b").with_target(target),
    ) {
        Err(StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ))) => {}
        other => panic!("expected a plain unique-violation database error, got {other:?}"),
    }
}

fn update_state_sets_the_state_and_touches_nothing_else(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    let before = fetch(conn, id);
    tick();
    store::update_state(conn, id, ApplyState::WaitingForCutover).unwrap();
    let after = fetch(conn, id);
    assert_eq!(after.state, ApplyState::WaitingForCutover);
    assert_eq!((after.started_at, after.completed_at), (None, None));
    assert_eq!(after.created_at, before.created_at);
    assert!(after.updated_at > before.updated_at);
}

fn update_state_rejects_completing_states(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    for state in [
        ApplyState::Completed,
        ApplyState::Failed,
        ApplyState::Cancelled,
        ApplyState::Reverted,
    ] {
        assert_invalid(store::update_state(conn, id, state), "state");
    }
    assert_eq!(fetch(conn, id).state, ApplyState::Pending);
}

fn stopped_goes_through_update_state_and_keeps_completed_at_null(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_started(conn, id).unwrap();
    store::update_state(conn, id, ApplyState::Stopped).unwrap();
    let op = fetch(conn, id);
    assert_eq!(op.state, ApplyState::Stopped);
    assert_eq!(op.completed_at, None);
    assert!(op.started_at.is_some());
}

fn mark_started_runs_and_stamps_started_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_started(conn, id).unwrap();
    let first = fetch(conn, id);
    assert_eq!(first.state, ApplyState::Running);
    let started = first.started_at.expect("started_at stamped");
    assert!(started >= first.created_at);
    tick();
    store::mark_started(conn, id).unwrap();
    let again = fetch(conn, id);
    assert_eq!(
        again.started_at,
        Some(started),
        "a repeat keeps the first started_at"
    );
    assert!(again.updated_at > first.updated_at);
}

fn mark_completed_stamps_completed_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_started(conn, id).unwrap();
    store::mark_completed(conn, id).unwrap();
    let first = fetch(conn, id);
    assert_eq!(first.state, ApplyState::Completed);
    let completed = first.completed_at.expect("completed_at stamped");
    tick();
    store::mark_completed(conn, id).unwrap();
    let again = fetch(conn, id);
    assert_eq!(again.completed_at, Some(completed));
    assert_eq!(again.started_at, first.started_at);
}

fn mark_failed_records_the_message_and_stamps_completed_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_failed(conn, id, "copy failed: lock wait timeout").unwrap();
    let first = fetch(conn, id);
    assert_eq!(first.state, ApplyState::Failed);
    assert_eq!(
        first.error_message.as_deref(),
        Some("copy failed: lock wait timeout")
    );
    let completed = first.completed_at.expect("completed_at stamped");
    tick();
    store::mark_failed(conn, id, "copy failed: lock wait timeout").unwrap();
    let again = fetch(conn, id);
    assert_eq!(again.completed_at, Some(completed));
    assert_eq!(again.error_message, first.error_message);
}

fn mark_failed_again_replaces_the_message_but_not_the_timestamp(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_failed(conn, id, "first").unwrap();
    let completed = fetch(conn, id).completed_at;
    tick();
    store::mark_failed(conn, id, "second").unwrap();
    let op = fetch(conn, id);
    assert_eq!(op.error_message.as_deref(), Some("second"));
    assert_eq!(op.completed_at, completed);
}

fn mark_terminal_cancels_and_reverts_stamping_completed_at_once(db: &TestDb) {
    let conn = &mut db.conn();
    for state in [ApplyState::Cancelled, ApplyState::Reverted] {
        let id = insert(conn, 1, state.as_str());
        store::mark_terminal(conn, id, state).unwrap();
        let first = fetch(conn, id);
        assert_eq!(first.state, state);
        let completed = first.completed_at.expect("completed_at stamped");
        tick();
        store::mark_terminal(conn, id, state).unwrap();
        assert_eq!(fetch(conn, id).completed_at, Some(completed));
    }
}

fn mark_terminal_rejects_failed_stopped_and_non_terminal_states(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    for state in [
        ApplyState::Failed,
        ApplyState::Stopped,
        ApplyState::Running,
        ApplyState::FailedRetryable,
    ] {
        assert_invalid(store::mark_terminal(conn, id, state), "state");
    }
    let op = fetch(conn, id);
    assert_eq!((op.state, op.completed_at), (ApplyState::Pending, None));
}

fn moving_back_to_a_non_terminal_state_clears_completed_at(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_failed(conn, id, "boom").unwrap();
    store::update_state(conn, id, ApplyState::Pending).unwrap();
    let op = fetch(conn, id);
    assert_eq!((op.state, op.completed_at), (ApplyState::Pending, None));
    assert_eq!(
        op.error_message.as_deref(),
        Some("boom"),
        "the last error stays for operators"
    );
    store::mark_failed(conn, id, "boom").unwrap();
    store::mark_started(conn, id).unwrap();
    assert_eq!(fetch(conn, id).completed_at, None);
}

fn update_state_repeats_are_idempotent(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::mark_started(conn, id).unwrap();
    let started = fetch(conn, id).started_at;
    store::update_state(conn, id, ApplyState::Paused).unwrap();
    store::update_state(conn, id, ApplyState::Paused).unwrap();
    let op = fetch(conn, id);
    assert_eq!(op.state, ApplyState::Paused);
    assert_eq!(op.started_at, started);
}

fn every_update_of_a_missing_id_is_not_found(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "a");
    let missing = 424_242;
    assert_not_found(
        store::update_state(conn, ApplyOperationId(missing), ApplyState::Running),
        missing,
    );
    assert_not_found(
        store::mark_started(conn, ApplyOperationId(missing)),
        missing,
    );
    assert_not_found(
        store::mark_completed(conn, ApplyOperationId(missing)),
        missing,
    );
    assert_not_found(
        store::mark_failed(conn, ApplyOperationId(missing), "x"),
        missing,
    );
    assert_not_found(
        store::mark_terminal(conn, ApplyOperationId(missing), ApplyState::Cancelled),
        missing,
    );
    assert_eq!(
        store::get(conn, ApplyOperationId(missing)).unwrap(),
        None,
        "nothing was created"
    );
}

fn delete_by_apply_deletes_only_that_apply(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "a");
    insert(conn, 1, "b");
    let kept = insert(conn, 2, "a");
    assert_eq!(store::delete_by_apply(conn, ApplyId(1)).unwrap(), 2);
    assert!(store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty());
    assert_eq!(
        store::list_by_apply(conn, ApplyId(2))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [kept]
    );
}

fn delete_by_apply_of_an_unknown_apply_deletes_nothing(db: &TestDb) {
    let conn = &mut db.conn();
    insert(conn, 1, "a");
    assert_eq!(store::delete_by_apply(conn, ApplyId(99)).unwrap(), 0);
    assert_eq!(store::list_by_apply(conn, ApplyId(1)).unwrap().len(), 1);
}

fn a_deployment_can_be_reused_after_delete_by_apply(db: &TestDb) {
    let conn = &mut db.conn();
    let old = insert(conn, 1, "a");
    store::delete_by_apply(conn, ApplyId(1)).unwrap();
    let new = insert(conn, 1, "a");
    assert_ne!(old, new);
}

fn deployment_must_be_1_to_255_characters(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    assert_invalid(
        store::insert(conn, &NewApplyOperation::new(ApplyId(1), "")),
        "deployment",
    );
    assert_invalid(
        store::insert(conn, &NewApplyOperation::new(ApplyId(1), "d".repeat(256))),
        "deployment",
    );
    assert!(
        store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty(),
        "nothing written"
    );
    let longest = "d".repeat(255);
    let id = insert(conn, 1, &longest);
    assert_eq!(fetch(conn, id).deployment, longest);
}

fn deployment_limit_counts_characters_not_bytes(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let emoji = "🚀".repeat(255); // 1,020 bytes
    let id = insert(conn, 1, &emoji);
    assert_eq!(fetch(conn, id).deployment, emoji);
    assert_invalid(
        store::insert(conn, &NewApplyOperation::new(ApplyId(1), "🚀".repeat(256))),
        "deployment",
    );
}

fn deployment_must_not_end_in_a_space(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    insert(conn, 1, "east");
    assert_invalid(
        store::insert(conn, &NewApplyOperation::new(ApplyId(1), "east ")),
        "deployment",
    );
    assert_eq!(store::list_by_apply(conn, ApplyId(1)).unwrap().len(), 1);
}

fn target_is_at_most_255_characters(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    assert_invalid(
        store::insert(
            conn,
            &NewApplyOperation::new(ApplyId(1), "a").with_target("t".repeat(256)),
        ),
        "target",
    );
    assert!(store::list_by_apply(conn, ApplyId(1)).unwrap().is_empty());
    let id = store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(1), "a").with_target("t".repeat(255)),
    )
    .unwrap();
    assert_eq!(fetch(conn, id).target.len(), 255);
}

fn error_message_is_bounded_by_the_text_column_and_never_truncated(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    assert_invalid(
        store::mark_failed(conn, id, &"e".repeat(65_536)),
        "error_message",
    );
    assert_invalid(store::mark_failed(conn, id, ""), "error_message");
    let op = fetch(conn, id);
    assert_eq!(
        (op.state, op.error_message),
        (ApplyState::Pending, None),
        "nothing written"
    );
    let largest = format!("{}{}", "€".repeat(21_844), "abc"); // 65,532 + 3 = 65,535 bytes
    assert_eq!(largest.len(), 65_535);
    store::mark_failed(conn, id, &largest).unwrap();
    assert_eq!(
        fetch(conn, id).error_message.as_deref(),
        Some(largest.as_str())
    );
}

fn quotes_unicode_and_sql_metacharacters_are_stored_verbatim(db: &TestDb) {
    let conn = &mut db.conn();
    crate::fixtures::ensure_apply(conn, ApplyId(1));
    let deployment = "o'brien\"; DROP TABLE apply_operations; -- \\ % _ 🚀 ñ 中文";
    let target = "`ks`/-80\t\n'\\0";
    let message =
        "Error 1064: near ''; SELECT * FROM users WHERE 1=1 --' at line 1\n\u{1F4A5} \\N NULL";
    let id = store::insert(
        conn,
        &NewApplyOperation::new(ApplyId(1), deployment).with_target(target),
    )
    .unwrap();
    store::mark_failed(conn, id, message).unwrap();
    let op = fetch(conn, id);
    assert_eq!(op.deployment, deployment);
    assert_eq!(op.target, target);
    assert_eq!(op.error_message.as_deref(), Some(message));
    assert_eq!(
        store::get_by_apply_and_deployment(conn, ApplyId(1), deployment)
            .unwrap()
            .map(|o| o.id),
        Some(id)
    );
}

fn an_unknown_stored_state_is_a_typed_error_naming_row_and_value(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    diesel::update(ops::table.find(id))
        .set(ops::state.eq("exploded"))
        .execute(conn)
        .unwrap();
    let check = |result: Result<_, StoreError>| match result {
        Err(StoreError::UnknownState {
            table,
            id: row,
            value,
        }) => {
            assert_eq!(
                (table, row, value.as_str()),
                ("apply_operations", id.get(), "exploded")
            );
        }
        other => panic!("expected UnknownState, got {other:?}"),
    };
    check(store::get(conn, id).map(|_| ()));
    check(store::get_by_apply_and_deployment(conn, ApplyId(1), "a").map(|_| ()));
    check(store::list_by_apply(conn, ApplyId(1)).map(|_| ()));
    // An operator can still remediate the row by id.
    store::update_state(conn, id, ApplyState::Pending).unwrap();
    assert_eq!(fetch(conn, id).state, ApplyState::Pending);
}

// The claim queries compare exact names, so reading does too: another spelling is an unknown
// state, an error naming the row, never the state it resembles.
fn stored_states_in_other_spellings_are_unknown(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    for spelling in ["STATE_REVERT_WINDOW", "COMPLETED", "completed ", "Running"] {
        diesel::update(ops::table.find(id))
            .set(ops::state.eq(spelling))
            .execute(conn)
            .unwrap();
        match store::get(conn, id) {
            Err(StoreError::UnknownState {
                table: "apply_operations",
                id: row,
                value,
            }) if row == id.get() && value == spelling => {}
            other => panic!("{spelling:?}: expected UnknownState, got {other:?}"),
        }
    }
}

fn states_are_stored_as_snake_case(db: &TestDb) {
    let conn = &mut db.conn();
    let id = insert(conn, 1, "a");
    store::update_state(conn, id, ApplyState::WaitingForCutover).unwrap();
    let raw: String = ops::table.find(id).select(ops::state).first(conn).unwrap();
    assert_eq!(raw, "waiting_for_cutover");
}
