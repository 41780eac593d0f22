//! The Telegram outbox: every Bot API send, written in the transaction of
//! the command that causes it, sent by a worker within Telegram's limits,
//! and the pacing those limits are kept with across every instance.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "CREATE TABLE telegram_sends (
                id             TEXT PRIMARY KEY,
                chat_id        BIGINT NOT NULL,
                method         TEXT NOT NULL,
                params         TEXT NOT NULL,
                status         TEXT NOT NULL,
                user_id        TEXT,
                origin         TEXT NOT NULL,
                reference      TEXT,
                attempts       INTEGER NOT NULL DEFAULT 0,
                due_at_ms      BIGINT NOT NULL,
                lease_until_ms BIGINT,
                result         TEXT,
                error          TEXT,
                created_at_ms  BIGINT NOT NULL,
                updated_at_ms  BIGINT NOT NULL
            )",
            "CREATE INDEX telegram_sends_queued_idx ON telegram_sends (due_at_ms, created_at_ms) \
             WHERE status = 'queued'",
            "CREATE INDEX telegram_sends_sending_idx ON telegram_sends (lease_until_ms) \
             WHERE status = 'sending'",
            "CREATE INDEX telegram_sends_chat_idx ON telegram_sends (chat_id, created_at_ms)",
            "CREATE INDEX telegram_sends_status_idx ON telegram_sends (status, created_at_ms)",
            // `overall`, and `chat:<id>` for each chat written to.
            "CREATE TABLE telegram_pacing (
                scope         TEXT PRIMARY KEY,
                next_at_ms    BIGINT NOT NULL,
                limited_chat  BIGINT,
                limited_at_ms BIGINT
            )",
            "INSERT INTO telegram_pacing (scope, next_at_ms) VALUES ('overall', 0)",
            "CREATE INDEX users_telegram_chat_idx ON users (telegram_chat_id)",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "DROP INDEX users_telegram_chat_idx",
            "DROP TABLE telegram_pacing",
            "DROP TABLE telegram_sends",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
