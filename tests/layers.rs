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
