//! How the vocabularies are stored: as their exact names in `Text` columns, through Diesel's
//! [`ToSql`] and [`FromSql`] on every backend (and on the `MultiBackend` of
//! [`DbConnection`](crate::DbConnection)).
//!
//! Writing binds [`as_str`](super::ApplyState::as_str). Reading accepts exactly a stored name
//! (`from_stored`); anything else is an [`UnknownStoredValue`] deserialization error, never a default.
//! The models turn it into a [`StoreError`](crate::StoreError) that names the table, the column, the
//! value and the row.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use super::{
    ApplyState, ClaimAction, ControlRequestKind, ControlRequestStatus, CutoverPolicy, FailurePolicy,
};

/// A stored value that names nothing in its vocabulary: what reading one produces, as the source of
/// Diesel's `DeserializationError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stored {vocabulary} {value:?}")]
pub struct UnknownStoredValue {
    /// The vocabulary read (`"apply state"`, `"cutover policy"`, …).
    pub vocabulary: &'static str,
    /// The stored value, verbatim.
    pub value: String,
}

/// Implements `ToSql<Text>` and `FromSql<Text>` for each vocabulary, on every backend.
macro_rules! stored_as_text {
    ($($vocabulary:ty => $label:literal,)+) => {$(
        impl<DB: Backend> ToSql<Text, DB> for $vocabulary
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.as_str().to_sql(out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $vocabulary
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                let value = String::from_sql(bytes)?;
                <$vocabulary>::from_stored(&value).ok_or_else(|| {
                    Box::new(UnknownStoredValue {
                        vocabulary: $label,
                        value,
                    })
                    .into()
                })
            }
        }
    )+};
}

stored_as_text! {
    ApplyState => "apply state",
    CutoverPolicy => "cutover policy",
    FailurePolicy => "failure policy",
    ControlRequestKind => "control request kind",
    ControlRequestStatus => "control request status",
    ClaimAction => "claim action",
}
