//! Webhook endpoints, their type filters, the delivery outbox and the
//! record of every attempt.
//!
//! Delivery rows are written by a trigger on `events`, so they are always in
//! the same transaction (and, for the group-committed appends, the same
//! statement) as the event itself: no append path can forget them. Only
//! enabled endpoints get rows. Times are milliseconds since the Unix epoch,
//! compared the same way on both backends.
//!
//! Deliveries and attempts carry no foreign key to their endpoint on
//! purpose: every insert would lock the endpoint's row (`FOR KEY SHARE`),
//! and thousands of concurrent inserts for a few endpoints make that lock
//! the bottleneck. Deleting an endpoint deletes them explicitly. Claiming a
//! delivery changes no indexed column, and pages keep room (fillfactor) so
//! that update stays on its page (HOT) without touching the indexes. Event
//! ids are UUIDv7, so the primary key also lists an endpoint's deliveries
//! newest first.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE webhook_endpoints (
    id                       UUID PRIMARY KEY,
    name                     TEXT NOT NULL,
    url                      TEXT NOT NULL,
    description              TEXT,
    event_types              JSONB NOT NULL,
    headers                  JSONB NOT NULL,
    ordered                  BOOLEAN NOT NULL DEFAULT FALSE,
    enabled                  BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason          TEXT,
    disabled_at_ms           BIGINT,
    secret                   TEXT NOT NULL,
    previous_secret          TEXT,
    previous_secret_until_ms BIGINT,
    failing_since_ms         BIGINT,
    created_by               TEXT NOT NULL,
    created_at_ms            BIGINT NOT NULL,
    updated_at_ms            BIGINT NOT NULL
);
CREATE TABLE webhook_endpoint_filters (
    endpoint_id UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('any', 'prefix', 'exact')),
    value       TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, kind, value)
);
CREATE TABLE webhook_deliveries (
    endpoint_id          UUID NOT NULL,
    event_id             UUID NOT NULL,
    event_type           TEXT NOT NULL,
    event_tx             BIGINT NOT NULL,
    event_position       BIGINT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms   BIGINT NOT NULL,
    lease_token          UUID,
    lease_until_ms       BIGINT,
    last_attempt_at_ms   BIGINT,
    last_response_status INTEGER,
    last_error           TEXT,
    created_at_ms        BIGINT NOT NULL,
    completed_at_ms      BIGINT,
    PRIMARY KEY (endpoint_id, event_id)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at_ms)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, event_tx, event_position)
    WHERE status = 'pending';
CREATE TABLE webhook_attempts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     UUID NOT NULL,
    event_id        UUID NOT NULL,
    attempt         INTEGER NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    duration_ms     BIGINT NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    error           TEXT
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (endpoint_id, event_id, id);
CREATE INDEX webhook_attempts_time_idx ON webhook_attempts (attempted_at_ms);

CREATE FUNCTION webhook_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries
        (endpoint_id, event_id, event_type, event_tx, event_position, status,
         next_attempt_at_ms, created_at_ms)
    SELECT DISTINCT e.id, n.id, n.type, n.transaction_id::text::bigint, n.position, 'pending',
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
           (extract(epoch FROM clock_timestamp()) * 1000)::bigint
    FROM new_events n
    JOIN webhook_endpoint_filters f
      ON f.kind = 'any'
      OR (f.kind = 'exact' AND f.value = n.type)
      OR (f.kind = 'prefix' AND left(n.type, length(f.value)) = f.value)
    JOIN webhook_endpoints e ON e.id = f.endpoint_id AND e.enabled;
    RETURN NULL;
END;
$$;
CREATE TRIGGER events_webhook_enqueue
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_enqueue();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TRIGGER events_webhook_enqueue ON events;
DROP FUNCTION webhook_enqueue();
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoint_filters;
DROP TABLE webhook_endpoints;
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE webhook_endpoints (
    id                       TEXT PRIMARY KEY,
    name                     TEXT NOT NULL,
    url                      TEXT NOT NULL,
    description              TEXT,
    event_types              TEXT NOT NULL,
    headers                  TEXT NOT NULL,
    ordered                  INTEGER NOT NULL DEFAULT 0,
    enabled                  INTEGER NOT NULL DEFAULT 1,
    disabled_reason          TEXT,
    disabled_at_ms           INTEGER,
    secret                   TEXT NOT NULL,
    previous_secret          TEXT,
    previous_secret_until_ms INTEGER,
    failing_since_ms         INTEGER,
    created_by               TEXT NOT NULL,
    created_at_ms            INTEGER NOT NULL,
    updated_at_ms            INTEGER NOT NULL
);
CREATE TABLE webhook_endpoint_filters (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('any', 'prefix', 'exact')),
    value       TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, kind, value)
);
CREATE TABLE webhook_deliveries (
    endpoint_id          TEXT NOT NULL,
    event_id             TEXT NOT NULL,
    event_type           TEXT NOT NULL,
    event_tx             INTEGER NOT NULL,
    event_position       INTEGER NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms   INTEGER NOT NULL,
    lease_token          TEXT,
    lease_until_ms       INTEGER,
    last_attempt_at_ms   INTEGER,
    last_response_status INTEGER,
    last_error           TEXT,
    created_at_ms        INTEGER NOT NULL,
    completed_at_ms      INTEGER,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at_ms)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, event_tx, event_position)
    WHERE status = 'pending';
CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    attempted_at_ms INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    response_status INTEGER,
    response_body   TEXT,
    error           TEXT
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (endpoint_id, event_id, id);
CREATE INDEX webhook_attempts_time_idx ON webhook_attempts (attempted_at_ms);

CREATE TRIGGER events_webhook_enqueue AFTER INSERT ON events
BEGIN
    INSERT INTO webhook_deliveries
        (endpoint_id, event_id, event_type, event_tx, event_position, status,
         next_attempt_at_ms, created_at_ms)
    SELECT DISTINCT e.id, NEW.id, NEW.type, 0, NEW.position, 'pending',
           CAST(unixepoch('subsec') * 1000 AS INTEGER),
           CAST(unixepoch('subsec') * 1000 AS INTEGER)
    FROM webhook_endpoint_filters f
    JOIN webhook_endpoints e ON e.id = f.endpoint_id AND e.enabled = 1
    WHERE f.kind = 'any'
       OR (f.kind = 'exact' AND f.value = NEW.type)
       OR (f.kind = 'prefix' AND substr(NEW.type, 1, length(f.value)) = f.value);
END;
"#;

const SQLITE_DOWN: &str = r#"
DROP TRIGGER events_webhook_enqueue;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoint_filters;
DROP TABLE webhook_endpoints;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            DatabaseBackend::Postgres => POSTGRES_UP,
            DatabaseBackend::Sqlite => SQLITE_UP,
            other => return Err(DbErr::Custom(format!("unsupported backend {other:?}"))),
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sql = match manager.get_database_backend() {
            DatabaseBackend::Postgres => POSTGRES_DOWN,
            DatabaseBackend::Sqlite => SQLITE_DOWN,
            other => return Err(DbErr::Custom(format!("unsupported backend {other:?}"))),
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }
}
