//! How the command line shows things to a person: tables that fit the terminal (80 columns when
//! stdout is not one), colour only on a terminal and never under `NO_COLOR`, ages and durations in
//! a few characters, and a sentence for every reason an operation waits.

use std::io::IsTerminal;
use std::time::Duration;

use applyops::models::{ApplyId, ApplyOperationId};
use applyops::state::ApplyState;
use applyops::store::applies::Blocker;
use chrono::NaiveDateTime;
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

/// The width a table is fitted to when stdout is not a terminal.
pub const PLAIN_WIDTH: u16 = 80;

/// Where output goes and how it may look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// stdout is a terminal.
    pub tty: bool,
    /// Colour is on: a terminal, and `NO_COLOR` unset or empty.
    pub colour: bool,
}

impl Style {
    /// The style for this process's stdout and environment.
    pub fn detect() -> Style {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Style {
            tty,
            colour: tty && !no_color,
        }
    }

    /// An empty table with `header`, borderless like `kubectl`'s, fitted to the terminal or to
    /// [`PLAIN_WIDTH`] columns.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(header.iter().map(|name| Cell::new(*name)));
        // The terminal's width; 80 columns off a terminal, or when the terminal reports no
        // usable width (a pseudo-terminal that was never sized says 0).
        let terminal = if self.tty { table.width() } else { None };
        table.set_width(terminal.filter(|width| *width >= 40).unwrap_or(PLAIN_WIDTH));
        if !self.colour {
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

/// Keeps the cells of `columns` (indexes) on one line each: those columns are at least as wide as
/// their widest cell, and the other columns wrap instead. For short values (states, policies,
/// counts) that a wrap would cut in the middle.
pub fn keep_whole(table: &mut Table, columns: &[usize]) {
    let widths = table.column_max_content_widths();
    for &index in columns {
        if let (Some(column), Some(width)) = (table.column_mut(index), widths.get(index)) {
            // The boundary counts the column's padding too.
            let width = width + column.padding_width();
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

/// A blocker as a short sentence; `deployment_of` names a sibling operation by its deployment.
pub fn blocker_text(
    blocker: &Blocker,
    apply_id: ApplyId,
    deployment_of: impl Fn(ApplyOperationId) -> String,
    now: NaiveDateTime,
) -> String {
    match blocker {
        Blocker::LeaseLive { owner, expires_at } => {
            let left = (*expires_at - now).to_std().unwrap_or_default();
            format!("held by {owner}, lease expires in {}", short_duration(left))
        }
        Blocker::StopPending => format!("a stop is pending for apply {apply_id} or for it"),
        Blocker::CancelPending => format!("a cancel is pending for apply {apply_id} or for it"),
        Blocker::AwaitingStart => "stopped: waits for a start request".to_owned(),
        Blocker::HaltedBy { id } => {
            format!("halted: {} failed (on_failure halt)", deployment_of(*id))
        }
        Blocker::PausedUntilRelease { id } => format!(
            "paused: {} failed; waits for a release (on_failure pause)",
            deployment_of(*id)
        ),
        Blocker::WaitingForSibling {
            deployment, state, ..
        } => format!("waits for {deployment} ({state})"),
        Blocker::AwaitingOperatorCutover => {
            "waits for an operator's cutover request (cutovers deferred)".to_owned()
        }
        Blocker::WaitingForCutoverOrder { id } => {
            format!("its cutover waits for {} to complete", deployment_of(*id))
        }
        Blocker::ConcurrencyCap { limit } => {
            format!("max_concurrency {limit} reached: waits for a running deployment")
        }
        Blocker::RetryBudgetExhausted => "no retry attempt left (max_attempts)".to_owned(),
        Blocker::NoClaimArm => "no claim takes it in this state".to_owned(),
        Blocker::Claimable => "ready: the next claim takes it".to_owned(),
        other => format!("{other:?}"),
    }
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
    fn a_plain_table_fits_80_columns() {
        let style = Style {
            tty: false,
            colour: false,
        };
        let mut table = style.table(&["A", "B"]);
        table.add_row(vec!["x".repeat(120), "y".repeat(120)]);
        let text = table_text(&table);
        assert!(
            text.lines().all(|line| line.chars().count() <= 80),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no escape codes without colour");
    }
}
