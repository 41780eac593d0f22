//! Referral codes and who referred whom, on the users read model.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("ALTER TABLE users ADD COLUMN referral_code TEXT")
            .await?;
        conn.execute_unprepared("ALTER TABLE users ADD COLUMN referred_by TEXT")
            .await?;
        conn.execute_unprepared(
            "CREATE UNIQUE INDEX users_referral_code_key ON users (referral_code)",
        )
        .await?;
        conn.execute_unprepared("CREATE INDEX users_referred_by_idx ON users (referred_by)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared("DROP INDEX users_referred_by_idx")
            .await?;
        conn.execute_unprepared("DROP INDEX users_referral_code_key")
            .await?;
        conn.execute_unprepared("ALTER TABLE users DROP COLUMN referred_by")
            .await?;
        conn.execute_unprepared("ALTER TABLE users DROP COLUMN referral_code")
            .await?;
        Ok(())
    }
}
