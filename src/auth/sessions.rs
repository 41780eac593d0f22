//! Login sessions: a short JWT access token plus a refresh token that
//! rotates on every use and is stored only as a hash. Presenting a refresh
//! token that was already rotated revokes the whole session (someone holds
//! a copy). Logout revokes the session; a password change or reset revokes
//! every session of the account.

use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, JoinType, QueryFilter,
    QuerySelect, RelationDef, Set, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::tokens::{Audience, JwtKeys, random_token, token_hash};
use crate::{
    db::entities::{refresh_token, session},
    error::{ApiError, Problem},
    ids::SessionId,
};

/// Refresh tokens start with this, to be recognisable in a leak scan.
const REFRESH_PREFIX: &str = "sbr_";

/// What a successful login or refresh returns. (No `Debug`: it holds secrets.)
#[derive(Serialize, ToSchema)]
pub struct TokensOut {
    /// JWT for `Authorization: Bearer …`.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Exchange at `…/auth/refresh` for a new pair; single use.
    pub refresh_token: String,
    pub token_type: &'static str,
}

impl Audience {
    fn kind(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Cabinet => "user",
        }
    }
}

pub fn invalid_token() -> ApiError {
    Problem::new(StatusCode::UNAUTHORIZED, "invalid_token", "Invalid token")
        .detail("the token is invalid, expired or revoked; log in again")
        .into()
}

/// Starts a session for `principal` and returns its first tokens.
pub async fn start(
    conn: &impl ConnectionTrait,
    keys: &JwtKeys,
    refresh_ttl: Duration,
    audience: Audience,
    principal: Uuid,
) -> Result<TokensOut, ApiError> {
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(refresh_ttl).unwrap_or_default();
    let id = SessionId::new();
    session::ActiveModel {
        id: Set(id.as_uuid()),
        principal_kind: Set(audience.kind().to_owned()),
        principal_id: Set(principal),
        created_at: Set(now),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        revoked_reason: Set(None),
    }
    .insert(conn)
    .await?;
    issue(conn, keys, audience, principal, id, expires_at).await
}

async fn issue(
    conn: &impl ConnectionTrait,
    keys: &JwtKeys,
    audience: Audience,
    principal: Uuid,
    session: SessionId,
    expires_at: chrono::DateTime<Utc>,
) -> Result<TokensOut, ApiError> {
    let refresh = random_token(REFRESH_PREFIX);
    refresh_token::ActiveModel {
        token_hash: Set(token_hash(refresh.expose_secret())),
        session_id: Set(session.as_uuid()),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        rotated_at: Set(None),
    }
    .insert(conn)
    .await?;
    let access_token = keys
        .issue(audience, principal, session)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("signing a JWT")))?;
    Ok(TokensOut {
        access_token,
        expires_in: keys.ttl().as_secs(),
        refresh_token: refresh.expose_secret().to_owned(),
        token_type: "Bearer",
    })
}

/// What presenting a refresh token led to.
pub enum Refreshed {
    /// A new pair, and whose it is (the caller checks the account is still
    /// allowed in).
    Tokens(Uuid, TokensOut),
    /// The token had been used already: the session is now revoked. The
    /// caller must commit (so the revocation sticks) and answer 401.
    Reused,
}

/// Exchanges a refresh token for a new pair.
pub async fn refresh(
    conn: &impl ConnectionTrait,
    keys: &JwtKeys,
    refresh_ttl: Duration,
    audience: Audience,
    presented: &SecretString,
) -> Result<Refreshed, ApiError> {
    let hash = token_hash(presented.expose_secret());
    let Some(token) = refresh_token::Entity::find_by_id(hash.clone())
        .one(conn)
        .await?
    else {
        return Err(invalid_token());
    };
    let Some(session) = session::Entity::find_by_id(token.session_id)
        .one(conn)
        .await?
    else {
        return Err(invalid_token());
    };
    let now = Utc::now();
    if session.principal_kind != audience.kind()
        || session.revoked_at.is_some()
        || token.expires_at <= now
    {
        return Err(invalid_token());
    }
    // Exactly one caller can rotate a given token.
    let rotated = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .filter(refresh_token::Column::TokenHash.eq(hash))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(conn)
        .await?;
    if rotated.rows_affected == 0 {
        let id = SessionId::from_uuid(session.id);
        revoke(conn, id, "refresh token reused").await?;
        tracing::warn!(session = %id, "a rotated refresh token was presented again; session revoked");
        return Ok(Refreshed::Reused);
    }
    let expires_at = now + chrono::Duration::from_std(refresh_ttl).unwrap_or_default();
    session::Entity::update_many()
        .col_expr(session::Column::ExpiresAt, Expr::value(expires_at))
        .filter(session::Column::Id.eq(session.id))
        .exec(conn)
        .await?;
    let tokens = issue(
        conn,
        keys,
        audience,
        session.principal_id,
        SessionId::from_uuid(session.id),
        expires_at,
    )
    .await?;
    Ok(Refreshed::Tokens(session.principal_id, tokens))
}

/// Ends one session: its access and refresh tokens stop working.
pub async fn revoke(
    conn: &impl ConnectionTrait,
    id: SessionId,
    reason: &str,
) -> Result<(), ApiError> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::Id.eq(id.as_uuid()))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Ends every session of an account.
pub async fn revoke_all(
    conn: &impl ConnectionTrait,
    audience: Audience,
    principal: Uuid,
    reason: &str,
) -> Result<(), DbErr> {
    session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(Utc::now()))
        .col_expr(session::Column::RevokedReason, Expr::value(reason))
        .filter(session::Column::PrincipalKind.eq(audience.kind()))
        .filter(session::Column::PrincipalId.eq(principal))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Whether a session is still live (checked on every request, so logout and
/// password changes take effect at once, not when the JWT expires).
fn is_live(session: &session::Model) -> bool {
    session.revoked_at.is_none() && session.expires_at > Utc::now()
}

/// The account row of `principal` (an entity keyed by its id) if `id` is a
/// live session of it: one query for both checks every request makes.
pub async fn live_account<E: EntityTrait + Default>(
    conn: &impl ConnectionTrait,
    audience: Audience,
    id: SessionId,
    account_id: E::Column,
    principal: Uuid,
) -> Result<Option<E::Model>, ApiError> {
    let to_account: RelationDef = session::Entity::belongs_to(E::default())
        .from(session::Column::PrincipalId)
        .to(account_id)
        .into();
    let found = E::find()
        .join_rev(JoinType::InnerJoin, to_account)
        .filter(account_id.eq(principal))
        .filter(session::Column::Id.eq(id.as_uuid()))
        .filter(session::Column::PrincipalKind.eq(audience.kind()))
        .select_also(session::Entity)
        .one(conn)
        .await?;
    Ok(found.and_then(|(account, session)| session.filter(is_live).map(|_| account)))
}
