//! Row ids as types of their own, so an apply id cannot be passed where an operation id is expected.
//!
//! Each is a transparent wrapper of the `BIGINT` primary key: Diesel binds and reads it as
//! [`BigInt`], serde writes it as a bare number, and `Display` prints the number.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::BigInt;
use serde::{Deserialize, Serialize};

/// Defines an id newtype over `i64` with Diesel `BigInt` mapping, transparent serde and `Display`.
macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident;)+) => {$(
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            PartialOrd,
            Ord,
            Hash,
            Serialize,
            Deserialize,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[serde(transparent)]
        #[diesel(sql_type = BigInt)]
        pub struct $name(pub i64);

        impl $name {
            /// The id as the database stores it.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIntError;

            /// Parses the decimal id, as `i64` does.
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                value.parse().map($name)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl<DB: Backend> ToSql<BigInt, DB> for $name
        where
            i64: ToSql<BigInt, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.0.to_sql(out)
            }
        }

        impl<DB: Backend> FromSql<BigInt, DB> for $name
        where
            i64: FromSql<BigInt, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                i64::from_sql(bytes).map($name)
            }
        }
    )+};
}

id_type! {
    /// `applies.id`.
    ApplyId;
    /// `apply_operations.id`.
    ApplyOperationId;
    /// `tasks.id`.
    TaskId;
    /// `apply_control_requests.id`.
    ControlRequestId;
}
