//! The cabinet's tickets: `/api/v1/cabinet/tickets…`. A user sees and
//! changes only their own; anyone else's ticket is a 404.

use actix_web::{HttpResponse, get, post, web};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    domain::{Channel, Ticket, TicketCommand, TicketError},
    queries::{self, MessageAddedOut, PageIn, Side, TicketDetailOut, TicketFilter, TicketPageOut},
};
use crate::{
    app::AppState,
    auth::CabinetUser,
    db::entities::ticket,
    domain::{CommandError, Decide},
    error::{ApiError, Problem},
    ids::{MessageId, TicketId},
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(open)
        .service(view)
        .service(add_message);
}

#[derive(Deserialize, ToSchema)]
pub struct OpenTicketIn {
    #[schema(min_length = 1, max_length = 200, example = "Payment missing")]
    pub subject: String,
    #[schema(
        min_length = 1,
        max_length = 10000,
        example = "I paid yesterday and see no credit."
    )]
    pub text: String,
}

#[derive(Deserialize, ToSchema)]
pub struct MessageIn {
    #[schema(
        min_length = 1,
        max_length = 10000,
        example = "Thank you, it works now."
    )]
    pub text: String,
}

/// The caller's ticket, or 404 (also for someone else's).
pub async fn own_ticket(
    state: &AppState,
    user: &CabinetUser,
    id: TicketId,
) -> Result<ticket::Model, ApiError> {
    ticket::Entity::find_by_id(id.as_uuid())
        .filter(ticket::Column::UserId.eq(user.id.as_uuid()))
        .one(state.db.conn())
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such ticket").into())
}

/// The caller's tickets, most recently active first.
#[utoipa::path(tag = "cabinet", params(PageIn), responses((status = 200, body = TicketPageOut), (status = 401), (status = 422)), security(("bearer" = [])))]
#[get("/tickets")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    user: CabinetUser,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    let page = page.validate()?;
    let filter = TicketFilter {
        user_id: Some(user.id.as_uuid()),
        ..Default::default()
    };
    Ok(HttpResponse::Ok().json(queries::list(state.db.conn(), &filter, page, Side::User).await?))
}

/// Opens a ticket with a first message. One open ticket at a time: 409 with
/// `ticket_already_open` otherwise.
#[utoipa::path(tag = "cabinet", request_body = OpenTicketIn, responses((status = 201, body = TicketDetailOut), (status = 401), (status = 409), (status = 422)), security(("bearer" = [])))]
#[post("/tickets")]
#[tracing::instrument(skip_all, fields(user = %user.id))]
pub async fn open(
    state: web::Data<AppState>,
    user: CabinetUser,
    body: web::Json<OpenTicketIn>,
) -> Result<HttpResponse, ApiError> {
    let subject = validate::text("subject", &body.subject, 200)?;
    let text = validate::text("text", &body.text, 10_000)?;
    let ticket_id = TicketId::new();
    let message_id = MessageId::new();
    let open = Decide::<Ticket>::new(
        ticket_id,
        TicketCommand::Open {
            ticket_id,
            user_id: user.id,
            subject,
            text,
            message_id,
            channel: Channel::Cabinet,
            media: Vec::new(),
        },
    );
    match state.commands.run(open, user.actor()).await {
        Ok(_) => {}
        // The read model's one-open-ticket index refused it.
        Err(e) if e.is_unique_violation() => return Err(already_open()),
        Err(e) => return Err(e.into()),
    }
    let row = own_ticket(&state, &user, ticket_id).await?;
    Ok(HttpResponse::Created().json(queries::detail(state.db.conn(), row, Side::User).await?))
}

fn already_open() -> ApiError {
    Problem::new(
        actix_web::http::StatusCode::CONFLICT,
        "ticket_already_open",
        "A ticket is already open",
    )
    .detail("you already have an open ticket; write in it or wait until it is closed")
    .into()
}

/// One of the caller's tickets with its messages; marks it read.
#[utoipa::path(tag = "cabinet", params(("id" = Uuid, Path)), responses((status = 200, body = TicketDetailOut), (status = 401), (status = 404)), security(("bearer" = [])))]
#[get("/tickets/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    user: CabinetUser,
    id: web::Path<TicketId>,
) -> Result<HttpResponse, ApiError> {
    let row = own_ticket(&state, &user, *id).await?;
    let detail = queries::detail(state.db.conn(), row, Side::User).await?;
    let txn = state.db.begin_write().await?;
    queries::mark_read(&*txn, id.as_uuid(), Side::User).await?;
    txn.commit().await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Adds a message to one of the caller's tickets (409 `ticket_closed` if closed).
#[utoipa::path(tag = "cabinet", params(("id" = Uuid, Path)), request_body = MessageIn, responses((status = 201, body = MessageAddedOut), (status = 401), (status = 404), (status = 409), (status = 422)), security(("bearer" = [])))]
#[post("/tickets/{id}/messages")]
#[tracing::instrument(skip_all)]
pub async fn add_message(
    state: web::Data<AppState>,
    user: CabinetUser,
    id: web::Path<TicketId>,
    body: web::Json<MessageIn>,
) -> Result<HttpResponse, ApiError> {
    let text = validate::text("text", &body.text, 10_000)?;
    // The ticket's owner is checked by the command itself: someone else's
    // ticket is `NotFound` to this user.
    let add = Decide::<Ticket>::new(
        *id,
        TicketCommand::AddUserMessage {
            user_id: user.id,
            message_id: MessageId::new(),
            text,
            channel: Channel::Cabinet,
            media: Vec::new(),
        },
    );
    let done = state
        .commands
        .run(add, user.actor())
        .await
        .map_err(|e| match e {
            CommandError::Domain(TicketError::NotFound) => {
                Problem::not_found().detail("no such ticket").into()
            }
            other => ApiError::from(other),
        })?;
    let before = done.output.status.map_or("", |s| s.as_str());
    let out = MessageAddedOut::from_events(&done.events, before, Side::User)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no message event was appended")))?;
    Ok(HttpResponse::Created().json(out))
}
