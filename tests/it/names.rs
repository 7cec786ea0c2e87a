//! Names carry no control characters (worker contract revision 3, point 22): every name field
//! refuses C0 (NUL included), DEL and C1 with `InvalidInput` naming the field, before any SQL, so
//! nothing is written; DDL and reasons may hold tabs and line breaks, never other control characters;
//! quoted texts (error messages) refuse only NUL.

use std::time::Duration;

use applyops::models::{
    NewApply, NewApplyOperation, NewControlRequest, NewRollout, NewRolloutOperation, NewTask,
};
use applyops::schema::{applies as applies_table, apply_control_requests, apply_operations, tasks};
use applyops::state::{ApplyState, ControlRequestKind};
use applyops::store::claims::{self, ClaimOptions};
use applyops::store::{
    applies, apply_operations as ops, control_requests, leases, tasks as task_store,
};
use applyops::{DbConnection, StoreError};
use diesel::prelude::*;

use crate::backend_tests;
use crate::fixtures;
use crate::harness::TestDb;

backend_tests!(
    names_with_control_characters_are_refused_naming_the_field_and_nothing_is_written,
    ddl_and_reasons_keep_tabs_and_line_breaks_and_refuse_other_control_characters,
    an_error_message_may_quote_escape_sequences_but_never_nul,
);

/// Control characters of every family: an escape sequence (C0), NUL, DEL, C1 (CSI).
const HOSTILE: [&str; 4] = ["\u{1b}]0;pwned\u{7}", "nul\0", "del\u{7f}", "csi\u{9b}2J"];

/// Rows in every table.
fn rows(conn: &mut DbConnection) -> [i64; 4] {
    [
        applies_table::table.count().get_result(conn).unwrap(),
        apply_operations::table.count().get_result(conn).unwrap(),
        tasks::table.count().get_result(conn).unwrap(),
        apply_control_requests::table
            .count()
            .get_result(conn)
            .unwrap(),
    ]
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str) {
    match result {
        Err(StoreError::InvalidInput { field: f, reason }) => {
            assert_eq!(f, field, "{reason}");
            assert!(
                reason.contains("control character") || reason.contains("NUL"),
                "{reason}"
            );
        }
        other => panic!("{field}: expected InvalidInput, got {other:?}"),
    }
}

fn rollout_with(edit: impl FnOnce(&mut NewRollout)) -> NewRollout {
    let mut new = NewRollout::new("clean", "shop", "production", "alice").operation(
        NewRolloutOperation::new("east")
            .with_target("ks")
            .task("orders", "ALTER TABLE orders ADD x INT"),
    );
    edit(&mut new);
    new
}

fn names_with_control_characters_are_refused_naming_the_field_and_nothing_is_written(db: &TestDb) {
    let conn = &mut db.conn();
    let (apply_id, ids) = fixtures::rollout(
        conn,
        1,
        applyops::state::CutoverPolicy::Rolling,
        applyops::state::FailurePolicy::Halt,
    );
    let held = fixtures::claim(conn, "w").unwrap();
    let before = rows(conn);
    for bad in HOSTILE {
        let bad = format!("x{bad}");
        let cases: Vec<(&str, NewRollout)> = vec![
            (
                "apply_identifier",
                rollout_with(|r| r.apply_identifier = bad.clone()),
            ),
            (
                "database_name",
                rollout_with(|r| r.database_name = bad.clone()),
            ),
            ("environment", rollout_with(|r| r.environment = bad.clone())),
            (
                "requested_by",
                rollout_with(|r| r.requested_by = bad.clone()),
            ),
            (
                "deployment",
                rollout_with(|r| r.deployment = Some(bad.clone())),
            ),
            (
                "operations.deployment",
                rollout_with(|r| r.operations[0].deployment = bad.clone()),
            ),
            (
                "operations.target",
                rollout_with(|r| r.operations[0].target = bad.clone()),
            ),
            (
                "operations.tasks.table_name",
                rollout_with(|r| r.operations[0].tasks[0].table_name = bad.clone()),
            ),
        ];
        for (field, new) in cases {
            assert_refused(applies::create_rollout(conn, &new), field);
        }
        assert_refused(
            applies::insert(conn, &NewApply::new(&bad, "shop", "production", "east")),
            "apply_identifier",
        );
        assert_refused(
            applies::insert(conn, &NewApply::new("a", "shop", "production", &bad)),
            "deployment",
        );
        assert_refused(
            ops::insert(conn, &NewApplyOperation::new(apply_id, &bad)),
            "deployment",
        );
        assert_refused(
            ops::insert(
                conn,
                &NewApplyOperation::new(apply_id, "west").with_target(&bad),
            ),
            "target",
        );
        assert_refused(
            task_store::insert(
                conn,
                &NewTask {
                    apply_id,
                    apply_operation_id: Some(ids[0]),
                    table_name: bad.clone(),
                    ddl: "ALTER TABLE t ADD c INT".into(),
                },
            ),
            "table_name",
        );
        assert_refused(
            control_requests::request(
                conn,
                &NewControlRequest::new(apply_id, ControlRequestKind::Stop, &bad),
            ),
            "requested_by",
        );
        assert_refused(
            claims::claim_next(conn, &ClaimOptions::new(&bad, Duration::from_secs(60))),
            "owner",
        );
        assert_refused(
            leases::set_external_id(conn, &held.lease, &bad),
            "external_id",
        );
    }
    assert_eq!(rows(conn), before, "nothing was written");
    assert_eq!(fixtures::row(conn, ids[0]).0.state, ApplyState::Running);
}

fn ddl_and_reasons_keep_tabs_and_line_breaks_and_refuse_other_control_characters(db: &TestDb) {
    let conn = &mut db.conn();
    let ddl = "ALTER TABLE orders\n\tADD note TEXT;\r\n";
    let created = applies::create_rollout(
        conn,
        &rollout_with(|r| r.operations[0].tasks[0].ddl = ddl.to_owned()),
    )
    .unwrap();
    assert_eq!(created.operations[0].tasks[0].ddl, ddl);
    let apply_id = created.apply.id;
    let reason = "traffic peak\n\tuntil 18:00";
    let stop = control_requests::request(
        conn,
        &NewControlRequest::new(apply_id, ControlRequestKind::Stop, "alice").with_reason(reason),
    )
    .unwrap();
    assert_eq!(stop.reason.as_deref(), Some(reason));
    let before = rows(conn);
    for bad in HOSTILE {
        assert_refused(
            applies::create_rollout(
                conn,
                &rollout_with(|r| {
                    r.apply_identifier = "other".into();
                    r.database_name = "other".into();
                    r.operations[0].tasks[0].ddl = format!("ALTER TABLE t ADD c INT {bad}");
                }),
            ),
            "operations.tasks.ddl",
        );
        assert_refused(
            control_requests::request(
                conn,
                &NewControlRequest::new(apply_id, ControlRequestKind::Start, "alice")
                    .with_reason(format!("because{bad}")),
            ),
            "reason",
        );
    }
    assert_eq!(rows(conn), before, "nothing was written");
}

fn an_error_message_may_quote_escape_sequences_but_never_nul(db: &TestDb) {
    let conn = &mut db.conn();
    fixtures::rollout(
        conn,
        2,
        applyops::state::CutoverPolicy::Parallel,
        applyops::state::FailurePolicy::Continue,
    );
    let first = fixtures::claim(conn, "w").unwrap();
    assert_refused(
        leases::mark_failed(conn, &first.lease, "tool said \0"),
        "error_message",
    );
    assert_eq!(
        fixtures::row(conn, first.operation.id).0.state,
        ApplyState::Running,
        "nothing written"
    );
    let quoted = "\u{1b}[31merror:\u{1b}[0m table is locked";
    leases::mark_failed(conn, &first.lease, quoted).unwrap();
    assert_eq!(
        fixtures::row(conn, first.operation.id)
            .0
            .error_message
            .as_deref(),
        Some(quoted),
        "kept as quoted; shown escaped by the CLI"
    );
}
