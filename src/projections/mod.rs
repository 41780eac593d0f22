//! Read models projected from the log inside the appending transaction, so a
//! read after a successful command always sees its effect.
//!
//! [`REGISTRY`] is the one list of read models: each says once which event
//! types it projects, and every write path and `projections rebuild` go
//! through it. A type no read model claims is either in [`PROJECTION_FREE`]
//! or a mistake that a test finds.
//!
//! Each read model has a plain implementation (one event at a time) and may
//! have faster ones of the same thing: several events at once, or SQL that
//! the appending statement itself runs ([`Fused`], PostgreSQL). The faster
//! ones must leave the read model exactly as the plain one does; a property
//! test runs random commands through both and compares.

pub mod rebuild;

use std::collections::HashMap;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use sea_orm::{DatabaseExecutor, DbErr, Value};

use crate::events::{AppendError, DecodeError, RecordedEvent};

/// Why a read model could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl From<ProjectionError> for AppendError {
    fn from(e: ProjectionError) -> Self {
        match e {
            ProjectionError::Db(e) => AppendError::Db(e),
            ProjectionError::Decode(e) => AppendError::Decode(e),
        }
    }
}

/// One read model.
pub trait Projection: Sync {
    /// For logs and errors.
    fn name(&self) -> &'static str;

    /// The event types it projects.
    fn handles(&self) -> &'static [&'static str];

    /// Its tables, in an order they can be emptied in (rows that point at
    /// others first).
    fn tables(&self) -> &'static [&'static str];

    /// The plain implementation: one event.
    fn apply<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// Several of its events at once, in log order (what a group of
    /// commands appends). Only a faster way to do what [`Projection::apply`]
    /// does for each in turn.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        events: &'a [&'a RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                self.apply(conn, event).await?;
            }
            Ok(())
        })
    }

    /// PostgreSQL: these events' changes as part of the statement that
    /// appends them ([`Fused`]), their parameters numbered from `$first`;
    /// `None` when it has no such form for them.
    fn fused(
        &self,
        _events: &[&RecordedEvent],
        _first: usize,
    ) -> Result<Option<Fused>, DecodeError> {
        Ok(None)
    }

    /// Keys that order `event` after other writers' (PostgreSQL): what in
    /// this read model another transaction can make valid for it by
    /// committing (one open ticket per user: closing one lets another
    /// open). A transaction appending such an event takes a lock on each of
    /// its keys before it writes anything, so it comes after the writer it
    /// waited for in the log, as it did in fact, and a replay of the log in
    /// its order meets the states the writes met. Empty for most events.
    fn ordering_keys(&self, _event: &RecordedEvent) -> Result<Vec<i32>, DecodeError> {
        Ok(Vec::new())
    }
}

/// Every read model, in the order they take a batch of events: a read model
/// whose rows point at another's comes after it.
pub static REGISTRY: &[&dyn Projection] = &[
    &crate::users::projection::Users,
    &crate::tickets::projection::Tickets,
    &crate::ledger::projection::Ledger,
    &crate::subscriptions::projection::Subscriptions,
];

/// Event types of the catalogue that no read model needs.
pub const PROJECTION_FREE: &[&str] = &[
    "referral.registered",
    "referral.reward_granted",
    "webhook.endpoint_disabled",
    "telegram.message_received",
    "telegram.update_received",
    "telegram.message_sent",
    "telegram.send_failed",
    "broadcast.created",
    "broadcast.started",
    "broadcast.progress",
    "broadcast.completed",
    "broadcast.cancelled",
    "helpdesk.message_relayed",
    "helpdesk.relay_failed",
    "helpdesk.chat_closed",
];

static BY_TYPE: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    let mut by_type = HashMap::new();
    for (n, projection) in REGISTRY.iter().enumerate() {
        for event_type in projection.handles() {
            by_type.insert(*event_type, n);
        }
    }
    by_type
});

/// The read model that projects `event_type`, if any.
pub fn projection_of(event_type: &str) -> Option<&'static dyn Projection> {
    BY_TYPE.get(event_type).map(|n| REGISTRY[*n])
}

/// Read models written by the statement that appends their events
/// (PostgreSQL): common table expressions that follow the append's
/// `written` (the rows it inserted: `id`, `position`), each beginning with
/// a comma, with their own parameters.
#[derive(Debug, Default)]
pub struct Fused {
    pub sql: String,
    pub values: Vec<Value>,
}

/// One read model's events of an append.
struct Part<'e> {
    /// Its place in [`REGISTRY`].
    projection: usize,
    events: Vec<&'e RecordedEvent>,
}

/// Which implementations the store uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Projections {
    plain: bool,
}

impl Projections {
    /// Only the plain implementations: one event at a time, always in a
    /// transaction. What the faster ones are checked against.
    pub fn plain() -> Self {
        Self { plain: true }
    }

    /// The registry's events among `events`, per read model, in registry
    /// order and each in log order.
    fn split(events: &[RecordedEvent]) -> Vec<Part<'_>> {
        let mut parts: Vec<Part<'_>> = Vec::new();
        for event in events {
            let Some(&n) = BY_TYPE.get(event.event_type.as_str()) else {
                continue;
            };
            match parts.iter_mut().find(|part| part.projection == n) {
                Some(part) => part.events.push(event),
                None => parts.push(Part {
                    projection: n,
                    events: vec![event],
                }),
            }
        }
        parts.sort_by_key(|part| part.projection);
        parts
    }

    /// `events`' read models as part of the appending statement, their
    /// parameters numbered from `$first`: `Some` only if every read model
    /// concerned has that form for its events (and no SQL at all when none
    /// is concerned).
    pub fn fused(&self, events: &[RecordedEvent], first: usize) -> Option<Fused> {
        if self.plain {
            return None;
        }
        let mut all = Fused::default();
        for part in Self::split(events) {
            let fused = REGISTRY[part.projection]
                .fused(&part.events, first + all.values.len())
                .ok()??;
            all.sql.push_str(&fused.sql);
            all.values.extend(fused.values);
        }
        Some(all)
    }

    /// The [`Projection::ordering_keys`] of `events`, sorted, each once.
    pub fn ordering_keys(&self, events: &[RecordedEvent]) -> Result<Vec<i32>, DecodeError> {
        let mut keys = Vec::new();
        for event in events {
            if let Some(&n) = BY_TYPE.get(event.event_type.as_str()) {
                keys.extend(REGISTRY[n].ordering_keys(event)?);
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Applies `events` (just appended, in this order) to every read model.
    pub async fn apply(
        &self,
        conn: &DatabaseExecutor<'_>,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for part in Self::split(events) {
            let projection = REGISTRY[part.projection];
            if self.plain || part.events.len() == 1 {
                for event in part.events {
                    projection.apply(conn, event).await?;
                }
            } else {
                projection.apply_batch(conn, &part.events).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_type_in_the_catalogue_has_a_read_model_or_is_declared_free_of_one() {
        let catalogue: HashSet<&str> = crate::domain::catalogue().into_iter().collect();
        let mut claimed = HashSet::new();
        for projection in REGISTRY {
            for event_type in projection.handles() {
                assert!(
                    catalogue.contains(event_type),
                    "{} claims `{event_type}`, which is in no event enum",
                    projection.name()
                );
                assert!(
                    claimed.insert(*event_type),
                    "`{event_type}` is claimed by two read models"
                );
            }
        }
        for event_type in PROJECTION_FREE {
            assert!(
                catalogue.contains(event_type),
                "`{event_type}` is in no event enum"
            );
            assert!(
                !claimed.contains(event_type),
                "`{event_type}` is claimed and declared free"
            );
        }
        let unclaimed: Vec<&&str> = catalogue
            .iter()
            .filter(|t| !claimed.contains(*t) && !PROJECTION_FREE.contains(t))
            .collect();
        assert!(
            unclaimed.is_empty(),
            "no read model projects {unclaimed:?}: add it to one, or to PROJECTION_FREE"
        );
    }
}
