//! The settings cache. Every instance reads settings from memory, loading
//! a key from the database the first time it is read (an unset key is
//! remembered as unset too).
//!
//! A change drops its key here once committed. On PostgreSQL the changing
//! transaction also sends `NOTIFY switchboard_settings` naming the key
//! (delivered when it commits, and not at all if it rolls back), and every
//! other instance's listener drops that key; a listener that (re)connects
//! drops everything, since what was notified while it was not listening is
//! lost. On SQLite there is one instance, and dropping the key here is all
//! there is to do.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::Duration,
};

use chrono::DateTime;
use sea_orm::{ConnectionTrait, sqlx::PgPool};
use serde_json::Value;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    Entry, Setting, SettingsError,
    store::{self, Row},
};
use crate::{
    config::Config,
    db::{
        Backend, Db,
        notifications::{self, Heard},
    },
    ids::AdminId,
    webhooks::signing::SecretBox,
};

/// The Postgres channel that names changed settings: `<instance> <key>`.
pub const NOTIFY_CHANNEL: &str = "switchboard_settings";

/// How long start-up waits for the listener: an instance that cannot hear
/// of other instances' changes would go on using what they replaced.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings as every part of the service reads them; cheap to clone.
#[derive(Clone)]
pub struct Settings {
    db: Db,
    secrets: SecretBox,
    cache: Arc<RwLock<Cache>>,
    /// Names this instance in its notifications, so that its listener can
    /// tell its own changes (dropped here already) from other instances'.
    instance: Arc<str>,
}

#[derive(Default)]
struct Cache {
    /// Rows by key; `None` remembers that a key has no row.
    rows: HashMap<String, Option<Arc<Row>>>,
    /// Bumped whenever a key is dropped: a row read from the database before
    /// then may be older than the change, and is not kept.
    generation: u64,
}

impl Settings {
    /// The settings of `db`; on PostgreSQL with the listener that keeps
    /// them in step with other instances (on `tasks`, until `shutdown`),
    /// listening before this returns. Stores the first values `config`
    /// gives for settings that have none.
    pub async fn start(
        db: Db,
        secrets: SecretBox,
        config: &Config,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<Self, SettingsError> {
        let settings = Self {
            db,
            secrets,
            cache: Arc::default(),
            instance: uuid::Uuid::now_v7().simple().to_string().into(),
        };
        if let Some(pool) = settings.db.postgres_pool().cloned() {
            let (listening, mut heard) = watch::channel(false);
            tasks.spawn(settings.clone().follow_changes(pool, listening, shutdown));
            let in_time = tokio::time::timeout(LISTEN_TIMEOUT, heard.wait_for(|up| *up))
                .await
                .is_ok_and(|listened| listened.is_ok());
            if !in_time {
                return Err(SettingsError::NotListening);
            }
        }
        if let Some(helpdesk) = &config.helpdesk {
            if settings.seed(helpdesk).await? {
                tracing::info!("helpdesk settings stored from SWITCHBOARD_HELPDESK_*");
            } else {
                tracing::info!(
                    "SWITCHBOARD_HELPDESK_* ignored: helpdesk settings are stored already \
                     (change them through /api/v1/admin/settings/helpdesk)"
                );
            }
        }
        Ok(settings)
    }

    /// Setting `T`, if it is set.
    pub async fn get<T: Setting>(&self) -> Result<Option<T>, SettingsError> {
        Ok(self.entry::<T>().await?.map(|entry| entry.value))
    }

    /// Setting `T` with when and by whom it was last changed, if it is set.
    pub async fn entry<T: Setting>(&self) -> Result<Option<Entry<T>>, SettingsError> {
        match self.row(T::KEY).await? {
            Some(row) => self.decode(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Changes setting `T` to what `change` makes of its current value, in
    /// one transaction, as `by`; every instance reads the new value from
    /// when this returns (others within moments).
    pub async fn update<T, E>(
        &self,
        by: AdminId,
        change: impl FnOnce(Option<T>) -> Result<T, E>,
    ) -> Result<Entry<T>, E>
    where
        T: Setting,
        E: From<SettingsError>,
    {
        let txn = self.db.begin_write().await.map_err(SettingsError::from)?;
        // Two changes at once on PostgreSQL: one after the other, so that
        // neither puts back a secret the other replaced.
        if self.db.backend() == Backend::Postgres {
            txn.execute_raw(self.db.statement(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                vec![format!("integration:{}", T::KEY).into()],
            ))
            .await
            .map_err(SettingsError::from)?;
        }
        let current = match store::read(&*txn, &self.db, T::KEY).await? {
            // Secrets sealed with another key are not kept: the change
            // replaces what cannot be read.
            Some(row) => match self.decode::<T>(&row) {
                Ok(entry) => Some(entry.value),
                Err(SettingsError::Sealed { key }) => {
                    tracing::warn!(
                        setting = key,
                        "a stored secret cannot be decrypted (SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY changed); the change replaces it"
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        // An error rolls the transaction back as it is dropped.
        let value = change(current)?;
        let row = Row {
            value: self.encode(&value)?,
            updated_at_ms: Some(now_ms()),
            updated_by: Some(by),
        };
        store::upsert(&*txn, &self.db, T::KEY, &row).await?;
        self.announce(&*txn, T::KEY).await?;
        txn.commit().await.map_err(SettingsError::from)?;
        self.forget(T::KEY);
        Ok(entry_of(value, &row))
    }

    /// Stores `value` unless setting `T` is stored already; whether it did.
    async fn seed<T: Setting>(&self, value: &T) -> Result<bool, SettingsError> {
        let row = Row {
            value: self.encode(value)?,
            updated_at_ms: Some(now_ms()),
            updated_by: None,
        };
        let txn = self.db.begin_write().await?;
        let stored = store::insert_absent(&*txn, &self.db, T::KEY, &row).await?;
        if stored {
            self.announce(&*txn, T::KEY).await?;
        }
        txn.commit().await?;
        if stored {
            self.forget(T::KEY);
        }
        Ok(stored)
    }

    /// The row of `key`: from memory, else from the database (and then
    /// kept, unless the key was dropped meanwhile).
    async fn row(&self, key: &'static str) -> Result<Option<Arc<Row>>, SettingsError> {
        let generation = {
            let cache = self.cache();
            if let Some(row) = cache.rows.get(key) {
                return Ok(row.clone());
            }
            cache.generation
        };
        let row = store::read(self.db.conn(), &self.db, key)
            .await?
            .map(Arc::new);
        let mut cache = self.cache_mut();
        if cache.generation == generation {
            cache.rows.insert(key.to_owned(), row.clone());
        }
        Ok(row)
    }

    fn decode<T: Setting>(&self, row: &Row) -> Result<Entry<T>, SettingsError> {
        let stored: T::Stored =
            serde::Deserialize::deserialize(&row.value).map_err(|e| SettingsError::Malformed {
                key: T::KEY,
                reason: e.to_string(),
            })?;
        Ok(entry_of(T::open(stored, &self.secrets)?, row))
    }

    fn encode<T: Setting>(&self, value: &T) -> Result<Value, SettingsError> {
        serde_json::to_value(value.seal(&self.secrets)).map_err(|e| SettingsError::Malformed {
            key: T::KEY,
            reason: e.to_string(),
        })
    }

    /// Postgres: names `key` to every instance's listener when `conn`'s
    /// transaction commits. (Changes are rare: unlike the log's appends, a
    /// NOTIFY in each changing transaction holds up nothing.)
    async fn announce(&self, conn: &impl ConnectionTrait, key: &str) -> Result<(), SettingsError> {
        if self.db.backend() == Backend::Postgres {
            conn.execute_raw(self.db.statement(
                "SELECT pg_notify($1, $2)",
                vec![
                    NOTIFY_CHANNEL.into(),
                    format!("{} {key}", self.instance).into(),
                ],
            ))
            .await?;
        }
        Ok(())
    }

    /// Postgres: drops from this instance's cache what other instances
    /// change; `listening` turns true once it first listens.
    #[tracing::instrument(name = "settings_listener", skip_all)]
    async fn follow_changes(
        self,
        pool: PgPool,
        listening: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        notifications::listen(pool, NOTIFY_CHANNEL, shutdown, |heard| match heard {
            Heard::Listening => {
                self.forget_all();
                listening.send_replace(true);
            }
            Heard::Notification(payload) => match payload.split_once(' ') {
                // This instance's own: dropped when it committed.
                Some((from, _)) if from == &*self.instance => {}
                Some((_, key)) => self.forget(key),
                None => self.forget_all(),
            },
        })
        .await;
    }

    fn forget(&self, key: &str) {
        let mut cache = self.cache_mut();
        cache.rows.remove(key);
        cache.generation = cache.generation.wrapping_add(1);
    }

    fn forget_all(&self) {
        let mut cache = self.cache_mut();
        cache.rows.clear();
        cache.generation = cache.generation.wrapping_add(1);
    }

    fn cache(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_mut(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn entry_of<T>(value: T, row: &Row) -> Entry<T> {
    Entry {
        value,
        updated_at: row.updated_at_ms.and_then(DateTime::from_timestamp_millis),
        updated_by: row.updated_by,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
