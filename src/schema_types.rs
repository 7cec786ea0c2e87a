//! SQL type names that `src/schema.rs` imports in place of the MySQL-only ones `diesel print-schema`
//! emits.
//!
//! `diesel.toml` sets `import_types`, so every generated `table!` block imports its column types by name:
//! the portable ones from `diesel::sql_types`, and `Datetime` from here. Diesel's `MultiConnection` only
//! supports SQL types that every backend shares, and MySQL's `Datetime` is not one of them; naming it
//! here as an alias of the portable `Timestamp` keeps the generated file exactly as printed, with no
//! patch to apply (a patch only fits one schema, so it broke `diesel migration revert` and `redo`).

/// MySQL's `DATETIME` columns as the portable [`Timestamp`](diesel::sql_types::Timestamp): the SQL type
/// both backends read into and write from `chrono::NaiveDateTime`.
pub type Datetime = diesel::sql_types::Timestamp;
