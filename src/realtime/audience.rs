//! Who may see an event on a live feed.
//!
//! - A cabinet user sees the events about themselves: every event whose
//!   payload names them as `user_id` (their profile, tickets and messages,
//!   payments, ledger entries, subscription), and the referral events of
//!   the programme they run (`referrer_id`). A referee does not see the
//!   referrer's rewards.
//! - An admin (or API key) sees an event when it holds `events:read` and the
//!   permission that reads the same facts through the admin API: `user.*`
//!   needs `users:read`, `ticket.*` and `telegram.*` `tickets:read`, `payment.*`,
//!   `transaction.*`, `subscription.*` and `referral.*` `ledger:read`,
//!   `broadcast.*` `telegram:send`, `webhook.*` `webhooks:manage`. So a
//!   support operator sees users and tickets but no money, and a viewer sees
//!   everything but webhook operations and broadcasts.

use serde_json::Value;
use uuid::Uuid;

use crate::{auth::Permission, events::RecordedEvent, ids::UserId};

/// The readers of one event, worked out once per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// The cabinet user the event is about, if any.
    pub user: Option<UserId>,
    /// What an admin needs besides `events:read`.
    pub permission: Permission,
}

impl Audience {
    pub fn of(event: &RecordedEvent) -> Self {
        let event_type = event.event_type.as_str();
        let category = event_type.split('.').next().unwrap_or_default();
        let user_field = if category == "referral" {
            "referrer_id"
        } else {
            "user_id"
        };
        Self {
            user: user_in(&event.payload, user_field),
            permission: permission_for(category),
        }
    }

    pub fn admin_may_see(&self, permissions: &[Permission]) -> bool {
        permissions.contains(&Permission::EventsRead) && permissions.contains(&self.permission)
    }

    pub fn user_may_see(&self, user: UserId) -> bool {
        self.user == Some(user)
    }
}

/// The admin permission that reads events of a category.
pub fn permission_for(category: &str) -> Permission {
    match category {
        "user" => Permission::UsersRead,
        "ticket" | "telegram" | "helpdesk" => Permission::TicketsRead,
        "payment" | "transaction" | "subscription" | "referral" => Permission::LedgerRead,
        "broadcast" => Permission::TelegramSend,
        "webhook" => Permission::WebhooksManage,
        // Nothing else is in the catalogue; whatever is added later stays
        // with the roles that may do everything until it is placed here.
        _ => Permission::WebhooksManage,
    }
}

fn user_in(payload: &Value, field: &str) -> Option<UserId> {
    payload
        .get(field)
        .and_then(Value::as_str)
        .and_then(|raw| raw.parse::<Uuid>().ok())
        .map(UserId::from_uuid)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::{
        auth::Role,
        events::{Actor, Cursor, EventType, StreamName},
        ids::EventId,
    };

    fn event(event_type: &str, payload: Value) -> RecordedEvent {
        RecordedEvent {
            id: EventId::new(),
            position: 1,
            cursor: Cursor::START,
            stream: StreamName::parse("x:1").unwrap(),
            version: 1,
            event_type: EventType::parse(event_type).unwrap(),
            payload,
            actor: Actor::system(),
            occurred_at: Utc::now(),
        }
    }

    #[test]
    fn a_user_sees_events_naming_them_and_referrals_they_earn_from() {
        let alice = UserId::new();
        let bob = UserId::new();
        let message = Audience::of(&event(
            "ticket.message_added",
            json!({"user_id": alice, "text": "hi"}),
        ));
        assert!(message.user_may_see(alice));
        assert!(!message.user_may_see(bob));
        let reward = Audience::of(&event(
            "referral.reward_granted",
            json!({"referrer_id": alice, "referee_id": bob}),
        ));
        assert!(reward.user_may_see(alice));
        assert!(!reward.user_may_see(bob));
        let nobody = Audience::of(&event("broadcast.created", json!({"text": "x"})));
        assert!(!nobody.user_may_see(alice));
    }

    #[test]
    fn operators_see_no_money_and_viewers_no_webhook_operations() {
        let operator = Role::Operator.permissions();
        let viewer = Role::Viewer.permissions();
        let owner = Role::Owner.permissions();
        let payment = Audience::of(&event("payment.completed", json!({})));
        let ticket = Audience::of(&event("ticket.created", json!({})));
        let webhook = Audience::of(&event("webhook.endpoint_disabled", json!({})));
        assert!(!payment.admin_may_see(&operator));
        assert!(ticket.admin_may_see(&operator));
        assert!(payment.admin_may_see(&viewer));
        assert!(!webhook.admin_may_see(&viewer));
        assert!(webhook.admin_may_see(&owner));
        // events:read is needed whatever else is held.
        assert!(!ticket.admin_may_see(&[Permission::TicketsRead]));
    }
}
