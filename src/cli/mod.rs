//! The commands, their arguments, and what each one does. `main` parses and maps the outcome to an
//! exit code: 0 ok, 1 error, 2 usage.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use applyops::models::{Apply, ApplyId, ApplyOperation, NewRollout};
use applyops::state::{ApplyState, ControlRequestKind};
use applyops::store::applies::{ApplyCursor, ApplyFilter};
use applyops::{db, PoolConfig, Store, StoreError};
use chrono::{NaiveDateTime, Utc};
use clap::{Args, Parser, Subcommand};
use comfy_table::Cell;

mod render;
mod requests;
mod views;
mod watch;

pub use render::Style;
use render::{age, keep_whole, short_duration, table_text};
use views::{AppliesDoc, ApplyDoc, LeaseDoc, LeasesDoc, StatusDoc};

/// Operate an applyops database: migrations, rollouts, operators' requests, leases.
#[derive(Debug, Parser)]
#[command(name = "applyops", version, about)]
pub struct Cli {
    /// `mysql://user:password@host:port/database`, a SQLite file path or `sqlite://path`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://applyops.db",
        global = true
    )]
    pub database_url: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every pending migration (serialised with other runners) and print the versions applied.
    Migrate,
    /// With APPLY: ask for a revert of a deployment in its revert window (or of every one). Without
    /// APPLY: revert the most recently applied migration (destructive: needs --yes).
    Revert(RevertArgs),
    /// Print the operations of an apply, oldest first, one JSON object per line (timestamps RFC 3339
    /// UTC).
    List {
        /// The apply's id.
        apply_id: ApplyId,
    },
    /// List applies, newest first, with their state and progress.
    Applies(AppliesArgs),
    /// Show an apply and each of its deployments: state, holder, why it waits, last error; then its
    /// pending control requests.
    Status {
        /// The apply's id or identifier.
        apply: String,
        /// Print one JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Show applies as `status` does, refreshed in place with a progress bar per deployment, until
    /// every one has settled (or Ctrl-C).
    Watch(watch::WatchArgs),
    /// Wait until an apply (or one deployment of it) reaches a state; exit 1 on timeout.
    Wait(WaitArgs),
    /// Create a rollout (an apply, its operations and their tasks) from a JSON or TOML file.
    Create {
        /// The rollout: `.json` or `.toml` (see the README for the format).
        #[arg(long)]
        file: PathBuf,
        /// Print the created apply as `status --json` does.
        #[arg(long)]
        json: bool,
    },
    /// Ask workers to stop an apply, or one deployment (`start` resumes it).
    Stop(RequestArgs),
    /// Resume a stopped or paused apply, or one deployment.
    Start(RequestArgs),
    /// Cancel an apply, or one deployment: it is not resumed.
    Cancel(RequestArgs),
    /// Let the failures recorded so far through an `on_failure = pause` gate.
    Release(RequestArgs),
    /// Cut over an apply that defers its cutovers (all, in order), or one deployment now.
    Cutover(RequestArgs),
    /// Close a deployment's revert window without reverting (or every one's).
    SkipRevert(RequestArgs),
    /// Retry one failed deployment.
    Retry(RetryArgs),
    /// List every live lease: operation, apply, holder, time left.
    Leases {
        /// Only holders whose name starts with this.
        #[arg(long)]
        owner: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `revert`: an operator's revert request (with APPLY), or a migration revert (without).
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The apply whose deployment(s) to revert. Without it, `revert` reverts a migration.
    pub apply: Option<String>,
    /// The deployment to revert (default: every one in its revert window).
    #[arg(long)]
    pub deployment: Option<String>,
    /// Who asks (recorded with the request).
    #[arg(long = "by")]
    pub by: Option<String>,
    /// Why (recorded with the request).
    #[arg(long)]
    pub reason: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Migration revert: confirm it. Without it, nothing is changed.
    #[arg(long)]
    pub yes: bool,
    /// Migration revert: revert even when it drops a table (or columns of one) that holds rows.
    #[arg(long)]
    pub force: bool,
}

/// The arguments of the request commands.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The apply's id or identifier.
    pub apply: String,
    /// Only this deployment of the apply (default: the whole apply).
    #[arg(long)]
    pub deployment: Option<String>,
    /// Who asks (recorded with the request).
    #[arg(long = "by")]
    pub by: String,
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
    /// The apply's id or identifier.
    pub apply: String,
    /// The failed deployment to retry.
    #[arg(long)]
    pub deployment: String,
    /// Who asks (recorded with the request).
    #[arg(long = "by")]
    pub by: String,
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
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue after this cursor (printed under a full page, and as `next` with --json).
    #[arg(long)]
    pub after: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The apply's id or identifier.
    pub apply: String,
    /// Wait for this deployment's state (default: the apply's own state).
    #[arg(long)]
    pub deployment: Option<String>,
    /// The state to wait for (repeatable: any of them).
    #[arg(long = "state", value_parser = parse_state, required = true)]
    pub states: Vec<ApplyState>,
    /// Give up after this many seconds (exit 1).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// How often to look, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
}

/// A state name, as stored.
fn parse_state(text: &str) -> Result<ApplyState, String> {
    ApplyState::from_stored(text).ok_or_else(|| {
        let names: Vec<&str> = ApplyState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state {text:?}; one of: {}", names.join(", "))
    })
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The store failed.
    Store(StoreError),
    /// The command refused to run as asked, or found nothing to act on; nothing was changed.
    Refused(String),
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
            Failure::Refused(reason) => f.write_str(reason),
        }
    }
}

/// The result of a command.
pub type CommandResult = Result<(), Failure>;

/// Runs `cli`, writing its output to `out` and warnings to `warn`.
pub fn run(cli: Cli, style: Style, out: &mut impl Write, warn: &mut impl Write) -> CommandResult {
    match cli.command {
        Command::Migrate => migrate(&cli.database_url, out),
        Command::Revert(args) if args.apply.is_none() => {
            revert_migration(&cli.database_url, &args, out)
        }
        Command::List { apply_id } => list(&cli.database_url, apply_id, out, warn),
        Command::Create { file, json } => {
            // The file is read and parsed before the database is opened.
            let rollout = read_rollout(&file)?;
            let store = open(&cli.database_url)?;
            create(&store, &rollout, json, style, out)
        }
        command => {
            let store = open(&cli.database_url)?;
            match command {
                Command::Applies(args) => applies(&store, &args, style, out),
                Command::Status { apply, json } => {
                    let apply = resolve_apply(&store, &apply)?;
                    let doc = status_doc(&store, apply.id)?;
                    if json {
                        print_json(out, &doc);
                    } else {
                        out.write_all(status_text(&doc, style).as_bytes()).ok();
                    }
                    Ok(())
                }
                Command::Watch(args) => watch::run(&store, &args, style, out),
                Command::Wait(args) => wait(&store, &args, out),
                Command::Stop(args) => requests::run(&store, ControlRequestKind::Stop, &args, out),
                Command::Start(args) => {
                    requests::run(&store, ControlRequestKind::Start, &args, out)
                }
                Command::Cancel(args) => {
                    requests::run(&store, ControlRequestKind::Cancel, &args, out)
                }
                Command::Release(args) => {
                    requests::run(&store, ControlRequestKind::Release, &args, out)
                }
                Command::Cutover(args) => {
                    requests::run(&store, ControlRequestKind::Cutover, &args, out)
                }
                Command::SkipRevert(args) => {
                    requests::run(&store, ControlRequestKind::SkipRevert, &args, out)
                }
                Command::Revert(args) => {
                    let args = requests::revert_args(args)?;
                    requests::run(&store, ControlRequestKind::Revert, &args, out)
                }
                Command::Retry(args) => {
                    let args = RequestArgs {
                        apply: args.apply,
                        deployment: Some(args.deployment),
                        by: args.by,
                        reason: args.reason,
                        json: args.json,
                    };
                    requests::run(&store, ControlRequestKind::Retry, &args, out)
                }
                Command::Leases { owner, json } => {
                    leases(&store, owner.as_deref(), json, style, out)
                }
                Command::Migrate | Command::List { .. } | Command::Create { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// A store on `url` whose schema is current (a command on an older schema would fail on a missing
/// table or column). Two connections: `watch` reads while nothing else runs.
fn open(url: &str) -> Result<Store, Failure> {
    // One connection first: a wrong URL or an unreachable server fails at once with the
    // connection's own error, not after the pool's wait for a connection.
    db::ensure_migrated(&mut db::establish(url)?)?;
    let config = PoolConfig {
        max_size: 2,
        min_idle: Some(1),
        ..PoolConfig::default()
    };
    Ok(Store::open(url, config)?)
}

/// `migrate`.
fn migrate(url: &str, out: &mut impl Write) -> CommandResult {
    let conn = &mut db::establish(url)?;
    let applied = db::run_migrations(conn)?;
    if applied.is_empty() {
        writeln!(out, "no pending migrations").ok();
    }
    for version in applied {
        writeln!(out, "applied {version}").ok();
    }
    Ok(())
}

/// `revert` without an apply: the newest migration.
fn revert_migration(url: &str, args: &RevertArgs, out: &mut impl Write) -> CommandResult {
    if args.deployment.is_some() || args.by.is_some() || args.reason.is_some() {
        return Err(Failure::Refused(
            "--deployment, --by and --reason belong to a revert request, which names an APPLY; \
             nothing was changed"
                .to_owned(),
        ));
    }
    if !args.yes {
        // Refused before connecting: opening a SQLite path that does not exist would create it.
        return Err(Failure::Refused(
            "refusing to revert without --yes: `revert` without an APPLY reverts the newest \
             applied migration, whose down.sql drops what it created (tables and columns, with \
             their data); nothing was changed. Rerun with --yes to revert; a revert that would \
             drop rows also needs --force"
                .to_owned(),
        ));
    }
    let conn = &mut db::establish(url)?;
    let reverted = db::revert_last_migration_checked(conn, |preview| {
        let losing: Vec<String> = preview.data_loss().map(ToString::to_string).collect();
        if losing.is_empty() || args.force {
            return Ok(());
        }
        Err(Failure::Refused(format!(
            "refusing to revert {} without --force: it would drop {}; nothing was changed. \
             Rerun with --yes --force to revert anyway and lose those rows",
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

/// `list`: JSON lines of an apply's operations.
fn list(
    url: &str,
    apply_id: ApplyId,
    out: &mut impl Write,
    warn: &mut impl Write,
) -> CommandResult {
    let conn = &mut db::establish(url)?;
    db::ensure_migrated(conn)?;
    let operations = applyops::store::apply_operations::list_by_apply(conn, apply_id)?;
    if applyops::store::applies::get(conn, apply_id)?.is_none() {
        if operations.is_empty() {
            return Err(StoreError::ApplyNotFound { id: apply_id }.into());
        }
        writeln!(
            warn,
            "applyops: warning: apply {apply_id} has no row in applies; listing its {} orphaned \
             operation(s)",
            operations.len()
        )
        .ok();
    }
    for operation in operations {
        let line = serde_json::to_string(&operation).expect("rows serialise");
        writeln!(out, "{line}").ok();
    }
    Ok(())
}

/// Prints `doc` as one line of JSON.
fn print_json(out: &mut impl Write, doc: &impl serde::Serialize) {
    let text = serde_json::to_string(doc).expect("documents serialise");
    writeln!(out, "{text}").ok();
}

/// The apply `text` names: its id when it is a number and such an apply exists, else its
/// identifier.
fn resolve_apply(store: &Store, text: &str) -> Result<Apply, Failure> {
    if let Ok(id) = text.parse::<i64>() {
        if let Some(apply) = store.applies().get(ApplyId(id))? {
            return Ok(apply);
        }
    }
    store
        .applies()
        .get_by_identifier(text)?
        .ok_or_else(|| Failure::Refused(format!("no apply has the id or identifier {text:?}")))
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
        .map(|op| op.deployment)
        .collect();
    Err(Failure::Refused(format!(
        "apply {} ({}) has no deployment {deployment:?}; its deployments: {}",
        apply.id,
        apply.apply_identifier,
        names.join(", ")
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

/// `status`'s document for apply `id`.
fn status_doc(store: &Store, id: ApplyId) -> Result<StatusDoc, Failure> {
    let rollout = store
        .applies()
        .rollout(id)?
        .ok_or(StoreError::ApplyNotFound { id })?;
    let blockers = store.applies().blockers(id)?;
    let leases = store.leases().live(None)?;
    Ok(StatusDoc::new(
        &rollout,
        &blockers,
        &leases,
        read_time(&leases),
    ))
}

/// `status` as text: the apply, a table of its deployments, its pending requests.
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
        Cell::new(format!("{} {}", apply.id, apply.identifier)),
        style.state_cell(state),
        Cell::new(apply.progress_text()),
        Cell::new(format!("{} / {}", apply.database, apply.environment)),
    ]);
    keep_whole(&mut head, &[1, 2]);
    text.push_str(&table_text(&head));
    let mut facts = Vec::new();
    if !apply.requested_by.is_empty() {
        facts.push(format!("requested by {}", apply.requested_by));
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
        text.push_str(&format!("error: {error}\n"));
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
                    h.owner,
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
                format!("error: {error}")
            }
            (Some(blocker), _) => blocker.text.clone(),
            (None, Some(error)) => format!("last error: {error}"),
            (None, None) if op.holder.is_some() => "held".to_owned(),
            (None, None) => "-".to_owned(),
        };
        table.add_row(vec![
            Cell::new(&op.deployment),
            style.state_cell(state),
            Cell::new(format!("{}/{}", op.cutover_policy, op.on_failure)),
            Cell::new(op.attempt),
            Cell::new(holder),
        ]);
        why.add_row(vec![
            Cell::new(&op.deployment),
            Cell::new(at(op.started_at.as_deref())),
            Cell::new(at(op.completed_at.as_deref())),
            Cell::new(reason),
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
                Cell::new(request.id),
                Cell::new(request.kind),
                Cell::new(request.deployment.as_deref().unwrap_or("whole apply")),
                Cell::new(&request.requested_by),
                Cell::new(at),
                Cell::new(request.reason.as_deref().unwrap_or("")),
            ]);
        }
        text.push_str(&table_text(&requests));
    }
    text
}

/// `applies`.
fn applies(store: &Store, args: &AppliesArgs, style: Style, out: &mut impl Write) -> CommandResult {
    let after = args
        .after
        .as_deref()
        .map(str::parse::<ApplyCursor>)
        .transpose()?;
    let filter = ApplyFilter {
        states: args.states.clone(),
        database_name: args.database.clone(),
        environment: args.environment.clone(),
        deployment: args.deployment.clone(),
        created_since: None,
        limit: Some(args.limit),
        after,
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
            Cell::new(doc.id),
            Cell::new(&doc.identifier),
            Cell::new(&doc.database),
            Cell::new(&doc.environment),
            style.state_cell(apply.state),
            Cell::new(doc.progress_text()),
            Cell::new(age(apply.created_at, now)),
        ]);
    }
    keep_whole(&mut table, &[0, 4, 5]);
    out.write_all(table_text(&table).as_bytes()).ok();
    if let Some(next) = next {
        writeln!(out, "more: applyops applies --after {next}").ok();
    }
    Ok(())
}

/// The rollout in `file`: TOML for a `.toml` name, JSON otherwise.
fn read_rollout(file: &std::path::Path) -> Result<NewRollout, Failure> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        Failure::Refused(format!(
            "cannot read {}: {err}; nothing was created",
            file.display()
        ))
    })?;
    let is_toml = file
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
    if is_toml {
        toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start].lines().count().max(1));
            Failure::Refused(format!(
                "{} is not a valid rollout: {}{}; nothing was created",
                file.display(),
                err.message().trim_end(),
                line.map_or_else(String::new, |line| format!(" at line {line}"))
            ))
        })
    } else {
        serde_json::from_str(&text).map_err(|err| {
            Failure::Refused(format!(
                "{} is not a valid rollout: {err}; nothing was created",
                file.display()
            ))
        })
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
    let created = store.create_rollout(rollout).map_err(|err| match err {
        StoreError::InvalidInput { .. }
        | StoreError::TargetBusy { .. }
        | StoreError::ApplyExists { .. } => Failure::Refused(format!("{err}; nothing was created")),
        other => Failure::Store(other),
    })?;
    let doc = status_doc(store, created.apply.id)?;
    if json {
        print_json(out, &doc);
    } else {
        writeln!(
            out,
            "created apply {} ({}) with {} deployment(s)",
            created.apply.id,
            created.apply.apply_identifier,
            created.operations.len()
        )
        .ok();
        out.write_all(status_text(&doc, style).as_bytes()).ok();
    }
    Ok(())
}

/// `wait`.
fn wait(store: &Store, args: &WaitArgs, out: &mut impl Write) -> CommandResult {
    let (apply, operation) = resolve_target(store, &args.apply, args.deployment.as_deref())?;
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout);
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
        if std::time::Instant::now() >= deadline {
            let what = match &operation {
                Some(op) => format!("deployment {} of apply {}", op.deployment, apply.id),
                None => format!("apply {}", apply.id),
            };
            return Err(Failure::Refused(format!(
                "timed out after {} s: {what} is {state}",
                args.timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(args.interval_ms.max(10)));
    }
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
            Cell::new(lease.operation_id),
            Cell::new(lease.apply_id),
            Cell::new(&lease.deployment),
            style.state_cell(lease.state),
            Cell::new(&lease.owner),
            Cell::new(short_duration(lease.expires_in())),
        ]);
    }
    keep_whole(&mut table, &[0, 1, 3, 5]);
    out.write_all(table_text(&table).as_bytes()).ok();
    Ok(())
}
