//! Reads of the tickets read model, and the per-side read marks.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    db::entities::{ticket, ticket_message, ticket_read},
    error::{ApiError, Problem},
};

/// Which side reads: the ticket's user or the operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    User,
    Operator,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Operator => "operator",
        }
    }

    /// Messages the other side wrote are the unread ones.
    fn other_author(self) -> &'static str {
        match self {
            Self::User => "operator",
            Self::Operator => "user",
        }
    }
}

/// `?page=1&per_page=20` (at most 100 per page).
#[derive(Debug, Clone, Deserialize, IntoParams)]
pub struct PageIn {
    pub page: Option<u64>,
    pub per_page: Option<u64>,
}

impl PageIn {
    /// (page index from 0, page size), or a 422 naming the field.
    pub fn validate(&self) -> Result<(u64, u64), ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(20);
        if page == 0 || page > 1_000_000 {
            return Err(Problem::invalid_field("page", "must be between 1 and 1000000").into());
        }
        if per_page == 0 || per_page > 100 {
            return Err(Problem::invalid_field("per_page", "must be between 1 and 100").into());
        }
        Ok((page - 1, per_page))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketOut {
    pub id: Uuid,
    pub user_id: Uuid,
    pub subject: String,
    pub status: String,
    pub priority: String,
    pub assignee_id: Option<Uuid>,
    pub messages_count: i32,
    /// Messages from the other side not read yet by the caller's side.
    pub unread: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: Uuid,
    /// `user` or `operator`.
    pub author: String,
    /// The operator's admin id (admin API only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    pub text: String,
    pub channel: String,
    pub created_at: DateTime<Utc>,
    /// The files a Telegram user sent with the message (the admin API
    /// serves them at `/api/v1/admin/telegram/files/{file_id}`).
    pub media: Vec<crate::telegram::domain::Media>,
}

/// What adding a message answers: the message and the ticket's status after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageAddedOut {
    pub ticket_id: Uuid,
    pub status: String,
    pub message: MessageOut,
    /// An operator's reply to a user the bot can write to: the Telegram
    /// send that delivers it to their chat (`GET
    /// /api/v1/admin/telegram/sends?chat_id=` shows how it went).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telegram_send_id: Option<Uuid>,
}

impl MessageAddedOut {
    /// From the events the command appended.
    pub fn from_events(
        events: &[crate::events::RecordedEvent],
        previous_status: &str,
        side: Side,
    ) -> Option<Self> {
        use crate::{domain::DomainEvent, tickets::TicketEvent};
        let mut status = previous_status.to_owned();
        let mut added = None;
        for event in events {
            match TicketEvent::from_recorded(event).ok()? {
                TicketEvent::MessageAdded {
                    ticket_id,
                    message_id,
                    author,
                    author_id,
                    text,
                    channel,
                    media,
                    ..
                } => {
                    added = Some((
                        ticket_id,
                        MessageOut {
                            id: message_id.as_uuid(),
                            author: text_of(&author),
                            author_id: (side == Side::Operator).then_some(author_id),
                            text,
                            channel: text_of(&channel),
                            created_at: event.occurred_at,
                            media,
                        },
                    ));
                }
                TicketEvent::StatusChanged { new_status, .. } => {
                    status = new_status.as_str().to_owned()
                }
                _ => {}
            }
        }
        let (ticket_id, message) = added?;
        Some(Self {
            ticket_id: ticket_id.as_uuid(),
            status,
            message,
            telegram_send_id: None,
        })
    }
}

fn text_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketPageOut {
    pub items: Vec<TicketOut>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TicketDetailOut {
    #[serde(flatten)]
    pub ticket: TicketOut,
    pub messages: Vec<MessageOut>,
}

pub async fn unread(
    conn: &impl ConnectionTrait,
    ticket_id: Uuid,
    side: Side,
) -> Result<u64, DbErr> {
    let read_at = ticket_read::Entity::find_by_id((ticket_id, side.as_str().to_owned()))
        .one(conn)
        .await?
        .map(|r| r.read_at);
    let mut query = ticket_message::Entity::find()
        .filter(ticket_message::Column::TicketId.eq(ticket_id))
        .filter(ticket_message::Column::Author.eq(side.other_author()));
    if let Some(read_at) = read_at {
        query = query.filter(ticket_message::Column::CreatedAt.gt(read_at));
    }
    query.count(conn).await
}

pub async fn mark_read(
    conn: &impl ConnectionTrait,
    ticket_id: Uuid,
    side: Side,
) -> Result<(), DbErr> {
    ticket_read::Entity::insert(ticket_read::ActiveModel {
        ticket_id: sea_orm::Set(ticket_id),
        side: sea_orm::Set(side.as_str().to_owned()),
        read_at: sea_orm::Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([ticket_read::Column::TicketId, ticket_read::Column::Side])
            .update_column(ticket_read::Column::ReadAt)
            .to_owned(),
    )
    .exec(conn)
    .await?;
    Ok(())
}

pub async fn to_out(
    conn: &impl ConnectionTrait,
    row: ticket::Model,
    side: Side,
) -> Result<TicketOut, DbErr> {
    Ok(TicketOut {
        unread: unread(conn, row.id, side).await?,
        id: row.id,
        user_id: row.user_id,
        subject: row.subject,
        status: row.status,
        priority: row.priority,
        assignee_id: row.assignee_id,
        messages_count: row.messages_count,
        created_at: row.created_at,
        updated_at: row.updated_at,
        last_message_at: row.last_message_at,
    })
}

/// Filters for the admin list.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
pub struct TicketFilter {
    /// open, answered, pending, closed
    pub status: Option<String>,
    pub priority: Option<String>,
    pub assignee_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// `recent` (the default): most recently active first. `unread`: those
    /// with messages the caller's side has not read first, then by activity.
    pub sort: Option<Sort>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    Recent,
    Unread,
}

pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &TicketFilter,
    page: (u64, u64),
    side: Side,
) -> Result<TicketPageOut, DbErr> {
    let mut condition = Condition::all();
    if let Some(status) = &filter.status {
        condition = condition.add(ticket::Column::Status.eq(status.as_str()));
    }
    if let Some(priority) = &filter.priority {
        condition = condition.add(ticket::Column::Priority.eq(priority.as_str()));
    }
    if let Some(assignee) = filter.assignee_id {
        condition = condition.add(ticket::Column::AssigneeId.eq(assignee));
    }
    if let Some(user) = filter.user_id {
        condition = condition.add(ticket::Column::UserId.eq(user));
    }
    let mut query = ticket::Entity::find().filter(condition);
    let total = query.clone().count(conn).await?;
    if filter.sort == Some(Sort::Unread) {
        // As `unread` counts: a message of the other side after this side
        // last read the ticket (or it never did).
        query = query.order_by_desc(Expr::cust(format!(
            "EXISTS (SELECT 1 FROM ticket_messages AS m WHERE m.ticket_id = tickets.id \
               AND m.author = '{other}' AND NOT EXISTS (SELECT 1 FROM ticket_reads AS r \
                 WHERE r.ticket_id = tickets.id AND r.side = '{side}' \
                   AND r.read_at >= m.created_at))",
            other = side.other_author(),
            side = side.as_str(),
        )));
    }
    let rows = query
        .order_by_desc(ticket::Column::LastMessageAt)
        .order_by_desc(ticket::Column::Id)
        .offset(page.0 * page.1)
        .limit(page.1)
        .all(conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(to_out(conn, row, side).await?);
    }
    Ok(TicketPageOut {
        items,
        page: page.0 + 1,
        per_page: page.1,
        total,
    })
}

/// The ticket with its messages, oldest first.
pub async fn detail(
    conn: &impl ConnectionTrait,
    row: ticket::Model,
    side: Side,
) -> Result<TicketDetailOut, DbErr> {
    let messages = ticket_message::Entity::find()
        .filter(ticket_message::Column::TicketId.eq(row.id))
        .order_by_asc(ticket_message::Column::Position)
        .all(conn)
        .await?
        .into_iter()
        .map(|m| MessageOut {
            id: m.id,
            author_id: (side == Side::Operator).then_some(m.author_id),
            author: m.author,
            text: m.text,
            channel: m.channel,
            created_at: m.created_at,
            media: m
                .media
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
        })
        .collect();
    Ok(TicketDetailOut {
        ticket: to_out(conn, row, side).await?,
        messages,
    })
}
