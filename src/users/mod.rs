//! Users (the bot's end users): their events, the decisions that produce
//! them, and the `users` read model.

pub mod admin_routes;
pub mod domain;
pub mod projection;
pub mod service;

pub use domain::{UserCommand, UserError, UserEvent, UserState};
