//! Engine checkpoints and external ids (worker contract revision 2, point 15): a holder saves where
//! its copy engine is, and the claim that takes the operation over hands it back.

use applyops::state::{ApplyState, CutoverPolicy::Rolling, FailurePolicy::Halt};
use applyops::store::{apply_operations, leases};
use applyops::StoreError;

use crate::backend_tests;
use crate::fixtures::*;
use crate::harness::TestDb;

backend_tests!(
    a_recovery_claim_returns_the_dead_holders_last_checkpoint,
    a_checkpoint_is_opaque_bytes_up_to_65535,
    a_checkpoint_over_65535_bytes_is_rejected_and_nothing_written,
    a_stalled_holder_cannot_overwrite_the_new_holders_checkpoint,
    an_external_id_finds_its_operation,
    an_external_id_belongs_to_one_operation,
    a_bad_external_id_is_rejected_before_any_sql,
);

/// The holder checkpoints three steps of its copy and dies; the recovery claim returns the third
/// checkpoint, and state writes in between never touched it.
fn a_recovery_claim_returns_the_dead_holders_last_checkpoint(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let first = claim(conn, "w1").unwrap();
    assert_eq!(first.operation.engine_state, None, "nothing saved yet");
    leases::mark_started(conn, &first.lease).unwrap();
    for step in 1..=3u8 {
        leases::save_engine_state(conn, &first.lease, &[b'c', b'o', b'p', b'y', step]).unwrap();
    }
    leases::update_state(conn, &first.lease, ApplyState::RunningDegraded).unwrap();
    expire_lease(conn, ids[0]);

    let second = claim(conn, "w2").expect("recovery takes the expired lease");
    assert_eq!(second.operation.id, ids[0]);
    assert_eq!(second.operation.state, ApplyState::RunningDegraded);
    assert_eq!(
        second.operation.engine_state.as_deref(),
        Some(&b"copy\x03"[..]),
        "the new holder resumes from the last checkpoint"
    );
}

fn a_checkpoint_is_opaque_bytes_up_to_65535(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    let bytes: Vec<u8> = (0..65_535u32).map(|i| (i % 256) as u8).collect();
    leases::save_engine_state(conn, &held.lease, &bytes).unwrap();
    assert_eq!(
        row(conn, ids[0]).0.engine_state.as_deref(),
        Some(&bytes[..]),
        "every byte value, NUL and 0xff included, comes back as saved"
    );
    leases::save_engine_state(conn, &held.lease, b"").unwrap();
    assert_eq!(
        row(conn, ids[0]).0.engine_state.as_deref(),
        Some(&b""[..]),
        "an empty checkpoint replaces the last one and is not NULL"
    );
}

fn a_checkpoint_over_65535_bytes_is_rejected_and_nothing_written(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    leases::save_engine_state(conn, &held.lease, b"kept").unwrap();
    let err = leases::save_engine_state(conn, &held.lease, &vec![7; 65_536]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "engine_state",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid engine_state: is 65536 bytes long; at most 65535 fit"
    );
    assert_eq!(
        row(conn, ids[0]).0.engine_state.as_deref(),
        Some(&b"kept"[..])
    );
}

fn a_stalled_holder_cannot_overwrite_the_new_holders_checkpoint(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let stalled = claim(conn, "w1").unwrap();
    leases::save_engine_state(conn, &stalled.lease, b"old").unwrap();
    expire_lease(conn, ids[0]);
    let new = claim(conn, "w2").unwrap();
    leases::save_engine_state(conn, &new.lease, b"new").unwrap();
    assert!(matches!(
        leases::save_engine_state(conn, &stalled.lease, b"stale"),
        Err(StoreError::LeaseLost { operation_id }) if operation_id == ids[0]
    ));
    assert!(matches!(
        leases::set_external_id(conn, &stalled.lease, "job-stale"),
        Err(StoreError::LeaseLost { .. })
    ));
    let op = row(conn, ids[0]).0;
    assert_eq!(op.engine_state.as_deref(), Some(&b"new"[..]));
    assert_eq!(op.external_id, None);
}

fn an_external_id_finds_its_operation(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    assert_eq!(
        apply_operations::get_by_external_id(conn, "job-1").unwrap(),
        None
    );
    let held = claim(conn, "w").unwrap();
    leases::set_external_id(conn, &held.lease, "job-1").unwrap();
    leases::set_external_id(conn, &held.lease, "job-1").unwrap();
    let found = apply_operations::get_by_external_id(conn, "job-1")
        .unwrap()
        .expect("found by its external id");
    assert_eq!(found.id, ids[0]);
    assert_eq!(found.external_id.as_deref(), Some("job-1"));
    leases::set_external_id(conn, &held.lease, "job-2").unwrap();
    assert_eq!(
        apply_operations::get_by_external_id(conn, "job-1").unwrap(),
        None
    );
    assert_eq!(
        apply_operations::get_by_external_id(conn, "job-2")
            .unwrap()
            .map(|op| op.id),
        Some(ids[0])
    );
    assert_eq!(
        apply_operations::get_by_external_id(conn, "JOB-2").unwrap(),
        None,
        "compared exactly"
    );
}

fn an_external_id_belongs_to_one_operation(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 2, applyops::state::CutoverPolicy::Parallel, Halt);
    let a = claim(conn, "w").unwrap();
    let b = claim(conn, "w").unwrap();
    leases::set_external_id(conn, &a.lease, "job-7").unwrap();
    let err = leases::set_external_id(conn, &b.lease, "job-7").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::ExternalIdTaken { external_id, operation_id }
                if external_id == "job-7" && *operation_id == a.operation.id
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "external id \"job-7\" already belongs to apply operation {}",
            a.operation.id
        )
    );
    assert_eq!(
        row(conn, b.operation.id).0.external_id,
        None,
        "nothing written"
    );
    assert_eq!(ids.len(), 2);
}

fn a_bad_external_id_is_rejected_before_any_sql(db: &TestDb) {
    let conn = &mut db.conn();
    let (_, ids) = rollout(conn, 1, Rolling, Halt);
    let held = claim(conn, "w").unwrap();
    for bad in [String::new(), "x".repeat(256), "job ".to_owned()] {
        assert!(
            matches!(
                leases::set_external_id(conn, &held.lease, &bad),
                Err(StoreError::InvalidInput {
                    field: "external_id",
                    ..
                })
            ),
            "{bad:?}"
        );
        assert_eq!(
            apply_operations::get_by_external_id(conn, &bad).unwrap(),
            None
        );
    }
    leases::set_external_id(conn, &held.lease, &"x".repeat(255)).unwrap();
    assert_eq!(row(conn, ids[0]).0.external_id, Some("x".repeat(255)));
}
