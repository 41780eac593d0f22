//! Tickets read model: tickets, their messages, and when each side last read
//! a ticket (not derived from events, so a rebuild leaves it alone).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("tickets")
                    .col(uuid("id").primary_key())
                    .col(uuid("user_id"))
                    .col(string("subject"))
                    .col(string("status"))
                    .col(string("priority"))
                    .col(uuid_null("assignee_id"))
                    .col(integer("messages_count").default(0))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone("last_message_at"))
                    .col(integer("version"))
                    .to_owned(),
            )
            .await?;
        // At most one ticket per user that is not closed: a second concurrent
        // open fails here, inside its transaction.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX tickets_one_open_per_user ON tickets (user_id) WHERE status <> 'closed'",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("tickets_status_updated_idx")
                    .table("tickets")
                    .col("status")
                    .col("updated_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("ticket_messages")
                    .col(uuid("id").primary_key())
                    .col(uuid("ticket_id"))
                    .col(string("author"))
                    .col(string("author_id"))
                    .col(text("text"))
                    .col(string("channel"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(big_integer("position"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ticket_messages_ticket_idx")
                    .table("ticket_messages")
                    .col("ticket_id")
                    .col("position")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("ticket_reads")
                    .col(uuid("ticket_id"))
                    .col(string("side"))
                    .col(timestamp_with_time_zone("read_at"))
                    .primary_key(Index::create().col("ticket_id").col("side"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["ticket_reads", "ticket_messages", "tickets"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
