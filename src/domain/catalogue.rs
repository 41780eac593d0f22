//! The catalogue: every event type the product appends, from its event
//! enums (a test per enum checks its list is complete).

use super::DomainEvent;
use crate::{
    broadcasts::BroadcastEvent,
    helpdesk::HelpdeskEvent,
    ledger::domain::{BalanceEvent, PaymentEvent},
    referrals::ReferralEvent,
    subscriptions::domain::SubscriptionEvent,
    telegram::{TelegramEvent, send::SendEvent},
    tickets::domain::TicketEvent,
    users::domain::UserEvent,
    webhooks::EndpointEvent,
};

/// Every event type's name.
pub fn catalogue() -> Vec<&'static str> {
    [
        UserEvent::TYPES,
        TicketEvent::TYPES,
        BalanceEvent::TYPES,
        PaymentEvent::TYPES,
        SubscriptionEvent::TYPES,
        ReferralEvent::TYPES,
        EndpointEvent::TYPES,
        TelegramEvent::TYPES,
        SendEvent::TYPES,
        BroadcastEvent::TYPES,
        HelpdeskEvent::TYPES,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::variant_names;

    fn listed<E: DomainEvent + serde::de::DeserializeOwned>() {
        let mut names = variant_names::<E>();
        names.sort();
        let mut listed: Vec<String> = E::TYPES.iter().map(|t| (*t).to_owned()).collect();
        listed.sort();
        assert!(
            !names.is_empty(),
            "no variants found for {}",
            std::any::type_name::<E>()
        );
        assert_eq!(names, listed, "{}::TYPES", std::any::type_name::<E>());
        for name in &names {
            assert!(
                crate::events::EventType::parse(name).is_ok(),
                "`{name}` is not a valid event type name"
            );
        }
    }

    #[test]
    fn every_event_enum_lists_exactly_its_variants() {
        listed::<UserEvent>();
        listed::<BroadcastEvent>();
        listed::<TicketEvent>();
        listed::<BalanceEvent>();
        listed::<PaymentEvent>();
        listed::<SubscriptionEvent>();
        listed::<ReferralEvent>();
        listed::<EndpointEvent>();
        listed::<TelegramEvent>();
        listed::<SendEvent>();
        listed::<HelpdeskEvent>();
    }

    #[test]
    fn no_two_enums_share_a_type() {
        let all = catalogue();
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), unique.len());
    }
}
