//! Rebuilds every read model from the log: empties the projected tables and
//! replays all events, in one transaction (readers see the old tables until
//! it commits). Run with the service stopped.

use sea_orm::{ConnectionTrait, EntityTrait};

use crate::{
    db::{
        Db,
        entities::{balance, payment, subscription, ticket, ticket_message, transaction, user},
    },
    events::{Cursor, EventStore},
};

/// Returns the number of events replayed.
pub async fn rebuild(db: &Db, store: &EventStore) -> anyhow::Result<u64> {
    let txn = db.begin_write().await?;
    subscription::Entity::delete_many().exec(&*txn).await?;
    payment::Entity::delete_many().exec(&*txn).await?;
    transaction::Entity::delete_many().exec(&*txn).await?;
    balance::Entity::delete_many().exec(&*txn).await?;
    ticket_message::Entity::delete_many().exec(&*txn).await?;
    ticket::Entity::delete_many().exec(&*txn).await?;
    user::Entity::delete_many().exec(&*txn).await?;
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
        super::apply(&*txn, &page.events).await?;
        replayed += page.events.len() as u64;
        cursor = page.next;
        if replayed % 50_000 < 5000 {
            tracing::info!(replayed, "rebuilding read models");
        }
    }
    txn.commit().await?;
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
