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
//! transaction id is below the log's horizon ([`pg_horizon!`]), ordered by
//! `(transaction_id, position)`. Everything below the horizon that may have
//! written to the log has finished, and anything that commits later has a
//! larger transaction id, so it sorts after whatever has been read: the
//! cursor `(transaction_id, position)` never needs to look back.
//!
//! The horizon is the oldest transaction still running *that can write to
//! the log*, not the oldest in the cluster: a migration, a batch job or
//! another application on the same server, in this database or another,
//! holds nothing back. What can write to the log holds a lock on `events`
//! taken before the transaction got its id: an append outside a transaction
//! is one statement (its locks are taken before it writes anything), and
//! every write transaction takes the lock first
//! ([`crate::db::Db::begin_write`]; `ROW EXCLUSIVE`, which no writer's lock
//! conflicts with). So a transaction in the statement's snapshot that is
//! still running without that lock never wrote to the log and never will.
//!
//! What that rests on: everything that writes to `events` takes the lock
//! before its transaction has an id. A session that already has one and
//! then inserts into `events` by hand (psql, a hand-written data migration)
//! is not waited for; it must `LOCK TABLE events IN ROW EXCLUSIVE MODE`
//! first. Prepared transactions (two-phase commit, off by default) are not
//! accounted for: while one is being prepared its locks move between
//! owners.
//!
//! On SQLite writes are serialized ([`crate::db::Db::begin_write`]), so the
//! position order is the commit order and the cursor is the position.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

/// PostgreSQL: the log's horizon (see the module's documentation), as an
/// `xid8` expression evaluated once per statement: the oldest transaction
/// in the statement's snapshot that either holds the lock on `events` or has
/// ended since the snapshot was taken (what it wrote is not in the snapshot),
/// else the snapshot's next transaction id. `pg_locks` is read once: the
/// fast-path relation locks before the transaction locks, so a transaction
/// seen running was seen with its lock on `events` if it had one.
macro_rules! pg_horizon {
    () => {
        "(WITH locks AS MATERIALIZED ( \
             SELECT locktype, mode, granted, database, relation, transactionid, virtualtransaction \
             FROM pg_locks), \
         elsewhere AS ( \
             SELECT t.transactionid FROM locks t \
             WHERE t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted \
               AND NOT EXISTS (SELECT 1 FROM locks e \
                   WHERE e.locktype = 'relation' AND e.granted \
                     AND e.virtualtransaction = t.virtualtransaction \
                     AND e.relation = 'events'::regclass \
                     AND e.database = (SELECT oid FROM pg_database WHERE datname = current_database()))) \
         SELECT COALESCE(min(x), pg_snapshot_xmax(pg_current_snapshot())) \
         FROM pg_snapshot_xip(pg_current_snapshot()) AS x \
         WHERE x::xid NOT IN (SELECT transactionid FROM elsewhere))"
    };
}
pub(crate) use pg_horizon;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseExecutor, DbErr, QueryResult, SqlErr, Statement, Value as DbValue,
    sea_query::ArrayType,
};
use serde_json::Value;

use super::envelope::{Actor, Cursor, EventType, NewEvent, RecordedEvent, StreamName, now_micros};
use crate::{
    batch::{Batch, Gather},
    db::{Backend, Db, WriteTxn},
    ids::EventId,
    projections::{Fused, Projections},
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
    /// The version a stream read at `version` must still be at (0: none).
    pub fn at(version: u32) -> Self {
        match version {
            0 => Self::NoStream,
            v => Self::Exact(v),
        }
    }

    fn as_u32(self) -> u32 {
        match self {
            Self::NoStream => 0,
            Self::Exact(v) => v,
        }
    }
}

/// One stream's part of an append: its new events and the version the
/// stream must be at for them to go in.
#[derive(Debug, Clone)]
pub struct Append {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

impl Append {
    pub fn new(stream: StreamName, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to one of the streams first (or the caller's
    /// view of it is wrong). Nothing was written.
    #[error("changed concurrently: {0}")]
    Conflict(String),
    #[error("too many events in one append ({0}; at most {MAX_BATCH})")]
    TooMany(usize),
    /// The database could not be reached (no connection, or it failed
    /// before the statement was sent). Nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection broke after the statement (or the commit) was sent,
    /// or its answer could not be read: whether it was written is unknown.
    /// Whatever caused it must not be done again blindly.
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    /// A read model refused one of the events (a unique key, say) or the
    /// database refused the statement. Nothing was written.
    #[error("event store: {0}")]
    Db(#[from] DbErr),
    /// A read model could not read one of the events.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A stored event that does not decode as the type its name says: after a
/// change of its payload's shape, say. Never skipped.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the event at position {position} ({event_type}, {stream} v{version}) cannot be read: {reason}"
)]
pub struct DecodeError {
    pub position: i64,
    pub event_type: String,
    pub stream: String,
    pub version: u32,
    pub reason: String,
}

impl DecodeError {
    pub fn of(event: &RecordedEvent, reason: impl std::fmt::Display) -> Self {
        Self {
            position: event.position,
            event_type: event.event_type.as_str().to_owned(),
            stream: event.stream.as_str().to_owned(),
            version: event.version,
            reason: reason.to_string(),
        }
    }
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

/// Where a page of the log starts.
#[derive(Clone, Copy)]
enum Bound {
    /// After this cursor, in the global order.
    After(Cursor),
    /// Before this cursor, newest first.
    Before(Cursor),
    /// This cursor and before, newest first.
    UpTo(Cursor),
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

#[derive(Clone)]
pub struct EventStore {
    db: Db,
    projections: Projections,
    writer: Writer,
    /// PostgreSQL: appends on their own that arrive together share one
    /// statement.
    writes: Arc<Gather<Writer>>,
    log: LogId,
}

/// Writes appends that stand on their own (PostgreSQL, read models fused):
/// those that arrive while a statement runs go in the next one together,
/// each still whole or not at all and checked against its own versions, so
/// one's conflict never fails another.
#[derive(Clone)]
struct Writer {
    db: Db,
    projections: Projections,
    log: LogId,
}

/// The log's id ([`Cursor`]), read once at start ([`EventStore::identify`]);
/// 0 until then.
#[derive(Clone, Default)]
struct LogId(Arc<std::sync::OnceLock<u32>>);

impl LogId {
    fn get(&self) -> u32 {
        self.0.get().copied().unwrap_or(0)
    }
}

/// Statements on their own at once, at most (each on a connection).
const WRITERS: usize = 4;

/// Events gathered into one statement, at most. Appends beyond it wait for
/// the next statement, or, once more than that many events wait for each
/// writer at work, for another writer: many large appends at once go as
/// statements side by side rather than as one very large one.
const STATEMENT_EVENTS: usize = 200;

impl EventStore {
    /// With the read models' fastest implementations.
    pub fn new(db: Db) -> Self {
        Self::with_projections(db, Projections::default())
    }

    /// With the given read model implementations (the plain ones, to check
    /// the faster ones against them).
    pub fn with_projections(db: Db, projections: Projections) -> Self {
        let log = LogId::default();
        Self {
            writer: Writer {
                db: db.clone(),
                projections,
                log: log.clone(),
            },
            db,
            projections,
            log,
            // Callers are the command runner's tasks, never cancelled
            // midway: an append that finds the writers idle is written by
            // its caller at once.
            writes: Arc::new(Gather::new(STATEMENT_EVENTS, WRITERS).inline()),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Reads the log's id (the migrations give each database one), which
    /// the cursors handed out from then on carry.
    pub async fn identify(&self) -> Result<(), DbErr> {
        let row = self
            .db
            .conn()
            .query_one_raw(Statement::from_string(
                self.db.database_backend(),
                "SELECT value FROM settings WHERE key = 'log_id'",
            ))
            .await?;
        let id = match row {
            Some(row) => row
                .try_get::<String>("", "value")?
                .parse()
                .map_err(|e| corrupt("log id", e))?,
            None => {
                return Err(DbErr::Custom(
                    "the log has no id: run the migrations".into(),
                ));
            }
        };
        let _ = self.log.0.set(id);
        Ok(())
    }

    /// The log's id (0 before [`EventStore::identify`]).
    pub fn log_id(&self) -> u32 {
        self.log.get()
    }

    pub fn projections(&self) -> &Projections {
        &self.projections
    }

    /// The one way events get into the log. Appends to one or more streams
    /// atomically, with their read models: every append's events or none,
    /// each stream checked against its expected version (one that moved is
    /// a [`AppendError::Conflict`], with nothing written). At most one
    /// append per stream.
    ///
    /// In `txn` when one is given: the caller commits, or rolls back after
    /// any error (on PostgreSQL a failed statement has aborted it).
    /// Without one the append stands on its own: a single statement where
    /// the backend allows it (PostgreSQL, when every read model of these
    /// events can be written by that statement), else a transaction of its
    /// own.
    ///
    /// Returns the events as written, append after append.
    #[tracing::instrument(skip_all, fields(appends = appends.len()))]
    pub async fn append(
        &self,
        appends: Vec<Append>,
        txn: Option<&WriteTxn>,
    ) -> Result<Vec<RecordedEvent>, AppendError> {
        let mut events = prepare(appends)?;
        if events.is_empty() {
            return Ok(events);
        }
        match txn {
            Some(txn) => {
                self.write(&mut events, txn).await?;
                txn.mark_appended();
            }
            None => match self.fused(&events) {
                Some(_) => {
                    return self
                        .writes
                        .submit(&self.writer, events)
                        .await
                        .unwrap_or_else(|e| {
                            Err(AppendError::Unknown(format!("the append was {e}")))
                        });
                }
                None => {
                    let txn = self.db.begin_write().await.map_err(unavailable_or_db)?;
                    match self.write(&mut events, &txn).await {
                        Ok(()) => {
                            txn.mark_appended();
                            txn.commit().await.map_err(commit_failed)?;
                        }
                        Err(e) => {
                            // Before the SQLite write lock is let go.
                            let _ = txn.rollback().await;
                            return Err(e);
                        }
                    }
                }
            },
        }
        Ok(events)
    }

    /// The read models of `events` as part of the appending statement, when
    /// the backend and every read model concerned allow it.
    fn fused(&self, events: &[RecordedEvent]) -> Option<Fused> {
        if self.db.backend() != Backend::Postgres {
            return None;
        }
        // Keys are locked before the append, in its transaction.
        if !self.projections.ordering_keys(events).ok()?.is_empty() {
            return None;
        }
        self.projections.fused(events, FUSED_FIRST_PARAMETER)
    }

    /// Writes `events` in `txn`, with their read models.
    async fn write(&self, events: &mut [RecordedEvent], txn: &WriteTxn) -> Result<(), AppendError> {
        let backend = self.db.backend();
        if backend == Backend::Postgres {
            // Before the transaction writes anything (and so before it has
            // the transaction id the log orders it by).
            for key in self.projections.ordering_keys(events)? {
                txn.execute_raw(Statement::from_sql_and_values(
                    sea_orm::DatabaseBackend::Postgres,
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    [DbValue::from(ORDERING_LOCK_CLASS), DbValue::from(key)],
                ))
                .await
                .map_err(unavailable_or_db)?;
            }
        }
        let written = insert(&**txn, backend, &[&*events], None)
            .await
            // Nothing is committed without the caller.
            .map_err(|e| refused(e, events))?;
        if !fill_cursors(events, &written, self.log.get()) {
            // All or none: the version check held every row back.
            return Err(conflict(events));
        }
        let conn = DatabaseExecutor::Transaction(txn);
        self.projections.apply(&conn, events).await?;
        Ok(())
    }

    /// The version of the stream's last event (0 if it has none).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<u32, DbErr> {
        let versions = stream_versions(self.db.conn(), std::slice::from_ref(stream)).await?;
        Ok(versions.get(stream).copied().unwrap_or(0))
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &StreamName) -> Result<Vec<RecordedEvent>, DbErr> {
        self.read_streams_in(self.db.conn(), std::slice::from_ref(stream))
            .await
    }

    /// Every event of these streams, each stream's in version order, in one
    /// query through `conn` (a command reads its aggregates through the
    /// connection it writes on, never waiting for a second one).
    pub async fn read_streams_in(
        &self,
        conn: &impl ConnectionTrait,
        streams: &[StreamName],
    ) -> Result<Vec<RecordedEvent>, DbErr> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.backend();
        let (sql, values) = match backend {
            // Stream by stream through the `(stream, version)` index,
            // whatever the planner thinks of `= ANY(…)` on a log whose
            // statistics lag behind its growth.
            Backend::Postgres => (
                "SELECT e.* FROM unnest($1::text[]) AS s(stream) CROSS JOIN LATERAL \
                 (SELECT position, id, stream, version, type, payload, actor, occurred_at, \
                   transaction_id::text AS tx FROM events WHERE stream = s.stream ORDER BY version) AS e \
                 ORDER BY e.stream, e.version"
                    .to_owned(),
                vec![DbValue::Array(
                    ArrayType::String,
                    Some(Box::new(
                        streams.iter().map(|s| s.as_str().into()).collect(),
                    )),
                )],
            ),
            Backend::Sqlite => (
                format!(
                    "SELECT {SQLITE_COLUMNS} FROM events WHERE stream IN ({}) ORDER BY stream, version",
                    placeholders(backend, streams.len())
                ),
                streams.iter().map(|s| s.as_str().into()).collect(),
            ),
        };
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(
                self.db.database_backend(),
                sql,
                values,
            ))
            .await?;
        rows.iter()
            .map(|row| decode(backend, self.log.get(), row))
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
        rows.iter()
            .map(|row| decode(backend, self.log.get(), row))
            .collect()
    }

    /// Why this log cannot continue from `cursor`, if it cannot: the
    /// cursor names another log, or lies ahead of every event written (the
    /// database was reset, replaced or restored since the cursor was handed
    /// out). A cursor past the readable head but not past the last event
    /// written (one from a webhook's envelope, while an older transaction
    /// still runs) is one the log continues from once that event is
    /// readable.
    pub async fn cannot_continue_from(
        &self,
        cursor: Cursor,
    ) -> Result<Option<&'static str>, DbErr> {
        if cursor.is_from_another_log(self.log_id()) {
            return Ok(Some(
                "this cursor is from another event log (the database was reset or replaced)",
            ));
        }
        if self.normalize(cursor) > self.last(false).await? {
            return Ok(Some(
                "this cursor is ahead of the event log (the database was reset or restored)",
            ));
        }
        Ok(None)
    }

    /// A client's cursor in this backend's terms: SQLite orders by position
    /// alone, so a transaction part (from a cursor minted elsewhere) is
    /// dropped rather than allowed to make every event compare below it.
    pub fn normalize(&self, cursor: Cursor) -> Cursor {
        match self.db.backend() {
            Backend::Postgres => cursor,
            Backend::Sqlite => Cursor { tx: 0, ..cursor },
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
        let events = self.select(Bound::After(after), limit, filter).await?;
        let next = events.last().map_or(after, |e| e.cursor);
        let pending = self.db.backend() == Backend::Postgres
            && events.len() < limit as usize
            && self.has_unreadable_after(next).await?;
        Ok(Page {
            events,
            next,
            pending,
        })
    }

    /// The newest events matching `filter`, newest first: up to `limit`
    /// of those before `before`, or of those up to the head. With the
    /// head (where a live feed goes on from, so that what it carries
    /// joins what was read with no gap) when `before` is not given.
    pub async fn read_back(
        &self,
        before: Option<Cursor>,
        limit: u32,
        filter: &LogFilter,
    ) -> Result<(Vec<RecordedEvent>, Option<Cursor>), DbErr> {
        match before {
            Some(before) => {
                let bound = Bound::Before(self.normalize(before));
                Ok((self.select(bound, limit, filter).await?, None))
            }
            None => {
                // Everything up to the head is readable (on PostgreSQL every
                // transaction ordered before it has ended).
                let head = self.head().await?;
                let events = self.select(Bound::UpTo(head), limit, filter).await?;
                Ok((events, Some(head)))
            }
        }
    }

    /// The rows of a page of the log: after a cursor in the global order,
    /// or back from one, newest first.
    async fn select(
        &self,
        bound: Bound,
        limit: u32,
        filter: &LogFilter,
    ) -> Result<Vec<RecordedEvent>, DbErr> {
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
        let (cursor, comparison, order) = match bound {
            Bound::After(cursor) => (cursor, ">", "ASC"),
            Bound::Before(cursor) => (cursor, "<", "DESC"),
            Bound::UpTo(cursor) => (cursor, "<=", "DESC"),
        };
        let mut conditions = match backend {
            Backend::Postgres => {
                let tx = bind(cursor.tx.to_string().into());
                let position = bind(cursor.position.into());
                vec![
                    format!(
                        "(transaction_id, position) {comparison} ({tx}::text::xid8, {position})"
                    ),
                    concat!("transaction_id < ", pg_horizon!()).to_owned(),
                ]
            }
            Backend::Sqlite => vec![format!(
                "position {comparison} {}",
                bind(cursor.position.into())
            )],
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
                 ORDER BY transaction_id {order}, position {order} LIMIT {limit_param}",
                conditions.join(" AND ")
            ),
            Backend::Sqlite => format!(
                "SELECT {SQLITE_COLUMNS} FROM events WHERE {} ORDER BY position {order} \
                 LIMIT {limit_param}",
                conditions.join(" AND ")
            ),
        };
        let statement = Statement::from_sql_and_values(self.db.database_backend(), sql, values);
        let rows = self.db.conn().query_all_raw(statement).await?;
        rows.iter()
            .map(|row| decode(backend, self.log.get(), row))
            .collect()
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
                concat!(
                    "SELECT COUNT(*)::bigint AS n FROM (SELECT 1 FROM events \
                       WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                         AND transaction_id < ",
                    pg_horizon!(),
                    " ORDER BY transaction_id, position LIMIT $3) AS t"
                ),
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
        self.last(true).await
    }

    /// The cursor of the last event readable now (`readable`), or of the
    /// last written, readable or not yet (on PostgreSQL, past the horizon:
    /// a transaction before it still runs).
    async fn last(&self, readable: bool) -> Result<Cursor, DbErr> {
        let backend = self.db.backend();
        let sql = match backend {
            Backend::Postgres if readable => {
                concat!(
                    "SELECT transaction_id::text AS tx, position FROM events \
                     WHERE transaction_id < ",
                    pg_horizon!(),
                    " ORDER BY transaction_id DESC, position DESC LIMIT 1"
                )
            }
            Backend::Postgres => {
                "SELECT transaction_id::text AS tx, position FROM events \
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
        Ok(Cursor {
            tx,
            position,
            log: self.log.get(),
        })
    }
}

const PG_COLUMNS: &str = "position, id, stream, version, type, payload, actor, occurred_at, \
                          transaction_id::text AS tx";
const SQLITE_COLUMNS: &str = "position, id, stream, version, type, payload, actor, occurred_at";

impl Batch for Writer {
    /// One append's events, prepared.
    type Item = Vec<RecordedEvent>;
    type Answer = Result<Vec<RecordedEvent>, AppendError>;
    type Key = ();

    fn weight(call: &Vec<RecordedEvent>) -> usize {
        call.len()
    }

    async fn run(&self, calls: Vec<Vec<RecordedEvent>>) -> Vec<Self::Answer> {
        let mut calls: Vec<Option<Vec<RecordedEvent>>> = calls.into_iter().map(Some).collect();
        let mut answers: Vec<Option<Self::Answer>> = calls.iter().map(|_| None).collect();
        let mut rest: Vec<usize> = (0..calls.len()).collect();
        while !rest.is_empty() {
            // Two appends to one stream cannot share a statement (the
            // second's versions follow the first's): later ones wait.
            let mut streams = HashSet::new();
            let (now, later): (Vec<usize>, Vec<usize>) = rest.into_iter().partition(|&n| {
                let mine: HashSet<&StreamName> =
                    calls[n].iter().flatten().map(|e| &e.stream).collect();
                let free = mine.iter().all(|s| !streams.contains(*s));
                if free {
                    streams.extend(mine.into_iter().cloned());
                }
                free
            });
            match self.statement(&mut calls, &now).await {
                Ok(Some(results)) => {
                    for (n, result) in now.iter().zip(results) {
                        answers[*n] = Some(result);
                    }
                }
                // One of them is the cause (stale, a race with another
                // instance, a read model's key): each on its own.
                Ok(None) => self.one_by_one(&mut calls, &now, &mut answers).await,
                Err(e) if now.len() > 1 && (lost_race(&e) || refused_by_server(&e)) => {
                    self.one_by_one(&mut calls, &now, &mut answers).await;
                }
                Err(e) => {
                    let failure = refused(e, &[]);
                    for n in &now {
                        answers[*n] = Some(Err(copy(
                            &failure,
                            calls[*n].as_deref().unwrap_or_default(),
                        )));
                    }
                }
            }
            rest = later;
        }
        if answers
            .iter()
            .any(|a| matches!(a, Some(Ok(events)) if !events.is_empty()))
        {
            self.db.signal_appended();
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(AppendError::Db(DbErr::Custom("no answer".into())))))
            .collect()
    }
}

impl Writer {
    /// The appends `which` of `calls`, a statement each.
    async fn one_by_one(
        &self,
        calls: &mut [Option<Vec<RecordedEvent>>],
        which: &[usize],
        answers: &mut [Option<Result<Vec<RecordedEvent>, AppendError>>],
    ) {
        for n in which {
            let alone = self.statement(calls, std::slice::from_ref(n)).await;
            answers[*n] = Some(match alone {
                Ok(Some(mut results)) => results
                    .pop()
                    .unwrap_or_else(|| Err(AppendError::Db(DbErr::Custom("no answer".into())))),
                Ok(None) => Err(AppendError::Db(DbErr::Custom("no answer".into()))),
                Err(e) => Err(refused(e, calls[*n].as_deref().unwrap_or_default())),
            });
        }
    }

    /// The appends `which` of `calls` in one autocommit statement, their
    /// read models with them: each one's events with their cursors, or its
    /// conflict; `None` if one of several was stale (nothing was written).
    /// An error means nothing of them was written, or (the connection
    /// broke) that it is not known.
    async fn statement(
        &self,
        calls: &mut [Option<Vec<RecordedEvent>>],
        which: &[usize],
    ) -> Result<Option<Vec<Result<Vec<RecordedEvent>, AppendError>>>, DbErr> {
        let backend = self.db.backend();
        let written = {
            let parts: Vec<&[RecordedEvent]> =
                which.iter().filter_map(|n| calls[*n].as_deref()).collect();
            let all: Vec<RecordedEvent> = parts.iter().flat_map(|p| p.iter().cloned()).collect();
            let fused = self
                .projections
                .fused(&all, FUSED_FIRST_PARAMETER)
                .ok_or_else(|| {
                    DbErr::Custom("these read models cannot be written by one statement".into())
                })?;
            self.db
                .write_once(async |conn| insert(conn, backend, &parts, Some(fused)).await)
                .await?
        };
        if written.is_empty() && which.len() > 1 {
            // One of them is stale, and held every one back.
            return Ok(None);
        }
        Ok(Some(
            which
                .iter()
                .map(|n| {
                    let mut events = calls[*n].take().unwrap_or_default();
                    if fill_cursors(&mut events, &written, self.log.get()) {
                        Ok(events)
                    } else {
                        let e = conflict(&events);
                        calls[*n] = Some(events);
                        Err(e)
                    }
                })
                .collect(),
        ))
    }
}

/// Sets positions and cursors (of log `log`) from what the statement
/// returned; `false` if the events were not written (their version check
/// failed).
fn fill_cursors(
    events: &mut [RecordedEvent],
    written: &HashMap<EventId, Cursor>,
    log: u32,
) -> bool {
    if !events.iter().all(|e| written.contains_key(&e.id)) {
        return false;
    }
    for event in events.iter_mut() {
        if let Some(cursor) = written.get(&event.id) {
            event.cursor = Cursor { log, ..*cursor };
            event.position = cursor.position;
        }
    }
    true
}

/// What a failed statement means for its appends.
fn refused(e: DbErr, events: &[RecordedEvent]) -> AppendError {
    if lost_race(&e) {
        conflict(events)
    } else if crate::db::is_unavailable(&e) {
        AppendError::Unavailable(e.to_string())
    } else if refused_by_server(&e) {
        // Refused: nothing was written.
        AppendError::Db(e)
    } else {
        // The connection broke on the way, or the answer could not be
        // read: on its own it may have been written (in a transaction,
        // nothing commits without the caller).
        AppendError::Unknown(e.to_string())
    }
}

/// The same failure for another append of the statement.
fn copy(e: &AppendError, events: &[RecordedEvent]) -> AppendError {
    match e {
        AppendError::Conflict(_) => conflict(events),
        AppendError::TooMany(n) => AppendError::TooMany(*n),
        AppendError::Unavailable(m) => AppendError::Unavailable(m.clone()),
        AppendError::Unknown(m) => AppendError::Unknown(m.clone()),
        AppendError::Decode(d) => AppendError::Decode(d.clone()),
        AppendError::Db(db) => AppendError::Db(DbErr::Custom(db.to_string())),
    }
}

/// The versions of these streams (those with events), read through `conn`.
pub async fn stream_versions(
    conn: &impl ConnectionTrait,
    streams: &[StreamName],
) -> Result<HashMap<StreamName, u32>, DbErr> {
    if streams.is_empty() {
        return Ok(HashMap::new());
    }
    let database_backend = conn.get_database_backend();
    let (sql, values) = match database_backend {
        // Each stream's last version through the `(stream, version)` index.
        sea_orm::DatabaseBackend::Postgres => (
            // (The cast outside: ordering by a cast would sort every row.)
            "SELECT s.stream, v.version::bigint AS version FROM unnest($1::text[]) AS s(stream) \
             CROSS JOIN LATERAL (SELECT e.version FROM events AS e WHERE e.stream = s.stream \
              ORDER BY e.version DESC LIMIT 1) AS v"
                .to_owned(),
            vec![DbValue::Array(
                ArrayType::String,
                Some(Box::new(
                    streams.iter().map(|s| s.as_str().into()).collect(),
                )),
            )],
        ),
        _ => (
            format!(
                "SELECT stream, MAX(version) AS version FROM events WHERE stream IN ({}) \
                 GROUP BY stream",
                placeholders(Backend::Sqlite, streams.len())
            ),
            streams.iter().map(|s| s.as_str().into()).collect(),
        ),
    };
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            database_backend,
            sql,
            values,
        ))
        .await?;
    let mut versions = HashMap::with_capacity(rows.len());
    for row in rows {
        let stream: String = row.try_get("", "stream")?;
        let version: i64 = row.try_get("", "version")?;
        versions.insert(
            StreamName::parse(&stream).map_err(|e| corrupt("stream", e))?,
            u32::try_from(version).map_err(|e| corrupt("version", e))?,
        );
    }
    Ok(versions)
}

/// Assigns ids, versions and the time, append after append.
fn prepare(appends: Vec<Append>) -> Result<Vec<RecordedEvent>, AppendError> {
    let count: usize = appends.iter().map(|a| a.events.len()).sum();
    if count > MAX_BATCH {
        return Err(AppendError::TooMany(count));
    }
    let occurred_at = now_micros();
    let mut events = Vec::with_capacity(count);
    let mut streams = std::collections::HashSet::new();
    for append in appends {
        if append.events.is_empty() {
            continue;
        }
        if !streams.insert(append.stream.clone()) {
            return Err(AppendError::Db(DbErr::Custom(format!(
                "two appends to {} in one call",
                append.stream
            ))));
        }
        let expected = append.expected.as_u32();
        if i64::from(expected) + append.events.len() as i64 > i64::from(i32::MAX) {
            return Err(AppendError::TooMany(append.events.len()));
        }
        events.extend(
            append
                .events
                .into_iter()
                .zip(expected + 1..)
                .map(|(event, version)| RecordedEvent {
                    id: EventId::new(),
                    position: 0,
                    cursor: Cursor::START,
                    stream: append.stream.clone(),
                    version,
                    event_type: event.event_type,
                    payload: event.payload,
                    actor: event.actor,
                    occurred_at,
                }),
        );
    }
    Ok(events)
}

/// The parameter a fused read model's SQL starts at: [`insert`] takes the
/// eight before it.
const FUSED_FIRST_PARAMETER: usize = 9;

/// PostgreSQL: the advisory lock class of [`Projections::ordering_keys`].
const ORDERING_LOCK_CLASS: i32 = 0x4f52_4431;

/// `?1, ?2, …` or `$1, $2, …`.
fn placeholders(backend: Backend, n: usize) -> String {
    (1..=n)
        .map(|i| match backend {
            Backend::Postgres => format!("${i}"),
            Backend::Sqlite => format!("?{i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn conflict(events: &[RecordedEvent]) -> AppendError {
    let mut streams: Vec<&str> = events.iter().map(|e| e.stream.as_str()).collect();
    streams.dedup();
    AppendError::Conflict(format!(
        "{} was appended to since it was read",
        streams.join(", ")
    ))
}

fn unavailable_or_db(e: DbErr) -> AppendError {
    if crate::db::is_unavailable(&e) {
        AppendError::Unavailable(e.to_string())
    } else {
        AppendError::Db(e)
    }
}

/// A failed COMMIT may have committed (its answer was lost) unless the
/// server answered it with an error.
pub(crate) fn commit_failed(e: DbErr) -> AppendError {
    if refused_by_server(&e) {
        AppendError::Db(e)
    } else {
        AppendError::Unknown(format!("commit: {e}"))
    }
}

/// A statement that lost a race with another writer of the same stream: a
/// unique violation on `(stream, version)`, or a deadlock / serialization
/// failure. Not a read model's unique key: that is the events' own doing.
fn lost_race(e: &DbErr) -> bool {
    let Some(db) = server_error(e) else {
        return false;
    };
    match db.code().as_deref() {
        Some("40P01" | "40001") => true,
        _ if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            db.constraint() == Some("events_stream_version_key")
                || db.message().contains("events.stream, events.version")
        }
        _ => false,
    }
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

/// One statement that inserts the events of every call (an append's, with
/// its streams) if every stream is at the version its first new event
/// follows, and nothing otherwise; it returns the ids written with their
/// cursors. A concurrent writer that passed the same check for the same
/// stream makes it fail on the `(stream, version)` key. No stream is in two
/// calls.
///
/// All or nothing for the whole statement, not per call: that check is one
/// look per stream, stopping at the first stale one, and PostgreSQL keeps
/// one plan for it (a check per call made it plan every execution anew).
async fn insert(
    conn: &impl ConnectionTrait,
    backend: Backend,
    calls: &[&[RecordedEvent]],
    fused: Option<Fused>,
) -> Result<HashMap<EventId, Cursor>, DbErr> {
    // Each stream's expected version: the one before its first new event.
    let mut expected: HashMap<&StreamName, u32> = HashMap::new();
    let mut order: Vec<&RecordedEvent> = Vec::new();
    for events in calls {
        for event in events.iter() {
            let e = expected.entry(&event.stream).or_insert(event.version - 1);
            *e = (*e).min(event.version - 1);
            order.push(event);
        }
    }
    // One order for every writer's rows, so two statements never wait on
    // each other's index entries in opposite orders.
    order.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
    let expected_of = |e: &RecordedEvent| i64::from(expected.get(&e.stream).copied().unwrap_or(0));
    // The subquery sees the table as it was before this statement: every
    // stream is checked, and the rows go in only if all pass.
    const INSERT: &str = "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
         SELECT id, stream, version, type, payload, actor, occurred_at FROM input \
         WHERE NOT EXISTS (SELECT 1 FROM input AS i WHERE i.expected <> \
           (SELECT COALESCE(MAX(e.version), 0) FROM events AS e WHERE e.stream = i.stream))";
    let statement = match backend {
        // One array per column: the statement text is the same whatever the
        // batch size, so it is prepared once per connection.
        Backend::Postgres => {
            let column =
                |ty: ArrayType, values: Vec<DbValue>| DbValue::Array(ty, Some(Box::new(values)));
            let mut values = vec![
                column(
                    ArrayType::Uuid,
                    order.iter().map(|e| e.id.as_uuid().into()).collect(),
                ),
                column(
                    ArrayType::String,
                    order.iter().map(|e| e.stream.as_str().into()).collect(),
                ),
                column(
                    ArrayType::BigInt,
                    order.iter().map(|e| i64::from(e.version).into()).collect(),
                ),
                column(
                    ArrayType::String,
                    order.iter().map(|e| e.event_type.as_str().into()).collect(),
                ),
                column(
                    ArrayType::Json,
                    order
                        .iter()
                        .map(|e| DbValue::Json(Some(Box::new(e.payload.clone()))))
                        .collect(),
                ),
                column(
                    ArrayType::Json,
                    order
                        .iter()
                        .map(|e| DbValue::Json(Some(Box::new(actor_json(&e.actor)))))
                        .collect(),
                ),
                column(
                    ArrayType::ChronoDateTimeUtc,
                    order.iter().map(|e| e.occurred_at.into()).collect(),
                ),
                column(
                    ArrayType::BigInt,
                    order.iter().map(|e| expected_of(e).into()).collect(),
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
            for event in &order {
                let n = values.len();
                let placeholders: Vec<String> = (n + 1..=n + 8).map(|i| format!("?{i}")).collect();
                rows.push(format!("({})", placeholders.join(", ")));
                values.push(event.id.to_string().into());
                values.push(event.stream.as_str().into());
                values.push(i64::from(event.version).into());
                values.push(event.event_type.as_str().into());
                values.push(event.payload.to_string().into());
                values.push(actor_json(&event.actor).to_string().into());
                values.push(sqlite_timestamp(event.occurred_at).into());
                values.push(expected_of(event).into());
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
        written.insert(
            EventId::from_uuid(id),
            Cursor {
                tx,
                position,
                log: 0,
            },
        );
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
    parse_tx_at(row, "")
}

fn parse_tx_at(row: &QueryResult, prefix: &str) -> Result<u64, DbErr> {
    let tx: String = row.try_get(prefix, "tx")?;
    tx.parse()
        .map_err(|_| DbErr::Custom(format!("unexpected transaction id `{tx}`")))
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> DbErr {
    DbErr::Custom(format!("event log row has an unreadable {what}: {e}"))
}

fn decode(backend: Backend, log: u32, row: &QueryResult) -> Result<RecordedEvent, DbErr> {
    decode_at(backend, log, row, "")
}

/// PostgreSQL: the columns [`decode_at`] reads, from the events table as
/// `alias`, each named `prefix` and its name (for a query that joins the
/// events to other tables).
pub(crate) fn pg_columns_as(alias: &str, prefix: &str) -> String {
    let mut columns: Vec<String> = [
        "position",
        "id",
        "stream",
        "version",
        "type",
        "payload",
        "actor",
        "occurred_at",
    ]
    .iter()
    .map(|c| format!("{alias}.{c} AS {prefix}{c}"))
    .collect();
    columns.push(format!("{alias}.transaction_id::text AS {prefix}tx"));
    columns.join(", ")
}

/// An event from a row whose event columns are named `prefix` and their
/// names.
pub(crate) fn decode_at(
    backend: Backend,
    log: u32,
    row: &QueryResult,
    prefix: &str,
) -> Result<RecordedEvent, DbErr> {
    let position: i64 = row.try_get(prefix, "position")?;
    let stream: String = row.try_get(prefix, "stream")?;
    let version: i32 = row.try_get(prefix, "version")?;
    let event_type: String = row.try_get(prefix, "type")?;
    let (id, payload, actor, occurred_at, tx) = match backend {
        Backend::Postgres => {
            let id: uuid::Uuid = row.try_get(prefix, "id")?;
            let payload: Value = row.try_get(prefix, "payload")?;
            let actor: Value = row.try_get(prefix, "actor")?;
            let occurred_at: DateTime<Utc> = row.try_get(prefix, "occurred_at")?;
            (id, payload, actor, occurred_at, parse_tx_at(row, prefix)?)
        }
        Backend::Sqlite => {
            let id: String = row.try_get(prefix, "id")?;
            let payload: String = row.try_get(prefix, "payload")?;
            let actor: String = row.try_get(prefix, "actor")?;
            let occurred_at: String = row.try_get(prefix, "occurred_at")?;
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
        cursor: Cursor { tx, position, log },
        stream: StreamName::parse(&stream).map_err(|e| corrupt("stream", e))?,
        version: u32::try_from(version).map_err(|e| corrupt("version", e))?,
        event_type: EventType::parse(&event_type).map_err(|e| corrupt("type", e))?,
        payload,
        actor: serde_json::from_value(actor).map_err(|e| corrupt("actor", e))?,
        occurred_at,
    })
}
