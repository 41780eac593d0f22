//! The append-only event log: envelope, store, tailer.

pub mod envelope;
pub mod store;
pub mod tailer;

pub use envelope::{Actor, ActorKind, Cursor, EventType, NewEvent, RecordedEvent, StreamName};
pub use store::{AppendError, EventStore, ExpectedVersion, LogFilter, Page};
pub use tailer::{Subscription, SubscriptionError, Tailer};
