//! What every aggregate shares, and the one way anything is written.
//!
//! An aggregate is a stream of typed events with rules over it: its state
//! is folded from its events (or read from a snapshot kept in the same
//! transaction), and it decides a command against that state without any
//! I/O. A [`Command`] works on one or several aggregates; [`Commands`] is
//! the one runner every write in the product goes through:
//!
//! 1. the command's lookups ([`Command::prepare`]: read models, before it
//!    is queued);
//! 2. it is queued; commands that arrive while others are being written go
//!    together as the next group, and a group never holds an aggregate
//!    another running group holds (a hot aggregate is worked in-process, in
//!    arrival order, instead of its commands racing each other);
//! 3. the group's aggregates are loaded (snapshot or fold), each command
//!    is decided in arrival order on the state the one before left, and
//!    every stream is appended in one atomic append with its expected
//!    version, the read models with it ([`EventStore::append`]);
//! 4. the commands' other writes (sessions, outbox rows) go in the same
//!    transaction ([`Command::write`]); then it commits.
//!
//! A group that lost a race (another instance wrote one of its streams) is
//! loaded and decided again, a bounded number of times; a group that failed
//! otherwise is rolled back and its commands run one by one, so one command
//! never fails another. Every failure rolls back explicitly.

mod catalogue;
mod remembered;
mod runner;
mod work;

use std::{collections::HashMap, fmt, future::Future};

use sea_orm::{DatabaseExecutor, DbErr};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

pub use self::{
    catalogue::catalogue,
    runner::{Commands, Done},
    work::{Target, Work},
};
use crate::{
    db::WriteTxn,
    events::{
        Actor, AppendError, DecodeError, EventStore, EventType, NewEvent, RecordedEvent, StreamName,
    },
};

/// An event enum serialized as `{"type": "<catalogue name>", "payload": {…}}`
/// (`#[serde(tag = "type", content = "payload")]` with a rename per variant).
pub trait DomainEvent: Serialize + DeserializeOwned + Sized {
    /// The catalogue names of its variants (a test checks they are all
    /// here).
    const TYPES: &'static [&'static str];

    fn to_new_event(&self, actor: Actor) -> NewEvent {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        let event_type = EventType::from_trusted(
            value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let payload = value.get("payload").cloned().unwrap_or(Value::Null);
        NewEvent::new(event_type, payload, actor)
    }

    /// The stored event as this type; an event that does not decode is an
    /// error naming it, never skipped.
    fn from_recorded(event: &RecordedEvent) -> Result<Self, DecodeError> {
        serde_json::from_value(serde_json::json!({
            "type": event.event_type.as_str(),
            "payload": event.payload,
        }))
        .map_err(|e| DecodeError::of(event, e))
    }
}

/// One consistency boundary: a stream of events and the rules over it.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// The stream category (`ticket` → `ticket:<id>`).
    const CATEGORY: &'static str;
    type Event: DomainEvent + Send;
    type Command: Send;
    type Error: DomainError + Send + Sync + 'static;

    fn apply(&mut self, event: &Self::Event);

    /// The events `command` produces, or why it is refused. No I/O.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn stream(id: impl fmt::Display) -> StreamName {
        StreamName::for_id(Self::CATEGORY, id)
    }

    /// The current states and versions of the aggregates `ids` (those
    /// found) from a read model written in the same transaction as the
    /// events (so it is exactly as fresh as the streams), when the
    /// aggregate has one: long streams need not be read whole for every
    /// command. The aggregates left out are folded from their streams.
    fn snapshots(
        _conn: &DatabaseExecutor<'_>,
        _ids: &[String],
    ) -> impl Future<Output = Result<HashMap<String, Loaded<Self>>, DbErr>> + Send {
        async { Ok(HashMap::new()) }
    }
}

/// An aggregate's state with the version it was read at.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u32,
}

/// What kind of refusal a domain error is; the HTTP edge turns it into a
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// What the command is about does not exist (for this caller).
    NotFound,
    /// The aggregate's state does not allow it now.
    Conflict,
    /// The command itself is wrong.
    Invalid,
    /// Not for this caller (a blocked account, say).
    Forbidden,
}

/// A domain refusal, as the client sees it.
pub trait DomainError: std::error::Error {
    fn refusal(&self) -> Refusal;
    /// Stable and machine-readable, e.g. `ticket_closed`.
    fn code(&self) -> &'static str;
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E> {
    /// Its rules refused it. Nothing was written.
    #[error(transparent)]
    Domain(E),
    /// The log refused it or could not take it (a conflict that outlasted
    /// the retries, the database unavailable, an outcome unknown).
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Db(#[from] DbErr),
    /// Something of the command's own other writes failed that no client
    /// can do anything about (logged, answered 500).
    #[error(transparent)]
    Internal(anyhow::Error),
}

impl<E> CommandError<E> {
    /// The same failure with the refusal turned into another type.
    pub fn map_domain<F>(self, f: impl FnOnce(E) -> F) -> CommandError<F> {
        match self {
            Self::Domain(e) => CommandError::Domain(f(e)),
            Self::Append(e) => CommandError::Append(e),
            Self::Db(e) => CommandError::Db(e),
            Self::Internal(e) => CommandError::Internal(e),
        }
    }

    /// Whether it broke a unique key of a read model (the log's own key is a
    /// conflict, not this).
    pub fn is_unique_violation(&self) -> bool {
        let db = match self {
            Self::Append(AppendError::Db(e)) | Self::Db(e) => e,
            _ => return false,
        };
        matches!(
            db.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        )
    }
}

impl<E> From<DecodeError> for CommandError<E> {
    fn from(e: DecodeError) -> Self {
        Self::Append(AppendError::Decode(e))
    }
}

/// A change to one or several aggregates.
pub trait Command: Send + Sync + 'static {
    /// What the caller gets when it went through.
    type Output: Send + Sync + 'static;
    type Error: DomainError + Send + Sync + 'static;

    /// Whether [`Command::write`] writes anything: such a command is always
    /// written in a transaction.
    fn writes(&self) -> bool {
        false
    }

    /// Lookups the command needs before it can say which aggregates it
    /// works on (read models; the caller's input is already checked). Run
    /// before it is queued, and again when it is decided once more after
    /// breaking a read model's unique key (what broke it may be what the
    /// lookup now finds).
    fn prepare(
        &mut self,
        _conn: &sea_orm::DatabaseConnection,
    ) -> impl Future<Output = Result<(), CommandError<Self::Error>>> + Send {
        async { Ok(()) }
    }

    /// The aggregates it may change (and read): they are loaded before it
    /// is decided, and no other group works on them meanwhile.
    fn targets(&self) -> Vec<Target>;

    /// Decides against the targets' current states, through `work`. No
    /// I/O. May be called more than once (after a lost race).
    fn decide(&self, work: &mut Work<'_>) -> Result<Self::Output, Self::Error>;

    /// Writes besides its events, in their transaction after them
    /// (sessions, outbox rows); only called when [`Command::writes`]. A
    /// refusal here rolls back everything the command did.
    fn write<'a>(
        &'a self,
        _txn: &'a WriteTxn,
        _output: &'a mut Self::Output,
        _events: &'a [RecordedEvent],
    ) -> impl Future<Output = Result<(), CommandError<Self::Error>>> + Send + 'a {
        async { Ok(()) }
    }
}

/// One command to one aggregate, with the aggregate's state before it as
/// the output.
pub struct Decide<A: Aggregate> {
    id: String,
    command: A::Command,
}

impl<A: Aggregate> Decide<A>
where
    A::Command: Clone + Sync,
{
    pub fn new(id: impl fmt::Display, command: A::Command) -> Self {
        Self {
            id: id.to_string(),
            command,
        }
    }
}

impl<A: Aggregate> Command for Decide<A>
where
    A::Command: Clone + Sync,
{
    type Output = A;
    type Error = A::Error;

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<A>(&self.id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<A, A::Error> {
        let before = work.state::<A>(&self.id).clone();
        work.execute::<A>(&self.id, self.command.clone())?;
        Ok(before)
    }
}

/// Folds the events of one stream into its aggregate's state.
pub(crate) fn fold<A: Aggregate>(events: &[RecordedEvent]) -> Result<Loaded<A>, DecodeError> {
    let mut state = A::default();
    for event in events {
        state.apply(&A::Event::from_recorded(event)?);
    }
    Ok(Loaded {
        state,
        version: events.last().map_or(0, |e| e.version),
    })
}

/// Reads the aggregates `ids` through `conn`: snapshots where there are,
/// the others folded from their streams (one query for all of them). With
/// `verify`, a snapshot is used only if its stream is still at its version:
/// a read model that fell behind its stream (an event stored around the
/// store) would otherwise make every command on it conflict forever.
pub(crate) async fn load<A: Aggregate>(
    store: &EventStore,
    conn: &DatabaseExecutor<'_>,
    ids: &[String],
    verify: bool,
) -> Result<HashMap<String, Loaded<A>>, AppendError> {
    let mut found = A::snapshots(conn, ids).await?;
    if verify && !found.is_empty() {
        let streams: Vec<StreamName> = found.keys().map(|id| A::stream(id)).collect();
        let versions = crate::events::store::stream_versions(conn, &streams).await?;
        found.retain(|id, loaded| {
            let version = versions.get(&A::stream(id)).copied().unwrap_or(0);
            if version != loaded.version {
                tracing::warn!(
                    stream = %A::stream(id),
                    snapshot = loaded.version,
                    version,
                    "a read model is not at its stream's version: folding the stream instead"
                );
            }
            version == loaded.version
        });
    }
    let missing: Vec<&String> = ids.iter().filter(|id| !found.contains_key(*id)).collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let streams: Vec<StreamName> = missing.iter().map(|id| A::stream(id)).collect();
    let events = store.read_streams_in(conn, &streams).await?;
    for (id, stream) in missing.into_iter().zip(&streams) {
        let mine: Vec<RecordedEvent> = events
            .iter()
            .filter(|e| &e.stream == stream)
            .cloned()
            .collect();
        found.insert(id.clone(), fold::<A>(&mine)?);
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Given events, when a command, then exactly these events.

    use serde::de::DeserializeOwned;

    use super::Aggregate;

    /// The aggregate after `events`.
    pub fn given<A: Aggregate>(events: &[A::Event]) -> A {
        let mut state = A::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    /// The catalogue names serde knows for an event enum, read from the
    /// message it gives for a name it does not know.
    pub fn variant_names<E: DeserializeOwned>() -> Vec<String> {
        let Err(e) = serde_json::from_value::<E>(serde_json::json!({
            "type": "\u{1}",
            "payload": null,
        })) else {
            return Vec::new();
        };
        let message = e.to_string();
        let expected = message.split("expected").nth(1).unwrap_or_default();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }
}
