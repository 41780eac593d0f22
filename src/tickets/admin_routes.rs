//! Tickets in the admin API: `/api/v1/admin/tickets…` (`tickets:read`,
//! `tickets:reply`).

use actix_web::{HttpResponse, get, post, put, web};
use sea_orm::EntityTrait;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    cabinet_routes::MessageIn,
    domain::{Channel, Priority, Status, Ticket, TicketCommand},
    queries::{self, MessageAddedOut, PageIn, Side, TicketDetailOut, TicketFilter, TicketPageOut},
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    db::entities::{admin, ticket},
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

/// An operator's reply (the ticket becomes `answered`; 409 `ticket_closed`
/// if it is closed).
#[utoipa::path(tag = "tickets", params(("id" = Uuid, Path)), request_body = MessageIn, responses((status = 201, body = MessageAddedOut), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/tickets/{id}/messages")]
#[tracing::instrument(skip_all)]
pub async fn reply(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<TicketId>,
    body: web::Json<MessageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::TicketsReply)?;
    let text = validate::text("text", &body.text, 10_000)?;
    let author = caller.actor().id.unwrap_or_default();
    let reply = Decide::<Ticket>::new(
        *id,
        TicketCommand::Reply {
            admin_id: author,
            message_id: MessageId::new(),
            text,
            channel: Channel::Admin,
        },
    );
    let done = state.commands.run(reply, caller.actor()).await?;
    let before = done.output.status.map_or("", |s| s.as_str());
    let out = MessageAddedOut::from_events(&done.events, before, Side::Operator)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no message event was appended")))?;
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
