//! Broadcasts and their recipients; the Telegram outbox learns which sends
//! go first (a broadcast's come after replies and API sends) and which are
//! paid broadcast messages (paced on their own, faster, schedule).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "CREATE TABLE broadcasts (
                id             TEXT PRIMARY KEY,
                status         TEXT NOT NULL,
                method         TEXT NOT NULL,
                params         TEXT NOT NULL,
                audience       TEXT NOT NULL,
                paid           BOOLEAN NOT NULL,
                send_at_ms     BIGINT NOT NULL,
                total          INTEGER NOT NULL DEFAULT 0,
                left_out       TEXT,
                created_by     TEXT,
                created_at_ms  BIGINT NOT NULL,
                started_at_ms  BIGINT,
                finished_at_ms BIGINT
            )",
            "CREATE INDEX broadcasts_status_idx ON broadcasts (status, send_at_ms)",
            "CREATE TABLE broadcast_recipients (
                broadcast_id  TEXT NOT NULL,
                chat_id       BIGINT NOT NULL,
                user_id       TEXT NOT NULL,
                status        TEXT NOT NULL,
                send_id       TEXT NOT NULL,
                error         TEXT,
                updated_at_ms BIGINT NOT NULL,
                PRIMARY KEY (broadcast_id, chat_id)
            )",
            "CREATE INDEX broadcast_recipients_status_idx \
             ON broadcast_recipients (broadcast_id, status)",
            "CREATE UNIQUE INDEX broadcast_recipients_send_idx ON broadcast_recipients (send_id)",
            "ALTER TABLE telegram_sends ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE telegram_sends ADD COLUMN paid BOOLEAN NOT NULL DEFAULT false",
            "DROP INDEX telegram_sends_queued_idx",
            "CREATE INDEX telegram_sends_due_idx ON telegram_sends \
             (priority, due_at_ms, created_at_ms) WHERE status = 'queued'",
            "INSERT INTO telegram_pacing (scope, next_at_ms) VALUES ('paid', 0)",
            // The overall schedules' turns, to the microsecond (a turn of
            // 5.1 ms is not kept in whole milliseconds).
            "ALTER TABLE telegram_pacing ADD COLUMN next_at_us BIGINT NOT NULL DEFAULT 0",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "ALTER TABLE telegram_pacing DROP COLUMN next_at_us",
            "DELETE FROM telegram_pacing WHERE scope = 'paid'",
            "DROP INDEX telegram_sends_due_idx",
            "CREATE INDEX telegram_sends_queued_idx ON telegram_sends (due_at_ms, created_at_ms) \
             WHERE status = 'queued'",
            "ALTER TABLE telegram_sends DROP COLUMN paid",
            "ALTER TABLE telegram_sends DROP COLUMN priority",
            "DROP TABLE broadcast_recipients",
            "DROP TABLE broadcasts",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
