//! The `subscriptions` read model.

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseExecutor, EntityTrait, Set, sea_query::OnConflict};

use super::domain::SubscriptionEvent;
use crate::{
    db::entities::subscription,
    domain::DomainEvent,
    events::RecordedEvent,
    projections::{Projection, ProjectionError},
};

/// `subscriptions`.
pub struct Subscriptions;

impl Projection for Subscriptions {
    fn name(&self) -> &'static str {
        "subscriptions"
    }

    fn handles(&self) -> &'static [&'static str] {
        SubscriptionEvent::TYPES
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscriptions"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(conn, event))
    }
}

async fn apply(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let sub_event = SubscriptionEvent::from_recorded(event)?;
    let at = event.occurred_at;
    let upsert = |row: subscription::ActiveModel, columns: Vec<subscription::Column>| {
        subscription::Entity::insert(row).on_conflict(
            OnConflict::column(subscription::Column::UserId)
                .update_columns(columns)
                .to_owned(),
        )
    };
    use subscription::Column as C;
    match sub_event {
        SubscriptionEvent::Activated {
            user_id,
            plan_id,
            started_at,
            expires_at,
            ..
        } => {
            upsert(
                subscription::ActiveModel {
                    user_id: Set(user_id.as_uuid()),
                    plan_id: Set(plan_id),
                    status: Set("active".into()),
                    started_at: Set(started_at),
                    expires_at: Set(expires_at),
                    updated_at: Set(at),
                },
                vec![
                    C::PlanId,
                    C::Status,
                    C::StartedAt,
                    C::ExpiresAt,
                    C::UpdatedAt,
                ],
            )
            .exec(conn)
            .await?;
        }
        SubscriptionEvent::Renewed {
            user_id,
            plan_id,
            expires_at,
            ..
        } => {
            upsert(
                subscription::ActiveModel {
                    user_id: Set(user_id.as_uuid()),
                    plan_id: Set(plan_id),
                    status: Set("active".into()),
                    started_at: Set(at),
                    expires_at: Set(expires_at),
                    updated_at: Set(at),
                },
                vec![C::PlanId, C::Status, C::ExpiresAt, C::UpdatedAt],
            )
            .exec(conn)
            .await?;
        }
        SubscriptionEvent::Cancelled { user_id, plan_id }
        | SubscriptionEvent::Expired {
            user_id, plan_id, ..
        } => {
            let status = if matches!(event.event_type.as_str(), "subscription.cancelled") {
                "cancelled"
            } else {
                "expired"
            };
            upsert(
                subscription::ActiveModel {
                    user_id: Set(user_id.as_uuid()),
                    plan_id: Set(plan_id),
                    status: Set(status.into()),
                    started_at: Set(at),
                    expires_at: Set(at),
                    updated_at: Set(at),
                },
                vec![C::Status, C::UpdatedAt],
            )
            .exec(conn)
            .await?;
        }
    }
    Ok(())
}
