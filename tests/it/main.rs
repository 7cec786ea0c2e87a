//! Integration tests: every test talks to a real database (MariaDB/MySQL and SQLite), each in a fresh
//! database of its own, so the suite runs in parallel. See `harness` for server discovery.

mod fixtures;
mod harness;

mod applies;
mod claims;
mod apply_operations;
mod cli;
mod concurrency;
mod errors;
mod migrations;
mod pool;
mod schema;
mod statements;
mod tasks;
mod timestamps;
