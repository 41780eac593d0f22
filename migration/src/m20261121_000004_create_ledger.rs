//! Ledger read models: balances, transactions, payments.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("balances")
                    .col(uuid("user_id"))
                    .col(string("currency"))
                    .col(big_integer("balance"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("user_id").col("currency"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("transactions")
                    .col(uuid("id").primary_key())
                    .col(uuid("user_id"))
                    .col(string("kind"))
                    .col(big_integer("amount"))
                    .col(string("currency"))
                    .col(big_integer("balance_after"))
                    .col(string_null("reference"))
                    .col(string_null("description"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(big_integer("position"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transactions_user_idx")
                    .table("transactions")
                    .col("user_id")
                    .col("position")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("payments")
                    .col(uuid("id").primary_key())
                    .col(uuid("user_id"))
                    .col(big_integer("amount"))
                    .col(string("currency"))
                    .col(string("provider"))
                    .col(string("external_id"))
                    .col(string("status"))
                    .col(string_null("failure_reason"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payments_provider_external_key")
                    .table("payments")
                    .col("provider")
                    .col("external_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("payments_user_idx")
                    .table("payments")
                    .col("user_id")
                    .col("created_at")
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["payments", "transactions", "balances"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
