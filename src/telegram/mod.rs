//! The Telegram bridge. Built so far: the webhook intake (updates are
//! stored before Telegram is answered, then recorded in the log once each,
//! as `telegram.update_received` with the raw update).

pub mod domain;
pub mod intake;

pub use self::{domain::TelegramEvent, intake::configure};
