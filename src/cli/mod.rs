//! The commands, their arguments, and what each one does. `main` parses and maps the outcome to an
//! exit code ([`Failure::exit_code`]): 0 done as asked, 1 error, 2 usage, 3 the apply ended
//! otherwise, 4 timed out.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use applyops::db::DbConnection;
use applyops::models::{Apply, ApplyId, ApplyOperation, NewRollout};
use applyops::state::{is_settled, ApplyState, ControlRequestKind};
use applyops::store::applies::{ApplyCursor, ApplyFilter};
use applyops::store::{applies, apply_operations, control_requests};
use applyops::{db, Store, StoreError};
use chrono::{NaiveDateTime, Utc};
use clap::{Args, CommandFactory, Parser, Subcommand};
use diesel::Connection;

mod database;
mod help;
mod man;
mod render;
mod requests;
mod rollout_file;
mod text;
mod views;
mod watch;

pub use database::Database;
use render::{age, cell, keep_whole, short_duration, table_text};
pub use render::{ColorChoice, Style};
pub use text::sanitized_lines;
use text::shown;
use views::{AppliesDoc, ApplyDoc, ApplyView, LeaseDoc, LeasesDoc, StatusDoc};

/// Exit code: done as asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: an error (the database, a refusal, nothing found); nothing was done.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the command line is wrong (clap's usage errors, and those found after parsing).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: `wait` or `watch` saw the apply (or deployment) settle otherwise than asked.
pub const EXIT_ENDED_OTHERWISE: u8 = 3;
/// Exit code: `wait` or `watch` gave up at `--timeout`.
pub const EXIT_TIMED_OUT: u8 = 4;

/// Operate an applyops database: migrations, rollouts, operators' requests, leases.
#[derive(Debug, Parser)]
#[command(name = "applyops", version, after_help = help::TOP)]
pub struct Cli {
    /// The database: `mysql://user:password@host:port/database`, a SQLite file path or
    /// `sqlite://path`. Without it: APPLYOPS_DATABASE_URL, then DATABASE_URL, then
    /// sqlite://applyops.db. Prefer the environment for a URL with a password: a command line is
    /// visible to `ps`.
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,

    /// Colour: auto (on a terminal, unless NO_COLOR is set and not empty), always (even in a pipe,
    /// whatever NO_COLOR says) or never.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        default_value_t = ColorChoice::Auto,
        global = true
    )]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every pending migration (serialised with other runners) and print the versions applied.
    /// The only command that creates a database. With --revert, revert the newest applied migration
    /// instead (destructive: needs --yes).
    #[command(after_help = help::MIGRATE)]
    Migrate(MigrateArgs),
    /// Ask for a revert of an apply's deployments in their revert window (or of one). To revert a
    /// database migration: `applyops migrate --revert`.
    #[command(after_help = help::REVERT)]
    Revert(RequestArgs),
    /// Print the operations of an apply, oldest first, one JSON object per line (timestamps RFC 3339
    /// UTC).
    #[command(after_help = help::LIST)]
    List {
        /// The apply's id or identifier (id:N or name:IDENTIFIER when it could be either).
        apply: String,
    },
    /// List applies, newest first, with their state and progress.
    #[command(after_help = help::APPLIES)]
    Applies(AppliesArgs),
    /// Show an apply and each of its deployments: state, holder, why it waits, last error; then its
    /// pending control requests.
    #[command(after_help = help::STATUS)]
    Status {
        /// The apply's id or identifier (id:N or name:IDENTIFIER when it could be either).
        apply: String,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Show applies as `status` does, refreshed in place with a progress bar per deployment, until
    /// every one has settled (or Ctrl-C). Exit 0 when every one completed, 3 when one ended
    /// otherwise, 4 at --timeout.
    #[command(after_help = help::WATCH)]
    Watch(watch::WatchArgs),
    /// Wait until an apply (or one deployment of it) reaches a state. Exit 0 when it does, 3 as soon
    /// as it settles in another state (completed, failed, cancelled, reverted: only an operator's
    /// retry moves it from there), 4 at --timeout.
    #[command(after_help = help::WAIT)]
    Wait(WaitArgs),
    /// Create a rollout (an apply, its operations and their tasks) from a JSON or TOML file; with
    /// --dry-run, only check it.
    #[command(after_help = help::CREATE, after_long_help = help::CREATE_LONG)]
    Create(CreateArgs),
    /// Ask workers to stop an apply, or one deployment (`start` resumes it).
    #[command(after_help = help::STOP)]
    Stop(RequestArgs),
    /// Resume a stopped or paused apply, or one deployment.
    #[command(after_help = help::START)]
    Start(RequestArgs),
    /// Cancel an apply, or one deployment: it is not resumed.
    #[command(after_help = help::CANCEL)]
    Cancel(RequestArgs),
    /// Let the failures recorded so far through an `on_failure = pause` gate.
    #[command(after_help = help::RELEASE)]
    Release(RequestArgs),
    /// Cut over an apply that defers its cutovers (all, in order), or one deployment now.
    #[command(after_help = help::CUTOVER)]
    Cutover(RequestArgs),
    /// Close a deployment's revert window without reverting (or every one's).
    #[command(after_help = help::SKIP_REVERT)]
    SkipRevert(RequestArgs),
    /// Retry one failed deployment.
    #[command(after_help = help::RETRY)]
    Retry(RetryArgs),
    /// List every live lease: operation, apply, holder, time left.
    #[command(after_help = help::LEASES)]
    Leases {
        /// Only holders whose name starts with this.
        #[arg(long)]
        owner: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) on stdout.
    #[command(after_help = help::COMPLETIONS)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (applyops.1 and one per command) into a directory: `make man`.
    #[command(hide = true, after_help = help::MAN)]
    Man {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// `migrate`: the pending migrations, or with `--revert` the newest applied one.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Revert the newest applied migration instead: its down.sql drops what it created (tables and
    /// columns, with their data). Needs --yes.
    #[arg(long)]
    pub revert: bool,
    /// With --revert: confirm it. Without it, nothing is changed.
    #[arg(long, requires = "revert")]
    pub yes: bool,
    /// With --revert: revert even when it drops a table (or columns of one) that holds rows.
    #[arg(long, requires = "revert")]
    pub force: bool,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The rollout: `.json` or `.toml` (`--help` shows the format).
    #[arg(long)]
    pub file: PathBuf,
    /// Only check the file (every rule `create` checks before writing) and print what would be
    /// created; no database is opened.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the created apply as `status --json` does (with --dry-run: the rollout as read, with
    /// its defaults).
    #[arg(long)]
    pub json: bool,
}

/// The arguments of the request commands.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The apply's id or identifier (id:N or name:IDENTIFIER when it could be either).
    pub apply: String,
    /// Only this deployment of the apply (default: the whole apply).
    #[arg(long)]
    pub deployment: Option<String>,
    /// Who asks (recorded with the request). Default: APPLYOPS_USER, else the login name (USER,
    /// LOGNAME, or the user database).
    #[arg(long = "by", value_name = "NAME")]
    pub by: Option<String>,
    /// Why (recorded with the request).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `retry`: always one deployment.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The apply's id or identifier (id:N or name:IDENTIFIER when it could be either).
    pub apply: String,
    /// The failed deployment to retry.
    #[arg(long)]
    pub deployment: String,
    /// Who asks (recorded with the request). Default: APPLYOPS_USER, else the login name (USER,
    /// LOGNAME, or the user database).
    #[arg(long = "by", value_name = "NAME")]
    pub by: Option<String>,
    /// Why (recorded with the request).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// `applies`.
#[derive(Debug, Args)]
pub struct AppliesArgs {
    /// Only applies in this state (repeatable).
    #[arg(long = "state", value_parser = parse_state)]
    pub states: Vec<ApplyState>,
    /// Only applies of this database.
    #[arg(long)]
    pub database: Option<String>,
    /// Only applies for this environment.
    #[arg(long)]
    pub environment: Option<String>,
    /// Only applies with a deployment of this name.
    #[arg(long)]
    pub deployment: Option<String>,
    /// At most this many (1 to 1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Continue after this cursor (printed under a full page, and as `next` with --json).
    #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
    pub after: Option<ApplyCursor>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The apply's id or identifier (id:N or name:IDENTIFIER when it could be either).
    pub apply: String,
    /// Wait for this deployment's state (default: the apply's own state).
    #[arg(long)]
    pub deployment: Option<String>,
    /// The state to wait for (repeatable: any of them).
    #[arg(long = "state", value_parser = parse_state, required = true)]
    pub states: Vec<ApplyState>,
    /// Give up after this many seconds (exit 4).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// How often to look, in milliseconds (never past the timeout).
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
}

/// A state name, as stored.
fn parse_state(text: &str) -> Result<ApplyState, String> {
    ApplyState::from_stored(text).ok_or_else(|| {
        let names: Vec<&str> = ApplyState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {:?}; one of: {}", text, names.join(", "))
    })
}

/// A cursor `applies` printed.
fn parse_cursor(text: &str) -> Result<ApplyCursor, String> {
    text.parse().map_err(|_| {
        "not a cursor: pass the one `applyops applies` printed after `--after` (or as `next` \
         with --json)"
            .to_owned()
    })
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The store failed (exit 1).
    Store(StoreError),
    /// The command refused to run as asked, or found nothing to act on; nothing was changed
    /// (exit 1).
    Refused(String),
    /// The command line is wrong in a way clap does not see; nothing was changed (exit 2).
    Usage(String),
    /// `wait` or `watch`: what was waited for settled otherwise than asked (exit 3).
    EndedOtherwise(String),
    /// `wait` or `watch` gave up at `--timeout` (exit 4).
    TimedOut(String),
}

impl Failure {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Store(_) | Failure::Refused(_) => EXIT_ERROR,
            Failure::Usage(_) => EXIT_USAGE,
            Failure::EndedOtherwise(_) => EXIT_ENDED_OTHERWISE,
            Failure::TimedOut(_) => EXIT_TIMED_OUT,
        }
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Store(err)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Store(err) => err.fmt(f),
            Failure::Refused(reason)
            | Failure::Usage(reason)
            | Failure::EndedOtherwise(reason)
            | Failure::TimedOut(reason) => f.write_str(reason),
        }
    }
}

/// The result of a command.
pub type CommandResult = Result<(), Failure>;

/// Runs `cli` on `database` (its URL and where that came from), writing its output to `out` and
/// warnings to `warn`.
pub fn run(
    cli: Cli,
    database: &Database,
    style: Style,
    out: &mut impl Write,
    warn: &mut impl Write,
) -> CommandResult {
    match cli.command {
        Command::Completions { shell } => {
            // clap_complete panics when its writer fails: generate into memory, then write as every
            // command does, so `applyops completions zsh | head -1` ends quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "applyops", &mut script);
            out.write_all(&script).ok();
            Ok(())
        }
        Command::Man { out_dir } => man::write_pages(&out_dir, out),
        Command::Migrate(args) if args.revert => revert_migration(database, &args, out),
        Command::Migrate(_) => migrate(database, out),
        Command::List { apply } => list(database, &apply, out, warn),
        Command::Create(args) => {
            // The file is read, parsed and (for a dry run) checked before any database is opened.
            let rollout = rollout_file::read(&args.file)?;
            if args.dry_run {
                return dry_run(&rollout, args.json, out);
            }
            let store = database.store()?;
            create(&store, &rollout, args.json, style, out)
        }
        Command::Applies(args) => applies(&database.store()?, &args, style, out),
        Command::Status { apply, json } => {
            let store = database.store()?;
            let apply = resolve_apply(&store, &apply)?;
            let doc = status_doc(&store, apply.id)?;
            if json {
                print_json(out, &doc);
            } else {
                out.write_all(status_text(&doc, style).as_bytes()).ok();
            }
            Ok(())
        }
        Command::Watch(args) => watch::run(&database.store()?, &args, style, out),
        Command::Wait(args) => wait(&database.store()?, &args, out),
        Command::Leases { owner, json } => {
            leases(&database.store()?, owner.as_deref(), json, style, out)
        }
        Command::Stop(args) => request(database, ControlRequestKind::Stop, args, out),
        Command::Start(args) => request(database, ControlRequestKind::Start, args, out),
        Command::Cancel(args) => request(database, ControlRequestKind::Cancel, args, out),
        Command::Release(args) => request(database, ControlRequestKind::Release, args, out),
        Command::Cutover(args) => request(database, ControlRequestKind::Cutover, args, out),
        Command::Revert(args) => request(database, ControlRequestKind::Revert, args, out),
        Command::SkipRevert(args) => request(database, ControlRequestKind::SkipRevert, args, out),
        Command::Retry(args) => {
            let args = RequestArgs {
                apply: args.apply,
                deployment: Some(args.deployment),
                by: args.by,
                reason: args.reason,
                json: args.json,
            };
            request(database, ControlRequestKind::Retry, args, out)
        }
    }
}

/// A request command: who asks is found (`--by`, or the environment's user) before the database is
/// opened, so that a request nobody can be named for changes nothing.
fn request(
    database: &Database,
    kind: ControlRequestKind,
    args: RequestArgs,
    out: &mut impl Write,
) -> CommandResult {
    let by = requests::requester(args.by.as_deref())?;
    let store = database.store()?;
    requests::run(&store, kind, &args, &by, out)
}

/// `migrate`: the only command that creates a database.
fn migrate(database: &Database, out: &mut impl Write) -> CommandResult {
    let conn = &mut database.connect_creating()?;
    let applied = db::run_migrations(conn)?;
    if applied.is_empty() {
        writeln!(out, "no pending migrations").ok();
    }
    for version in applied {
        writeln!(out, "applied {version}").ok();
    }
    Ok(())
}

/// `migrate --revert`: the newest migration.
fn revert_migration(
    database: &Database,
    args: &MigrateArgs,
    out: &mut impl Write,
) -> CommandResult {
    if !args.yes {
        return Err(Failure::Usage(
            "refusing to revert without --yes: `migrate --revert` reverts the newest applied \
             migration, whose down.sql drops what it created (tables and columns, with their \
             data); nothing was changed. Rerun with --yes to revert; a revert that would drop rows \
             also needs --force"
                .to_owned(),
        ));
    }
    // A database that does not exist has nothing to revert, and opening it would create it.
    database.check_exists()?;
    let conn = &mut database.connect_creating()?;
    let reverted = db::revert_last_migration_checked(conn, |preview| {
        let losing: Vec<String> = preview.data_loss().map(ToString::to_string).collect();
        if losing.is_empty() || args.force {
            return Ok(());
        }
        Err(Failure::Refused(format!(
            "refusing to revert {} without --force: it would drop {}; nothing was changed. \
             Rerun with `migrate --revert --yes --force` to revert anyway and lose those rows",
            preview.version,
            losing.join(", ")
        )))
    })?;
    match reverted {
        Some(version) => writeln!(out, "reverted {version}"),
        None => writeln!(out, "no migration to revert"),
    }
    .ok();
    Ok(())
}

/// `list`: JSON lines of an apply's operations. An id whose apply row is gone still lists the
/// operations left with it, with a warning.
fn list(
    database: &Database,
    apply: &str,
    out: &mut impl Write,
    warn: &mut impl Write,
) -> CommandResult {
    let conn = &mut database.connect_existing()?;
    let apply_id = match resolve_apply_on(conn, apply) {
        Ok(apply) => apply.id,
        Err(Failure::Refused(reason)) => {
            let Some(id) = ApplyRef::parse(apply).id() else {
                return Err(Failure::Refused(reason));
            };
            let operations = apply_operations::list_by_apply(conn, id)?;
            if operations.is_empty() {
                return Err(Failure::Refused(reason));
            }
            writeln!(
                warn,
                "applyops: warning: apply {id} has no row in applies; listing its {} orphaned \
                 operation(s)",
                operations.len()
            )
            .ok();
            for operation in operations {
                writeln!(out, "{}", text::json_line(&operation)).ok();
            }
            return Ok(());
        }
        Err(other) => return Err(other),
    };
    for operation in apply_operations::list_by_apply(conn, apply_id)? {
        writeln!(out, "{}", text::json_line(&operation)).ok();
    }
    Ok(())
}

/// Prints `doc` as one line of JSON, every non-printable character escaped.
fn print_json(out: &mut impl Write, doc: &impl serde::Serialize) {
    writeln!(out, "{}", text::json_line(doc)).ok();
}

/// How an APPLY argument names an apply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ApplyRef<'a> {
    /// `id:N`: by id only.
    Id(ApplyId),
    /// `name:IDENTIFIER`: by identifier only.
    Name(&'a str),
    /// Anything else: a number is an id or an identifier; other text is an identifier.
    Either(&'a str),
}

impl<'a> ApplyRef<'a> {
    /// Reads `text`. `id:` followed by something other than a number is an identifier like any
    /// other text (an apply can be named `id:x`; `name:id:x` names it too).
    fn parse(text: &'a str) -> ApplyRef<'a> {
        if let Some(id) = text.strip_prefix("id:").and_then(|id| id.parse().ok()) {
            return ApplyRef::Id(ApplyId(id));
        }
        if let Some(name) = text.strip_prefix("name:") {
            return ApplyRef::Name(name);
        }
        ApplyRef::Either(text)
    }

    /// The id it names or may name.
    fn id(&self) -> Option<ApplyId> {
        match self {
            ApplyRef::Id(id) => Some(*id),
            ApplyRef::Name(_) => None,
            ApplyRef::Either(text) => text.parse().ok().map(ApplyId),
        }
    }
}

/// The apply `text` names, on `conn`: `id:N` by id, `name:X` by identifier, anything else by
/// whichever matches. When a number is both an apply's id and another apply's identifier, nothing
/// is guessed: a usage error offers both explicit forms.
fn resolve_apply_on(conn: &mut DbConnection, text: &str) -> Result<Apply, Failure> {
    let reference = ApplyRef::parse(text);
    let by_id = match reference.id() {
        Some(id) => applies::get(conn, id)?,
        None => None,
    };
    let by_name = match &reference {
        ApplyRef::Id(_) => None,
        ApplyRef::Name(name) | ApplyRef::Either(name) => applies::get_by_identifier(conn, name)?,
    };
    match (by_id, by_name) {
        (Some(by_id), Some(by_name)) if by_id.id != by_name.id => Err(Failure::Usage(format!(
            "{:?} is ambiguous: apply {} has that id, and apply {} ({}) that identifier; say \
             id:{} or name:{}; nothing was done",
            text,
            by_id.id,
            by_name.id,
            shown(&by_name.apply_identifier),
            by_id.id,
            shown(text)
        ))),
        (Some(apply), _) | (None, Some(apply)) => Ok(apply),
        (None, None) => Err(Failure::Refused(match reference {
            ApplyRef::Id(id) => format!("apply {id} does not exist"),
            ApplyRef::Name(name) => format!("no apply has the identifier {name:?}"),
            // No apply has it as identifier either.
            ApplyRef::Either(text) => match reference.id() {
                Some(id) => format!("apply {id} does not exist"),
                None => format!("no apply has the id or identifier {text:?}"),
            },
        })),
    }
}

/// The apply `text` names (see [`resolve_apply_on`]).
fn resolve_apply(store: &Store, text: &str) -> Result<Apply, Failure> {
    store.run(|conn| Ok(resolve_apply_on(conn, text)))?
}

/// The operation of `apply` for `deployment`.
fn resolve_deployment(
    store: &Store,
    apply: &Apply,
    deployment: &str,
) -> Result<ApplyOperation, Failure> {
    if let Some(op) = store
        .apply_operations()
        .get_by_apply_and_deployment(apply.id, deployment)?
    {
        return Ok(op);
    }
    let names: Vec<String> = store
        .apply_operations()
        .list_by_apply(apply.id)?
        .into_iter()
        .map(|op| shown(&op.deployment).into_owned())
        .collect();
    let listed = match names.len() {
        0..=20 => names.join(", "),
        n => format!("{}, … ({n} in all)", names[..20].join(", ")),
    };
    Err(Failure::Refused(format!(
        "apply {} ({}) has no deployment {deployment:?}; its deployments: {listed}",
        apply.id,
        shown(&apply.apply_identifier),
    )))
}

/// The apply `apply` names and, when `deployment` is given, its operation for that deployment.
fn resolve_target(
    store: &Store,
    apply: &str,
    deployment: Option<&str>,
) -> Result<(Apply, Option<ApplyOperation>), Failure> {
    let apply = resolve_apply(store, apply)?;
    let operation = deployment
        .map(|deployment| resolve_deployment(store, &apply, deployment))
        .transpose()?;
    Ok((apply, operation))
}

/// The database's time now (read with the leases), falling back to this machine's clock when
/// nothing was read.
fn read_time(leases: &[applyops::models::LiveLease]) -> NaiveDateTime {
    leases
        .first()
        .map_or_else(|| Utc::now().naive_utc(), |lease| lease.read_at)
}

/// Apply `id`, its operations and its pending requests, in one read transaction (one snapshot);
/// not its tasks, which no view prints (an apply may have a million).
fn apply_view(store: &Store, id: ApplyId) -> Result<ApplyView, Failure> {
    store
        .run(|conn| {
            conn.transaction(|conn| {
                let Some(apply) = applies::get(conn, id)? else {
                    return Ok(None);
                };
                Ok(Some(ApplyView {
                    apply,
                    operations: apply_operations::list_by_apply(conn, id)?,
                    pending_requests: control_requests::list_pending(conn, id)?,
                }))
            })
        })?
        .ok_or(Failure::Store(StoreError::ApplyNotFound { id }))
}

/// `status`'s document for apply `id`.
fn status_doc(store: &Store, id: ApplyId) -> Result<StatusDoc, Failure> {
    let view = apply_view(store, id)?;
    let blockers = store.applies().blockers(id)?;
    let leases = store.leases().live(None)?;
    Ok(StatusDoc::new(
        &view,
        &blockers,
        &leases,
        read_time(&leases),
    ))
}

/// `status` as text: the apply, a table of its deployments, its pending requests. Every stored
/// value is [`shown`] escaped.
fn status_text(doc: &StatusDoc, style: Style) -> String {
    let apply = &doc.apply;
    let now = chrono::DateTime::parse_from_rfc3339(&doc.read_at)
        .map(|at| at.naive_utc())
        .unwrap_or_else(|_| Utc::now().naive_utc());
    let parse = |at: &str| chrono::DateTime::parse_from_rfc3339(at).map(|at| at.naive_utc());
    let mut text = String::new();
    let state = ApplyState::from_stored(apply.state).unwrap_or(ApplyState::Pending);
    let mut head = style.table(&["APPLY", "STATE", "PROGRESS", "TARGET"]);
    head.add_row(vec![
        cell(&format!("{} {}", apply.id, apply.identifier)),
        style.state_cell(state),
        comfy_table::Cell::new(apply.progress_text()),
        comfy_table::Cell::new(format!(
            "{} / {}",
            shown(&apply.database),
            shown(&apply.environment)
        )),
    ]);
    keep_whole(&mut head, &[1, 2]);
    text.push_str(&table_text(&head));
    let mut facts = Vec::new();
    if !apply.requested_by.is_empty() {
        facts.push(format!("requested by {}", shown(&apply.requested_by)));
    }
    if let Ok(at) = parse(&apply.created_at) {
        facts.push(format!("created {}", age(at, now)));
    }
    if let Some(Ok(at)) = apply.started_at.as_deref().map(parse) {
        facts.push(format!("started {}", age(at, now)));
    }
    if let Some(Ok(at)) = apply.completed_at.as_deref().map(parse) {
        facts.push(format!("settled {}", age(at, now)));
    }
    if apply.defer_cutover {
        facts.push("cutovers on request".to_owned());
    }
    if let Some(cap) = apply.max_concurrency {
        facts.push(format!("max_concurrency {cap}"));
    }
    text.push_str(&facts.join(", "));
    text.push('\n');
    if let Some(error) = &apply.error {
        text.push_str(&format!("error: {}\n", shown(error)));
    }
    text.push('\n');
    let mut table = style.table(&["DEPLOYMENT", "STATE", "POLICY", "TRY", "HOLDER"]);
    let mut why = style.table(&["DEPLOYMENT", "STARTED", "DONE", "WHY"]);
    for op in &doc.operations {
        let state = ApplyState::from_stored(op.state).unwrap_or(ApplyState::Pending);
        let holder = op.holder.as_ref().map_or_else(
            || "-".to_owned(),
            |h| {
                format!(
                    "{} ({} left)",
                    shown(&h.owner),
                    short_duration(Duration::from_secs_f64(h.expires_in_seconds))
                )
            },
        );
        let at = |when: Option<&str>| {
            when.and_then(|when| parse(when).ok())
                .map_or_else(|| "-".to_owned(), |at| age(at, now))
        };
        let reason = match (&op.blocker, &op.error) {
            (_, Some(error))
                if matches!(state, ApplyState::Failed | ApplyState::FailedRetryable) =>
            {
                format!("error: {}", shown(error))
            }
            // Its names are escaped already.
            (Some(blocker), _) => blocker.text.clone(),
            (None, Some(error)) => format!("last error: {}", shown(error)),
            (None, None) if op.holder.is_some() => "held".to_owned(),
            (None, None) => "-".to_owned(),
        };
        table.add_row(vec![
            cell(&op.deployment),
            style.state_cell(state),
            comfy_table::Cell::new(format!("{}/{}", op.cutover_policy, op.on_failure)),
            comfy_table::Cell::new(op.attempt),
            comfy_table::Cell::new(holder),
        ]);
        why.add_row(vec![
            cell(&op.deployment),
            comfy_table::Cell::new(at(op.started_at.as_deref())),
            comfy_table::Cell::new(at(op.completed_at.as_deref())),
            comfy_table::Cell::new(reason),
        ]);
    }
    keep_whole(&mut table, &[1, 2, 3]);
    keep_whole(&mut why, &[1, 2]);
    text.push_str(&table_text(&table));
    text.push('\n');
    text.push_str(&table_text(&why));
    if !doc.pending_requests.is_empty() {
        text.push_str("\npending requests:\n");
        let mut requests = style.table(&["ID", "KIND", "FOR", "BY", "AGE", "REASON"]);
        for request in &doc.pending_requests {
            let at = parse(&request.created_at).map_or_else(|_| "-".to_owned(), |at| age(at, now));
            requests.add_row(vec![
                comfy_table::Cell::new(request.id),
                comfy_table::Cell::new(request.kind),
                match request.deployment.as_deref() {
                    Some(deployment) => cell(deployment),
                    None => comfy_table::Cell::new("whole apply"),
                },
                cell(&request.requested_by),
                comfy_table::Cell::new(at),
                cell(request.reason.as_deref().unwrap_or("")),
            ]);
        }
        keep_whole(&mut requests, &[0, 1, 4]);
        text.push_str(&table_text(&requests));
    }
    text
}

/// `applies`.
fn applies(store: &Store, args: &AppliesArgs, style: Style, out: &mut impl Write) -> CommandResult {
    let filter = ApplyFilter {
        states: args.states.clone(),
        database_name: args.database.clone(),
        environment: args.environment.clone(),
        deployment: args.deployment.clone(),
        created_since: None,
        limit: Some(args.limit),
        after: args.after.clone(),
    };
    let page = store.applies().list(&filter)?;
    let ids: Vec<ApplyId> = page.items.iter().map(|apply| apply.id).collect();
    let progress = store.applies().progress(&ids)?;
    let docs: Vec<ApplyDoc> = page
        .items
        .iter()
        .zip(&progress)
        .map(|(apply, progress)| ApplyDoc::new(apply, Some(progress)))
        .collect();
    let next = page.next.map(|cursor| cursor.to_string());
    if args.json {
        print_json(
            out,
            &AppliesDoc {
                applies: docs,
                next,
            },
        );
        return Ok(());
    }
    if docs.is_empty() {
        writeln!(out, "no applies").ok();
        return Ok(());
    }
    let now = Utc::now().naive_utc();
    let mut table = style.table(&[
        "ID",
        "IDENTIFIER",
        "DATABASE",
        "ENV",
        "STATE",
        "PROGRESS",
        "AGE",
    ]);
    for (apply, doc) in page.items.iter().zip(&docs) {
        table.add_row(vec![
            comfy_table::Cell::new(doc.id),
            cell(&doc.identifier),
            cell(&doc.database),
            cell(&doc.environment),
            style.state_cell(apply.state),
            comfy_table::Cell::new(doc.progress_text()),
            comfy_table::Cell::new(age(apply.created_at, now)),
        ]);
    }
    keep_whole(&mut table, &[0, 4, 5]);
    out.write_all(table_text(&table).as_bytes()).ok();
    if let Some(next) = next {
        writeln!(out, "more: applyops applies --after {next}").ok();
    }
    Ok(())
}

/// `create --dry-run`: the rollout read from the file, checked by the same rules as
/// [`Store::create_rollout`] before it writes anything ([`applies::validate_rollout`]), and what
/// would be created; no database is opened. A rollout those rules refuse fails as `create` does.
fn dry_run(rollout: &NewRollout, json: bool, out: &mut impl Write) -> CommandResult {
    applies::validate_rollout(rollout).map_err(refused_rollout)?;
    if json {
        print_json(
            out,
            &serde_json::json!({ "dry_run": true, "rollout": rollout }),
        );
        return Ok(());
    }
    let names: Vec<String> = rollout
        .operations
        .iter()
        .map(|op| shown(&op.deployment).into_owned())
        .collect();
    let listed = match names.len() {
        0..=10 => names.join(", "),
        n => format!("{}, … ({n} in all)", names[..10].join(", ")),
    };
    let tasks: usize = rollout.operations.iter().map(|op| op.tasks.len()).sum();
    writeln!(
        out,
        "would create apply {} on {} / {}, requested by {}: {} deployment(s) ({listed}), {tasks} \
         task(s)",
        shown(&rollout.apply_identifier),
        shown(&rollout.database_name),
        shown(&rollout.environment),
        shown(&rollout.requested_by),
        rollout.operations.len(),
    )
    .ok();
    writeln!(
        out,
        "dry run: the file is valid; not checked: whether the identifier is taken or a target is \
         busy (that needs the database); nothing was written"
    )
    .ok();
    Ok(())
}

/// A rollout the store refused: its own words, and that nothing was created.
fn refused_rollout(err: StoreError) -> Failure {
    match err {
        StoreError::InvalidInput { .. }
        | StoreError::TargetBusy { .. }
        | StoreError::ApplyExists { .. } => Failure::Refused(format!("{err}; nothing was created")),
        other => Failure::Store(other),
    }
}

/// `create`.
fn create(
    store: &Store,
    rollout: &NewRollout,
    json: bool,
    style: Style,
    out: &mut impl Write,
) -> CommandResult {
    let created = store.create_rollout(rollout).map_err(refused_rollout)?;
    let doc = status_doc(store, created.apply.id)?;
    if json {
        print_json(out, &doc);
    } else {
        writeln!(
            out,
            "created apply {} ({}) with {} deployment(s)",
            created.apply.id,
            shown(&created.apply.apply_identifier),
            created.operations.len()
        )
        .ok();
        out.write_all(status_text(&doc, style).as_bytes()).ok();
    }
    Ok(())
}

/// When `wait` and `watch` give up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// `None`: never (no `--timeout`, or one past what the clock can represent).
    at: Option<Instant>,
}

impl Deadline {
    /// `seconds` from now, or never.
    pub fn after(seconds: Option<u64>) -> Deadline {
        let at = seconds.and_then(|secs| Instant::now().checked_add(Duration::from_secs(secs)));
        Deadline { at }
    }

    /// True once it has passed.
    pub fn passed(&self) -> bool {
        self.at.is_some_and(|at| Instant::now() >= at)
    }

    /// Sleeps for `interval`, but never past the deadline.
    pub fn sleep(&self, interval: Duration) {
        let left = self.at.map_or(interval, |at| {
            at.saturating_duration_since(Instant::now()).min(interval)
        });
        std::thread::sleep(left);
    }
}

/// `wait`. Ends at once (exit 3) when what it waits on settles in a state not asked for: a settled
/// state (`is_settled`) changes only by an operator's retry, which `wait` does not wait for.
fn wait(store: &Store, args: &WaitArgs, out: &mut impl Write) -> CommandResult {
    let (apply, operation) = resolve_target(store, &args.apply, args.deployment.as_deref())?;
    let deadline = Deadline::after(Some(args.timeout));
    let what = match &operation {
        Some(op) => format!("deployment {} of apply {}", shown(&op.deployment), apply.id),
        None => format!("apply {} ({})", apply.id, shown(&apply.apply_identifier)),
    };
    loop {
        let state = match &operation {
            Some(op) => store
                .apply_operations()
                .get(op.id)?
                .map(|op| op.state)
                .ok_or(StoreError::ApplyOperationNotFound { id: op.id })?,
            None => store
                .applies()
                .get(apply.id)?
                .map(|apply| apply.state)
                .ok_or(StoreError::ApplyNotFound { id: apply.id })?,
        };
        if args.states.contains(&state) {
            writeln!(out, "{state}").ok();
            return Ok(());
        }
        if is_settled(state) {
            writeln!(out, "{state}").ok();
            return Err(Failure::EndedOtherwise(format!(
                "{what} settled as {state}, not {}: only an operator's retry moves it from there",
                asked(&args.states)
            )));
        }
        if deadline.passed() {
            return Err(Failure::TimedOut(format!(
                "timed out after {} s: {what} is {state}, not {}",
                args.timeout,
                asked(&args.states)
            )));
        }
        deadline.sleep(Duration::from_millis(args.interval_ms.max(10)));
    }
}

/// The states asked for, as `a or b`.
fn asked(states: &[ApplyState]) -> String {
    states
        .iter()
        .map(|state| state.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `leases`.
fn leases(
    store: &Store,
    owner: Option<&str>,
    json: bool,
    style: Style,
    out: &mut impl Write,
) -> CommandResult {
    let leases = store.leases().live(owner)?;
    let read_at = read_time(&leases);
    if json {
        print_json(
            out,
            &LeasesDoc {
                leases: leases.iter().map(LeaseDoc::new).collect(),
                read_at: render::rfc3339(read_at),
            },
        );
        return Ok(());
    }
    if leases.is_empty() {
        writeln!(out, "no live leases").ok();
        return Ok(());
    }
    let mut table = style.table(&["OP", "APPLY", "DEPLOYMENT", "STATE", "OWNER", "EXPIRES"]);
    for lease in &leases {
        table.add_row(vec![
            comfy_table::Cell::new(lease.operation_id),
            comfy_table::Cell::new(lease.apply_id),
            cell(&lease.deployment),
            style.state_cell(lease.state),
            cell(&lease.owner),
            comfy_table::Cell::new(short_duration(lease.expires_in())),
        ]);
    }
    keep_whole(&mut table, &[0, 1, 3, 5]);
    out.write_all(table_text(&table).as_bytes()).ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_hidden_or_not_has_examples_in_its_help() {
        let mut command = Cli::command();
        command.build();
        for sub in command.get_subcommands_mut() {
            let name = sub.get_name().to_owned();
            if name == "help" {
                continue;
            }
            let long = sub.render_long_help().to_string();
            let short = sub.render_help().to_string();
            for (which, text) in [("--help", long), ("-h", short)] {
                assert!(text.contains("Examples:"), "{name} {which}:\n{text}");
                assert!(
                    text.contains(&format!("applyops {name}")),
                    "{name} {which}: an example runs it:\n{text}"
                );
            }
        }
    }
}
