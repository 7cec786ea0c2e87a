//! The small vocabularies of the worker contract: rollout policies and control requests.
//!
//! Like [`ApplyState`](super::ApplyState), each is stored as its lowercase name in a `Text` column and
//! read and written by Diesel as the enum; input is parsed leniently about letter case ([`FromStr`]),
//! stored values exactly (`from_stored`). A row holding a value this version does not know is an error
//! to read (the raw rows in [`crate::models::raw`] still load it, for repair). The claims never take
//! a row with an unknown policy, and their gates name the permissive values only, so an unknown policy
//! would behave as the strictest one anyway; a pending request of an unknown kind holds starts back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that names no value of one of this module's vocabularies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {vocabulary} {value:?}")]
pub struct ParseVocabularyError {
    /// Which vocabulary was parsed (e.g. `"cutover policy"`).
    pub vocabulary: &'static str,
    /// The rejected input, verbatim.
    pub value: String,
}

/// Defines a stored-name enum with `ALL`, `as_str`, `Display`, lenient `FromStr` and string serde.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident, $label:literal {
            $($(#[$variant_meta:meta])* $variant:ident => $stored:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value whose stored name is exactly `value` (no other spelling), as rows are read:
            /// the queries compare exact names, so reading must too.
            pub fn from_stored(value: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|known| known.as_str() == value)
            }

            /// The lowercase name stored in the database and used in JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $stored,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseVocabularyError;

            /// Accepts the stored name in any letter case; nothing else.
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|known| known.as_str().eq_ignore_ascii_case(value))
                    .ok_or_else(|| ParseVocabularyError {
                        vocabulary: $label,
                        value: value.to_owned(),
                    })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                value.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

vocabulary! {
    /// How an operation's start waits for the operations of the same apply in earlier deployments
    /// (earlier by `(created_at, id)`). A row holding an unknown value is never claimed.
    CutoverPolicy, "cutover policy" {
        /// Start only once every earlier sibling is `completed`; cut over inside the copy claim.
        Rolling => "rolling",
        /// Start once every earlier sibling has reached the barrier (`waiting_for_cutover`,
        /// `cutting_over`, `revert_window` or `completed`); cut over through the cutover claim.
        Barrier => "barrier",
        /// Start without waiting for siblings; cut over through the cutover claim.
        Parallel => "parallel",
    }
}

impl Default for CutoverPolicy {
    /// [`CutoverPolicy::Rolling`], the column's default.
    fn default() -> Self {
        CutoverPolicy::Rolling
    }
}

vocabulary! {
    /// What a `failed` earlier sibling means for an operation's start (and automatic cutover). A
    /// row holding an unknown value is never claimed.
    FailurePolicy, "failure policy" {
        /// A failed earlier sibling blocks.
        Halt => "halt",
        /// A failed earlier sibling does not block.
        Continue => "continue",
        /// A failed earlier sibling blocks until a `release` recorded after that failure names this
        /// operation or its apply (a release counts only for the failures before it; a failed
        /// release does not count).
        Pause => "pause",
    }
}

impl Default for FailurePolicy {
    /// [`FailurePolicy::Halt`], the column's default.
    fn default() -> Self {
        FailurePolicy::Halt
    }
}

vocabulary! {
    /// What an operator asks of an apply, or of one of its operations.
    ControlRequestKind, "control request kind" {
        /// Resume `stopped` and `paused` operations: a never-started one goes back to `pending`, a
        /// started one is taken by the resume claim. Completes itself once none is left.
        Start => "start",
        /// Stop the operations of its scope that have not reached their cutover: at once those
        /// nobody drives, by their holder the others. Completes itself once every one is stopped or
        /// settled.
        Stop => "stop",
        /// Let through the failures so far for siblings under [`FailurePolicy::Pause`]. Carried out
        /// and completed when recorded.
        Release => "release",
        /// Cut over, for applies with `defer_cutover` (the operator-directed cutover claim).
        Cutover => "cutover",
        /// Cancel what a stop covers, and `stopped` and `paused` operations: they become
        /// `cancelled` and let their targets go.
        Cancel => "cancel",
        /// Revert an operation in `revert_window` (the cutover claim's revert arm).
        Revert => "revert",
        /// Close an operation's revert window early (`skipping_revert`, then `completed`).
        SkipRevert => "skip_revert",
        /// Retry a `failed` operation: it becomes `failed_retryable` with `attempt` 0. Carried out
        /// and completed when recorded.
        Retry => "retry",
    }
}

vocabulary! {
    /// Where a control request is in its life.
    ControlRequestStatus, "control request status" {
        /// Asked for and not yet acted on; at most one per (apply, operation or whole apply, kind).
        Pending => "pending",
        /// Acted on.
        Completed => "completed",
        /// Could not be acted on; carries a reason.
        Failed => "failed",
    }
}

vocabulary! {
    /// What a claim does with an operation once its lease is free, as the claim rules decided when
    /// the operation's apply was last written (stored in `apply_operations.copy_claim` for the copy
    /// claim and `cutover_claim` for the cutover claim; NULL: that claim never takes it). See
    /// [`super::decide`].
    ClaimAction, "claim action" {
        /// Start it: `pending` becomes `running`.
        Start => "start",
        /// Resume it: `stopped` or `paused` becomes `resuming`.
        Resume => "resume",
        /// Retry it: `failed_retryable` becomes `running` with the next attempt.
        Retry => "retry",
        /// Take it over from a holder whose lease lapsed, keeping its state.
        Recover => "recover",
        /// Cut it over: `waiting_for_cutover` becomes `cutting_over`.
        Cutover => "cutover",
        /// Revert it: `revert_window` becomes `reverting`.
        Revert => "revert",
        /// Skip its revert: `revert_window` becomes `skipping_revert`.
        SkipRevert => "skip_revert",
        /// Move it to `stopped` in place and take nothing (a pending stop covers it).
        Stop => "stop",
        /// Move it to `cancelled` in place and take nothing (a pending cancel covers it).
        Cancel => "cancel",
        /// Not decided yet: the row was written outside the store (by hand, or before the columns
        /// existed). The claim that meets it decides its apply's operations under the apply's lock
        /// first.
        Undecided => "undecided",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_stored_name() {
        for policy in CutoverPolicy::ALL {
            assert_eq!(policy.as_str().parse(), Ok(*policy));
        }
        for policy in FailurePolicy::ALL {
            assert_eq!(policy.as_str().parse(), Ok(*policy));
        }
        for kind in ControlRequestKind::ALL {
            assert_eq!(kind.as_str().parse(), Ok(*kind));
        }
        for status in ControlRequestStatus::ALL {
            assert_eq!(status.as_str().parse(), Ok(*status));
        }
    }

    #[test]
    fn parsing_ignores_case_and_rejects_anything_else_naming_the_vocabulary() {
        assert_eq!("BARRIER".parse(), Ok(CutoverPolicy::Barrier));
        let err = "barrier ".parse::<CutoverPolicy>().unwrap_err();
        assert_eq!(err.to_string(), "unknown cutover policy \"barrier \"");
        assert!("".parse::<FailurePolicy>().is_err());
        assert!("resume".parse::<ControlRequestKind>().is_err());
    }

    #[test]
    fn defaults_are_the_strictest_policies() {
        assert_eq!(CutoverPolicy::default(), CutoverPolicy::Rolling);
        assert_eq!(FailurePolicy::default(), FailurePolicy::Halt);
    }

    #[test]
    fn serde_uses_the_stored_names() {
        assert_eq!(
            serde_json::to_string(&ControlRequestKind::Cutover).unwrap(),
            "\"cutover\""
        );
        let read: FailurePolicy = serde_json::from_str("\"Pause\"").unwrap();
        assert_eq!(read, FailurePolicy::Pause);
    }
}
