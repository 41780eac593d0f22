//! A new message changes its ticket's row (count, last message time,
//! version) and nothing else; none of those columns is indexed any more,
//! so on PostgreSQL the update can stay on its page (HOT) without new
//! entries in every index of the table, and pages keep room for it
//! (fillfactor). The ticket lists filter by status and by user, which keep
//! indexes of their own.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = "
DROP INDEX tickets_status_updated_idx;
CREATE INDEX tickets_status_idx ON tickets (status);
CREATE INDEX tickets_user_idx ON tickets (user_id);
";

const DOWN: &str = "
DROP INDEX tickets_user_idx;
DROP INDEX tickets_status_idx;
CREATE INDEX tickets_status_updated_idx ON tickets (status, updated_at);
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(UP).await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            conn.execute_unprepared("ALTER TABLE tickets SET (fillfactor = 70)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            conn.execute_unprepared("ALTER TABLE tickets RESET (fillfactor)")
                .await?;
        }
        conn.execute_unprepared(DOWN).await?;
        Ok(())
    }
}
