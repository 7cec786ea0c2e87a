//! `applyops create --file`: a rollout read from a TOML or JSON file, refused (before the database is
//! opened) when it does not parse, naming the line and, for a misspelt field, the closest known one.
//! The rollout types deny unknown fields, so `max_concurency = 1` is an error, not an apply with no
//! cap.

use std::path::Path;

use applyops::models::NewRollout;

use super::text::{sanitized, shown};
use super::Failure;

/// The formats a rollout file is read in, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

/// The rollout in `file`: TOML for a `.toml` name, JSON for a `.json` one (any letter case).
pub fn read(file: &Path) -> Result<NewRollout, Failure> {
    let name = shown(&file.display().to_string()).into_owned();
    let extension = file
        .extension()
        .map(|ext| ext.to_string_lossy().to_ascii_lowercase());
    let format = match extension.as_deref() {
        Some("toml") => Format::Toml,
        Some("json") => Format::Json,
        _ => {
            return Err(Failure::Refused(format!(
                "{name}: a rollout file is TOML or JSON, told by its extension: use .toml or \
                 .json; nothing was created"
            )))
        }
    };
    let text = std::fs::read_to_string(file).map_err(|err| {
        Failure::Refused(format!("cannot read {name}: {err}; nothing was created"))
    })?;
    let (message, line) = match format {
        Format::Toml => match toml::from_str(&text) {
            Ok(rollout) => return Ok(rollout),
            Err(err) => (
                err.message().trim_end().to_owned(),
                err.span().map(|span| line_of(&text, span.start)),
            ),
        },
        Format::Json => match serde_json::from_str(&text) {
            Ok(rollout) => return Ok(rollout),
            Err(err) => {
                // serde_json's message ends with " at line L column C" when it knows where.
                let full = err.to_string();
                let position = format!(" at line {} column {}", err.line(), err.column());
                let message = full.strip_suffix(&position).unwrap_or(&full).to_owned();
                (message, (err.line() > 0).then_some(err.line()))
            }
        },
    };
    let at = line.map_or_else(String::new, |line| format!(" at line {line}"));
    let what = match unknown_field(&message) {
        Some(unknown) => unknown.sentence(&at),
        // Values in serde's messages are quoted with `{:?}`, so already escaped.
        None => format!("{}{at}", sanitized(&message)),
    };
    Err(Failure::Refused(format!(
        "{name} is not a valid rollout: {what}; nothing was created"
    )))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// A field the rollout types do not have, and those they do at that place.
#[derive(Debug, PartialEq, Eq)]
struct UnknownField {
    field: String,
    known: Vec<String>,
}

impl UnknownField {
    /// The closest known field, when one is close enough to be a misspelling of `field`: the most
    /// similar by Damerau-Levenshtein distance (typos, missing, doubled or swapped letters),
    /// normalised by length, if at least 0.6 (one edit in three characters, `dll` for `ddl`).
    fn closest(&self) -> Option<&str> {
        self.known
            .iter()
            .map(|known| {
                let similarity = strsim::normalized_damerau_levenshtein(&self.field, known);
                (similarity, known)
            })
            .filter(|(similarity, _)| *similarity >= 0.6)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, known)| known.as_str())
    }

    /// The sentence: the field, where it is, and the closest known field or all of them.
    fn sentence(&self, at: &str) -> String {
        let field = shown(&self.field);
        match self.closest() {
            Some(closest) => format!("unknown field `{field}`{at}; did you mean `{closest}`?"),
            None if self.known.is_empty() => format!("unknown field `{field}`{at}"),
            None => format!(
                "unknown field `{field}`{at}; the fields here are {}",
                self.known
                    .iter()
                    .map(|known| format!("`{known}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Reads serde's message for an unknown field of a struct that denies them: ``unknown field `x`,
/// expected one of `a`, `b` `` (or ``expected `a` ``, or ``there are no fields``).
fn unknown_field(message: &str) -> Option<UnknownField> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let known = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some(UnknownField {
        field: field.to_owned(),
        known,
    })
}

/// The fields a rollout file may have, at each level (the rollout, an operation, a task), as the
/// parser knows them: serde's own list, read from its answer to a field no level has (the list
/// [`UnknownField`] suggests from).
#[cfg(test)]
pub fn known_fields() -> Vec<(&'static str, Vec<String>)> {
    [
        ("rollout", r#"{"\u0000": 0}"#),
        ("operations", r#"{"operations": [{"\u0000": 0}]}"#),
        ("tasks", r#"{"operations": [{"tasks": [{"\u0000": 0}]}]}"#),
    ]
    .into_iter()
    .map(|(level, probe)| {
        let err = serde_json::from_str::<NewRollout>(probe).expect_err("no field is NUL");
        let message = err.to_string();
        let unknown = unknown_field(&message).unwrap_or_else(|| panic!("{message}"));
        (level, unknown.known)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_has_its_fields() {
        let fields = known_fields();
        assert!(
            fields[0].1.contains(&"max_concurrency".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields[1].1.contains(&"cutover_policy".to_owned()),
            "{fields:?}"
        );
        assert_eq!(fields[2].1, ["table_name", "ddl"], "{fields:?}");
    }

    #[test]
    fn serdes_unknown_field_message_is_read() {
        let read = unknown_field(
            "unknown field `max_concurency`, expected one of `apply_identifier`, `max_concurrency`",
        )
        .unwrap();
        assert_eq!(read.field, "max_concurency");
        assert_eq!(read.known, ["apply_identifier", "max_concurrency"]);
        assert_eq!(read.closest(), Some("max_concurrency"));
        let one = unknown_field("unknown field `dl`, expected `ddl`").unwrap();
        assert_eq!(one.known, ["ddl"]);
        assert!(unknown_field("missing field `requested_by`").is_none());
    }

    #[test]
    fn a_field_like_none_of_the_known_ones_lists_them() {
        let read = UnknownField {
            field: "colour".into(),
            known: vec!["deployment".into(), "target".into()],
        };
        assert_eq!(read.closest(), None);
        assert_eq!(
            read.sentence(" at line 3"),
            "unknown field `colour` at line 3; the fields here are `deployment`, `target`"
        );
    }

    #[test]
    fn lines_are_counted_from_one() {
        let text = "a = 1\nb = 2\n\nc = 3";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 6), 2, "the start of a line is on it");
        assert_eq!(line_of(text, 13), 4);
        assert_eq!(line_of(text, 1_000), 4);
    }
}
