//! `/api/v1/admin/webhooks…`: endpoint management, deliveries, statistics
//! (`webhooks:manage` for everything, including seeing secrets).

use std::collections::BTreeMap;

use actix_web::{
    HttpResponse, delete, get,
    http::header::{HeaderName, HeaderValue},
    patch, post, web,
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    signing::new_secret,
    store::{self, BodyShape, EndpointRow, now_ms},
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    error::{ApiError, OptionalJson, Problem},
    events::{Cursor, EventType, RecordedEvent, StreamName, TypeFilter},
    ids::{EventId, WebhookEndpointId},
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(stats)
        .service(create)
        .service(list)
        .service(view)
        .service(edit)
        .service(remove)
        .service(enable)
        .service(disable)
        .service(reveal_secret)
        .service(rotate_secret)
        .service(send_test)
        .service(deliveries)
        .service(resend)
        .service(recover)
        .service(start_backfill)
        .service(view_backfill)
        .service(cancel_backfill);
}

/// Headers an endpoint may not set: the ones the signature depends on.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointIn {
    #[schema(min_length = 1, max_length = 200, example = "CRM")]
    pub name: String,
    /// `https://…` (or `http://`); internal addresses are refused unless
    /// allowed by configuration.
    #[schema(
        max_length = 2000,
        example = "https://crm.example.com/hooks/switchboard"
    )]
    pub url: String,
    /// Event types with `*` suffix wildcards, e.g. `["ticket.*",
    /// "payment.completed"]`; `["*"]` for everything (the default).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Extra request headers, e.g. `{"Authorization": "Bearer …"}`.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Deliver strictly in log order; a failing event holds back later
    /// ones until it succeeds or runs out of attempts.
    #[serde(default)]
    pub ordered: Option<bool>,
    /// One type, as the older cabinet API took it: the same as
    /// `event_types` with one element (give one or the other).
    #[serde(default)]
    #[schema(example = "payment.completed")]
    pub event_type: Option<String>,
    /// A secret of the receiver's choosing, as the older cabinet API took
    /// it: `X-Webhook-Signature` is computed with it as it is. The
    /// Standard Webhooks signature still uses a generated `whsec_` secret.
    #[serde(default)]
    #[schema(min_length = 8, max_length = 512)]
    pub secret: Option<String>,
    /// The request body: the event envelope (the default) or, for
    /// receivers written against the older cabinet API, the bare payload.
    #[serde(default)]
    pub body: Option<BodyShape>,
    /// The same as `enabled` on a change; an endpoint starts enabled
    /// unless this is `false`.
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// One type (the older cabinet API's field): `event_types` of one.
    pub event_type: Option<String>,
    /// An empty string removes it.
    pub description: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub ordered: Option<bool>,
    pub enabled: Option<bool>,
    /// The older cabinet API's name for `enabled`.
    pub is_active: Option<bool>,
    /// Replaces the receiver-chosen secret of `X-Webhook-Signature`; an
    /// empty string goes back to signing it with the `whsec_` secret.
    #[schema(max_length = 512)]
    pub secret: Option<String>,
    pub body: Option<BodyShape>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: Uuid,
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub ordered: bool,
    pub enabled: bool,
    /// `X-Webhook-Signature` is signed with a secret the receiver chose.
    pub custom_legacy_secret: bool,
    pub body: BodyShape,
    /// Why it was disabled (by an admin, a `410 Gone`, or days of failures).
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Deliveries have failed without a success since then.
    pub failing_since: Option<DateTime<Utc>>,
    /// A rotated secret still signs (alongside the new one) until then.
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointCreatedOut {
    #[serde(flatten)]
    pub endpoint: EndpointOut,
    /// `whsec_…`: verify signatures with it.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretOut {
    pub secret: String,
    pub previous_secret_valid_until: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointPageOut {
    pub items: Vec<EndpointOut>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Deserialize, IntoParams)]
pub struct ListQuery {
    pub enabled: Option<bool>,
    /// At most 100 (default 20).
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// At most 100 (default 20).
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// How long the old secret keeps signing (default from configuration,
    /// 24 h); 0 retires it at once.
    pub grace_seconds: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverIn {
    /// Re-queue failed deliveries of events from this time…
    pub since: DateTime<Utc>,
    /// …until this one (default: now).
    pub until: Option<DateTime<Utc>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillIn {
    /// Events that occurred at or after this time…
    pub since: Option<DateTime<Utc>>,
    /// …and/or that come after this cursor (from the live feed, the event
    /// browser or an envelope). At least one of the two.
    #[schema(example = "4810-4812-1912098701")]
    pub after: Option<String>,
    /// Deliveries queued per second, at most (default 50).
    #[schema(minimum = 1, maximum = 1000)]
    pub rate: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct BackfillOut {
    /// `running`, `completed` or `cancelled`.
    pub status: String,
    pub since: Option<DateTime<Utc>>,
    /// Where it started, how far it has read, and where it ends (the head
    /// when it started; later events are queued as they are appended).
    pub start: String,
    pub cursor: String,
    pub until: String,
    /// How far it has read from `start` to `until`, from 0 to 1.
    pub progress: f64,
    /// Events read, and deliveries queued (those the endpoint already had
    /// are not queued again).
    pub scanned: u64,
    pub enqueued: u64,
    /// Queued deliveries withdrawn unsent by a cancel.
    pub withdrawn: u64,
    /// What became of the queued deliveries so far.
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub rate: u32,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoverOut {
    pub requeued: u64,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub duration_ms: i64,
    pub response_status: Option<u16>,
    /// The first 4 KiB (pruned after the retention period).
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryOut {
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_response_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempt_log: Vec<AttemptOut>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPageOut {
    pub items: Vec<DeliveryOut>,
    /// Deliveries matching the query, on every page.
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TestOut {
    pub event_id: Uuid,
    pub success: bool,
    pub response_status: Option<u16>,
    pub duration_ms: i64,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookStatsOut {
    pub overall: CountsOut,
    pub endpoints: Vec<EndpointStatsOut>,
}

#[derive(Serialize, ToSchema)]
pub struct EndpointStatsOut {
    pub id: Uuid,
    pub name: String,
    pub enabled: bool,
    #[serde(flatten)]
    pub counts: CountsOut,
}

#[derive(Serialize, ToSchema, Default)]
pub struct CountsOut {
    /// Deliveries by state, all time.
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
    /// Delivered / (delivered + failed), all time; null before any ended.
    pub success_rate: Option<f64>,
    /// Attempts in the last 24 hours, and how many got a 2xx.
    pub attempts_24h: u64,
    pub successful_attempts_24h: u64,
    /// Response time of successful attempts in the last 24 hours.
    pub latency_ms: Option<LatencyOut>,
}

#[derive(Serialize, ToSchema)]
pub struct LatencyOut {
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn out(row: &EndpointRow) -> EndpointOut {
    EndpointOut {
        id: row.id.as_uuid(),
        name: row.name.clone(),
        url: row.url.clone(),
        description: row.description.clone(),
        event_types: row.event_types.clone(),
        headers: row.headers.clone(),
        ordered: row.ordered,
        enabled: row.enabled,
        custom_legacy_secret: row.legacy_secret.is_some(),
        body: row.body,
        disabled_reason: row.disabled_reason.clone(),
        disabled_at: row.disabled_at_ms.map(time),
        failing_since: row.failing_since_ms.map(time),
        previous_secret_valid_until: row
            .previous_secret_until_ms
            .filter(|until| *until > now_ms())
            .map(time),
        created_at: time(row.created_at_ms),
        updated_at: time(row.updated_at_ms),
    }
}

async fn find(state: &AppState, id: WebhookEndpointId) -> Result<EndpointRow, ApiError> {
    store::get_endpoint(&state.db, id).await?.ok_or_else(|| {
        Problem::not_found()
            .detail("no such webhook endpoint")
            .into()
    })
}

async fn checked_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 2048 {
        return Err(Problem::invalid_field("url", "is required, at most 2048 characters").into());
    }
    let url = url::Url::parse(raw)
        .map_err(|_| Problem::invalid_field("url", "is not an absolute URL"))?;
    state
        .webhooks
        .sender
        .policy()
        .check_url(&url)
        .await
        .map_err(|e| Problem::invalid_field("url", e.to_string()))?;
    Ok(url.to_string())
}

/// A filter of types the log can hold: each exact type in the catalogue,
/// each prefix matching at least one of its types (a misspelled filter
/// would never match anything, silently).
fn checked_types(state: &AppState, raw: &[String]) -> Result<(Vec<String>, TypeFilter), ApiError> {
    if raw.is_empty() {
        return Err(Problem::invalid_field(
            "event_types",
            "list at least one type (`*` for every event)",
        )
        .into());
    }
    let filter = TypeFilter::parse(raw.iter().map(String::as_str))
        .map_err(|e| Problem::invalid_field("event_types", e.to_string()))?;
    let mut known = crate::domain::catalogue();
    known.extend(
        state
            .config
            .webhooks
            .extra_event_types
            .iter()
            .map(String::as_str),
    );
    if let Some(unknown) = filter
        .patterns()
        .iter()
        .find(|p| !known.iter().any(|t| p.matches(t)))
    {
        known.sort_unstable();
        return Err(Problem::invalid_field(
            "event_types",
            format!(
                "`{unknown}` matches no event type; the types are {}, and `*` matches every one",
                known
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into());
    }
    Ok((filter.to_strings(), filter))
}

/// `event_types`, or the older API's `event_type` (one of them), or `*`.
fn types_given(
    many: Option<Vec<String>>,
    one: Option<String>,
) -> Result<Option<Vec<String>>, ApiError> {
    match (many, one) {
        (Some(_), Some(_)) => Err(Problem::invalid_field(
            "event_type",
            "give `event_types` or `event_type`, not both",
        )
        .into()),
        (Some(many), None) => Ok(Some(many)),
        (None, Some(one)) => Ok(Some(vec![one])),
        (None, None) => Ok(None),
    }
}

/// A receiver-chosen secret, kept exactly as given.
fn checked_legacy_secret(raw: &str) -> Result<SecretString, ApiError> {
    let length = raw.chars().count();
    if !(8..=512).contains(&length) || raw.chars().any(char::is_control) {
        return Err(Problem::invalid_field(
            "secret",
            "8 to 512 characters, none of them a control character",
        )
        .into());
    }
    Ok(SecretString::from(raw.to_owned()))
}

fn checked_headers(raw: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if raw.len() > 20 {
        return Err(Problem::invalid_field("headers", "at most 20 headers").into());
    }
    let mut headers = BTreeMap::new();
    for (name, value) in raw {
        let lower = name.trim().to_ascii_lowercase();
        if HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.is_empty() {
            return Err(Problem::invalid_field(
                "headers",
                format!("`{name}` is not a header name"),
            )
            .into());
        }
        if RESERVED_HEADERS.contains(&lower.as_str())
            || lower.starts_with("webhook-")
            || lower.starts_with("x-webhook-")
        {
            return Err(Problem::invalid_field(
                "headers",
                format!("`{name}` is set by the delivery itself"),
            )
            .into());
        }
        if value.len() > 1024 || HeaderValue::from_str(&value).is_err() {
            return Err(Problem::invalid_field(
                "headers",
                format!("the value of `{name}` is not a valid header value (at most 1024 bytes)"),
            )
            .into());
        }
        headers.insert(lower, value);
    }
    Ok(headers)
}

fn checked_description(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()) {
        Some(d) if d.chars().count() > 1000 => {
            Err(Problem::invalid_field("description", "is longer than 1000 characters").into())
        }
        other => Ok(other),
    }
}

fn limits(limit: Option<u32>, offset: Option<u64>) -> Result<(u32, u64), ApiError> {
    let limit = limit.unwrap_or(20);
    if limit == 0 || limit > 100 {
        return Err(Problem::invalid_field("limit", "must be between 1 and 100").into());
    }
    let offset = offset.unwrap_or(0);
    if offset > 1_000_000 {
        return Err(Problem::invalid_field("offset", "must be at most 1000000").into());
    }
    Ok((limit, offset))
}

/// Creates an endpoint; its secret is in the answer.
#[utoipa::path(tag = "webhooks", request_body = EndpointIn, responses((status = 201, body = EndpointCreatedOut), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks")]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<EndpointIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let body = body.into_inner();
    let name = validate::text("name", &body.name, 200)?;
    let url = checked_url(&state, &body.url).await?;
    let types = types_given(body.event_types, body.event_type)?;
    let (event_types, filter) =
        checked_types(&state, &types.unwrap_or_else(|| vec!["*".to_owned()]))?;
    let headers = checked_headers(body.headers.unwrap_or_default())?;
    let description = checked_description(body.description)?;
    let secrets = state.webhooks.sender.secrets();
    let legacy_secret = match &body.secret {
        Some(raw) => Some(secrets.seal(&checked_legacy_secret(raw)?)),
        None => None,
    };
    let enabled = body.is_active.unwrap_or(true);
    let secret = new_secret();
    let now = now_ms();
    let row = EndpointRow {
        id: WebhookEndpointId::new(),
        name,
        url,
        description,
        event_types,
        headers,
        ordered: body.ordered.unwrap_or(false),
        enabled,
        disabled_reason: (!enabled).then(|| "created disabled".to_owned()),
        disabled_at_ms: (!enabled).then_some(now),
        secret: secrets.seal(&secret),
        previous_secret: None,
        previous_secret_until_ms: None,
        failing_since_ms: None,
        created_by: caller.actor().id.unwrap_or_default(),
        created_at_ms: now,
        updated_at_ms: now,
        legacy_secret,
        body: body.body.unwrap_or_default(),
    };
    store::insert_endpoint(&state.db, &row, filter.patterns()).await?;
    tracing::info!(endpoint = %row.id, "webhook endpoint created");
    Ok(crate::auth::no_store(HttpResponse::Created().json(
        EndpointCreatedOut {
            endpoint: out(&row),
            secret: secret.expose_secret().to_owned(),
        },
    )))
}

/// Endpoints, newest first.
#[utoipa::path(tag = "webhooks", params(ListQuery), responses((status = 200, body = EndpointPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let (limit, offset) = limits(query.limit, query.offset)?;
    let (rows, total) = store::list_endpoints(&state.db, query.enabled, limit, offset).await?;
    Ok(HttpResponse::Ok().json(EndpointPageOut {
        items: rows.iter().map(out).collect(),
        total,
        limit,
        offset,
    }))
}

/// One endpoint.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = EndpointOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    Ok(HttpResponse::Ok().json(out(&find(&state, *id).await?)))
}

/// Changes an endpoint; fields left out stay as they are.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), request_body = EndpointPatch, responses((status = 200, body = EndpointOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[patch("/webhooks/{id}")]
#[tracing::instrument(skip_all)]
pub async fn edit(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
    body: web::Json<EndpointPatch>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let mut row = find(&state, *id).await?;
    let body = body.into_inner();
    if let Some(name) = &body.name {
        row.name = validate::text("name", name, 200)?;
    }
    if let Some(url) = &body.url {
        row.url = checked_url(&state, url).await?;
    }
    let mut filter = None;
    if let Some(types) = types_given(body.event_types, body.event_type)? {
        let (strings, parsed) = checked_types(&state, &types)?;
        row.event_types = strings;
        filter = Some(parsed);
    }
    if body.description.is_some() {
        row.description = checked_description(body.description)?;
    }
    if let Some(headers) = body.headers {
        row.headers = checked_headers(headers)?;
    }
    if let Some(ordered) = body.ordered {
        row.ordered = ordered;
    }
    if let (Some(enabled), Some(is_active)) = (body.enabled, body.is_active)
        && enabled != is_active
    {
        return Err(Problem::invalid_field("is_active", "contradicts `enabled`").into());
    }
    if let Some(enabled) = body.enabled.or(body.is_active) {
        set_enabled(&mut row, enabled);
    }
    match body.secret.as_deref() {
        Some("") => row.legacy_secret = None,
        Some(raw) => {
            let sealed = state
                .webhooks
                .sender
                .secrets()
                .seal(&checked_legacy_secret(raw)?);
            row.legacy_secret = Some(sealed);
        }
        None => {}
    }
    if let Some(shape) = body.body {
        row.body = shape;
    }
    row.updated_at_ms = now_ms();
    store::update_endpoint(&state.db, &row, filter.as_ref().map(TypeFilter::patterns)).await?;
    state.webhooks.wake.notify_one();
    Ok(HttpResponse::Ok().json(out(&row)))
}

fn set_enabled(row: &mut EndpointRow, enabled: bool) {
    if enabled == row.enabled {
        return;
    }
    row.enabled = enabled;
    if enabled {
        row.disabled_reason = None;
        row.disabled_at_ms = None;
        row.failing_since_ms = None;
    } else {
        row.disabled_reason = Some("disabled by an admin".to_owned());
        row.disabled_at_ms = Some(now_ms());
    }
}

/// Deletes an endpoint with its deliveries and attempts.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[delete("/webhooks/{id}")]
#[tracing::instrument(skip_all)]
pub async fn remove(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    if !store::delete_endpoint(&state.db, *id).await? {
        return Err(Problem::not_found()
            .detail("no such webhook endpoint")
            .into());
    }
    Ok(HttpResponse::NoContent().finish())
}

async fn toggle(
    state: &AppState,
    id: WebhookEndpointId,
    enabled: bool,
) -> Result<HttpResponse, ApiError> {
    let mut row = find(state, id).await?;
    set_enabled(&mut row, enabled);
    row.updated_at_ms = now_ms();
    store::update_endpoint(&state.db, &row, None).await?;
    state.webhooks.wake.notify_one();
    Ok(HttpResponse::Ok().json(out(&row)))
}

/// Enables an endpoint (its pending deliveries resume).
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = EndpointOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/enable")]
#[tracing::instrument(skip_all)]
pub async fn enable(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    toggle(&state, *id, true).await
}

/// Disables an endpoint: nothing is sent, and new events are not queued
/// for it, until it is enabled again.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = EndpointOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/disable")]
#[tracing::instrument(skip_all)]
pub async fn disable(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    toggle(&state, *id, false).await
}

fn secret_out(state: &AppState, row: &EndpointRow) -> Result<SecretOut, ApiError> {
    let secret = state
        .webhooks
        .sender
        .secrets()
        .open(&row.secret)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(SecretOut {
        secret: secret.expose_secret().to_owned(),
        previous_secret_valid_until: row
            .previous_secret_until_ms
            .filter(|until| *until > now_ms())
            .map(time),
    })
}

/// The endpoint's current signing secret.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = SecretOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks/{id}/secret")]
#[tracing::instrument(skip_all)]
pub async fn reveal_secret(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let row = find(&state, *id).await?;
    Ok(crate::auth::no_store(
        HttpResponse::Ok().json(secret_out(&state, &row)?),
    ))
}

/// Replaces the secret; the old one keeps signing (as a second
/// `webhook-signature`) for the grace period.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), request_body(content = Option<RotateIn>, description = "May be left out: the configured grace period applies."), responses((status = 200, body = SecretOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/rotate-secret")]
#[tracing::instrument(skip_all)]
pub async fn rotate_secret(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
    body: OptionalJson<RotateIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let mut row = find(&state, *id).await?;
    let grace_ms = match body.0.and_then(|b| b.grace_seconds) {
        Some(seconds) if seconds > 7 * 86_400 => {
            return Err(Problem::invalid_field("grace_seconds", "at most 7 days").into());
        }
        Some(seconds) => i64::try_from(seconds).unwrap_or(0) * 1000,
        None => i64::try_from(state.config.webhooks.rotation_grace.as_millis()).unwrap_or(0),
    };
    let secret: SecretString = new_secret();
    let now = now_ms();
    row.previous_secret = (grace_ms > 0).then(|| row.secret.clone());
    row.previous_secret_until_ms = (grace_ms > 0).then_some(now + grace_ms);
    row.secret = state.webhooks.sender.secrets().seal(&secret);
    row.updated_at_ms = now;
    store::update_endpoint(&state.db, &row, None).await?;
    tracing::info!(endpoint = %row.id, "webhook secret rotated");
    Ok(crate::auth::no_store(
        HttpResponse::Ok().json(secret_out(&state, &row)?),
    ))
}

/// Sends a `webhook.test` event to the endpoint now and answers with what
/// it replied (not retried, not recorded as a delivery).
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = TestOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/test")]
#[tracing::instrument(skip_all)]
pub async fn send_test(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let row = find(&state, *id).await?;
    let event = RecordedEvent {
        id: EventId::new(),
        position: 0,
        cursor: Cursor::START,
        stream: StreamName::for_id("webhook", row.id),
        version: 0,
        event_type: EventType::from_trusted("webhook.test"),
        payload: serde_json::json!({
            "endpoint_id": row.id,
            "message": "a test event from Switchboard",
        }),
        actor: caller.actor(),
        occurred_at: Utc::now(),
    };
    let outcome = state.webhooks.sender.send(&row, &event).await;
    Ok(HttpResponse::Ok().json(TestOut {
        event_id: event.id.as_uuid(),
        success: outcome.succeeded(),
        response_status: outcome.record.response_status,
        duration_ms: outcome.record.duration_ms,
        response_body: outcome.record.response_body,
        error: outcome.record.error,
    }))
}

/// Deliveries of an endpoint, newest first, each with its attempts.
#[utoipa::path(tag = "webhooks", params(DeliveriesQuery, ("id" = Uuid, Path)), responses((status = 200, body = DeliveryPageOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks/{id}/deliveries")]
#[tracing::instrument(skip_all)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let row = find(&state, *id).await?;
    if let Some(status) = &query.status
        && !matches!(status.as_str(), "pending" | "delivered" | "failed")
    {
        return Err(
            Problem::invalid_field("status", "one of `pending`, `delivered`, `failed`").into(),
        );
    }
    let (limit, offset) = limits(query.limit, query.offset)?;
    let (rows, total) =
        store::list_deliveries(&state.db, row.id, query.status.as_deref(), limit, offset).await?;
    let items = rows
        .into_iter()
        .map(|d| DeliveryOut {
            event_id: d.event_id.as_uuid(),
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at_ms.map(time),
            last_response_status: d.last_response_status,
            last_error: d.last_error,
            created_at: time(d.created_at_ms),
            completed_at: d.completed_at_ms.map(time),
            attempt_log: d
                .attempt_log
                .into_iter()
                .map(|a| AttemptOut {
                    attempt: a.attempt,
                    at: time(a.attempted_at_ms),
                    duration_ms: a.duration_ms,
                    response_status: a.response_status,
                    response_body: a.response_body,
                    error: a.error,
                })
                .collect(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryPageOut {
        items,
        total,
        limit,
        offset,
    }))
}

/// One delivery: an endpoint's and an event's ids.
#[derive(Deserialize)]
pub struct DeliveryPath {
    id: WebhookEndpointId,
    event_id: EventId,
}

/// Sends a delivery again, from its first attempt.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path), ("event_id" = Uuid, Path)), responses((status = 202), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/deliveries/{event_id}/resend")]
#[tracing::instrument(skip_all)]
pub async fn resend(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    path: web::Path<DeliveryPath>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let found = store::resend(&state.db, path.id, path.event_id).await?;
    if !found {
        return Err(Problem::not_found().detail("no such delivery").into());
    }
    state.webhooks.wake.notify_one();
    Ok(HttpResponse::Accepted().finish())
}

/// Re-queues every failed delivery of events created in a time range.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), request_body = RecoverIn, responses((status = 200, body = RecoverOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/recover")]
#[tracing::instrument(skip_all)]
pub async fn recover(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
    body: web::Json<RecoverIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let row = find(&state, *id).await?;
    let since = body.since.timestamp_millis();
    let until = body.until.map_or_else(now_ms, |u| u.timestamp_millis() + 1);
    if until <= since {
        return Err(Problem::invalid_field("until", "must be after `since`").into());
    }
    let requeued = store::recover(&state.db, row.id, since, until).await?;
    state.webhooks.wake.notify_one();
    Ok(HttpResponse::Ok().json(RecoverOut { requeued }))
}

fn counts_out(counts: &store::Counts) -> CountsOut {
    let ended = counts.delivered + counts.failed;
    let mut durations = counts.durations_24h.clone();
    durations.sort_unstable();
    let pick = |q: f64| {
        let index = ((durations.len() as f64 - 1.0) * q).round() as usize;
        durations.get(index).copied().unwrap_or(0)
    };
    CountsOut {
        delivered: counts.delivered,
        failed: counts.failed,
        pending: counts.pending,
        success_rate: (ended > 0).then(|| counts.delivered as f64 / ended as f64),
        attempts_24h: counts.attempts_24h,
        successful_attempts_24h: counts.successful_attempts_24h,
        latency_ms: (!durations.is_empty()).then(|| LatencyOut {
            p50: pick(0.5),
            p95: pick(0.95),
            p99: pick(0.99),
            max: durations.last().copied().unwrap_or(0),
        }),
    }
}

/// Delivery figures per endpoint and overall.
#[utoipa::path(tag = "webhooks", responses((status = 200, body = WebhookStatsOut), (status = 401), (status = 403)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks/stats")]
#[tracing::instrument(skip_all)]
pub async fn stats(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let counts = store::counts(&state.db, now_ms() - 86_400_000).await?;
    let (endpoints, _) = store::list_endpoints(&state.db, None, 10_000, 0).await?;
    let empty = store::Counts::default();
    Ok(HttpResponse::Ok().json(WebhookStatsOut {
        overall: counts.get(&None).map(counts_out).unwrap_or_default(),
        endpoints: endpoints
            .iter()
            .map(|e| EndpointStatsOut {
                id: e.id.as_uuid(),
                name: e.name.clone(),
                enabled: e.enabled,
                counts: counts_out(counts.get(&Some(e.id)).unwrap_or(&empty)),
            })
            .collect(),
    }))
}

/// Backfills a webhook's default rate (deliveries queued per second).
const BACKFILL_RATE: u32 = 50;

async fn backfill_out(state: &AppState, row: &store::BackfillRow) -> Result<BackfillOut, ApiError> {
    let counts = store::backfill_counts(&state.db, row.endpoint_id).await?;
    let span = (row.target.position() - row.start.position()).max(0);
    let read = (row.cursor.position() - row.start.position()).clamp(0, span);
    let progress = if row.status == "completed" || span == 0 {
        1.0
    } else {
        read as f64 / span as f64
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(BackfillOut {
        status: row.status.clone(),
        since: row.since_ms.map(time),
        start: row.start.to_string(),
        cursor: row.cursor.to_string(),
        until: row.target.to_string(),
        progress,
        scanned: count(row.scanned),
        enqueued: count(row.enqueued),
        withdrawn: count(row.withdrawn),
        pending: counts.pending,
        delivered: counts.delivered,
        failed: counts.failed,
        rate: u32::try_from(row.rate).unwrap_or(u32::MAX),
        started_at: time(row.created_at_ms),
        updated_at: time(row.updated_at_ms),
        finished_at: row.finished_at_ms.map(time),
    })
}

fn no_backfill() -> ApiError {
    Problem::not_found()
        .detail("this endpoint has no backfill")
        .into()
}

/// Queues events already in the log for the endpoint, from a time or a
/// cursor anywhere in the log, through its filter, up to the head as it is
/// now, a little at a time (at most `rate` a second, and never more than
/// 100 waiting), so its live deliveries are not held up.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), request_body = BackfillIn, responses((status = 202, body = BackfillOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 409, description = "a backfill of this endpoint is running (`backfill_running`)"), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/backfill")]
#[tracing::instrument(skip_all)]
pub async fn start_backfill(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
    body: web::Json<BackfillIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let endpoint = find(&state, *id).await?;
    let body = body.into_inner();
    let now = now_ms();
    let since_ms = body.since.map(|since| since.timestamp_millis());
    if since_ms.is_some_and(|since| since > now) {
        return Err(Problem::invalid_field("since", "is in the future").into());
    }
    let start = match &body.after {
        Some(raw) => {
            let cursor: Cursor = raw.parse().map_err(|_| {
                Problem::invalid_field(
                    "after",
                    "is not a cursor: pass one back exactly as the server sent it",
                )
            })?;
            if let Some(why) = state.store.cannot_continue_from(cursor).await? {
                return Err(Problem::invalid_field("after", why).into());
            }
            cursor
        }
        None if since_ms.is_some() => Cursor::START,
        None => {
            return Err(Problem::invalid_field(
                "since",
                "give `since` (a time), `after` (a cursor) or both",
            )
            .into());
        }
    };
    let rate = body.rate.unwrap_or(BACKFILL_RATE);
    if !(1..=1000).contains(&rate) {
        return Err(Problem::invalid_field("rate", "from 1 to 1000 a second").into());
    }
    let row = store::BackfillRow {
        endpoint_id: endpoint.id,
        status: "running".to_owned(),
        since_ms,
        start,
        cursor: start,
        target: state.store.head().await?,
        scanned: 0,
        enqueued: 0,
        withdrawn: 0,
        rate: i64::from(rate),
        created_by: caller.actor().id.unwrap_or_default(),
        created_at_ms: now,
        updated_at_ms: now,
        finished_at_ms: None,
    };
    if !store::start_backfill(&state.db, &row).await? {
        return Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "backfill_running",
            "A backfill is running",
        )
        .detail("this endpoint's backfill is still running: cancel it first")
        .into());
    }
    tracing::info!(endpoint = %endpoint.id, start = %row.start, until = %row.target, rate, "webhook backfill started");
    Ok(HttpResponse::Accepted().json(backfill_out(&state, &row).await?))
}

/// The endpoint's latest backfill and how far it has come.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = BackfillOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/webhooks/{id}/backfill")]
#[tracing::instrument(skip_all)]
pub async fn view_backfill(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let endpoint = find(&state, *id).await?;
    let row = store::get_backfill(&state.db, endpoint.id)
        .await?
        .ok_or_else(no_backfill)?;
    Ok(HttpResponse::Ok().json(backfill_out(&state, &row).await?))
}

/// Cancels the endpoint's running backfill: nothing more is queued, and
/// what it queued that is not being sent yet is withdrawn.
#[utoipa::path(tag = "webhooks", params(("id" = Uuid, Path)), responses((status = 200, body = BackfillOut), (status = 401), (status = 403), (status = 404), (status = 409, description = "the backfill has already ended (`backfill_ended`)")), security(("bearer" = []), ("api_key" = [])))]
#[post("/webhooks/{id}/backfill/cancel")]
#[tracing::instrument(skip_all)]
pub async fn cancel_backfill(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<WebhookEndpointId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::WebhooksManage)?;
    let endpoint = find(&state, *id).await?;
    if !store::cancel_backfill(&state.db, endpoint.id).await? {
        store::get_backfill(&state.db, endpoint.id)
            .await?
            .ok_or_else(no_backfill)?;
        return Err(Problem::new(
            actix_web::http::StatusCode::CONFLICT,
            "backfill_ended",
            "The backfill has ended",
        )
        .detail("this endpoint's latest backfill is not running")
        .into());
    }
    let row = store::get_backfill(&state.db, endpoint.id)
        .await?
        .ok_or_else(no_backfill)?;
    tracing::info!(endpoint = %endpoint.id, withdrawn = row.withdrawn, "webhook backfill cancelled");
    Ok(HttpResponse::Ok().json(backfill_out(&state, &row).await?))
}
