//! The mail outbox: e-mails are rows written in the same transaction as
//! whatever caused them, and sent by the worker afterwards.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use serde_json::Value;

use crate::db::entities::mail;

pub async fn enqueue(
    conn: &impl ConnectionTrait,
    recipient: &str,
    template: &str,
    language: &str,
    context: Value,
) -> Result<(), DbErr> {
    let now = Utc::now();
    mail::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        recipient: Set(recipient.to_owned()),
        template: Set(template.to_owned()),
        language: Set(language.to_owned()),
        context: Set(context),
        status: Set("pending".to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        locked_until: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        sent_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}
