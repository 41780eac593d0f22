//! `/api/v1/admin/settings/{key}`: integration settings, for signed-in
//! owners and admins (`settings:manage`, which no API key carries).
//! Secrets are write-only: shown masked, kept when a change leaves them
//! out, cleared by `null`.

use actix_web::{HttpResponse, get, put, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Entry, Helpdesk, KNOWN, Setting, body,
    helpdesk::{HelpdeskIn, HelpdeskOut},
};
use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission, no_store},
    error::{ApiError, Problem},
    ids::AdminId,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(view).service(replace);
}

/// A setting, with when and by whom it was last changed.
#[derive(Serialize, ToSchema)]
pub struct SettingOut {
    #[schema(example = "helpdesk")]
    pub key: &'static str,
    /// `null` until it is first set.
    pub value: Option<SettingValueOut>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The admin who changed it last; `null` when it came from the
    /// environment.
    pub updated_by: Option<Uuid>,
}

/// A setting's value, its secrets masked; its shape is its key's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SettingValueOut {
    Helpdesk(HelpdeskOut),
}

impl From<Helpdesk> for SettingValueOut {
    fn from(helpdesk: Helpdesk) -> Self {
        Self::Helpdesk(helpdesk.into())
    }
}

fn setting_out<T: Setting + Into<SettingValueOut>>(entry: Option<Entry<T>>) -> SettingOut {
    let (value, updated_at, updated_by) = match entry {
        Some(entry) => (
            Some(entry.value.into()),
            entry.updated_at,
            entry.updated_by.map(|id| id.as_uuid()),
        ),
        None => (None, None, None),
    };
    SettingOut {
        key: T::KEY,
        value,
        updated_at,
        updated_by,
    }
}

/// 403 unless a signed-in owner or admin is calling.
fn authorize(caller: &CurrentAdmin) -> Result<AdminId, ApiError> {
    let admin = caller.require_admin()?;
    caller.require(Permission::SettingsManage)?;
    Ok(admin)
}

/// 404, naming the settings there are.
fn unknown() -> ApiError {
    Problem::not_found()
        .detail(format!(
            "no such setting; the settings are: {}",
            KNOWN.join(", ")
        ))
        .into()
}

/// A setting, its secrets masked (`••••` and their last four characters).
#[utoipa::path(
    tag = "settings",
    params(("key" = String, Path, description = "The setting: `helpdesk`.")),
    responses((status = 200, body = SettingOut), (status = 401), (status = 403), (status = 404)),
    security(("bearer" = []))
)]
#[get("/settings/{key}")]
#[tracing::instrument(skip_all, fields(key = %key))]
pub async fn view(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&caller)?;
    let out = match key.as_str() {
        Helpdesk::KEY => setting_out(state.settings.entry::<Helpdesk>().await?),
        _ => return Err(unknown()),
    };
    Ok(no_store(HttpResponse::Ok().json(out)))
}

/// Replaces a setting with the whole object given; a secret left out keeps
/// the one stored, `null` clears it. Every instance uses the new value at
/// once. Answers as `GET` does.
#[utoipa::path(
    tag = "settings",
    params(("key" = String, Path, description = "The setting: `helpdesk`.")),
    request_body(content = HelpdeskIn, description = "For `helpdesk`."),
    responses((status = 200, body = SettingOut), (status = 401), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = []))
)]
#[put("/settings/{key}")]
#[tracing::instrument(skip_all, fields(key = %key))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    key: web::Path<String>,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let admin = authorize(&caller)?;
    let out = match key.as_str() {
        Helpdesk::KEY => {
            let input: HelpdeskIn = body::object(body.into_inner())?;
            let entry = state
                .settings
                .update(admin, |current| input.apply(current))
                .await?;
            setting_out(Some(entry))
        }
        _ => return Err(unknown()),
    };
    tracing::info!(admin = %admin, "setting changed");
    Ok(no_store(HttpResponse::Ok().json(out)))
}
