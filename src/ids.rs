//! Typed identifiers. Each is a UUIDv7 (time-ordered) behind a newtype, so a
//! bare `Uuid` never crosses a module boundary.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

typed_id!(
    /// The identity of one event: its `id` on the WebSocket and its `webhook-id`.
    EventId
);

typed_id!(
    /// An operator account of the admin API.
    AdminId
);

typed_id!(
    /// A cabinet user (the bot's end user).
    UserId
);

typed_id!(
    /// A login session: one family of rotating refresh tokens.
    SessionId
);

typed_id!(
    /// A machine client's API key.
    ApiKeyId
);

typed_id!(
    /// A support ticket.
    TicketId
);

typed_id!(
    /// One message in a ticket.
    MessageId
);

typed_id!(
    /// One balance ledger entry.
    TransactionId
);

typed_id!(
    /// A payment (money arriving from a provider or an admin top-up).
    PaymentId
);

typed_id!(
    /// A webhook endpoint.
    WebhookEndpointId
);
