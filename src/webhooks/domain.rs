//! A webhook endpoint as an aggregate: its operational events
//! (`webhook.endpoint_disabled`), for the feeds and the event browser.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Refusal},
    ids::WebhookEndpointId,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum EndpointEvent {
    #[serde(rename = "webhook.endpoint_disabled")]
    Disabled {
        endpoint_id: WebhookEndpointId,
        name: String,
        reason: String,
    },
}

impl DomainEvent for EndpointEvent {
    const TYPES: &'static [&'static str] = &["webhook.endpoint_disabled"];
}

#[derive(Debug, Clone)]
pub enum EndpointCommand {
    Disable {
        endpoint_id: WebhookEndpointId,
        name: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the endpoint is disabled already")]
    AlreadyDisabled,
}

impl DomainError for EndpointError {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        "endpoint_disabled"
    }
}

/// Whether the endpoint is enabled lives in its row (enabling it again is
/// not an event); the row's update, in the same transaction, is what
/// refuses a second disabling.
#[derive(Debug, Clone, Default)]
pub struct Endpoint;

impl Aggregate for Endpoint {
    const CATEGORY: &'static str = "webhook";
    type Event = EndpointEvent;
    type Command = EndpointCommand;
    type Error = EndpointError;

    fn apply(&mut self, _event: &EndpointEvent) {}

    fn decide(&self, command: EndpointCommand) -> Result<Vec<EndpointEvent>, EndpointError> {
        let EndpointCommand::Disable {
            endpoint_id,
            name,
            reason,
        } = command;
        Ok(vec![EndpointEvent::Disabled {
            endpoint_id,
            name,
            reason,
        }])
    }
}
