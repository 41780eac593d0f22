//! The admin API's authentication: `/api/v1/auth/…`.

use actix_web::{HttpRequest, HttpResponse, post, web};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    extractors::{AdminPrincipal, CurrentAdmin},
    password,
    sessions::{self, TokensOut},
    tokens::Audience,
};
use crate::{
    app::AppState,
    db::entities::admin,
    error::{ApiError, Problem},
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/auth")
            .service(login)
            .service(refresh)
            .service(logout)
            .service(change_password),
    );
}

#[derive(Deserialize, ToSchema)]
pub struct LoginIn {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshIn {
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordChangeIn {
    pub current_password: String,
    pub new_password: String,
}

pub fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    crate::client_ip::client_ip(req.peer_addr(), req.headers())
}

fn invalid_credentials() -> ApiError {
    Problem::new(
        actix_web::http::StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "Invalid credentials",
    )
    .detail("wrong e-mail or password")
    .into()
}

/// Admin login with e-mail and password.
#[utoipa::path(
    tag = "auth",
    request_body = LoginIn,
    responses(
        (status = 200, body = TokensOut),
        (status = 401, description = "wrong e-mail or password"),
        (status = 403, description = "the account is disabled"),
        (status = 429, description = "too many attempts"),
    )
)]
#[post("/login")]
#[tracing::instrument(skip_all)]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<LoginIn>,
) -> Result<HttpResponse, ApiError> {
    let email = validate::email("email", &body.email)?;
    validate::password("password", &body.password, false)?;
    state
        .rate_limits
        .check(client_ip(&req), Some(&format!("admin:{email}")))?;
    let account = admin::Entity::find()
        .filter(admin::Column::Email.eq(&email))
        .one(state.db.conn())
        .await?;
    let matches = password::verify(
        SecretString::from(body.password.clone()),
        account.as_ref().map(|a| a.password_hash.clone()),
    )
    .await?;
    let Some(account) = account.filter(|_| matches) else {
        tracing::info!("admin login refused");
        return Err(invalid_credentials());
    };
    if account.disabled {
        return Err(Problem::forbidden("this admin account is disabled").into());
    }
    let txn = state.db.begin_write().await?;
    let tokens = sessions::start(
        &*txn,
        &state.jwt,
        state.config.auth.refresh_token_ttl,
        Audience::Admin,
        account.id,
    )
    .await?;
    txn.commit().await?;
    tracing::info!(admin = %account.id, "admin logged in");
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Exchanges a refresh token for a new access and refresh token. A refresh
/// token works once; presenting a used one again revokes the session.
#[utoipa::path(
    tag = "auth",
    request_body = RefreshIn,
    responses((status = 200, body = TokensOut), (status = 401, description = "invalid, used or revoked token"))
)]
#[post("/refresh")]
#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RefreshIn>,
) -> Result<HttpResponse, ApiError> {
    let token = validate::text("refresh_token", &body.refresh_token, 200)?;
    state.rate_limits.check(client_ip(&req), None)?;
    let rotation = sessions::Rotation {
        ttl: state.config.auth.refresh_token_ttl,
        reuse_interval: state.config.auth.refresh_reuse_interval,
        sealer: state.webhooks.sender.secrets(),
    };
    let tokens = sessions::refresh_session(
        &state.db,
        &state.jwt,
        rotation,
        Audience::Admin,
        &SecretString::from(token),
        async |txn, principal| {
            let account = admin::Entity::find_by_id(principal).one(txn).await?;
            Ok(account.is_some_and(|a| !(a.disabled)))
        },
    )
    .await?;
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Ends the current session (its access and refresh tokens stop working).
#[utoipa::path(tag = "auth", responses((status = 204), (status = 401)), security(("bearer" = [])))]
#[post("/logout")]
#[tracing::instrument(skip_all)]
pub async fn logout(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
) -> Result<HttpResponse, ApiError> {
    let AdminPrincipal::Admin { session, .. } = caller.principal else {
        return Err(Problem::forbidden("API keys have no session; revoke the key instead").into());
    };
    let txn = state.db.begin_write().await?;
    sessions::revoke(&*txn, session, "logout").await?;
    txn.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Changes the signed-in admin's password; every session of the account
/// ends, this one included.
#[utoipa::path(
    tag = "auth",
    request_body = PasswordChangeIn,
    responses((status = 204), (status = 401), (status = 422, description = "the new password is too short or too long")),
    security(("bearer" = []))
)]
#[post("/password")]
#[tracing::instrument(skip_all)]
pub async fn change_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: CurrentAdmin,
    body: web::Json<PasswordChangeIn>,
) -> Result<HttpResponse, ApiError> {
    let admin_id = caller.require_admin()?;
    validate::password("current_password", &body.current_password, false)?;
    validate::password("new_password", &body.new_password, true)?;
    state
        .rate_limits
        .check(client_ip(&req), Some(&format!("admin:{admin_id}")))?;
    let account = admin::Entity::find_by_id(admin_id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(sessions::invalid_token)?;
    let matches = password::verify(
        SecretString::from(body.current_password.clone()),
        Some(account.password_hash.clone()),
    )
    .await?;
    if !matches {
        return Err(invalid_credentials());
    }
    let hash = password::hash(SecretString::from(body.new_password.clone())).await?;
    let txn = state.db.begin_write().await?;
    admin::Entity::update_many()
        .col_expr(admin::Column::PasswordHash, Expr::value(hash))
        .col_expr(admin::Column::PasswordChangedAt, Expr::value(Utc::now()))
        .filter(admin::Column::Id.eq(account.id))
        .exec(&*txn)
        .await?;
    sessions::revoke_all(&*txn, Audience::Admin, account.id, "password changed").await?;
    txn.commit().await?;
    tracing::info!(admin = %account.id, "admin password changed; sessions revoked");
    Ok(HttpResponse::NoContent().finish())
}
