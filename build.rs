//! Embeds every migration's `down.sql`, keyed by version, so `applyops::db` can tell what reverting a
//! migration would drop before it runs it (Diesel's embedded migrations do not expose their SQL).
//!
//! Writes `$OUT_DIR/down_sql.rs` with one `(version, down.sql)` table per backend tree, found the way
//! `embed_migrations!` finds migrations: each directory holding an `up.sql`, the version being the
//! directory name up to its first `_`, without dashes. Every tree is always read; each table is
//! behind its backend's `#[cfg(feature = …)]`, which the crate evaluates where it includes the file,
//! so a single-backend build compiles only its own.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn main() {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut code = String::new();
    for (name, tree, feature) in [
        ("MYSQL_DOWN_SQL", "migrations/mysql", "mysql"),
        ("POSTGRES_DOWN_SQL", "migrations/postgres", "postgres"),
        ("SQLITE_DOWN_SQL", "migrations/sqlite", "sqlite"),
    ] {
        let dir = Path::new(&manifest_dir).join(tree);
        // A directory is rescanned as a whole: added, removed and edited migrations all rerun this.
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut migrations: Vec<(String, String)> = Vec::new();
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        {
            let entry = entry.expect("read a migrations directory entry");
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if file_name.starts_with('.') || !path.join("up.sql").is_file() {
                continue;
            }
            let version = file_name
                .split('_')
                .next()
                .unwrap_or_default()
                .replace('-', "");
            let down = path.join("down.sql");
            if down.is_file() {
                migrations.push((version, down.display().to_string()));
            }
        }
        migrations.sort();
        writeln!(
            code,
            "/// `(version, down.sql)` of every migration in `{tree}` that has a down.sql."
        )
        .unwrap();
        writeln!(code, "#[cfg(feature = {feature:?})]").unwrap();
        writeln!(code, "pub(super) const {name}: &[(&str, &str)] = &[").unwrap();
        for (version, down) in &migrations {
            writeln!(code, "    ({version:?}, include_str!({down:?})),").unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    fs::write(Path::new(&out_dir).join("down_sql.rs"), code).expect("write down_sql.rs");
}
