//! A verification token carries the password it was issued with: whoever
//! proves the mailbox with it gets that password, not the one of whoever
//! registered the address last.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("email_tokens")
                    .add_column(string_null("password_hash"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("email_tokens")
                    .drop_column("password_hash")
                    .to_owned(),
            )
            .await
    }
}
