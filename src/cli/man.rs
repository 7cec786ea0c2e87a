//! `applyops man --out-dir DIR` (`make man`): the man pages, rendered by clap_mangen from the same
//! clap definitions as `--help`, so that they cannot say something else.
//!
//! Two things are added to what clap_mangen writes. The text `--help` shows after the options
//! (the examples, `create`'s rollout format) keeps its layout: clap_mangen sets it as one filled
//! paragraph, which runs the examples together, so it is left out of clap_mangen's page and
//! written here as its own section, command lines and the TOML example unfilled. And the page
//! starts with its `.TH` title, as man pages do: roff's two-line apostrophe preamble follows it.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_mangen::roff::{roman, Roff};

use super::text::shown;
use super::{Cli, CommandResult, Failure};

/// Writes `applyops.1` and `applyops-NAME.1` for each command that is not hidden into `dir`
/// (created if missing), and says so on `out`.
pub fn write_pages(dir: &Path, out: &mut impl Write) -> CommandResult {
    let shown_dir = shown(&dir.display().to_string()).into_owned();
    let failed = |err: std::io::Error| {
        Failure::Refused(format!("cannot write the man pages to {shown_dir}: {err}"))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    // Built, so that each command's page is titled `applyops-NAME` and its synopsis reads
    // `applyops NAME`; clap's `help` command has no page.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let commands = command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned();
    for page in std::iter::once(command.clone()).chain(commands) {
        let man = clap_mangen::Man::new(page.clone());
        let path = dir.join(man.get_filename());
        std::fs::write(&path, page_text(page)).map_err(failed)?;
        writeln!(out, "wrote {}", shown(&path.display().to_string())).ok();
    }
    Ok(())
}

/// The page of `command` (built): clap_mangen's, without the text after the options, which
/// follows as a section of its own ([`after_help_section`]), and with `.TH` first.
fn page_text(command: clap::Command) -> String {
    let after = command
        .get_after_long_help()
        .or_else(|| command.get_after_help())
        .map(ToString::to_string);
    let bare = command
        .after_help(None::<&str>)
        .after_long_help(None::<&str>);
    let mut page = Vec::new();
    clap_mangen::Man::new(bare)
        .source(format!("applyops {}", env!("CARGO_PKG_VERSION")))
        .manual("applyops")
        .render(&mut page)
        .expect("writing to a Vec cannot fail");
    let mut page = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    if let Some(after) = after {
        page.push_str(&after_help_section(&after));
    }
    title_first(&page)
}

/// `text` (what `--help` shows after the options) as a man page section: EXAMPLES when it starts
/// with them, NOTES otherwise. Blocks are separated by blank lines; indented lines (commands, the
/// TOML example) are set as they are, other lines filled as paragraphs.
fn after_help_section(text: &str) -> String {
    let mut roff = Roff::new();
    let title = if text.starts_with("Examples:") {
        "EXAMPLES"
    } else {
        "NOTES"
    };
    roff.control("SH", [title]);
    for block in text.split("\n\n") {
        roff.control("PP", []);
        let mut unfilled = false;
        for line in block.lines() {
            let indented = line.starts_with("  ");
            if indented != unfilled {
                roff.control(if indented { "nf" } else { "fi" }, []);
                unfilled = indented;
            }
            roff.text([roman(line)]);
        }
        if unfilled {
            roff.control("fi", []);
        }
    }
    let rendered = roff.render();
    // Without roff's preamble, which the page has already.
    match rendered.find(".SH") {
        Some(at) => rendered[at..].to_owned(),
        None => rendered,
    }
}

/// `page` with its `.TH` line first.
fn title_first(page: &str) -> String {
    let Some(title) = page.lines().find(|line| line.starts_with(".TH ")) else {
        return page.to_owned();
    };
    let mut text = format!("{title}\n");
    let mut moved = false;
    for line in page.lines() {
        if !moved && line == title {
            moved = true;
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_set_unfilled_and_prose_filled() {
        let section = after_help_section(
            "Examples:\n  applyops migrate\n  applyops status x\n\nSome prose\nthat wraps.",
        );
        assert!(section.starts_with(".SH EXAMPLES\n"), "{section}");
        assert!(
            section.contains(".nf\n  applyops migrate\n  applyops status x\n.fi\n"),
            "{section}"
        );
        assert!(
            section.contains(".PP\nSome prose\nthat wraps.\n"),
            "{section}"
        );
        assert!(!section.contains(".ie"), "no second preamble: {section}");
    }

    #[test]
    fn every_page_starts_with_its_title() {
        let mut command = Cli::command();
        command.build();
        for sub in command.get_subcommands().cloned() {
            let page = page_text(sub);
            assert!(page.starts_with(".TH "), "{page}");
            assert!(page.contains(".ds Aq"), "the preamble is kept: {page}");
        }
    }
}
