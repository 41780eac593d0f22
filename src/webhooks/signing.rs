//! Endpoint secrets, their encryption at rest, and request signatures.
//!
//! - Secrets are `whsec_` + base64 of 32 random bytes.
//! - Standard Webhooks: `webhook-signature: v1,<base64 HMAC-SHA256(key,
//!   "{id}.{timestamp}.{body}")>` where the key is the base64-decoded part
//!   after `whsec_`; while a rotated secret is still valid, one `v1,…` per
//!   secret, space-separated, the current one first.
//! - Legacy: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(key, body)>` where
//!   the key is the UTF-8 bytes of the whole `whsec_…` string (what receivers
//!   written against the older cabinet API do with the secret they hold).
//!
//! Both are computed over the exact bytes sent.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub const SECRET_PREFIX: &str = "whsec_";

/// A new endpoint secret.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The HMAC key of a Standard Webhooks secret: the bytes after `whsec_`.
fn standard_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| encoded.as_bytes().to_vec())
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length; this never fails.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC accepts keys of any length")
}

/// One `v1,<signature>` for `secret`.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = hmac_sha256(
        &standard_key(secret),
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(mac))
}

/// The `webhook-signature` header: one signature per valid secret.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| standard_signature(secret, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The legacy `X-Webhook-Signature` header value.
pub fn legacy_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// Encrypts endpoint secrets for storage (AES-256-GCM, a random nonce per
/// value), so a database dump alone does not reveal them.
#[derive(Clone)]
pub struct SecretBox {
    key: std::sync::Arc<LessSafeKey>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "a webhook secret cannot be decrypted: SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY is not the key it was stored with"
)]
pub struct DecryptError;

const SEALED_PREFIX: &str = "v1:";

impl SecretBox {
    /// A key derived from configuration (any string; SHA-256 of it is used).
    pub fn new(key: &SecretString) -> Self {
        let digest = Sha256::digest(key.expose_secret().as_bytes());
        // A 32-byte key is exactly what AES-256 takes; this never fails.
        let key = UnboundKey::new(&AES_256_GCM, &digest)
            .map(LessSafeKey::new)
            .unwrap_or_else(|_| unreachable_key());
        Self {
            key: std::sync::Arc::new(key),
        }
    }

    pub fn seal(&self, secret: &SecretString) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut data = secret.expose_secret().as_bytes().to_vec();
        // Sealing in place with a fresh nonce and a valid key cannot fail.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut data,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<SecretString, DecryptError> {
        let raw = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b64| STANDARD.decode(b64).ok())
            .ok_or(DecryptError)?;
        if raw.len() < NONCE_LEN {
            return Err(DecryptError);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DecryptError)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| DecryptError)?;
        String::from_utf8(plain.to_vec())
            .map(SecretString::from)
            .map_err(|_| DecryptError)
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> LessSafeKey {
    panic!("AES-256-GCM takes a 32-byte key")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors() -> Value {
        serde_json::from_str(include_str!(
            "../../tests/data/standard_webhooks_vectors.json"
        ))
        .unwrap()
    }

    #[test]
    fn standard_webhooks_vectors_sign_as_published() {
        let vectors = vectors();
        for v in vectors["vectors"].as_array().unwrap() {
            let signature = standard_signature(
                v["secret"].as_str().unwrap(),
                v["id"].as_str().unwrap(),
                v["timestamp"].as_i64().unwrap(),
                v["body"].as_str().unwrap().as_bytes(),
            );
            assert_eq!(signature, v["signature"].as_str().unwrap());
        }
        for v in vectors["must_reject"].as_array().unwrap() {
            let signature = standard_signature(
                v["secret"].as_str().unwrap(),
                v["id"].as_str().unwrap(),
                v["timestamp"].as_i64().unwrap(),
                v["body"].as_str().unwrap().as_bytes(),
            );
            assert_ne!(signature, v["signature"].as_str().unwrap());
        }
    }

    #[test]
    fn rotation_sends_one_signature_per_secret_and_legacy_uses_the_whole_string() {
        let header = signature_header(&["whsec_AAAA", "whsec_BBBB"], "msg_1", 10, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            parts[0],
            standard_signature("whsec_AAAA", "msg_1", 10, b"{}")
        );
        let legacy = legacy_signature("whsec_AAAA", b"{}");
        let expected = hmac_sha256(b"whsec_AAAA", &[b"{}"]);
        assert_eq!(legacy, format!("sha256={}", hex::encode(expected)));
    }

    #[test]
    fn secrets_are_random_and_round_trip_through_encryption() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().starts_with(SECRET_PREFIX));
        assert_eq!(
            STANDARD
                .decode(&a.expose_secret()[SECRET_PREFIX.len()..])
                .unwrap()
                .len(),
            32
        );
        let sealed_box = SecretBox::new(&SecretString::from("k".repeat(40)));
        let sealed = sealed_box.seal(&a);
        assert!(!sealed.contains(&a.expose_secret()[SECRET_PREFIX.len()..]));
        assert_ne!(sealed, sealed_box.seal(&a), "a fresh nonce every time");
        assert_eq!(
            sealed_box.open(&sealed).unwrap().expose_secret(),
            a.expose_secret()
        );
        let other = SecretBox::new(&SecretString::from("j".repeat(40)));
        assert!(other.open(&sealed).is_err());
        assert!(sealed_box.open("garbage").is_err());
    }
}
