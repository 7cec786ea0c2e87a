//! Keeps the documentation's links true. Reads `README.md`, `CHANGELOG.md` and every `docs/*.md`
//! and fails, naming each problem's file and line, when:
//! - a relative link's target does not exist in the repository, or leaves it (`../` past the root,
//!   or an absolute path);
//! - a `#anchor` names no heading of the markdown file it points into (GitHub's slugs, simply:
//!   lowercase, spaces to `-`, punctuation other than `-` and `_` dropped);
//! - a link to a `tests/**.rs` file whose text is one backticked identifier (`` [`name`](…) ``)
//!   names no `fn` of that file;
//! - `README.md` is over 250 lines;
//! - a file mentions the shared directory beside the repository, which users never have.
//!
//! Links inside fenced code blocks and inline code spans are not links; `http(s)://` and `mailto:`
//! links are not checked.

use std::fs;
use std::path::{Component, Path, PathBuf};

const README_MAX_LINES: usize = 250;

#[test]
fn documentation_links_resolve() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("CHANGELOG.md")];
    let mut pages: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("a docs/ directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);

    let mut problems = Vec::new();
    for file in &files {
        check_file(root, file, &mut problems);
    }
    let readme_lines = fs::read_to_string(root.join("README.md"))
        .unwrap()
        .lines()
        .count();
    if readme_lines > README_MAX_LINES {
        problems.push(format!(
            "README.md: {readme_lines} lines; at most {README_MAX_LINES}"
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the documentation:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Checks every link of `file` (and its mentions of the shared directory), adding what is wrong
/// to `problems` as `path:line: …`.
fn check_file(root: &Path, file: &Path, problems: &mut Vec<String>) {
    let text = fs::read_to_string(file).unwrap();
    let name = file.strip_prefix(root).unwrap().display().to_string();
    // Spelt in two pieces, so that this file does not mention it either.
    let shared = ["..", "shared"].join("/");
    let mut in_fence = false;
    for (index, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", index + 1);
        if line.contains(&shared) {
            problems.push(format!(
                "{at}: mentions {shared}, which is outside the repository"
            ));
        }
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for (label, target) in links(line) {
            if let Err(problem) = check_link(root, file, &label, &target) {
                problems.push(format!("{at}: [{label}]({target}): {problem}"));
            }
        }
    }
}

/// The `[label](target)` links of one line, outside inline code spans.
fn links(line: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut backticks = 0;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '`' => backticks += 1,
            // A link starts outside code: after an even number of backticks.
            '[' if backticks % 2 == 0 => {
                if let Some((label, target, end)) = link_at(&chars, i) {
                    found.push((label, target));
                    backticks += chars[i..end].iter().filter(|c| **c == '`').count();
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The link that starts at `chars[start]` (a `[`), and the index just past it.
fn link_at(chars: &[char], start: usize) -> Option<(String, String, usize)> {
    let close = start + chars[start..].iter().position(|c| *c == ']')?;
    if chars[start + 1..close].contains(&'[') || chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let end = close + 2 + chars[close + 2..].iter().position(|c| *c == ')')?;
    let label: String = chars[start + 1..close].iter().collect();
    let target: String = chars[close + 2..end].iter().collect();
    Some((label, target, end + 1))
}

/// Why the link `[label](target)` in `file` is wrong, if it is.
fn check_link(root: &Path, file: &Path, label: &str, target: &str) -> Result<(), String> {
    if ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
    {
        return Ok(());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let resolved = if path.is_empty() {
        file.to_path_buf()
    } else {
        if path.starts_with('/') {
            return Err("an absolute path; use a relative one".into());
        }
        let relative = file
            .parent()
            .unwrap()
            .strip_prefix(root)
            .unwrap()
            .join(path);
        root.join(inside_repository(&relative)?)
    };
    if !resolved.exists() {
        return Err("no such file in the repository".into());
    }
    if let Some(anchor) = anchor {
        if resolved.extension().is_some_and(|ext| ext == "md") {
            let text = fs::read_to_string(&resolved).unwrap();
            if !headings(&text)
                .iter()
                .any(|heading| slug(heading) == anchor)
            {
                return Err(format!("no heading #{anchor} there"));
            }
        }
    }
    let relative = resolved.strip_prefix(root).unwrap();
    let is_test_file =
        relative.starts_with("tests") && relative.extension().is_some_and(|e| e == "rs");
    if let Some(function) = backticked_identifier(label).filter(|_| is_test_file) {
        let code = fs::read_to_string(&resolved).unwrap();
        let defined = [format!("fn {function}("), format!("fn {function}<")]
            .iter()
            .any(|definition| code.contains(definition.as_str()));
        if !defined {
            return Err(format!("no fn {function} in {}", relative.display()));
        }
    }
    Ok(())
}

/// `path` (relative to the repository's root) with `.` and `..` resolved, or an error when it
/// leaves the repository.
fn inside_repository(path: &Path) -> Result<PathBuf, String> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => normal.push(part),
            Component::CurDir => {}
            Component::ParentDir if normal.pop() => {}
            _ => return Err("leaves the repository".into()),
        }
    }
    Ok(normal)
}

/// The text of every heading of a markdown document, outside fenced code.
fn headings(text: &str) -> Vec<String> {
    let mut in_fence = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence && line.starts_with('#') {
            found.push(line.trim_start_matches('#').trim().to_owned());
        }
    }
    found
}

/// GitHub's anchor for a heading, simply: lowercase, spaces become `-`, and every character other
/// than letters, digits, `-` and `_` is dropped.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `name` when `label` is `` `name` ``, a Rust identifier in backticks.
fn backticked_identifier(label: &str) -> Option<&str> {
    let name = label.strip_prefix('`')?.strip_suffix('`')?;
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then_some(name)
}

#[test]
fn slugs_follow_githubs_rules_for_simple_headings() {
    assert_eq!(slug("Timeouts (MySQL)"), "timeouts-mysql");
    assert_eq!(slug("`src/schema.rs`"), "srcschemars");
    assert_eq!(slug("The pool's checkout ping"), "the-pools-checkout-ping");
    assert_eq!(slug("Write a worker"), "write-a-worker");
}

#[test]
fn links_in_code_spans_are_not_links() {
    let line = "see [`name`](tests/it/x.rs) and `[not](a link)` then [b](c#d)";
    assert_eq!(
        links(line),
        vec![
            ("`name`".to_owned(), "tests/it/x.rs".to_owned()),
            ("b".to_owned(), "c#d".to_owned()),
        ]
    );
    assert_eq!(
        inside_repository(Path::new("docs/../README.md")).unwrap(),
        PathBuf::from("README.md")
    );
    assert!(inside_repository(Path::new("docs/../../x")).is_err());
}
