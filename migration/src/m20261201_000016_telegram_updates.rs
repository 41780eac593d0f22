//! Telegram updates as they arrived at the webhook, kept before Telegram is
//! answered: one row per `update_id` (a resent update is the same row),
//! processed once into the log.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        connection
            .execute_unprepared(
                "CREATE TABLE telegram_updates (
                    update_id       BIGINT PRIMARY KEY,
                    body            TEXT NOT NULL,
                    received_at_ms  BIGINT NOT NULL,
                    processed_at_ms BIGINT
                )",
            )
            .await?;
        let partial = match manager.get_database_backend() {
            DatabaseBackend::Postgres | DatabaseBackend::Sqlite => {
                "CREATE INDEX telegram_updates_waiting_idx ON telegram_updates (update_id) \
                 WHERE processed_at_ms IS NULL"
            }
            other => return Err(DbErr::Custom(format!("unsupported backend {other:?}"))),
        };
        connection.execute_unprepared(partial).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE telegram_updates")
            .await?;
        Ok(())
    }
}
