//! The `tickets` and `ticket_messages` read models.

use std::collections::HashMap;

use futures::future::BoxFuture;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseExecutor, EntityTrait,
    QueryFilter, Set, Statement, Value,
    sea_query::{ArrayType, Expr, ExprTrait},
};

use super::domain::{Status, TicketEvent};
use crate::{
    db::entities::{ticket, ticket_message},
    domain::DomainEvent,
    events::{DecodeError, RecordedEvent},
    projections::{Fused, Projection, ProjectionError},
    telegram::domain::Media,
};

/// `tickets` and `ticket_messages`.
pub struct Tickets;

impl Projection for Tickets {
    fn name(&self) -> &'static str {
        "tickets"
    }

    fn handles(&self) -> &'static [&'static str] {
        TicketEvent::TYPES
    }

    fn tables(&self) -> &'static [&'static str] {
        &["ticket_messages", "tickets"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(conn, event))
    }

    /// On PostgreSQL a run of new messages (a group of commands' worth) goes
    /// in as one statement, however many there are.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut rest = events;
            while let Some(event) = rest.first() {
                let messages = rest
                    .iter()
                    .take_while(|e| e.event_type.as_str() == MESSAGE_ADDED)
                    .count();
                if messages > 1 && conn.get_database_backend() == DatabaseBackend::Postgres {
                    add_messages(conn, &rest[..messages]).await?;
                    rest = &rest[messages..];
                    continue;
                }
                apply(conn, event).await?;
                rest = &rest[1..];
            }
            Ok(())
        })
    }

    fn fused(&self, events: &[&RecordedEvent], first: usize) -> Result<Option<Fused>, DecodeError> {
        fused_messages(events, first)
    }

    /// A ticket that opens, closes or reopens changes which ticket of its
    /// user is the open one (`tickets_one_open_per_user`): such events of
    /// one user are ordered by the user.
    fn ordering_keys(&self, event: &RecordedEvent) -> Result<Vec<i32>, DecodeError> {
        let user = match TicketEvent::from_recorded(event)? {
            TicketEvent::Created { user_id, .. } => Some(user_id),
            TicketEvent::StatusChanged {
                user_id,
                old_status,
                new_status,
                ..
            } if (old_status == Status::Closed) != (new_status == Status::Closed) => Some(user_id),
            _ => None,
        };
        Ok(user
            .map(|user| fold_key(user.as_uuid()))
            .into_iter()
            .collect())
    }
}

/// A uuid folded into an advisory lock key (two users sharing one only
/// wait for each other).
fn fold_key(id: uuid::Uuid) -> i32 {
    let bytes = id.into_bytes();
    bytes.chunks_exact(4).fold(0_i32, |key, chunk| {
        key ^ i32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])
    })
}

async fn apply(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let ticket_event = TicketEvent::from_recorded(event)?;
    let version = i32::try_from(event.version).unwrap_or(i32::MAX);
    let at = event.occurred_at;
    let update = |id: crate::ids::TicketId| {
        ticket::Entity::update_many()
            .col_expr(ticket::Column::UpdatedAt, Expr::value(at))
            .col_expr(ticket::Column::Version, Expr::value(version))
            .filter(ticket::Column::Id.eq(id.as_uuid()))
    };
    match ticket_event {
        TicketEvent::Created {
            ticket_id,
            user_id,
            subject,
            status,
            priority,
        } => {
            ticket::ActiveModel {
                id: Set(ticket_id.as_uuid()),
                user_id: Set(user_id.as_uuid()),
                subject: Set(subject),
                status: Set(status.as_str().to_owned()),
                priority: Set(priority.as_str().to_owned()),
                assignee_id: Set(None),
                messages_count: Set(0),
                created_at: Set(at),
                updated_at: Set(at),
                last_message_at: Set(at),
                version: Set(version),
            }
            .insert(conn)
            .await?;
        }
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
            ticket_message::ActiveModel {
                id: Set(message_id.as_uuid()),
                ticket_id: Set(ticket_id.as_uuid()),
                author: Set(enum_text(&author)),
                author_id: Set(author_id),
                text: Set(text),
                channel: Set(enum_text(&channel)),
                created_at: Set(at),
                position: Set(event.position),
                media: Set(media_json(&media)),
            }
            .insert(conn)
            .await?;
            update(ticket_id)
                .col_expr(
                    ticket::Column::MessagesCount,
                    Expr::col(ticket::Column::MessagesCount).add(1),
                )
                .col_expr(ticket::Column::LastMessageAt, Expr::value(at))
                .exec(conn)
                .await?;
        }
        TicketEvent::StatusChanged {
            ticket_id,
            new_status,
            ..
        } => {
            update(ticket_id)
                .col_expr(ticket::Column::Status, Expr::value(new_status.as_str()))
                .exec(conn)
                .await?;
        }
        TicketEvent::PriorityChanged {
            ticket_id,
            new_priority,
            ..
        } => {
            update(ticket_id)
                .col_expr(ticket::Column::Priority, Expr::value(new_priority.as_str()))
                .exec(conn)
                .await?;
        }
        TicketEvent::Assigned {
            ticket_id,
            assignee_id,
            ..
        } => {
            update(ticket_id)
                .col_expr(
                    ticket::Column::AssigneeId,
                    Expr::value(assignee_id.map(|a| a.as_uuid())),
                )
                .exec(conn)
                .await?;
        }
    }
    Ok(())
}

/// The type of the events [`add_messages`] takes.
const MESSAGE_ADDED: &str = "ticket.message_added";

/// New messages, of any tickets (PostgreSQL): one statement inserts them all
/// and updates their tickets, however many there are (its text does not
/// change with their number).
async fn add_messages(
    conn: &impl ConnectionTrait,
    events: &[&RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut rows = MessageRows::of(events.iter().copied())?;
    if rows.id.is_empty() {
        return Ok(());
    }
    // Per ticket: how many messages, and the last one's time and version.
    let mut tickets: HashMap<uuid::Uuid, (i32, Value, i32)> = HashMap::new();
    for (i, ticket_id) in rows.tickets.iter().enumerate() {
        let ticket =
            tickets
                .entry(*ticket_id)
                .or_insert((0, rows.created_at[i].clone(), rows.versions[i]));
        *ticket = (ticket.0 + 1, rows.created_at[i].clone(), rows.versions[i]);
    }
    let mut ids = Vec::with_capacity(tickets.len());
    let mut added = Vec::with_capacity(tickets.len());
    let mut last_at = Vec::with_capacity(tickets.len());
    let mut versions = Vec::with_capacity(tickets.len());
    for (id, (count, at, version)) in tickets {
        ids.push(id.into());
        added.push(count.into());
        last_at.push(at);
        versions.push(version.into());
    }
    // Both tables in one statement: the insert runs as part of it even
    // though nothing reads its result.
    let position = std::mem::take(&mut rows.position);
    let mut values = rows.into_columns();
    values.extend([
        array(ArrayType::BigInt, position),
        array(ArrayType::Uuid, ids),
        array(ArrayType::Int, added),
        array(ArrayType::ChronoDateTimeUtc, last_at),
        array(ArrayType::Int, versions),
    ]);
    conn.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "WITH messages AS (INSERT INTO ticket_messages \
           (id, ticket_id, author, author_id, text, channel, created_at, media, position) \
           SELECT id, ticket_id, author, author_id, text, channel, created_at, \
             NULLIF(media, ''), position \
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::timestamptz[], $8::text[], $9::int8[]) \
             AS m(id, ticket_id, author, author_id, text, channel, created_at, media, position)) \
         UPDATE tickets AS t SET messages_count = t.messages_count + v.added, \
         last_message_at = v.at, updated_at = v.at, version = v.version \
         FROM unnest($10::uuid[], $11::int4[], $12::timestamptz[], $13::int4[]) AS v(id, added, at, version) \
         WHERE t.id = v.id",
        values,
    ))
    .await?;
    Ok(())
}

/// New messages projected by the statement that appends them
/// ([`Fused`]): the rows `written` holds (their events went in) are
/// inserted, and their tickets updated. `None` unless every event is a new
/// message.
fn fused_messages(events: &[&RecordedEvent], first: usize) -> Result<Option<Fused>, DecodeError> {
    if events
        .iter()
        .any(|e| e.event_type.as_str() != MESSAGE_ADDED)
    {
        return Ok(None);
    }
    let rows = MessageRows::of(events.iter().copied())?;
    let event_ids = rows
        .events
        .iter()
        .map(|id| Value::from(id.as_uuid()))
        .collect();
    let versions = rows.versions.iter().map(|v| Value::from(*v)).collect();
    // The positions come from `written`.
    let mut values = rows.into_columns();
    values.extend([
        array(ArrayType::Uuid, event_ids),
        array(ArrayType::Int, versions),
    ]);
    let p: Vec<String> = (first..first + values.len())
        .map(|n| format!("${n}"))
        .collect();
    let sql = format!(
        ", fused_messages AS (SELECT m.*, w.position FROM unnest({}::uuid[], {}::uuid[], \
         {}::text[], {}::text[], {}::text[], {}::text[], {}::timestamptz[], {}::text[], \
         {}::uuid[], {}::int4[]) \
           AS m(id, ticket_id, author, author_id, text, channel, created_at, media, event_id, \
             version) \
           JOIN written AS w ON w.id = m.event_id), \
         fused_message_rows AS (INSERT INTO ticket_messages \
           (id, ticket_id, author, author_id, text, channel, created_at, media, position) \
           SELECT id, ticket_id, author, author_id, text, channel, created_at, \
             NULLIF(media, ''), position \
           FROM fused_messages), \
         fused_tickets AS (UPDATE tickets AS t SET messages_count = t.messages_count + v.added, \
           last_message_at = v.at, updated_at = v.at, version = v.version \
           FROM (SELECT ticket_id, count(*)::int4 AS added, max(created_at) AS at, \
             max(version) AS version FROM fused_messages GROUP BY ticket_id) AS v \
           WHERE t.id = v.ticket_id)",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
    );
    Ok(Some(Fused { sql, values }))
}

/// The `ticket_messages` columns of new messages, one array each, with
/// their events' ids and versions.
#[derive(Default)]
struct MessageRows {
    id: Vec<Value>,
    ticket_id: Vec<Value>,
    author: Vec<Value>,
    author_id: Vec<Value>,
    text: Vec<Value>,
    channel: Vec<Value>,
    created_at: Vec<Value>,
    media: Vec<Value>,
    position: Vec<Value>,
    tickets: Vec<uuid::Uuid>,
    events: Vec<crate::ids::EventId>,
    versions: Vec<i32>,
}

impl MessageRows {
    /// The rows of `events`, which are all new messages.
    fn of<'a>(events: impl Iterator<Item = &'a RecordedEvent>) -> Result<Self, DecodeError> {
        let mut rows = Self::default();
        for event in events {
            let TicketEvent::MessageAdded {
                ticket_id,
                message_id,
                author,
                author_id,
                text,
                channel,
                media,
                ..
            } = TicketEvent::from_recorded(event)?
            else {
                return Err(DecodeError::of(event, "not a new message"));
            };
            rows.id.push(message_id.as_uuid().into());
            rows.ticket_id.push(ticket_id.as_uuid().into());
            rows.author.push(enum_text(&author).into());
            rows.author_id.push(author_id.into());
            rows.text.push(text.into());
            rows.channel.push(enum_text(&channel).into());
            rows.created_at.push(event.occurred_at.into());
            // An array element cannot be NULL here: none is '' (and
            // NULL in the table, by NULLIF).
            rows.media
                .push(media_json(&media).unwrap_or_default().into());
            rows.position.push(event.position.into());
            rows.tickets.push(ticket_id.as_uuid());
            rows.events.push(event.id);
            rows.versions
                .push(i32::try_from(event.version).unwrap_or(i32::MAX));
        }
        Ok(rows)
    }

    /// The `ticket_messages` columns up to `media`, as arrays in table
    /// order.
    fn into_columns(self) -> Vec<Value> {
        vec![
            array(ArrayType::Uuid, self.id),
            array(ArrayType::Uuid, self.ticket_id),
            array(ArrayType::String, self.author),
            array(ArrayType::String, self.author_id),
            array(ArrayType::String, self.text),
            array(ArrayType::String, self.channel),
            array(ArrayType::ChronoDateTimeUtc, self.created_at),
            array(ArrayType::String, self.media),
        ]
    }
}

/// A message's files as stored: JSON, or NULL for none.
fn media_json(media: &[Media]) -> Option<String> {
    (!media.is_empty())
        .then(|| serde_json::to_string(media).ok())
        .flatten()
}

fn array(ty: ArrayType, values: Vec<Value>) -> Value {
    Value::Array(ty, Some(Box::new(values)))
}

/// The serde name of a unit enum variant (`Author::User` → `user`).
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
