//! Managing API keys (signed-in admins with `api_keys:manage`).

use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission, api_keys},
    db::entities::api_key,
    error::{ApiError, Problem},
    ids::ApiKeyId,
    validate,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(create).service(revoke);
}

#[derive(Deserialize, ToSchema)]
pub struct ApiKeyIn {
    pub name: String,
    /// e.g. `["events:read", "webhooks:manage"]`
    pub scopes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyOut {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyCreatedOut {
    #[serde(flatten)]
    pub key: ApiKeyOut,
    /// The key itself. Shown this once; only its hash is kept.
    pub secret: String,
}

impl From<api_key::Model> for ApiKeyOut {
    fn from(key: api_key::Model) -> Self {
        let scopes = api_keys::scopes(&key)
            .into_iter()
            .map(|p| p.as_str().to_owned())
            .collect();
        Self {
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// All API keys, newest first (never their secrets).
#[utoipa::path(tag = "api-keys", responses((status = 200, body = Vec<ApiKeyOut>), (status = 401), (status = 403)), security(("bearer" = [])))]
#[get("/api-keys")]
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    caller.require(Permission::ApiKeysManage)?;
    let keys: Vec<ApiKeyOut> = api_keys::list(state.db.conn())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(HttpResponse::Ok().json(keys))
}

/// Creates an API key; the response is the only time its secret is shown.
#[utoipa::path(
    tag = "api-keys",
    request_body = ApiKeyIn,
    responses((status = 201, body = ApiKeyCreatedOut), (status = 401), (status = 403), (status = 422)),
    security(("bearer" = []))
)]
#[post("/api-keys")]
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    body: web::Json<ApiKeyIn>,
) -> Result<HttpResponse, ApiError> {
    let admin = caller.require_admin()?;
    caller.require(Permission::ApiKeysManage)?;
    let name = validate::text("name", &body.name, 100)?;
    if body.scopes.is_empty() || body.scopes.len() > 32 {
        return Err(Problem::invalid_field("scopes", "give between 1 and 32 scopes").into());
    }
    let mut scopes = Vec::new();
    for scope in &body.scopes {
        let permission: Permission = scope
            .parse()
            .map_err(|e: String| Problem::invalid_field("scopes", e))?;
        if !permission.grantable_to_api_keys() {
            return Err(Problem::invalid_field(
                "scopes",
                format!("`{permission}` cannot be given to an API key"),
            )
            .into());
        }
        // Nobody hands out more than they have.
        caller.require(permission)?;
        if !scopes.contains(&permission) {
            scopes.push(permission);
        }
    }
    let txn = state.db.begin_write().await?;
    let (key, secret) = api_keys::create(&*txn, &name, &scopes, admin).await?;
    txn.commit().await?;
    tracing::info!(api_key = %key.id, "API key created");
    Ok(crate::auth::no_store(HttpResponse::Created().json(
        ApiKeyCreatedOut {
            key: key.into(),
            secret: secret.expose_secret().to_owned(),
        },
    )))
}

/// Revokes an API key at once.
#[utoipa::path(
    tag = "api-keys",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = []))
)]
#[delete("/api-keys/{id}")]
#[tracing::instrument(skip_all)]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    id: web::Path<ApiKeyId>,
) -> Result<HttpResponse, ApiError> {
    caller.require_admin()?;
    caller.require(Permission::ApiKeysManage)?;
    let txn = state.db.begin_write().await?;
    let revoked = api_keys::revoke(&*txn, *id).await?;
    txn.commit().await?;
    if revoked {
        tracing::info!(api_key = %id, "API key revoked");
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(Problem::not_found().detail("no such live API key").into())
    }
}
