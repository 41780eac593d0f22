//! The helpdesk integration (`helpdesk`): which helpdesk tickets are
//! bridged to, where it is, and the credentials each way.

use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use utoipa::ToSchema;

use super::{Setting, SettingsError, masked, open_secret};
use crate::{
    error::{ApiError, Problem},
    validate,
    webhooks::signing::SecretBox,
};

/// Which helpdesk it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HelpdeskKind {
    /// Webim.
    Webim,
    /// Any helpdesk speaking the generic JSON protocol.
    Generic,
}

impl FromStr for HelpdeskKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "webim" => Ok(Self::Webim),
            "generic" => Ok(Self::Generic),
            other => Err(format!("expected `webim` or `generic`, got `{other}`")),
        }
    }
}

/// The helpdesk integration as the service uses it. Its `Debug` shows no
/// secret: they are [`SecretString`]s.
#[derive(Debug, Clone)]
pub struct Helpdesk {
    pub kind: HelpdeskKind,
    /// Whether tickets are bridged at all.
    pub enabled: bool,
    pub base_url: url::Url,
    /// What this service presents to the helpdesk.
    pub access_token: Option<SecretString>,
    /// What the helpdesk's calls to this service are checked against.
    pub callback_secret: Option<SecretString>,
    pub department: Option<String>,
    /// Whether message texts are kept (default `true`).
    pub store_text: bool,
}

/// [`Helpdesk`] as stored: its secrets sealed.
#[derive(Serialize, Deserialize)]
pub struct StoredHelpdesk {
    kind: HelpdeskKind,
    enabled: bool,
    base_url: String,
    access_token: Option<String>,
    callback_secret: Option<String>,
    department: Option<String>,
    store_text: bool,
}

impl Setting for Helpdesk {
    const KEY: &'static str = "helpdesk";
    type Stored = StoredHelpdesk;

    fn seal(&self, secrets: &SecretBox) -> StoredHelpdesk {
        StoredHelpdesk {
            kind: self.kind,
            enabled: self.enabled,
            base_url: self.base_url.to_string(),
            access_token: self.access_token.as_ref().map(|s| secrets.seal(s)),
            callback_secret: self.callback_secret.as_ref().map(|s| secrets.seal(s)),
            department: self.department.clone(),
            store_text: self.store_text,
        }
    }

    fn open(stored: StoredHelpdesk, secrets: &SecretBox) -> Result<Self, SettingsError> {
        let base_url =
            stored
                .base_url
                .parse()
                .map_err(|e: url::ParseError| SettingsError::Malformed {
                    key: Self::KEY,
                    reason: format!("base_url: {e}"),
                })?;
        Ok(Self {
            kind: stored.kind,
            enabled: stored.enabled,
            base_url,
            access_token: open_secret(Self::KEY, secrets, stored.access_token)?,
            callback_secret: open_secret(Self::KEY, secrets, stored.callback_secret)?,
            department: stored.department,
            store_text: stored.store_text,
        })
    }
}

/// The helpdesk integration, whole. A secret left out keeps the one stored;
/// `null` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HelpdeskIn {
    pub kind: HelpdeskKind,
    pub enabled: bool,
    /// An absolute `https://` (or `http://`) URL, without credentials in it.
    #[schema(max_length = 2000, example = "https://helpdesk.example.com/api")]
    pub base_url: String,
    /// Write-only: answers show it masked.
    #[serde(default, deserialize_with = "secret")]
    #[schema(value_type = Option<String>, write_only, max_length = 1000)]
    pub access_token: Option<Option<SecretString>>,
    /// Write-only: answers show it masked.
    #[serde(default, deserialize_with = "secret")]
    #[schema(value_type = Option<String>, write_only, max_length = 1000)]
    pub callback_secret: Option<Option<SecretString>>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub department: Option<String>,
    /// Default `true`.
    #[serde(default = "yes")]
    pub store_text: bool,
}

impl HelpdeskIn {
    /// The setting this makes of the current one (whose secrets it keeps
    /// where it leaves them out).
    pub fn apply(self, current: Option<Helpdesk>) -> Result<Helpdesk, ApiError> {
        let (access_token, callback_secret) = current
            .map(|current| (current.access_token, current.callback_secret))
            .unwrap_or_default();
        Ok(Helpdesk {
            kind: self.kind,
            enabled: self.enabled,
            base_url: base_url(&self.base_url)
                .map_err(|reason| Problem::invalid_field("base_url", reason))?,
            access_token: changed("access_token", self.access_token, access_token)?,
            callback_secret: changed("callback_secret", self.callback_secret, callback_secret)?,
            department: department(self.department)?,
            store_text: self.store_text,
        })
    }
}

/// The helpdesk integration as shown: secrets masked.
#[derive(Serialize, ToSchema)]
pub struct HelpdeskOut {
    pub kind: HelpdeskKind,
    pub enabled: bool,
    pub base_url: String,
    /// `••••` and its last four characters (only `••••` if it is short);
    /// `null` when there is none.
    #[schema(example = "••••9d1e")]
    pub access_token: Option<String>,
    /// Masked as `access_token` is.
    #[schema(example = "••••4e2d")]
    pub callback_secret: Option<String>,
    pub department: Option<String>,
    pub store_text: bool,
}

impl From<Helpdesk> for HelpdeskOut {
    fn from(helpdesk: Helpdesk) -> Self {
        Self {
            kind: helpdesk.kind,
            enabled: helpdesk.enabled,
            base_url: helpdesk.base_url.to_string(),
            access_token: helpdesk.access_token.as_ref().map(masked),
            callback_secret: helpdesk.callback_secret.as_ref().map(masked),
            department: helpdesk.department,
            store_text: helpdesk.store_text,
        }
    }
}

/// A helpdesk's base URL: absolute `http(s)`, with a host and without
/// credentials (an `http://` one is reached only where the webhook allow
/// list lets it be).
pub fn base_url(raw: &str) -> Result<url::Url, String> {
    let raw = raw.trim();
    if raw.chars().count() > 2000 {
        return Err("is longer than 2000 characters".to_owned());
    }
    let url = url::Url::parse(raw)
        .map_err(|_| "is not an absolute URL such as https://helpdesk.example.com".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http(s) URL with a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials (give access_token instead)".to_owned());
    }
    Ok(url)
}

/// A secret after a change: left out, the current one; `null`, none.
fn changed(
    field: &str,
    given: Option<Option<SecretString>>,
    current: Option<SecretString>,
) -> Result<Option<SecretString>, ApiError> {
    let Some(given) = given else {
        return Ok(current);
    };
    if let Some(secret) = &given {
        let secret = secret.expose_secret();
        if secret.trim().is_empty() {
            return Err(Problem::invalid_field(field, "is empty (send null to clear it)").into());
        }
        if secret.chars().count() > 1000 {
            return Err(Problem::invalid_field(field, "is longer than 1000 characters").into());
        }
    }
    Ok(given)
}

fn department(given: Option<String>) -> Result<Option<String>, ApiError> {
    match given.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(department) => validate::text("department", department, 200).map(Some),
    }
}

/// A secret's field when it is there: a string, or `null` to clear it. Its
/// error never repeats the value, which may be the secret.
fn secret<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<SecretString>>, D::Error> {
    Option::<String>::deserialize(deserializer)
        .map(|secret| Some(secret.map(SecretString::from)))
        .map_err(|_| D::Error::custom("expected a string, or null to clear it"))
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::settings::body;

    fn input(body: Value) -> HelpdeskIn {
        body::object(body.as_object().cloned().unwrap()).unwrap()
    }

    fn current() -> Helpdesk {
        Helpdesk {
            kind: HelpdeskKind::Webim,
            enabled: true,
            base_url: "https://helpdesk.example.com".parse().unwrap(),
            access_token: Some(SecretString::from("current-token")),
            callback_secret: Some(SecretString::from("current-callback")),
            department: None,
            store_text: false,
        }
    }

    fn exposed(secret: &Option<SecretString>) -> Option<&str> {
        secret.as_ref().map(|secret| secret.expose_secret())
    }

    #[test]
    fn a_secret_left_out_is_kept_null_clears_it_and_a_string_replaces_it() {
        let changed = input(json!({
            "kind": "generic", "enabled": false, "base_url": "https://other.example.com/api",
            "callback_secret": null, "department": "  sales "
        }))
        .apply(Some(current()))
        .unwrap();
        assert_eq!(exposed(&changed.access_token), Some("current-token"));
        assert_eq!(exposed(&changed.callback_secret), None);
        assert_eq!(changed.kind, HelpdeskKind::Generic);
        assert_eq!(changed.base_url.as_str(), "https://other.example.com/api");
        assert_eq!(changed.department.as_deref(), Some("sales"));
        assert!(changed.store_text, "store_text defaults to true");

        let replaced = input(json!({
            "kind": "webim", "enabled": true, "base_url": "https://helpdesk.example.com",
            "access_token": "new-token", "department": ""
        }))
        .apply(Some(current()))
        .unwrap();
        assert_eq!(exposed(&replaced.access_token), Some("new-token"));
        assert_eq!(exposed(&replaced.callback_secret), Some("current-callback"));
        assert_eq!(replaced.department, None);

        let first = input(json!({
            "kind": "webim", "enabled": true, "base_url": "https://h.example.com"
        }))
        .apply(None)
        .unwrap();
        assert_eq!(exposed(&first.access_token), None);
        assert_eq!(exposed(&first.callback_secret), None);
    }

    #[test]
    fn only_absolute_http_urls_without_credentials_are_base_urls() {
        assert!(base_url(" https://helpdesk.example.com/api ").is_ok());
        assert!(base_url("http://10.0.0.5:8080").is_ok());
        for bad in [
            "",
            "/api",
            "helpdesk.example.com",
            "ftp://helpdesk.example.com",
            "mailto:help@example.com",
            "https://user:pass@helpdesk.example.com",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_helpdesk_holds_its_secrets_sealed_and_opens_to_the_same() {
        let secrets = SecretBox::new(&SecretString::from("k".repeat(40)));
        let stored = serde_json::to_string(&current().seal(&secrets)).unwrap();
        assert!(!stored.contains("current-token") && !stored.contains("current-callback"));
        let opened = Helpdesk::open(serde_json::from_str(&stored).unwrap(), &secrets).unwrap();
        assert_eq!(exposed(&opened.access_token), Some("current-token"));
        assert_eq!(exposed(&opened.callback_secret), Some("current-callback"));
        assert_eq!(opened.base_url, current().base_url);
        assert!(!format!("{opened:?}").contains("current-token"));
    }
}
