//! Files uploaded to the sender API (multipart), kept with their send until
//! Telegram took it or it ended, so a restart loses none.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let bytes = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE telegram_uploads (
                    send_id      TEXT NOT NULL,
                    field        TEXT NOT NULL,
                    filename     TEXT NOT NULL,
                    content_type TEXT NOT NULL,
                    bytes        {bytes} NOT NULL,
                    PRIMARY KEY (send_id, field)
                )"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE telegram_uploads")
            .await?;
        Ok(())
    }
}
