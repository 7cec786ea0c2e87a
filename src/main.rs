//! `applyops`: the operator's command line for an applyops database.
//!
//! ```text
//! applyops --database-url sqlite://applyops.db migrate
//! applyops --database-url mysql://root@127.0.0.1:3306/applyops list 42
//! applyops --database-url mysql://root@127.0.0.1:3306/applyops revert --yes
//! ```

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

use applyops::{db, store, StoreError};
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};

/// Operate an applyops database: run migrations, inspect rollouts.
#[derive(Debug, Parser)]
#[command(name = "applyops", version, about)]
struct Cli {
    /// `mysql://user:password@host:port/database`, a SQLite file path or `sqlite://path`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://applyops.db")]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every pending migration (serialised with other runners) and print the versions applied.
    Migrate,
    /// Revert the most recently applied migration and print its version. Destructive: its down.sql
    /// drops what the migration created, data included.
    Revert {
        /// Confirm the revert. Without it, nothing is changed.
        #[arg(long)]
        yes: bool,
        /// Revert even when it drops a table (or columns of one) that holds rows, losing them.
        #[arg(long)]
        force: bool,
    },
    /// Print the operations of an apply, oldest first, one JSON object per line. Timestamps are UTC,
    /// in RFC 3339 with a `Z`.
    List {
        /// The apply's id.
        apply_id: applyops::models::ApplyId,
    },
}

/// Subcommands that destroy data: clap never suggests them for a mistyped subcommand, so a typo
/// (`retry`) is not answered with "a similar subcommand exists: 'revert'".
const DESTRUCTIVE_COMMANDS: [&str; 1] = ["revert"];

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// The store failed.
    Store(StoreError),
    /// The command refused to run as asked; nothing was changed.
    Refused(String),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Failure::Store(err)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Store(err) => err.fmt(f),
            Failure::Refused(reason) => f.write_str(reason),
        }
    }
}

fn run(cli: Cli, out: &mut impl Write, warn: &mut impl Write) -> Result<(), Failure> {
    if let Command::Revert { yes: false, .. } = cli.command {
        // Refused before connecting: opening a SQLite path that does not exist would create it.
        return Err(Failure::Refused(
            "refusing to revert without --yes: `revert` reverts the newest applied migration, whose \
             down.sql drops what it created (tables and columns, with their data); nothing was \
             changed. Rerun with --yes to revert; a revert that would drop rows also needs --force"
                .to_owned(),
        ));
    }
    let conn = &mut db::establish(&cli.database_url)?;
    if !matches!(cli.command, Command::Migrate | Command::Revert { .. }) {
        // Every other command needs the full schema; without it, it would fail with "no such table"
        // or "Unknown column".
        db::ensure_migrated(conn)?;
    }
    match cli.command {
        Command::Migrate => {
            let applied = db::run_migrations(conn)?;
            if applied.is_empty() {
                writeln!(out, "no pending migrations").ok();
            }
            for version in applied {
                writeln!(out, "applied {version}").ok();
            }
        }
        Command::Revert { yes: _, force } => {
            let reverted = db::revert_last_migration_checked(conn, |preview| {
                let losing: Vec<String> = preview.data_loss().map(ToString::to_string).collect();
                if losing.is_empty() || force {
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
        }
        Command::List { apply_id } => {
            let operations = store::apply_operations::list_by_apply(conn, apply_id)?;
            if store::applies::get(conn, apply_id)?.is_none() {
                if operations.is_empty() {
                    return Err(StoreError::ApplyNotFound { id: apply_id }.into());
                }
                writeln!(
                    warn,
                    "applyops: warning: apply {apply_id} has no row in applies; listing its {} \
                     orphaned operation(s)",
                    operations.len()
                )
                .ok();
            }
            for operation in operations {
                let line = serde_json::to_string(&operation).expect("rows serialise");
                writeln!(out, "{line}").ok();
            }
        }
    }
    Ok(())
}

/// Parses the command line like [`Cli::parse`], except that an unknown subcommand is never answered
/// with a suggestion to run a destructive one.
fn parse() -> Cli {
    Cli::try_parse().unwrap_or_else(|err| without_destructive_suggestions(err).exit())
}

/// `err` without the destructive subcommands among its suggestions.
fn without_destructive_suggestions(err: clap::Error) -> clap::Error {
    if err.kind() != ErrorKind::InvalidSubcommand {
        return err;
    }
    let mut cleaned = clap::Error::new(err.kind()).with_cmd(&Cli::command());
    for (kind, value) in err.context() {
        let value = match (kind, value) {
            (ContextKind::SuggestedSubcommand, ContextValue::Strings(names)) => {
                let kept: Vec<String> = names
                    .iter()
                    .filter(|name| !DESTRUCTIVE_COMMANDS.contains(&name.as_str()))
                    .cloned()
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                ContextValue::Strings(kept)
            }
            // An empty tip list would still print a blank line.
            (ContextKind::Suggested, ContextValue::StyledStrs(tips)) if tips.is_empty() => continue,
            (_, value) => value.clone(),
        };
        cleaned.insert(kind, value);
    }
    cleaned
}

fn main() -> ExitCode {
    let cli = parse();
    let result = run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("applyops: {err}");
            ExitCode::FAILURE
        }
    }
}
