//! API keys for machine clients: shown once at creation, stored only as a
//! SHA-256 hash, accepted as `Authorization: Bearer sbk_…` or `X-API-Key`.

use chrono::{Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};

use super::{
    permissions::{Permission, Role},
    tokens::{random_token, token_hash},
};
use crate::{
    db::entities::{admin, api_key},
    error::ApiError,
    ids::{AdminId, ApiKeyId},
};

/// Every key starts with this; the extractor tells keys from JWTs by it.
pub const PREFIX: &str = "sbk_";

pub async fn create(
    conn: &impl ConnectionTrait,
    name: &str,
    scopes: &[Permission],
    created_by: AdminId,
) -> Result<(api_key::Model, SecretString), ApiError> {
    let key = random_token(PREFIX);
    let model = api_key::ActiveModel {
        id: Set(ApiKeyId::new().as_uuid()),
        name: Set(name.to_owned()),
        // Enough to recognise a key in a list, far too little to use it.
        prefix: Set(key.expose_secret().chars().take(PREFIX.len() + 6).collect()),
        key_hash: Set(token_hash(key.expose_secret())),
        scopes: Set(serde_json::to_value(scopes).unwrap_or_default()),
        created_by: Set(created_by.as_uuid()),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok((model, key))
}

pub async fn list(conn: &impl ConnectionTrait) -> Result<Vec<api_key::Model>, ApiError> {
    Ok(api_key::Entity::find()
        .order_by_desc(api_key::Column::CreatedAt)
        .all(conn)
        .await?)
}

/// Revokes a key; false if there is no such live key.
pub async fn revoke(conn: &impl ConnectionTrait, id: ApiKeyId) -> Result<bool, ApiError> {
    let result = api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(api_key::Column::Id.eq(id.as_uuid()))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The live key with this secret, if any, and what it may do: its scopes
/// within its creator's rights (a key never outlives them: a disabled or
/// removed creator disables it, a downgraded one narrows it), read with
/// the key in one query. Records when it was last used (at most once a
/// minute, so reads stay reads).
pub async fn authenticate(
    db: &crate::db::Db,
    presented: &str,
) -> Result<Option<(api_key::Model, Vec<Permission>)>, ApiError> {
    let conn = db.conn();
    let Some((key, creator)) = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(token_hash(presented)))
        .find_also_related(admin::Entity)
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    if key.revoked_at.is_some() {
        return Ok(None);
    }
    let Some(creator) = creator.filter(|c| !c.disabled) else {
        return Ok(None);
    };
    let allowed = creator
        .role
        .parse::<Role>()
        .map(Role::permissions)
        .unwrap_or_default();
    let now = Utc::now();
    if key
        .last_used_at
        .is_none_or(|at| now - at > Duration::seconds(60))
    {
        // Best effort, and through the write path (SQLite's single writer):
        // failing to record the time never fails the request.
        let id = key.id;
        let recorded = db
            .write_once(async |conn| {
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::LastUsedAt, Expr::value(now))
                    .filter(api_key::Column::Id.eq(id))
                    .exec(conn)
                    .await
            })
            .await;
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "cannot record when an API key was last used");
        }
    }
    let scopes = scopes(&key)
        .into_iter()
        .filter(|s| allowed.contains(s))
        .collect();
    Ok(Some((key, scopes)))
}

pub fn scopes(key: &api_key::Model) -> Vec<Permission> {
    serde_json::from_value(key.scopes.clone()).unwrap_or_default()
}
