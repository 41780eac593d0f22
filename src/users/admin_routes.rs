//! Users in the admin API: `/api/v1/admin/users…` (`users:read`,
//! `users:manage`).

use actix_web::{HttpResponse, get, patch, post, web};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{UserCommand, UserState, domain::UserUpdated, service};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    cabinet::UserOut,
    db::entities::user,
    domain::Decide,
    error::{ApiError, Problem},
    ids::UserId,
    tickets::queries::PageIn,
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list)
        .service(view)
        .service(edit)
        .service(block)
        .service(unblock);
}

#[derive(Deserialize, IntoParams)]
pub struct UserSearch {
    /// Matches the username, the e-mail (substring) or the Telegram id (exact).
    pub q: Option<String>,
    /// `active` or `blocked`.
    pub status: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPageOut {
    pub items: Vec<UserOut>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

async fn find(state: &AppState, id: UserId) -> Result<user::Model, ApiError> {
    user::Entity::find_by_id(id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such user").into())
}

/// Users, newest first, with search.
#[utoipa::path(tag = "users", params(UserSearch, PageIn), responses((status = 200, body = UserPageOut), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/users")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    search: web::Query<UserSearch>,
    page: web::Query<PageIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersRead)?;
    let page = page.validate()?;
    let mut condition = Condition::all();
    if let Some(q) = search.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        if q.chars().count() > 100 {
            return Err(Problem::invalid_field("q", "at most 100 characters").into());
        }
        let pattern = q.trim_start_matches('@').to_lowercase();
        // Case-insensitive on both databases (Telegram usernames are), the
        // query's own wildcard characters taken literally.
        let like = || {
            let escaped = pattern
                .replace('!', "!!")
                .replace('%', "!%")
                .replace('_', "!_");
            LikeExpr::new(format!("%{escaped}%")).escape('!')
        };
        let lower = |column: user::Column| Expr::expr(Func::lower(Expr::col(column)));
        let mut any = Condition::any()
            .add(lower(user::Column::Username).like(like()))
            .add(lower(user::Column::Email).like(like()));
        if let Ok(telegram_id) = q.parse::<i64>() {
            any = any.add(user::Column::TelegramId.eq(telegram_id));
        }
        condition = condition.add(any);
    }
    if let Some(status) = &search.status {
        if status != "active" && status != "blocked" {
            return Err(Problem::invalid_field("status", "`active` or `blocked`").into());
        }
        condition = condition.add(user::Column::Status.eq(status.as_str()));
    }
    let query = user::Entity::find().filter(condition);
    let total = query.clone().count(state.db.conn()).await?;
    let items = query
        .order_by_desc(user::Column::CreatedAt)
        .order_by_desc(user::Column::Id)
        .offset(page.0 * page.1)
        .limit(page.1)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(UserOut::from)
        .collect();
    Ok(HttpResponse::Ok().json(UserPageOut {
        items,
        page: page.0 + 1,
        per_page: page.1,
        total,
    }))
}

/// One user.
#[utoipa::path(tag = "users", params(("id" = Uuid, Path)), responses((status = 200, body = UserOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[get("/users/{id}")]
#[tracing::instrument(skip_all)]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersRead)?;
    Ok(HttpResponse::Ok().json(UserOut::from(find(&state, *id).await?)))
}

#[derive(Deserialize, ToSchema)]
pub struct UserEditIn {
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub language_code: Option<String>,
}

/// Edits profile fields (only those given change; `user.updated`).
#[utoipa::path(tag = "users", params(("id" = Uuid, Path)), request_body = UserEditIn, responses((status = 200, body = UserOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[patch("/users/{id}")]
#[tracing::instrument(skip_all)]
pub async fn edit(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
    body: web::Json<UserEditIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersManage)?;
    let field =
        |name: &str, value: &Option<String>, max: usize| -> Result<Option<String>, ApiError> {
            value
                .as_deref()
                .map(|v| validate::text(name, v, max))
                .transpose()
        };
    let update = UserUpdated {
        user_id: *id,
        username: field("username", &body.username, 64)?,
        first_name: field("first_name", &body.first_name, 128)?,
        last_name: field("last_name", &body.last_name, 128)?,
        language_code: field("language_code", &body.language_code, 16)?,
        telegram_chat_id: None,
    };
    state
        .commands
        .run(
            Decide::<UserState>::new(*id, UserCommand::Edit(update)),
            caller.actor(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserOut::from(find(&state, *id).await?)))
}

#[derive(Deserialize, ToSchema)]
pub struct BlockIn {
    pub reason: String,
}

/// Blocks a user: `user.blocked`, and every cabinet session ends at once.
#[utoipa::path(tag = "users", params(("id" = Uuid, Path)), request_body = BlockIn, responses((status = 200, body = UserOut), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[post("/users/{id}/block")]
#[tracing::instrument(skip_all)]
pub async fn block(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
    body: web::Json<BlockIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersManage)?;
    let reason = validate::text("reason", &body.reason, 500)?;
    let block = service::BlockUser {
        user_id: *id,
        reason,
    };
    state.commands.run(block, caller.actor()).await?;
    Ok(HttpResponse::Ok().json(UserOut::from(find(&state, *id).await?)))
}

/// Unblocks a user (`user.unblocked`).
#[utoipa::path(tag = "users", params(("id" = Uuid, Path)), responses((status = 200, body = UserOut), (status = 401), (status = 403), (status = 404)), security(("bearer" = []), ("api_key" = [])))]
#[post("/users/{id}/unblock")]
#[tracing::instrument(skip_all)]
pub async fn unblock(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<UserId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::UsersManage)?;
    state
        .commands
        .run(
            Decide::<UserState>::new(*id, UserCommand::Unblock),
            caller.actor(),
        )
        .await?;
    Ok(HttpResponse::Ok().json(UserOut::from(find(&state, *id).await?)))
}
