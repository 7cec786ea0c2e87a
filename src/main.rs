//! `applyops`: the operator's command line for an applyops database.
//!
//! ```text
//! applyops --database-url sqlite://applyops.db migrate
//! APPLYOPS_DATABASE_URL=mysql://root@127.0.0.1:3306/applyops applyops applies --state running
//! applyops status demo-rolling
//! applyops stop demo-rolling --by alice --reason "traffic peak"
//! applyops watch 3 4 5
//! applyops migrate --revert --yes   # the newest migration
//! applyops completions bash
//! ```
//!
//! Exit codes: 0 done as asked, 1 error, 2 usage, 3 the apply ended otherwise (`wait`, `watch`),
//! 4 timed out. See docs/cli.md.

use std::io::Write;
use std::process::ExitCode;

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches};

mod cli;

use cli::{sanitized_lines, Cli, Database, Style};

/// Subcommands that can destroy data: clap never suggests them for a mistyped subcommand, so a typo
/// (`retyr`) is not answered with "a similar subcommand exists: 'revert'".
const DESTRUCTIVE_COMMANDS: [&str; 2] = ["revert", "cancel"];

/// Parses the command line like [`Cli::parse`], except that an unknown subcommand is never answered
/// with a suggestion to run a destructive one, an error echoing what was typed shows it escaped, and
/// `revert` without an APPLY points at `migrate --revert`.
fn parse() -> Cli {
    let matches = Cli::command().try_get_matches().unwrap_or_else(|err| {
        exit_with(with_migration_revert_tip(without_destructive_suggestions(
            err,
        )))
    });
    Cli::from_arg_matches(&matches).unwrap_or_else(|err| exit_with(err))
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

/// `err`, when it is `revert`'s missing APPLY or an option `revert` no longer takes (the migration
/// revert's `--yes`, `--force`), with a tip naming `migrate --revert`: `revert` once reverted a
/// migration when given no APPLY.
fn with_migration_revert_tip(mut err: clap::Error) -> clap::Error {
    if !matches!(
        err.kind(),
        ErrorKind::MissingRequiredArgument | ErrorKind::UnknownArgument
    ) {
        return err;
    }
    let is_revert = matches!(
        err.get(ContextKind::Usage),
        Some(ContextValue::StyledStr(usage)) if usage.to_string().contains("applyops revert ")
    );
    if !is_revert {
        return err;
    }
    let mut tips = match err.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(StyledStr::from(
        "`revert APPLY` asks for an apply's revert; to revert the newest database migration, run \
         `applyops migrate --revert --yes`",
    ));
    err.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    err
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
    let style = Style::detect(cli.color);
    let result = Database::from_environment(cli.database_url.clone()).and_then(|database| {
        cli::run(
            cli,
            &database,
            style,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
    });
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
