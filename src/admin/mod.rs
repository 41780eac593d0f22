//! The admin API: `/api/v1/admin/…` (admin JWT or API key with scopes).

pub mod accounts;
pub mod api_keys;
pub mod events;
pub mod stats;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{CurrentAdmin, Permission, extractors::AdminPrincipal},
    error::ApiError,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1/admin")
            .service(me)
            .configure(api_keys::configure)
            .configure(accounts::configure)
            .configure(events::configure)
            .configure(stats::configure)
            .configure(crate::settings::routes::configure)
            .configure(crate::tickets::admin_routes::configure)
            .configure(crate::ledger::routes::configure_admin)
            .configure(crate::users::admin_routes::configure)
            .configure(crate::subscriptions::routes::configure_admin)
            .configure(crate::webhooks::configure)
            .configure(crate::telegram::routes::configure_admin)
            .configure(crate::broadcasts::routes::configure_admin),
    );
}

/// Who is calling: an admin (with role) or an API key (with scopes).
#[derive(Serialize, ToSchema)]
pub struct MeOut {
    /// `admin` or `api_key`.
    pub kind: &'static str,
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<Permission>,
}

/// The caller's identity and permissions.
#[utoipa::path(tag = "admin", responses((status = 200, body = MeOut), (status = 401)), security(("bearer" = []), ("api_key" = [])))]
#[get("/me")]
#[tracing::instrument(skip_all)]
pub async fn me(caller: CurrentAdmin) -> Result<HttpResponse, ApiError> {
    let out = match &caller.principal {
        AdminPrincipal::Admin {
            id, email, role, ..
        } => MeOut {
            kind: "admin",
            id: id.as_uuid(),
            email: Some(email.clone()),
            role: Some(role.as_str().to_owned()),
            name: None,
            permissions: caller.permissions.clone(),
        },
        AdminPrincipal::ApiKey { id, name } => MeOut {
            kind: "api_key",
            id: id.as_uuid(),
            email: None,
            role: None,
            name: Some(name.clone()),
            permissions: caller.permissions.clone(),
        },
    };
    Ok(HttpResponse::Ok().json(out))
}
