//! Rebuilds every read model from the log: empties the projected tables and
//! replays all events, in one transaction (readers see the old tables until
//! it commits). Run with the service stopped.

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseExecutor, EntityTrait};

use super::REGISTRY;
use crate::{
    db::entities::{balance, payment, subscription, ticket, ticket_message, transaction, user},
    events::{Cursor, EventStore},
};

/// Returns the number of events replayed. Stops at the first event a read
/// model cannot take (one that does not decode, say), naming it, with
/// nothing changed.
pub async fn rebuild(store: &EventStore) -> anyhow::Result<u64> {
    let txn = store.db().begin_write().await?;
    match replay(store, &txn).await {
        Ok(replayed) => {
            txn.commit().await?;
            Ok(replayed)
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

async fn replay(store: &EventStore, txn: &crate::db::WriteTxn) -> anyhow::Result<u64> {
    // Later read models' rows point at earlier ones': emptied back to front.
    for projection in REGISTRY.iter().rev() {
        for table in projection.tables() {
            txn.execute_unprepared(&format!("DELETE FROM {table}"))
                .await
                .with_context(|| format!("emptying {table}"))?;
        }
    }
    let conn = DatabaseExecutor::Transaction(txn);
    let mut cursor = Cursor::START;
    let mut replayed = 0u64;
    loop {
        let page = store.read_all(cursor, 5000).await?;
        if page.events.is_empty() {
            if page.pending {
                // Appends still committing elsewhere: wait for them.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
            break;
        }
        store
            .projections()
            .apply(&conn, &page.events)
            .await
            .context("replaying the log")?;
        replayed += page.events.len() as u64;
        cursor = page.next;
        if replayed % 50_000 < 5000 {
            tracing::info!(replayed, "rebuilding read models");
        }
    }
    Ok(replayed)
}

/// A stable text dump of every projected table, for comparing a rebuild
/// with the live tables.
pub async fn dump(conn: &impl ConnectionTrait) -> anyhow::Result<String> {
    use sea_orm::QueryOrder;
    let mut out = String::new();
    for row in user::Entity::find()
        .order_by_asc(user::Column::Id)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in ticket::Entity::find()
        .order_by_asc(ticket::Column::Id)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in ticket_message::Entity::find()
        .order_by_asc(ticket_message::Column::Id)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in balance::Entity::find()
        .order_by_asc(balance::Column::UserId)
        .order_by_asc(balance::Column::Currency)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in transaction::Entity::find()
        .order_by_asc(transaction::Column::Id)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in payment::Entity::find()
        .order_by_asc(payment::Column::Id)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    for row in subscription::Entity::find()
        .order_by_asc(subscription::Column::UserId)
        .all(conn)
        .await?
    {
        out.push_str(&format!("{row:?}\n"));
    }
    Ok(out)
}
