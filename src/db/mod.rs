//! The database: PostgreSQL (`DATABASE_URL=postgres://…`) or an SQLite file
//! (the embedded default), both through sea-orm.
//!
//! Every transaction that writes goes through [`Db::begin_write`]. On SQLite
//! that also takes a process-wide write lock: SQLite allows one writer at a
//! time, and a deferred transaction that reads before it writes would
//! otherwise fail with `SQLITE_BUSY` instead of waiting. On PostgreSQL writers
//! run concurrently.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
pub mod entities;
pub mod notifications;

use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    SqlxPostgresConnector, SqlxSqliteConnector, TransactionTrait,
    sqlx::{
        self,
        postgres::{PgConnectOptions, PgPoolOptions},
        sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    },
};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::config::DatabaseConfig;

/// A pooled PostgreSQL connection idle longer than this is pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);
/// PostgreSQL: connections of the webhook queue's own (one claim and one
/// batch of outcomes at a time per instance, and the odd lookup).
const QUEUE_CONNECTIONS: u32 = 3;

/// A PostgreSQL pool of up to `max` connections. A connection that sat
/// idle is checked before it is used (the server or something between may
/// have dropped it); one in constant use is not: checking every time would
/// cost a round trip per statement.
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Which database this process talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: DatabaseConnection,
    /// PostgreSQL: the webhook queue's own connections (see [`Db::queue`]).
    queue: Option<DatabaseConnection>,
    backend: Backend,
    /// `Some` on SQLite: serializes write transactions within the process.
    write_lock: Option<Arc<Mutex<()>>>,
    /// Bumped after every commit that appended events; the log tailer (and,
    /// on Postgres, the cross-instance notifier) wait on it.
    appended: watch::Sender<u64>,
}

impl Db {
    /// Connects and checks the database answers. The error says which
    /// database could not be reached, never with the password.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        match config {
            DatabaseConfig::Sqlite { path } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create the database directory {}", dir.display())
                    })?;
                }
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a committed event survives a power cut, not only a crash.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
                Ok(Self::from_conn(
                    SqlxSqliteConnector::from_sqlx_sqlite_pool(pool),
                    None,
                    Backend::Sqlite,
                ))
            }
            DatabaseConfig::Postgres {
                url,
                max_connections,
            } => {
                let options: PgConnectOptions = url.parse().context("DATABASE_URL is malformed")?;
                let target = format!(
                    "{}:{}/{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or("(default)")
                );
                let options = options.application_name("switchboard");
                // One probe connection first: the pool would retry until its
                // timeout and then report only that, hiding the real cause
                // (refused, unknown host, authentication, no such database).
                let probe = tokio::time::timeout(
                    Duration::from_secs(10),
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
                )
                .await;
                match probe {
                    Ok(Ok(conn)) => {
                        let _ = sqlx::Connection::close(conn).await;
                    }
                    Ok(Err(e)) => {
                        anyhow::bail!("cannot connect to PostgreSQL at {target}: {}", describe(&e))
                    }
                    Err(_) => anyhow::bail!(
                        "cannot connect to PostgreSQL at {target}: no answer within 10 s"
                    ),
                }
                let pool = pool_options(*max_connections)
                    .connect_with(options.clone())
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {target}"))?;
                // The queue's statements run thousands of times a second
                // with the same shape: planned once per session, not at
                // every bind (a custom plan for a claim cost half a
                // millisecond each time).
                let queue = pool_options(QUEUE_CONNECTIONS).connect_lazy_with(
                    options.options([("plan_cache_mode", "force_generic_plan")]),
                );
                Ok(Self::from_conn(
                    SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
                    Some(SqlxPostgresConnector::from_sqlx_postgres_pool(queue)),
                    Backend::Postgres,
                ))
            }
        }
    }

    fn from_conn(
        conn: DatabaseConnection,
        queue: Option<DatabaseConnection>,
        backend: Backend,
    ) -> Self {
        let write_lock = match backend {
            Backend::Sqlite => Some(Arc::new(Mutex::new(()))),
            Backend::Postgres => None,
        };
        Self {
            conn,
            queue,
            backend,
            write_lock,
            appended: watch::Sender::new(0),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A statement written with PostgreSQL's `$n` placeholders, for this
    /// database (`?n` on SQLite).
    pub fn statement(&self, text: &str, values: Vec<sea_orm::Value>) -> sea_orm::Statement {
        sea_orm::Statement::from_sql_and_values(
            self.database_backend(),
            placeholders(self.backend, text),
            values,
        )
    }

    /// The sea-orm connection, for reads.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Where the webhook queue's claims and outcomes run: on PostgreSQL a
    /// few connections of their own whose sessions plan a statement once
    /// and keep the plan (`plan_cache_mode = force_generic_plan`), which
    /// suits statements whose plan does not depend on their values; on
    /// SQLite the one connection (writes still go through
    /// [`Db::write_once`] there).
    pub fn queue(&self) -> &DatabaseConnection {
        self.queue.as_ref().unwrap_or(&self.conn)
    }

    /// The underlying Postgres pool (for `LISTEN`), if this is Postgres.
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match self.backend {
            Backend::Postgres => Some(self.conn.get_postgres_connection_pool()),
            Backend::Sqlite => None,
        }
    }

    /// Starts a transaction that may write.
    ///
    /// On SQLite this holds the process-wide write lock until commit or
    /// rollback: never call `begin_write` or [`EventStore::append`] while
    /// holding a `WriteTxn` (use `append_in` with that transaction).
    ///
    /// [`EventStore::append`]: crate::events::EventStore::append
    pub async fn begin_write(&self) -> Result<WriteTxn, DbErr> {
        let guard = match &self.write_lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        };
        let txn = self.conn.begin().await?;
        if self.backend() == Backend::Postgres {
            // Before the transaction has an id: the log's readers wait for
            // the running transactions that hold this lock, and for no other
            // (see `crate::events::store`).
            if let Err(e) = txn
                .execute_unprepared("LOCK TABLE events IN ROW EXCLUSIVE MODE")
                .await
            {
                let _ = txn.rollback().await;
                return Err(e);
            }
        }
        Ok(WriteTxn {
            txn,
            appended: AtomicBool::new(false),
            signal: self.appended.clone(),
            _guard: guard,
        })
    }

    /// Runs `f` as a single-statement write outside any explicit transaction
    /// (an autocommit statement is atomic on both databases), under the
    /// SQLite write lock. One round trip instead of BEGIN/statement/COMMIT.
    pub async fn write_once<T, F>(&self, f: F) -> T
    where
        F: AsyncFnOnce(&DatabaseConnection) -> T,
    {
        let _guard = match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        f(&self.conn).await
    }

    /// Wakes the log tailer after events were committed outside a
    /// [`WriteTxn`].
    pub(crate) fn signal_appended(&self) {
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes after every commit that appended events.
    pub fn watch_appends(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Runs the migrations that have not run yet.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        use migration::MigratorTrait;
        let _guard = match &self.write_lock {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        // Instances starting together on one Postgres database take turns:
        // a session-level advisory lock held on a connection of its own.
        let mut lock = match self.backend {
            Backend::Postgres => {
                let mut conn = self
                    .conn
                    .get_postgres_connection_pool()
                    .acquire()
                    .await
                    .map_err(|e| DbErr::Custom(format!("migration lock: {e}")))?;
                sqlx::query("SELECT pg_advisory_lock(7351020261121)")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| DbErr::Custom(format!("migration lock: {e}")))?;
                Some(conn)
            }
            Backend::Sqlite => None,
        };
        let result = migration::Migrator::up(&self.conn, None).await;
        if let Some(conn) = lock.as_mut() {
            let _ = sqlx::query("SELECT pg_advisory_unlock(7351020261121)")
                .execute(&mut **conn)
                .await;
        }
        result
    }

    /// Answers whether the database is reachable right now.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.execute_unprepared("SELECT 1").await.map(|_| ())
    }

    pub fn database_backend(&self) -> DatabaseBackend {
        self.conn.get_database_backend()
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(self) {
        if let Some(queue) = self.queue {
            let _ = queue.close().await;
        }
        let _ = self.conn.close().await;
    }
}

/// Whether `e` means the database could not be reached (no connection from
/// the pool, or the connection failed), rather than that a statement failed.
pub fn is_unavailable(e: &DbErr) -> bool {
    matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
}

/// `values` padded to a power of two by repeating the last one, for an
/// `IN (…)` list: the statement's text, prepared once per connection, then
/// takes one of a few forms instead of one per length.
pub fn padded<T: Clone>(mut values: Vec<T>) -> Vec<T> {
    if let Some(last) = values.last().cloned() {
        values.resize(values.len().next_power_of_two(), last);
    }
    values
}

/// The database's own message without the driver's wrapping.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(e) => e.message().to_owned(),
        sqlx::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// A write transaction. Dereferences to the sea-orm transaction, so it can be
/// handed to anything that takes a `ConnectionTrait`.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    appended: AtomicBool,
    signal: watch::Sender<u64>,
    // Dropped after the transaction is committed or rolled back.
    _guard: Option<OwnedMutexGuard<()>>,
}

impl WriteTxn {
    /// Marks that this transaction appended events, so its commit wakes the
    /// log tailer.
    pub(crate) fn mark_appended(&self) {
        self.appended.store(true, Ordering::Relaxed);
    }

    pub async fn commit(self) -> Result<(), DbErr> {
        let appended = self.appended.load(Ordering::Relaxed);
        self.txn.commit().await?;
        if appended {
            self.signal.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbErr> {
        self.txn.rollback().await
    }
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

/// SQL written with PostgreSQL's `$n` placeholders, for `backend` (`?n` on
/// SQLite).
pub fn placeholders(backend: Backend, text: &str) -> String {
    match backend {
        Backend::Postgres => text.to_owned(),
        Backend::Sqlite => text.replace('$', "?"),
    }
}
