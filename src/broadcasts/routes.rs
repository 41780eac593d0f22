//! The broadcasts API (`telegram:send`): create (or preview with
//! `?dry_run=true`), list, view with counts, page through recipients,
//! cancel; and the older broadcast service's `POST /send-message`.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{
    audience::{self, Audience},
    content::{Button, Content, Media, MediaType},
    domain::{BroadcastStatus, BroadcastStep, Counts, LeftOut, Step},
    store::{self, BroadcastRow, Delivery, RecipientOut},
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    error::{ApiError, Problem},
};

pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(view)
        .service(recipients)
        .service(cancel);
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(send_message);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIn {
    /// The message, or the medium's caption when there is a medium.
    #[serde(default)]
    pub text: Option<String>,
    /// `HTML`, `Markdown` or `MarkdownV2`.
    #[serde(default)]
    pub parse_mode: Option<String>,
    #[serde(default)]
    pub media: Option<Media>,
    /// Inline keyboard rows.
    #[serde(default)]
    pub buttons: Vec<Vec<Button>>,
    pub audience: Audience,
    /// When to start (now unless given).
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// Telegram's paid broadcast (`allow_paid_broadcast`): up to 1000
    /// messages a second, billed in Stars by Telegram.
    #[serde(default)]
    pub paid: bool,
}

#[derive(Deserialize, IntoParams)]
pub struct DryRunIn {
    /// Answer the audience's size and send nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A broadcast as created (or, with `dry_run`, as it would be).
#[derive(Serialize, ToSchema)]
pub struct CreatedOut {
    /// Absent for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<BroadcastStatus>,
    /// The recipients: users of the audience the bot can write to now.
    pub total: i64,
    pub left_out: LeftOut,
    pub send_at: DateTime<Utc>,
}

fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
    Problem::invalid_field(field, detail).into()
}

/// Creates (or previews) a broadcast: checked, its audience resolved, and
/// started at once unless `send_at` is later.
async fn make(
    state: &AppState,
    caller: &CurrentAdmin,
    content: &Content,
    audience: Audience,
    send_at: Option<DateTime<Utc>>,
    dry_run: bool,
) -> Result<(bool, CreatedOut), ApiError> {
    caller.require(Permission::TelegramSend)?;
    let (method, params) = content
        .call()
        .map_err(|(field, detail)| invalid(field, detail))?;
    audience
        .check()
        .map_err(|detail| invalid("audience", detail))?;
    let now = Utc::now();
    if send_at.is_some_and(|at| at > now + chrono::Duration::days(366)) {
        return Err(invalid("send_at", "within a year"));
    }
    let send_at = send_at.unwrap_or(now).max(now);
    let (members, left_out) = audience::resolve(state.db.conn(), &audience).await?;
    let members_total = members.len();
    let total = i64::try_from(members_total).unwrap_or(i64::MAX);
    if dry_run {
        let preview = CreatedOut {
            id: None,
            status: None,
            total,
            left_out,
            send_at,
        };
        return Ok((false, preview));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let audience = serde_json::to_value(&audience).unwrap_or(Value::Null);
    let row = BroadcastRow {
        id: id.clone(),
        status: BroadcastStatus::Scheduled,
        method: method.clone(),
        params: params.clone(),
        audience: audience.clone(),
        paid: content.paid,
        send_at_ms: send_at.timestamp_millis(),
        total: 0,
        left_out: None,
        created_by: caller.actor().id,
        created_at_ms: now.timestamp_millis(),
        started_at_ms: None,
        finished_at_ms: None,
    };
    let start = (send_at <= now).then(|| super::resolved(&row, members, left_out));
    let created = super::domain::BroadcastEvent::Created {
        broadcast_id: id.clone(),
        method,
        params,
        audience,
        paid: content.paid,
        send_at,
    };
    let step = BroadcastStep {
        db: state.db.clone(),
        id: id.clone(),
        step: Step::Create {
            row: Box::new(row),
            created,
            start,
        },
        at: now,
    };
    let done = state.commands.run(step, caller.actor()).await?;
    if done.output == Some(BroadcastStatus::Running) {
        let db = state.db.clone();
        tokio::spawn(
            async move { crate::telegram::outbox::queued_in_bulk(&db, members_total).await },
        );
    }
    state.telegram.sends.notify_one();
    state.telegram.broadcasts.notify_one();
    let out = CreatedOut {
        id: Some(id),
        status: done.output,
        total,
        left_out,
        send_at,
    };
    Ok((true, out))
}

fn created(made: (bool, CreatedOut)) -> HttpResponse {
    match made {
        (true, out) => HttpResponse::Accepted().json(out),
        (false, preview) => HttpResponse::Ok().json(preview),
    }
}

/// Sends a message to an audience of users through the Telegram outbox,
/// within its limits (after replies and API sends). The audience is always
/// narrowed to users the bot can write to; the answer says who was left
/// out and why. `?dry_run=true` answers the size and sends nothing.
#[utoipa::path(tag = "broadcasts", params(DryRunIn), request_body = CreateIn, responses((status = 202, body = CreatedOut), (status = 200, body = CreatedOut, description = "a dry run"), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/broadcasts")]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    query: web::Query<DryRunIn>,
    body: web::Json<CreateIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let content = Content {
        text: body.text,
        parse_mode: body.parse_mode,
        media: body.media,
        buttons: body.buttons,
        paid: body.paid,
    };
    let made = make(
        &state,
        &caller,
        &content,
        body.audience,
        body.send_at,
        query.dry_run,
    )
    .await?;
    Ok(created(made))
}

#[derive(Deserialize, ToSchema)]
pub struct SendMessageIn {
    pub message: Option<String>,
    /// `photo`, `video`, `document`, `audio`, `voice` or `animation`.
    pub media_type: Option<MediaType>,
    pub media_url: Option<String>,
    /// Telegram user ids.
    pub user_ids: Vec<i64>,
}

/// The older broadcast service's entry point: a broadcast of `message`
/// (and a medium) to Telegram users by their Telegram ids.
#[utoipa::path(tag = "broadcasts", request_body = SendMessageIn, responses((status = 202, body = CreatedOut), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/send-message")]
#[tracing::instrument(skip_all)]
pub async fn send_message(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<SendMessageIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let media = match (body.media_type, body.media_url) {
        (Some(kind), Some(url)) => Some(Media {
            kind,
            file_id: None,
            url: Some(url),
            caption: None,
        }),
        (None, None) => None,
        _ => return Err(invalid("media_url", "with `media_type`, and only with it")),
    };
    let content = Content {
        text: body.message,
        media,
        ..Content::default()
    };
    let audience = Audience {
        telegram_ids: Some(body.user_ids),
        ..Audience::default()
    };
    let made = make(&state, &caller, &content, audience, None, false).await?;
    Ok(created(made))
}

/// A broadcast with its counts.
#[derive(Serialize, ToSchema)]
pub struct BroadcastOut {
    pub id: String,
    pub status: BroadcastStatus,
    pub method: String,
    /// The Bot API parameters each message is sent with, but the chat.
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(value_type = Object)]
    pub audience: Value,
    pub paid: bool,
    pub send_at: DateTime<Utc>,
    /// Always `queued + sent + failed + blocked + unknown + cancelled`.
    pub counts: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<LeftOut>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Messages ended a second, since the start.
    pub rate: f64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

async fn out(state: &AppState, row: BroadcastRow) -> Result<BroadcastOut, ApiError> {
    let counts = store::counts(state.db.conn(), &state.db, &row.id).await?;
    Ok(BroadcastOut {
        rate: super::rate(&counts, row.started_at_ms, row.finished_at_ms),
        id: row.id,
        status: row.status,
        method: row.method,
        params: row.params,
        audience: row.audience,
        paid: row.paid,
        send_at: at(row.send_at_ms),
        counts,
        left_out: row.left_out,
        created_at: at(row.created_at_ms),
        started_at: row.started_at_ms.map(at),
        finished_at: row.finished_at_ms.map(at),
    })
}

async fn found(state: &AppState, id: &str) -> Result<BroadcastRow, ApiError> {
    store::get(state.db.conn(), &state.db, id)
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such broadcast").into())
}

#[derive(Deserialize, IntoParams)]
pub struct PageIn {
    /// 1 to 200 (50 unless given).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

fn limit(given: Option<u64>) -> Result<u64, ApiError> {
    let limit = given.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit", "1 to 200"));
    }
    Ok(limit)
}

#[derive(Serialize, ToSchema)]
pub struct BroadcastPageOut {
    pub items: Vec<BroadcastOut>,
    pub total: i64,
}

/// Broadcasts, newest first.
#[utoipa::path(tag = "broadcasts", params(PageIn), responses((status = 200, body = BroadcastPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/broadcasts")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    let (rows, total) =
        store::list(&state.db, limit(page.limit)?, page.offset.unwrap_or(0)).await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(out(&state, row).await?);
    }
    Ok(HttpResponse::Ok().json(BroadcastPageOut { items, total }))
}

/// One broadcast: its status, counts, times and rate.
#[utoipa::path(tag = "broadcasts", params(("id" = String, Path)), responses((status = 200, body = BroadcastOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/broadcasts/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    let row = found(&state, &id).await?;
    Ok(HttpResponse::Ok().json(out(&state, row).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct RecipientsIn {
    /// `queued`, `sent`, `failed`, `blocked`, `unknown` or `cancelled`.
    pub status: Option<String>,
    /// 1 to 200 (50 unless given).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct RecipientPageOut {
    pub items: Vec<RecipientOut>,
    pub total: i64,
}

/// A broadcast's recipients and what became of each one's message.
#[utoipa::path(tag = "broadcasts", params(("id" = String, Path), RecipientsIn), responses((status = 200, body = RecipientPageOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/broadcasts/{id}/recipients")]
#[tracing::instrument(skip_all)]
pub async fn recipients(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<String>,
    query: web::Query<RecipientsIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    let status = match &query.status {
        None => None,
        Some(text) => Some(Delivery::parse(text).ok_or_else(|| {
            invalid(
                "status",
                "one of queued, sent, failed, blocked, unknown, cancelled",
            )
        })?),
    };
    let limit = limit(query.limit)?;
    found(&state, &id).await?;
    let (items, total) =
        store::recipients(&state.db, &id, status, limit, query.offset.unwrap_or(0)).await?;
    Ok(HttpResponse::Ok().json(RecipientPageOut { items, total }))
}

/// Cancels a broadcast: nothing more is sent. Messages already on their
/// way end as they do and are counted.
#[utoipa::path(tag = "broadcasts", params(("id" = String, Path)), responses((status = 200, body = BroadcastOut), (status = 401), (status = 403), (status = 404), (status = 409, description = "it ended already (`broadcast_ended`)")), security(("bearer" = []), ("api_key" = [])))]
#[post("/broadcasts/{id}/cancel")]
#[tracing::instrument(skip_all)]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    found(&state, &id).await?;
    let step = BroadcastStep {
        db: state.db.clone(),
        id: id.to_string(),
        step: Step::Cancel,
        at: Utc::now(),
    };
    state.commands.run(step, caller.actor()).await?;
    let row = found(&state, &id).await?;
    Ok(HttpResponse::Ok().json(out(&state, row).await?))
}
