//! Integration settings: rows of `settings` keyed `integration:<key>`,
//! changed through the admin API, record when and by whom they were last
//! changed. The service's own rows (`log_id`, …) leave both empty.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            // Milliseconds since the Unix epoch.
            "ALTER TABLE settings ADD COLUMN updated_at_ms BIGINT",
            // An admin's id; empty when the value came from the environment.
            "ALTER TABLE settings ADD COLUMN updated_by TEXT",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The `integration:` rows stay: the older code never reads them, and
        // going up again finds them as they were (without their change times).
        let connection = manager.get_connection();
        for statement in [
            "ALTER TABLE settings DROP COLUMN updated_by",
            "ALTER TABLE settings DROP COLUMN updated_at_ms",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
