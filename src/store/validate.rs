//! Input checks shared by the store modules, run before any SQL.

use std::time::Duration;

use crate::error::{StoreError, StoreResult};
use crate::models::OperationLease;

/// The longest lease a claim or heartbeat may take: a worker that holds an operation for longer must
/// heartbeat.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How many hex digits a minted token has: 128 bits.
pub(crate) const TOKEN_HEX_DIGITS: usize = 32;

/// `VARCHAR(255)` holds 255 characters (not bytes) under utf8mb4.
pub(crate) const MAX_VARCHAR_CHARS: usize = 255;

/// MySQL `TEXT` holds 65,535 bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 65_535;

/// A required short text: 1 to 255 characters.
pub(crate) fn required_varchar(field: &'static str, value: &str) -> StoreResult<()> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    optional_varchar(field, value)
}

/// An optional name: at most 255 characters (empty allowed), none of them a control character
/// ([`no_control_characters`]): identifiers, databases, environments, deployments, who asked, lease
/// owners, external ids, the names an operator reads to tell things apart.
pub(crate) fn optional_varchar(field: &'static str, value: &str) -> StoreResult<()> {
    short_text(field, value)?;
    no_control_characters(field, value, &[])
}

/// An optional detail in a short text column (an operation's target, a task's table): at most
/// 255 characters, tabs and line breaks allowed (stored verbatim, shown escaped), no other control
/// character.
pub(crate) fn optional_detail(field: &'static str, value: &str) -> StoreResult<()> {
    short_text(field, value)?;
    no_control_characters(field, value, &['\t', '\n', '\r'])
}

/// At most 255 characters.
fn short_text(field: &'static str, value: &str) -> StoreResult<()> {
    let chars = value.chars().count();
    if chars > MAX_VARCHAR_CHARS {
        return Err(StoreError::invalid(
            field,
            format!("is {chars} characters long; at most {MAX_VARCHAR_CHARS} fit"),
        ));
    }
    Ok(())
}

/// A required detail: 1 to 255 characters, as [`optional_detail`].
pub(crate) fn required_detail(field: &'static str, value: &str) -> StoreResult<()> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    optional_detail(field, value)
}

/// Refuses a control character (Unicode category Cc: C0 including NUL, DEL, C1) other than those in
/// `allowed`, naming the first one found and where: such characters are what terminal escape
/// sequences are made of, and PostgreSQL refuses NUL in text.
fn no_control_characters(field: &'static str, value: &str, allowed: &[char]) -> StoreResult<()> {
    match value
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && !allowed.contains(c))
    {
        None => Ok(()),
        Some((at, c)) => Err(StoreError::invalid(
            field,
            format!(
                "holds the control character U+{:04X} at character {}; {}",
                u32::from(c),
                at + 1,
                if allowed.is_empty() {
                    "a name holds none (C0, C1, DEL)"
                } else {
                    "only tabs and line breaks are allowed"
                }
            ),
        )),
    }
}

/// A name that identifies something to operators (a lease owner): 1 to 255 characters, not blank.
pub(crate) fn required_name(field: &'static str, value: &str) -> StoreResult<()> {
    required_varchar(field, value)?;
    if value.trim().is_empty() {
        return Err(StoreError::invalid(field, "must not be blank"));
    }
    Ok(())
}

/// True when `value` could be stored under a key column that [`key_varchar`] guards. A lookup by a
/// value that could not have been stored finds nothing, on every backend, without asking the database.
pub(crate) fn is_storable_key(value: &str) -> bool {
    key_varchar("key", value).is_ok()
}

/// A short text that is part of a unique key: 1 to 255 characters and no trailing space.
///
/// Every backend compares stored text exactly (SQLite's BINARY; on MySQL/MariaDB the NO PAD binary
/// collation the migrations set), so `"east"` and `"east "` would be two keys that look alike in every
/// listing; a trailing space is rejected so that cannot happen. Lookups apply the same rule
/// ([`is_storable_key`]).
pub(crate) fn key_varchar(field: &'static str, value: &str) -> StoreResult<()> {
    required_varchar(field, value)?;
    if value.ends_with(' ') {
        return Err(StoreError::invalid(
            field,
            "must not end with a space (it would look like the same key without it)",
        ));
    }
    Ok(())
}

/// A datetime a caller compares stored ones with: within [`MIN_DATETIME`](crate::schema_types::MIN_DATETIME)..=[`MAX_DATETIME`](crate::schema_types::MAX_DATETIME), what
/// a datetime column can hold on every backend.
pub(crate) fn datetime(field: &'static str, value: chrono::NaiveDateTime) -> StoreResult<()> {
    use crate::schema_types::{MAX_DATETIME, MIN_DATETIME};
    if (MIN_DATETIME..=MAX_DATETIME).contains(&value) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            field,
            format!("{value} is outside {MIN_DATETIME} to {MAX_DATETIME}, what the columns hold"),
        ))
    }
}

/// MySQL `BLOB` holds 65,535 bytes.
pub(crate) const MAX_BLOB_BYTES: usize = 65_535;

/// Opaque bytes stored in a `BLOB`: at most 65,535 of them (empty allowed).
pub(crate) fn blob(field: &'static str, value: &[u8]) -> StoreResult<()> {
    if value.len() > MAX_BLOB_BYTES {
        return Err(StoreError::invalid(
            field,
            format!(
                "is {} bytes long; at most {MAX_BLOB_BYTES} fit",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// What a long text may hold besides printable characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextKind {
    /// Written by a person (DDL, an operator's reason): tabs and line breaks, no other control
    /// character.
    Written,
    /// Quoted from elsewhere (an error message, a request's result): anything but NUL, which no
    /// backend keeps alike (PostgreSQL refuses it). Shown escaped by the CLI.
    Quoted,
}

/// A long text: at most 65,535 bytes of UTF-8 holding what `kind` allows; `required` also rejects
/// the empty string.
pub(crate) fn text(
    field: &'static str,
    value: &str,
    required: bool,
    kind: TextKind,
) -> StoreResult<()> {
    if required && value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(StoreError::invalid(
            field,
            format!(
                "is {} bytes long; at most {MAX_TEXT_BYTES} fit",
                value.len()
            ),
        ));
    }
    match kind {
        TextKind::Written => no_control_characters(field, value, &['\t', '\n', '\r']),
        TextKind::Quoted if value.contains('\0') => Err(StoreError::invalid(
            field,
            "holds NUL (U+0000), which no text column keeps",
        )),
        TextKind::Quoted => Ok(()),
    }
}

/// An apply's concurrency cap: `None` (unlimited) or 1 to 1,000.
pub(crate) fn max_concurrency(value: Option<i64>) -> StoreResult<()> {
    match value {
        Some(cap) if !(1..=1_000).contains(&cap) => Err(StoreError::invalid(
            "max_concurrency",
            format!("{cap} is outside 1..=1000 (leave it unset for no cap)"),
        )),
        _ => Ok(()),
    }
}

/// An apply's retry budget: 0 (no retries) to 1,000.
pub(crate) fn max_attempts(value: i32) -> StoreResult<()> {
    if (0..=1_000).contains(&value) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "max_attempts",
            format!("{value} is outside 0..=1000 (0 turns retries off)"),
        ))
    }
}

/// Fails closed before any SQL: only a lease whose token has the exact shape claims mint (32 lowercase
/// hex digits) and whose owner is a valid owner name can write. A blank token or owner could otherwise
/// match a row that nobody holds (whose token and owner are empty).
pub(crate) fn lease(lease: &OperationLease) -> StoreResult<()> {
    if !is_minted_token(lease.token.expose()) {
        return Err(StoreError::invalid(
            "lease.token",
            format!(
                "is not a token a claim mints ({TOKEN_HEX_DIGITS} lowercase hex digits); only a \
                 lease returned by a claim can write"
            ),
        ));
    }
    required_name("lease.owner", &lease.owner)?;
    lease_ttl(lease.ttl)
}

/// Rejects a TTL that is zero, longer than [`MAX_LEASE_TTL`], or finer than the microseconds stored.
/// A claim's scope: at most [`crate::models::MAX_SCOPE_DEPLOYMENTS`] deployments, each one an
/// operation could have, no name twice; an environment or database name that is not blank and
/// fits its column.
pub(crate) fn claim_scope(scope: &crate::models::ClaimScope) -> StoreResult<()> {
    let limit = crate::models::MAX_SCOPE_DEPLOYMENTS;
    if scope.deployments.len() > limit {
        return Err(StoreError::invalid(
            "scope.deployments",
            format!(
                "{} deployments; a scope lists at most {limit}",
                scope.deployments.len()
            ),
        ));
    }
    for (n, deployment) in scope.deployments.iter().enumerate() {
        key_varchar("scope.deployments", deployment)?;
        if scope.deployments[..n].contains(deployment) {
            return Err(StoreError::invalid(
                "scope.deployments",
                format!("{deployment:?} is listed twice"),
            ));
        }
    }
    if let Some(environment) = &scope.environment {
        required_varchar("scope.environment", environment)?;
    }
    if let Some(database_name) = &scope.database_name {
        required_varchar("scope.database_name", database_name)?;
    }
    Ok(())
}

pub(crate) fn lease_ttl(ttl: Duration) -> StoreResult<()> {
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

/// True for exactly the shape a claim mints: 32 lowercase hex digits.
pub(crate) fn is_minted_token(token: &str) -> bool {
    token.len() == TOKEN_HEX_DIGITS
        && token
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ApplyId, ApplyOperationId, LeaseToken};

    fn lease_with(token: &str, owner: &str) -> OperationLease {
        let at = chrono::DateTime::from_timestamp(0, 0).unwrap().naive_utc();
        OperationLease {
            operation_id: ApplyOperationId(1),
            apply_id: ApplyId(1),
            owner: owner.into(),
            token: LeaseToken::from(token.to_owned()),
            acquired_at: at,
            expires_at: at,
            ttl: Duration::from_secs(1),
        }
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
            assert!(
                matches!(
                    lease(&lease_with(token, "w")),
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
        let token = "0123456789abcdef0123456789abcdef";
        assert!(matches!(
            lease(&lease_with("", "w")),
            Err(StoreError::InvalidInput {
                field: "lease.token",
                ..
            })
        ));
        assert!(matches!(
            lease(&lease_with(token, "")),
            Err(StoreError::InvalidInput {
                field: "lease.owner",
                ..
            })
        ));
        assert!(lease(&lease_with(token, "w")).is_ok());
    }

    #[test]
    fn ttl_must_be_positive_and_at_most_a_day() {
        assert!(lease_ttl(Duration::ZERO).is_err());
        assert!(lease_ttl(Duration::from_nanos(999)).is_err());
        assert!(lease_ttl(Duration::from_micros(1)).is_ok());
        assert!(lease_ttl(MAX_LEASE_TTL).is_ok());
        assert!(lease_ttl(MAX_LEASE_TTL + Duration::from_micros(1)).is_err());
    }

    #[test]
    fn varchar_limits_count_characters_not_bytes() {
        assert!(required_varchar("f", &"é".repeat(255)).is_ok());
        assert!(required_varchar("f", &"é".repeat(256)).is_err());
        assert!(required_varchar("f", "").is_err());
        assert!(optional_varchar("f", "").is_ok());
    }

    #[test]
    fn key_text_rejects_a_trailing_space_and_control_characters() {
        assert!(key_varchar("f", " east").is_ok());
        // A trailing tab is a control character, refused in every name (it was a valid key once).
        assert!(key_varchar("f", "east\t").is_err());
        let err = key_varchar("deployment", "east ").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid deployment: must not end with a space"),
            "{err}"
        );
    }

    #[test]
    fn names_must_not_be_blank() {
        assert!(required_name("owner", "w-1").is_ok());
        assert!(required_name("owner", " w ").is_ok());
        for blank in ["", " ", "   ", "\t"] {
            assert!(required_name("owner", blank).is_err(), "{blank:?}");
        }
    }

    #[test]
    fn lookups_and_inserts_agree_on_what_a_key_can_be() {
        for value in ["east", " east", "é"] {
            assert!(is_storable_key(value));
            assert!(key_varchar("deployment", value).is_ok());
        }
        for value in ["", "east ", "east\t", &"x".repeat(256)] {
            assert!(!is_storable_key(value));
            assert!(key_varchar("deployment", value).is_err());
        }
    }

    #[test]
    fn names_refuse_every_control_character() {
        for bad in [
            "a\u{1b}[2J",
            "nul\0",
            "del\u{7f}",
            "c1\u{9b}31m",
            "tab\t",
            "line\n",
        ] {
            let err = required_varchar("deployment", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::InvalidInput {
                        field: "deployment",
                        ..
                    }
                ),
                "{bad:?}"
            );
            assert!(!is_storable_key(bad));
        }
        assert!(required_varchar("deployment", "eu-west-1 ünïcødé ✓").is_ok());
    }

    #[test]
    fn written_text_keeps_tabs_and_line_breaks_and_quoted_text_refuses_only_nul() {
        let ddl = "ALTER TABLE t\n\tADD c INT;\r\n";
        assert!(text("ddl", ddl, true, TextKind::Written).is_ok());
        for bad in ["a\u{1b}]0;title\u{7}", "nul\0", "\u{85}"] {
            assert!(
                text("ddl", bad, true, TextKind::Written).is_err(),
                "{bad:?}"
            );
        }
        assert!(text(
            "error_message",
            "\u{1b}[31mred\u{1b}[0m",
            true,
            TextKind::Quoted
        )
        .is_ok());
        assert!(text("error_message", "nul\0", true, TextKind::Quoted).is_err());
    }

    #[test]
    fn text_limit_counts_bytes() {
        let written = TextKind::Written;
        assert!(text("f", &"a".repeat(MAX_TEXT_BYTES), true, written).is_ok());
        assert!(text("f", &"a".repeat(MAX_TEXT_BYTES + 1), true, written).is_err());
        // 21,846 three-byte characters are 65,538 bytes.
        assert!(text("f", &"€".repeat(21_846), true, written).is_err());
        assert!(text("f", "", false, written).is_ok());
        assert!(text("f", "", true, written).is_err());
    }
}
