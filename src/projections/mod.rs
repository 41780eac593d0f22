//! Read models projected from the log inside the appending transaction, so a
//! read after a successful command always sees its effect.

pub mod rebuild;

use sea_orm::{ConnectionTrait, DbErr};

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

/// Applies `events` to every read model, in order.
pub async fn apply(conn: &impl ConnectionTrait, events: &[RecordedEvent]) -> Result<(), DbErr> {
    for event in events {
        let event_type = event.event_type.as_str();
        if event_type.starts_with("user.") {
            crate::users::projection::apply(conn, event).await?;
        } else if event_type.starts_with("ticket.") {
            crate::tickets::projection::apply(conn, event).await?;
        } else if event_type.starts_with("transaction.") || event_type.starts_with("payment.") {
            crate::ledger::projection::apply(conn, event).await?;
        } else if event_type.starts_with("subscription.") {
            crate::subscriptions::projection::apply(conn, event).await?;
        }
    }
    Ok(())
}
