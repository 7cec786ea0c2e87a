//! Integration tests: every test talks to a real database (MariaDB/MySQL and SQLite), each in a fresh
//! database of its own, so the suite runs in parallel. See `harness` for server discovery.

mod fixtures;
mod harness;

mod aggregate;
mod applies;
mod apply_operations;
mod blockers;
mod checkpoints;
mod claim_locks;
mod claim_scope;
mod claim_walk;
mod claimable_property;
mod claims;
mod cli;
mod cli_behaviour;
mod cli_conventions;
mod cli_database_url;
mod cli_escaping;
mod concurrency;
mod control_requests;
mod cutover;
mod datetime_range;
mod disk_full;
mod errors;
mod example_worker;
mod explain;
mod failed_statements;
mod hardening;
mod invariants;
mod leases;
mod lost_commit;
mod migrations;
mod names;
mod operator_cli;
mod pool;
mod private_server;
mod proxy;
mod rollouts;
mod schema;
mod sibling_order;
mod statements;
mod stress;
mod tasks;
mod timestamps;
mod typed_rows;
