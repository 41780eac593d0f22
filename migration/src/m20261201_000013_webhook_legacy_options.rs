//! Endpoints as the older cabinet API made them: a secret the receiver
//! chose, used as is for `X-Webhook-Signature` (sealed like the other
//! secrets), and the body sent, the whole envelope or the bare payload.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("webhook_endpoints")
                    .add_column(string_null("legacy_secret"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("webhook_endpoints")
                    .add_column(string("body").default("envelope"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in ["legacy_secret", "body"] {
            manager
                .alter_table(
                    Table::alter()
                        .table("webhook_endpoints")
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
