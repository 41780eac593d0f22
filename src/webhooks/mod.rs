//! Webhooks: events delivered to external systems as signed HTTP requests,
//! durably (delivery rows are written with the event), retried on a
//! schedule, observable and replayable. The wire format is DESIGN.md's
//! "Webhooks".

pub mod backfill;
pub mod domain;
pub mod routes;
pub mod signing;
pub mod ssrf;
pub mod store;
pub mod worker;

use std::sync::Arc;

use anyhow::Context;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Notify;

pub use self::{domain::EndpointEvent, routes::configure};
use self::{signing::SecretBox, worker::Sender};
use crate::{
    config::Config,
    db::{Db, entities::setting},
};

/// What request handlers need of webhooks.
pub struct WebhookState {
    pub sender: Sender,
    /// Wakes the worker (resend, recover, enable).
    pub wake: Arc<Notify>,
}

impl WebhookState {
    pub async fn new(config: &Config, db: &Db) -> anyhow::Result<Self> {
        let key = encryption_key(config, db).await?;
        Ok(Self {
            sender: Sender::new(&config.webhooks, SecretBox::new(&key))
                .context("cannot build the webhook HTTP client")?,
            wake: Arc::new(Notify::new()),
        })
    }
}

const DEV_KEY: &str = "development_webhook_encryption_key";

/// The key that encrypts endpoint secrets: the configured one, or
/// (development only) one generated once and kept in the database.
async fn encryption_key(config: &Config, db: &Db) -> anyhow::Result<SecretString> {
    if let Some(key) = &config.webhooks.encryption_key {
        return Ok(key.clone());
    }
    if let Some(row) = setting::Entity::find_by_id(DEV_KEY.to_owned())
        .one(db.conn())
        .await
        .context("reading the development webhook encryption key")?
    {
        tracing::warn!(
            "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY is not set: using the development key stored in the database (a dump of it reveals webhook secrets); set it in production"
        );
        return Ok(SecretString::from(row.value));
    }
    let key = crate::auth::tokens::random_token("dev_");
    let txn = db.begin_write().await?;
    setting::ActiveModel {
        key: Set(DEV_KEY.to_owned()),
        value: Set(key.expose_secret().to_owned()),
    }
    .insert(&*txn)
    .await
    .context("storing the development webhook encryption key")?;
    txn.commit().await?;
    tracing::warn!(
        "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY is not set: generated a development key and stored it in the database; set it in production"
    );
    Ok(key)
}
