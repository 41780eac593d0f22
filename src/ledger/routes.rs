//! Ledger routes: the cabinet's balance, transactions and payments; the
//! admin API's payments (provider callbacks), top-ups and withdrawals.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    domain::{Amount, Currency, Entry, TransactionKind},
    service::{self, PaymentIn},
};
use crate::{
    app::AppState,
    auth::{CabinetUser, CurrentAdmin, Permission},
    db::entities::{balance, payment, transaction},
    error::{ApiError, Problem},
    ids::{TransactionId, UserId},
    tickets::queries::PageIn,
    validate,
};

pub fn configure_cabinet(cfg: &mut web::ServiceConfig) {
    cfg.service(my_balance)
        .service(my_transactions)
        .service(my_payments);
}

pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(record_payment)
        .service(refund_payment)
        .service(list_payments)
        .service(top_up)
        .service(withdraw)
        .service(user_ledger);
}

#[derive(Serialize, ToSchema)]
pub struct BalanceOut {
    pub currency: String,
    /// Minor units.
    pub balance: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionOut {
    pub id: Uuid,
    pub kind: String,
    /// Minor units; negative for debits.
    pub amount: i64,
    pub currency: String,
    pub balance_after: i64,
    pub reference: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PaymentOut {
    pub id: Uuid,
    pub user_id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub provider: String,
    pub external_id: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

impl From<transaction::Model> for TransactionOut {
    fn from(t: transaction::Model) -> Self {
        Self {
            id: t.id,
            kind: t.kind,
            amount: t.amount,
            currency: t.currency,
            balance_after: t.balance_after,
            reference: t.reference,
            description: t.description,
            created_at: t.created_at,
        }
    }
}

impl From<payment::Model> for PaymentOut {
    fn from(p: payment::Model) -> Self {
        Self {
            id: p.id,
            user_id: p.user_id,
            amount: p.amount,
            currency: p.currency,
            provider: p.provider,
            external_id: p.external_id,
            status: p.status,
            failure_reason: p.failure_reason,
            created_at: p.created_at,
        }
    }
}

async fn balances_of(state: &AppState, user: Uuid) -> Result<Vec<BalanceOut>, ApiError> {
    Ok(balance::Entity::find()
        .filter(balance::Column::UserId.eq(user))
        .order_by_asc(balance::Column::Currency)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(|b| BalanceOut {
            currency: b.currency,
            balance: b.balance,
        })
        .collect())
}

async fn transactions_of(
    state: &AppState,
    user: Uuid,
    page: (u64, u64),
) -> Result<Paged<TransactionOut>, ApiError> {
    let query = transaction::Entity::find().filter(transaction::Column::UserId.eq(user));
    let total = query.clone().count(state.db.conn()).await?;
    let items = query
        .order_by_desc(transaction::Column::Position)
        .offset(page.0 * page.1)
        .limit(page.1)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Paged {
        items,
        page: page.0 + 1,
        per_page: page.1,
        total,
    })
}

async fn payments_where(
    state: &AppState,
    condition: Condition,
    page: (u64, u64),
) -> Result<Paged<PaymentOut>, ApiError> {
    let query = payment::Entity::find().filter(condition);
    let total = query.clone().count(state.db.conn()).await?;
    let items = query
        .order_by_desc(payment::Column::CreatedAt)
        .order_by_desc(payment::Column::Id)
        .offset(page.0 * page.1)
        .limit(page.1)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Paged {
        items,
        page: page.0 + 1,
        per_page: page.1,
        total,
    })
}

/// The caller's balances, one per currency.
#[utoipa::path(tag = "cabinet", responses((status = 200, body = Vec<BalanceOut>), (status = 401)), security(("bearer" = [])))]
#[get("/balance")]
#[tracing::instrument(skip_all)]
pub async fn my_balance(
    state: web::Data<AppState>,
    user: CabinetUser,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(balances_of(&state, user.id.as_uuid()).await?))
}

/// The caller's ledger, newest first.
#[utoipa::path(tag = "cabinet", params(PageIn), responses((status = 200, body = Paged<TransactionOut>), (status = 401), (status = 422)), security(("bearer" = [])))]
#[get("/transactions")]
#[tracing::instrument(skip_all)]
pub async fn my_transactions(
    state: web::Data<AppState>,
    user: CabinetUser,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    let page = page.validate()?;
    Ok(HttpResponse::Ok().json(transactions_of(&state, user.id.as_uuid(), page).await?))
}

/// The caller's payments, newest first.
#[utoipa::path(tag = "cabinet", params(PageIn), responses((status = 200, body = Paged<PaymentOut>), (status = 401), (status = 422)), security(("bearer" = [])))]
#[get("/payments")]
#[tracing::instrument(skip_all)]
pub async fn my_payments(
    state: web::Data<AppState>,
    user: CabinetUser,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    let page = page.validate()?;
    let condition = Condition::all().add(payment::Column::UserId.eq(user.id.as_uuid()));
    Ok(HttpResponse::Ok().json(payments_where(&state, condition, page).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct PaymentRecordIn {
    pub user_id: Uuid,
    /// Minor units, positive.
    #[schema(minimum = 1, maximum = 1_000_000_000_000i64, example = 29900)]
    pub amount: i64,
    /// ISO 4217, e.g. `RUB`, `USD`, `XTR` (Telegram Stars).
    #[schema(pattern = "^[A-Z]{3}$", example = "RUB")]
    pub currency: String,
    /// e.g. `yookassa`, `stripe`, `telegram_stars`.
    #[schema(min_length = 1, max_length = 64, example = "yookassa")]
    pub provider: String,
    /// The provider's id of this payment: the same id twice is recorded once.
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "2d9f6b1e-000f-5000-8000-1a2b3c4d5e6f"
    )]
    pub external_id: String,
    /// `completed` (credits the balance) or `failed`.
    #[schema(example = "completed")]
    pub status: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub failure_reason: Option<String>,
}

fn money(amount: i64, currency: &str) -> Result<(Amount, Currency), ApiError> {
    let amount = Amount::parse(amount).map_err(|e| Problem::invalid_field("amount", e))?;
    let currency = Currency::parse(currency).map_err(|e| Problem::invalid_field("currency", e))?;
    Ok((amount, currency))
}

/// Records a payment's outcome (a provider callback). Idempotent on
/// `(provider, external_id)`: the first call answers 201, a repeat 200 with
/// the payment unchanged and the balance credited once.
#[utoipa::path(tag = "ledger", request_body = PaymentRecordIn, responses((status = 201, body = PaymentOut), (status = 200, body = PaymentOut, description = "already recorded"), (status = 401), (status = 403), (status = 404, description = "no such user"), (status = 409), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/payments")]
#[tracing::instrument(skip_all)]
pub async fn record_payment(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<PaymentRecordIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerManage)?;
    let (amount, currency) = money(body.amount, &body.currency)?;
    let provider = validate::text("provider", &body.provider, 64)?;
    let external_id = validate::text("external_id", &body.external_id, 200)?;
    let failure = match body.status.as_str() {
        "completed" => None,
        "failed" => Some(
            body.failure_reason
                .clone()
                .unwrap_or_else(|| "failed".to_owned())
                .chars()
                .take(500)
                .collect(),
        ),
        _ => return Err(Problem::invalid_field("status", "`completed` or `failed`").into()),
    };
    let user_id = UserId::from_uuid(body.user_id);
    let (payment, created) = service::record_payment(
        &state,
        PaymentIn {
            user_id,
            amount,
            currency,
            provider,
            external_id,
            failure,
            description: None,
        },
        caller.actor(),
    )
    .await?;
    let out = PaymentOut::from(payment);
    Ok(if created == service::Recorded::New {
        HttpResponse::Created().json(out)
    } else {
        HttpResponse::Ok().json(out)
    })
}

#[derive(Deserialize, ToSchema)]
pub struct RefundIn {
    pub reason: String,
}

/// Refunds a completed payment (`payment.refunded` and a `refund` debit of
/// the balance; 409 `insufficient_funds` if the money was spent, 409
/// `payment_not_refundable` / `payment_final` otherwise).
#[utoipa::path(tag = "ledger", params(("id" = Uuid, Path)), request_body = RefundIn, responses((status = 200, body = PaymentOut), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/payments/{id}/refund")]
#[tracing::instrument(skip_all)]
pub async fn refund_payment(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<crate::ids::PaymentId>,
    body: web::Json<RefundIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerManage)?;
    let reason = validate::text("reason", &body.reason, 500)?;
    let payment = service::refund(&state, *id, reason, caller.actor()).await?;
    Ok(HttpResponse::Ok().json(PaymentOut::from(payment)))
}

#[derive(Deserialize, IntoParams)]
pub struct PaymentFilter {
    pub user_id: Option<Uuid>,
    /// pending, completed, failed
    pub status: Option<String>,
}

/// Payments, newest first.
#[utoipa::path(tag = "ledger", params(PaymentFilter, PageIn), responses((status = 200, body = Paged<PaymentOut>), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/payments")]
#[tracing::instrument(skip_all)]
pub async fn list_payments(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    filter: web::Query<PaymentFilter>,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerRead)?;
    let page = page.validate()?;
    let mut condition = Condition::all();
    if let Some(user) = filter.user_id {
        condition = condition.add(payment::Column::UserId.eq(user));
    }
    if let Some(status) = &filter.status {
        condition = condition.add(payment::Column::Status.eq(status.as_str()));
    }
    Ok(HttpResponse::Ok().json(payments_where(&state, condition, page).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct AdjustmentIn {
    /// Minor units, positive.
    #[schema(minimum = 1, maximum = 1_000_000_000_000i64, example = 10000)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$", example = "RUB")]
    pub currency: String,
    /// Why (kept on the ledger entry).
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "compensation for the outage"
    )]
    pub reason: String,
}

/// Credits a user's balance by hand (a `payment.completed` from provider
/// `admin`, and a deposit on the ledger).
#[utoipa::path(tag = "ledger", params(("id" = Uuid, Path)), request_body = AdjustmentIn, responses((status = 201, body = PaymentOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/users/{id}/top-up")]
#[tracing::instrument(skip_all)]
pub async fn top_up(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
    body: web::Json<AdjustmentIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerManage)?;
    let (amount, currency) = money(body.amount, &body.currency)?;
    let reason = validate::text("reason", &body.reason, 500)?;
    let user_id = *id;
    let (payment, _) = service::record_payment(
        &state,
        PaymentIn {
            user_id,
            amount,
            currency,
            provider: service::TOP_UP_PROVIDER.to_owned(),
            external_id: format!("top-up:{}", Uuid::now_v7()),
            failure: None,
            description: Some(reason),
        },
        caller.actor(),
    )
    .await?;
    Ok(HttpResponse::Created().json(PaymentOut::from(payment)))
}

/// Debits a user's balance by hand; never below zero (409 `insufficient_funds`).
#[utoipa::path(tag = "ledger", params(("id" = Uuid, Path)), request_body = AdjustmentIn, responses((status = 201, body = Vec<BalanceOut>), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/users/{id}/withdrawals")]
#[tracing::instrument(skip_all)]
pub async fn withdraw(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
    body: web::Json<AdjustmentIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerManage)?;
    let (amount, currency) = money(body.amount, &body.currency)?;
    let reason = validate::text("reason", &body.reason, 500)?;
    let user_id = *id;
    service::ensure_user(&state, user_id).await?;
    service::post_entry(
        &state,
        Entry {
            transaction_id: TransactionId::new(),
            user_id,
            currency,
            kind: TransactionKind::Withdrawal,
            amount,
            reference: None,
            description: Some(reason),
        },
        caller.actor(),
    )
    .await?;
    Ok(HttpResponse::Created().json(balances_of(&state, id.as_uuid()).await?))
}

#[derive(Serialize, ToSchema)]
pub struct LedgerOut {
    pub balances: Vec<BalanceOut>,
    pub transactions: Paged<TransactionOut>,
}

/// A user's balances and ledger.
#[utoipa::path(tag = "ledger", params(("id" = Uuid, Path), PageIn), responses((status = 200, body = LedgerOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/users/{id}/ledger")]
#[tracing::instrument(skip_all)]
pub async fn user_ledger(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::LedgerRead)?;
    let page = page.validate()?;
    service::ensure_user(&state, *id).await?;
    Ok(HttpResponse::Ok().json(LedgerOut {
        balances: balances_of(&state, id.as_uuid()).await?,
        transactions: transactions_of(&state, id.as_uuid(), page).await?,
    }))
}
