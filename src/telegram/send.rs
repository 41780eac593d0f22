//! A Bot API send as an aggregate: its outcome is recorded once, as
//! `telegram.message_sent` or `telegram.send_failed`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::UserId,
};

/// How a send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = SendStatus)]
pub enum Status {
    /// Waiting for its turn (or for a retry).
    Queued,
    /// On its way to Telegram.
    Sending,
    /// Telegram answered ok.
    Sent,
    /// Telegram refused it, or it could not be sent after its retries.
    Failed,
    /// It may have reached Telegram but its answer was lost: it is not sent
    /// again (a duplicate message is worse than a missing one an admin can
    /// see and resend).
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(Value::String(text.to_owned())).ok()
    }
}

/// What a send event says about the send it is the outcome of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendOf {
    pub send_id: String,
    pub chat_id: i64,
    /// The Bot API method (`sendMessage`, …).
    pub method: String,
    /// The user it went to, when Switchboard knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// What caused it: `ticket_reply`, `api`.
    pub origin: String,
    /// The ticket message it carries, for a ticket reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum SendEvent {
    #[serde(rename = "telegram.message_sent")]
    Sent {
        #[serde(flatten)]
        send: SendOf,
        /// The sent message's id, when the method returns a message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<i64>,
    },
    #[serde(rename = "telegram.send_failed")]
    Failed {
        #[serde(flatten)]
        send: SendOf,
        /// `failed` or `unknown`.
        status: Status,
        error: String,
        /// Telegram's `error_code`, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<u16>,
    },
}

impl DomainEvent for SendEvent {
    const TYPES: &'static [&'static str] = &["telegram.message_sent", "telegram.send_failed"];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("this send's outcome is recorded already")]
    AlreadyRecorded,
}

impl DomainError for SendError {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        "send_recorded"
    }
}

/// One send (its stream is `telegram_send:{id}`).
#[derive(Debug, Clone, Default)]
pub struct Send {
    recorded: bool,
}

impl Aggregate for Send {
    const CATEGORY: &'static str = "telegram_send";
    type Event = SendEvent;
    type Command = SendEvent;
    type Error = SendError;

    fn apply(&mut self, _event: &SendEvent) {
        self.recorded = true;
    }

    /// Records the outcome, once.
    fn decide(&self, outcome: SendEvent) -> Result<Vec<SendEvent>, SendError> {
        if self.recorded {
            return Err(SendError::AlreadyRecorded);
        }
        Ok(vec![outcome])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_recorded_once_with_the_catalogue_names() {
        let send = SendOf {
            send_id: "s".into(),
            chat_id: 42,
            method: "sendMessage".into(),
            user_id: None,
            origin: "api".into(),
            reference: None,
        };
        let sent = SendEvent::Sent {
            send: send.clone(),
            message_id: Some(7),
        };
        let mut state = Send::default();
        let events = state.decide(sent.clone()).unwrap();
        state.apply(&events[0]);
        assert_eq!(state.decide(sent), Err(SendError::AlreadyRecorded));
        let new = events[0].to_new_event(crate::events::Actor::system());
        assert_eq!(new.event_type.as_str(), "telegram.message_sent");
        assert_eq!(new.payload["chat_id"], 42);
        assert_eq!(new.payload["message_id"], 7);
        let failed = SendEvent::Failed {
            send,
            status: Status::Unknown,
            error: "lost".into(),
            error_code: None,
        }
        .to_new_event(crate::events::Actor::system());
        assert_eq!(failed.event_type.as_str(), "telegram.send_failed");
        assert_eq!(failed.payload["status"], "unknown");
    }
}
