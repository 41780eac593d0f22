//! The log tailer: one task per process that reads the log after its cursor
//! and hands every event, in log order, to in-process subscribers (the
//! WebSocket hub, the webhook and Telegram workers).
//!
//! It wakes at once when this process commits an append, on PostgreSQL also
//! when another instance does (`LISTEN/NOTIFY`; the notification carries no
//! event, only a wake-up), and otherwise polls slowly as a fallback.
//!
//! A [`Subscription`] never misses an event and never sees one twice: if it
//! falls behind the in-memory channel, or starts from an older cursor, it
//! reads the gap from the log and joins the live channel at the seam.

use std::{sync::Arc, time::Duration};

use sea_orm::DbErr;
use tokio::{
    sync::{Notify, broadcast, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    catch_up::CatchUp,
    envelope::{Cursor, RecordedEvent},
    store::EventStore,
};
use crate::db::Backend;

/// The Postgres channel that carries wake-ups between instances.
pub const NOTIFY_CHANNEL: &str = "switchboard_events";

/// Events read per query.
const BATCH: u32 = 1000;
/// Events kept in memory for subscribers that are briefly behind.
const CHANNEL_CAPACITY: usize = 8192;
/// How long events may wait behind an open transaction before a warning.
const HELD_BACK_WARNING: Duration = Duration::from_secs(10);

/// Hands out subscriptions; cheap to clone.
#[derive(Clone)]
pub struct Tailer {
    store: EventStore,
    sender: broadcast::Sender<Arc<RecordedEvent>>,
    /// The cursor of the last event sent on `sender`. Updated *before* the
    /// send, so a subscriber that reads it after subscribing is sure every
    /// later event reaches its receiver.
    published: watch::Sender<Cursor>,
}

impl Tailer {
    /// Starts the tailer (and, on Postgres, the listener and the notifier) on
    /// `tasks`; they stop when `shutdown` is cancelled.
    pub async fn start(
        store: EventStore,
        poll_interval: Duration,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<Self, DbErr> {
        let head = store.head().await?;
        let tailer = Self {
            store: store.clone(),
            sender: broadcast::Sender::new(CHANNEL_CAPACITY),
            published: watch::Sender::new(head),
        };
        let remote_wake = Arc::new(Notify::new());
        if store.db().backend() == Backend::Postgres {
            // Named in this instance's notifications, so it can tell its own
            // (its tailer was woken by the commit already) from the others'.
            let instance = uuid::Uuid::new_v4().simple().to_string();
            tasks.spawn(listen(
                store.clone(),
                instance.clone(),
                remote_wake.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(notify_other_instances(
                store.clone(),
                instance,
                shutdown.clone(),
            ));
        }
        tasks.spawn(
            tailer
                .clone()
                .run(head, poll_interval, remote_wake, shutdown),
        );
        Ok(tailer)
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> Subscription {
        let receiver = self.sender.subscribe();
        let from = *self.published.borrow();
        self.subscription(receiver, from, None)
    }

    /// Every event after `after` (read from the log first), then live events.
    pub fn subscribe_from(&self, after: Cursor) -> Subscription {
        let after = self.store.normalize(after);
        let receiver = self.sender.subscribe();
        let target = *self.published.borrow();
        self.subscription(receiver, after, Some(target))
    }

    /// Changes whenever events are handed to subscribers (also those
    /// appended by other instances).
    pub fn watch(&self) -> watch::Receiver<Cursor> {
        self.published.subscribe()
    }

    /// The cursor of the last event handed to subscribers.
    pub fn position(&self) -> Cursor {
        *self.published.borrow()
    }

    fn subscription(
        &self,
        receiver: broadcast::Receiver<Arc<RecordedEvent>>,
        last: Cursor,
        catch_up_to: Option<Cursor>,
    ) -> Subscription {
        Subscription {
            receiver,
            store: self.store.clone(),
            published: self.published.subscribe(),
            catch_up: CatchUp::new(last, catch_up_to, BATCH),
        }
    }

    #[tracing::instrument(name = "log_tailer", skip_all)]
    async fn run(
        self,
        mut cursor: Cursor,
        poll_interval: Duration,
        remote_wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) {
        let mut local_appends = self.store.db().watch_appends();
        tracing::info!(cursor = %cursor, "log tailer started");
        loop {
            local_appends.borrow_and_update();
            tracing::trace!("draining");
            cursor = self.drain(cursor, &shutdown).await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = local_appends.changed() => {}
                () = remote_wake.notified() => {}
                () = tokio::time::sleep(poll_interval) => {}
            }
        }
        tracing::info!(cursor = %cursor, "log tailer stopped");
    }

    /// Reads and publishes until nothing more is readable; returns the new cursor.
    async fn drain(&self, mut cursor: Cursor, shutdown: &CancellationToken) -> Cursor {
        let mut backoff = Duration::from_millis(1);
        let mut held_since: Option<tokio::time::Instant> = None;
        let mut warned = false;
        loop {
            if shutdown.is_cancelled() {
                return cursor;
            }
            let page = match self.store.read_all(cursor, BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "log tailer cannot read the log; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            };
            let full = page.events.len() == BATCH as usize;
            if !page.events.is_empty() {
                held_since = None;
            }
            for event in page.events {
                self.published.send_replace(event.cursor);
                // No receivers is fine: nobody is listening yet.
                let _ = self.sender.send(Arc::new(event));
            }
            cursor = page.next;
            if full {
                backoff = Duration::from_millis(1);
                continue;
            }
            if !page.pending {
                return cursor;
            }
            // Committed events wait behind an older transaction still running:
            // look again soon, backing off if that transaction is long.
            tracing::debug!(cursor = %cursor, backoff = ?backoff, "events pending behind the transaction horizon");
            let held_for = held_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed();
            if held_for > HELD_BACK_WARNING && !warned {
                // Transaction ids are cluster-wide: any transaction left open
                // (in any database of the cluster) delays the live feed.
                tracing::warn!(
                    held_for_secs = held_for.as_secs(),
                    "committed events are held back by an older transaction that is still open; \
                     look for `idle in transaction` sessions in pg_stat_activity"
                );
                warned = true;
            }
            tokio::select! {
                () = shutdown.cancelled() => return cursor,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }
}

/// Postgres: wakes the tailer when another instance appended.
#[tracing::instrument(name = "log_listener", skip_all)]
async fn listen(
    store: EventStore,
    instance: String,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    use crate::db::notifications::{self, Heard};
    let Some(pool) = store.db().postgres_pool().cloned() else {
        return;
    };
    notifications::listen(pool, NOTIFY_CHANNEL, shutdown, |heard| match heard {
        // This instance's own: its tailer knows already.
        Heard::Notification(payload) if payload == instance => {}
        Heard::Notification(_) => {
            tracing::trace!("woken by another instance");
            wake.notify_one();
        }
        // Anything appended while we were not listening is picked up here.
        Heard::Listening => wake.notify_one(),
    })
    .await;
}

/// Postgres: tells other instances that this one appended. One `NOTIFY` per
/// burst of commits rather than one per transaction: a NOTIFY inside the
/// appending transaction would serialize every commit on Postgres' queue lock.
#[tracing::instrument(name = "log_notifier", skip_all)]
async fn notify_other_instances(store: EventStore, instance: String, shutdown: CancellationToken) {
    use sea_orm::ConnectionTrait;
    let mut appends = store.db().watch_appends();
    let sql = format!("SELECT pg_notify('{NOTIFY_CHANNEL}', '{instance}')");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = appends.changed() => if changed.is_err() { return },
        }
        appends.borrow_and_update();
        tracing::trace!("notifying other instances");
        if let Err(e) = store.db().conn().execute_unprepared(&sql).await {
            tracing::warn!(error = %e, "cannot notify other instances");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("reading the log to catch up: {0}")]
    Db(#[from] DbErr),
    #[error("the log tailer has stopped")]
    Closed,
}

/// An in-order, gap-free, duplicate-free stream of events for one consumer.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<RecordedEvent>>,
    store: EventStore,
    published: watch::Receiver<Cursor>,
    catch_up: CatchUp<Arc<RecordedEvent>>,
}

impl Subscription {
    /// The cursor of the last event returned: resume from here.
    pub fn cursor(&self) -> Cursor {
        self.catch_up.cursor()
    }

    /// The next event in log order.
    pub async fn next(&mut self) -> Result<Arc<RecordedEvent>, SubscriptionError> {
        loop {
            if let Some(event) = self.catch_up.next_from_log(&self.store, Arc::new).await? {
                return Ok(event);
            }
            match self.receiver.recv().await {
                Ok(event) => {
                    // Not if it was returned from the log while catching up.
                    if let Some(event) = self.catch_up.accept(event) {
                        return Ok(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        missed,
                        "subscriber fell behind; reading the gap from the log"
                    );
                    self.catch_up.fell_behind(*self.published.borrow());
                }
                Err(broadcast::error::RecvError::Closed) => return Err(SubscriptionError::Closed),
            }
        }
    }
}
