-- applies (SQLite tree). Same tables, columns and nullability as the MySQL tree, which src/schema.rs is
-- generated from; a test compares the two. SQLite DDL is transactional, so a migration may hold several
-- statements. INTEGER PRIMARY KEY AUTOINCREMENT never reuses an id, like MySQL's AUTO_INCREMENT.
-- Timestamps are TEXT in Diesel's "YYYY-MM-DD HH:MM:SS.ffffff" form, UTC, written by the store.
-- No FOREIGN KEY constraints, as in the MySQL tree: the store keeps links itself.
CREATE TABLE applies (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    apply_identifier VARCHAR(255) NOT NULL,
    database_name VARCHAR(255) NOT NULL,
    environment VARCHAR(255) NOT NULL,
    deployment VARCHAR(255) NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP NULL,
    completed_at TIMESTAMP NULL
);
CREATE UNIQUE INDEX applies_apply_identifier_key ON applies (apply_identifier);
