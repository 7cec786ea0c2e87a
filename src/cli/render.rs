//! How the command line shows things to a person: tables that fit the terminal without splitting a
//! word, and never wrap when stdout is not one (a pipe, a file: one line per row, for `grep`); colour
//! as `--color` says (by default only on a terminal and never under `NO_COLOR`); ages and durations in a few characters; and a
//! sentence for every reason an operation waits. Stored text reaches a cell through
//! [`shown`](super::text::shown) only.

use std::io::IsTerminal;
use std::time::Duration;

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::state::ApplyState;
use applyops::store::applies::Blocker;
use chrono::NaiveDateTime;
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use unicode_width::UnicodeWidthStr;

use super::text::{sanitized, shown};

/// The width a table is fitted to on a terminal that reports no usable width (a pseudo-terminal
/// that was never sized says 0).
pub const FALLBACK_WIDTH: u16 = 80;

/// `--color`: when output is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set and not empty.
    Auto,
    /// Always, even in a pipe or a file, whatever `NO_COLOR` says.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether output is coloured: the one decision every coloured thing follows (the tables'
    /// states, `watch`'s bars). `tty`: stdout is a terminal; `no_color`: `NO_COLOR`'s value, if set.
    pub fn colour(self, tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && no_color.is_none_or(|value| value.is_empty()),
        }
    }
}

/// Where output goes and how it may look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// stdout is a terminal.
    pub tty: bool,
    /// Colour is on ([`ColorChoice::colour`]).
    pub colour: bool,
}

impl Style {
    /// The style for this process's stdout and environment, coloured as `choice` says; the
    /// terminal crates that draw colour are told the decision ([`colour_libraries`]).
    pub fn detect(choice: ColorChoice) -> Style {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR");
        let style = Style {
            tty,
            colour: choice.colour(tty, no_color.as_deref()),
        };
        colour_libraries(style.colour);
        style
    }

    /// An empty table with `header`, borderless like `kubectl`'s: on a terminal fitted to its width
    /// (wrapping long cells between words, see [`keep_whole`]); elsewhere never wrapped, each row on
    /// one line however long, so that `grep` finds whole rows.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_header(header.iter().map(|name| Cell::new(*name)));
        if self.tty {
            let terminal = table.width().filter(|width| *width >= 40);
            table
                .set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(terminal.unwrap_or(FALLBACK_WIDTH));
        } else {
            table.set_content_arrangement(ContentArrangement::Disabled);
        }
        // comfy-table would decide colour again (styles only on a terminal): it is told ours.
        if self.colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table
    }

    /// A cell holding `state`, coloured by what it means when colour is on.
    pub fn state_cell(&self, state: ApplyState) -> Cell {
        let cell = Cell::new(state.as_str());
        if !self.colour {
            return cell;
        }
        cell.fg(state_colour(state))
    }
}

/// Tells the crates that write colour codes whether to: each would otherwise decide by itself.
/// crossterm (comfy-table's cells) writes none under `NO_COLOR`, even for `--color always`;
/// console (indicatif's bars) reads `NO_COLOR`, `CLICOLOR` and `CLICOLOR_FORCE`.
pub fn colour_libraries(colour: bool) {
    crossterm::style::Colored::set_ansi_color_disabled(!colour);
    console::set_colors_enabled(colour);
}

/// The colour of a state: green done, red failed, yellow waiting on someone, cyan moving.
fn state_colour(state: ApplyState) -> Color {
    match state {
        ApplyState::Completed => Color::Green,
        ApplyState::Failed | ApplyState::Reverted | ApplyState::FailedRetryable => Color::Red,
        ApplyState::Cancelled => Color::DarkGrey,
        ApplyState::Pending
        | ApplyState::Stopped
        | ApplyState::Paused
        | ApplyState::WaitingForCutover
        | ApplyState::RevertWindow => Color::Yellow,
        _ => Color::Cyan,
    }
}

/// Keeps the cells of `columns` (indexes) on one line each, and every word of the other columns
/// whole: `columns` are at least as wide as their widest cell (short values such as states,
/// policies and counts, which a wrap would cut in the middle), the others at least as wide as their
/// longest word (a name such as `add-note-to-orders` is one word), so that a narrow terminal wraps
/// cells between words only. A table whose words do not fit is wider than the terminal, which then
/// folds its lines, rather than cut a name in two. Off a terminal nothing wraps anyway.
pub fn keep_whole(table: &mut Table, columns: &[usize]) {
    let whole = table.column_max_content_widths();
    let mut words = vec![0u16; whole.len()];
    let header = table.header().into_iter();
    for row in header.chain(table.row_iter()) {
        for (index, cell) in row.cell_iter().enumerate() {
            let longest = cell
                .content()
                .split_whitespace()
                .map(UnicodeWidthStr::width)
                .max()
                .unwrap_or(0);
            if let Some(width) = words.get_mut(index) {
                *width = (*width).max(u16::try_from(longest).unwrap_or(u16::MAX));
            }
        }
    }
    for index in 0..whole.len() {
        let width = if columns.contains(&index) {
            whole[index]
        } else {
            words[index]
        };
        if let Some(column) = table.column_mut(index) {
            // The boundary counts the column's padding too.
            let width = width.saturating_add(column.padding_width());
            column.set_constraint(comfy_table::ColumnConstraint::LowerBoundary(
                comfy_table::Width::Fixed(width),
            ));
        }
    }
}

/// `table` as text: each line without the padding space the borderless preset puts before the
/// first column, and without trailing blanks.
pub fn table_text(table: &Table) -> String {
    let mut text = String::new();
    for line in table.lines() {
        let line = line.strip_prefix(' ').unwrap_or(&line);
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A duration in at most two units, such as `45s`, `3m12s`, `2h5m`, `4d3h`.
pub fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m{}s", secs / 60, secs % 60),
        3_600..86_400 => format!("{}h{}m", secs / 3_600, secs % 3_600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3_600),
    }
}

/// How long before `now` `at` was, such as `3m12s ago` (`just now` for a time not before `now`).
pub fn age(at: NaiveDateTime, now: NaiveDateTime) -> String {
    match (now - at).to_std() {
        Ok(elapsed) if !elapsed.is_zero() => format!("{} ago", short_duration(elapsed)),
        _ => "just now".to_owned(),
    }
}

/// `at` as RFC 3339 in UTC with a `Z` and microseconds, the JSON documents' timestamp format.
pub fn rfc3339(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A stable snake_case name for a blocker, for scripts (`--json`).
pub fn blocker_code(blocker: &Blocker) -> &'static str {
    match blocker {
        Blocker::OutOfScope => "out_of_scope",
        Blocker::LeaseLive { .. } => "lease_live",
        Blocker::StopPending => "stop_pending",
        Blocker::CancelPending => "cancel_pending",
        Blocker::AwaitingStart => "awaiting_start",
        Blocker::HaltedBy { .. } => "halted_by",
        Blocker::PausedUntilRelease { .. } => "paused_until_release",
        Blocker::WaitingForSibling { .. } => "waiting_for_sibling",
        Blocker::AwaitingOperatorCutover => "awaiting_operator_cutover",
        Blocker::WaitingForCutoverOrder { .. } => "waiting_for_cutover_order",
        Blocker::ConcurrencyCap { .. } => "concurrency_cap",
        Blocker::RetryBudgetExhausted => "retry_budget_exhausted",
        Blocker::NoClaimArm => "no_claim_arm",
        Blocker::Claimable => "claimable",
        _ => "other",
    }
}

/// A blocker as a short sentence; `deployment_of` names a sibling operation by its deployment. The
/// names in it (holders, deployments) are [`shown`] escaped.
pub fn blocker_text(
    blocker: &Blocker,
    apply_id: ApplyId,
    deployment_of: impl Fn(ApplyOperationId) -> String,
    now: NaiveDateTime,
) -> String {
    match blocker {
        Blocker::LeaseLive { owner, expires_at } => {
            let left = (*expires_at - now).to_std().unwrap_or_default();
            format!(
                "held by {}, lease expires in {}",
                shown(owner),
                short_duration(left)
            )
        }
        Blocker::OutOfScope => "outside the claim scope asked about".to_owned(),
        Blocker::StopPending => format!("a stop is pending for apply {apply_id} or for it"),
        Blocker::CancelPending => format!("a cancel is pending for apply {apply_id} or for it"),
        Blocker::AwaitingStart => "stopped: waits for a start request".to_owned(),
        Blocker::HaltedBy { id } => {
            format!(
                "halted: {} failed (on_failure halt)",
                shown(&deployment_of(*id))
            )
        }
        Blocker::PausedUntilRelease { id } => format!(
            "paused: {} failed; waits for a release (on_failure pause)",
            shown(&deployment_of(*id))
        ),
        Blocker::WaitingForSibling {
            deployment, state, ..
        } => format!("waits for {} ({state})", shown(deployment)),
        Blocker::AwaitingOperatorCutover => {
            "waits for an operator's cutover request (cutovers deferred)".to_owned()
        }
        Blocker::WaitingForCutoverOrder { id } => {
            format!(
                "its cutover waits for {} to complete",
                shown(&deployment_of(*id))
            )
        }
        Blocker::ConcurrencyCap { limit } => {
            format!("max_concurrency {limit} reached: waits for a running deployment")
        }
        Blocker::RetryBudgetExhausted => "no retry attempt left (max_attempts)".to_owned(),
        Blocker::NoClaimArm => "no claim takes it in this state".to_owned(),
        Blocker::Claimable => "ready: the next claim takes it".to_owned(),
        other => sanitized(&format!("{other:?}")).into_owned(),
    }
}

/// A table cell showing stored text, [`shown`] escaped.
pub fn cell(text: &str) -> Cell {
    Cell::new(shown(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_use_two_units_at_most() {
        assert_eq!(short_duration(Duration::from_secs(0)), "0s");
        assert_eq!(short_duration(Duration::from_secs(59)), "59s");
        assert_eq!(short_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(short_duration(Duration::from_secs(7_500)), "2h5m");
        assert_eq!(
            short_duration(Duration::from_secs(4 * 86_400 + 3 * 3_600)),
            "4d3h"
        );
    }

    #[test]
    fn an_age_in_the_future_is_just_now() {
        let now = chrono::DateTime::from_timestamp(1_000, 0)
            .unwrap()
            .naive_utc();
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "just now");
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5s ago");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_z() {
        let at = chrono::DateTime::from_timestamp(1_796_504_520, 123_456_000)
            .unwrap()
            .naive_utc();
        assert_eq!(rfc3339(at), "2026-12-05T21:02:00.123456Z");
    }

    #[test]
    fn colour_follows_the_flag_then_no_color_then_the_terminal() {
        use std::ffi::OsStr;
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(ColorChoice::Auto.colour(true, None));
        assert!(
            ColorChoice::Auto.colour(true, empty),
            "an empty NO_COLOR is unset"
        );
        assert!(!ColorChoice::Auto.colour(true, set));
        assert!(!ColorChoice::Auto.colour(false, None));
        assert!(
            ColorChoice::Always.colour(false, set),
            "always wins over NO_COLOR"
        );
        assert!(!ColorChoice::Never.colour(true, None));
    }

    #[test]
    fn a_coloured_table_off_a_terminal_has_escapes() {
        colour_libraries(true);
        let style = Style {
            tty: false,
            colour: true,
        };
        let mut table = style.table(&["STATE"]);
        table.add_row(vec![style.state_cell(ApplyState::Completed)]);
        let text = table_text(&table);
        assert!(text.contains("\u{1b}[38;"), "a foreground colour: {text:?}");
    }

    #[test]
    fn a_table_off_a_terminal_never_wraps() {
        let style = Style {
            tty: false,
            colour: false,
        };
        let mut table = style.table(&["A", "B"]);
        let long = "add-note-to-orders ".repeat(8);
        table.add_row(vec![long.trim_end(), &"y".repeat(120)]);
        keep_whole(&mut table, &[]);
        let text = table_text(&table);
        assert_eq!(text.lines().count(), 2, "a header and one row: {text}");
        assert!(
            text.lines().nth(1).unwrap().contains(long.trim_end()),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no escape codes without colour");
    }

    #[test]
    fn a_narrow_table_wraps_between_words_only() {
        let style = Style {
            tty: true,
            colour: false,
        };
        let mut table = style.table(&["ID", "IDENTIFIER", "WHY"]);
        // Not the terminal's width: the test's own, whatever runs it.
        table.set_width(40);
        table.add_row(vec![
            "1",
            "add-note-to-orders-everywhere",
            "waits for an operator's cutover request (cutovers deferred)",
        ]);
        keep_whole(&mut table, &[0]);
        let text = table_text(&table);
        assert!(text.contains("add-note-to-orders-everywhere"), "{text}");
        for word in ["operator's", "request", "(cutovers", "deferred)"] {
            assert!(
                text.split_whitespace().any(|w| w == word),
                "{word} whole: {text}"
            );
        }
    }
}
