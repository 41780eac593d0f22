//! A balance row records the version of its stream, so a command can start
//! from it instead of folding the whole ledger of the balance (a hot
//! balance's stream grows by an event per payment). Rows written before
//! this have version 0, which commands read as "no snapshot: fold the
//! stream"; the first new entry sets it.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("balances")
                    .add_column(integer("version").default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("balances")
                    .drop_column("version")
                    .to_owned(),
            )
            .await
    }
}
