//! Who a broadcast is for: everyone, a list of users (by id or Telegram
//! id), or a filter; always narrowed to users the bot can write to (their
//! chat is known, they did not block the bot, no admin blocked them).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Query,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::domain::LeftOut;
use crate::db::entities::{subscription, user};

/// The most users a list may name.
pub const MAX_LISTED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionFilter {
    /// An active subscription.
    Active,
    /// A subscription that ended (expired or cancelled), none active.
    Expired,
    /// Never a subscription.
    None,
}

/// One of: `{"all": true}`, `{"user_ids": […]}`, `{"telegram_ids": […]}`,
/// or a filter whose conditions are combined with AND.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_ids: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionFilter>,
    /// A language code (`ru`; `ru` also takes `ru-RU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_after: Option<DateTime<Utc>>,
}

impl Audience {
    /// Why it names no audience, if it does not.
    pub fn check(&self) -> Result<(), &'static str> {
        let filter = self.subscription.is_some()
            || self.language.is_some()
            || self.registered_after.is_some();
        let kinds = [
            self.all.is_some(),
            self.user_ids.is_some(),
            self.telegram_ids.is_some(),
            filter,
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(
                "one of {\"all\": true}, {\"user_ids\": […]}, {\"telegram_ids\": […]} or a filter \
                 (subscription, language, registered_after)",
            );
        }
        if self.all == Some(false) {
            return Err("`all` is true when given");
        }
        let listed = self
            .user_ids
            .as_ref()
            .map(Vec::len)
            .or(self.telegram_ids.as_ref().map(Vec::len));
        if let Some(n) = listed
            && !(1..=MAX_LISTED).contains(&n)
        {
            return Err("a list of 1 to 100000 ids");
        }
        if let Some(language) = &self.language
            && (language.is_empty()
                || language.len() > 35
                || !language
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err("`language` is a language code such as `ru` or `pt-BR`");
        }
        Ok(())
    }
}

/// One user the broadcast goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: Uuid,
    pub chat_id: i64,
}

/// The users `audience` names that the bot can write to; and who was left
/// out.
pub async fn resolve(
    conn: &impl ConnectionTrait,
    audience: &Audience,
) -> Result<(Vec<Member>, LeftOut), DbErr> {
    type Row = (Uuid, Option<i64>, Option<i64>, bool, String);
    let mut found: Vec<Row> = Vec::new();
    let select = || {
        user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::TelegramId)
            .column(user::Column::TelegramChatId)
            .column(user::Column::BotBlocked)
            .column(user::Column::Status)
            .order_by_asc(user::Column::CreatedAt)
            .order_by_asc(user::Column::Id)
    };
    let mut named = 0;
    // A few thousand ids a query: within every backend's limit on
    // parameters.
    if let Some(ids) = &audience.user_ids {
        let ids: HashSet<Uuid> = ids.iter().copied().collect();
        named = ids.len();
        let ids: Vec<Uuid> = ids.into_iter().collect();
        for chunk in ids.chunks(5000) {
            let rows: Vec<Row> = select()
                .filter(user::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(conn)
                .await?;
            found.extend(rows);
        }
    } else if let Some(ids) = &audience.telegram_ids {
        let ids: HashSet<i64> = ids.iter().copied().collect();
        named = ids.len();
        let ids: Vec<i64> = ids.into_iter().collect();
        for chunk in ids.chunks(5000) {
            let rows: Vec<Row> = select()
                .filter(user::Column::TelegramId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(conn)
                .await?;
            found.extend(rows);
        }
    } else {
        let mut condition = Condition::all();
        if let Some(subscription) = audience.subscription {
            let rows = |status_active: bool| {
                let mut query = Query::select();
                query
                    .column(subscription::Column::UserId)
                    .from(subscription::Entity);
                if status_active {
                    query.and_where(subscription::Column::Status.eq("active"));
                } else {
                    query.and_where(subscription::Column::Status.ne("active"));
                }
                query.to_owned()
            };
            condition = condition.add(match subscription {
                SubscriptionFilter::Active => user::Column::Id.in_subquery(rows(true)),
                SubscriptionFilter::Expired => user::Column::Id.in_subquery(rows(false)),
                SubscriptionFilter::None => {
                    let mut any = Query::select();
                    any.column(subscription::Column::UserId)
                        .from(subscription::Entity);
                    user::Column::Id.not_in_subquery(any.to_owned())
                }
            });
        }
        if let Some(language) = &audience.language {
            condition = condition.add(
                Condition::any()
                    .add(user::Column::LanguageCode.eq(language.clone()))
                    .add(user::Column::LanguageCode.like(format!("{language}-%"))),
            );
        }
        if let Some(after) = audience.registered_after {
            condition = condition.add(user::Column::CreatedAt.gt(after));
        }
        found = select().filter(condition).into_tuple().all(conn).await?;
    }
    let mut left_out = LeftOut {
        not_found: i64::try_from(named.saturating_sub(found.len())).unwrap_or(0),
        ..LeftOut::default()
    };
    let mut chats = HashSet::new();
    let mut members = Vec::with_capacity(found.len());
    for (user_id, _telegram_id, chat, bot_blocked, status) in found {
        match chat {
            _ if status == "blocked" => left_out.blocked += 1,
            _ if bot_blocked => left_out.bot_blocked += 1,
            None => left_out.no_chat += 1,
            Some(chat_id) if chats.insert(chat_id) => members.push(Member { user_id, chat_id }),
            Some(_) => {}
        }
    }
    Ok((members, left_out))
}
