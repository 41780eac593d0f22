//! The helpdesk bridge: each Telegram user's messages go to an external
//! helpdesk as a visitor's chat, and its operators' answers come back to
//! the user's Telegram chat.
//!
//! - Out: with the bridge on, a user's private message (not a command) is
//!   written to `helpdesk_relays` in the transaction that records it, for
//!   the user's open visitor (`helpdesk_visitors`, created then if there is
//!   none). The [`relay`] worker delivers them, one visitor's in order,
//!   retrying with the same message id; each attempt's answer is kept.
//! - In: the helpdesk calls `POST /integrations/webim/callback` (Webim) or
//!   `POST /api/v1/integrations/helpdesk/messages` (any other, with an API
//!   key); the answer goes to the user's chat through the Telegram outbox,
//!   once per message id. A closed chat ends its visitor: the user's next
//!   message starts a new one.
//! - Privacy (`store_text: false`): no message text outlives its delivery.
//!   Events carry ids, direction and length; the text is in the outbox row
//!   only until the other side took it.
//!
//! What is Webim's own is in [`webim`]; the generic protocol is here.

pub mod domain;
pub mod inbound;
pub mod relay;
pub mod routes;
pub mod store;
pub mod webim;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use self::domain::HelpdeskEvent;
use crate::settings::{Helpdesk, HelpdeskKind};

/// The Telegram outbox's `origin` of operators' answers.
pub const ORIGIN: &str = "helpdesk";

/// A user's message for the helpdesk, as its relay row holds it (until it
/// was delivered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// `tg:<chat>:<message>`: the same on every retry.
    pub message_id: String,
    pub visitor_id: String,
    pub text: String,
    /// RFC 3339, as Telegram dated the message.
    pub created_at: String,
    pub user: Profile,
}

/// Who the visitor is, as the helpdesk shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub telegram_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// An operator, as the helpdesk names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Operator {
    /// A string or a number.
    #[serde(default, deserialize_with = "id_text")]
    #[schema(value_type = Option<String>)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// An id given as a string or a number, as text.
fn id_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(serde::de::Error::custom("expected a string or a number")),
    }
}

/// A file an operator sent, by URL.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub url: String,
    pub media_type: String,
}

/// What a helpdesk's call to this service says.
#[derive(Debug, Clone, PartialEq)]
pub enum Callback {
    /// An operator's answer to the visitor.
    Message {
        visitor_id: String,
        /// The helpdesk's id of it: a second call with it sends nothing.
        message_id: Option<String>,
        text: String,
        file: Option<File>,
        operator: Option<Operator>,
    },
    ChatClosed {
        visitor_id: String,
        chat_id: Option<String>,
        closed_by: Option<String>,
    },
    /// An event this bridge has no use for: answered as taken.
    Ignored { event: String },
}

/// A request to the helpdesk: where under its base URL, its credential
/// header, and its body.
pub struct Request {
    pub path: &'static str,
    pub authorization: Option<(&'static str, String)>,
    pub body: Value,
}

/// The request that delivers `out` to `helpdesk`.
pub fn request(helpdesk: &Helpdesk, out: &Outgoing) -> Request {
    use secrecy::ExposeSecret;
    let token = helpdesk.access_token.as_ref().map(|t| t.expose_secret());
    match helpdesk.kind {
        HelpdeskKind::Webim => Request {
            path: webim::MESSAGE_PATH,
            authorization: token.map(|t| (webim::AUTH_HEADER, webim::authorization(t))),
            body: webim::message(out, helpdesk.department.as_deref()),
        },
        // The generic protocol: `POST {base_url}/messages`, a bearer token.
        HelpdeskKind::Generic => Request {
            path: "messages",
            authorization: token.map(|t| ("authorization", format!("Bearer {t}"))),
            body: json!({
                "visitor_id": out.visitor_id,
                "message_id": out.message_id,
                "text": out.text,
                "created_at": out.created_at,
                "user": out.user,
                "department": helpdesk.department,
            }),
        },
    }
}

/// What `helpdesk`'s 2xx answer says: the chat the message went to, or
/// why it was refused after all.
pub fn accepted(kind: HelpdeskKind, body: &Value) -> Result<Option<String>, String> {
    match kind {
        HelpdeskKind::Webim => webim::accepted(body),
        HelpdeskKind::Generic => Ok(body.get("chat_id").map(|id| match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
    }
}

/// `url` joined with `path`, whether or not `url` ends in `/`.
pub fn endpoint(url: &url::Url, path: &str) -> url::Url {
    let mut url = url.clone();
    let joined = format!("{}/{path}", url.path().trim_end_matches('/'));
    url.set_path(&joined);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_base_url_however_it_ends() {
        let base: url::Url = "https://h.example.com/custom-channel/7".parse().unwrap();
        assert_eq!(
            endpoint(&base, "message").as_str(),
            "https://h.example.com/custom-channel/7/message"
        );
        let slash: url::Url = "https://h.example.com/".parse().unwrap();
        assert_eq!(
            endpoint(&slash, "messages").as_str(),
            "https://h.example.com/messages"
        );
    }
}
