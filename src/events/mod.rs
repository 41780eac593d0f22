//! The append-only event log: envelope, store, tailer.

pub mod catch_up;
pub mod envelope;
pub mod store;
pub mod tailer;
pub mod type_filter;

pub use envelope::{Actor, ActorKind, Cursor, EventType, NewEvent, RecordedEvent, StreamName};
pub use store::{Append, AppendError, DecodeError, EventStore, ExpectedVersion, LogFilter, Page};
pub use tailer::{Subscription, SubscriptionError, Tailer};
pub use type_filter::{TypeFilter, TypePattern, TypePatternError};
