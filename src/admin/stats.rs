//! Dashboard figures: `GET /api/v1/admin/stats?from=&to=` (`stats:read`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    db::entities::{payment, subscription, ticket, user},
    error::{ApiError, Problem},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(stats);
}

#[derive(Deserialize, IntoParams)]
pub struct Period {
    /// RFC 3339; default: 30 days before `to`.
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; default: now.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct StatsOut {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub users_total: u64,
    pub users_new: u64,
    pub users_blocked: u64,
    pub subscriptions_active: u64,
    /// Tickets by status, now.
    pub tickets: BTreeMap<String, u64>,
    pub tickets_opened: u64,
    pub payments_completed: u64,
    pub payments_failed: u64,
    /// Completed payments in the period, per currency (minor units).
    pub revenue: BTreeMap<String, i64>,
}

/// Counts and sums over a period.
#[utoipa::path(tag = "stats", params(Period), responses((status = 200, body = StatsOut), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/stats")]
#[tracing::instrument(skip_all)]
pub async fn stats(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    period: web::Query<Period>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::StatsRead)?;
    let to = period.to.unwrap_or_else(Utc::now);
    let from = period.from.unwrap_or(to - Duration::days(30));
    if from > to {
        return Err(Problem::invalid_field("from", "must not be after `to`").into());
    }
    let conn = state.db.conn();
    let mut tickets = BTreeMap::new();
    for status in ["open", "answered", "pending", "closed"] {
        tickets.insert(
            status.to_owned(),
            ticket::Entity::find()
                .filter(ticket::Column::Status.eq(status))
                .count(conn)
                .await?,
        );
    }
    let completed = payment::Entity::find()
        .filter(payment::Column::Status.eq("completed"))
        .filter(payment::Column::UpdatedAt.between(from, to))
        .all(conn)
        .await?;
    let mut revenue = BTreeMap::new();
    for p in &completed {
        *revenue.entry(p.currency.clone()).or_insert(0i64) += p.amount;
    }
    Ok(HttpResponse::Ok().json(StatsOut {
        from,
        to,
        users_total: user::Entity::find().count(conn).await?,
        users_new: user::Entity::find()
            .filter(user::Column::CreatedAt.between(from, to))
            .count(conn)
            .await?,
        users_blocked: user::Entity::find()
            .filter(user::Column::Status.eq("blocked"))
            .count(conn)
            .await?,
        subscriptions_active: subscription::Entity::find()
            .filter(subscription::Column::Status.eq("active"))
            .count(conn)
            .await?,
        tickets,
        tickets_opened: ticket::Entity::find()
            .filter(ticket::Column::CreatedAt.between(from, to))
            .count(conn)
            .await?,
        payments_completed: completed.len() as u64,
        payments_failed: payment::Entity::find()
            .filter(payment::Column::Status.eq("failed"))
            .filter(payment::Column::UpdatedAt.between(from, to))
            .count(conn)
            .await?,
        revenue,
    }))
}
