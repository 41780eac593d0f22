//! Switchboard: the back office of a Telegram bot business.
//!
//! See `DESIGN.md` for the architecture and wire contract; the modules are
//! capabilities (`events`, `health`, …), each mounted by [`app`].

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod health;
pub mod ids;
pub mod telemetry;
