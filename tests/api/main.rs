//! Integration tests: the real app on port 0 against a fresh database per
//! test. Every test runs on SQLite; with `TEST_DATABASE_URL` set it also runs
//! on PostgreSQL (see README, "Tests").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod admin_auth;
mod authorization;
mod broadcasts;
mod commands;
mod email_auth;
mod event_store;
mod events_browser;
mod fake_bot;
mod health;
mod helpdesk;
mod ledger;
mod openapi;
mod pages;
mod realtime;
mod referrals;
mod secrets_in_logs;
mod settings;
mod startup;
mod subscriptions;
mod tailer;
mod telegram_auth;
mod telegram_intake;
mod telegram_send;
mod telegram_signing;
mod tickets;
mod users_admin;
mod webhooks;
