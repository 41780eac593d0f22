//! The Telegram bridge: updates from the bot's webhook are stored before
//! Telegram is answered, then recorded in the log once each as what they
//! mean ([`updates`]): private messages, their users and tickets, users
//! blocking the bot, and everything else raw. Sends go through an outbox
//! written with the command that causes them ([`outbox`]) and a sender
//! that keeps every instance together within Telegram's limits
//! ([`sender`]).

pub mod bot_api;
pub mod domain;
pub mod files;
pub mod intake;
pub mod outbox;
pub mod params;
pub mod poll;
pub mod routes;
pub mod send;
pub mod sender;
pub mod stars;
pub mod updates;

use std::sync::Arc;

use tokio::sync::Notify;

pub use self::domain::TelegramEvent;

/// The Telegram routes outside the admin API: the webhook and the sender API.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    intake::configure(cfg);
    routes::configure_api(cfg);
}

/// The bridge as the routes and workers share it: the bot's API, the key
/// Stars invoices are signed with, and what wakes the workers.
#[derive(Clone)]
pub struct Bridge {
    /// `None` without a bot token.
    pub api: Option<bot_api::BotApi>,
    pub payload_key: [u8; 32],
    /// The webhook stored an update.
    pub updates: Arc<Notify>,
    /// A send was queued.
    pub sends: Arc<Notify>,
    /// A send ended (callers waiting for one listen).
    pub ended: Arc<Notify>,
    /// A broadcast was created.
    pub broadcasts: Arc<Notify>,
    /// A message was queued for the helpdesk.
    pub helpdesk: Arc<Notify>,
}

impl Bridge {
    pub fn new(api: Option<bot_api::BotApi>, payload_key: [u8; 32]) -> Self {
        Self {
            api,
            payload_key,
            updates: Arc::default(),
            sends: Arc::default(),
            ended: Arc::default(),
            broadcasts: Arc::default(),
            helpdesk: Arc::default(),
        }
    }
}
