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

use std::{
    any::{Any, TypeId},
    collections::{HashMap, HashSet},
    sync::{Arc, PoisonError},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DbErr, QueryResult, SqlErr, Statement, Value as DbValue, sea_query::ArrayType,
};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc, oneshot};

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
    #[error("stream {stream} is not at the expected version {expected}{}", actual.map(|a| format!(" (it is at {a})")).unwrap_or_default())]
    Conflict {
        stream: StreamName,
        expected: u32,
        /// The stream's version, when it was read.
        actual: Option<u32>,
    },
    #[error("too many events in one append ({0}; at most {MAX_BATCH})")]
    TooMany(usize),
    /// The database could not be reached (pool timeout, lost connection).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("event store: {0}")]
    Db(#[from] DbErr),
}

/// Events in one append, at most. Keeps statements within the bind-parameter
/// limits of both databases.
pub const MAX_BATCH: usize = 1000;

/// Which events to read: an exact type or a `prefix.*` wildcard, and/or one
/// stream.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub event_type: Option<String>,
    pub stream: Option<String>,
}

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

/// An append on its way to the database: ids, versions and time assigned.
struct PendingAppend {
    stream: StreamName,
    expected: u32,
    events: Vec<RecordedEvent>,
}

type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, AppendError>>;

/// Group-commit writers on PostgreSQL: concurrent appends that arrive while
/// the writers are busy go to the database together, in one statement.
const POSTGRES_WRITERS: usize = 4;

/// State shared by every clone of a store, one value per type (the domain's
/// command queues).
type Shared = std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>;

#[derive(Clone)]
pub struct EventStore {
    db: Db,
    queue: mpsc::Sender<(PendingAppend, Reply)>,
    shared: Arc<Shared>,
}

impl EventStore {
    /// Also starts the group-commit writers; they stop when the last clone
    /// of the store is dropped. Must be called inside a Tokio runtime.
    pub fn new(db: Db) -> Self {
        let (queue, receiver) = mpsc::channel(4 * MAX_BATCH);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match db.backend() {
            Backend::Postgres => POSTGRES_WRITERS,
            // SQLite has one writer at a time anyway.
            Backend::Sqlite => 1,
        };
        for _ in 0..writers {
            tokio::spawn(group_commit(db.clone(), receiver.clone()));
        }
        Self {
            db,
            queue,
            shared: Arc::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The one `T` every clone of this store shares, made on first use.
    pub(crate) fn shared<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let value = shared
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        // Stored under T's own type id, so it is a T.
        value
            .downcast::<T>()
            .unwrap_or_else(|_| Arc::new(T::default()))
    }

    /// Appends `events` to `stream` on their own, atomically.
    ///
    /// Appends that arrive together are written together: one statement,
    /// one commit, each still checked against its own expected version, so
    /// one append's conflict never fails another.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        if events
            .iter()
            .any(|e| crate::projections::projects(e.event_type.as_str()))
        {
            // Read models change with these: one transaction for both.
            let txn = self.db.begin_write().await?;
            let recorded = self.append_in(&txn, stream, expected, events).await?;
            txn.commit().await?;
            return Ok(recorded);
        }
        let pending = prepare(stream, expected, events)?;
        if pending.events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((pending, reply))
            .await
            .map_err(|_| DbErr::Custom("the event store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| DbErr::Custom("the event store writer stopped".into()))?
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
        let mut pending = prepare(stream, expected, events)?;
        if pending.events.is_empty() {
            return Ok(Vec::new());
        }
        let written = match insert(&**txn, self.db.backend(), &[&pending], None).await {
            Ok(written) => written,
            Err(e) if is_unique_violation(&e) => {
                // The transaction is aborted (Postgres) and reading on another
                // pool connection while holding this one could starve the
                // pool under load: the current version is left unknown.
                return Err(AppendError::Conflict {
                    stream: pending.stream.clone(),
                    expected: pending.expected,
                    actual: None,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !fill_cursors(&mut pending, &written) {
            // The transaction is still usable: read the version through it
            // rather than waiting for a second connection.
            return Err(
                match current_version_in(&**txn, self.db.backend(), &pending.stream).await {
                    Ok(actual) => AppendError::Conflict {
                        stream: pending.stream.clone(),
                        expected: pending.expected,
                        actual: Some(actual),
                    },
                    Err(e) => AppendError::Db(e),
                },
            );
        }
        crate::projections::apply(&**txn, &pending.events).await?;
        txn.mark_appended();
        Ok(pending.events)
    }

    /// Appends to several streams within the caller's transaction, with
    /// their read models: the events of all of them in one statement, each
    /// append checked against its own expected version. An append whose
    /// stream has moved is not written (`None` in its place); the others
    /// are. One append per stream.
    ///
    /// Any error (a unique key of the log or of a read model, say) has
    /// aborted the transaction on PostgreSQL: the caller must roll back.
    pub async fn append_many_in(
        &self,
        txn: &WriteTxn,
        appends: Vec<(StreamName, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Result<Vec<Option<Vec<RecordedEvent>>>, AppendError> {
        let mut pending = prepare_all(appends)?;
        let order = in_stream_order(&pending);
        if order.is_empty() {
            return Ok(pending.into_iter().map(|p| Some(p.events)).collect());
        }
        let written = insert(&**txn, self.db.backend(), &order, None).await?;
        // The read models take every written event at once, in one list.
        let (appended, counts) = take_written(&mut pending, &written);
        crate::projections::apply(&**txn, &appended).await?;
        if !appended.is_empty() {
            txn.mark_appended();
        }
        Ok(split_written(appended, counts))
    }

    /// Whether [`EventStore::append_many_once`] can take these events: on
    /// PostgreSQL, when every one's read models can be written by the
    /// statement that appends it ([`crate::projections::fusable`]).
    pub fn appends_once<'a>(&self, mut events: impl Iterator<Item = &'a NewEvent>) -> bool {
        self.db.backend() == Backend::Postgres
            && events.all(|e| crate::projections::fusable(e.event_type.as_str()))
    }

    /// [`EventStore::append_many_in`] without a transaction: the events and
    /// their read models in one autocommit statement, one round trip instead
    /// of BEGIN, two statements and COMMIT. Only for events
    /// [`EventStore::appends_once`] takes (anything else is refused, with
    /// nothing written).
    ///
    /// [`AppendError::Db`] means nothing was written (the server refused
    /// the statement, or no connection could be had). With
    /// [`AppendError::Unavailable`] whether it committed is unknown (the
    /// connection broke on the way, or the answer could not be read): it
    /// must not be run again.
    pub async fn append_many_once(
        &self,
        appends: Vec<(StreamName, ExpectedVersion, Vec<NewEvent>)>,
    ) -> Result<Vec<Option<Vec<RecordedEvent>>>, AppendError> {
        let mut pending = prepare_all(appends)?;
        let order = in_stream_order(&pending);
        if order.is_empty() {
            return Ok(pending.into_iter().map(|p| Some(p.events)).collect());
        }
        let events: Vec<&RecordedEvent> = order.iter().flat_map(|p| &p.events).collect();
        let fused = (self.db.backend() == Backend::Postgres)
            .then(|| crate::projections::fused(&events, FUSED_FIRST_PARAMETER))
            .flatten()
            .ok_or_else(|| {
                DbErr::Custom("these events' read models cannot be written in one statement".into())
            })?;
        let backend = self.db.backend();
        let written = self
            .db
            .write_once(async |conn| insert(conn, backend, &order, Some(fused)).await)
            .await
            .map_err(|e| {
                // The server refused the statement, or no connection was
                // had: nothing was written. Anything else (the connection
                // broke, an answer that could not be read) may have come
                // after the commit.
                if refused_by_server(&e) || crate::db::is_unavailable(&e) {
                    AppendError::Db(e)
                } else {
                    AppendError::Unavailable(format!("the outcome is unknown: {e}"))
                }
            })?;
        let (appended, counts) = take_written(&mut pending, &written);
        if !appended.is_empty() {
            self.db.signal_appended();
        }
        Ok(split_written(appended, counts))
    }

    /// The version of the stream's last event (0 if it has none).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<u32, DbErr> {
        current_version(&self.db, stream).await
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &StreamName) -> Result<Vec<RecordedEvent>, DbErr> {
        self.read_stream_in(self.db.conn(), stream).await
    }

    /// Like [`EventStore::read_stream`], on a given connection: commands read
    /// through their own transaction, so a burst of them never waits for a
    /// second pool connection while holding one.
    pub async fn read_stream_in(
        &self,
        conn: &impl ConnectionTrait,
        stream: &StreamName,
    ) -> Result<Vec<RecordedEvent>, DbErr> {
        let sql = match self.db.backend() {
            Backend::Postgres => {
                format!("SELECT {PG_COLUMNS} FROM events WHERE stream = $1 ORDER BY version")
            }
            Backend::Sqlite => {
                format!("SELECT {SQLITE_COLUMNS} FROM events WHERE stream = ? ORDER BY version")
            }
        };
        let rows = conn
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

    /// The events with these ids (any order; missing ids are skipped).
    pub async fn read_by_ids(&self, ids: &[EventId]) -> Result<Vec<RecordedEvent>, DbErr> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.backend();
        let (columns, values): (&str, Vec<DbValue>) = match backend {
            Backend::Postgres => (
                PG_COLUMNS,
                ids.iter().map(|id| DbValue::from(id.as_uuid())).collect(),
            ),
            Backend::Sqlite => (
                SQLITE_COLUMNS,
                ids.iter().map(|id| DbValue::from(id.to_string())).collect(),
            ),
        };
        let placeholders: Vec<String> = (1..=ids.len())
            .map(|i| match backend {
                Backend::Postgres => format!("${i}"),
                Backend::Sqlite => format!("?{i}"),
            })
            .collect();
        let sql = format!(
            "SELECT {columns} FROM events WHERE id IN ({})",
            placeholders.join(", ")
        );
        let rows = self
            .db
            .conn()
            .query_all_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                sql,
                values,
            ))
            .await?;
        rows.iter().map(|row| decode(backend, row)).collect()
    }

    /// A client's cursor in this backend's terms: SQLite orders by position
    /// alone, so a transaction part (from a cursor minted elsewhere) is
    /// dropped rather than allowed to make every event compare below it.
    pub fn normalize(&self, cursor: Cursor) -> Cursor {
        match self.db.backend() {
            Backend::Postgres => cursor,
            Backend::Sqlite => Cursor {
                tx: 0,
                position: cursor.position,
            },
        }
    }

    /// Up to `limit` events after `after`, in the global order.
    pub async fn read_all(&self, after: Cursor, limit: u32) -> Result<Page, DbErr> {
        self.read_filtered(after, limit, &LogFilter::default())
            .await
    }

    /// Like [`EventStore::read_all`], keeping only events that match `filter`.
    pub async fn read_filtered(
        &self,
        after: Cursor,
        limit: u32,
        filter: &LogFilter,
    ) -> Result<Page, DbErr> {
        let after = self.normalize(after);
        let backend = self.db.backend();
        let limit = limit.clamp(1, 10_000);
        let mut values: Vec<DbValue> = Vec::new();
        let mut bind = |value: DbValue| {
            values.push(value);
            match backend {
                Backend::Postgres => format!("${}", values.len()),
                Backend::Sqlite => format!("?{}", values.len()),
            }
        };
        let mut conditions = match backend {
            Backend::Postgres => {
                let tx = bind(after.tx.to_string().into());
                let position = bind(after.position.into());
                vec![
                    format!("(transaction_id, position) > ({tx}::text::xid8, {position})"),
                    "transaction_id < pg_snapshot_xmin(pg_current_snapshot())".to_owned(),
                ]
            }
            Backend::Sqlite => vec![format!("position > {}", bind(after.position.into()))],
        };
        if let Some(event_type) = &filter.event_type {
            match event_type.strip_suffix('*') {
                Some(prefix) => {
                    // LIKE, with the prefix's own wildcard characters escaped.
                    let escaped = prefix
                        .replace('!', "!!")
                        .replace('%', "!%")
                        .replace('_', "!_");
                    let pattern = bind(format!("{escaped}%").into());
                    conditions.push(format!("type LIKE {pattern} ESCAPE '!'"));
                }
                None => conditions.push(format!("type = {}", bind(event_type.clone().into()))),
            }
        }
        if let Some(stream) = &filter.stream {
            conditions.push(format!("stream = {}", bind(stream.clone().into())));
        }
        let limit_param = bind(i64::from(limit).into());
        let sql = match backend {
            Backend::Postgres => format!(
                "SELECT {PG_COLUMNS} FROM events WHERE {} \
                 ORDER BY transaction_id, position LIMIT {limit_param}",
                conditions.join(" AND ")
            ),
            Backend::Sqlite => format!(
                "SELECT {SQLITE_COLUMNS} FROM events WHERE {} ORDER BY position LIMIT {limit_param}",
                conditions.join(" AND ")
            ),
        };
        let statement = Statement::from_sql_and_values(self.db.database_backend(), sql, values);
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

    /// How many readable events come after `after`, counting at most `cap`.
    pub async fn count_after(&self, after: Cursor, cap: u64) -> Result<u64, DbErr> {
        let after = self.normalize(after);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let statement = match self.db.backend() {
            Backend::Postgres => Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                // Ordered, so the index is walked from the cursor on (see
                // `has_unreadable_after`).
                "SELECT COUNT(*)::bigint AS n FROM (SELECT 1 FROM events \
                   WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                     AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   ORDER BY transaction_id, position LIMIT $3) AS t",
                [
                    DbValue::from(after.tx.to_string()),
                    DbValue::from(after.position),
                    DbValue::from(cap),
                ],
            ),
            Backend::Sqlite => Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Sqlite,
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM events WHERE position > ?1 LIMIT ?2)",
                [DbValue::from(after.position), DbValue::from(cap)],
            ),
        };
        let row = self.db.conn().query_one_raw(statement).await?;
        let n: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Postgres: are there rows after `cursor` (held back by the horizon
    /// when the read was made)?
    async fn has_unreadable_after(&self, cursor: Cursor) -> Result<bool, DbErr> {
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                // Any row after the cursor, not only rows still above the
                // horizon: the horizon may have moved since the read, making
                // a held-back row readable, and it must not wait for a poll.
                // The first index entry after the cursor, if any. Not
                // `EXISTS`: for that the planner expects a third of the table
                // to match and scans it from its start (an ORDER BY inside
                // is dropped), reading the whole log on every poll.
                "SELECT (SELECT true FROM events \
                   WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                   ORDER BY transaction_id, position LIMIT 1) IS NOT NULL AS pending",
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

/// Assigns ids, versions and the time.
fn prepare(
    stream: &StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<PendingAppend, AppendError> {
    if events.len() > MAX_BATCH {
        return Err(AppendError::TooMany(events.len()));
    }
    let expected = expected.as_u32();
    if i64::from(expected) + events.len() as i64 > i64::from(i32::MAX) {
        return Err(AppendError::TooMany(events.len()));
    }
    let occurred_at = now_micros();
    let events = events
        .into_iter()
        .zip(expected + 1..)
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
    Ok(PendingAppend {
        stream: stream.clone(),
        expected,
        events,
    })
}

fn prepare_all(
    appends: Vec<(StreamName, ExpectedVersion, Vec<NewEvent>)>,
) -> Result<Vec<PendingAppend>, AppendError> {
    appends
        .into_iter()
        .map(|(stream, expected, events)| prepare(&stream, expected, events))
        .collect()
}

/// The appends that have events, in stream order: the same order as the
/// group-commit writers', so concurrent statements never take the same
/// index entries in opposite orders.
fn in_stream_order(pending: &[PendingAppend]) -> Vec<&PendingAppend> {
    let mut order: Vec<&PendingAppend> = pending.iter().filter(|p| !p.events.is_empty()).collect();
    order.sort_by(|a, b| a.stream.cmp(&b.stream));
    order
}

/// The parameter a fused read model's SQL starts at: [`insert`] takes the
/// eight before it.
const FUSED_FIRST_PARAMETER: usize = 9;

/// The events of the appends that were written, in one list, and each
/// append's count of them (`None`: not written).
fn take_written(
    pending: &mut [PendingAppend],
    written: &HashMap<EventId, Cursor>,
) -> (Vec<RecordedEvent>, Vec<Option<usize>>) {
    let mut appended = Vec::new();
    let counts = pending
        .iter_mut()
        .map(|p| {
            fill_cursors(p, written).then(|| {
                let count = p.events.len();
                appended.append(&mut p.events);
                count
            })
        })
        .collect();
    (appended, counts)
}

/// [`take_written`]'s list cut back into one result per append.
fn split_written(
    appended: Vec<RecordedEvent>,
    counts: Vec<Option<usize>>,
) -> Vec<Option<Vec<RecordedEvent>>> {
    let mut appended = appended.into_iter();
    counts
        .into_iter()
        .map(|count| count.map(|n| appended.by_ref().take(n).collect()))
        .collect()
}

/// Sets positions and cursors from what the database returned; false if
/// the append was not written (its version check failed).
fn fill_cursors(pending: &mut PendingAppend, written: &HashMap<EventId, Cursor>) -> bool {
    if !pending.events.iter().all(|e| written.contains_key(&e.id)) {
        return false;
    }
    for event in &mut pending.events {
        if let Some(cursor) = written.get(&event.id) {
            event.cursor = *cursor;
            event.position = cursor.position;
        }
    }
    true
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// A statement that lost a race and may go through when retried alone: a
/// unique violation on `(stream, version)`, or a deadlock / serialization
/// failure with another writer.
fn lost_race(e: &DbErr) -> bool {
    is_unique_violation(e)
        || server_error(e).is_some_and(|db| matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// The error the server answered a statement with, if that is what `e` is.
fn server_error(e: &DbErr) -> Option<&(dyn sea_orm::sqlx::error::DatabaseError + 'static)> {
    if let DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner)) = e
        && let sea_orm::sqlx::Error::Database(db) = inner.as_ref()
    {
        return Some(db.as_ref());
    }
    None
}

/// The server answered the statement with an error: it did not commit.
fn refused_by_server(e: &DbErr) -> bool {
    server_error(e).is_some()
}

async fn current_version(db: &Db, stream: &StreamName) -> Result<u32, DbErr> {
    current_version_in(db.conn(), db.backend(), stream).await
}

async fn current_version_in(
    conn: &impl ConnectionTrait,
    backend: Backend,
    stream: &StreamName,
) -> Result<u32, DbErr> {
    let sql = match backend {
        Backend::Postgres => {
            "SELECT COALESCE(MAX(version), 0)::bigint AS version FROM events WHERE stream = $1"
        }
        Backend::Sqlite => {
            "SELECT COALESCE(MAX(version), 0) AS version FROM events WHERE stream = ?"
        }
    };
    let database_backend = match backend {
        Backend::Postgres => sea_orm::DatabaseBackend::Postgres,
        Backend::Sqlite => sea_orm::DatabaseBackend::Sqlite,
    };
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            database_backend,
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

/// The conflict error for an append that was refused, with the stream's
/// current version (read outside any aborted transaction).
async fn conflict(db: &Db, pending: &PendingAppend) -> AppendError {
    match current_version(db, &pending.stream).await {
        Ok(actual) => AppendError::Conflict {
            stream: pending.stream.clone(),
            expected: pending.expected,
            actual: Some(actual),
        },
        Err(e) => AppendError::Db(e),
    }
}

/// One group-commit writer: takes whatever appends are queued (up to
/// [`MAX_BATCH`] events), writes them in one statement, answers each.
async fn group_commit(db: Db, receiver: Arc<Mutex<mpsc::Receiver<(PendingAppend, Reply)>>>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut rows = first.0.events.len();
            let mut batch = vec![first];
            while rows < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => {
                        rows += next.0.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        // Two appends to one stream cannot share a statement: the second's
        // expected version depends on the first. Later ones go one by one.
        let mut streams = HashSet::new();
        let (mut together, after): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(pending, _)| streams.insert(pending.stream.clone()));
        // One order for every writer's rows, so two statements never wait
        // on each other's index entries in opposite orders.
        together.sort_by(|(a, _), (b, _)| a.stream.cmp(&b.stream));
        write_together(&db, together).await;
        for one in after {
            write_together(&db, vec![one]).await;
        }
    }
}

async fn write_together(db: &Db, batch: Vec<(PendingAppend, Reply)>) {
    let appends: Vec<&PendingAppend> = batch.iter().map(|(pending, _)| pending).collect();
    let backend = db.backend();
    let result = db
        .write_once(async |conn| insert(conn, backend, &appends, None).await)
        .await;
    match result {
        Ok(written) => {
            let mut answers = Vec::with_capacity(batch.len());
            for (mut pending, reply) in batch {
                let answer = if fill_cursors(&mut pending, &written) {
                    Ok(pending.events)
                } else {
                    Err(conflict(db, &pending).await)
                };
                answers.push((answer, reply));
            }
            if !written.is_empty() {
                db.signal_appended();
            }
            for (answer, reply) in answers {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(answer);
            }
        }
        // Another writer (another instance, or a transaction) took a version
        // of one of these streams after our check, or deadlocked with us:
        // the whole statement failed. Retry one by one so only the loser
        // sees the conflict.
        Err(e) if lost_race(&e) && batch.len() > 1 => {
            for one in batch {
                Box::pin(write_together(db, vec![one])).await;
            }
        }
        Err(e) if is_unique_violation(&e) => {
            for (pending, reply) in batch {
                let _ = reply.send(Err(conflict(db, &pending).await));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, appends = batch.len(), "append failed");
            let unavailable = crate::db::is_unavailable(&e);
            let message = e.to_string();
            for (_, reply) in batch {
                let _ = reply.send(Err(if unavailable {
                    AppendError::Unavailable(message.clone())
                } else {
                    AppendError::Db(DbErr::Custom(message.clone()))
                }));
            }
        }
    }
}

/// One statement that inserts the events of every append whose stream is
/// at its expected version, and nothing of the others; it returns the ids
/// written with their cursors. A concurrent writer that passed the same
/// check for the same stream makes it fail on the `(stream, version)` key.
async fn insert(
    conn: &impl ConnectionTrait,
    backend: Backend,
    appends: &[&PendingAppend],
    fused: Option<crate::projections::Fused>,
) -> Result<HashMap<EventId, Cursor>, DbErr> {
    let events = || {
        appends
            .iter()
            .flat_map(|a| a.events.iter().map(move |e| (*a, e)))
    };
    // The subquery sees the table as it was before this statement, so every
    // event of one append passes or fails the check together.
    const INSERT: &str = "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
         SELECT id, stream, version, type, payload, actor, occurred_at FROM input \
         WHERE expected = (SELECT COALESCE(MAX(e.version), 0) FROM events e WHERE e.stream = input.stream)";
    let statement = match backend {
        // One array per column: the statement text is the same whatever the
        // batch size, so it is prepared once per connection.
        Backend::Postgres => {
            let column =
                |ty: ArrayType, values: Vec<DbValue>| DbValue::Array(ty, Some(Box::new(values)));
            let mut values = vec![
                column(
                    ArrayType::Uuid,
                    events().map(|(_, e)| e.id.as_uuid().into()).collect(),
                ),
                column(
                    ArrayType::String,
                    events().map(|(a, _)| a.stream.as_str().into()).collect(),
                ),
                column(
                    ArrayType::BigInt,
                    events().map(|(_, e)| i64::from(e.version).into()).collect(),
                ),
                column(
                    ArrayType::String,
                    events()
                        .map(|(_, e)| e.event_type.as_str().into())
                        .collect(),
                ),
                column(
                    ArrayType::Json,
                    events()
                        .map(|(_, e)| DbValue::Json(Some(Box::new(e.payload.clone()))))
                        .collect(),
                ),
                column(
                    ArrayType::Json,
                    events()
                        .map(|(_, e)| DbValue::Json(Some(Box::new(actor_json(&e.actor)))))
                        .collect(),
                ),
                column(
                    ArrayType::ChronoDateTimeUtc,
                    events().map(|(_, e)| e.occurred_at.into()).collect(),
                ),
                column(
                    ArrayType::BigInt,
                    events()
                        .map(|(a, _)| i64::from(a.expected).into())
                        .collect(),
                ),
            ];
            // The read models' part, if any, reads what was written from
            // `written` and numbers its parameters after these.
            let (projections, more) = fused.map_or_else(Default::default, |f| (f.sql, f.values));
            values.extend(more);
            Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                format!(
                    "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[], \
                     $5::jsonb[], $6::jsonb[], $7::timestamptz[], $8::int8[]) \
                     AS t(id, stream, version, type, payload, actor, occurred_at, expected)), \
                     written AS ({INSERT} RETURNING id, position, transaction_id){projections} \
                     SELECT id, position, transaction_id::text AS tx FROM written"
                ),
                values,
            )
        }
        Backend::Sqlite => {
            let mut values: Vec<DbValue> = Vec::new();
            let mut rows = Vec::new();
            for (append, event) in events() {
                let n = values.len();
                let placeholders: Vec<String> = (n + 1..=n + 8).map(|i| format!("?{i}")).collect();
                rows.push(format!("({})", placeholders.join(", ")));
                values.push(event.id.to_string().into());
                values.push(append.stream.as_str().into());
                values.push(i64::from(event.version).into());
                values.push(event.event_type.as_str().into());
                values.push(event.payload.to_string().into());
                values.push(actor_json(&event.actor).to_string().into());
                values.push(sqlite_timestamp(event.occurred_at).into());
                values.push(i64::from(append.expected).into());
            }
            Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Sqlite,
                format!(
                    "WITH input (id, stream, version, type, payload, actor, occurred_at, expected) \
                     AS (VALUES {}) {INSERT} RETURNING id, position",
                    rows.join(", ")
                ),
                values,
            )
        }
    };
    let returned = conn.query_all_raw(statement).await?;
    let mut written = HashMap::with_capacity(returned.len());
    for row in returned {
        let position: i64 = row.try_get("", "position")?;
        let (id, tx) = match backend {
            Backend::Postgres => (row.try_get::<uuid::Uuid>("", "id")?, parse_tx(&row)?),
            Backend::Sqlite => {
                let id: String = row.try_get("", "id")?;
                (id.parse().map_err(|e| corrupt("id", e))?, 0)
            }
        };
        written.insert(EventId::from_uuid(id), Cursor { tx, position });
    }
    Ok(written)
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
