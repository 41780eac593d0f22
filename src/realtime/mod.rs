//! Live feeds over WebSocket: `GET /ws` for admins and API keys with
//! `events:read`, `GET /api/v1/cabinet/ws` for a signed-in cabinet user
//! (only events about them). The protocol is in DESIGN.md ("WebSocket").
//!
//! The credential is checked before the upgrade: a bad one is an HTTP 401,
//! never a socket that opens and closes.

pub mod audience;
pub mod feed;
pub mod hub;
mod metrics;
pub mod session;

use actix_web::{HttpRequest, HttpResponse, get, web};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::IntoParams;

pub use self::hub::Hub;
use self::session::{Connection, FeedKind};
use crate::{
    app::AppState,
    auth::extractors::credential,
    error::{ApiError, Problem},
    events::{Cursor, TypeFilter},
};

/// `GET /ws`, at the root.
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(admin_feed);
}

/// `GET /ws` inside the cabinet scope (`/api/v1/cabinet/ws`).
pub fn configure_cabinet(cfg: &mut web::ServiceConfig) {
    cfg.service(cabinet_feed);
}

#[derive(Deserialize, IntoParams)]
pub struct FeedQuery {
    /// The access token (or API key), for clients that cannot set the
    /// `Authorization` header (browsers). Never logged.
    pub token: Option<String>,
    /// The same as `token` (the older cabinet API's name). Never logged.
    pub api_key: Option<String>,
    /// Replay every event after this cursor, then continue live.
    pub cursor: Option<String>,
    /// Comma-separated type filters with `*` suffix wildcards, e.g.
    /// `ticket.*,payment.completed` (default: every type).
    pub types: Option<String>,
}

/// The admin event feed (WebSocket). Admin JWT, or an API key with
/// `events:read`; each event is sent only if the caller may read it through
/// the admin API (`user.*` needs `users:read`, `ticket.*` `tickets:read`,
/// money `ledger:read`, `webhook.*` `webhooks:manage`). A caller that may
/// read none of them is refused (403 naming the permissions); the
/// connection message lists the families it may see (`visible`).
#[utoipa::path(tag = "realtime", params(FeedQuery), responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/ws")]
#[tracing::instrument(skip_all)]
pub async fn admin_feed(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let credential = credential_of(&req, &query)?;
    let signed_in = session::authenticate(&state, FeedKind::Admin, &credential).await?;
    let connection = Connection {
        signed_in,
        credential: SecretString::from(credential),
        cursor: cursor_of(&query)?,
        types: types_of(&query)?,
    };
    upgrade(&req, body, state, connection)
}

/// The signed-in user's own event feed (WebSocket): their tickets and
/// messages, payments, ledger entries, subscription and referral rewards.
#[utoipa::path(tag = "realtime", params(FeedQuery), responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = [])))]
#[get("/ws")]
#[tracing::instrument(skip_all)]
pub async fn cabinet_feed(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let credential = credential_of(&req, &query)?;
    let signed_in = session::authenticate(&state, FeedKind::Cabinet, &credential).await?;
    let connection = Connection {
        signed_in,
        credential: SecretString::from(credential),
        cursor: cursor_of(&query)?,
        types: types_of(&query)?,
    };
    upgrade(&req, body, state, connection)
}

fn credential_of(req: &HttpRequest, query: &FeedQuery) -> Result<String, ApiError> {
    let given = |value: &Option<String>| value.clone().filter(|t| !t.trim().is_empty());
    credential(req)
        .or_else(|| given(&query.token))
        .or_else(|| given(&query.api_key))
        .ok_or_else(|| {
            Problem::unauthorized(
                "send `Authorization: Bearer <token>`, or `?token=<token>` where headers cannot be set",
            )
            .into()
        })
}

fn cursor_of(query: &FeedQuery) -> Result<Option<Cursor>, ApiError> {
    query
        .cursor
        .as_deref()
        .map(|raw| {
            raw.parse::<Cursor>()
                .map_err(|e| Problem::invalid_field("cursor", e.to_string()).into())
        })
        .transpose()
}

fn types_of(query: &FeedQuery) -> Result<TypeFilter, ApiError> {
    match query.types.as_deref() {
        None => Ok(TypeFilter::all()),
        Some(raw) => TypeFilter::parse_list(raw)
            .map_err(|e| Problem::invalid_field("types", e.to_string()).into()),
    }
}

fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    connection: Connection,
) -> Result<HttpResponse, ApiError> {
    session::respond(req, body.into_inner(), state.into_inner(), connection).map_err(|_| {
        Problem::bad_request("this endpoint speaks WebSocket: send an HTTP/1.1 upgrade request")
            .into()
    })
}
