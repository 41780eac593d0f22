//! A helpdesk visitor as an aggregate (stream `helpdesk_visitor:<id>`):
//! the messages relayed for it each way, the relays that failed for good,
//! and its chat's end. Events carry ids, direction and length, never a
//! message's text.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::UserId,
};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the user's Telegram chat to the helpdesk.
    ToHelpdesk,
    /// From an operator in the helpdesk to the user's Telegram chat.
    ToUser,
}

/// What a relay event says about the message it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    pub direction: Direction,
    pub visitor_id: String,
    pub user_id: UserId,
    /// The message's id on the side it came from: `tg:<chat>:<message>` for
    /// a Telegram message, the helpdesk's id for an operator's.
    pub message_id: String,
    /// Its id on the side it went to, when that side gives one (the
    /// Telegram outbox's send id for an operator's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_as: Option<String>,
    /// The helpdesk's chat, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// Characters in the message's text.
    pub length: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum HelpdeskEvent {
    #[serde(rename = "helpdesk.message_relayed")]
    MessageRelayed(Relayed),
    /// A message the helpdesk refused, or did not take after every retry.
    #[serde(rename = "helpdesk.relay_failed")]
    RelayFailed {
        #[serde(flatten)]
        relay: Relayed,
        attempts: i32,
        /// The helpdesk's last HTTP status, when it answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        error: String,
    },
    /// The helpdesk closed the visitor's chat: the user's next message
    /// starts a new visitor.
    #[serde(rename = "helpdesk.chat_closed")]
    ChatClosed {
        visitor_id: String,
        user_id: UserId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<String>,
        /// `operator`, `visitor` or `system`, as the helpdesk said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        closed_by: Option<String>,
    },
}

impl DomainEvent for HelpdeskEvent {
    const TYPES: &'static [&'static str] = &[
        "helpdesk.message_relayed",
        "helpdesk.relay_failed",
        "helpdesk.chat_closed",
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelpdeskError {
    #[error("the visitor's chat is closed already")]
    Closed,
    /// A message from the helpdesk that came before (it is answered as
    /// taken, and sent once).
    #[error("this message was taken already")]
    Duplicate,
    #[error("no such visitor")]
    UnknownVisitor,
    /// A relay's outcome came after its lease ran out and another attempt
    /// took it.
    #[error("this relay was taken by another attempt")]
    Superseded,
}

impl DomainError for HelpdeskError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Closed | Self::Duplicate | Self::Superseded => Refusal::Conflict,
            Self::UnknownVisitor => Refusal::NotFound,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Closed => "chat_closed",
            Self::Duplicate => "duplicate_message",
            Self::UnknownVisitor => "unknown_visitor",
            Self::Superseded => "relay_superseded",
        }
    }
}

/// One visitor: whether its chat was closed.
#[derive(Debug, Clone, Default)]
pub struct Visitor {
    pub closed: bool,
}

impl Aggregate for Visitor {
    const CATEGORY: &'static str = "helpdesk_visitor";
    type Event = HelpdeskEvent;
    type Command = HelpdeskEvent;
    type Error = HelpdeskError;

    fn apply(&mut self, event: &HelpdeskEvent) {
        if matches!(event, HelpdeskEvent::ChatClosed { .. }) {
            self.closed = true;
        }
    }

    /// Records a relay whatever the chat's state (an operator may answer
    /// after it closed); a chat closes once.
    fn decide(&self, event: HelpdeskEvent) -> Result<Vec<HelpdeskEvent>, HelpdeskError> {
        if self.closed && matches!(event, HelpdeskEvent::ChatClosed { .. }) {
            return Err(HelpdeskError::Closed);
        }
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Actor;

    #[test]
    fn a_chat_closes_once_and_relays_carry_no_text() {
        let user_id = UserId::new();
        let relayed = HelpdeskEvent::MessageRelayed(Relayed {
            direction: Direction::ToHelpdesk,
            visitor_id: "v".into(),
            user_id,
            message_id: "tg:1:2".into(),
            delivered_as: None,
            chat_id: Some("1001".into()),
            length: 5,
        });
        let new = relayed.to_new_event(Actor::system());
        assert_eq!(new.event_type.as_str(), "helpdesk.message_relayed");
        assert_eq!(new.payload["direction"], "to_helpdesk");
        assert_eq!(new.payload["length"], 5);
        let closed = HelpdeskEvent::ChatClosed {
            visitor_id: "v".into(),
            user_id,
            chat_id: None,
            closed_by: Some("operator".into()),
        };
        let mut visitor = Visitor::default();
        let events = visitor.decide(closed.clone()).unwrap();
        visitor.apply(&events[0]);
        assert_eq!(visitor.decide(closed), Err(HelpdeskError::Closed));
        assert!(visitor.decide(relayed).is_ok());
    }
}
