//! A rotated refresh token remembers (sealed) the token that replaced it:
//! presenting it again within a few seconds (two tabs refreshing at once)
//! answers with that same token instead of ending the session.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("refresh_tokens")
                    .add_column(string_null("successor"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("refresh_tokens")
                    .drop_column("successor")
                    .to_owned(),
            )
            .await
    }
}
