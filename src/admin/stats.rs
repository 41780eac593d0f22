//! Dashboard figures: `GET /api/v1/admin/stats?from=&to=` (`stats:read`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    db::{
        Backend,
        entities::{payment, subscription, ticket, user},
    },
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
    /// `hour` or `day`: also answer `series`, the period's figures hour by
    /// hour or day by day (UTC; at most 1,000 of them).
    pub bucket: Option<Bucket>,
}

#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    fn length(self) -> Duration {
        match self {
            Self::Hour => Duration::hours(1),
            Self::Day => Duration::days(1),
        }
    }

    /// The start of the bucket `at` falls in.
    fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let step = self.length().num_seconds();
        let seconds = at.timestamp().div_euclid(step) * step;
        DateTime::from_timestamp(seconds, 0).unwrap_or(at)
    }

    /// SQL naming a timestamp column's bucket as text (`2026-12-01T10`,
    /// `2026-12-01`), which [`Bucket::parse`] reads back.
    fn key_sql(self, backend: Backend, column: &str) -> String {
        match (backend, self) {
            (Backend::Postgres, Self::Hour) => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')")
            }
            (Backend::Postgres, Self::Day) => {
                format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
            // Stored as RFC 3339 text in UTC.
            (Backend::Sqlite, Self::Hour) => format!("substr({column}, 1, 13)"),
            (Backend::Sqlite, Self::Day) => format!("substr({column}, 1, 10)"),
        }
    }

    fn parse(self, key: &str) -> Option<DateTime<Utc>> {
        let key = key.replace(' ', "T");
        let text = match self {
            Self::Hour => format!("{key}:00:00Z"),
            Self::Day => format!("{key}T00:00:00Z"),
        };
        DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }
}

/// One hour's or one day's figures.
#[derive(Serialize, ToSchema)]
pub struct BucketOut {
    pub start: DateTime<Utc>,
    /// Events appended to the log.
    pub events: u64,
    pub users_new: u64,
    pub tickets_opened: u64,
    pub payments_completed: u64,
    /// Per currency (minor units).
    pub revenue: BTreeMap<String, i64>,
}

const MOST_BUCKETS: i64 = 1_000;

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
    /// With `bucket`: every hour or day of the period, oldest first (the
    /// first and last may be partly outside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<BucketOut>>,
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
    if let Some(bucket) = period.bucket
        && (bucket.start(to) - bucket.start(from)).num_seconds() / bucket.length().num_seconds()
            >= MOST_BUCKETS
    {
        return Err(
            Problem::invalid_field("bucket", "more than 1,000 buckets in the period").into(),
        );
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
    let series = match period.bucket {
        Some(bucket) => Some(series(&state, bucket, from, to, &completed).await?),
        None => None,
    };
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
        series,
    }))
}

/// The period's figures per bucket: counted by the database, grouped by
/// the text of each row's bucket.
async fn series(
    state: &AppState,
    bucket: Bucket,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    completed: &[payment::Model],
) -> Result<Vec<BucketOut>, ApiError> {
    let backend = state.db.backend();
    let conn = state.db.conn();
    let mut buckets = BTreeMap::new();
    let mut start = bucket.start(from);
    while start <= to {
        buckets.insert(
            start,
            BucketOut {
                start,
                events: 0,
                users_new: 0,
                tickets_opened: 0,
                payments_completed: 0,
                revenue: BTreeMap::new(),
            },
        );
        start += bucket.length();
    }
    let key = bucket.key_sql(backend, "occurred_at");
    let (low, high): (sea_orm::Value, sea_orm::Value) = match backend {
        Backend::Postgres => (from.into(), to.into()),
        Backend::Sqlite => (
            from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
            to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        ),
    };
    let rows = conn
        .query_all_raw(state.db.statement(
            &format!(
                "SELECT {key} AS k, COUNT(*) AS n FROM events \
                 WHERE occurred_at BETWEEN $1 AND $2 GROUP BY {key}"
            ),
            vec![low, high],
        ))
        .await?;
    for row in rows {
        let (key, n): (String, i64) = (row.try_get("", "k")?, row.try_get("", "n")?);
        if let Some(out) = bucket.parse(&key).and_then(|at| buckets.get_mut(&at)) {
            out.events = n.max(0) as u64;
        }
    }
    let key = bucket.key_sql(backend, "created_at");
    let users: Vec<(String, i64)> = user::Entity::find()
        .select_only()
        .column_as(Expr::cust(key.clone()), "k")
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(user::Column::CreatedAt.between(from, to))
        .group_by(Expr::cust(key.clone()))
        .into_tuple()
        .all(conn)
        .await?;
    for (key, n) in users {
        if let Some(out) = bucket.parse(&key).and_then(|at| buckets.get_mut(&at)) {
            out.users_new = n.max(0) as u64;
        }
    }
    let tickets: Vec<(String, i64)> = ticket::Entity::find()
        .select_only()
        .column_as(Expr::cust(key.clone()), "k")
        .column_as(Expr::cust("COUNT(*)"), "n")
        .filter(ticket::Column::CreatedAt.between(from, to))
        .group_by(Expr::cust(key))
        .into_tuple()
        .all(conn)
        .await?;
    for (key, n) in tickets {
        if let Some(out) = bucket.parse(&key).and_then(|at| buckets.get_mut(&at)) {
            out.tickets_opened = n.max(0) as u64;
        }
    }
    for payment in completed {
        if let Some(out) = buckets.get_mut(&bucket.start(payment.updated_at)) {
            out.payments_completed += 1;
            *out.revenue.entry(payment.currency.clone()).or_insert(0) += payment.amount;
        }
    }
    Ok(buckets.into_values().collect())
}
