//! The sender API for other services (`POST /api/v1/telegram/{method}`,
//! API keys with `telegram:send`; the older sender's `POST /api_v1/{method}`
//! as an alias) and the admin's view of every send
//! (`GET /api/v1/admin/telegram/sends`). A send is queued in the outbox and
//! made within Telegram's limits like every other.

use std::time::Duration;

use actix_web::{HttpResponse, get, http::StatusCode, post, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::{
    outbox::{self, NewSend, SendRow, Upload},
    params::BotParams,
    send::Status,
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    error::{ApiError, Problem},
    users::service::find_by_telegram_chat,
};

pub fn configure_api(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/api/v1/telegram").service(view).service(send))
        .service(send_legacy);
}

pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(list).configure(super::files::configure);
}

/// How long `?wait=true` waits for Telegram's answer.
const WAIT: Duration = Duration::from_secs(10);

/// The methods the sender API takes, and the parameter each needs besides
/// `chat_id`.
const METHODS: &[(&str, &[(&str, Kind)])] = &[
    ("sendMessage", &[("text", Kind::Text(4096))]),
    ("sendPhoto", &[("photo", Kind::File)]),
    ("sendDocument", &[("document", Kind::File)]),
    ("sendAudio", &[("audio", Kind::File)]),
    ("sendVoice", &[("voice", Kind::File)]),
    ("sendVideo", &[("video", Kind::File)]),
    (
        "editMessageText",
        &[("message_id", Kind::Integer), ("text", Kind::Text(4096))],
    ),
    ("deleteMessage", &[("message_id", Kind::Integer)]),
];

#[derive(Clone, Copy)]
enum Kind {
    /// A string of 1 to this many characters.
    Text(usize),
    /// A Telegram file id or an http(s) URL.
    File,
    Integer,
}

/// A send as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct SendOut {
    pub id: String,
    pub status: Status,
    pub chat_id: i64,
    pub method: String,
    /// What caused it: `ticket_reply`, `api`.
    pub origin: String,
    /// Telegram's `result` once sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// Telegram's `description` (or why it could not be sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<SendRow> for SendOut {
    fn from(row: SendRow) -> Self {
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
        Self {
            id: row.id,
            status: row.status,
            chat_id: row.chat_id,
            method: row.method,
            origin: row.origin,
            result: row.result,
            error: row.error,
            attempts: row.attempts,
            created_at: at(row.created_at_ms),
            updated_at: at(row.updated_at_ms),
        }
    }
}

#[derive(Deserialize, IntoParams)]
pub struct WaitIn {
    /// Wait up to 10 s for Telegram's answer: 200 once it answered, 202 if
    /// it did not in time.
    #[serde(default)]
    pub wait: bool,
}

/// A Bot API call, queued and made within Telegram's limits: `sendMessage`,
/// `sendPhoto`, `sendDocument`, `sendAudio`, `sendVoice`, `sendVideo`,
/// `editMessageText`, `deleteMessage`, with the Bot API's own parameter
/// names: JSON, with files as a Telegram file id or an http(s) URL, or
/// `multipart/form-data` with the file uploaded as the part of its
/// parameter (photos up to 10 MB, other files up to 50 MB, as the Bot API
/// takes them; kept until the send ended). `chat_id` is a chat's integer
/// id.
#[utoipa::path(tag = "telegram", params(("method" = String, Path, description = "a Bot API method name, e.g. `sendMessage`"), WaitIn), request_body(content((Object = "application/json"), (Object = "multipart/form-data")), description = "the method's parameters; a form's file parts are uploads"), responses((status = 200, body = SendOut, description = "with `?wait=true`: Telegram answered"), (status = 202, body = SendOut, description = "queued"), (status = 400), (status = 401), (status = 403), (status = 404, description = "not a method the sender API takes"), (status = 413), (status = 415), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/{method}")]
#[tracing::instrument(skip_all, fields(method = %method))]
pub async fn send(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    method: web::Path<String>,
    wait: web::Query<WaitIn>,
    body: BotParams,
) -> Result<HttpResponse, ApiError> {
    queue(&state, &caller, &method, wait.wait, body).await
}

/// The older sender service's path for the same call (`x-api-key`).
#[utoipa::path(tag = "telegram", params(("method" = String, Path, description = "a Bot API method name, e.g. `sendMessage`"), WaitIn), request_body(content((Object = "application/json"), (Object = "multipart/form-data")), description = "the method's parameters; a form's file parts are uploads"), responses((status = 200, body = SendOut), (status = 202, body = SendOut), (status = 400), (status = 401), (status = 403), (status = 404), (status = 413), (status = 415), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/api_v1/{method}")]
#[tracing::instrument(skip_all, fields(method = %method))]
pub async fn send_legacy(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    method: web::Path<String>,
    wait: web::Query<WaitIn>,
    body: BotParams,
) -> Result<HttpResponse, ApiError> {
    queue(&state, &caller, &method, wait.wait, body).await
}

async fn queue(
    state: &AppState,
    caller: &CurrentAdmin,
    method: &str,
    wait: bool,
    BotParams { params, uploads }: BotParams,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    let Some((method, needs)) = METHODS.iter().find(|(name, _)| *name == method) else {
        let names: Vec<&str> = METHODS.iter().map(|(name, _)| *name).collect();
        return Err(Problem::not_found()
            .detail(format!(
                "the sender API takes {}; not `{method}`",
                names.join(", ")
            ))
            .into());
    };
    let Value::Object(params) = params else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid request body",
        )
        .detail("the method's parameters, as a JSON object")
        .into());
    };
    let chat_id = chat_id(&params)?;
    for (name, kind) in *needs {
        check(&params, &uploads, name, *kind)?;
    }
    if let Some(upload) = uploads.iter().find(|u| !takes_file(needs, &u.field)) {
        return Err(invalid(
            &upload.field,
            &format!("`{method}` takes no file here"),
        ));
    }
    let mut params = params;
    params.insert("chat_id".into(), Value::from(chat_id));
    let mut queued = NewSend::new(chat_id, method, Value::Object(params), "api");
    queued.uploads = uploads;
    queued.user_id = find_by_telegram_chat(state.db.conn(), chat_id)
        .await?
        .map(|u| crate::ids::UserId::from_uuid(u.id));
    state
        .db
        .write_once(async |conn| outbox::enqueue(conn, &state.db, &queued).await)
        .await?;
    state.telegram.sends.notify_one();
    let id = queued.id.to_string();
    if !wait {
        let now = queued.created_at_ms;
        return Ok(HttpResponse::Accepted().json(SendOut::from(SendRow {
            id,
            chat_id,
            method: queued.method,
            params: Value::Null,
            status: Status::Queued,
            user_id: queued.user_id,
            origin: queued.origin.to_owned(),
            reference: None,
            paid: false,
            private: false,
            turn_at_us: 0,
            attempts: 0,
            result: None,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
        })));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Registered before the look, so an end in between is not missed.
        let ended = state.telegram.ended.notified();
        let row = outbox::get(&state.db, &id)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a queued send is gone")))?;
        if !matches!(row.status, Status::Queued | Status::Sending) {
            return Ok(HttpResponse::Ok().json(SendOut::from(row)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(HttpResponse::Accepted().json(SendOut::from(row)));
        }
        // Another instance's send ends unheard of here: look again soon.
        let soon = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
        tokio::select! {
            () = ended => {}
            () = tokio::time::sleep_until(soon) => {}
        }
    }
}

fn invalid(field: &str, detail: &str) -> ApiError {
    Problem::invalid_field(field, detail).into()
}

/// The chat's integer id (a numeric string is taken too).
fn chat_id(params: &Map<String, Value>) -> Result<i64, ApiError> {
    let given = params.get("chat_id");
    given
        .and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .filter(|id| *id != 0)
        .ok_or_else(|| invalid("chat_id", "required: the chat's integer id"))
}

/// Whether a method whose parameters are `needs` takes a file uploaded
/// for `field`: its file parameter, and a `thumbnail` beside it.
fn takes_file(needs: &[(&str, Kind)], field: &str) -> bool {
    let file = needs.iter().find(|(_, kind)| matches!(kind, Kind::File));
    file.is_some_and(|(name, _)| *name == field || (field == "thumbnail" && *name != "voice"))
}

fn check(
    params: &Map<String, Value>,
    uploads: &[Upload],
    name: &str,
    kind: Kind,
) -> Result<(), ApiError> {
    let value = params.get(name);
    let ok = match (kind, value) {
        (Kind::Text(max), Some(Value::String(s))) => {
            !s.trim().is_empty() && s.chars().count() <= max
        }
        (Kind::File, Some(Value::String(s))) if uploads.iter().any(|u| u.field == name) => {
            *s == Upload::marker(name)
        }
        (Kind::File, Some(Value::String(s))) => {
            let url = s.contains("://");
            !s.is_empty()
                && s.len() <= 2048
                && (!url
                    || url::Url::parse(s).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
        }
        (Kind::Integer, Some(Value::Number(n))) => n.as_i64().is_some_and(|n| n > 0),
        // A form's fields are text.
        (Kind::Integer, Some(Value::String(s))) => s.parse::<i64>().is_ok_and(|n| n > 0),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        Kind::Text(max) => invalid(name, &format!("required: a text of 1 to {max} characters")),
        Kind::File => invalid(
            name,
            "required: a Telegram file id, an http(s) URL, or the file uploaded (multipart/form-data)",
        ),
        Kind::Integer => invalid(name, "required: a positive integer"),
    })
}

/// One send: its status, and Telegram's `result` or `error` once it
/// answered.
#[utoipa::path(tag = "telegram", params(("id" = String, Path)), responses((status = 200, body = SendOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/sends/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TelegramSend)?;
    let row = outbox::get(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::from(Problem::not_found().detail("no such send")))?;
    Ok(HttpResponse::Ok().json(SendOut::from(row)))
}

#[derive(Deserialize, IntoParams)]
pub struct SendFilter {
    /// `queued`, `sending`, `sent`, `failed` or `unknown`.
    pub status: Option<String>,
    pub chat_id: Option<i64>,
    /// 1 to 200 (50 unless given).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct SendPageOut {
    pub items: Vec<SendOut>,
    pub total: i64,
}

/// Every Bot API send, newest first: what was sent, what failed and why,
/// what may or may not have arrived (`unknown`).
#[utoipa::path(tag = "telegram", params(SendFilter), responses((status = 200, body = SendPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/telegram/sends")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    filter: web::Query<SendFilter>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsRead)?;
    let status =
        match &filter.status {
            None => None,
            Some(text) => Some(Status::parse(text).ok_or_else(|| {
                invalid("status", "one of queued, sending, sent, failed, unknown")
            })?),
        };
    let limit = filter.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit", "1 to 200"));
    }
    let (rows, total) = outbox::list(
        &state.db,
        status,
        filter.chat_id,
        limit,
        filter.offset.unwrap_or(0),
    )
    .await?;
    Ok(HttpResponse::Ok().json(SendPageOut {
        items: rows.into_iter().map(SendOut::from).collect(),
        total,
    }))
}
