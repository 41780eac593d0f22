//! Webim's Custom Channel API, as this bridge speaks it. Every Webim name
//! (paths, headers, fields, event and kind names) is here and nowhere
//! else: the contract is inferred from Webim's neighbouring APIs, so this
//! is the one place to correct against Webim's own document.
//!
//! - To Webim: `POST {base_url}/message` with `Authorization: Token
//!   <access_token>` and `{"event":"new_message","visitor":{…},"message":
//!   {"id","kind":"visitor","text","created_at"}}`; answered
//!   `{"result":"ok","chat_id":…}`, or a body with `error`.
//! - From Webim: `POST /integrations/webim/callback` with `Authorization:
//!   Token <callback_secret>` and `new_message` (kind `operator` or
//!   `file_operator`), `chat_closed`, and events this bridge ignores.

use serde_json::{Value, json};

use super::{Callback, Operator, Outgoing};

/// The header both directions carry their credential in.
pub const AUTH_HEADER: &str = "authorization";

/// The path under the base URL messages are posted to.
pub const MESSAGE_PATH: &str = "message";

/// `Authorization`'s value for `token`.
pub fn authorization(token: &str) -> String {
    format!("Token {token}")
}

/// The credential a callback carries: `Authorization: Token <secret>`.
pub fn callback_credential(header: &[u8]) -> &[u8] {
    header.strip_prefix(b"Token ").unwrap_or(header)
}

/// The body of a visitor's message.
pub fn message(out: &Outgoing, department: Option<&str>) -> Value {
    let mut fields = serde_json::Map::new();
    if let Some(name) = &out.user.name {
        fields.insert("name".into(), name.clone().into());
    }
    if let Some(username) = &out.user.username {
        fields.insert("login".into(), username.clone().into());
    }
    let mut body = json!({
        "event": "new_message",
        "visitor": {
            "id": out.visitor_id,
            "channel_user_id": out.user.telegram_id.to_string(),
            "fields": fields,
        },
        "message": {
            "id": out.message_id,
            "kind": "visitor",
            "text": out.text,
            "created_at": out.created_at,
        },
    });
    if let Some(department) = department {
        body["dep_key"] = department.into();
    }
    body
}

/// What Webim's answer to a message says: the chat it went to, or why it
/// was refused (a 200 may carry an `error`).
pub fn accepted(body: &Value) -> Result<Option<String>, String> {
    // Only the error's code: its description might repeat the message.
    if let Some(error) = body.get("error") {
        return Err(text_of(error).chars().take(100).collect());
    }
    Ok(body.get("chat_id").map(text_of))
}

/// What Webim's answer to a callback is.
pub fn ok() -> Value {
    json!({"result": "ok"})
}

/// A callback's body, read.
pub fn callback(body: &Value) -> Result<Callback, String> {
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .ok_or("no `event`")?;
    let visitor = || {
        body.pointer("/visitor/id")
            .map(text_of)
            .filter(|id| !id.is_empty())
            .ok_or("no `visitor.id`")
    };
    let chat_id = body.get("chat_id").map(text_of);
    match event {
        "new_message" => {
            let message = body.get("message").ok_or("no `message`")?;
            let kind = message.get("kind").and_then(Value::as_str).unwrap_or("");
            let operator = message.get("operator").map(|o| Operator {
                id: o.get("id").map(text_of),
                name: o.get("name").and_then(Value::as_str).map(str::to_owned),
            });
            let id = message
                .get("id")
                .map(text_of)
                .filter(|id| !id.is_empty())
                .ok_or("no `message.id`")?;
            let text = message
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match kind {
                "operator" => Ok(Callback::Message {
                    visitor_id: visitor()?.to_owned(),
                    message_id: Some(id),
                    text,
                    file: None,
                    operator,
                }),
                "file_operator" => {
                    let data = message.get("data").ok_or("no `message.data`")?;
                    let url = data
                        .get("url")
                        .and_then(Value::as_str)
                        .ok_or("no `message.data.url`")?;
                    Ok(Callback::Message {
                        visitor_id: visitor()?.to_owned(),
                        message_id: Some(id),
                        text,
                        file: Some(super::File {
                            url: url.to_owned(),
                            media_type: data
                                .get("media_type")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        }),
                        operator,
                    })
                }
                // The visitor's own messages echoed, bots' internals…
                other => Ok(Callback::Ignored {
                    event: format!("new_message of kind `{other}`"),
                }),
            }
        }
        "chat_closed" => Ok(Callback::ChatClosed {
            visitor_id: visitor()?.to_owned(),
            chat_id,
            closed_by: body
                .get("closed_by")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        other => Ok(Callback::Ignored {
            event: other.to_owned(),
        }),
    }
}

/// A JSON id (a number or a string) as text.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpdesk::Profile;

    #[test]
    fn a_message_goes_as_the_contract_names_it_and_callbacks_read_back() {
        let out = Outgoing {
            message_id: "tg:42:7".into(),
            visitor_id: "v1".into(),
            text: "Hello".into(),
            created_at: "2026-11-21T10:30:00Z".into(),
            user: Profile {
                telegram_id: 42,
                name: Some("Ivan".into()),
                username: Some("ivanp".into()),
            },
        };
        let body = message(&out, Some("sales"));
        assert_eq!(body["event"], "new_message");
        assert_eq!(body["visitor"]["id"], "v1");
        assert_eq!(body["visitor"]["fields"]["login"], "ivanp");
        assert_eq!(body["message"]["kind"], "visitor");
        assert_eq!(body["message"]["id"], "tg:42:7");
        assert_eq!(body["dep_key"], "sales");
        assert_eq!(
            accepted(&json!({"result": "ok", "chat_id": 1001})),
            Ok(Some("1001".into()))
        );
        assert!(accepted(&json!({"error": "bad_request", "desc": "kind"})).is_err());

        let answer = callback(&json!({
            "event": "new_message", "chat_id": 1001, "visitor": {"id": "v1"},
            "message": {"id": "a3f1", "kind": "operator", "text": "Hi!",
                        "operator": {"id": 240001, "name": "Anna"}}
        }))
        .unwrap();
        let Callback::Message {
            visitor_id,
            message_id,
            text,
            operator,
            file,
        } = answer
        else {
            panic!("not a message: {answer:?}");
        };
        assert_eq!(
            (visitor_id.as_str(), message_id.as_deref(), text.as_str()),
            ("v1", Some("a3f1"), "Hi!")
        );
        assert_eq!(operator.unwrap().id.as_deref(), Some("240001"));
        assert!(file.is_none());
        assert!(matches!(
            callback(&json!({"event": "chat_closed", "chat_id": 1001,
                             "visitor": {"id": "v1"}, "closed_by": "operator"})),
            Ok(Callback::ChatClosed { .. })
        ));
        assert!(matches!(
            callback(&json!({"event": "chat_assigned", "chat_id": 1001})),
            Ok(Callback::Ignored { .. })
        ));
        assert!(callback(&json!({"chat_id": 1})).is_err());
        assert_eq!(callback_credential(b"Token s3cret"), b"s3cret");
    }
}
