//! Admin accounts: created by owners (or by `switchboard admin create`).

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, Set};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission, Role, password},
    db::{Db, entities::admin},
    error::{ApiError, Problem},
    ids::AdminId,
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create_route);
}

#[derive(Deserialize, ToSchema)]
pub struct AdminIn {
    pub email: String,
    pub password: String,
    /// `owner`, `admin`, `operator` or `viewer`.
    pub role: String,
}

#[derive(Serialize, ToSchema)]
pub struct AdminOut {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<admin::Model> for AdminOut {
    fn from(a: admin::Model) -> Self {
        Self {
            id: a.id,
            email: a.email,
            role: a.role,
            disabled: a.disabled,
            created_at: a.created_at,
        }
    }
}

/// Creates an admin account (validated e-mail, strong password). The hash
/// is computed before the write transaction opens, so other writers never
/// wait on it.
pub async fn create(
    db: &Db,
    email: &str,
    password_text: &str,
    role: Role,
) -> Result<admin::Model, ApiError> {
    let email = validate::email("email", email)?;
    validate::password("password", password_text, true)?;
    let hash = password::hash(SecretString::from(password_text.to_owned())).await?;
    let now = Utc::now();
    let txn = db.begin_write().await?;
    let model = admin::ActiveModel {
        id: Set(AdminId::new().as_uuid()),
        email: Set(email),
        password_hash: Set(hash),
        role: Set(role.as_str().to_owned()),
        disabled: Set(false),
        created_at: Set(now),
        password_changed_at: Set(now),
    }
    .insert(&*txn)
    .await?;
    txn.commit().await?;
    Ok(model)
}

/// All admin accounts.
#[utoipa::path(tag = "admins", responses((status = 200, body = Vec<AdminOut>), (status = 401), (status = 403)), security(("bearer" = [])))]
#[get("/admins")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::AdminsManage)?;
    let admins: Vec<AdminOut> = admin::Entity::find()
        .order_by_asc(admin::Column::CreatedAt)
        .all(state.db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(admins))
}

/// Creates an admin account (owners only).
#[utoipa::path(
    tag = "admins",
    request_body = AdminIn,
    responses((status = 201, body = AdminOut), (status = 401), (status = 403), (status = 409, description = "the e-mail is taken"), (status = 422)),
    security(("bearer" = []))
)]
#[post("/admins")]
#[tracing::instrument(skip_all)]
pub async fn create_route(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<AdminIn>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    caller.require(Permission::AdminsManage)?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| Problem::invalid_field("role", e))?;
    let created = create(&state.db, &body.email, &body.password, role).await?;
    tracing::info!(admin = %created.id, role = role.as_str(), "admin account created");
    Ok(HttpResponse::Created().json(AdminOut::from(created)))
}
