//! The indexes a claim of the Telegram outbox walks: the queued sends in
//! the claim's own order (id last, so no sort is needed and a claim reads
//! only as far as it takes sends), and the chats with a send on its way.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "CREATE INDEX telegram_sends_claim_idx ON telegram_sends \
             (priority, due_at_ms, created_at_ms, id) WHERE status = 'queued'",
            "DROP INDEX telegram_sends_due_idx",
            "CREATE INDEX telegram_sends_in_flight_idx ON telegram_sends (chat_id) \
             WHERE status = 'sending'",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "DROP INDEX telegram_sends_in_flight_idx",
            "CREATE INDEX telegram_sends_due_idx ON telegram_sends \
             (priority, due_at_ms, created_at_ms) WHERE status = 'queued'",
            "DROP INDEX telegram_sends_claim_idx",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
