//! A Telegram update as an aggregate: recorded in the log once, whatever
//! Telegram sends again, as what it means (a private message) or raw.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::UserId,
};

/// A file a user sent, as Telegram names it (fetch it with `getFile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Media {
    /// `photo`, `document`, `audio`, `voice`, `video`, `video_note`,
    /// `animation` or `sticker`.
    #[serde(rename = "type")]
    pub kind: String,
    pub file_id: String,
    pub file_unique_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u32>,
}

/// A private message a user sent the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageReceived {
    pub update_id: i64,
    /// The user it is from, as Switchboard knows them.
    pub user_id: UserId,
    pub chat_id: i64,
    pub message_id: i32,
    /// Telegram's `User` the message is from.
    pub from: Value,
    /// Unix seconds, as Telegram dates it.
    pub date: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Telegram's `MessageEntity` list of the text or the caption.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<i32>,
    /// The characters of the text (or caption), in place of it when texts
    /// are not kept (the helpdesk bridge's privacy mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_length: Option<usize>,
}

impl MessageReceived {
    /// The message without what it said: its text, caption and their
    /// entities give way to the text's length.
    pub fn redact(&mut self) {
        let said = self.text.take().or(self.caption.take()).unwrap_or_default();
        self.caption = None;
        self.entities.clear();
        self.text_length = Some(said.chars().count());
    }
}

/// `update` without what its messages said: every `text`, `caption`,
/// their entities and quotes, inline queries, polls' questions and
/// options, titles, addresses, file names and link previews removed,
/// however deep.
pub fn redacted(update: &Value) -> Value {
    const SAID: [&str; 14] = [
        "text",
        "caption",
        "entities",
        "caption_entities",
        "quote",
        "query",
        "question",
        "options",
        "explanation",
        "title",
        "address",
        "file_name",
        "link_preview_options",
        "url",
    ];
    match update {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(name, _)| !SAID.contains(&name.as_str()))
                .map(|(name, value)| (name.clone(), redacted(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TelegramEvent {
    #[serde(rename = "telegram.message_received")]
    MessageReceived(MessageReceived),
    /// Any other update, as Telegram sent it.
    #[serde(rename = "telegram.update_received")]
    UpdateReceived { update_id: i64, update: Value },
}

impl DomainEvent for TelegramEvent {
    const TYPES: &'static [&'static str] =
        &["telegram.message_received", "telegram.update_received"];
}

#[derive(Debug, Clone)]
pub enum UpdateCommand {
    /// Records the update as this event.
    Record(TelegramEvent),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("this update is recorded already")]
    AlreadyRecorded,
}

impl DomainError for UpdateError {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        "update_recorded"
    }
}

/// One update (its stream is `telegram_update:{update_id}`).
#[derive(Debug, Clone, Default)]
pub struct Update {
    recorded: bool,
}

impl Aggregate for Update {
    const CATEGORY: &'static str = "telegram_update";
    type Event = TelegramEvent;
    type Command = UpdateCommand;
    type Error = UpdateError;

    fn apply(&mut self, _event: &TelegramEvent) {
        self.recorded = true;
    }

    fn decide(&self, command: UpdateCommand) -> Result<Vec<TelegramEvent>, UpdateError> {
        let UpdateCommand::Record(event) = command;
        if self.recorded {
            return Err(UpdateError::AlreadyRecorded);
        }
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_redacted_update_or_message_says_nothing_of_its_text() {
        let update = json!({"update_id": 1, "edited_message": {"message_id": 2, "text": "secret",
            "entities": [{"type": "bold"}], "reply_to_message": {"caption": "also secret"}}});
        let clean = redacted(&update).to_string();
        assert!(!clean.contains("secret"), "{clean}");
        assert!(clean.contains("\"message_id\":2"));
    }

    #[test]
    fn an_update_is_recorded_once() {
        let mut update = Update::default();
        let record = || {
            UpdateCommand::Record(TelegramEvent::UpdateReceived {
                update_id: 7,
                update: json!({"update_id": 7}),
            })
        };
        let events = update.decide(record()).unwrap();
        assert_eq!(events.len(), 1);
        update.apply(&events[0]);
        assert_eq!(update.decide(record()), Err(UpdateError::AlreadyRecorded));
    }
}
