//! The `users` read model.

use futures::future::BoxFuture;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseExecutor, EntityTrait, Set};

use super::domain::UserEvent;
use crate::{
    db::entities::user,
    domain::DomainEvent,
    events::RecordedEvent,
    projections::{Projection, ProjectionError},
};

/// `users`.
pub struct Users;

impl Projection for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn handles(&self) -> &'static [&'static str] {
        UserEvent::TYPES
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(conn, event))
    }
}

async fn apply(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let user_event = UserEvent::from_recorded(event)?;
    let version = i32::try_from(event.version).unwrap_or(i32::MAX);
    match user_event {
        UserEvent::Created(created) => {
            let telegram = created.telegram.unwrap_or_default();
            let source = serde_json::to_value(created.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            user::ActiveModel {
                id: Set(created.user_id.as_uuid()),
                telegram_id: Set((telegram.telegram_id != 0).then_some(telegram.telegram_id)),
                username: Set(telegram.username),
                first_name: Set(telegram.first_name),
                last_name: Set(telegram.last_name),
                language_code: Set(telegram.language_code.or(created.language_code)),
                email: Set(created.email),
                email_verified: Set(false),
                status: Set("active".to_owned()),
                source: Set(source),
                created_at: Set(event.occurred_at),
                updated_at: Set(event.occurred_at),
                version: Set(version),
                referral_code: Set(created.referral_code),
                referred_by: Set(created.referred_by.map(|r| r.to_string())),
                telegram_chat_id: Set(created.telegram_chat_id),
                bot_blocked: Set(false),
            }
            .insert(conn)
            .await?;
        }
        UserEvent::Updated(updated) => {
            change(conn, updated.user_id, event, |row| {
                if let Some(v) = updated.username {
                    row.username = Set(Some(v));
                }
                if let Some(v) = updated.first_name {
                    row.first_name = Set(Some(v));
                }
                if let Some(v) = updated.last_name {
                    row.last_name = Set(Some(v));
                }
                if let Some(v) = updated.language_code {
                    row.language_code = Set(Some(v));
                }
                if let Some(v) = updated.telegram_chat_id {
                    row.telegram_chat_id = Set(Some(v));
                }
            })
            .await?;
        }
        UserEvent::Blocked { user_id, .. } => {
            change(conn, user_id, event, |row| {
                row.status = Set("blocked".to_owned())
            })
            .await?;
        }
        UserEvent::Unblocked { user_id } => {
            change(conn, user_id, event, |row| {
                row.status = Set("active".to_owned())
            })
            .await?;
        }
        UserEvent::BotBlocked { user_id } => {
            change(conn, user_id, event, |row| row.bot_blocked = Set(true)).await?;
        }
        UserEvent::BotUnblocked { user_id } => {
            change(conn, user_id, event, |row| row.bot_blocked = Set(false)).await?;
        }
        UserEvent::EmailVerified { user_id, .. } => {
            change(conn, user_id, event, |row| row.email_verified = Set(true)).await?;
        }
    }
    Ok(())
}

/// Changes the user's row (if there is one) as `edit` says, at `event`'s
/// time and version.
async fn change(
    conn: &impl ConnectionTrait,
    user_id: crate::ids::UserId,
    event: &RecordedEvent,
    edit: impl FnOnce(&mut user::ActiveModel),
) -> Result<(), ProjectionError> {
    let Some(row) = user::Entity::find_by_id(user_id.as_uuid())
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let mut row: user::ActiveModel = row.into();
    edit(&mut row);
    row.updated_at = Set(event.occurred_at);
    row.version = Set(i32::try_from(event.version).unwrap_or(i32::MAX));
    row.update(conn).await?;
    Ok(())
}
