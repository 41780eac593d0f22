//! Random secrets (refresh tokens, API keys, e-mail links) and JWT access
//! tokens.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ids::SessionId;

/// `prefix` + 32 random bytes, base64url.
pub fn random_token(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// How a random token is stored: hex SHA-256. The tokens carry 256 bits of
/// randomness, so a fast hash is enough (no password-style stretching).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Who an access token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Admin,
    Cabinet,
}

impl Audience {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Cabinet => "cabinet",
        }
    }
}

const ISSUER: &str = "switchboard";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    pub fn session(&self) -> SessionId {
        SessionId::from_uuid(self.sid)
    }
}

/// Signs and checks access tokens (HS256 only: a token naming any other
/// algorithm, `none` included, is refused).
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl: Duration) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        audience: Audience,
        subject: Uuid,
        session: SessionId,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: subject,
            sid: session.as_uuid(),
            aud: audience.as_str().to_owned(),
            iss: ISSUER.to_owned(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(900),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid, unexpired token for `audience`.
    pub fn verify(&self, token: &str, audience: Audience) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience.as_str()]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            &SecretString::from("0123456789abcdef0123456789abcdef"),
            Duration::from_secs(900),
        )
    }

    #[test]
    fn a_token_verifies_for_its_audience_only() {
        let session = SessionId::new();
        let token = keys()
            .issue(Audience::Admin, Uuid::now_v7(), session)
            .unwrap();
        assert_eq!(
            keys().verify(&token, Audience::Admin).unwrap().session(),
            session
        );
        assert!(keys().verify(&token, Audience::Cabinet).is_none());
        let other = JwtKeys::new(
            &SecretString::from("another-secret-another-secret-xx"),
            Duration::from_secs(900),
        );
        assert!(other.verify(&token, Audience::Admin).is_none());
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        let token = keys()
            .issue(Audience::Admin, Uuid::now_v7(), SessionId::new())
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(
            keys()
                .verify(&format!("{header}.{payload}."), Audience::Admin)
                .is_none()
        );
    }

    #[test]
    fn random_tokens_differ_and_hash_stably() {
        let a = random_token("x_");
        let b = random_token("x_");
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with("x_"));
        assert_eq!(token_hash("abc"), token_hash("abc"));
        assert_eq!(token_hash("abc").len(), 64);
    }
}
