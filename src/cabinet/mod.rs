//! The cabinet API for end users: `/api/v1/cabinet/…` (cabinet JWT).

pub mod accounts;
pub mod auth;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::CabinetUser,
    db::entities::user,
    error::{ApiError, Problem},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/cabinet")
            .configure(auth::configure)
            .configure(crate::tickets::cabinet_routes::configure)
            .configure(crate::ledger::routes::configure_cabinet)
            .configure(crate::subscriptions::routes::configure_cabinet)
            .configure(crate::referrals::configure_cabinet)
            .configure(crate::telegram::stars::configure)
            .configure(crate::realtime::configure_cabinet)
            .service(me),
    );
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    pub id: Uuid,
    pub telegram_id: Option<i64>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub language_code: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub status: String,
    /// The code this user shares to refer others.
    pub referral_code: Option<String>,
    /// The bot can write to this user: their private chat is known and
    /// they have not blocked the bot.
    pub telegram_reachable: bool,
    /// The user blocked the bot.
    pub bot_blocked: bool,
    pub created_at: DateTime<Utc>,
}

impl From<user::Model> for UserOut {
    fn from(u: user::Model) -> Self {
        Self {
            id: u.id,
            telegram_id: u.telegram_id,
            username: u.username,
            first_name: u.first_name,
            last_name: u.last_name,
            language_code: u.language_code,
            email: u.email,
            email_verified: u.email_verified,
            status: u.status,
            referral_code: u.referral_code,
            telegram_reachable: u.telegram_chat_id.is_some() && !u.bot_blocked,
            bot_blocked: u.bot_blocked,
            created_at: u.created_at,
        }
    }
}

/// The signed-in user's profile.
#[utoipa::path(tag = "cabinet", responses((status = 200, body = UserOut), (status = 401)), security(("bearer" = [])))]
#[get("/me")]
#[tracing::instrument(skip_all)]
pub async fn me(state: web::Data<AppState>, caller: CabinetUser) -> Result<HttpResponse, ApiError> {
    let user = user::Entity::find_by_id(caller.id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such user"))?;
    Ok(HttpResponse::Ok().json(UserOut::from(user)))
}
