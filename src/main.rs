//! `applyops`: the operator's command line for an applyops database.
//!
//! ```text
//! applyops --database-url sqlite://applyops.db migrate
//! applyops --database-url mysql://root@127.0.0.1:3306/applyops applies --state running
//! applyops status demo-rolling
//! applyops stop demo-rolling --by alice --reason "traffic peak"
//! applyops watch 3 4 5
//! applyops revert --yes            # the newest migration (no APPLY)
//! ```
//!
//! Exit codes: 0 ok, 1 error, 2 usage. See the README's "The operator's command line".

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};

mod cli;

use cli::{Cli, Style};

/// Subcommands that can destroy data: clap never suggests them for a mistyped subcommand, so a typo
/// (`retyr`) is not answered with "a similar subcommand exists: 'revert'".
const DESTRUCTIVE_COMMANDS: [&str; 2] = ["revert", "cancel"];

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
    let result = cli::run(
        cli,
        Style::detect(),
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
