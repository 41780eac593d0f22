//! Switchboard: the back office of a Telegram bot business.
//!
//! See `DESIGN.md` for the architecture and wire contract; the modules are
//! capabilities (`events`, `health`, …), each mounted by [`app`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod batch;
pub mod broadcasts;
pub mod cabinet;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod db;
pub mod docs;
pub mod domain;
pub mod error;
pub mod events;
pub mod health;
pub mod helpdesk;
pub mod ids;
pub mod ledger;
pub mod mail;
pub mod pages;
pub mod projections;
pub mod prometheus;
pub mod realtime;
pub mod referrals;
pub mod settings;
pub mod subscriptions;
pub mod telegram;
pub mod telemetry;
pub mod templates;
pub mod tickets;
pub mod users;
pub mod validate;
pub mod webhooks;
