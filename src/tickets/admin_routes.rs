//! Tickets in the admin API: `/api/v1/admin/tickets…` (`tickets:read`,
//! `tickets:reply`).

use actix_web::{HttpResponse, get, post, put, web};
use sea_orm::EntityTrait;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    domain::{Channel, Priority, Status, Ticket, TicketCommand},
    queries::{self, MessageAddedOut, PageIn, Side, TicketDetailOut, TicketFilter, TicketPageOut},
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    db::entities::{admin, ticket, user},
    domain::Decide,
    error::{ApiError, Problem},
    ids::{AdminId, MessageId, TicketId},
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(view)
        .service(reply)
        .service(set_status)
        .service(set_priority)
        .service(assign);
}

#[derive(Deserialize, ToSchema)]
pub struct StatusIn {
    pub status: Status,
}

#[derive(Deserialize, ToSchema)]
pub struct PriorityIn {
    pub priority: Priority,
}

#[derive(Deserialize, ToSchema)]
pub struct AssignIn {
    /// An admin's id, or `null` to unassign.
    pub assignee_id: Option<Uuid>,
}

async fn find(state: &AppState, id: TicketId) -> Result<ticket::Model, ApiError> {
    ticket::Entity::find_by_id(id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such ticket").into())
}

async fn detail(state: &AppState, id: TicketId) -> Result<TicketDetailOut, ApiError> {
    let row = find(state, id).await?;
    Ok(queries::detail(state.db.conn(), row, Side::Operator).await?)
}

/// Tickets with filters, most recently active first.
#[utoipa::path(tag = "tickets", params(TicketFilter, PageIn), responses((status = 200, body = TicketPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/tickets")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    filter: web::Query<TicketFilter>,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsRead)?;
    let page = page.validate()?;
    if let Some(status) = &filter.status
        && serde_json::from_value::<Status>(serde_json::Value::String(status.clone())).is_err()
    {
        return Err(
            Problem::invalid_field("status", "one of open, answered, pending, closed").into(),
        );
    }
    Ok(HttpResponse::Ok()
        .json(queries::list(state.db.conn(), &filter, page, Side::Operator).await?))
}

/// A ticket with all its messages; marks it read for the operators.
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), responses((status = 200, body = TicketDetailOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/tickets/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsRead)?;
    let out = detail(&state, *id).await?;
    let txn = state.db.begin_write().await?;
    queries::mark_read(&*txn, id.as_uuid(), Side::Operator).await?;
    txn.commit().await?;
    Ok(HttpResponse::Ok().json(out))
}

#[derive(Deserialize, ToSchema)]
pub struct ReplyIn {
    #[schema(min_length = 1, max_length = 10000, example = "We found your payment.")]
    pub text: String,
    /// A photo or document sent to the user's Telegram chat with the reply
    /// (the text is its caption unless `caption` is given).
    pub media: Option<MediaIn>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaIn {
    #[serde(rename = "type")]
    pub kind: MediaKind,
    /// A Telegram file id (of a file the bot has seen) …
    pub file_id: Option<String>,
    /// … or an http(s) URL Telegram fetches it from.
    pub url: Option<String>,
    #[schema(max_length = 1024)]
    pub caption: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Photo,
    Document,
}

/// The Bot API call that delivers a reply to a chat.
/// Telegram's longest message, and longest caption (characters).
const MESSAGE_MAX: usize = 4096;
const CAPTION_MAX: usize = 1024;

/// The text as messages Telegram takes, in order.
fn messages(chat_id: i64, text: &str) -> Vec<(&'static str, serde_json::Value)> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(MESSAGE_MAX)
        .map(|part| {
            let part: String = part.iter().collect();
            (
                "sendMessage",
                serde_json::json!({"chat_id": chat_id, "text": part}),
            )
        })
        .collect()
}

/// The Bot API calls that deliver a reply to a chat, in order: the text
/// (in parts when it is longer than a message), or the media with the text
/// as its caption (the text after it when it is longer than a caption).
fn delivery(
    chat_id: i64,
    text: &str,
    media: Option<&MediaIn>,
) -> Result<Vec<(&'static str, serde_json::Value)>, ApiError> {
    let Some(media) = media else {
        return Ok(messages(chat_id, text));
    };
    let file = match (&media.file_id, &media.url) {
        (Some(id), None) => validate::text("media.file_id", id, 256)?,
        (None, Some(url)) => {
            let parsed = url::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            parsed
                .ok_or_else(|| {
                    ApiError::from(Problem::invalid_field("media.url", "an http(s) URL"))
                })?
                .to_string()
        }
        _ => {
            return Err(
                Problem::invalid_field("media", "exactly one of `file_id` and `url`").into(),
            );
        }
    };
    let (caption, after) = match &media.caption {
        Some(caption) => (
            validate::text("media.caption", caption, CAPTION_MAX)?,
            messages(chat_id, text),
        ),
        None if text.chars().count() <= CAPTION_MAX => (text.to_owned(), Vec::new()),
        None => (String::new(), messages(chat_id, text)),
    };
    let first = match media.kind {
        MediaKind::Photo => (
            "sendPhoto",
            serde_json::json!({"chat_id": chat_id, "photo": file, "caption": caption}),
        ),
        MediaKind::Document => (
            "sendDocument",
            serde_json::json!({"chat_id": chat_id, "document": file, "caption": caption}),
        ),
    };
    let mut calls = vec![first];
    if caption.is_empty()
        && let Some(params) = calls[0].1.as_object_mut()
    {
        params.remove("caption");
    }
    calls.extend(after);
    Ok(calls)
}

/// An operator's reply, and its delivery to the user's Telegram chat when
/// the bot can write to them (an outbox row in the same transaction).
struct Reply {
    db: crate::db::Db,
    ticket: TicketId,
    admin_id: String,
    message_id: MessageId,
    text: String,
    /// A photo or document delivered with it.
    media: Option<MediaIn>,
    /// Looked up: the ticket's user and their chat, if the bot can write to them.
    chat: Option<(crate::ids::UserId, i64)>,
    send_id: Uuid,
}

impl crate::domain::Command for Reply {
    type Output = (Ticket, Option<Uuid>);
    type Error = crate::tickets::domain::TicketError;

    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), crate::domain::CommandError<Self::Error>> {
        let Some(ticket) = ticket::Entity::find_by_id(self.ticket.as_uuid())
            .one(conn)
            .await?
        else {
            return Ok(());
        };
        self.chat = user::Entity::find_by_id(ticket.user_id)
            .one(conn)
            .await?
            .filter(|u| !u.bot_blocked)
            .and_then(|u| Some((crate::ids::UserId::from_uuid(u.id), u.telegram_chat_id?)));
        Ok(())
    }

    fn targets(&self) -> Vec<crate::domain::Target> {
        vec![crate::domain::Target::of::<Ticket>(self.ticket)]
    }

    fn decide(&self, work: &mut crate::domain::Work<'_>) -> Result<Self::Output, Self::Error> {
        let before = work.state::<Ticket>(self.ticket);
        work.execute::<Ticket>(
            self.ticket,
            TicketCommand::Reply {
                admin_id: self.admin_id.clone(),
                message_id: self.message_id,
                text: self.text.clone(),
                channel: Channel::Admin,
            },
        )?;
        Ok((before, self.chat.map(|_| self.send_id)))
    }

    async fn write(
        &self,
        txn: &crate::db::WriteTxn,
        _output: &mut Self::Output,
        _events: &[crate::events::RecordedEvent],
    ) -> Result<(), crate::domain::CommandError<Self::Error>> {
        let Some((user, chat_id)) = self.chat else {
            return Ok(());
        };
        let calls = delivery(chat_id, &self.text, self.media.as_ref())
            .map_err(|e| crate::domain::CommandError::Internal(anyhow::anyhow!("{e}")))?;
        for (n, (method, params)) in calls.into_iter().enumerate() {
            let mut send =
                crate::telegram::outbox::NewSend::new(chat_id, method, params, "ticket_reply");
            if n == 0 {
                send.id = self.send_id;
            }
            // Queued in order: a chat's sends go in the order queued.
            send.created_at_ms += i64::try_from(n).unwrap_or(0);
            send.user_id = Some(user);
            send.reference = Some(self.message_id.to_string());
            crate::telegram::outbox::enqueue(&**txn, &self.db, &send).await?;
        }
        Ok(())
    }
}

/// An operator's reply (the ticket becomes `answered`; 409 `ticket_closed`
/// if it is closed). When the bot can write to the ticket's user, the reply
/// is also sent to their Telegram chat (with `media`, as a photo or a
/// document), within Telegram's limits.
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), request_body = ReplyIn, responses((status = 201, body = MessageAddedOut), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/tickets/{id}/messages")]
#[tracing::instrument(skip_all)]
pub async fn reply(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
    body: web::Json<ReplyIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsReply)?;
    let body = body.into_inner();
    let text = validate::text("text", &body.text, 10_000)?;
    // Checked before anything is written (the chat does not matter here).
    delivery(0, &text, body.media.as_ref())?;
    let author = caller.actor().id.unwrap_or_default();
    let reply = Reply {
        db: state.db.clone(),
        ticket: *id,
        admin_id: author,
        message_id: MessageId::new(),
        text,
        media: body.media,
        chat: None,
        send_id: Uuid::now_v7(),
    };
    let done = state.commands.run(reply, caller.actor()).await?;
    let (before, send) = done.output;
    if send.is_some() {
        state.telegram.sends.notify_one();
    }
    let before = before.status.map_or("", |s| s.as_str());
    let mut out = MessageAddedOut::from_events(&done.events, before, Side::Operator)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no message event was appended")))?;
    out.telegram_send_id = send;
    Ok(HttpResponse::Created().json(out))
}

/// Sets the status (`open`, `answered`, `pending`, `closed`).
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), request_body = StatusIn, responses((status = 200, body = TicketDetailOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[put("/tickets/{id}/status")]
#[tracing::instrument(skip_all)]
pub async fn set_status(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
    body: web::Json<StatusIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsReply)?;
    let status = body.status;
    state
        .commands
        .run(
            Decide::<Ticket>::new(*id, TicketCommand::ChangeStatus(status)),
            caller.actor(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(detail(&state, *id).await?))
}

/// Sets the priority (`low`, `normal`, `high`, `urgent`).
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), request_body = PriorityIn, responses((status = 200, body = TicketDetailOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[put("/tickets/{id}/priority")]
#[tracing::instrument(skip_all)]
pub async fn set_priority(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
    body: web::Json<PriorityIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsReply)?;
    let priority = body.priority;
    state
        .commands
        .run(
            Decide::<Ticket>::new(*id, TicketCommand::ChangePriority(priority)),
            caller.actor(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(detail(&state, *id).await?))
}

/// Assigns the ticket to an admin (or unassigns it with `null`).
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), request_body = AssignIn, responses((status = 200, body = TicketDetailOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[put("/tickets/{id}/assignee")]
#[tracing::instrument(skip_all)]
pub async fn assign(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
    body: web::Json<AssignIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsReply)?;
    if let Some(assignee) = body.assignee_id
        && admin::Entity::find_by_id(assignee)
            .one(state.db.conn())
            .await?
            .is_none()
    {
        return Err(Problem::invalid_field("assignee_id", "no such admin").into());
    }
    let assignee = body.assignee_id.map(AdminId::from_uuid);
    state
        .commands
        .run(
            Decide::<Ticket>::new(*id, TicketCommand::Assign(assignee)),
            caller.actor(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(detail(&state, *id).await?))
}
