//! Authentication as extractor arguments: a handler that takes a
//! [`CurrentAdmin`] or a [`CabinetUser`] only runs for an authenticated
//! caller. Every request re-checks the session, so logout, password changes
//! and disabled accounts take effect at once.

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use futures::future::LocalBoxFuture;

use super::{
    api_keys,
    permissions::{Permission, Role},
    sessions::{self, invalid_token},
    tokens::Audience,
};
use crate::{
    app::AppState,
    db::entities::admin,
    error::{ApiError, Problem},
    events::{Actor, ActorKind},
    ids::{AdminId, ApiKeyId, SessionId, UserId},
};

/// An operator or machine client of the admin API.
#[derive(Debug, Clone)]
pub struct CurrentAdmin {
    pub principal: AdminPrincipal,
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone)]
pub enum AdminPrincipal {
    Admin {
        id: AdminId,
        email: String,
        role: Role,
        session: SessionId,
    },
    ApiKey {
        id: ApiKeyId,
        name: String,
    },
}

impl CurrentAdmin {
    /// 403 unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&permission) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this needs the `{permission}` permission")).into())
        }
    }

    /// 403 unless the caller is a signed-in admin (not an API key).
    pub fn require_admin(&self) -> Result<AdminId, ApiError> {
        match &self.principal {
            AdminPrincipal::Admin { id, .. } => Ok(*id),
            AdminPrincipal::ApiKey { .. } => {
                Err(Problem::forbidden("API keys cannot do this; sign in as an admin").into())
            }
        }
    }

    pub fn actor(&self) -> Actor {
        match &self.principal {
            AdminPrincipal::Admin { id, .. } => Actor::new(ActorKind::Admin, id),
            AdminPrincipal::ApiKey { id, .. } => Actor::new(ActorKind::ApiKey, id),
        }
    }
}

/// A signed-in cabinet user.
#[derive(Debug, Clone, Copy)]
pub struct CabinetUser {
    pub id: UserId,
    pub session: SessionId,
}

impl CabinetUser {
    pub fn actor(&self) -> Actor {
        Actor::new(ActorKind::User, self.id)
    }
}

/// The credential a request carries: `Authorization: Bearer …` or
/// `X-API-Key: …`.
pub fn credential(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
            .filter(|t| !t.is_empty());
    }
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn missing() -> ApiError {
    Problem::unauthorized("send `Authorization: Bearer <token>` (or `X-API-Key` for API keys)")
        .into()
}

/// Authenticates an admin JWT or an API key.
pub async fn authenticate_admin(
    state: &AppState,
    credential: &str,
) -> Result<CurrentAdmin, ApiError> {
    let conn = state.db.conn();
    if credential.starts_with(api_keys::PREFIX) {
        let Some((key, scopes)) = api_keys::authenticate(&state.db, credential).await? else {
            return Err(invalid_token());
        };
        return Ok(CurrentAdmin {
            principal: AdminPrincipal::ApiKey {
                id: ApiKeyId::from_uuid(key.id),
                name: key.name,
            },
            permissions: scopes,
        });
    }
    let claims = state
        .jwt
        .verify(credential, Audience::Admin)
        .ok_or_else(invalid_token)?;
    let account = sessions::live_account::<admin::Entity>(
        conn,
        Audience::Admin,
        claims.session(),
        admin::Column::Id,
        claims.sub,
    )
    .await?
    .ok_or_else(invalid_token)?;
    if account.disabled {
        return Err(Problem::forbidden("this admin account is disabled").into());
    }
    let role: Role = account
        .role
        .parse()
        .map_err(|e: String| ApiError::Internal(anyhow::anyhow!(e)))?;
    Ok(CurrentAdmin {
        principal: AdminPrincipal::Admin {
            id: AdminId::from_uuid(account.id),
            email: account.email,
            role,
            session: claims.session(),
        },
        permissions: role.permissions(),
    })
}

/// Authenticates a cabinet JWT.
pub async fn authenticate_user(
    state: &AppState,
    credential: &str,
) -> Result<CabinetUser, ApiError> {
    let claims = state
        .jwt
        .verify(credential, Audience::Cabinet)
        .ok_or_else(invalid_token)?;
    let account = state
        .session_checks
        .user(claims.session(), claims.sub)
        .await?
        .ok_or_else(invalid_token)?;
    if account.status == "blocked" {
        return Err(Problem::forbidden("this account is blocked").into());
    }
    Ok(CabinetUser {
        id: UserId::from_uuid(account.id),
        session: claims.session(),
    })
}

fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state is not mounted")))
}

impl FromRequest for CurrentAdmin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let credential = credential(req);
        Box::pin(async move {
            let state = state?;
            let credential = credential.ok_or_else(missing)?;
            authenticate_admin(&state, &credential).await
        })
    }
}

impl FromRequest for CabinetUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = state(req);
        let credential = credential(req);
        Box::pin(async move {
            let state = state?;
            let credential = credential.ok_or_else(missing)?;
            authenticate_user(&state, &credential).await
        })
    }
}
