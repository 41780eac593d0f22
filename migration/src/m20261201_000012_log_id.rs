//! The log's id: a random number each database gets once, which every
//! cursor carries, so that a cursor from another log (a database reset or
//! replaced) is told apart instead of resumed from.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // 1 to 4294967295 (a `u32`; 0 means "not known").
        let sql = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                "INSERT INTO settings (key, value) \
                 VALUES ('log_id', (floor(random() * 4294967295) + 1)::bigint::text) \
                 ON CONFLICT (key) DO NOTHING"
            }
            _ => {
                "INSERT OR IGNORE INTO settings (key, value) \
                 VALUES ('log_id', CAST(abs(random() % 4294967295) + 1 AS TEXT))"
            }
        };
        manager.get_connection().execute_unprepared(sql).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DELETE FROM settings WHERE key = 'log_id'")
            .await?;
        Ok(())
    }
}
