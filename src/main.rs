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
//! Exit codes: 0 done as asked, 1 error, 2 usage, 3 the apply ended otherwise (`wait`, `watch`),
//! 4 timed out. See the README's "The operator's command line".

use std::io::Write;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

mod cli;

use cli::{sanitized_lines, Cli, Database, Style, UrlSource};

/// Subcommands that can destroy data: clap never suggests them for a mistyped subcommand, so a typo
/// (`retyr`) is not answered with "a similar subcommand exists: 'revert'".
const DESTRUCTIVE_COMMANDS: [&str; 2] = ["revert", "cancel"];

/// Parses the command line like [`Cli::parse`], except that an unknown subcommand is never answered
/// with a suggestion to run a destructive one, and an error echoing what was typed shows it
/// escaped. Also returns the database URL and where it came from.
fn parse() -> (Cli, Database) {
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|err| exit_with(without_destructive_suggestions(err)));
    let source = match matches.value_source("database_url") {
        Some(ValueSource::CommandLine) => UrlSource::Flag,
        Some(ValueSource::EnvVariable) => UrlSource::Environment,
        _ => UrlSource::Default,
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| exit_with(err));
    let database = Database::new(cli.database_url.clone(), source);
    (cli, database)
}

/// Exits as clap does for `err` (help and version on stdout with exit 0, errors on stderr with exit
/// 2), but an error's text, which may echo an argument, is written without its styling and with
/// every non-printable character escaped.
fn exit_with(err: clap::Error) -> ! {
    if !err.use_stderr() {
        err.exit()
    }
    let text = err.render().to_string();
    std::io::stderr()
        .write_all(sanitized_lines(&text).as_bytes())
        .ok();
    std::process::exit(err.exit_code())
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
    let (cli, database) = parse();
    let result = cli::run(
        cli,
        &database,
        Style::detect(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Ok(()) => ExitCode::from(cli::EXIT_OK),
        Err(err) => {
            // Stored text in a message is escaped where it is put in; this is the last guard.
            writeln!(
                std::io::stderr(),
                "applyops: {}",
                sanitized_lines(&err.to_string())
            )
            .ok();
            ExitCode::from(err.exit_code())
        }
    }
}
