//! Identity: admin accounts and API keys, JWT sessions with rotating refresh
//! tokens, Telegram sign-in checks, rate limits, and the extractors handlers
//! use to require an authenticated caller.

pub mod api_keys;
pub mod extractors;
pub mod password;
pub mod permissions;
pub mod rate_limit;
pub mod routes;
pub mod session_checks;
pub mod sessions;
pub mod telegram;
pub mod tokens;

use anyhow::Context;
use chrono::Utc;
pub use extractors::{CabinetUser, CurrentAdmin};
pub use permissions::{Permission, Role};
pub use routes::configure;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    config::Config,
    db::{Db, entities::setting},
};

const DEV_SECRET_KEY: &str = "development_jwt_secret";

/// Whether `given` is `secret`, in time that does not depend on where they
/// differ (nor on the secret's length: digests are compared).
pub fn secret_matches(given: &[u8], secret: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let given = Sha256::digest(given);
    let secret = Sha256::digest(secret.as_bytes());
    given.ct_eq(&secret).into()
}

/// The JWT signing secret: the configured one, or (development only) one
/// generated once and kept in the database so every instance and restart
/// shares it.
pub async fn jwt_secret(config: &Config, db: &Db) -> anyhow::Result<SecretString> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.clone());
    }
    let conn = db.conn();
    if let Some(row) = setting::Entity::find_by_id(DEV_SECRET_KEY.to_owned())
        .one(conn)
        .await
        .context("reading the development JWT secret")?
    {
        tracing::warn!(
            "SWITCHBOARD_JWT_SECRET is not set: using the development secret stored in the database; set it in production"
        );
        return Ok(SecretString::from(row.value));
    }
    let secret = tokens::random_token("dev_");
    let txn = db.begin_write().await?;
    setting::ActiveModel {
        key: Set(DEV_SECRET_KEY.to_owned()),
        value: Set(secret.expose_secret().to_owned()),
    }
    .insert(&*txn)
    .await
    .context("storing the development JWT secret")?;
    txn.commit().await?;
    tracing::warn!(
        generated_at = %Utc::now(),
        "SWITCHBOARD_JWT_SECRET is not set: generated a development secret and stored it in the database; set it in production"
    );
    Ok(secret)
}

/// A response that carries tokens or shows a secret: never stored by a
/// cache or a browser (RFC 6749 §5.1).
pub fn no_store(mut response: actix_web::HttpResponse) -> actix_web::HttpResponse {
    use actix_web::http::header::{CACHE_CONTROL, HeaderValue, PRAGMA};
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
