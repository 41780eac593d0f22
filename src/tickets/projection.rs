//! The `tickets` and `ticket_messages` read models.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    QueryFilter, Set, Statement, Value,
    sea_query::{ArrayType, Expr, ExprTrait},
};

use super::domain::TicketEvent;
use crate::{
    db::entities::{ticket, ticket_message},
    domain::DomainEvent,
    events::RecordedEvent,
};

pub async fn apply(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), DbErr> {
    let Some(ticket_event) = TicketEvent::from_recorded(event) else {
        return Ok(());
    };
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
pub const MESSAGE_ADDED: &str = "ticket.message_added";

/// New messages, of any tickets. On PostgreSQL one statement inserts them
/// all and updates their tickets, however many there are (its text does not
/// change with their number).
pub async fn add_messages(
    conn: &impl ConnectionTrait,
    events: &[RecordedEvent],
) -> Result<(), DbErr> {
    if conn.get_database_backend() != DatabaseBackend::Postgres {
        for event in events {
            apply(conn, event).await?;
        }
        return Ok(());
    }
    let mut rows = MessageRows::default();
    // Per ticket: how many messages, and the last one's time and version.
    let mut tickets: HashMap<uuid::Uuid, (i32, Value, i32)> = HashMap::new();
    for event in events {
        let Some(TicketEvent::MessageAdded {
            ticket_id,
            message_id,
            author,
            author_id,
            text,
            channel,
            ..
        }) = TicketEvent::from_recorded(event)
        else {
            // Not a message: `apply` would not project it either.
            continue;
        };
        let version = i32::try_from(event.version).unwrap_or(i32::MAX);
        rows.id.push(message_id.as_uuid().into());
        rows.ticket_id.push(ticket_id.as_uuid().into());
        rows.author.push(enum_text(&author).into());
        rows.author_id.push(author_id.into());
        rows.text.push(text.into());
        rows.channel.push(enum_text(&channel).into());
        rows.created_at.push(event.occurred_at.into());
        rows.position.push(event.position.into());
        let ticket = tickets.entry(ticket_id.as_uuid()).or_insert((
            0,
            Value::from(event.occurred_at),
            version,
        ));
        *ticket = (ticket.0 + 1, event.occurred_at.into(), version);
    }
    if rows.id.is_empty() {
        return Ok(());
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
    let array = |ty: ArrayType, values: Vec<Value>| Value::Array(ty, Some(Box::new(values)));
    // Both tables in one statement: the insert runs as part of it even
    // though nothing reads its result.
    conn.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        "WITH messages AS (INSERT INTO ticket_messages \
           (id, ticket_id, author, author_id, text, channel, created_at, position) \
           SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
           $6::text[], $7::timestamptz[], $8::int8[])) \
         UPDATE tickets AS t SET messages_count = t.messages_count + v.added, \
         last_message_at = v.at, updated_at = v.at, version = v.version \
         FROM unnest($9::uuid[], $10::int4[], $11::timestamptz[], $12::int4[]) AS v(id, added, at, version) \
         WHERE t.id = v.id",
        [
            array(ArrayType::Uuid, rows.id),
            array(ArrayType::Uuid, rows.ticket_id),
            array(ArrayType::String, rows.author),
            array(ArrayType::String, rows.author_id),
            array(ArrayType::String, rows.text),
            array(ArrayType::String, rows.channel),
            array(ArrayType::ChronoDateTimeUtc, rows.created_at),
            array(ArrayType::BigInt, rows.position),
            array(ArrayType::Uuid, ids),
            array(ArrayType::Int, added),
            array(ArrayType::ChronoDateTimeUtc, last_at),
            array(ArrayType::Int, versions),
        ],
    ))
    .await?;
    Ok(())
}

/// The `ticket_messages` columns of [`add_messages`], one array each.
#[derive(Default)]
struct MessageRows {
    id: Vec<Value>,
    ticket_id: Vec<Value>,
    author: Vec<Value>,
    author_id: Vec<Value>,
    text: Vec<Value>,
    channel: Vec<Value>,
    created_at: Vec<Value>,
    position: Vec<Value>,
}

/// The serde name of a unit enum variant (`Author::User` → `user`).
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
