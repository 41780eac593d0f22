//! Subscriptions: plans bought from the balance, renewed, cancelled, and
//! expired by a scheduler (exactly once, even with several instances: the
//! expiry is an append at the subscription's version).

pub mod domain;
pub mod projection;
pub mod routes;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use tokio_util::sync::CancellationToken;

use self::domain::{Subscription, SubscriptionCommand};
use crate::{
    db::entities::subscription,
    domain::{CommandError, Commands, Decide},
    events::Actor,
    ids::UserId,
};

/// Expires every active subscription that ran out by `now`; returns how
/// many this call expired. Safe to run on every instance at once.
pub async fn expire_due(commands: &Commands, now: DateTime<Utc>) -> anyhow::Result<usize> {
    let due = subscription::Entity::find()
        .filter(subscription::Column::Status.eq("active"))
        .filter(subscription::Column::ExpiresAt.lte(now))
        .limit(500)
        .all(commands.store().db().conn())
        .await?;
    let mut expired = 0;
    for row in due {
        let user = UserId::from_uuid(row.user_id);
        let expire =
            Decide::<Subscription>::new(user, SubscriptionCommand::Expire { user_id: user, now });
        match commands.run(expire, Actor::system()).await {
            Ok(done) => expired += done.events.len(),
            Err(CommandError::Domain(e)) => {
                tracing::warn!(user = %user, error = %e, "cannot expire a subscription")
            }
            Err(e) => return Err(anyhow::anyhow!(e.to_string())),
        }
    }
    Ok(expired)
}

/// The scheduler task.
#[tracing::instrument(name = "subscription_scheduler", skip_all)]
pub async fn run_scheduler(commands: Commands, interval: Duration, shutdown: CancellationToken) {
    loop {
        match expire_due(&commands, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "subscriptions expired"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "subscription expiry check failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
