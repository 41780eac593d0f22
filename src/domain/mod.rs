//! What every aggregate shares: typed events with catalogue names, state
//! folded from a stream, commands decided against it (pure), and the runner
//! that loads, decides and appends in the caller's transaction.

use std::{collections::HashMap, fmt};

mod group;

use actix_web::http::StatusCode;
use sea_orm::DbErr;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    db::WriteTxn,
    error::{ApiError, Problem},
    events::{
        Actor, AppendError, EventStore, EventType, ExpectedVersion, NewEvent, RecordedEvent,
        StreamName,
    },
};

/// An event enum serialized as `{"type": "<catalogue name>", "payload": {…}}`
/// (`#[serde(tag = "type", content = "payload")]` with a rename per variant).
pub trait DomainEvent: Serialize + DeserializeOwned + Sized {
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

    fn from_recorded(event: &RecordedEvent) -> Option<Self> {
        serde_json::from_value(serde_json::json!({
            "type": event.event_type.as_str(),
            "payload": event.payload,
        }))
        .ok()
    }
}

/// One consistency boundary: a stream of events and the rules over it.
pub trait Aggregate: Default {
    /// The stream category (`ticket` → `ticket:<id>`).
    const CATEGORY: &'static str;
    type Event: DomainEvent;
    type Command;
    type Error: DomainError;

    fn apply(&mut self, event: &Self::Event);

    /// The events `command` produces, or why it is refused. No I/O.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    fn stream(id: impl fmt::Display) -> StreamName {
        StreamName::for_id(Self::CATEGORY, id)
    }

    /// The current states and versions of the aggregates `ids` (those
    /// found) from a read model that is written in the same transaction as
    /// the events (so it is exactly as fresh as the streams), when the
    /// aggregate has one: long streams need not be read whole for every
    /// command. The aggregates left out are folded from their streams.
    fn snapshots(
        _conn: &impl sea_orm::ConnectionTrait,
        _ids: &[String],
    ) -> impl std::future::Future<Output = Result<HashMap<String, Loaded<Self>>, DbErr>> + Send
    where
        Self: Sized,
    {
        async { Ok(HashMap::new()) }
    }
}

/// A domain refusal, as the client sees it.
pub trait DomainError: std::error::Error {
    fn status(&self) -> StatusCode;
    /// Stable and machine-readable, e.g. `ticket_closed`.
    fn code(&self) -> &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: DomainError> {
    #[error(transparent)]
    Domain(E),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Db(#[from] DbErr),
}

impl<E: DomainError> From<CommandError<E>> for ApiError {
    fn from(err: CommandError<E>) -> Self {
        match err {
            CommandError::Domain(e) => Problem::new(e.status(), e.code(), "Refused")
                .detail(e.to_string())
                .into(),
            CommandError::Append(e) => e.into(),
            CommandError::Db(e) => e.into(),
        }
    }
}

/// An aggregate's state with the version it was read at.
#[derive(Clone)]
pub struct Loaded<A> {
    pub state: A,
    pub version: u32,
}

/// Folds the aggregate's stream (read through `conn`).
pub async fn load<A: Aggregate>(
    store: &EventStore,
    conn: &impl sea_orm::ConnectionTrait,
    id: impl fmt::Display,
) -> Result<Loaded<A>, DbErr> {
    let history = store.read_stream_in(conn, &A::stream(id)).await?;
    let mut state = A::default();
    for event in history.iter().filter_map(A::Event::from_recorded) {
        state.apply(&event);
    }
    Ok(Loaded {
        state,
        version: history.last().map_or(0, |e| e.version),
    })
}

/// Loads, decides and appends (with the read models) within `txn`. A
/// concurrent change to the same aggregate is a 409 conflict; nothing is
/// written then.
pub async fn execute<A: Aggregate>(
    store: &EventStore,
    txn: &WriteTxn,
    id: impl fmt::Display + Copy,
    command: A::Command,
    actor: Actor,
) -> Result<Vec<RecordedEvent>, CommandError<A::Error>> {
    Ok(decide_and_append::<A>(store, txn, id, command, actor)
        .await?
        .events)
}

/// What a command did: the aggregate's state it decided on, and the events
/// it appended.
pub struct Executed<A> {
    pub before: A,
    pub events: Vec<RecordedEvent>,
}

/// The aggregates `ids` as of `txn`: from their snapshots where there are
/// any, else folded from their streams.
async fn load_all<A: Aggregate>(
    store: &EventStore,
    conn: &impl sea_orm::ConnectionTrait,
    ids: &[String],
) -> Result<HashMap<String, Loaded<A>>, DbErr> {
    let mut found = A::snapshots(conn, ids).await?;
    for id in ids {
        if !found.contains_key(id) {
            found.insert(id.clone(), load::<A>(store, conn, id).await?);
        }
    }
    Ok(found)
}

async fn decide_and_append<A: Aggregate>(
    store: &EventStore,
    txn: &WriteTxn,
    id: impl fmt::Display + Copy,
    command: A::Command,
    actor: Actor,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let id = id.to_string();
    let loaded = load_all::<A>(store, &**txn, std::slice::from_ref(&id))
        .await?
        .remove(&id)
        .unwrap_or_else(|| Loaded {
            state: A::default(),
            version: 0,
        });
    let decided = loaded.state.decide(command).map_err(CommandError::Domain)?;
    if decided.is_empty() {
        return Ok(Executed {
            before: loaded.state,
            events: Vec::new(),
        });
    }
    let expected = match loaded.version {
        0 => ExpectedVersion::NoStream,
        v => ExpectedVersion::Exact(v),
    };
    let events = decided
        .iter()
        .map(|e| e.to_new_event(actor.clone()))
        .collect();
    let events = store
        .append_in(txn, &A::stream(&id), expected, events)
        .await?;
    Ok(Executed {
        before: loaded.state,
        events,
    })
}

/// Runs one command and commits, in a group with whatever other commands
/// to this kind of aggregate arrive meanwhile ([`group`]). When the group
/// cannot settle it, it runs alone in a transaction of its own, retrying
/// (up to 5 times, from a fresh read) when a concurrent change to the same
/// aggregate got there first: two replies to one ticket both land.
pub async fn run<A>(
    store: &EventStore,
    id: impl fmt::Display + Copy,
    command: impl Fn() -> A::Command,
    actor: Actor,
) -> Result<Vec<RecordedEvent>, CommandError<A::Error>>
where
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Command: Send + 'static,
    A::Error: Send + 'static,
{
    Ok(run_executed::<A>(store, id, command, actor).await?.events)
}

/// [`run`], also returning the state the command was decided on.
pub async fn run_executed<A>(
    store: &EventStore,
    id: impl fmt::Display + Copy,
    command: impl Fn() -> A::Command,
    actor: Actor,
) -> Result<Executed<A>, CommandError<A::Error>>
where
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Command: Send + 'static,
    A::Error: Send + 'static,
{
    match group::submit::<A>(store, id.to_string(), command(), actor.clone()).await {
        group::Outcome::Settled(result) => result,
        group::Outcome::Alone => run_alone::<A>(store, id, command, actor).await,
    }
}

/// Runs one command in a transaction of its own and commits, retrying on a
/// conflict.
async fn run_alone<A: Aggregate>(
    store: &EventStore,
    id: impl fmt::Display + Copy,
    command: impl Fn() -> A::Command,
    actor: Actor,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let txn = store.db().begin_write().await?;
        let error = match decide_and_append::<A>(store, &txn, id, command(), actor.clone()).await {
            Ok(executed) => {
                txn.commit().await?;
                return Ok(executed);
            }
            Err(e) => e,
        };
        // Rolled back before the SQLite write lock is let go: a dropped
        // transaction may not have rolled back yet when the next writer
        // starts, which then finds the database locked.
        let _ = txn.rollback().await;
        match error {
            CommandError::Append(AppendError::Conflict { .. }) if attempt < 5 => {
                // A little jitter so racing writers do not collide again.
                let jitter = u64::from(rand::random::<u8>() % 10);
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            e => return Err(e),
        }
    }
}
