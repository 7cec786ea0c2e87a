//! A worker's hold on one operation: what a claim returns and every leased write is fenced by.

use std::fmt;
use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;
use serde::{Deserialize, Serialize};

use super::{ApplyId, ApplyOperationId};

/// The fencing token of a lease: holding it is what entitles a worker to write the operation's row.
///
/// A secret: its `Debug` and `Display` print `***`, never the value, so a lease can be logged.
/// [`expose`](LeaseToken::expose) reads it where it must be compared or stored; serde writes it as a
/// plain string, so a lease can be handed to another process.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, diesel::expression::AsExpression)]
#[serde(transparent)]
#[diesel(sql_type = Text)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// The token's text. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for LeaseToken {
    /// Wraps a token, for instance one read back from where a worker saved its lease. Only a token a
    /// claim minted can write; any other is rejected before SQL runs.
    fn from(token: String) -> Self {
        LeaseToken(token)
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(***)")
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<DB: Backend> ToSql<Text, DB> for LeaseToken
where
    str: ToSql<Text, DB>,
{
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
        self.0.as_str().to_sql(out)
    }
}

/// A worker's hold on one operation, returned by a claim. Pass it to every write.
///
/// The token is minted from the operating system's random source (128 bits) on every claim, steal and
/// resume, and is not part of [`ApplyOperation`](super::ApplyOperation), so a listing cannot be turned
/// into a lease. `Debug` shows everything but the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationLease {
    /// The operation held.
    pub operation_id: ApplyOperationId,
    /// Its apply.
    pub apply_id: ApplyId,
    /// The claiming worker's name, as given to the claim.
    pub owner: String,
    /// The fencing token (32 lowercase hex digits).
    pub token: LeaseToken,
    /// When the lease was taken (UTC, the database's clock).
    pub acquired_at: NaiveDateTime,
    /// When the lease expires unless renewed by a heartbeat (UTC, the database's clock).
    pub expires_at: NaiveDateTime,
    /// How far each heartbeat pushes the expiry: the TTL the claim was made with.
    pub ttl: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_print_the_token() {
        let token = LeaseToken::from("0123456789abcdef0123456789abcdef".to_owned());
        assert_eq!(format!("{token:?}"), "LeaseToken(***)");
        assert_eq!(token.to_string(), "***");
        assert_eq!(token.expose(), "0123456789abcdef0123456789abcdef");
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        let lease = OperationLease {
            operation_id: ApplyOperationId(1),
            apply_id: ApplyId(2),
            owner: "w".into(),
            token,
            acquired_at: at,
            expires_at: at,
            ttl: Duration::from_secs(1),
        };
        let debug = format!("{lease:?}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("owner: \"w\""), "{debug}");
    }

    #[test]
    fn serde_keeps_the_token_so_a_lease_can_be_handed_on() {
        let token = LeaseToken::from("00ff".to_owned());
        let json = serde_json::to_string(&token).unwrap();
        assert_eq!(json, "\"00ff\"");
        assert_eq!(serde_json::from_str::<LeaseToken>(&json).unwrap(), token);
    }
}

/// A lease some worker holds now, as [`leases::live`](crate::store::leases::live) lists them for
/// operators. Carries no token: a listing never hands out the right to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveLease {
    /// The held operation.
    pub operation_id: ApplyOperationId,
    /// Its apply.
    pub apply_id: ApplyId,
    /// Its deployment.
    pub deployment: String,
    /// Its state.
    pub state: crate::state::ApplyState,
    /// The holder (the claim's `owner`).
    pub owner: String,
    /// When the holder's claim took it (UTC).
    #[serde(default, with = "super::rfc3339::option")]
    pub acquired_at: Option<NaiveDateTime>,
    /// When it expires unless renewed (UTC).
    #[serde(with = "super::rfc3339")]
    pub expires_at: NaiveDateTime,
    /// The database's time when it was listed (UTC): `expires_at` minus this is how long is left.
    #[serde(with = "super::rfc3339")]
    pub read_at: NaiveDateTime,
}

impl LiveLease {
    /// How long the lease has left as of [`LiveLease::read_at`] (zero once it has expired).
    pub fn expires_in(&self) -> Duration {
        (self.expires_at - self.read_at)
            .to_std()
            .unwrap_or_default()
    }
}
