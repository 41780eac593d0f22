//! The `users` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub telegram_id: Option<i64>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub language_code: Option<String>,
    #[sea_orm(unique)]
    pub email: Option<String>,
    pub email_verified: bool,
    pub status: String,
    pub source: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub version: i32,
    #[sea_orm(unique)]
    pub referral_code: Option<String>,
    /// The referrer's user id (text: it is only ever compared and shown).
    pub referred_by: Option<String>,
    /// The private chat the bot writes to, once the user wrote to it.
    pub telegram_chat_id: Option<i64>,
    /// The user blocked the bot.
    pub bot_blocked: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
