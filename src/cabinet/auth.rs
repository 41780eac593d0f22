//! Cabinet sign-in: Telegram Mini App, Telegram Login Widget, and e-mail with
//! verification; refresh and logout. Under `/api/v1/cabinet/auth/…`.
//!
//! E-mail responses never tell whether an address has an account: register
//! and forgot-password answer the same either way, and take as long.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, get, http::StatusCode, post, web};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::AppState,
    auth::{
        CabinetUser, password,
        routes::client_ip,
        sessions::{self, TokensOut},
        telegram::{self, Checks, TelegramAuthError, VerifiedLogin},
        tokens::{Audience, token_hash},
    },
    cabinet::accounts::{
        AccountError, Links, Mailing, Page, RegisterByEmail, ResetPassword, TelegramSignIn,
        VerifyEmail, new_email_token,
    },
    db::entities::{email_token, telegram_login, user, user_credential},
    domain::CommandError,
    error::{ApiError, Problem},
    events::{Actor, ActorKind},
    mail::outbox,
    users::{
        domain::{Source, TelegramProfile},
        service::find_by_email,
    },
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/auth")
            .service(mini_app)
            .service(login_widget)
            .service(register)
            .service(verify_email)
            .service(verify_email_page)
            .service(reset_password_page)
            .service(forgot_password_page)
            .service(email_login)
            .service(forgot_password)
            .service(reset_password)
            .service(refresh)
            .service(logout),
    );
}

#[derive(Deserialize, ToSchema)]
pub struct MiniAppIn {
    /// `Telegram.WebApp.initData`, exactly as the Mini App received it.
    pub init_data: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterIn {
    #[schema(format = Email, max_length = 254, example = "ann@example.com")]
    pub email: String,
    /// At least 10 characters.
    #[schema(
        min_length = 10,
        max_length = 256,
        example = "correct horse battery staple"
    )]
    pub password: String,
    /// A referrer's code, if the user came through a referral link.
    #[serde(default)]
    pub referral_code: Option<String>,
    /// `en` or `ru`: the language of the e-mails.
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct EmailLoginIn {
    #[schema(format = Email, max_length = 254, example = "ann@example.com")]
    pub email: String,
    #[schema(min_length = 1, max_length = 256)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ForgotIn {
    #[schema(format = Email, max_length = 254, example = "ann@example.com")]
    pub email: String,
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Deserialize, ToSchema, IntoParams)]
pub struct TokenIn {
    /// The token from the e-mailed link.
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetIn {
    #[schema(min_length = 1, max_length = 200)]
    pub token: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 256)]
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshIn {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct StatusOut {
    pub status: &'static str,
}

fn telegram_error(err: TelegramAuthError) -> ApiError {
    tracing::info!(reason = %err, "Telegram sign-in refused");
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid_telegram_auth",
        "Invalid Telegram data",
    )
    .detail(err.to_string())
    .into()
}

fn bot_token(state: &AppState) -> Result<&SecretString, ApiError> {
    state.config.telegram.bot_token.as_ref().ok_or_else(|| {
        Problem::unavailable("Telegram sign-in is not configured (SWITCHBOARD_TELEGRAM_BOT_TOKEN)")
            .into()
    })
}

/// Signs in with a Telegram Mini App's `initData`; the first sign-in creates
/// the user. Replaying the same `initData` while valid signs in the same
/// user and changes nothing else.
#[utoipa::path(
    tag = "cabinet-auth",
    request_body = MiniAppIn,
    responses((status = 200, body = TokensOut), (status = 401, description = "invalid or expired initData"), (status = 403, description = "blocked"), (status = 429))
)]
#[post("/telegram/mini-app")]
#[tracing::instrument(skip_all)]
pub async fn mini_app(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<MiniAppIn>,
) -> Result<HttpResponse, ApiError> {
    let init_data = validate::text("init_data", &body.init_data, 8192)?;
    state.rate_limits.check(client_ip(&req), None)?;
    let checks = Checks {
        now: Utc::now(),
        max_age: Some(state.config.telegram.auth_max_age),
        mini_app_public_key: state.config.telegram.mini_app_public_key.as_ref(),
    };
    let login = telegram::verify_mini_app(&init_data, bot_token(&state)?.expose_secret(), checks)
        .map_err(telegram_error)?;
    let tokens = telegram_sign_in(&state, login, Source::MiniApp).await?;
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Signs in with the Telegram Login Widget's fields (`id`, `first_name`,
/// `username`, `photo_url`, `auth_date`, `hash`, …). Each payload works once.
#[utoipa::path(
    tag = "cabinet-auth",
    request_body(content = Object, description = "the widget's fields as it passed them"),
    responses((status = 200, body = TokensOut), (status = 401), (status = 429))
)]
#[post("/telegram/widget")]
#[tracing::instrument(skip_all)]
pub async fn login_widget(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<serde_json::Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    if body.len() > 20 {
        return Err(Problem::bad_request("too many fields").into());
    }
    let mut fields = BTreeMap::new();
    for (key, value) in body.iter() {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(Problem::invalid_field(key, "must be a string or a number").into()),
        };
        if key.len() > 64 || text.len() > 1024 {
            return Err(Problem::invalid_field(key, "is too long").into());
        }
        fields.insert(key.clone(), text);
    }
    state.rate_limits.check(client_ip(&req), None)?;
    let checks = Checks {
        now: Utc::now(),
        max_age: Some(state.config.telegram.auth_max_age),
        mini_app_public_key: None,
    };
    let login = telegram::verify_login_widget(&fields, bot_token(&state)?.expose_secret(), checks)
        .map_err(telegram_error)?;
    // One-time use: the hash identifies this exact payload.
    let txn = state.db.begin_write().await?;
    let first_use = telegram_login::ActiveModel {
        hash: Set(login.hash.clone()),
        used_at: Set(Utc::now()),
    }
    .insert(&*txn)
    .await;
    match first_use {
        Ok(_) => txn.commit().await?,
        Err(e)
            if matches!(
                e.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            return Err(telegram_error(TelegramAuthError::Malformed(
                "this sign-in was already used",
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let tokens = telegram_sign_in(&state, login, Source::LoginWidget).await?;
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Finds or creates the user of a verified Telegram sign-in and starts a
/// session.
async fn telegram_sign_in(
    state: &AppState,
    login: VerifiedLogin,
    source: Source,
) -> Result<TokensOut, ApiError> {
    let profile = TelegramProfile {
        telegram_id: login.user.id,
        username: login.user.username.clone(),
        first_name: login.user.first_name.clone(),
        last_name: login.user.last_name.clone(),
        language_code: login.user.language_code.clone(),
    };
    let actor = Actor::new(ActorKind::Telegram, login.user.id);
    let sign_in = TelegramSignIn::new(
        profile,
        login.auth_date,
        login.start_param,
        source,
        state.jwt.clone(),
        state.config.auth.refresh_token_ttl,
    );
    let done = state.commands.run(sign_in, actor).await?;
    if done.output.created {
        tracing::info!(user = %done.output.user_id, source = ?source, "user created from Telegram sign-in");
    }
    done.output
        .tokens
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a sign-in started no session")))
}

fn links(state: &AppState) -> Links {
    Links {
        public_url: state.config.public_url.clone(),
        cabinet_url: state.config.cabinet_url.clone(),
    }
}

/// Registers with e-mail and password and sends a verification link. The
/// answer is the same whether or not the address already has an account
/// (its owner gets a notice instead).
#[utoipa::path(
    tag = "cabinet-auth",
    request_body = RegisterIn,
    responses((status = 202, body = StatusOut), (status = 422, description = "invalid e-mail or weak password"), (status = 429))
)]
#[post("/email/register")]
#[tracing::instrument(skip_all)]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<RegisterIn>,
) -> Result<HttpResponse, ApiError> {
    let email = validate::email("email", &body.email)?;
    validate::password("password", &body.password, true)?;
    let language = validate::language(body.language.as_deref());
    state
        .rate_limits
        .check(client_ip(&req), Some(&format!("user:{email}")))?;
    // The work (hashing, writing) happens after the answer: its duration
    // cannot tell an existing address from a new one.
    let state = state.into_inner();
    let password_text = SecretString::from(body.password.clone());
    let referral_code = body.referral_code.clone().filter(|c| c.len() <= 64);
    tokio::spawn(async move {
        if let Err(e) =
            register_account(&state, email, password_text, language, referral_code).await
        {
            tracing::warn!(error = %e, "e-mail registration failed");
        }
    });
    Ok(HttpResponse::Accepted().json(StatusOut {
        status: "verification_sent",
    }))
}

async fn register_account(
    state: &AppState,
    email: String,
    password_text: SecretString,
    language: String,
    referral_code: Option<String>,
) -> Result<(), ApiError> {
    let hash = password::hash(password_text).await?;
    let mailing = Mailing {
        links: links(state),
        verification_ttl: state.config.auth.email_verification_ttl,
        language,
    };
    let registration = RegisterByEmail::new(email, hash, referral_code, mailing);
    let done = state.commands.run(registration, Actor::system()).await?;
    if let Some(id) = done.output {
        tracing::info!(user = %id, "user registered by e-mail");
    }
    state.mail_wake.notify_one();
    Ok(())
}

fn invalid_link() -> ApiError {
    Problem::new(StatusCode::BAD_REQUEST, "invalid_link", "Invalid link")
        .detail("the link is invalid, used or expired")
        .into()
}

/// The problem a refused e-mail link is answered with.
fn link_refused(e: CommandError<AccountError>) -> ApiError {
    match e {
        CommandError::Domain(AccountError::InvalidLink) => invalid_link(),
        other => other.into(),
    }
}

async fn verify(state: &AppState, token: &str) -> Result<HttpResponse, ApiError> {
    let token = validate::text("token", token, 200)?;
    let verify = VerifyEmail::new(token);
    let done = state
        .commands
        .run(verify, Actor::system())
        .await
        .map_err(link_refused)?;
    tracing::info!(user = %done.output, "e-mail verified");
    Ok(HttpResponse::Ok().json(StatusOut { status: "verified" }))
}

/// Verifies the e-mail address with the token from the link.
#[utoipa::path(tag = "cabinet-auth", request_body = TokenIn, responses((status = 200, body = StatusOut), (status = 400, description = "invalid, used or expired link")))]
#[post("/email/verify")]
#[tracing::instrument(skip_all)]
pub async fn verify_email(
    state: web::Data<AppState>,
    body: web::Json<TokenIn>,
) -> Result<HttpResponse, ApiError> {
    verify(&state, &body.token).await
}

/// The pages the e-mailed links open (when no cabinet front end is
/// configured). Opening one changes nothing: a mail scanner that fetches
/// the link cannot verify an address or use a reset token.
fn page(state: &AppState, name: &str, token: Option<&str>) -> Result<HttpResponse, ApiError> {
    crate::pages::html(
        state,
        name,
        &json!({"token": token.unwrap_or_default(), "api": "/api/v1/cabinet/auth"}),
        crate::pages::Framing::Nobody,
    )
}

/// The page behind the verification link: a button that confirms.
#[utoipa::path(tag = "cabinet-auth", params(TokenIn), responses((status = 200, content_type = "text/html", description = "a page that posts to /email/verify")))]
#[get("/email/verify")]
#[tracing::instrument(skip_all)]
pub async fn verify_email_page(
    state: web::Data<AppState>,
    query: web::Query<TokenIn>,
) -> Result<HttpResponse, ApiError> {
    page(
        &state,
        "verify_email",
        Some(&validate::text("token", &query.token, 200)?),
    )
}

/// The page behind the reset link: a form for the new password.
#[utoipa::path(tag = "cabinet-auth", params(TokenIn), responses((status = 200, content_type = "text/html", description = "a page that posts to /email/reset")))]
#[get("/email/reset")]
#[tracing::instrument(skip_all)]
pub async fn reset_password_page(
    state: web::Data<AppState>,
    query: web::Query<TokenIn>,
) -> Result<HttpResponse, ApiError> {
    page(
        &state,
        "reset_password",
        Some(&validate::text("token", &query.token, 200)?),
    )
}

/// A page to ask for a reset link.
#[utoipa::path(tag = "cabinet-auth", responses((status = 200, content_type = "text/html", description = "a page that posts to /email/forgot")))]
#[get("/email/forgot")]
#[tracing::instrument(skip_all)]
pub async fn forgot_password_page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    page(&state, "forgot_password", None)
}

/// Signs in with e-mail and password (the address must be verified).
#[utoipa::path(
    tag = "cabinet-auth",
    request_body = EmailLoginIn,
    responses((status = 200, body = TokensOut), (status = 401), (status = 403, description = "e-mail not verified, or blocked"), (status = 429))
)]
#[post("/email/login")]
#[tracing::instrument(skip_all)]
pub async fn email_login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<EmailLoginIn>,
) -> Result<HttpResponse, ApiError> {
    let email = validate::email("email", &body.email)?;
    validate::password("password", &body.password, false)?;
    state
        .rate_limits
        .check(client_ip(&req), Some(&format!("user:{email}")))?;
    let conn = state.db.conn();
    let account = find_by_email(conn, &email).await?;
    let stored = match &account {
        Some(u) => user_credential::Entity::find_by_id(u.id)
            .one(conn)
            .await?
            .map(|c| c.password_hash),
        None => None,
    };
    let matches = password::verify(SecretString::from(body.password.clone()), stored).await?;
    let Some(account) = account.filter(|_| matches) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "Invalid credentials",
        )
        .detail("wrong e-mail or password")
        .into());
    };
    if account.status == "blocked" {
        return Err(Problem::forbidden("this account is blocked").into());
    }
    if !account.email_verified {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "email_not_verified",
            "E-mail not verified",
        )
        .detail("open the link we e-mailed you first")
        .into());
    }
    let txn = state.db.begin_write().await?;
    let tokens = sessions::start(
        &*txn,
        &state.jwt,
        state.config.auth.refresh_token_ttl,
        Audience::Cabinet,
        account.id,
    )
    .await?;
    txn.commit().await?;
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Sends a password reset link if the address has an account. Always
/// answers 202 at once, whatever the address.
#[utoipa::path(tag = "cabinet-auth", request_body = ForgotIn, responses((status = 202, body = StatusOut), (status = 422), (status = 429)))]
#[post("/email/forgot")]
#[tracing::instrument(skip_all)]
pub async fn forgot_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ForgotIn>,
) -> Result<HttpResponse, ApiError> {
    let email = validate::email("email", &body.email)?;
    let language = validate::language(body.language.as_deref());
    state
        .rate_limits
        .check(client_ip(&req), Some(&format!("user:{email}")))?;
    // The work happens after the answer, so its duration reveals nothing.
    let state = state.into_inner();
    tokio::spawn(async move {
        if let Err(e) = send_reset(&state, &email, &language).await {
            tracing::warn!(error = %e, "password reset e-mail not queued");
        }
    });
    Ok(HttpResponse::Accepted().json(StatusOut {
        status: "reset_sent_if_registered",
    }))
}

async fn send_reset(state: &AppState, email: &str, language: &str) -> Result<(), ApiError> {
    let txn = state.db.begin_write().await?;
    let Some(account) = find_by_email(&*txn, email).await? else {
        return Ok(());
    };
    if user_credential::Entity::find_by_id(account.id)
        .one(&*txn)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let token = new_email_token(
        &*txn,
        account.id,
        "reset",
        state.config.auth.password_reset_ttl,
        None,
    )
    .await?;
    let link = links(state).to(Page::Reset, Some(&token));
    outbox::enqueue(
        &*txn,
        email,
        "reset_password",
        language,
        json!({"link": link}),
    )
    .await?;
    txn.commit().await?;
    state.mail_wake.notify_one();
    Ok(())
}

/// Sets a new password with the token from the reset e-mail; every session
/// of the account ends.
#[utoipa::path(tag = "cabinet-auth", request_body = ResetIn, responses((status = 200, body = StatusOut), (status = 400), (status = 422)))]
#[post("/email/reset")]
#[tracing::instrument(skip_all)]
pub async fn reset_password(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<ResetIn>,
) -> Result<HttpResponse, ApiError> {
    validate::password("new_password", &body.new_password, true)?;
    let token = validate::text("token", &body.token, 200)?;
    state.rate_limits.check(client_ip(&req), None)?;
    // A cheap look before the expensive hash: junk tokens cost a read.
    let now = Utc::now();
    email_token::Entity::find_by_id(token_hash(&token))
        .one(state.db.conn())
        .await?
        .filter(|t| t.purpose == "reset" && t.used_at.is_none() && t.expires_at > now)
        .ok_or_else(invalid_link)?;
    let hash = password::hash(SecretString::from(body.new_password.clone())).await?;
    let reset = ResetPassword::new(token, hash);
    let user = state
        .commands
        .run(reset, Actor::system())
        .await
        .map_err(link_refused)?
        .output;
    tracing::info!(user = %user, "password reset; sessions revoked");
    Ok(HttpResponse::Ok().json(StatusOut {
        status: "password_reset",
    }))
}

/// Exchanges a cabinet refresh token for a new pair (single use; reuse
/// revokes the session).
#[utoipa::path(tag = "cabinet-auth", request_body = RefreshIn, responses((status = 200, body = TokensOut), (status = 401)))]
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
        Audience::Cabinet,
        &SecretString::from(token),
        async |txn, principal| {
            let account = user::Entity::find_by_id(principal).one(txn).await?;
            Ok(account.is_some_and(|u| u.status != "blocked"))
        },
    )
    .await?;
    Ok(crate::auth::no_store(HttpResponse::Ok().json(tokens)))
}

/// Ends the current cabinet session.
#[utoipa::path(tag = "cabinet-auth", responses((status = 204), (status = 401)), security(("bearer" = [])))]
#[post("/logout")]
#[tracing::instrument(skip_all)]
pub async fn logout(
    state: web::Data<AppState>,
    caller: CabinetUser,
) -> Result<HttpResponse, ApiError> {
    let txn = state.db.begin_write().await?;
    sessions::revoke(&*txn, caller.session, "logout").await?;
    txn.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
