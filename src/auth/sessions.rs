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
    let refresh = random_token(REFRESH_PREFIX);
    issue(conn, keys, audience, principal, id, expires_at, refresh).await
}

async fn issue(
    conn: &impl ConnectionTrait,
    keys: &JwtKeys,
    audience: Audience,
    principal: Uuid,
    session: SessionId,
    expires_at: chrono::DateTime<Utc>,
    refresh: SecretString,
) -> Result<TokensOut, ApiError> {
    refresh_token::ActiveModel {
        token_hash: Set(token_hash(refresh.expose_secret())),
        session_id: Set(session.as_uuid()),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        rotated_at: Set(None),
        successor: Set(None),
    }
    .insert(conn)
    .await?;
    tokens(keys, audience, principal, session, refresh)
}

/// An access token for the session, with `refresh`.
fn tokens(
    keys: &JwtKeys,
    audience: Audience,
    principal: Uuid,
    session: SessionId,
    refresh: SecretString,
) -> Result<TokensOut, ApiError> {
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

/// How refresh tokens rotate.
pub struct Rotation<'a> {
    /// How long a session lasts after its last refresh.
    pub ttl: Duration,
    /// A rotated token presented again within this long answers with its
    /// successor; later, it ends the session.
    pub reuse_interval: Duration,
    /// Seals the successor kept with a rotated token.
    pub sealer: &'a crate::webhooks::signing::SecretBox,
}

/// Exchanges a refresh token for a new pair.
pub async fn refresh(
    conn: &impl ConnectionTrait,
    keys: &JwtKeys,
    rotation: Rotation<'_>,
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
    let id = SessionId::from_uuid(session.id);
    let next = random_token(REFRESH_PREFIX);
    // Exactly one caller can rotate a given token.
    let rotated = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RotatedAt, Expr::value(now))
        .col_expr(
            refresh_token::Column::Successor,
            Expr::value(rotation.sealer.seal(&next)),
        )
        .filter(refresh_token::Column::TokenHash.eq(hash.clone()))
        .filter(refresh_token::Column::RotatedAt.is_null())
        .exec(conn)
        .await?;
    if rotated.rows_affected == 0 {
        // Rotated already: as read now (the rotation may have just
        // committed while this request waited for the row).
        let rotated = refresh_token::Entity::find_by_id(hash).one(conn).await?;
        let successor = rotated.as_ref().and_then(|t| {
            let at = t.rotated_at?;
            let recent = now.signed_duration_since(at)
                <= chrono::Duration::from_std(rotation.reuse_interval).unwrap_or_default();
            recent.then_some(t.successor.as_deref()?)
        });
        if let Some(successor) = successor.and_then(|s| rotation.sealer.open(s).ok()) {
            // Two tabs refreshing at once: the second gets the same new
            // refresh token (with an access token of its own).
            let tokens = tokens(keys, audience, session.principal_id, id, successor)?;
            return Ok(Refreshed::Tokens(session.principal_id, tokens));
        }
        revoke(conn, id, "refresh token reused").await?;
        tracing::warn!(session = %id, "a rotated refresh token was presented again; session revoked");
        return Ok(Refreshed::Reused);
    }
    let expires_at = now + chrono::Duration::from_std(rotation.ttl).unwrap_or_default();
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
        id,
        expires_at,
        next,
    )
    .await?;
    Ok(Refreshed::Tokens(session.principal_id, tokens))
}

/// [`refresh`] in a transaction of its own: the new pair, if the account
/// may still sign in (`allowed`), else 401. A reuse that ended the session
/// is committed, so the revocation sticks; anything else that fails rolls
/// back.
pub async fn refresh_session(
    db: &crate::db::Db,
    keys: &JwtKeys,
    rotation: Rotation<'_>,
    audience: Audience,
    presented: &SecretString,
    allowed: impl AsyncFnOnce(&sea_orm::DatabaseTransaction, Uuid) -> Result<bool, DbErr>,
) -> Result<TokensOut, ApiError> {
    let txn = db.begin_write().await?;
    let outcome = async {
        match refresh(&*txn, keys, rotation, audience, presented).await? {
            Refreshed::Reused => Ok(None),
            Refreshed::Tokens(principal, tokens) if allowed(&txn, principal).await? => {
                Ok(Some(tokens))
            }
            Refreshed::Tokens(..) => Err(invalid_token()),
        }
    }
    .await;
    match outcome {
        Ok(Some(tokens)) => {
            txn.commit().await?;
            Ok(tokens)
        }
        Ok(None) => {
            txn.commit().await?;
            Err(invalid_token())
        }
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
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
