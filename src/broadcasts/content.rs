//! What a broadcast says: a text, a medium (with the text as its caption),
//! inline buttons; made into one Bot API call per recipient.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Photo,
    Video,
    Document,
    Audio,
    Voice,
    Animation,
}

impl MediaType {
    /// The Bot API method and the parameter that carries the file.
    fn call(self) -> (&'static str, &'static str) {
        match self {
            Self::Photo => ("sendPhoto", "photo"),
            Self::Video => ("sendVideo", "video"),
            Self::Document => ("sendDocument", "document"),
            Self::Audio => ("sendAudio", "audio"),
            Self::Voice => ("sendVoice", "voice"),
            Self::Animation => ("sendAnimation", "animation"),
        }
    }
}

/// A photo, video, … by its Telegram `file_id` or an http(s) `url`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    #[serde(rename = "type")]
    pub kind: MediaType,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
}

/// An inline button: opens `url`, or sends `callback_data` to the bot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Button {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_data: Option<String>,
}

/// A broadcast's message.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    pub media: Option<Media>,
    pub buttons: Vec<Vec<Button>>,
    pub paid: bool,
}

/// Why a content cannot be sent: the field, and what it should be.
pub type Invalid = (&'static str, String);

fn is_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

impl Content {
    /// The Bot API method and its parameters (all but the chat).
    pub fn call(&self) -> Result<(String, Value), Invalid> {
        let invalid = |field: &'static str, detail: &str| Err((field, detail.to_owned()));
        let mut params = Map::new();
        let text = self.text.as_deref().filter(|t| !t.trim().is_empty());
        let method = match &self.media {
            None => {
                let Some(text) = text else {
                    return invalid("text", "a text, a media, or both");
                };
                if text.chars().count() > 4096 {
                    return invalid("text", "at most 4096 characters");
                }
                params.insert("text".into(), json!(text));
                "sendMessage"
            }
            Some(media) => {
                let (method, field) = media.kind.call();
                let file = match (&media.file_id, &media.url) {
                    (Some(id), None)
                        if !id.is_empty() && id.len() <= 2048 && !id.contains("://") =>
                    {
                        id
                    }
                    (None, Some(url)) if url.len() <= 2048 && is_url(url) => url,
                    _ => return invalid("media", "one of `file_id` or an http(s) `url`"),
                };
                params.insert(field.into(), json!(file));
                // With both, one message: the text is the caption.
                let caption = text.or(media.caption.as_deref().filter(|c| !c.trim().is_empty()));
                if let Some(caption) = caption {
                    if caption.chars().count() > 1024 {
                        return invalid("text", "as a caption, at most 1024 characters");
                    }
                    params.insert("caption".into(), json!(caption));
                }
                method
            }
        };
        if let Some(mode) = &self.parse_mode {
            if !matches!(mode.as_str(), "HTML" | "Markdown" | "MarkdownV2") {
                return invalid("parse_mode", "one of HTML, Markdown, MarkdownV2");
            }
            params.insert("parse_mode".into(), json!(mode));
        }
        if !self.buttons.is_empty() {
            let rows = self.buttons.len();
            if rows > 10 || self.buttons.iter().any(|r| r.is_empty() || r.len() > 8) {
                return invalid("buttons", "1 to 10 rows of 1 to 8 buttons");
            }
            for button in self.buttons.iter().flatten() {
                let ok = !button.text.trim().is_empty()
                    && button.text.chars().count() <= 64
                    && match (&button.url, &button.callback_data) {
                        (Some(url), None) => is_url(url) || url.starts_with("tg://"),
                        (None, Some(data)) => (1..=64).contains(&data.len()),
                        _ => false,
                    };
                if !ok {
                    return invalid(
                        "buttons",
                        "each a `text` (1 to 64 characters) with a `url` or a `callback_data` \
                         (1 to 64 bytes)",
                    );
                }
            }
            params.insert(
                "reply_markup".into(),
                json!({"inline_keyboard": self.buttons}),
            );
        }
        if self.paid {
            params.insert("allow_paid_broadcast".into(), json!(true));
        }
        Ok((method.to_owned(), Value::Object(params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_with_a_medium_is_one_message_with_the_text_as_caption() {
        let content = Content {
            text: Some("hello".into()),
            parse_mode: Some("HTML".into()),
            media: Some(Media {
                kind: MediaType::Photo,
                file_id: None,
                url: Some("https://files.test/a.jpg".into()),
                caption: Some("ignored".into()),
            }),
            buttons: vec![vec![Button {
                text: "Open".into(),
                url: Some("https://shop.test".into()),
                callback_data: None,
            }]],
            paid: true,
        };
        let (method, params) = content.call().unwrap();
        assert_eq!(method, "sendPhoto");
        assert_eq!(
            params,
            json!({"photo": "https://files.test/a.jpg", "caption": "hello", "parse_mode": "HTML",
                   "reply_markup": {"inline_keyboard": [[{"text": "Open", "url": "https://shop.test"}]]},
                   "allow_paid_broadcast": true})
        );
        assert_eq!(Content::default().call().unwrap_err().0, "text");
        let bad_button = Content {
            text: Some("x".into()),
            buttons: vec![vec![Button {
                text: "b".into(),
                url: None,
                callback_data: None,
            }]],
            ..Content::default()
        };
        assert_eq!(bad_button.call().unwrap_err().0, "buttons");
    }
}
