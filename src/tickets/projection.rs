//! The `tickets` and `ticket_messages` read models.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, ExprTrait},
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

/// The serde name of a unit enum variant (`Author::User` → `user`).
fn enum_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
