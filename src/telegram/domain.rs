//! A Telegram update as an aggregate: recorded in the log once, whatever
//! Telegram sends again.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{Aggregate, DomainError, DomainEvent, Refusal};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum TelegramEvent {
    /// An update the bot received, as Telegram sent it.
    #[serde(rename = "telegram.update_received")]
    UpdateReceived { update_id: i64, update: Value },
}

impl DomainEvent for TelegramEvent {
    const TYPES: &'static [&'static str] = &["telegram.update_received"];
}

#[derive(Debug, Clone)]
pub enum UpdateCommand {
    Record { update_id: i64, update: Value },
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
        let UpdateCommand::Record { update_id, update } = command;
        if self.recorded {
            return Err(UpdateError::AlreadyRecorded);
        }
        Ok(vec![TelegramEvent::UpdateReceived { update_id, update }])
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_update_is_recorded_once() {
        let mut update = Update::default();
        let record = || UpdateCommand::Record {
            update_id: 7,
            update: json!({"update_id": 7}),
        };
        let events = update.decide(record()).unwrap();
        assert_eq!(events.len(), 1);
        update.apply(&events[0]);
        assert_eq!(update.decide(record()), Err(UpdateError::AlreadyRecorded));
    }
}
