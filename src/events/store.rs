//! The event store: append with optimistic concurrency, read one stream, read
//! the whole log in a single global order by cursor.
//!
//! Backend-specific SQL for the log lives here and nowhere else.
//!
//! ## Gap-free reading on PostgreSQL
//!
//! Positions come from an identity column, assigned at insert; transactions
//! commit in any order, so a reader polling `position > N` can see 7 before 6
//! commits and never look back for 6. Every row records the id of the
//! transaction that wrote it (`xid8`), and readers only read rows whose
//! transaction id is below the oldest transaction still running
//! (`pg_snapshot_xmin(pg_current_snapshot())`), ordered by
//! `(transaction_id, position)`. Everything below that horizon has finished,
//! and anything that commits later has a larger transaction id, so it sorts
//! after whatever has been read: the cursor `(transaction_id, position)` never
//! needs to look back. Writers take no lock.
//!
//! On SQLite writes are serialized ([`crate::db::Db::begin_write`]), so the
//! position order is the commit order and the cursor is the position.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, SqlErr, Statement, Value as DbValue};
use serde_json::Value;

use super::envelope::{Actor, Cursor, EventType, NewEvent, RecordedEvent, StreamName, now_micros};
use crate::{
    db::{Backend, Db, WriteTxn},
    ids::EventId,
};

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u32),
}

impl ExpectedVersion {
    fn as_u32(self) -> u32 {
        match self {
            Self::NoStream => 0,
            Self::Exact(v) => v,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to the stream first (or the caller's view of it
    /// is wrong). Nothing was written.
    #[error("stream {stream} is at version {actual}, not the expected {expected}")]
    Conflict {
        stream: StreamName,
        expected: u32,
        actual: u32,
    },
    #[error("too many events in one append ({0}; at most {MAX_BATCH})")]
    TooMany(usize),
    #[error("event store: {0}")]
    Db(#[from] DbErr),
}

/// Events in one append, at most. Keeps statements within the bind-parameter
/// limits of both databases.
pub const MAX_BATCH: usize = 1000;

/// One page of the global log.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<RecordedEvent>,
    /// Resume after this (the last event's cursor, or the one passed in).
    pub next: Cursor,
    /// PostgreSQL only: events exist after `next` that are not readable yet
    /// because an older transaction is still running. Read again shortly.
    pub pending: bool,
}

#[derive(Clone)]
pub struct EventStore {
    db: Db,
}

impl EventStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Appends `events` to `stream` in a transaction of its own and commits.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let txn = self.db.begin_write().await?;
        let recorded = self.append_in(&txn, stream, expected, events).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    /// Appends within the caller's transaction (read models and outbox rows
    /// are written in the same one). The tailer is woken when it commits.
    ///
    /// On a conflict the caller must roll back: on PostgreSQL the failed
    /// statement has aborted the transaction.
    #[tracing::instrument(skip_all, fields(stream = %stream, count = events.len()))]
    pub async fn append_in(
        &self,
        txn: &WriteTxn,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if events.len() > MAX_BATCH {
            return Err(AppendError::TooMany(events.len()));
        }
        let expected_version = expected.as_u32();
        let occurred_at = now_micros();
        let mut recorded: Vec<RecordedEvent> = events
            .into_iter()
            .zip(expected_version + 1..)
            .map(|(event, version)| RecordedEvent {
                id: EventId::new(),
                position: 0,
                cursor: Cursor::START,
                stream: stream.clone(),
                version,
                event_type: event.event_type,
                payload: event.payload,
                actor: event.actor,
                occurred_at,
            })
            .collect();

        let statement = insert_statement(self.db.backend(), stream, expected_version, &recorded);
        let rows = match txn.query_all_raw(statement).await {
            Ok(rows) => rows,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A concurrent append took the same version between our check
                // and our insert. On Postgres the transaction is aborted now,
                // so the current version is read outside it.
                return Err(self.conflict(stream, expected_version).await);
            }
            Err(e) => return Err(e.into()),
        };
        if rows.len() != recorded.len() {
            // The version check in the statement failed: nothing was inserted.
            return Err(self.conflict(stream, expected_version).await);
        }
        for row in rows {
            let version: i32 = row.try_get("", "version")?;
            let position: i64 = row.try_get("", "position")?;
            let tx = match self.db.backend() {
                Backend::Postgres => parse_tx(&row)?,
                Backend::Sqlite => 0,
            };
            let index = usize::try_from(i64::from(version) - i64::from(expected_version) - 1)
                .map_err(|_| DbErr::Custom("append returned an unexpected version".into()))?;
            let event = recorded
                .get_mut(index)
                .ok_or_else(|| DbErr::Custom("append returned an unexpected version".into()))?;
            event.position = position;
            event.cursor = Cursor { tx, position };
        }
        txn.mark_appended();
        Ok(recorded)
    }

    async fn conflict(&self, stream: &StreamName, expected: u32) -> AppendError {
        match self.stream_version(stream).await {
            Ok(actual) => AppendError::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            },
            Err(e) => AppendError::Db(e),
        }
    }

    /// The version of the stream's last event (0 if it has none).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<u32, DbErr> {
        let sql = match self.db.backend() {
            Backend::Postgres => {
                "SELECT COALESCE(MAX(version), 0)::bigint AS version FROM events WHERE stream = $1"
            }
            Backend::Sqlite => {
                "SELECT COALESCE(MAX(version), 0) AS version FROM events WHERE stream = ?"
            }
        };
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                sql,
                [DbValue::from(stream.as_str())],
            ))
            .await?;
        let version: i64 = match row {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        Ok(u32::try_from(version).unwrap_or(0))
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &StreamName) -> Result<Vec<RecordedEvent>, DbErr> {
        let sql = match self.db.backend() {
            Backend::Postgres => {
                format!("SELECT {PG_COLUMNS} FROM events WHERE stream = $1 ORDER BY version")
            }
            Backend::Sqlite => {
                format!("SELECT {SQLITE_COLUMNS} FROM events WHERE stream = ? ORDER BY version")
            }
        };
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                sql,
                [DbValue::from(stream.as_str())],
            ))
            .await?;
        rows.iter()
            .map(|row| decode(self.db.backend(), row))
            .collect()
    }

    /// Up to `limit` events after `after`, in the global order.
    pub async fn read_all(&self, after: Cursor, limit: u32) -> Result<Page, DbErr> {
        let backend = self.db.backend();
        let limit = limit.clamp(1, 10_000);
        let statement = match backend {
            Backend::Postgres => Statement::from_sql_and_values(
                self.db.database_backend(),
                format!(
                    "SELECT {PG_COLUMNS} FROM events \
                     WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY transaction_id, position LIMIT $3"
                ),
                [
                    DbValue::from(after.tx.to_string()),
                    DbValue::from(after.position),
                    DbValue::from(i64::from(limit)),
                ],
            ),
            Backend::Sqlite => Statement::from_sql_and_values(
                self.db.database_backend(),
                format!(
                    "SELECT {SQLITE_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
                ),
                [
                    DbValue::from(after.position),
                    DbValue::from(i64::from(limit)),
                ],
            ),
        };
        let rows = self.db.conn().query_all_raw(statement).await?;
        let events = rows
            .iter()
            .map(|row| decode(backend, row))
            .collect::<Result<Vec<_>, _>>()?;
        let next = events.last().map_or(after, |e| e.cursor);
        let pending = backend == Backend::Postgres
            && events.len() < limit as usize
            && self.has_unreadable_after(next).await?;
        Ok(Page {
            events,
            next,
            pending,
        })
    }

    /// Postgres: are there rows after `cursor` held back by the horizon?
    async fn has_unreadable_after(&self, cursor: Cursor) -> Result<bool, DbErr> {
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                "SELECT EXISTS (SELECT 1 FROM events \
                   WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                     AND transaction_id >= pg_snapshot_xmin(pg_current_snapshot())) AS pending",
                [
                    DbValue::from(cursor.tx.to_string()),
                    DbValue::from(cursor.position),
                ],
            ))
            .await?;
        match row {
            Some(row) => row.try_get("", "pending"),
            None => Ok(false),
        }
    }

    /// The cursor of the last readable event (where a live feed starts).
    pub async fn head(&self) -> Result<Cursor, DbErr> {
        let backend = self.db.backend();
        let sql = match backend {
            Backend::Postgres => {
                "SELECT transaction_id::text AS tx, position FROM events \
                 WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY transaction_id DESC, position DESC LIMIT 1"
            }
            Backend::Sqlite => "SELECT position FROM events ORDER BY position DESC LIMIT 1",
        };
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_string(self.db.database_backend(), sql))
            .await?;
        let Some(row) = row else {
            return Ok(Cursor::START);
        };
        let position: i64 = row.try_get("", "position")?;
        let tx = match backend {
            Backend::Postgres => parse_tx(&row)?,
            Backend::Sqlite => 0,
        };
        Ok(Cursor { tx, position })
    }
}

const PG_COLUMNS: &str = "position, id, stream, version, type, payload, actor, occurred_at, \
                          transaction_id::text AS tx";
const SQLITE_COLUMNS: &str = "position, id, stream, version, type, payload, actor, occurred_at";

/// One statement that inserts all events only if the stream is at the
/// expected version; it returns no rows otherwise. A concurrent append that
/// passed the same check fails on the `(stream, version)` unique key.
fn insert_statement(
    backend: Backend,
    stream: &StreamName,
    expected: u32,
    events: &[RecordedEvent],
) -> Statement {
    let mut values: Vec<DbValue> = Vec::with_capacity(events.len() * 6 + 3);
    let mut rows = Vec::with_capacity(events.len());
    match backend {
        Backend::Postgres => {
            values.push(stream.as_str().into());
            values.push(i64::from(expected).into());
            for event in events {
                let n = values.len();
                rows.push(format!(
                    "(${}::uuid, ${}::int, ${}::text, ${}::jsonb, ${}::jsonb, ${}::timestamptz)",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6
                ));
                values.push(event.id.as_uuid().into());
                values.push(i64::from(event.version).into());
                values.push(event.event_type.as_str().into());
                values.push(DbValue::Json(Some(Box::new(event.payload.clone()))));
                values.push(DbValue::Json(Some(Box::new(actor_json(&event.actor)))));
                values.push(event.occurred_at.into());
            }
            let sql = format!(
                "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
                 SELECT v.id, $1, v.version, v.type, v.payload, v.actor, v.occurred_at \
                 FROM (VALUES {}) AS v(id, version, type, payload, actor, occurred_at) \
                 WHERE (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = $1) = $2 \
                 RETURNING position, version, transaction_id::text AS tx",
                rows.join(", ")
            );
            Statement::from_sql_and_values(sea_orm::DatabaseBackend::Postgres, sql, values)
        }
        Backend::Sqlite => {
            // Numbered parameters: ?1 is the stream, ?2 the expected version.
            values.push(stream.as_str().into());
            values.push(i64::from(expected).into());
            for event in events {
                let n = values.len();
                rows.push(format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6
                ));
                values.push(event.id.to_string().into());
                values.push(i64::from(event.version).into());
                values.push(event.event_type.as_str().into());
                values.push(event.payload.to_string().into());
                values.push(actor_json(&event.actor).to_string().into());
                values.push(sqlite_timestamp(event.occurred_at).into());
            }
            let sql = format!(
                "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
                 SELECT column1, ?1, column2, column3, column4, column5, column6 \
                 FROM (VALUES {}) \
                 WHERE (SELECT COALESCE(MAX(version), 0) FROM events WHERE stream = ?1) = ?2 \
                 RETURNING position, version",
                rows.join(", ")
            );
            Statement::from_sql_and_values(sea_orm::DatabaseBackend::Sqlite, sql, values)
        }
    }
}

fn actor_json(actor: &Actor) -> Value {
    serde_json::to_value(actor).unwrap_or(Value::Null)
}

/// RFC 3339 in UTC with microseconds: sorts as text, parses back exactly.
fn sqlite_timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_tx(row: &QueryResult) -> Result<u64, DbErr> {
    let tx: String = row.try_get("", "tx")?;
    tx.parse()
        .map_err(|_| DbErr::Custom(format!("unexpected transaction id `{tx}`")))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(format!("event log row has an unreadable {what}: {e}"))
}

fn decode(backend: Backend, row: &QueryResult) -> Result<RecordedEvent, DbErr> {
    let position: i64 = row.try_get("", "position")?;
    let stream: String = row.try_get("", "stream")?;
    let version: i32 = row.try_get("", "version")?;
    let event_type: String = row.try_get("", "type")?;
    let (id, payload, actor, occurred_at, tx) = match backend {
        Backend::Postgres => {
            let id: uuid::Uuid = row.try_get("", "id")?;
            let payload: Value = row.try_get("", "payload")?;
            let actor: Value = row.try_get("", "actor")?;
            let occurred_at: DateTime<Utc> = row.try_get("", "occurred_at")?;
            (id, payload, actor, occurred_at, parse_tx(row)?)
        }
        Backend::Sqlite => {
            let id: String = row.try_get("", "id")?;
            let payload: String = row.try_get("", "payload")?;
            let actor: String = row.try_get("", "actor")?;
            let occurred_at: String = row.try_get("", "occurred_at")?;
            (
                id.parse().map_err(|e| corrupt("id", e))?,
                serde_json::from_str(&payload).map_err(|e| corrupt("payload", e))?,
                serde_json::from_str(&actor).map_err(|e| corrupt("actor", e))?,
                DateTime::parse_from_rfc3339(&occurred_at)
                    .map_err(|e| corrupt("timestamp", e))?
                    .with_timezone(&Utc),
                0,
            )
        }
    };
    Ok(RecordedEvent {
        id: EventId::from_uuid(id),
        position,
        cursor: Cursor { tx, position },
        stream: StreamName::parse(&stream).map_err(|e| corrupt("stream", e))?,
        version: u32::try_from(version).map_err(|e| corrupt("version", e))?,
        event_type: EventType::parse(&event_type).map_err(|e| corrupt("type", e))?,
        payload,
        actor: serde_json::from_value(actor).map_err(|e| corrupt("actor", e))?,
        occurred_at,
    })
}
