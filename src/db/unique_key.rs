//! Telling which unique key a duplicate-key error violated: Diesel reports no constraint name on MySQL
//! or SQLite, so the server's message is read, with the parser of the backend that produced it; on
//! PostgreSQL the error carries the constraint's name and table.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

#[cfg(feature = "mysql")]
use super::mysql;
#[cfg(feature = "postgres")]
use super::postgres;
#[cfg(feature = "sqlite")]
use super::sqlite;
use super::DbConnection;

/// The identity of a unique key, as the store declares it, so that a duplicate-key error can be
/// attributed to exactly this key and no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UniqueKey {
    /// The table the key is on.
    pub table: &'static str,
    /// The index name (the same on both backends).
    pub name: &'static str,
    /// The key's columns, in order.
    pub columns: &'static [&'static str],
}

/// A unique key as a backend names it in its duplicate-key message.
///
/// Both forms exist in every build, so [`UniqueKey`] keeps one shape: a build without a backend never
/// produces that backend's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ViolatedKey {
    /// MySQL/MariaDB name the index, MySQL 8.0.19+ prefixed with its table; PostgreSQL names the
    /// constraint and its table.
    #[cfg_attr(not(any(feature = "mysql", feature = "postgres")), allow(dead_code))]
    Named {
        /// The table, when the server names it.
        table: Option<String>,
        /// The index name.
        name: String,
    },
    /// SQLite names the columns, each as `table.column`.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Columns {
        /// `(table, column)` pairs in key order.
        columns: Vec<(String, String)>,
    },
}

impl UniqueKey {
    /// True when `violated` is this key.
    pub fn matches(&self, violated: &ViolatedKey) -> bool {
        match violated {
            ViolatedKey::Named { table, name } => {
                name == self.name && table.as_deref().is_none_or(|table| table == self.table)
            }
            ViolatedKey::Columns { columns } => {
                columns.len() == self.columns.len()
                    && columns
                        .iter()
                        .zip(self.columns)
                        .all(|((table, column), expected)| {
                            table == self.table && column == expected
                        })
            }
        }
    }
}

/// True when `err` is a unique violation of `key` (and of no other key).
///
/// Diesel reports no constraint name on MySQL or SQLite, so the server's message is read, with the
/// parser of the backend that produced it.
pub(crate) fn is_unique_violation_of(
    conn: &DbConnection,
    err: &DieselError,
    key: &UniqueKey,
) -> bool {
    matches!(violated(conn, err), Some(Some(violated)) if key.matches(&violated))
}

/// True when `err` is a unique violation whose message names no key this build can read: the
/// session's `lc_messages` was changed after connecting (a caller's own SQL), so the server answers
/// in another language. The error code still says it is a duplicate; the caller confirms which key
/// with a lookup, as it would for SQLite's single reported key.
pub(crate) fn is_unreadable_unique_violation(conn: &DbConnection, err: &DieselError) -> bool {
    matches!(violated(conn, err), Some(None))
}

/// For a unique violation, the key its message names (`None` when it names none this build can
/// read); `None` for any other error.
fn violated(conn: &DbConnection, err: &DieselError) -> Option<Option<ViolatedKey>> {
    let DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) = err else {
        return None;
    };
    Some(match conn {
        #[cfg(feature = "mysql")]
        DbConnection::Mysql(_) => mysql::violated_key(info.message()),
        #[cfg(feature = "postgres")]
        DbConnection::Pg(_) => postgres::violated_key(info.as_ref()),
        #[cfg(feature = "sqlite")]
        DbConnection::Sqlite(_) => sqlite::violated_key(info.message()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: UniqueKey = UniqueKey {
        table: "apply_operations",
        name: "apply_operations_apply_id_deployment_key",
        columns: &["apply_id", "deployment"],
    };

    #[test]
    fn a_named_key_matches_with_or_without_its_table() {
        let bare = ViolatedKey::Named {
            table: None,
            name: KEY.name.into(),
        };
        let qualified = ViolatedKey::Named {
            table: Some("apply_operations".into()),
            name: KEY.name.into(),
        };
        assert!(KEY.matches(&bare));
        assert!(KEY.matches(&qualified));
    }

    #[test]
    fn another_key_or_table_does_not_match() {
        let other_name = ViolatedKey::Named {
            table: None,
            name: "PRIMARY".into(),
        };
        let other_table = ViolatedKey::Named {
            table: Some("tasks".into()),
            name: KEY.name.into(),
        };
        assert!(!KEY.matches(&other_name));
        assert!(!KEY.matches(&other_table));
    }

    #[test]
    fn sqlite_columns_must_match_exactly_and_in_order() {
        let cols = |pairs: &[(&str, &str)]| ViolatedKey::Columns {
            columns: pairs
                .iter()
                .map(|(t, c)| (t.to_string(), c.to_string()))
                .collect(),
        };
        assert!(KEY.matches(&cols(&[
            ("apply_operations", "apply_id"),
            ("apply_operations", "deployment")
        ])));
        assert!(!KEY.matches(&cols(&[
            ("apply_operations", "deployment"),
            ("apply_operations", "apply_id")
        ])));
        assert!(!KEY.matches(&cols(&[("apply_operations", "apply_id")])));
        assert!(!KEY.matches(&cols(&[("tasks", "apply_id"), ("tasks", "deployment")])));
    }
}
