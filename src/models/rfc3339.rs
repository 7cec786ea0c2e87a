//! Serde for the models' timestamps: RFC 3339 in UTC with a `Z`, such as `2026-11-25T13:04:05.123456Z`.
//!
//! The columns hold UTC without a zone (`chrono::NaiveDateTime`); serialised bare, they would read as
//! local time. Six fractional digits (the columns' precision), nine when a value has nanoseconds.
//! Deserialising takes any RFC 3339 timestamp and converts it to UTC, so serialised rows read back
//! unchanged.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Timelike};
use serde::{Deserialize, Deserializer, Serializer};

/// `value` (UTC) as RFC 3339 with `Z`.
fn format(value: &NaiveDateTime) -> String {
    let digits = if value.nanosecond() % 1_000 == 0 {
        SecondsFormat::Micros
    } else {
        SecondsFormat::Nanos
    };
    value.and_utc().to_rfc3339_opts(digits, true)
}

/// An RFC 3339 timestamp, in any offset, as UTC.
fn parse<E: serde::de::Error>(text: &str) -> Result<NaiveDateTime, E> {
    DateTime::parse_from_rfc3339(text)
        .map(|value| value.naive_utc())
        .map_err(|err| E::custom(format_args!("invalid RFC 3339 timestamp {text:?}: {err}")))
}

/// Serialises a UTC timestamp (`#[serde(with = "rfc3339")]`).
pub(super) fn serialize<S: Serializer>(
    value: &NaiveDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(value))
}

/// Deserialises a UTC timestamp (`#[serde(with = "rfc3339")]`).
pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<NaiveDateTime, D::Error> {
    parse(&String::deserialize(deserializer)?)
}

/// The same for optional timestamps (`#[serde(default, with = "rfc3339::option")]`): `None` is `null`.
pub(super) mod option {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises an optional UTC timestamp.
    pub(in crate::models) fn serialize<S: Serializer>(
        value: &Option<NaiveDateTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => serializer.serialize_some(&super::format(value)),
            None => serializer.serialize_none(),
        }
    }

    /// Deserialises an optional UTC timestamp.
    pub(in crate::models) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<NaiveDateTime>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Row {
        #[serde(with = "super")]
        at: chrono::NaiveDateTime,
        #[serde(default, with = "super::option")]
        maybe: Option<chrono::NaiveDateTime>,
    }

    fn at(micros: u32) -> chrono::NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_micro_opt(13, 4, 5, micros)
            .unwrap()
    }

    #[test]
    fn utc_with_z_and_microseconds_both_ways() {
        let row = Row {
            at: at(123_456),
            maybe: Some(at(0)),
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-11-25T13:04:05.123456Z","maybe":"2026-11-25T13:04:05.000000Z"}"#
        );
        assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), row);
    }

    #[test]
    fn none_is_null_or_absent() {
        let row = Row {
            at: at(1),
            maybe: None,
        };
        let json = serde_json::to_string(&row).unwrap();
        assert_eq!(json, r#"{"at":"2026-11-25T13:04:05.000001Z","maybe":null}"#);
        assert_eq!(serde_json::from_str::<Row>(&json).unwrap(), row);
        let absent: Row = serde_json::from_str(r#"{"at":"2026-11-25T13:04:05.000001Z"}"#).unwrap();
        assert_eq!(absent, row);
    }

    #[test]
    fn nanoseconds_are_kept_and_offsets_are_converted_to_utc() {
        let precise = NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_nano_opt(13, 4, 5, 123_456_789)
            .unwrap();
        assert_eq!(super::format(&precise), "2026-11-25T13:04:05.123456789Z");
        let row: Row =
            serde_json::from_str(r#"{"at":"2026-11-25T15:04:05.123456+02:00"}"#).unwrap();
        assert_eq!(row.at, at(123_456));
    }

    #[test]
    fn a_timestamp_without_a_zone_is_rejected() {
        let err =
            serde_json::from_str::<Row>(r#"{"at":"2026-11-25T13:04:05.123456"}"#).unwrap_err();
        assert!(
            err.to_string().contains("invalid RFC 3339 timestamp"),
            "{err}"
        );
    }
}
