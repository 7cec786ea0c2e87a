//! The crate's layers, as `src/lib.rs` describes them, checked against the imports of every source
//! file: no module may name a layer above its own. A path `crate::<module>` in code (not in comments)
//! is an import of that module's layer.

use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer and the ones before it.
const LAYERS: [&[&str]; 8] = [
    &["state", "schema_types"],
    &["schema"],
    &["models"],
    &["error"],
    &["db"],
    &["store"],
    &["facade"],
    // The binary's modules: users of the crate, on top of everything.
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to (`src/store/claims/copy.rs` → `store`).
fn module_of(file: &Path, src: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::<module>` paths in the code of `text` (comment lines skipped), with line numbers.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded_by_dollar = at > 0 && rest.as_bytes()[at - 1] == b'$';
            if !name.is_empty() && !preceded_by_dollar {
                found.push((number + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(file, &src) else {
            continue;
        };
        // lib.rs is the root that assembles the layers; main.rs is the CLI, a user of the crate.
        let Some(own) = layer_of(&module) else {
            assert!(
                ["lib", "main"].contains(&module.as_str()),
                "{} belongs to no layer: add `{module}` to LAYERS and to lib.rs's description",
                file.display()
            );
            continue;
        };
        checked += 1;
        for (line, name) in crate_paths(&fs::read_to_string(file).unwrap()) {
            let Some(used) = layer_of(&name) else {
                violations.push(format!(
                    "{}:{line}: crate::{name} is in no layer",
                    file.display()
                ));
                continue;
            };
            if used > own {
                violations.push(format!(
                    "{}:{line}: {module} (layer {own}) uses crate::{name} (layer {used})",
                    file.display()
                ));
            }
        }
    }
    assert!(checked > 20, "only {checked} files checked");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_checker_sees_an_upward_import() {
    let text =
        "use crate::store::claims;\n// use crate::facade::Store;\nlet x = $crate::db::now();";
    assert_eq!(crate_paths(text), [(1, "store".to_owned())]);
    assert!(layer_of("store") > layer_of("models"));
}

#[test]
fn db_names_no_table_of_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (line, name) in crate_paths(&text) {
            assert_ne!(name, "schema", "{}:{line} uses the schema", file.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The store's own modules.
//
// Inside `src/store/` the modules depend on each other one way only, bottom to top: the rules and
// the row helpers (validation, predicates, row reads and writes), then the unit of work that locks
// an apply and writes through it, then claims and their blockers, then the public per-table modules
// (`applies`, `leases`, `tasks`, …) that callers use. A module may name the ones below it, never one
// above, so no two modules ever need each other, and the public modules stand side by side: none
// names another (what two of them share lives below them).
//
// A module is a `.rs` file under `src/store/` (`claims/mod.rs` is `claims`, `claims/take.rs` is
// `claims/take`, `mod.rs` is the store's root, which is never a dependency). Every path that starts
// with `crate::store::`, `super::` or `self::` names a module, in code and in comments alike: an
// intra-doc link ties the two modules together as much as a `use` does. Only `#[cfg(test)] mod`
// blocks are left out. A module naming itself or one of its own child modules is no dependency; a
// child naming its parent is.
// ---------------------------------------------------------------------------------------------

use std::collections::{BTreeMap, BTreeSet};

/// A place where module `from` names module `to`, at `line` (1-based) of `from`'s file. Edges
/// order by module, then line.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    line: usize,
    to: String,
}

/// Whether `byte` can continue a Rust identifier.
fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The identifier that starts at `at` (empty when none does).
fn ident_at(bytes: &[u8], at: usize) -> &str {
    let at = at.min(bytes.len());
    let len = bytes[at..]
        .iter()
        .take_while(|byte| is_ident_byte(**byte))
        .count();
    std::str::from_utf8(&bytes[at..at + len]).unwrap_or("")
}

/// The store module a file stands for, from its path relative to `src/store/`
/// (`claims/take.rs` → `claims/take`, `claims/mod.rs` → `claims`, `mod.rs` → the root: the empty name).
fn store_module_name(relative: &Path) -> String {
    let mut parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
        if last == "mod" {
            parts.pop();
        }
    }
    parts.join("/")
}

/// Every module under `store` (the `src/store` folder), with its file and its text.
fn read_store_modules(store: &Path) -> BTreeMap<String, (PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(store, &mut files);
    files
        .into_iter()
        .map(|file| {
            let module = store_module_name(file.strip_prefix(store).unwrap());
            let text = fs::read_to_string(&file).unwrap();
            (module, (file, text))
        })
        .collect()
}

/// If a comment, string literal or character literal starts at `at`, the index just past it;
/// otherwise `at`. Lets brace counting ignore the braces such text may hold.
fn skip_literal_or_comment(bytes: &[u8], at: usize) -> usize {
    let rest = &bytes[at..];
    let after_ident = at > 0 && is_ident_byte(bytes[at - 1]);
    if rest.starts_with(b"//") {
        return rest
            .iter()
            .position(|byte| *byte == b'\n')
            .map_or(bytes.len(), |end| at + end);
    }
    if rest.starts_with(b"/*") {
        // Block comments nest.
        let (mut depth, mut i) = (0, at);
        while i < bytes.len() {
            if bytes[i..].starts_with(b"/*") {
                depth += 1;
                i += 2;
            } else if bytes[i..].starts_with(b"*/") {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            } else {
                i += 1;
            }
        }
        return bytes.len();
    }
    if rest.first() == Some(&b'r') && !after_ident {
        // A raw string: r"…", r#"…"# (a `b` before the `r` is an identifier byte, and fine).
        let hashes = rest[1..].iter().take_while(|byte| **byte == b'#').count();
        if rest.get(1 + hashes) == Some(&b'"') {
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            let body = at + 2 + hashes;
            return bytes[body..]
                .windows(closing.len())
                .position(|window| window == closing.as_slice())
                .map_or(bytes.len(), |end| body + end + closing.len());
        }
    }
    if rest.first() == Some(&b'"') {
        let mut i = at + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        return bytes.len();
    }
    if rest.first() == Some(&b'\'') {
        // A character literal ('x', '\n', '\'', 'é'); otherwise a lifetime or label, left alone.
        if rest.get(1) == Some(&b'\\') {
            return bytes
                .get(at + 3..)
                .unwrap_or_default()
                .iter()
                .position(|byte| *byte == b'\'')
                .map_or(bytes.len(), |end| at + 3 + end + 1);
        }
        let char_len = std::str::from_utf8(&rest[1..rest.len().min(5)])
            .or_else(|error| std::str::from_utf8(&rest[1..1 + error.valid_up_to()]))
            .ok()
            .and_then(|text| text.chars().next())
            .map_or(1, char::len_utf8);
        if rest.get(1 + char_len) == Some(&b'\'') {
            return at + 2 + char_len;
        }
    }
    at
}

/// The index just past whitespace and comments starting at `at`.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    loop {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        if bytes[at.min(bytes.len())..].starts_with(b"//")
            || bytes[at.min(bytes.len())..].starts_with(b"/*")
        {
            at = skip_literal_or_comment(bytes, at);
        } else {
            return at;
        }
    }
}

/// If the `#[cfg(test)]` at `at` introduces an inline module (`#[cfg(test)] mod NAME { … }`, maybe
/// with more attributes or a visibility between them), the index just past its closing brace.
fn end_of_test_module(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = skip_space(bytes, at + "#[cfg(test)]".len());
    // Further attributes: `#[…]`, brackets balanced.
    while bytes[i..].starts_with(b"#[") {
        let mut depth = 0;
        loop {
            match bytes.get(i)? {
                b'[' => depth += 1,
                b']' => depth -= 1,
                _ => {}
            }
            i += 1;
            if depth == 0 {
                break;
            }
        }
        i = skip_space(bytes, i);
    }
    if ident_at(bytes, i) == "pub" {
        i = skip_space(bytes, i + 3);
        if bytes.get(i) == Some(&b'(') {
            i += bytes[i..].iter().position(|byte| *byte == b')')? + 1;
            i = skip_space(bytes, i);
        }
    }
    if ident_at(bytes, i) != "mod" {
        return None;
    }
    i = skip_space(bytes, i + 3);
    let name = ident_at(bytes, i);
    if name.is_empty() {
        return None;
    }
    i = skip_space(bytes, i + name.len());
    if bytes.get(i) != Some(&b'{') {
        return None; // `mod NAME;`: a module in a file of its own, not a block.
    }
    let mut depth = 0;
    while i < bytes.len() {
        let past = skip_literal_or_comment(bytes, i);
        if past != i {
            i = past;
            continue;
        }
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(bytes.len())
}

/// `text` with every `#[cfg(test)] mod NAME { … }` block blanked out. Line breaks are kept, so line
/// numbers in the result are those of `text`.
fn without_test_modules(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut bytes = text.as_bytes().to_vec();
    let mut from = 0;
    while let Some(found) = text[from..].find(MARK) {
        let at = from + found;
        match end_of_test_module(text.as_bytes(), at) {
            Some(end) => {
                for byte in &mut bytes[at..end] {
                    if *byte != b'\n' {
                        *byte = b' ';
                    }
                }
                from = end;
            }
            None => from = at + MARK.len(),
        }
    }
    // Only whole characters were blanked (they start and end on ASCII bytes), so this is UTF-8.
    String::from_utf8(bytes).unwrap()
}

/// Parses the path (or use-tree) that starts at `at`, just after an anchor, pushing each path it
/// names onto `out` as its segments after the anchor with the offset of its item (`item_at`; in a
/// group, where the item starts). `prefix` holds the segments before `at`. A group `{a, b::{c}}`
/// names each of its items; `self` in a group names the path before the group; `as` renames are
/// skipped. Returns the index just past the path.
fn parse_use_tree(
    bytes: &[u8],
    mut at: usize,
    prefix: &mut Vec<String>,
    item_at: usize,
    out: &mut Vec<(usize, Vec<String>)>,
) -> usize {
    let depth = prefix.len();
    loop {
        if bytes.get(at) == Some(&b'{') {
            at += 1;
            loop {
                at = skip_space(bytes, at);
                match bytes.get(at) {
                    None => break,
                    // A `;` in a group: not a path after all (prose in a comment); stop here.
                    Some(b'}' | b';') => {
                        at += 1;
                        break;
                    }
                    Some(b',') => {
                        at += 1;
                        continue;
                    }
                    Some(_) => {}
                }
                let item_end = parse_use_tree(bytes, at, prefix, at, out);
                at = skip_rename(bytes, item_end.max(at + 1));
            }
            prefix.truncate(depth);
            return at;
        }
        if bytes.get(at) == Some(&b'*') {
            at += 1;
            break;
        }
        let ident = ident_at(bytes, at);
        if ident.is_empty() {
            break;
        }
        at += ident.len();
        if ident != "self" {
            prefix.push(ident.to_owned());
        }
        if !bytes[at..].starts_with(b"::") {
            break;
        }
        at += 2;
    }
    out.push((item_at, prefix.clone()));
    prefix.truncate(depth);
    at
}

/// The index just past ` as NAME` at `at`, or `at` when there is no rename.
fn skip_rename(bytes: &[u8], at: usize) -> usize {
    let i = skip_space(bytes, at);
    if ident_at(bytes, i) == "as" {
        let name_at = skip_space(bytes, i + 2);
        return name_at + ident_at(bytes, name_at).len();
    }
    at
}

/// Every store module `text` (the file of `module`) names, with its line: each path starting with
/// `crate::store::`, `self::` or `super::` (any number of them), resolved against `module` and cut
/// to the longest prefix that is one of `known`. Paths that resolve to the root, or leave the store
/// (`super::super::…` above it), name no module.
fn named_modules(module: &str, text: &str, known: &BTreeSet<String>) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let own: Vec<&str> = module.split('/').filter(|part| !part.is_empty()).collect();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if at > 0 && (is_ident_byte(bytes[at - 1]) || !bytes[at].is_ascii_alphabetic()) {
            at += 1;
            continue;
        }
        // The anchor: where the path starts from, and how many `super`s climb from there.
        let (mut base, mut i) = if bytes[at..].starts_with(b"crate::store::") {
            (Some(Vec::new()), at + "crate::store::".len())
        } else if bytes[at..].starts_with(b"self::") {
            (Some(own.clone()), at + "self::".len())
        } else if bytes[at..].starts_with(b"super::") {
            (Some(own.clone()), at)
        } else {
            at += 1;
            continue;
        };
        while bytes[i..].starts_with(b"super::") {
            base = base.and_then(|mut path| path.pop().map(|_| path));
            i += "super::".len();
        }
        let mut paths = Vec::new();
        let end = parse_use_tree(bytes, i, &mut Vec::new(), at, &mut paths);
        if let Some(base) = base {
            for (item_at, segments) in paths {
                let full: Vec<&str> = base
                    .iter()
                    .copied()
                    .chain(segments.iter().map(String::as_str))
                    .collect();
                let target = (1..=full.len())
                    .rev()
                    .map(|len| full[..len].join("/"))
                    .find(|candidate| known.contains(candidate));
                if let Some(target) = target {
                    let line = 1 + bytes[..item_at].iter().filter(|b| **b == b'\n').count();
                    found.push((line, target));
                }
            }
        }
        at = end.max(at + 1);
    }
    found
}

/// Whether module `from` naming module `to` is a dependency: not when `to` is `from` itself or a
/// module inside it (a parent naming its own child), and never when `to` is the root.
fn is_dependency(from: &str, to: &str) -> bool {
    !to.is_empty() && to != from && !(from.is_empty() || to.starts_with(&format!("{from}/")))
}

/// The dependencies between the store's modules, given as module name → file text (the root, if
/// given, is the empty name). Each edge is listed once per line it appears on, in module order.
fn store_edges(modules: &BTreeMap<String, String>) -> Vec<Edge> {
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (module, text) in modules {
        let text = without_test_modules(text);
        for (line, target) in named_modules(module, &text, &known) {
            if is_dependency(module, &target) {
                edges.insert(Edge {
                    from: module.clone(),
                    to: target,
                    line,
                });
            }
        }
    }
    edges.into_iter().collect()
}

/// The strongly connected components of more than one module in the graph of `edges` (Tarjan's
/// algorithm): each a circle of modules that depend on each other. Each is sorted, and so is the list.
fn circles(edges: &[Edge]) -> Vec<Vec<String>> {
    /// Tarjan's bookkeeping for one search.
    struct Search<'a> {
        next: BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }

    impl<'a> Search<'a> {
        /// Visits `node` and everything reachable from it, closing each component at its root.
        fn visit(&mut self, node: &'a str) {
            let number = self.index.len();
            self.index.insert(node, number);
            self.low.insert(node, number);
            self.stack.push(node);
            self.on_stack.insert(node);
            let targets: Vec<&str> = self.next.get(node).into_iter().flatten().copied().collect();
            for target in targets {
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[node].min(self.low[target]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[node].min(self.index[target]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(member);
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }

    let mut search = Search {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for edge in edges {
        search.next.entry(&edge.from).or_default().insert(&edge.to);
    }
    let nodes: Vec<&str> = search.next.keys().copied().collect();
    for node in nodes {
        if !search.index.contains_key(node) {
            search.visit(node);
        }
    }
    search.found.sort();
    search.found
}

/// The failure report for `found` circles: each circle's modules, then every edge inside it with
/// the file (`file_of` a module) and line where it appears, so a reader can break the circle.
fn describe_circles(
    found: &[Vec<String>],
    edges: &[Edge],
    file_of: impl Fn(&str) -> String,
) -> String {
    let mut report = format!(
        "the store's modules import each other in {} circle(s); each must be broken at one of its edges",
        found.len()
    );
    for circle in found {
        report += &format!("\ncircle: {}", circle.join(", "));
        for edge in edges {
            if circle.contains(&edge.from) && circle.contains(&edge.to) {
                report += &format!(
                    "\n  {}:{}: {} -> {}",
                    file_of(&edge.from),
                    edge.line,
                    edge.from,
                    edge.to
                );
            }
        }
    }
    report
}

/// The names `src/store/mod.rs` (given as `text`) declares `pub mod`, except `claims`: the public
/// per-table modules.
fn public_table_modules(text: &str) -> Vec<String> {
    without_test_modules(text)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| ident_at(rest.as_bytes(), 0).to_owned())
        .filter(|name| !name.is_empty() && name != "claims")
        .collect()
}

/// The public module `module` is (or is inside), if any.
fn public_owner<'a>(module: &str, public: &'a [String]) -> Option<&'a String> {
    public
        .iter()
        .find(|name| module == name.as_str() || module.starts_with(&format!("{name}/")))
}

/// The edges by which one of the `public` modules (or a module inside one) names another.
fn public_crossings<'a>(edges: &'a [Edge], public: &[String]) -> Vec<&'a Edge> {
    edges
        .iter()
        .filter(|edge| {
            let from = public_owner(&edge.from, public);
            from.is_some() && public_owner(&edge.to, public).is_some_and(|to| Some(to) != from)
        })
        .collect()
}

/// The store's modules (`src/store`), as texts by module name and files by module name (relative
/// to the package, for messages).
fn store_tree() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (module, (file, text)) in read_store_modules(&root.join("src/store")) {
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        files.insert(module.clone(), shown);
        texts.insert(module, text);
    }
    (texts, files)
}

#[test]
fn store_modules_depend_on_each_other_in_no_circle() {
    let (texts, files) = store_tree();
    let edges = store_edges(&texts);
    assert!(
        texts.len() > 5 && !edges.is_empty(),
        "the scan found {} modules and {} edges under src/store: is the checker broken?",
        texts.len(),
        edges.len()
    );
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "{}",
        describe_circles(&found, &edges, |module| files[module].clone())
    );
}

#[test]
fn the_public_store_modules_never_import_each_other() {
    let (texts, files) = store_tree();
    let public = public_table_modules(&texts[""]);
    assert!(
        public.len() > 1,
        "src/store/mod.rs declares only {public:?} as `pub mod`"
    );
    for name in &public {
        assert!(texts.contains_key(name), "no file for `pub mod {name}`");
    }
    let edges = store_edges(&texts);
    let crossings: Vec<String> = public_crossings(&edges, &public)
        .into_iter()
        .map(|edge| {
            format!(
                "  {}:{}: {} -> {}",
                files[&edge.from], edge.line, edge.from, edge.to
            )
        })
        .collect();
    assert!(
        crossings.is_empty(),
        "the public store modules ({}) name each other; move what they share below them:\n{}",
        public.join(", "),
        crossings.join("\n")
    );
}

/// Module name → text, for the checker's own tests.
fn synthetic(modules: &[(&str, &str)]) -> BTreeMap<String, String> {
    modules
        .iter()
        .map(|(name, text)| (name.to_string(), text.to_string()))
        .collect()
}

#[test]
fn the_circle_checker_finds_a_circle_through_a_doc_link() {
    let modules = synthetic(&[
        ("a", "use super::b::thing;\n"),
        (
            "b",
            "//! Works with\n/// [`crate::store::a::Thing`].\nfn f() {}\n",
        ),
        ("c", "use super::a;\n"),
    ]);
    let edges = store_edges(&modules);
    let found = circles(&edges);
    assert_eq!(found, [vec!["a".to_owned(), "b".to_owned()]]);
    let report = describe_circles(&found, &edges, |module| format!("{module}.rs"));
    assert!(report.contains("circle: a, b"), "{report}");
    assert!(report.contains("a.rs:1: a -> b"), "{report}");
    assert!(report.contains("b.rs:2: b -> a"), "{report}");
    assert!(!report.contains("c.rs"), "{report}");
}

#[test]
fn a_child_naming_its_parent_is_no_circle() {
    let modules = synthetic(&[
        ("claims", "mod take;\nuse self::take::in_place;\n/// See [`take`](claims::take).\nuse crate::store::claims::take;\n"),
        ("claims/take", "use super::{ClaimKind, Locked};\n"),
    ]);
    let edges = store_edges(&modules);
    assert_eq!(
        edges,
        [Edge {
            from: "claims/take".to_owned(),
            to: "claims".to_owned(),
            line: 1
        }]
    );
    assert!(circles(&edges).is_empty());
}

#[test]
fn the_circle_checker_ignores_test_modules() {
    let modules = synthetic(&[
        ("a", "use super::b;\n"),
        (
            "b",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::a;\n    #[test]\n    fn t() { let _ = \"}\"; let _ = '{'; }\n}\nuse super::c;\n",
        ),
        ("c", ""),
    ]);
    let edges = store_edges(&modules);
    let shown: Vec<(&str, &str, usize)> = edges
        .iter()
        .map(|edge| (edge.from.as_str(), edge.to.as_str(), edge.line))
        .collect();
    // The test block is gone, what follows it is still read, at its own line.
    assert_eq!(shown, [("a", "b", 1), ("b", "c", 9)]);
    assert!(circles(&edges).is_empty());
}

#[test]
fn the_circle_checker_resolves_grouped_imports() {
    let modules = synthetic(&[
        (
            "x",
            "use super::{\n    a,\n    b::{c, d as e},\n    f::{self, g},\n};\nuse crate::store::{h::*};\n",
        ),
        ("a", ""),
        ("b", ""),
        ("b/c", ""),
        ("f", ""),
        ("h", "use super::x::Y;\n"),
    ]);
    let edges = store_edges(&modules);
    let shown: Vec<(&str, &str, usize)> = edges
        .iter()
        .map(|edge| (edge.from.as_str(), edge.to.as_str(), edge.line))
        .collect();
    // `b::{c, d}` names `b/c`, a module of its own, and `b` (no module `b/d`).
    assert_eq!(
        shown,
        [
            ("h", "x", 1),
            ("x", "a", 2),
            ("x", "b", 3),
            ("x", "b/c", 3),
            ("x", "f", 4),
            ("x", "h", 6),
        ]
    );
    assert_eq!(circles(&edges), [vec!["h".to_owned(), "x".to_owned()]]);
}

#[test]
fn the_anchors_resolve_against_the_naming_module() {
    let known: BTreeSet<String> = ["claims", "claims/take", "claims/copy", "leases"]
        .map(String::from)
        .into();
    let text = "super::copy::f(); super::super::leases::g(); self::h(); crate::store::claims::take::i();\n\
                super::super::super::db::now(); mycrate::store::leases; // super::super::claims\n";
    let named: Vec<String> = named_modules("claims/take", text, &known)
        .into_iter()
        .map(|(_, module)| module)
        .collect();
    assert_eq!(
        named,
        [
            "claims/copy",
            "leases",
            "claims/take",
            "claims/take",
            "claims"
        ]
    );
}

#[test]
fn the_public_modules_are_read_from_the_stores_root() {
    let text = "//! pub mod not_this;\nmod private;\npub mod applies;\npub mod claims;\npub(crate) mod inner;\npub mod tasks;\n";
    assert_eq!(public_table_modules(text), ["applies", "tasks"]);
    let modules = synthetic(&[
        ("applies", "use super::tasks::f;\nuse super::rows;\n"),
        ("tasks", "use super::rows;\n/// [`crate::store::claims`]\n"),
        ("rows", ""),
        ("claims", ""),
    ]);
    let edges = store_edges(&modules);
    let public = public_table_modules(text);
    let crossings: Vec<(&str, &str, usize)> = public_crossings(&edges, &public)
        .into_iter()
        .map(|edge| (edge.from.as_str(), edge.to.as_str(), edge.line))
        .collect();
    assert_eq!(crossings, [("applies", "tasks", 1)]);
}
