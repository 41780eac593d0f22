//! The broadcast worker of one instance: starts scheduled broadcasts at
//! their time, tells each running one's progress (at most once a second,
//! however many instances run) and completes it once every recipient's
//! message ended. Every step is a command: two instances taking the same
//! step take it once.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    audience::{self, Audience},
    domain::{BroadcastError, BroadcastStatus, BroadcastStep, Step},
    store,
};
use crate::{
    db::Db,
    domain::{CommandError, Commands},
    events::Actor,
};

pub struct Worker {
    pub db: Db,
    pub commands: Commands,
    /// Woken when a broadcast is created or cancelled.
    pub wake: Arc<Notify>,
    /// Woken when a broadcast queued its sends.
    pub sends: Arc<Notify>,
}

impl Worker {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "cannot move broadcasts on");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn tick(&self) -> anyhow::Result<()> {
        let now = Utc::now().timestamp_millis();
        // One broadcast that cannot move on holds up none of the others.
        for id in store::ids_in(&self.db, BroadcastStatus::Scheduled, now).await? {
            if let Err(e) = self.start(&id).await {
                tracing::warn!(broadcast = %id, error = %e, "cannot start a broadcast");
            }
        }
        for id in store::ids_in(&self.db, BroadcastStatus::Running, i64::MAX).await? {
            if let Err(e) = self.move_on(&id).await {
                tracing::warn!(broadcast = %id, error = %e, "cannot move a broadcast on");
            }
        }
        Ok(())
    }

    /// Tells a running broadcast's progress, or completes it once every
    /// recipient's message ended.
    async fn move_on(&self, id: &str) -> anyhow::Result<()> {
        let Some(row) = store::get(self.db.conn(), &self.db, id).await? else {
            return Ok(());
        };
        let counts = store::counts(self.db.conn(), &self.db, id).await?;
        if counts.queued == 0 {
            if self.step(id, Step::Complete { counts }).await? {
                tracing::info!(broadcast = %id, sent = counts.sent, failed = counts.failed, blocked = counts.blocked, unknown = counts.unknown, "a broadcast completed");
            }
        } else {
            let rate = super::rate(&counts, row.started_at_ms, None);
            self.step(id, Step::Progress { counts, rate }).await?;
        }
        Ok(())
    }

    /// Resolves a scheduled broadcast's audience and starts it.
    async fn start(&self, id: &str) -> anyhow::Result<()> {
        let Some(row) = store::get(self.db.conn(), &self.db, id).await? else {
            return Ok(());
        };
        let audience: Audience = serde_json::from_value(row.audience.clone())?;
        let (members, left_out) = audience::resolve(self.db.conn(), &audience).await?;
        let total = members.len();
        let resolved = super::resolved(&row, members, left_out);
        if self.step(id, Step::Start(resolved)).await? {
            crate::telegram::outbox::queued_in_bulk(&self.db, total).await;
            self.sends.notify_one();
            tracing::info!(broadcast = %id, total, "a scheduled broadcast started");
        }
        Ok(())
    }

    /// Takes `step`; whether this instance took it (another may have).
    async fn step(&self, id: &str, step: Step) -> anyhow::Result<bool> {
        let step = BroadcastStep {
            db: self.db.clone(),
            id: id.to_owned(),
            step,
            at: Utc::now(),
        };
        match self.commands.run(step, Actor::system()).await {
            Ok(done) => Ok(!done.events.is_empty()),
            // Another instance took it, or it was cancelled meanwhile.
            Err(CommandError::Domain(
                BroadcastError::Started | BroadcastError::Ended | BroadcastError::NotFound,
            )) => Ok(false),
            Err(e) => Err(anyhow::anyhow!("broadcast {id}: {e}")),
        }
    }
}
