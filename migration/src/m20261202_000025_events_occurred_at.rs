//! The dashboard counts events per hour or day of a period: on PostgreSQL
//! a BRIN index on when they occurred (the log is appended in time order,
//! so block ranges summarise it well, and appending costs next to
//! nothing). SQLite gets none: a B-tree would cost every append a fourth
//! index write, for a dashboard figure over one instance's log.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statement = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                "CREATE INDEX events_occurred_at_idx ON events USING brin (occurred_at)"
            }
            _ => "CREATE INDEX events_occurred_at_idx ON events (occurred_at)",
        };
        manager
            .get_connection()
            .execute_unprepared(statement)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP INDEX events_occurred_at_idx")
                .await?;
        }
        Ok(())
    }
}
