//! The helpdesk's calls: Webim's callback (`POST /integrations/webim/callback`,
//! its channel secret checked in constant time) and the generic
//! `POST /api/v1/integrations/helpdesk/messages` for any other helpdesk (an
//! API key with `helpdesk:reply`).

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, post, web};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    Callback, Operator,
    domain::HelpdeskError,
    inbound::{Answer, AnswerError, Close},
    webim,
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    domain::CommandError,
    error::{ApiError, Problem},
    events::{Actor, ActorKind},
    settings::{Helpdesk, HelpdeskKind},
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(webim_callback)
        .service(web::scope("/api/v1/integrations").service(helpdesk_message));
}

/// The bridge's setting when it is on (and of `kind`, if given).
async fn bridge(state: &AppState, kind: Option<HelpdeskKind>) -> Result<Helpdesk, ApiError> {
    match state.settings.get::<Helpdesk>().await? {
        Some(helpdesk) if helpdesk.enabled && kind.is_none_or(|k| k == helpdesk.kind) => {
            Ok(helpdesk)
        }
        _ => Err(Problem::new(StatusCode::NOT_FOUND, "helpdesk_off", "Helpdesk bridge off")
            .detail(match kind {
                Some(HelpdeskKind::Webim) => {
                    "the Webim bridge is off: PUT /api/v1/admin/settings/helpdesk with kind webim and enabled true"
                }
                _ => "the helpdesk bridge is off: PUT /api/v1/admin/settings/helpdesk with enabled true",
            })
            .into()),
    }
}

fn unknown_visitor(visitor_id: &str) -> ApiError {
    tracing::warn!(visitor = %visitor_id, "the helpdesk wrote to a visitor this bridge does not know");
    Problem::new(StatusCode::NOT_FOUND, "unknown_visitor", "Unknown visitor")
        .detail(
            "no visitor has this id: it is one this bridge gave the helpdesk with a user's message",
        )
        .into()
}

/// What taking an operator's answer came to: the sends carrying it, or
/// none when it was taken before.
async fn answer(
    state: &AppState,
    helpdesk: &Helpdesk,
    mut command: Answer,
    actor: Actor,
) -> Result<Option<Vec<String>>, ApiError> {
    command.store_text = helpdesk.store_text;
    command.support = state.config.telegram.support;
    let (visitor, message) = (command.visitor_id.clone(), command.message_id.clone());
    let length = command.text.chars().count();
    let started = std::time::Instant::now();
    match state.commands.run(command, actor).await {
        Ok(done) => {
            state.telegram.sends.notify_one();
            tracing::info!(visitor = %visitor, message = %message, length, sends = done.output.len(), duration_ms = started.elapsed().as_millis() as u64, "an operator's answer was queued for the user");
            Ok(Some(done.output))
        }
        Err(CommandError::Domain(AnswerError::Helpdesk(HelpdeskError::Duplicate))) => {
            tracing::info!(visitor = %visitor, message = %message, "an operator's answer came again; it is sent once");
            Ok(None)
        }
        Err(CommandError::Domain(AnswerError::Helpdesk(HelpdeskError::UnknownVisitor))) => {
            Err(unknown_visitor(&visitor))
        }
        Err(e) => Err(e.into()),
    }
}

/// Webim's calls to the custom channel: operators' messages (sent to the
/// user's Telegram chat once per message id, however often Webim calls)
/// and the end of a chat. Every event taken, repeated or of no use here is
/// answered `{"result":"ok"}`.
#[utoipa::path(tag = "helpdesk", request_body(content = Object, description = "A Webim custom channel event"), responses((status = 200, description = "taken (or taken before, or of no use here)"), (status = 400, description = "not JSON, or not an event this bridge reads"), (status = 401, description = "a missing or wrong channel secret"), (status = 404, description = "the Webim bridge is off, or the visitor is unknown"), (status = 422, description = "a value too long, or holding a NUL character")), params(("Authorization" = String, Header, description = "`Token <callback_secret>`")))]
#[post("/integrations/webim/callback")]
#[tracing::instrument(skip_all)]
pub async fn webim_callback(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let helpdesk = bridge(&state, Some(HelpdeskKind::Webim)).await?;
    let Some(secret) = &helpdesk.callback_secret else {
        return Err(Problem::unauthorized(
            "no callback secret is set: PUT /api/v1/admin/settings/helpdesk with callback_secret",
        )
        .into());
    };
    let given = request
        .headers()
        .get(webim::AUTH_HEADER)
        .map(|v| webim::callback_credential(v.as_bytes()))
        .unwrap_or_default();
    if !crate::auth::secret_matches(given, secret.expose_secret()) {
        return Err(Problem::unauthorized("a missing or wrong channel secret").into());
    }
    let event: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            .detail(e.to_string())
    })?;
    let callback = webim::callback(&event).map_err(|reason| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "Invalid request body",
        )
        .detail(reason)
    })?;
    check(&callback)?;
    let actor = Actor::new(ActorKind::System, "helpdesk:webim");
    match callback {
        Callback::Message {
            visitor_id,
            message_id,
            text,
            file,
            operator: _,
        } if text.trim().is_empty() && file.is_none() => {
            tracing::debug!(visitor = %visitor_id, message = ?message_id, "an empty operator message; nothing to send");
        }
        Callback::Message {
            visitor_id,
            message_id,
            text,
            file,
            operator,
        } => {
            let mut command = Answer::new(state.db.clone(), visitor_id, message_id, text);
            command.file = file;
            command.operator = operator;
            answer(&state, &helpdesk, command, actor).await?;
        }
        Callback::ChatClosed {
            visitor_id,
            chat_id,
            closed_by,
        } => {
            let command = Close::new(state.db.clone(), visitor_id.clone(), chat_id, closed_by);
            match state.commands.run(command, actor).await {
                Ok(_) => {
                    tracing::info!(visitor = %visitor_id, "the helpdesk closed a visitor's chat")
                }
                Err(CommandError::Domain(HelpdeskError::Closed)) => {}
                Err(CommandError::Domain(HelpdeskError::UnknownVisitor)) => {
                    return Err(unknown_visitor(&visitor_id));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Callback::Ignored { event } => {
            tracing::debug!(event = %event, "a Webim event of no use here");
        }
    }
    Ok(HttpResponse::Ok().json(webim::ok()))
}

/// A callback's values as the database can hold them: ids of at most 200
/// characters, texts of at most 20,000, no NUL anywhere.
fn check(callback: &Callback) -> Result<(), ApiError> {
    let fields: Vec<(&str, Option<&str>, usize)> = match callback {
        Callback::Message {
            visitor_id,
            message_id,
            text,
            file,
            ..
        } => vec![
            ("visitor.id", Some(visitor_id.as_str()), 200),
            ("message.id", message_id.as_deref(), 200),
            ("message.text", Some(text.as_str()), 20_000),
            (
                "message.data.url",
                file.as_ref().map(|f| f.url.as_str()),
                2000,
            ),
        ],
        Callback::ChatClosed {
            visitor_id,
            chat_id,
            closed_by,
        } => vec![
            ("visitor.id", Some(visitor_id.as_str()), 200),
            ("chat_id", chat_id.as_deref(), 200),
            ("closed_by", closed_by.as_deref(), 200),
        ],
        Callback::Ignored { .. } => Vec::new(),
    };
    for (field, value, max) in fields {
        let Some(value) = value else { continue };
        let reason = if value.contains('\0') {
            "must not contain the NUL character (U+0000)".to_owned()
        } else if value.chars().count() > max {
            format!("is longer than {max} characters")
        } else {
            continue;
        };
        return Err(Problem::invalid_field(field, reason).into());
    }
    Ok(())
}

/// An operator's answer from a helpdesk.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HelpdeskMessageIn {
    /// The visitor this bridge gave the helpdesk with the user's message.
    #[schema(max_length = 200)]
    pub visitor_id: String,
    /// The helpdesk's id of the message: a second call with it sends
    /// nothing. Without one, every call is sent.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub message_id: Option<String>,
    /// Sent as one or more Telegram messages (4096 characters each).
    #[schema(max_length = 20000)]
    pub text: String,
    #[serde(default)]
    pub operator: Option<Operator>,
}

#[derive(Serialize, ToSchema)]
pub struct HelpdeskMessageOut {
    /// `queued`, or `duplicate` when the message id was taken before.
    pub status: &'static str,
    /// The Telegram outbox's sends carrying it (`GET /api/v1/telegram/sends/{id}`).
    pub send_ids: Vec<String>,
}

/// Sends an operator's answer to the visitor's Telegram chat, through the
/// outbox (Telegram's limits apply).
#[utoipa::path(tag = "helpdesk", request_body = HelpdeskMessageIn, responses((status = 202, body = HelpdeskMessageOut), (status = 200, body = HelpdeskMessageOut, description = "the message id was taken before: nothing is sent again"), (status = 400), (status = 401), (status = 403), (status = 404, description = "the bridge is off, or the visitor is unknown"), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/helpdesk/messages")]
#[tracing::instrument(skip_all)]
pub async fn helpdesk_message(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<HelpdeskMessageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::HelpdeskReply)?;
    let body = body.into_inner();
    let visitor_id = validate::text("visitor_id", body.visitor_id.trim(), 200)?;
    let message_id = body
        .message_id
        .map(|id| validate::text("message_id", id.trim(), 200))
        .transpose()?;
    let text = validate::text("text", body.text.trim(), 20_000)?;
    let helpdesk = bridge(&state, None).await?;
    let mut command = Answer::new(state.db.clone(), visitor_id, message_id, text);
    command.operator = body.operator;
    match answer(&state, &helpdesk, command, caller.actor()).await? {
        Some(send_ids) => Ok(HttpResponse::Accepted().json(HelpdeskMessageOut {
            status: "queued",
            send_ids,
        })),
        None => Ok(HttpResponse::Ok().json(HelpdeskMessageOut {
            status: "duplicate",
            send_ids: Vec::new(),
        })),
    }
}
