//! The Telegram bridge: updates from the bot's webhook are stored before
//! Telegram is answered, then recorded in the log once each as what they
//! mean ([`updates`]): private messages, their users and tickets, users
//! blocking the bot, and everything else raw.

pub mod domain;
pub mod intake;
pub mod updates;

pub use self::{domain::TelegramEvent, intake::configure};
