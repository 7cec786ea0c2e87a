-- applies: one row per schema-change request. The request's per-deployment rollout lives in
-- apply_operations.
--
-- Conventions shared by every applyops table (MySQL/MariaDB tree):
-- * One DDL statement per migration, written IF NOT EXISTS. MySQL commits DDL implicitly, so a runner
--   that dies after the CREATE but before recording the migration must be able to run it again.
-- * No FOREIGN KEY constraints: the store keeps the links between tables itself, which keeps the schema
--   deployable on sharded MySQL (Vitess, PlanetScale), where foreign keys are not supported.
-- * Timestamps are DATETIME(6) in UTC, written by the store from the server clock. Not TIMESTAMP,
--   which ends in 2038; microseconds so ordering never hinges on a one-second tie. No column defaults:
--   a hand-written INSERT that forgets them fails under strict sql_mode instead of storing local time.
-- * utf8mb4_bin: unique keys compare exactly (case- and accent-sensitive), as SQLite's BINARY does.
CREATE TABLE IF NOT EXISTS applies (
    id BIGINT NOT NULL AUTO_INCREMENT,
    apply_identifier VARCHAR(255) NOT NULL,
    database_name VARCHAR(255) NOT NULL,
    environment VARCHAR(255) NOT NULL,
    deployment VARCHAR(255) NOT NULL,
    state VARCHAR(64) NOT NULL DEFAULT 'pending',
    error_message TEXT NULL,
    created_at DATETIME(6) NOT NULL,
    updated_at DATETIME(6) NOT NULL,
    started_at DATETIME(6) NULL,
    completed_at DATETIME(6) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY applies_apply_identifier_key (apply_identifier)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
