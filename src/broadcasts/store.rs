//! The `broadcasts` and `broadcast_recipients` tables: written in the
//! transactions of the broadcast's own commands, and each recipient's row
//! in the transaction that records their send's outcome.

use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value as DbValue};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::domain::{BroadcastStatus, Counts, LeftOut};
use crate::{
    db::{Backend, Db},
    telegram::outbox::now_ms,
};

/// What became of one recipient's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Not sent yet (or on its way).
    Queued,
    Sent,
    /// Telegram refused it, or it could not be sent after its retries.
    Failed,
    /// The user blocked the bot.
    Blocked,
    /// It may or may not have arrived: not sent again.
    Unknown,
    /// The broadcast was cancelled before it was sent.
    Cancelled,
}

impl Delivery {
    pub const ALL: [Delivery; 6] = [
        Self::Queued,
        Self::Sent,
        Self::Failed,
        Self::Blocked,
        Self::Unknown,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Blocked => "blocked",
            Self::Unknown => "unknown",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }
}

/// A broadcast as its row holds it.
#[derive(Debug, Clone)]
pub struct BroadcastRow {
    pub id: String,
    pub status: BroadcastStatus,
    pub method: String,
    pub params: Value,
    pub audience: Value,
    pub paid: bool,
    pub send_at_ms: i64,
    pub total: i64,
    pub left_out: Option<LeftOut>,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

const COLUMNS: &str = "id, status, method, params, audience, paid, send_at_ms, total, left_out, \
                       created_by, created_at_ms, started_at_ms, finished_at_ms";

fn read_row(row: &QueryResult) -> Result<BroadcastRow, DbErr> {
    let json = |text: String| serde_json::from_str(&text).unwrap_or(Value::Null);
    let status: String = row.try_get("", "status")?;
    let total: i32 = row.try_get("", "total")?;
    Ok(BroadcastRow {
        id: row.try_get("", "id")?,
        status: BroadcastStatus::parse(&status).unwrap_or(BroadcastStatus::Failed),
        method: row.try_get("", "method")?,
        params: json(row.try_get("", "params")?),
        audience: json(row.try_get("", "audience")?),
        paid: row.try_get("", "paid")?,
        send_at_ms: row.try_get("", "send_at_ms")?,
        total: i64::from(total),
        left_out: row
            .try_get::<Option<String>>("", "left_out")?
            .and_then(|t| serde_json::from_str(&t).ok()),
        created_by: row.try_get("", "created_by")?,
        created_at_ms: row.try_get("", "created_at_ms")?,
        started_at_ms: row.try_get("", "started_at_ms")?,
        finished_at_ms: row.try_get("", "finished_at_ms")?,
    })
}

/// Writes a new broadcast, scheduled.
pub async fn insert(conn: &impl ConnectionTrait, db: &Db, row: &BroadcastRow) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "INSERT INTO broadcasts (id, status, method, params, audience, paid, send_at_ms, total, \
         created_by, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
        vec![
            row.id.clone().into(),
            row.status.as_str().into(),
            row.method.clone().into(),
            row.params.to_string().into(),
            row.audience.to_string().into(),
            row.paid.into(),
            row.send_at_ms.into(),
            row.created_by.clone().into(),
            row.created_at_ms.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// One recipient of a starting broadcast.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub chat_id: i64,
    pub user_id: String,
    pub send_id: String,
}

/// Marks the broadcast running with its `recipients` (their sends are
/// queued in the same transaction by the caller).
pub async fn start(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: &str,
    recipients: &[Recipient],
    left_out: &LeftOut,
    at_ms: i64,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "UPDATE broadcasts SET status = 'running', total = $2, left_out = $3, started_at_ms = $4 \
         WHERE id = $1",
        vec![
            id.to_owned().into(),
            i32::try_from(recipients.len()).unwrap_or(i32::MAX).into(),
            serde_json::to_string(left_out).unwrap_or_default().into(),
            at_ms.into(),
        ],
    ))
    .await?;
    for chunk in recipients.chunks(500) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<DbValue> = Vec::with_capacity(chunk.len() * 5);
        for r in chunk {
            let n = values.len();
            rows.push(format!(
                "(${}, ${}, ${}, 'queued', ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5
            ));
            values.extend([
                id.to_owned().into(),
                r.chat_id.into(),
                r.user_id.clone().into(),
                r.send_id.clone().into(),
                at_ms.into(),
            ]);
        }
        conn.execute_raw(db.statement(
            &format!(
                "INSERT INTO broadcast_recipients (broadcast_id, chat_id, user_id, status, \
                 send_id, updated_at_ms) VALUES {}",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    }
    Ok(())
}

/// Records what became of recipients' messages, by their sends' ids,
/// through `conn` (the transaction of the sends' outcomes): one statement
/// for all of them.
pub async fn delivered(
    conn: &impl ConnectionTrait,
    db: &Db,
    deliveries: &[(&str, Delivery, Option<&str>)],
) -> Result<(), DbErr> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = deliveries
        .iter()
        .map(|(send_id, delivery, error)| {
            serde_json::json!({"send_id": send_id, "status": delivery.as_str(), "error": error})
        })
        .collect();
    let text = match db.backend() {
        Backend::Postgres => {
            "UPDATE broadcast_recipients r SET status = i.status, error = i.error, \
             updated_at_ms = $2 \
             FROM jsonb_to_recordset($1::jsonb) AS i(send_id text, status text, error text) \
             WHERE r.send_id = i.send_id AND r.status = 'queued'"
        }
        Backend::Sqlite => {
            "UPDATE broadcast_recipients SET status = i.value ->> 'status', \
             error = i.value ->> 'error', updated_at_ms = $2 \
             FROM json_each($1) AS i \
             WHERE broadcast_recipients.send_id = i.value ->> 'send_id' \
               AND broadcast_recipients.status = 'queued'"
        }
    };
    conn.execute_raw(db.statement(
        text,
        vec![Value::Array(rows).to_string().into(), now_ms().into()],
    ))
    .await?;
    Ok(())
}

/// Cancels what of broadcast `id` was not sent yet: its queued sends are
/// taken out of the outbox, their recipients are `cancelled`. Sends on
/// their way report as they end.
pub async fn cancel(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: &str,
    at_ms: i64,
) -> Result<(), DbErr> {
    for (sql, values) in [
        (
            "DELETE FROM telegram_sends WHERE status = 'queued' AND id IN \
             (SELECT send_id FROM broadcast_recipients WHERE broadcast_id = $1 \
              AND status = 'queued')",
            vec![DbValue::from(id.to_owned())],
        ),
        (
            "UPDATE broadcast_recipients SET status = 'cancelled', updated_at_ms = $2 \
             WHERE broadcast_id = $1 AND status = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM telegram_sends s WHERE s.id = send_id)",
            vec![id.to_owned().into(), at_ms.into()],
        ),
        (
            "UPDATE broadcasts SET status = 'cancelled', finished_at_ms = $2 WHERE id = $1",
            vec![id.to_owned().into(), at_ms.into()],
        ),
    ] {
        conn.execute_raw(db.statement(sql, values)).await?;
    }
    Ok(())
}

/// Marks broadcast `id` ended with `status`.
pub async fn finish(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: &str,
    status: BroadcastStatus,
    at_ms: i64,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "UPDATE broadcasts SET status = $2, finished_at_ms = $3 WHERE id = $1",
        vec![id.to_owned().into(), status.as_str().into(), at_ms.into()],
    ))
    .await?;
    Ok(())
}

pub async fn get(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: &str,
) -> Result<Option<BroadcastRow>, DbErr> {
    let row = conn
        .query_one_raw(db.statement(
            &format!("SELECT {COLUMNS} FROM broadcasts WHERE id = $1"),
            vec![id.to_owned().into()],
        ))
        .await?;
    row.as_ref().map(read_row).transpose()
}

/// Broadcasts, newest first; and how many there are.
pub async fn list(db: &Db, limit: u64, offset: u64) -> Result<(Vec<BroadcastRow>, i64), DbErr> {
    let total = count(db, "SELECT COUNT(*) AS n FROM broadcasts", vec![]).await?;
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            &format!(
                "SELECT {COLUMNS} FROM broadcasts ORDER BY created_at_ms DESC, id DESC \
                 LIMIT $1 OFFSET $2"
            ),
            vec![
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
                i64::try_from(offset).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    Ok((rows.iter().map(read_row).collect::<Result<_, _>>()?, total))
}

/// The ids of broadcasts in `status`, `send_at_ms` by `until_ms` at the
/// latest.
pub async fn ids_in(db: &Db, status: BroadcastStatus, until_ms: i64) -> Result<Vec<String>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            "SELECT id FROM broadcasts WHERE status = $1 AND send_at_ms <= $2 \
             ORDER BY send_at_ms, id LIMIT 100",
            vec![status.as_str().into(), until_ms.into()],
        ))
        .await?;
    rows.iter().map(|r| r.try_get("", "id")).collect()
}

async fn count(db: &Db, sql: &str, values: Vec<DbValue>) -> Result<i64, DbErr> {
    Ok(db
        .conn()
        .query_one_raw(db.statement(sql, values))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// How many of broadcast `id`'s recipients are in each state.
pub async fn counts(conn: &impl ConnectionTrait, db: &Db, id: &str) -> Result<Counts, DbErr> {
    let rows = conn
        .query_all_raw(db.statement(
            "SELECT status, COUNT(*) AS n FROM broadcast_recipients WHERE broadcast_id = $1 \
             GROUP BY status",
            vec![id.to_owned().into()],
        ))
        .await?;
    let mut counts = Counts::default();
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        counts.add(Delivery::parse(&status).unwrap_or(Delivery::Unknown), n);
    }
    Ok(counts)
}

/// A recipient as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecipientOut {
    pub chat_id: i64,
    pub user_id: String,
    pub status: Delivery,
    pub send_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// A page of broadcast `id`'s recipients (optionally in one state); and
/// how many match.
pub async fn recipients(
    db: &Db,
    id: &str,
    status: Option<Delivery>,
    limit: u64,
    offset: u64,
) -> Result<(Vec<RecipientOut>, i64), DbErr> {
    let mut filter = "broadcast_id = $1".to_owned();
    let mut values: Vec<DbValue> = vec![id.to_owned().into()];
    if let Some(status) = status {
        values.push(status.as_str().into());
        filter.push_str(" AND status = $2");
    }
    let total = count(
        db,
        &format!("SELECT COUNT(*) AS n FROM broadcast_recipients WHERE {filter}"),
        values.clone(),
    )
    .await?;
    let n = values.len();
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            &format!(
                "SELECT chat_id, user_id, status, send_id, error, updated_at_ms \
                 FROM broadcast_recipients WHERE {filter} ORDER BY chat_id LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
            values,
        ))
        .await?;
    let items = rows
        .iter()
        .map(|row| {
            let status: String = row.try_get("", "status")?;
            let at: i64 = row.try_get("", "updated_at_ms")?;
            Ok(RecipientOut {
                chat_id: row.try_get("", "chat_id")?,
                user_id: row.try_get("", "user_id")?,
                status: Delivery::parse(&status).unwrap_or(Delivery::Unknown),
                send_id: row.try_get("", "send_id")?,
                error: row.try_get("", "error")?,
                updated_at: chrono::DateTime::from_timestamp_millis(at).unwrap_or_default(),
            })
        })
        .collect::<Result<_, DbErr>>()?;
    Ok((items, total))
}
