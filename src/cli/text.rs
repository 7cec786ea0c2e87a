//! Stored text on an operator's terminal: every name, reason, error and owner the command line shows
//! comes from rows that anyone (an older version, another tool, a rollout file, `$HOSTNAME`) may have
//! filled with terminal control sequences. Shown raw, `\e[2J` clears the screen, `\e]0;…\a` sets
//! the window title and a newline draws a fake row. So everything non-printable is shown escaped:
//!
//! - [`shown`] for a stored value in a table or a sentence: C0 controls, DEL, C1 controls and every
//!   other character Rust's `escape_debug` deems non-printable (format characters such as the bidi
//!   overrides and zero-width spaces, line and paragraph separators, spaces other than U+0020,
//!   unassigned and private-use code points) become `\n`, `\t`, `\u{1b}`, `\u{202e}`…, and a
//!   backslash becomes `\\`, so that the escaped form is unambiguous. Ordinary Unicode (accents,
//!   CJK, emoji, combining marks after a base character) is kept.
//! - [`sanitized`] for a whole message that may already hold escaped (`{:?}`-quoted) values:
//!   the same escapes, but a backslash is left alone.
//! - [`JsonText`]: `--json` output, where serde_json escapes only C0 controls, `"` and `\`; DEL, C1
//!   controls and the other non-printable characters become `\uXXXX` escapes too. The documents
//!   parse to exactly the stored values.

use std::borrow::Cow;
use std::io;

/// True for a character a terminal shows as itself, taking no action.
///
/// Rust's `escape_debug` is the table: it escapes exactly the characters its Unicode tables call
/// non-printable (general categories Cc, Cf, Zl, Zp, Zs but U+0020, Cs, Co, Cn), and grapheme
/// extenders (combining marks) when they start a string, where they have nothing to combine with.
/// A character that follows `a` comes out unescaped exactly when it is printable.
fn is_printable(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    let pair: String = ['a', c].iter().collect();
    pair.escape_debug().nth(1) == Some(c)
}

/// Appends `c`, escaped when it is not printable: `\n`, `\r`, `\t`, `\0` or `\u{…}`.
fn push_escaped(text: &mut String, c: char) {
    if is_printable(c) {
        text.push(c);
    } else {
        text.extend(c.escape_debug());
    }
}

/// `text` with every non-printable character escaped and every backslash doubled: a stored value,
/// shown in a table cell or a sentence. Borrowed when nothing needs escaping.
///
/// ```text
/// ESC [ 2 J          →  \u{1b}[2J
/// line\nbreak         →  line\nbreak   (the two characters `\` and `n`)
/// C:\dir              →  C:\\dir
/// café-日本-🚀        →  café-日本-🚀
/// ```
pub fn shown(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| c != '\\' && is_printable(c)) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            escaped.push_str("\\\\");
        } else {
            push_escaped(&mut escaped, c);
        }
    }
    Cow::Owned(escaped)
}

/// `message` with every non-printable character escaped, backslashes left as they are: for a whole
/// message (an error, a warning) whose values may already be quoted with `{:?}`, which escapes
/// them and their backslashes. A final guard before anything reaches the terminal.
pub fn sanitized(message: &str) -> Cow<'_, str> {
    if message.chars().all(is_printable) {
        return Cow::Borrowed(message);
    }
    let mut escaped = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        push_escaped(&mut escaped, c);
    }
    Cow::Owned(escaped)
}

/// `message`, one line per line it holds, each [`sanitized`]: a multi-line message keeps its line
/// breaks, but no line can carry a control sequence.
pub fn sanitized_lines(message: &str) -> String {
    message
        .split('\n')
        .map(|line| sanitized(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// serde_json's compact output, with every non-printable character of a string escaped as `\uXXXX`
/// (a surrogate pair above U+FFFF). serde_json already escapes C0 controls, `"` and `\`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonText;

impl serde_json::ser::Formatter for JsonText {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if is_printable(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// `doc` as one line of JSON, every non-printable character escaped (see [`JsonText`]).
pub fn json_line(doc: &impl serde::Serialize) -> String {
    let mut bytes = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, JsonText);
    doc.serialize(&mut serializer).expect("documents serialise");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_of_every_kind_are_escaped() {
        let cases = [
            ("\u{1b}[2J", "\\u{1b}[2J"),
            ("\u{1b}]0;pwned\u{7}", "\\u{1b}]0;pwned\\u{7}"),
            ("a\nb\rc\td\0", "a\\nb\\rc\\td\\0"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("nel\u{85}", "nel\\u{85}"),
            ("bidi\u{202e}txt", "bidi\\u{202e}txt"),
            ("zero\u{200b}width", "zero\\u{200b}width"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("nb\u{a0}sp", "nb\\u{a0}sp"),
            ("bom\u{feff}", "bom\\u{feff}"),
            ("private\u{e000}", "private\\u{e000}"),
        ];
        for (input, expected) in cases {
            assert_eq!(shown(input), expected, "{input:?}");
            assert!(!shown(input).chars().any(|c| c.is_control()), "{input:?}");
        }
    }

    #[test]
    fn backslashes_are_doubled_so_that_the_escapes_are_unambiguous() {
        assert_eq!(shown("C:\\dir"), "C:\\\\dir");
        // A name spelling an escape is told apart from the character it spells.
        assert_ne!(shown("\\u{1b}"), shown("\u{1b}"));
        assert_eq!(shown("\\u{1b}"), "\\\\u{1b}");
    }

    #[test]
    fn ordinary_unicode_is_kept_as_it_is() {
        for text in [
            "add-note-to-orders",
            "café",
            "cafe\u{301}",
            "日本-デプロイ",
            "🚀 rocket",
            "O'Brien \"quoted\"",
            "ünïcødé/ÆØÅ",
            "",
        ] {
            assert!(matches!(shown(text), Cow::Borrowed(_)), "{text:?}");
            assert!(matches!(sanitized(text), Cow::Borrowed(_)), "{text:?}");
        }
    }

    #[test]
    fn a_sanitized_message_keeps_its_backslashes_and_its_line_breaks() {
        assert_eq!(
            sanitized("no apply \"a\\u{1b}\" \u{1b}[2J"),
            "no apply \"a\\u{1b}\" \\u{1b}[2J"
        );
        assert_eq!(sanitized_lines("one\n\u{1b}two"), "one\n\\u{1b}two");
    }

    #[test]
    fn json_escapes_every_non_printable_character_and_reads_back_exactly() {
        let value =
            "esc\u{1b}[2J del\u{7f} csi\u{9b} bidi\u{202e} sep\u{2028} tag\u{e0041} ok-é-日本-🚀";
        let line = json_line(&serde_json::json!({ "name": value }));
        assert!(
            line.chars().all(|c| !c.is_control() && is_printable(c)),
            "{line:?}"
        );
        assert!(
            line.contains("\\u007f") && line.contains("\\u009b"),
            "{line}"
        );
        assert!(line.contains("\\udb40\\udc41"), "a surrogate pair: {line}");
        assert!(line.contains("ok-é-日本-🚀"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["name"], value);
    }
}
