//! Leases name the instance that holds them, so that the leases of an
//! instance that is gone can be taken back before they run out.
//! `webhook_workers` lists the instances that may hold leases (PostgreSQL:
//! each holds an advisory lock while it lives).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("webhook_deliveries")
                    .add_column(big_integer_null("lease_owner"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("webhook_workers")
                    .col(big_integer("owner").primary_key())
                    .col(big_integer("started_at_ms"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("webhook_workers").to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("webhook_deliveries")
                    .drop_column("lease_owner")
                    .to_owned(),
            )
            .await
    }
}
