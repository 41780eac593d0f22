//! Integration settings: values an owner or admin changes through
//! `/api/v1/admin/settings/{key}` rather than through the environment (the
//! helpdesk bridge's URL and credentials, say). They live in the `settings`
//! table under `integration:<key>`, as JSON with their secrets sealed like
//! webhook secrets; the service reads them from memory ([`Settings`]), and
//! a change reaches every instance at once.
//!
//! Only the keys in [`KNOWN`] are reachable through the API, each with the
//! schema of its [`Setting`]; the table's other rows are the service's own.

mod body;
mod cache;
pub mod helpdesk;
pub mod routes;
mod store;

use chrono::{DateTime, Utc};
use sea_orm::DbErr;
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};

pub use self::{
    cache::{NOTIFY_CHANNEL, Settings},
    helpdesk::{Helpdesk, HelpdeskKind},
};
use crate::{
    error::{ApiError, Problem},
    ids::AdminId,
    webhooks::signing::SecretBox,
};

/// The keys of the settings the API knows.
pub const KNOWN: &[&str] = &[Helpdesk::KEY];

/// A setting the API knows and the service reads through [`Settings`].
pub trait Setting: Sized {
    /// Its name in the API (`/admin/settings/{KEY}`); stored as
    /// `integration:{KEY}`.
    const KEY: &'static str;
    /// How it is stored: its fields, secrets sealed.
    type Stored: Serialize + DeserializeOwned;

    fn seal(&self, secrets: &SecretBox) -> Self::Stored;

    fn open(stored: Self::Stored, secrets: &SecretBox) -> Result<Self, SettingsError>;
}

/// A setting's value, and when and by whom it was last changed.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub value: T,
    /// `None` only for a value stored before changes were recorded.
    pub updated_at: Option<DateTime<Utc>>,
    /// `None` when the value came from the environment.
    pub updated_by: Option<AdminId>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading or writing settings: {0}")]
    Db(#[from] DbErr),
    #[error("setting `{key}` as stored cannot be read: {reason}")]
    Malformed { key: &'static str, reason: String },
    #[error(
        "setting `{key}` holds a secret that cannot be decrypted: \
         SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY is not the key it was stored with"
    )]
    Sealed { key: &'static str },
    #[error(
        "cannot LISTEN on `switchboard_settings` within 10 s: \
         this instance would not hear of settings other instances change"
    )]
    NotListening,
}

impl From<SettingsError> for ApiError {
    fn from(err: SettingsError) -> Self {
        match err {
            // Unavailable databases are answered as everywhere else (503).
            SettingsError::Db(e) => e.into(),
            // Said as it is: PUT the setting again, secrets included.
            SettingsError::Sealed { .. } => Problem::new(
                actix_web::http::StatusCode::CONFLICT,
                "setting_unreadable",
                "Setting unreadable",
            )
            .detail(format!("{err}; PUT it again with its secrets"))
            .into(),
            other => Self::Internal(anyhow::Error::new(other)),
        }
    }
}

const MASK: &str = "••••";

/// Secrets shorter than this are masked whole: their last four characters
/// would give away too much of them.
const SHORTEST_SHOWN: usize = 12;

/// How a secret is shown: never in clear, only `••••` and its last four
/// characters, enough to tell which one is set.
fn masked(secret: &SecretString) -> String {
    let secret = secret.expose_secret();
    let length = secret.chars().count();
    if length < SHORTEST_SHOWN {
        return MASK.to_owned();
    }
    let last: String = secret.chars().skip(length - 4).collect();
    format!("{MASK}{last}")
}

/// A stored secret of setting `key`, opened.
fn open_secret(
    key: &'static str,
    secrets: &SecretBox,
    sealed: Option<String>,
) -> Result<Option<SecretString>, SettingsError> {
    sealed
        .map(|sealed| {
            secrets
                .open(&sealed)
                .map_err(|_| SettingsError::Sealed { key })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_shown_by_their_last_four_characters_and_short_ones_not_at_all() {
        let shown = masked(&SecretString::from("helpdesk-token-5b7c9d1e"));
        assert_eq!(shown, "••••9d1e");
        assert_eq!(masked(&SecretString::from("k3y-7q")), "••••");
        assert_eq!(masked(&SecretString::from("ключ-ключ-ключ")), "••••ключ");
    }

    #[test]
    fn a_secret_sealed_with_another_key_is_an_error_naming_the_setting() {
        let sealed = SecretBox::new(&SecretString::from("a".repeat(40)))
            .seal(&SecretString::from("helpdesk-token"));
        let other = SecretBox::new(&SecretString::from("b".repeat(40)));
        assert!(matches!(
            open_secret("helpdesk", &other, Some(sealed)),
            Err(SettingsError::Sealed { key: "helpdesk" })
        ));
        assert!(open_secret("helpdesk", &other, None).unwrap().is_none());
    }
}
