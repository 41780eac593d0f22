//! The append-only event log.
//!
//! Written as backend-specific SQL on purpose: the Postgres table carries the
//! writing transaction's id (`xid8`), which is what makes gap-free global
//! reading possible under concurrent writers (see `src/events/store.rs`).
//! Both backends refuse UPDATE and DELETE on the table with a trigger.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &str = r#"
CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             UUID NOT NULL,
    stream         TEXT NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    type           TEXT NOT NULL,
    payload        JSONB NOT NULL,
    actor          JSONB NOT NULL,
    occurred_at    TIMESTAMPTZ NOT NULL,
    transaction_id XID8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);
CREATE INDEX events_transaction_position_idx ON events (transaction_id, position);
CREATE INDEX events_type_idx ON events (type, position);

CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
"#;

const POSTGRES_DOWN: &str = r#"
DROP TABLE events;
DROP FUNCTION events_are_append_only();
"#;

const SQLITE_UP: &str = r#"
CREATE TABLE events (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    stream      TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    type        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    UNIQUE (stream, version)
);
CREATE INDEX events_type_idx ON events (type, position);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed');
END;
"#;

const SQLITE_DOWN: &str = "DROP TABLE events;";

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
