//! Read models projected from the log inside the appending transaction, so a
//! read after a successful command always sees its effect.

pub mod rebuild;

use sea_orm::{ConnectionTrait, DbErr, Value};

use crate::events::RecordedEvent;

/// Whether some read model changes on this event type (appends of such
/// events need a transaction).
pub fn projects(event_type: &str) -> bool {
    [
        "user.",
        "ticket.",
        "transaction.",
        "payment.",
        "subscription.",
    ]
    .iter()
    .any(|prefix| event_type.starts_with(prefix))
}

/// Read models written by the statement that appends their events
/// (PostgreSQL): common table expressions that follow the append's
/// `written` (the rows it inserted: `id`, `position`), each beginning with
/// a comma, with their own parameters.
pub struct Fused {
    pub sql: String,
    pub values: Vec<Value>,
}

/// Whether the read models of `event_type` have a [`Fused`] form.
pub fn fusable(event_type: &str) -> bool {
    event_type == crate::tickets::projection::MESSAGE_ADDED
}

/// The read models of `events` (appended in this order) as [`Fused`], their
/// parameters numbered from `$first`; `None` if one of them has no such
/// form. Only the events that were written (found in `written`) are
/// projected.
pub fn fused(events: &[&RecordedEvent], first: usize) -> Option<Fused> {
    if !events.iter().all(|e| fusable(e.event_type.as_str())) {
        return None;
    }
    crate::tickets::projection::fused_messages(events, first)
}

/// Applies `events` to every read model, in order. A run of new ticket
/// messages (a group of commands' worth) goes in together.
pub async fn apply(conn: &impl ConnectionTrait, events: &[RecordedEvent]) -> Result<(), DbErr> {
    let mut rest = events;
    while let Some(event) = rest.first() {
        let messages = rest
            .iter()
            .take_while(|e| e.event_type.as_str() == crate::tickets::projection::MESSAGE_ADDED)
            .count();
        if messages > 1 {
            crate::tickets::projection::add_messages(conn, &rest[..messages]).await?;
            rest = &rest[messages..];
            continue;
        }
        apply_one(conn, event).await?;
        rest = &rest[1..];
    }
    Ok(())
}

async fn apply_one(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), DbErr> {
    let event_type = event.event_type.as_str();
    if event_type.starts_with("user.") {
        crate::users::projection::apply(conn, event).await
    } else if event_type.starts_with("ticket.") {
        crate::tickets::projection::apply(conn, event).await
    } else if event_type.starts_with("transaction.") || event_type.starts_with("payment.") {
        crate::ledger::projection::apply(conn, event).await
    } else if event_type.starts_with("subscription.") {
        crate::subscriptions::projection::apply(conn, event).await
    } else {
        Ok(())
    }
}
