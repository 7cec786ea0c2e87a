//! `applyops`: the operator's command line for an applyops database.
//!
//! ```text
//! applyops --database-url sqlite://applyops.db migrate
//! applyops --database-url mysql://root@127.0.0.1:3306/applyops list 42
//! ```

use std::io::Write;
use std::process::ExitCode;

use applyops::{db, store, StoreError};
use clap::{Parser, Subcommand};

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
    /// Revert the most recently applied migration and print its version.
    Revert,
    /// Print the operations of an apply, oldest first, one JSON object per line.
    List {
        /// The apply's id.
        apply_id: i64,
    },
}

fn run(cli: Cli, out: &mut impl Write) -> Result<(), StoreError> {
    let conn = &mut db::establish(&cli.database_url)?;
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
        Command::Revert => {
            match db::revert_last_migration(conn)? {
                Some(version) => writeln!(out, "reverted {version}"),
                None => writeln!(out, "no migration to revert"),
            }
            .ok();
        }
        Command::List { apply_id } => {
            for operation in store::apply_operations::list_by_apply(conn, apply_id)? {
                let line = serde_json::to_string(&operation).expect("rows serialise");
                writeln!(out, "{line}").ok();
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("applyops: {err}");
            ExitCode::FAILURE
        }
    }
}
