//! Admin accounts: created by owners (or by `switchboard admin create`).

use actix_web::{HttpResponse, get, http::StatusCode, patch, post, web};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission, Role, password, sessions, tokens::Audience},
    db::{Db, entities::admin},
    error::{ApiError, Problem},
    ids::AdminId,
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create_route).service(update);
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

/// What changes about an admin account (fields left out stay as they are).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminPatch {
    /// `owner`, `admin`, `operator` or `viewer`.
    pub role: Option<String>,
    /// A disabled admin's sessions end at once and no API key they created
    /// works; their live feeds close at their next check (within 25 s).
    pub disabled: Option<bool>,
}

/// Changes an admin's role, or disables (or enables) the account (owners
/// only). There is always an active owner: the last one cannot be demoted
/// or disabled (409 `last_owner`).
#[utoipa::path(
    tag = "admins",
    params(("id" = Uuid, Path)),
    request_body = AdminPatch,
    responses((status = 200, body = AdminOut), (status = 401), (status = 403), (status = 404), (status = 409, description = "it would leave no active owner"), (status = 422)),
    security(("bearer" = []))
)]
#[patch("/admins/{id}")]
#[tracing::instrument(skip_all, fields(admin = %id))]
pub async fn update(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<AdminId>,
    body: web::Json<AdminPatch>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    caller.require(Permission::AdminsManage)?;
    let role: Option<Role> = body
        .role
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| Problem::invalid_field("role", e))?;
    let txn = state.db.begin_write().await?;
    let result = async {
        // On PostgreSQL the owners' rows are locked, so two owners demoting
        // each other at once cannot both pass the check (SQLite writes one
        // at a time anyway).
        let owners = admin::Entity::find()
            .filter(admin::Column::Role.eq(Role::Owner.as_str()))
            .filter(admin::Column::Disabled.eq(false));
        let owners = match state.db.backend() {
            crate::db::Backend::Postgres => sea_orm::QuerySelect::lock_exclusive(owners),
            crate::db::Backend::Sqlite => owners,
        };
        let active_owners = owners.all(&*txn).await?;
        let row = admin::Entity::find_by_id(id.as_uuid())
            .one(&*txn)
            .await?
            .ok_or_else(|| Problem::not_found().detail("no such admin"))?;
        let was_owner = row.role == Role::Owner.as_str() && !row.disabled;
        let new_role = role.map_or(row.role.clone(), |r| r.as_str().to_owned());
        let disabled = body.disabled.unwrap_or(row.disabled);
        let stays_owner = new_role == Role::Owner.as_str() && !disabled;
        if was_owner && !stays_owner && active_owners.len() <= 1 {
            return Err(
                Problem::new(StatusCode::CONFLICT, "last_owner", "Last owner")
                    .detail("this is the only active owner: make another admin an owner first")
                    .into(),
            );
        }
        let newly_disabled = disabled && !row.disabled;
        let mut active: admin::ActiveModel = row.into();
        active.role = Set(new_role);
        active.disabled = Set(disabled);
        let updated = active.update(&*txn).await?;
        if newly_disabled {
            sessions::revoke_all(&*txn, Audience::Admin, updated.id, "admin disabled").await?;
        }
        Ok::<_, ApiError>(updated)
    }
    .await;
    match result {
        Ok(updated) => {
            txn.commit().await?;
            tracing::info!(role = %updated.role, disabled = updated.disabled, "admin account changed");
            Ok(HttpResponse::Ok().json(AdminOut::from(updated)))
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}
