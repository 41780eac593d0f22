//! Database migrations for Switchboard.
//!
//! Usable as a library (the app runs [`Migrator`] at start and from
//! `switchboard migrate`) and as a stand-alone CLI (`cargo run -p migration`).

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_events;
mod m20261121_000002_create_identity;
mod m20261121_000003_create_tickets;
mod m20261121_000004_create_ledger;
mod m20261121_000005_create_subscriptions;
mod m20261121_000006_add_referrals;
mod m20261122_000007_create_webhooks;
mod m20261126_000008_tickets_hot_updates;
mod m20261201_000009_balances_version;
mod m20261201_000010_email_token_passwords;
mod m20261201_000011_refresh_successors;
mod m20261201_000012_log_id;
mod m20261201_000013_webhook_legacy_options;
mod m20261201_000014_webhook_lease_owners;
mod m20261201_000015_webhook_backfills;
mod m20261201_000016_telegram_updates;
mod m20261201_000017_telegram_chats;
mod m20261201_000018_telegram_sends;
mod m20261201_000019_telegram_uploads;
mod m20261201_000020_broadcasts;
mod m20261201_000021_integration_settings;
mod m20261201_000022_outbox_claim_indexes;
mod m20261201_000023_helpdesk;
mod m20261202_000024_ticket_message_media;
mod m20261202_000025_events_occurred_at;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_events::Migration),
            Box::new(m20261121_000002_create_identity::Migration),
            Box::new(m20261121_000003_create_tickets::Migration),
            Box::new(m20261121_000004_create_ledger::Migration),
            Box::new(m20261121_000005_create_subscriptions::Migration),
            Box::new(m20261121_000006_add_referrals::Migration),
            Box::new(m20261122_000007_create_webhooks::Migration),
            Box::new(m20261126_000008_tickets_hot_updates::Migration),
            Box::new(m20261201_000009_balances_version::Migration),
            Box::new(m20261201_000010_email_token_passwords::Migration),
            Box::new(m20261201_000011_refresh_successors::Migration),
            Box::new(m20261201_000012_log_id::Migration),
            Box::new(m20261201_000013_webhook_legacy_options::Migration),
            Box::new(m20261201_000014_webhook_lease_owners::Migration),
            Box::new(m20261201_000015_webhook_backfills::Migration),
            Box::new(m20261201_000016_telegram_updates::Migration),
            Box::new(m20261201_000017_telegram_chats::Migration),
            Box::new(m20261201_000018_telegram_sends::Migration),
            Box::new(m20261201_000019_telegram_uploads::Migration),
            Box::new(m20261201_000020_broadcasts::Migration),
            Box::new(m20261201_000021_integration_settings::Migration),
            Box::new(m20261201_000022_outbox_claim_indexes::Migration),
            Box::new(m20261201_000023_helpdesk::Migration),
            Box::new(m20261202_000024_ticket_message_media::Migration),
            Box::new(m20261202_000025_events_occurred_at::Migration),
        ]
    }
}
