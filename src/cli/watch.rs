//! `watch`: applies as `status` shows them, followed until every one has settled.
//!
//! On a terminal, one progress bar per deployment, redrawn in place (`indicatif`). Elsewhere (a
//! pipe, a file, CI) one line per change: when an apply's state or progress moves, and when a
//! deployment's state, holder or reason to wait changes; then each apply's final `status`. With
//! `--json`, one `status --json` document per line for each apply whenever it changes.
//!
//! Exit 0 when every apply completed, 3 when one settled otherwise (`failed`, `cancelled`,
//! `reverted`), 4 at `--timeout`. Each refresh reads what it shows (the apply, its operations, its
//! pending requests, blockers and leases), never the tasks.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use applyops::models::Apply;
use applyops::state::{is_settled, ApplyState};
use applyops::Store;
use chrono::Utc;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text::shown;
use super::views::StatusDoc;
use super::{
    print_json, resolve_apply, status_doc, status_text, CommandResult, Deadline, Failure, Style,
};

/// `watch`'s arguments.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The applies' ids or identifiers.
    #[arg(required = true)]
    pub applies: Vec<String>,
    /// How often to look, in milliseconds (never past the timeout).
    #[arg(long, default_value_t = 500)]
    pub interval_ms: u64,
    /// Give up after this many seconds (exit 4); default: wait as long as it takes.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// One JSON document per line (as `status --json`) whenever an apply changes.
    #[arg(long)]
    pub json: bool,
}

/// How far along its way a deployment is: 0 waiting to start, 1 copying, 2 waiting for its
/// cutover, 3 cutting over or in its revert window, 4 completed.
const STAGES: u64 = 4;

/// The stage of `state` (see [`STAGES`]).
fn stage(state: ApplyState) -> u64 {
    match state {
        ApplyState::Pending | ApplyState::Stopped | ApplyState::Paused => 0,
        ApplyState::WaitingForCutover => 2,
        ApplyState::CuttingOver
        | ApplyState::RevertWindow
        | ApplyState::SkippingRevert
        | ApplyState::Reverting => 3,
        ApplyState::Completed => STAGES,
        ApplyState::Failed
        | ApplyState::FailedRetryable
        | ApplyState::Cancelled
        | ApplyState::Reverted => 0,
        _ => 1,
    }
}

/// An apply is done being watched once its state is settled and no request of it is pending.
fn settled(doc: &StatusDoc) -> bool {
    ApplyState::from_stored(doc.apply.state).is_some_and(is_settled)
        && doc.pending_requests.is_empty()
}

/// What a change is judged by: everything but the clock.
fn signature(doc: &StatusDoc) -> String {
    let mut text = format!(
        "{} {}/{}",
        doc.apply.state, doc.apply.completed, doc.apply.operations
    );
    for op in &doc.operations {
        text.push_str(&format!(
            "|{} {} {} {}",
            op.deployment,
            op.state,
            op.holder.as_ref().map_or("", |h| h.owner.as_str()),
            op.blocker.as_ref().map_or("", |b| b.reason)
        ));
    }
    for request in &doc.pending_requests {
        text.push_str(&format!("|r{}", request.id));
    }
    text
}

/// The line a deployment's bar shows after its name, stored text escaped.
fn deployment_message(op: &super::views::OperationDoc) -> String {
    let detail = match (&op.holder, &op.blocker, &op.error) {
        (Some(holder), _, _) => format!("held by {}", shown(&holder.owner)),
        // Its names are escaped already.
        (None, Some(blocker), _) if blocker.reason != "claimable" => blocker.text.clone(),
        (None, _, Some(error)) => format!("error: {}", shown(error)),
        _ => String::new(),
    };
    if detail.is_empty() {
        op.state.to_owned()
    } else {
        format!("{}: {detail}", op.state)
    }
}

/// Follows `args.applies` until all have settled.
pub fn run(store: &Store, args: &WatchArgs, style: Style, out: &mut impl Write) -> CommandResult {
    let applies: Vec<Apply> = args
        .applies
        .iter()
        .map(|text| resolve_apply(store, text))
        .collect::<Result<_, _>>()?;
    let deadline = Deadline::after(args.timeout);
    let interval = Duration::from_millis(args.interval_ms.max(50));
    let bars = (style.tty && !args.json).then(|| Bars::new(style));
    let mut seen: HashMap<i64, String> = HashMap::new();
    let mut last_ops: HashMap<i64, String> = HashMap::new();
    loop {
        let mut all_settled = true;
        let mut docs = Vec::with_capacity(applies.len());
        for apply in &applies {
            let doc = status_doc(store, apply.id)?;
            all_settled &= settled(&doc);
            let signature = signature(&doc);
            let changed = seen.get(&doc.apply.id) != Some(&signature);
            if changed {
                seen.insert(doc.apply.id, signature);
                if args.json {
                    print_json(out, &doc);
                } else if bars.is_none() {
                    print_changes(out, &doc, &mut last_ops);
                }
            }
            docs.push(doc);
        }
        if let Some(bars) = &bars {
            bars.show(&docs);
        }
        out.flush().ok();
        if all_settled {
            if let Some(bars) = &bars {
                bars.finish();
            }
            if !args.json {
                for doc in &docs {
                    writeln!(out).ok();
                    out.write_all(status_text(doc, style).as_bytes()).ok();
                }
            }
            return ended(&docs);
        }
        if deadline.passed() {
            if let Some(bars) = &bars {
                bars.finish();
            }
            let waiting: Vec<String> = docs
                .iter()
                .filter(|doc| !settled(doc))
                .map(|doc| format!("apply {} is {}", doc.apply.id, doc.apply.state))
                .collect();
            return Err(Failure::TimedOut(format!(
                "timed out after {} s: {}",
                args.timeout.unwrap_or_default(),
                waiting.join(", ")
            )));
        }
        deadline.sleep(interval);
    }
}

/// Ok when every apply of `docs` (all settled) completed; otherwise which ones did not (exit 3).
fn ended(docs: &[StatusDoc]) -> CommandResult {
    let otherwise: Vec<String> = docs
        .iter()
        .filter(|doc| ApplyState::from_stored(doc.apply.state) != Some(ApplyState::Completed))
        .map(|doc| {
            format!(
                "apply {} ({}) ended {}",
                doc.apply.id,
                shown(&doc.apply.identifier),
                doc.apply.state
            )
        })
        .collect();
    if otherwise.is_empty() {
        return Ok(());
    }
    Err(Failure::EndedOtherwise(format!(
        "{}, not {}",
        otherwise.join(", "),
        ApplyState::Completed
    )))
}

/// The non-terminal form: a line for each apply change and each deployment change.
fn print_changes(out: &mut impl Write, doc: &StatusDoc, last: &mut HashMap<i64, String>) {
    let clock = Utc::now().format("%H:%M:%S");
    writeln!(
        out,
        "{clock} apply {} {}: {}, {}",
        doc.apply.id,
        shown(&doc.apply.identifier),
        doc.apply.state,
        doc.apply.progress_text()
    )
    .ok();
    for op in &doc.operations {
        let message = deployment_message(op);
        if last.get(&op.id) != Some(&message) {
            writeln!(out, "{clock}   {}: {message}", shown(&op.deployment)).ok();
            last.insert(op.id, message);
        }
    }
}

/// The terminal form: a header line per apply and a bar per deployment, redrawn in place.
struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    header_style: ProgressStyle,
    lines: std::cell::RefCell<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(style: Style) -> Bars {
        // The template's colours are drawn by `console`, told `style.colour` by `Style::detect`.
        let template = if style.colour {
            "  {prefix:14!} [{bar:24.green/blue}] {msg}"
        } else {
            "  {prefix:14!} [{bar:24}] {msg}"
        };
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            style: ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("=> "),
            header_style: ProgressStyle::with_template("{msg}").expect("a valid template"),
            lines: std::cell::RefCell::new(HashMap::new()),
        }
    }

    /// The bar named `key`, added at the bottom the first time.
    fn line(&self, key: String, header: bool) -> ProgressBar {
        self.lines
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(STAGES));
                bar.set_style(if header {
                    self.header_style.clone()
                } else {
                    self.style.clone()
                });
                bar
            })
            .clone()
    }

    fn show(&self, docs: &[StatusDoc]) {
        for doc in docs {
            let header = self.line(format!("apply {}", doc.apply.id), true);
            header.set_message(format!(
                "apply {} {}: {}, {}",
                doc.apply.id,
                shown(&doc.apply.identifier),
                doc.apply.state,
                doc.apply.progress_text()
            ));
            for op in &doc.operations {
                let bar = self.line(format!("op {}", op.id), false);
                bar.set_prefix(shown(&op.deployment).into_owned());
                bar.set_position(ApplyState::from_stored(op.state).map_or(0, stage));
                bar.set_message(deployment_message(op));
            }
        }
    }

    fn finish(&self) {
        for bar in self.lines.borrow().values() {
            bar.abandon();
        }
    }
}
