//! Subscription routes: plans, the cabinet's own subscription (buy, renew,
//! cancel), and the admin list.

use actix_web::{HttpResponse, get, http::StatusCode, post, web};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::domain::{Buy, BuyError, PlanTerms, Subscription, SubscriptionCommand};
use crate::{
    app::AppState,
    auth::{CabinetUser, CurrentAdmin, Permission},
    config::Plan,
    db::entities::subscription,
    domain::{CommandError, Decide},
    error::{ApiError, Problem},
    ids::{TransactionId, UserId},
    ledger::domain::{Amount, Currency, LedgerError},
    tickets::queries::PageIn,
};

pub fn configure_cabinet(cfg: &mut web::ServiceConfig) {
    cfg.service(plans)
        .service(mine)
        .service(purchase)
        .service(renew)
        .service(cancel);
}

pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(list);
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub user_id: Uuid,
    pub plan_id: String,
    /// active, cancelled, expired
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl From<subscription::Model> for SubscriptionOut {
    fn from(s: subscription::Model) -> Self {
        Self {
            user_id: s.user_id,
            plan_id: s.plan_id,
            status: s.status,
            started_at: s.started_at,
            expires_at: s.expires_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct PurchaseIn {
    pub plan_id: String,
}

/// The plans on sale.
#[utoipa::path(tag = "cabinet", responses((status = 200, body = Vec<Plan>), (status = 401)), security(("bearer" = [])))]
#[get("/plans")]
pub async fn plans(state: web::Data<AppState>, _user: CabinetUser) -> HttpResponse {
    HttpResponse::Ok().json(&state.config.plans)
}

async fn current(state: &AppState, user: UserId) -> Result<Option<subscription::Model>, ApiError> {
    Ok(subscription::Entity::find_by_id(user.as_uuid())
        .one(state.db.conn())
        .await?)
}

/// The caller's subscription (404 if they never had one).
#[utoipa::path(tag = "cabinet", responses((status = 200, body = SubscriptionOut), (status = 401), (status = 404)), security(("bearer" = [])))]
#[get("/subscription")]
#[tracing::instrument(skip_all)]
pub async fn mine(state: web::Data<AppState>, user: CabinetUser) -> Result<HttpResponse, ApiError> {
    let row = current(&state, user.id)
        .await?
        .ok_or_else(|| Problem::not_found().detail("no subscription yet"))?;
    Ok(HttpResponse::Ok().json(SubscriptionOut::from(row)))
}

/// Pays for a plan from the balance and records the subscription, in one
/// transaction; both retry together if either changed concurrently.
async fn buy(
    state: &AppState,
    user: &CabinetUser,
    plan_id: &str,
    renewal: bool,
) -> Result<subscription::Model, ApiError> {
    let plan = state
        .config
        .plans
        .iter()
        .find(|p| p.id == plan_id)
        .ok_or_else(|| Problem::invalid_field("plan_id", "no such plan"))?
        .clone();
    let amount = Amount::parse(plan.price).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let currency =
        Currency::parse(&plan.currency).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let terms = PlanTerms {
        plan_id: plan.id.clone(),
        days: plan.days,
        price: plan.price,
        currency: plan.currency.clone(),
    };
    let buy = Buy {
        user_id: user.id,
        transaction_id: TransactionId::new(),
        plan: terms,
        description: format!("{} ({} days)", plan.name, plan.days),
        renewal,
        now: Utc::now(),
        amount,
        currency,
    };
    match state.commands.run(buy, user.actor()).await {
        Ok(_) => {}
        Err(CommandError::Domain(BuyError::Ledger(LedgerError::InsufficientFunds {
            balance,
            needed,
        }))) => {
            return Err(Problem::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_funds",
                "Insufficient funds",
            )
            .detail(format!(
                "the balance is {balance}, the plan costs {needed}; top up first"
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    current(state, user.id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("subscription has no read model row")))
}

/// Buys a plan from the balance (402 `insufficient_funds` if it is too low,
/// 409 `subscription_active` if one is running — renew it instead).
#[utoipa::path(tag = "cabinet", request_body = PurchaseIn, responses((status = 201, body = SubscriptionOut), (status = 401), (status = 402), (status = 409), (status = 422)), security(("bearer" = [])))]
#[post("/subscription")]
#[tracing::instrument(skip_all)]
pub async fn purchase(
    state: web::Data<AppState>,
    user: CabinetUser,
    body: web::Json<PurchaseIn>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(SubscriptionOut::from(
        buy(&state, &user, &body.plan_id, false).await?,
    )))
}

/// Renews: extends a running subscription from its end, or starts a new one.
#[utoipa::path(tag = "cabinet", request_body = PurchaseIn, responses((status = 200, body = SubscriptionOut), (status = 401), (status = 402), (status = 422)), security(("bearer" = [])))]
#[post("/subscription/renew")]
#[tracing::instrument(skip_all)]
pub async fn renew(
    state: web::Data<AppState>,
    user: CabinetUser,
    body: web::Json<PurchaseIn>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(SubscriptionOut::from(
        buy(&state, &user, &body.plan_id, true).await?,
    )))
}

/// Cancels the running subscription (no refund).
#[utoipa::path(tag = "cabinet", responses((status = 200, body = SubscriptionOut), (status = 401), (status = 409)), security(("bearer" = [])))]
#[post("/subscription/cancel")]
#[tracing::instrument(skip_all)]
pub async fn cancel(
    state: web::Data<AppState>,
    user: CabinetUser,
) -> Result<HttpResponse, ApiError> {
    let id = user.id;
    state
        .commands
        .run(
            Decide::<Subscription>::new(id, SubscriptionCommand::Cancel { user_id: id }),
            user.actor(),
        )
        .await?;
    let row = current(&state, id).await?.ok_or_else(Problem::not_found)?;
    Ok(HttpResponse::Ok().json(SubscriptionOut::from(row)))
}

#[derive(Deserialize, IntoParams)]
pub struct SubscriptionFilter {
    /// active, cancelled, expired
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionPageOut {
    pub items: Vec<SubscriptionOut>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

/// Subscriptions, those ending soonest first.
#[utoipa::path(tag = "subscriptions", params(SubscriptionFilter, PageIn), responses((status = 200, body = SubscriptionPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/subscriptions")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    filter: web::Query<SubscriptionFilter>,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersRead)?;
    let page = page.validate()?;
    let mut condition = Condition::all();
    if let Some(status) = &filter.status {
        condition = condition.add(subscription::Column::Status.eq(status.as_str()));
    }
    let query = subscription::Entity::find().filter(condition);
    let total = query.clone().count(state.db.conn()).await?;
    let items = query
        .order_by_asc(subscription::Column::ExpiresAt)
        .offset(page.0 * page.1)
        .limit(page.1)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(SubscriptionPageOut {
        items,
        page: page.0 + 1,
        per_page: page.1,
        total,
    }))
}
