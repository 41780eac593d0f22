//! Telegram sign-in data: the Mini App's `initData` and the Login Widget's
//! fields, validated as Telegram documents it.
//!
//! - Mini App: `secret = HMAC-SHA256(key = "WebAppData", bot_token)`, then
//!   `hash = hex(HMAC-SHA256(key = secret, data_check_string))`, where the
//!   data-check string is every field but `hash`, sorted, as `k=v` lines.
//!   Optionally the `signature` field (Ed25519 over `"{bot_id}:WebAppData\n"`
//!   followed by the fields but `hash` and `signature`) against Telegram's key.
//! - Login Widget: `secret = SHA-256(bot_token)`, same HMAC over the fields.

use std::{collections::BTreeMap, time::Duration};

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelegramAuthError {
    #[error("malformed Telegram data: {0}")]
    Malformed(&'static str),
    #[error("the Telegram data's hash does not match")]
    BadHash,
    #[error("the Telegram data's signature does not verify")]
    BadSignature,
    #[error("the Telegram data is too old")]
    Expired,
    #[error("the Telegram data is dated in the future")]
    FromTheFuture,
}

/// The Telegram account a sign-in proves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TelegramUser {
    pub id: i64,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub language_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub user: TelegramUser,
    pub auth_date: DateTime<Utc>,
    /// The `hash` field: identifies this exact payload (one-time use).
    pub hash: String,
    /// The Mini App's `start_param` (e.g. a referral code from `?startapp=`).
    pub start_param: Option<String>,
}

/// What to check besides the HMAC.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    pub now: DateTime<Utc>,
    /// `None` skips the age check.
    pub max_age: Option<Duration>,
    /// Telegram's Ed25519 public key for the Mini App `signature` field.
    pub mini_app_public_key: Option<&'a [u8; 32]>,
}

/// Validates a Mini App `initData` query string.
pub fn verify_mini_app(
    init_data: &str,
    bot_token: &str,
    checks: Checks<'_>,
) -> Result<VerifiedLogin, TelegramAuthError> {
    let mut fields = BTreeMap::new();
    for (key, value) in url::form_urlencoded::parse(init_data.as_bytes()) {
        if fields
            .insert(key.into_owned(), value.into_owned())
            .is_some()
        {
            return Err(TelegramAuthError::Malformed("a field appears twice"));
        }
    }
    let hash = fields
        .remove("hash")
        .ok_or(TelegramAuthError::Malformed("no hash"))?;
    let mut secret = HmacSha256::new_from_slice(b"WebAppData")
        .map_err(|_| TelegramAuthError::Malformed("key"))?;
    secret.update(bot_token.as_bytes());
    let secret = secret.finalize().into_bytes();
    verify_hmac(&secret, &data_check_string(&fields, &[]), &hash)?;

    if let Some(public_key) = checks.mini_app_public_key {
        let signature = fields
            .get("signature")
            .ok_or(TelegramAuthError::BadSignature)?;
        let bot_id = bot_token
            .split(':')
            .next()
            .ok_or(TelegramAuthError::Malformed("bot token"))?;
        let message = format!(
            "{bot_id}:WebAppData\n{}",
            data_check_string(&fields, &["signature"])
        );
        verify_ed25519(public_key, signature, message.as_bytes())?;
    }

    let auth_date = check_date(fields.get("auth_date"), checks)?;
    let user: TelegramUser = serde_json::from_str(
        fields
            .get("user")
            .ok_or(TelegramAuthError::Malformed("no user"))?,
    )
    .map_err(|_| TelegramAuthError::Malformed("user is not valid JSON"))?;
    Ok(VerifiedLogin {
        user,
        auth_date,
        hash,
        start_param: fields.get("start_param").cloned(),
    })
}

/// Validates the Login Widget's fields (`id`, `first_name`, …, `auth_date`, `hash`).
pub fn verify_login_widget(
    fields: &BTreeMap<String, String>,
    bot_token: &str,
    checks: Checks<'_>,
) -> Result<VerifiedLogin, TelegramAuthError> {
    let mut fields = fields.clone();
    let hash = fields
        .remove("hash")
        .ok_or(TelegramAuthError::Malformed("no hash"))?;
    let secret = Sha256::digest(bot_token.as_bytes());
    verify_hmac(&secret, &data_check_string(&fields, &[]), &hash)?;
    let auth_date = check_date(fields.get("auth_date"), checks)?;
    let id = fields
        .get("id")
        .and_then(|id| id.parse().ok())
        .ok_or(TelegramAuthError::Malformed("no numeric id"))?;
    Ok(VerifiedLogin {
        user: TelegramUser {
            id,
            first_name: fields.get("first_name").cloned(),
            last_name: fields.get("last_name").cloned(),
            username: fields.get("username").cloned(),
            language_code: None,
        },
        auth_date,
        hash,
        start_param: None,
    })
}

/// `key=value` lines, sorted by key, without the `skip` keys.
pub fn data_check_string(fields: &BTreeMap<String, String>, skip: &[&str]) -> String {
    fields
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn verify_hmac(key: &[u8], message: &str, hash_hex: &str) -> Result<(), TelegramAuthError> {
    // Exactly Telegram's form (64 lowercase hex digits): the hash also
    // identifies a payload for one-time use, so `ABCD…` must not pass as a
    // different payload from `abcd…`.
    if hash_hex.len() != 64
        || !hash_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(TelegramAuthError::BadHash);
    }
    let expected = hex::decode(hash_hex).map_err(|_| TelegramAuthError::BadHash)?;
    let mut mac = HmacSha256::new_from_slice(key).map_err(|_| TelegramAuthError::BadHash)?;
    mac.update(message.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&expected)
        .map_err(|_| TelegramAuthError::BadHash)
}

fn verify_ed25519(
    public_key: &[u8; 32],
    signature: &str,
    message: &[u8],
) -> Result<(), TelegramAuthError> {
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| TelegramAuthError::BadSignature)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| TelegramAuthError::BadSignature)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| TelegramAuthError::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| TelegramAuthError::BadSignature)
}

fn check_date(
    auth_date: Option<&String>,
    checks: Checks<'_>,
) -> Result<DateTime<Utc>, TelegramAuthError> {
    let seconds: i64 = auth_date
        .and_then(|d| d.parse().ok())
        .ok_or(TelegramAuthError::Malformed("no numeric auth_date"))?;
    let at = DateTime::from_timestamp(seconds, 0)
        .ok_or(TelegramAuthError::Malformed("auth_date out of range"))?;
    if let Some(max_age) = checks.max_age {
        // A little clock skew is tolerated; a date well ahead is refused.
        if at > checks.now + chrono::Duration::seconds(60) {
            return Err(TelegramAuthError::FromTheFuture);
        }
        let age = (checks.now - at).to_std().unwrap_or_default();
        if age > max_age {
            return Err(TelegramAuthError::Expired);
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::Value;

    use super::*;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/telegram_auth_vectors.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    fn checks(now: DateTime<Utc>) -> Checks<'static> {
        Checks {
            now,
            max_age: Some(Duration::from_secs(86_400)),
            mini_app_public_key: None,
        }
    }

    #[test]
    fn the_mini_app_vector_verifies_and_names_the_user() {
        let v = vectors();
        let token = v["bot_token"].as_str().unwrap();
        let init_data = v["mini_app"]["init_data"].as_str().unwrap();
        let login = verify_mini_app(init_data, token, checks(at(1_763_719_200 + 60))).unwrap();
        assert_eq!(login.user.id, 279_058_397);
        assert_eq!(login.user.username.as_deref(), Some("vdkfrost"));
        assert_eq!(login.user.language_code.as_deref(), Some("ru"));
        assert_eq!(login.hash, v["mini_app"]["hash"].as_str().unwrap());
    }

    #[test]
    fn the_mini_app_data_check_string_matches_the_vector() {
        let v = vectors();
        let fields: BTreeMap<String, String> =
            url::form_urlencoded::parse(v["mini_app"]["init_data"].as_str().unwrap().as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "hash")
                .collect();
        assert_eq!(
            data_check_string(&fields, &[]),
            v["mini_app"]["data_check_string"].as_str().unwrap()
        );
    }

    #[test]
    fn tampered_mini_app_data_is_refused() {
        let v = vectors();
        let token = v["bot_token"].as_str().unwrap();
        let tampered = v["mini_app"]["tampered_init_data"].as_str().unwrap();
        assert_eq!(
            verify_mini_app(tampered, token, checks(at(1_763_719_200))),
            Err(TelegramAuthError::BadHash)
        );
        // The right data with another bot's token fails too.
        let init_data = v["mini_app"]["init_data"].as_str().unwrap();
        assert_eq!(
            verify_mini_app(init_data, "7000000002:other", checks(at(1_763_719_200))),
            Err(TelegramAuthError::BadHash)
        );
    }

    #[test]
    fn expired_mini_app_data_is_refused_and_the_age_check_can_be_disabled() {
        let v = vectors();
        let token = v["bot_token"].as_str().unwrap();
        let init_data = v["mini_app"]["init_data"].as_str().unwrap();
        let a_day_and_a_second_later = at(1_763_719_200 + 86_401);
        assert_eq!(
            verify_mini_app(init_data, token, checks(a_day_and_a_second_later)),
            Err(TelegramAuthError::Expired)
        );
        let no_age = Checks {
            max_age: None,
            ..checks(a_day_and_a_second_later)
        };
        assert!(verify_mini_app(init_data, token, no_age).is_ok());
        assert_eq!(
            verify_mini_app(init_data, token, checks(at(1_763_719_200 - 3_600))),
            Err(TelegramAuthError::FromTheFuture)
        );
    }

    #[test]
    fn the_login_widget_vector_verifies() {
        let v = vectors();
        let token = v["bot_token"].as_str().unwrap();
        let fields: BTreeMap<String, String> = v["login_widget"]["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let mut without_hash = fields.clone();
        without_hash.remove("hash");
        assert_eq!(
            data_check_string(&without_hash, &[]),
            v["login_widget"]["data_check_string"].as_str().unwrap()
        );
        let login = verify_login_widget(&fields, token, checks(at(1_763_719_200))).unwrap();
        assert_eq!(login.user.id, 279_058_397);

        let mut tampered = fields.clone();
        tampered.insert("username".into(), "someone_else".into());
        assert_eq!(
            verify_login_widget(&tampered, token, checks(at(1_763_719_200))),
            Err(TelegramAuthError::BadHash)
        );
    }

    /// The `signature` check, with a key pair made here (Telegram's own key
    /// cannot sign test data).
    #[test]
    fn a_mini_app_signature_is_checked_when_a_public_key_is_configured() {
        let bot_token = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let public = signing.verifying_key().to_bytes();
        let mut fields = BTreeMap::new();
        fields.insert("auth_date".to_owned(), "1763719200".to_owned());
        fields.insert(
            "user".to_owned(),
            r#"{"id":42,"first_name":"A"}"#.to_owned(),
        );
        let message = format!("7000000001:WebAppData\n{}", data_check_string(&fields, &[]));
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing.sign(message.as_bytes()).to_bytes());
        fields.insert("signature".to_owned(), signature);
        // The HMAC covers the signature field too.
        let mut secret = HmacSha256::new_from_slice(b"WebAppData").unwrap();
        secret.update(bot_token.as_bytes());
        let mut mac = HmacSha256::new_from_slice(&secret.finalize().into_bytes()).unwrap();
        mac.update(data_check_string(&fields, &[]).as_bytes());
        fields.insert("hash".to_owned(), hex::encode(mac.finalize().into_bytes()));
        let init_data: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish();

        let with_key = Checks {
            mini_app_public_key: Some(&public),
            ..checks(at(1_763_719_200))
        };
        assert_eq!(
            verify_mini_app(&init_data, bot_token, with_key)
                .unwrap()
                .user
                .id,
            42
        );
        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        let wrong_key = Checks {
            mini_app_public_key: Some(&other),
            ..checks(at(1_763_719_200))
        };
        assert_eq!(
            verify_mini_app(&init_data, bot_token, wrong_key),
            Err(TelegramAuthError::BadSignature)
        );
    }
}
