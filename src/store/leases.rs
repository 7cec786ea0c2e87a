//! Leases: how a worker holds the operation it claimed, and the guarded writes it drives it with.
//!
//! A claim ([`super::claims`]) stamps the row with a fresh random token, the owner's name and an expiry
//! taken from the database's clock, and returns them as an [`OperationLease`]. Every write in this
//! module acts only while the row still carries that token and owner: the token is the fence. Once
//! another worker claims the row (after the lease expired, or after [`release`]), every write through
//! the old lease is [`StoreError::LeaseLost`] and changes nothing. A lease past its expiry that nobody
//! has claimed yet still writes. Repeating a write under the current lease is idempotent.
//!
//! Each write is one UPDATE; only when it matches nothing does a second statement tell a missing row
//! ([`StoreError::ApplyOperationNotFound`]) from a lost lease.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::apply_operations::{self, Writer};
use super::validate;
use crate::db::{self, DbConnection};
use crate::error::{StoreError, StoreResult};
use crate::schema::apply_operations as ops;
use crate::state::ApplyState;

/// The longest lease a claim or heartbeat may take: a worker that holds an operation for longer must
/// heartbeat.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A worker's hold on one operation, returned by a claim. Pass it to every write.
///
/// The token is a secret in the sense that holding it is what entitles a worker to write the row:
/// it is minted from the operating system's random source (128 bits) on every claim, steal and resume,
/// and is not part of [`ApplyOperation`](crate::models::ApplyOperation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLease {
    /// The operation held.
    pub operation_id: i64,
    /// Its apply.
    pub apply_id: i64,
    /// The claiming worker's name, as given to the claim.
    pub owner: String,
    /// The fencing token (32 hex digits).
    pub token: String,
    /// When the lease was taken (UTC, the database's clock).
    pub acquired_at: NaiveDateTime,
    /// When the lease expires unless renewed by [`heartbeat`] (UTC, the database's clock).
    pub expires_at: NaiveDateTime,
    /// How far each [`heartbeat`] pushes the expiry: the TTL the claim was made with.
    pub ttl: Duration,
}

impl OperationLease {
    /// Fails closed before any SQL: only a lease whose token has the exact shape claims mint (32
    /// lowercase hex digits) and whose owner is a valid owner name can write. A blank token or owner
    /// could otherwise match a row that nobody holds (whose token and owner are empty).
    pub(super) fn check(&self) -> StoreResult<()> {
        if !is_minted_token(&self.token) {
            return Err(StoreError::invalid(
                "lease.token",
                format!(
                    "is not a token a claim mints ({TOKEN_HEX_DIGITS} lowercase hex digits); only a \
                     lease returned by a claim can write"
                ),
            ));
        }
        validate::required_name("lease.owner", &self.owner)?;
        check_ttl(self.ttl)
    }
}

/// Rejects a TTL that is zero, longer than [`MAX_LEASE_TTL`], or finer than the microseconds stored.
pub(super) fn check_ttl(ttl: Duration) -> StoreResult<()> {
    if ttl < Duration::from_micros(1) {
        return Err(StoreError::invalid(
            "lease_ttl",
            "must be at least one microsecond",
        ));
    }
    if ttl > MAX_LEASE_TTL {
        return Err(StoreError::invalid(
            "lease_ttl",
            format!("must be at most {} s", MAX_LEASE_TTL.as_secs()),
        ));
    }
    Ok(())
}

/// `now + ttl`, at the microseconds both backends store.
pub(super) fn expiry(now: NaiveDateTime, ttl: Duration) -> NaiveDateTime {
    let micros = i64::try_from(ttl.as_micros()).expect("ttl is checked to be at most a day");
    now + chrono::Duration::microseconds(micros)
}

/// How many hex digits a minted token has: 128 bits.
const TOKEN_HEX_DIGITS: usize = 32;

/// True for exactly the shape [`mint_token`] produces: 32 lowercase hex digits.
fn is_minted_token(token: &str) -> bool {
    token.len() == TOKEN_HEX_DIGITS
        && token
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// A new fencing token: 128 bits from the operating system's random source, as 32 lowercase hex digits.
pub(super) fn mint_token() -> StoreResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| StoreError::Random(err.to_string()))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Moves the held operation to `state` (not a completing state); see
/// [`apply_operations::update_state`] for the rules.
pub fn update_state(
    conn: &mut DbConnection,
    lease: &OperationLease,
    state: ApplyState,
) -> StoreResult<()> {
    apply_operations::write_state(conn, Writer::Lease(lease), state)
}

/// Moves the held operation to `running`, stamping `started_at` the first time only.
pub fn mark_started(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    apply_operations::write_started(conn, Writer::Lease(lease))
}

/// Moves the held operation to `completed`, stamping `completed_at` the first time only. The lease
/// stays on the row, so a repeat under it succeeds; a completed row is never claimed again.
pub fn mark_completed(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    apply_operations::write_completion(conn, Writer::Lease(lease), ApplyState::Completed, None)
}

/// Moves the held operation to `failed` with `message` (1 to 65,535 bytes).
pub fn mark_failed(
    conn: &mut DbConnection,
    lease: &OperationLease,
    message: &str,
) -> StoreResult<()> {
    apply_operations::write_failed(conn, Writer::Lease(lease), message)
}

/// Moves the held operation to `cancelled`, `reverted` or `completed`; see
/// [`apply_operations::mark_terminal`].
pub fn mark_terminal(
    conn: &mut DbConnection,
    lease: &OperationLease,
    state: ApplyState,
) -> StoreResult<()> {
    apply_operations::write_terminal(conn, Writer::Lease(lease), state)
}

/// Renews the lease: its expiry becomes the database's now plus the lease's TTL, "now" being read when
/// the row is written (after any wait for a lock), so the new expiry is never already past. Updates
/// `lease.expires_at` and returns the new expiry as stored. [`StoreError::LeaseLost`] once another
/// worker has claimed the row. Two statements on MySQL (the UPDATE, then reading the expiry back).
pub fn heartbeat(
    conn: &mut DbConnection,
    lease: &mut OperationLease,
) -> StoreResult<NaiveDateTime> {
    lease.check()?;
    let ttl_micros =
        i64::try_from(lease.ttl.as_micros()).expect("ttl is checked to be at most a day");
    let expires_at = db::serialized_write(conn, |conn| {
        let writer = Writer::Lease(lease);
        let matched = writer
            .update()
            .set(ops::lease_expires_at.eq(db::now_when_read_plus(ttl_micros).nullable()))
            .execute(conn)?;
        writer.expect_row(conn, matched)?;
        let stored: Option<Option<NaiveDateTime>> =
            held_row(lease.operation_id, lease.token.clone(), lease.owner.clone())
                .select(ops::lease_expires_at)
                .first(conn)
                .optional()?;
        match stored {
            Some(Some(expires_at)) => Ok(expires_at),
            // Claimed away between the two statements (MySQL; impossible while SQLite's lock is held).
            _ => Err(StoreError::LeaseLost {
                operation_id: lease.operation_id,
            }),
        }
    })?;
    lease.expires_at = expires_at;
    Ok(expires_at)
}

/// True while operation `lease.operation_id` still carries the lease (its token and owner). One
/// SELECT. For a caller whose write through the lease failed with an unknown outcome (the connection
/// died after sending it): on a new connection, this tells whether the lease is still held.
pub fn is_held(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<bool> {
    lease.check()?;
    Ok(
        held_row(lease.operation_id, lease.token.clone(), lease.owner.clone())
            .select(ops::id)
            .first::<i64>(conn)
            .optional()?
            .is_some(),
    )
}

/// The operation row while it carries this token and owner.
#[diesel::dsl::auto_type]
fn held_row(operation_id: i64, token: String, owner: String) -> _ {
    ops::table
        .find(operation_id)
        .filter(ops::lease_token.eq(token))
        .filter(ops::lease_owner.eq(owner))
}

/// Gives the operation up: clears owner, token and expiry, keeping the state, so any worker can claim
/// it at once (as recovery, resume or retry, whichever its state calls for). The lease is spent: a
/// second release, like any other write through it, is [`StoreError::LeaseLost`].
pub fn release(conn: &mut DbConnection, lease: &OperationLease) -> StoreResult<()> {
    lease.check()?;
    let writer = Writer::Lease(lease);
    let matched = writer
        .update()
        .set((
            ops::lease_owner.eq(""),
            ops::lease_token.eq(""),
            ops::lease_acquired_at.eq(None::<NaiveDateTime>),
            ops::lease_expires_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    writer.expect_row(conn, matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> OperationLease {
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        OperationLease {
            operation_id: 1,
            apply_id: 1,
            owner: "w".into(),
            token: "0123456789abcdef0123456789abcdef".into(),
            acquired_at: at,
            expires_at: at,
            ttl: Duration::from_secs(1),
        }
    }

    #[test]
    fn tokens_are_32_hex_digits_and_differ() {
        let a = mint_token().unwrap();
        let b = mint_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(is_minted_token(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_token_not_shaped_as_minted_fails_closed() {
        for token in [
            "",
            " ",
            "                                ",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef ",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdeg",
        ] {
            let lease = OperationLease {
                token: token.into(),
                ..lease()
            };
            assert!(
                matches!(
                    lease.check(),
                    Err(StoreError::InvalidInput {
                        field: "lease.token",
                        ..
                    })
                ),
                "{token:?}"
            );
        }
    }

    #[test]
    fn an_empty_token_or_owner_fails_closed() {
        let empty_token = OperationLease {
            token: String::new(),
            ..lease()
        };
        let empty_owner = OperationLease {
            owner: String::new(),
            ..lease()
        };
        assert!(matches!(
            empty_token.check(),
            Err(StoreError::InvalidInput {
                field: "lease.token",
                ..
            })
        ));
        assert!(matches!(
            empty_owner.check(),
            Err(StoreError::InvalidInput {
                field: "lease.owner",
                ..
            })
        ));
        assert!(lease().check().is_ok());
    }

    #[test]
    fn ttl_must_be_positive_and_at_most_a_day() {
        assert!(check_ttl(Duration::ZERO).is_err());
        assert!(check_ttl(Duration::from_nanos(999)).is_err());
        assert!(check_ttl(Duration::from_micros(1)).is_ok());
        assert!(check_ttl(MAX_LEASE_TTL).is_ok());
        assert!(check_ttl(MAX_LEASE_TTL + Duration::from_micros(1)).is_err());
    }

    #[test]
    fn expiry_adds_the_ttl_at_microsecond_precision() {
        let at = chrono::DateTime::from_timestamp(100, 0)
            .unwrap()
            .naive_utc();
        let later = expiry(at, Duration::from_nanos(2_500_900));
        assert_eq!(later - at, chrono::Duration::microseconds(2_500));
    }
}
