//! User commands with writes besides their events, and lookups of users in
//! the read model.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::domain::{UserCommand, UserError, UserState};
use crate::{
    auth::{sessions, tokens::Audience},
    db::{WriteTxn, entities::user},
    domain::{Command, CommandError, Target, Work},
    events::RecordedEvent,
    ids::UserId,
};

/// Blocks a user: `user.blocked`, and every cabinet session of theirs ends
/// in the same transaction.
pub struct BlockUser {
    pub user_id: UserId,
    pub reason: String,
}

impl Command for BlockUser {
    type Output = ();
    type Error = UserError;
    fn writes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<UserState>(self.user_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), UserError> {
        work.execute::<UserState>(
            self.user_id,
            UserCommand::Block {
                reason: self.reason.clone(),
            },
        )?;
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<UserError>> {
        sessions::revoke_all(
            &**txn,
            Audience::Cabinet,
            self.user_id.as_uuid(),
            "user blocked",
        )
        .await?;
        Ok(())
    }
}

pub async fn find_by_telegram_id(
    conn: &impl ConnectionTrait,
    telegram_id: i64,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::TelegramId.eq(telegram_id))
        .one(conn)
        .await
}

pub async fn find_by_email(
    conn: &impl ConnectionTrait,
    email: &str,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(conn)
        .await
}

/// The user whose private chat with the bot is `chat_id`.
pub async fn find_by_telegram_chat(
    conn: &impl ConnectionTrait,
    chat_id: i64,
) -> Result<Option<user::Model>, DbErr> {
    user::Entity::find()
        .filter(user::Column::TelegramChatId.eq(chat_id))
        .one(conn)
        .await
}
