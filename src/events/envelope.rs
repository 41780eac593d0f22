//! What an event is, as written and as read back, and its wire envelope (the
//! same JSON on the WebSocket and in webhook bodies; see DESIGN.md).

use std::{cmp::Ordering, fmt, str::FromStr};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize, Serializer, ser::SerializeStruct};
use serde_json::Value;

use crate::ids::EventId;

/// A stream name: `<category>:<id>`, e.g. `user:0193a5c2-…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamName(String);

/// A name a client subscribes to: lowercase, dotted, e.g. `ticket.message_added`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("stream name must look like `category:id` (at most 200 characters, no spaces)")]
    Stream,
    #[error(
        "event type must be lowercase dotted words such as `ticket.created` (at most 100 characters)"
    )]
    EventType,
}

impl StreamName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let (category, id) = raw.split_once(':').ok_or(NameError::Stream)?;
        let valid = raw.len() <= 200
            && !category.is_empty()
            && !id.is_empty()
            && category
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            && raw.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(NameError::Stream)
        }
    }

    /// `category:id` from parts the caller controls (e.g. a typed id).
    pub fn of(category: &str, id: impl fmt::Display) -> Result<Self, NameError> {
        Self::parse(&format!("{category}:{id}"))
    }

    /// `category:<uuid>` for a literal category: always valid (the domain
    /// tests cover every category used).
    pub(crate) fn for_id(category: &'static str, id: impl fmt::Display) -> Self {
        Self(format!("{category}:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl EventType {
    /// For names that come from the code's own event enums (their serde
    /// renames), which the domain tests check against [`EventType::parse`].
    pub(crate) fn from_trusted(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let valid = !raw.is_empty()
            && raw.len() <= 100
            && raw.split('.').all(|word| {
                !word.is_empty()
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            });
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(NameError::EventType)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused an event: `{"kind", "id"}`, the id `null` for the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Admin,
    ApiKey,
    Telegram,
    System,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            kind: ActorKind::System,
            id: None,
        }
    }

    pub fn new(kind: ActorKind, id: impl fmt::Display) -> Self {
        Self {
            kind,
            id: Some(id.to_string()),
        }
    }
}

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: EventType,
    pub payload: Value,
    pub actor: Actor,
}

impl NewEvent {
    pub fn new(event_type: EventType, payload: Value, actor: Actor) -> Self {
        Self {
            event_type,
            payload,
            actor,
        }
    }
}

/// A position in the global order of the log. Opaque to clients; they get it
/// as a string and hand it back to resume.
///
/// On PostgreSQL the order is `(transaction id, position)`, which is the order
/// in which events become visible; on SQLite the transaction part is always 0
/// and the order is the position. A cursor also names the log it is from
/// (a random id each database gets when it is created), so that one from
/// another log (a database reset or replaced) is told apart instead of
/// resumed from; it takes no part in the order or in equality. Cursors
/// without it (`START`, and those written before logs had ids) fit any log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cursor {
    pub(crate) tx: u64,
    pub(crate) position: i64,
    /// The log's id; 0: not known.
    pub(crate) log: u32,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor {
        tx: 0,
        position: 0,
        log: 0,
    };

    pub fn position(&self) -> i64 {
        self.position
    }

    /// Whether it is from a log other than `log` (as far as it says).
    pub fn is_from_another_log(&self, log: u32) -> bool {
        self.log != 0 && log != 0 && self.log != log
    }
}

impl PartialEq for Cursor {
    fn eq(&self, other: &Self) -> bool {
        (self.tx, self.position) == (other.tx, other.position)
    }
}

impl Eq for Cursor {}

impl std::hash::Hash for Cursor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.tx, self.position).hash(state);
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.tx, self.position).cmp(&(other.tx, other.position))
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx, self.position)?;
        if self.log != 0 {
            write!(f, "-{}", self.log)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor: pass back a `cursor` value exactly as the server sent it")]
pub struct CursorError;

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('-');
        let mut number = || parts.next().ok_or(CursorError);
        let tx = number()?.parse().map_err(|_| CursorError)?;
        let position: i64 = number()?.parse().map_err(|_| CursorError)?;
        let log = match parts.next() {
            None => 0,
            Some(log) => log.parse().map_err(|_| CursorError)?,
        };
        if position < 0 || parts.next().is_some() {
            return Err(CursorError);
        }
        Ok(Self { tx, position, log })
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub id: EventId,
    pub position: i64,
    pub cursor: Cursor,
    pub stream: StreamName,
    pub version: u32,
    pub event_type: EventType,
    pub payload: Value,
    pub actor: Actor,
    pub occurred_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The wire envelope as JSON text.
    pub fn to_envelope_json(&self) -> String {
        // Serializing these types cannot fail (string keys, no maps with
        // non-string keys), so the fallback is never taken.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The wire envelope (DESIGN.md, "Event envelope").
impl Serialize for RecordedEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 9)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("type", self.event_type.as_str())?;
        s.serialize_field("position", &self.position)?;
        s.serialize_field("cursor", &self.cursor)?;
        s.serialize_field("stream", self.stream.as_str())?;
        s.serialize_field("version", &self.version)?;
        s.serialize_field(
            "timestamp",
            &self
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        )?;
        s.serialize_field("actor", &self.actor)?;
        s.serialize_field("payload", &self.payload)?;
        s.end()
    }
}

/// The current time at the precision both databases store (microseconds).
pub(crate) fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn cursor_round_trips_and_orders_by_transaction_then_position() {
        let a = Cursor {
            tx: 7,
            position: 90,
            log: 41,
        };
        let b = Cursor {
            tx: 8,
            position: 3,
            log: 41,
        };
        assert!(a < b);
        assert_eq!(a.to_string(), "7-90-41");
        let back: Cursor = a.to_string().parse().unwrap();
        assert_eq!((back, back.log), (a, 41));
        // Without a log id (START, or written before logs had one).
        let old: Cursor = "7-90".parse().unwrap();
        assert_eq!((old, old.log), (a, 0));
        assert!(!old.is_from_another_log(41));
        assert!(!a.is_from_another_log(41));
        assert!(a.is_from_another_log(42));
        assert_eq!(Cursor::START.to_string(), "0-0");
        assert!("".parse::<Cursor>().is_err());
        assert!("7".parse::<Cursor>().is_err());
        assert!("x-1".parse::<Cursor>().is_err());
        assert!("1--1".parse::<Cursor>().is_err());
        assert!("1-2-x".parse::<Cursor>().is_err());
        assert!("1-2-3-4".parse::<Cursor>().is_err());
    }

    #[test]
    fn stream_and_type_names_are_validated() {
        assert!(StreamName::parse("ticket:0193a5c2").is_ok());
        assert!(StreamName::parse("ticket").is_err());
        assert!(StreamName::parse("Ticket:1").is_err());
        assert!(StreamName::parse("ticket:a b").is_err());
        assert!(EventType::parse("ticket.message_added").is_ok());
        assert!(EventType::parse("ticket..x").is_err());
        assert!(EventType::parse("Ticket.created").is_err());
    }

    #[test]
    fn envelope_has_the_documented_fields_and_millisecond_utc_timestamp() {
        let event = RecordedEvent {
            id: EventId::new(),
            position: 4812,
            cursor: Cursor {
                tx: 1,
                position: 4812,
                log: 7,
            },
            stream: StreamName::parse("ticket:1").unwrap(),
            version: 3,
            event_type: EventType::parse("ticket.message_added").unwrap(),
            payload: json!({"text": "hi"}),
            actor: Actor::new(ActorKind::User, "u1"),
            occurred_at: DateTime::parse_from_rfc3339("2026-11-21T10:30:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let json: Value = serde_json::from_str(&event.to_envelope_json()).unwrap();
        assert_eq!(json["type"], "ticket.message_added");
        assert_eq!(json["position"], 4812);
        assert_eq!(json["cursor"], "1-4812-7");
        assert_eq!(json["stream"], "ticket:1");
        assert_eq!(json["version"], 3);
        assert_eq!(json["timestamp"], "2026-11-21T10:30:00.123Z");
        assert_eq!(json["actor"], json!({"kind": "user", "id": "u1"}));
        let system = serde_json::to_value(Actor::system()).unwrap();
        assert_eq!(system, json!({"kind": "system", "id": null}));
        assert_eq!(json["payload"], json!({"text": "hi"}));
        assert_eq!(json["id"], event.id.to_string());
    }
}
