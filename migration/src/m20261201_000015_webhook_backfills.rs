//! Backfills: events already in the log queued for an endpoint, from a
//! time or a cursor, a little at a time. One row per endpoint (its latest
//! backfill); the deliveries a backfill queued say so, so that cancelling
//! it withdraws those not sent yet and its progress can be counted.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn table(id: &str) -> String {
    format!(
        "CREATE TABLE webhook_backfills (
            endpoint_id    {id} PRIMARY KEY REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
            status         TEXT NOT NULL CHECK (status IN ('running', 'completed', 'cancelled')),
            since_ms       BIGINT,
            start_cursor   TEXT NOT NULL,
            cursor         TEXT NOT NULL,
            target         TEXT NOT NULL,
            scanned        BIGINT NOT NULL DEFAULT 0,
            enqueued       BIGINT NOT NULL DEFAULT 0,
            withdrawn      BIGINT NOT NULL DEFAULT 0,
            rate           BIGINT NOT NULL,
            created_by     TEXT NOT NULL,
            created_at_ms  BIGINT NOT NULL,
            updated_at_ms  BIGINT NOT NULL,
            finished_at_ms BIGINT
        )"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let id = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "UUID",
            _ => "TEXT",
        };
        let connection = manager.get_connection();
        connection
            .execute_unprepared(
                "ALTER TABLE webhook_deliveries ADD COLUMN backfilled BOOLEAN NOT NULL DEFAULT false",
            )
            .await?;
        connection.execute_unprepared(&table(id)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared("DROP TABLE webhook_backfills")
            .await?;
        connection
            .execute_unprepared("ALTER TABLE webhook_deliveries DROP COLUMN backfilled")
            .await?;
        Ok(())
    }
}
