//! The helpdesk bridge: visitors (a user's conversation in the helpdesk;
//! a closed chat's visitor is kept, the user's next message starts a new
//! one), the outbox of users' messages for the helpdesk with each attempt's
//! answer, the helpdesk's messages already taken (sent once), and which
//! Telegram sends keep no text once they ended.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "CREATE TABLE helpdesk_visitors (
                visitor_id       TEXT PRIMARY KEY,
                user_id          TEXT NOT NULL,
                telegram_chat_id BIGINT NOT NULL,
                chat_id          TEXT,
                status           TEXT NOT NULL,
                created_at_ms    BIGINT NOT NULL,
                closed_at_ms     BIGINT
            )",
            "CREATE UNIQUE INDEX helpdesk_visitors_open_idx ON helpdesk_visitors (user_id) \
             WHERE status = 'open'",
            "CREATE INDEX helpdesk_visitors_user_idx ON helpdesk_visitors (user_id, created_at_ms)",
            // A user's message for the helpdesk. `body` holds the text only
            // until the relay ended.
            "CREATE TABLE helpdesk_relays (
                id             TEXT PRIMARY KEY,
                message_id     TEXT NOT NULL UNIQUE,
                visitor_id     TEXT NOT NULL,
                user_id        TEXT NOT NULL,
                body           TEXT,
                length         INTEGER NOT NULL,
                status         TEXT NOT NULL,
                attempts       INTEGER NOT NULL DEFAULT 0,
                due_at_ms      BIGINT NOT NULL,
                lease_until_ms BIGINT,
                last_status    INTEGER,
                last_error     TEXT,
                created_at_ms  BIGINT NOT NULL,
                updated_at_ms  BIGINT NOT NULL
            )",
            "CREATE INDEX helpdesk_relays_pending_idx ON helpdesk_relays \
             (visitor_id, created_at_ms) WHERE status IN ('queued', 'sending')",
            "CREATE INDEX helpdesk_relays_due_idx ON helpdesk_relays (due_at_ms) \
             WHERE status IN ('queued', 'sending')",
            // Each attempt's answer: its status or why there was none; never
            // the body (it may repeat the text).
            "CREATE TABLE helpdesk_attempts (
                relay_id        TEXT NOT NULL,
                attempt         INTEGER NOT NULL,
                attempted_at_ms BIGINT NOT NULL,
                duration_ms     BIGINT NOT NULL,
                response_status INTEGER,
                error           TEXT,
                PRIMARY KEY (relay_id, attempt)
            )",
            "CREATE TABLE helpdesk_inbound (
                message_id     TEXT PRIMARY KEY,
                visitor_id     TEXT NOT NULL,
                received_at_ms BIGINT NOT NULL
            )",
            "ALTER TABLE telegram_sends ADD COLUMN private BOOLEAN NOT NULL DEFAULT false",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let connection = manager.get_connection();
        for statement in [
            "ALTER TABLE telegram_sends DROP COLUMN private",
            "DROP TABLE helpdesk_inbound",
            "DROP TABLE helpdesk_attempts",
            "DROP TABLE helpdesk_relays",
            "DROP TABLE helpdesk_visitors",
        ] {
            connection.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
