//! The bridge's tables: visitors, the relays of users' messages to the
//! helpdesk with their attempts, and the helpdesk's messages taken.

use sea_orm::{ConnectionTrait, DbErr, QueryResult};

use super::Outgoing;
use crate::{db::Db, ids::UserId};

/// A user's conversation in the helpdesk.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorRow {
    pub visitor_id: String,
    pub user_id: UserId,
    pub telegram_chat_id: i64,
    /// The helpdesk's chat, once it named one.
    pub chat_id: Option<String>,
    pub open: bool,
}

const VISITOR: &str = "visitor_id, user_id, telegram_chat_id, chat_id, status";

fn read_visitor(row: &QueryResult) -> Result<VisitorRow, DbErr> {
    let user_id: String = row.try_get("", "user_id")?;
    let status: String = row.try_get("", "status")?;
    Ok(VisitorRow {
        visitor_id: row.try_get("", "visitor_id")?,
        user_id: user_id
            .parse()
            .map_err(|_| DbErr::Custom(format!("helpdesk visitor of user `{user_id}`")))?,
        telegram_chat_id: row.try_get("", "telegram_chat_id")?,
        chat_id: row.try_get("", "chat_id")?,
        open: status == "open",
    })
}

/// The user's open visitor, if they have one.
pub async fn open_visitor(
    conn: &impl ConnectionTrait,
    db: &Db,
    user_id: UserId,
) -> Result<Option<VisitorRow>, DbErr> {
    conn.query_one_raw(db.statement(
        &format!("SELECT {VISITOR} FROM helpdesk_visitors WHERE user_id = $1 AND status = 'open'"),
        vec![user_id.to_string().into()],
    ))
    .await?
    .as_ref()
    .map(read_visitor)
    .transpose()
}

pub async fn visitor(
    conn: &impl ConnectionTrait,
    db: &Db,
    visitor_id: &str,
) -> Result<Option<VisitorRow>, DbErr> {
    conn.query_one_raw(db.statement(
        &format!("SELECT {VISITOR} FROM helpdesk_visitors WHERE visitor_id = $1"),
        vec![visitor_id.to_owned().into()],
    ))
    .await?
    .as_ref()
    .map(read_visitor)
    .transpose()
}

/// A user's visitors, newest first (the history of their conversations).
pub async fn visitors_of(
    conn: &impl ConnectionTrait,
    db: &Db,
    user_id: UserId,
) -> Result<Vec<VisitorRow>, DbErr> {
    let rows = conn
        .query_all_raw(db.statement(
            &format!(
                "SELECT {VISITOR} FROM helpdesk_visitors WHERE user_id = $1 \
                 ORDER BY created_at_ms DESC, visitor_id DESC"
            ),
            vec![user_id.to_string().into()],
        ))
        .await?;
    rows.iter().map(read_visitor).collect()
}

pub async fn create_visitor(
    conn: &impl ConnectionTrait,
    db: &Db,
    visitor: &VisitorRow,
    at_ms: i64,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "INSERT INTO helpdesk_visitors (visitor_id, user_id, telegram_chat_id, status, \
         created_at_ms) VALUES ($1, $2, $3, 'open', $4)",
        vec![
            visitor.visitor_id.clone().into(),
            visitor.user_id.to_string().into(),
            visitor.telegram_chat_id.into(),
            at_ms.into(),
        ],
    ))
    .await?;
    Ok(())
}

pub async fn close_visitor(
    conn: &impl ConnectionTrait,
    db: &Db,
    visitor_id: &str,
    chat_id: Option<&str>,
    at_ms: i64,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "UPDATE helpdesk_visitors SET status = 'closed', closed_at_ms = $2, \
         chat_id = COALESCE(chat_id, $3) WHERE visitor_id = $1",
        vec![
            visitor_id.to_owned().into(),
            at_ms.into(),
            chat_id.map(str::to_owned).into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Records the helpdesk's chat of a visitor.
pub async fn set_chat(
    conn: &impl ConnectionTrait,
    db: &Db,
    visitor_id: &str,
    chat_id: &str,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "UPDATE helpdesk_visitors SET chat_id = $2 WHERE visitor_id = $1",
        vec![visitor_id.to_owned().into(), chat_id.to_owned().into()],
    ))
    .await?;
    Ok(())
}

/// A user's message on its way to the helpdesk.
#[derive(Debug, Clone)]
pub struct RelayRow {
    pub id: String,
    pub message_id: String,
    pub visitor_id: String,
    pub user_id: UserId,
    /// `None` once the relay ended (or if it was erased).
    pub body: Option<Outgoing>,
    pub length: usize,
    pub attempts: i32,
}

const RELAY: &str = "id, message_id, visitor_id, user_id, body, length, attempts";

fn read_relay(row: &QueryResult) -> Result<RelayRow, DbErr> {
    let user_id: String = row.try_get("", "user_id")?;
    let body: Option<String> = row.try_get("", "body")?;
    let length: i32 = row.try_get("", "length")?;
    Ok(RelayRow {
        id: row.try_get("", "id")?,
        message_id: row.try_get("", "message_id")?,
        visitor_id: row.try_get("", "visitor_id")?,
        user_id: user_id
            .parse()
            .map_err(|_| DbErr::Custom(format!("helpdesk relay of user `{user_id}`")))?,
        body: body.and_then(|b| serde_json::from_str(&b).ok()),
        length: usize::try_from(length).unwrap_or(0),
        attempts: row.try_get("", "attempts")?,
    })
}

/// Queues `out` for the helpdesk unless a relay of its message exists
/// (an update recorded again relays nothing twice).
pub async fn enqueue(
    conn: &impl ConnectionTrait,
    db: &Db,
    out: &Outgoing,
    user_id: UserId,
    at_ms: i64,
) -> Result<(), DbErr> {
    let length = i32::try_from(out.text.chars().count()).unwrap_or(i32::MAX);
    let body = serde_json::to_string(out).map_err(|e| DbErr::Custom(e.to_string()))?;
    conn.execute_raw(db.statement(
        "INSERT INTO helpdesk_relays (id, message_id, visitor_id, user_id, body, length, \
         status, attempts, due_at_ms, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7, $7) \
         ON CONFLICT (message_id) DO NOTHING",
        vec![
            uuid::Uuid::now_v7().to_string().into(),
            out.message_id.clone().into(),
            out.visitor_id.clone().into(),
            user_id.to_string().into(),
            body.into(),
            length.into(),
            at_ms.into(),
        ],
    ))
    .await?;
    Ok(())
}

/// Takes up to `most` relays to deliver now, under a lease until
/// `lease_until_ms`: each the oldest of its visitor not delivered yet (the
/// next waits until it ended), due, or `sending` past its lease (its
/// instance stopped; the helpdesk takes the same message id once).
pub async fn claim(
    db: &Db,
    most: usize,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<Vec<RelayRow>, DbErr> {
    let txn = db.begin_write().await?;
    let lock = match db.backend() {
        crate::db::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        crate::db::Backend::Sqlite => "",
    };
    let rows = txn
        .query_all_raw(db.statement(
            &format!(
                "SELECT {RELAY} FROM helpdesk_relays r \
                 WHERE ((r.status = 'queued' AND r.due_at_ms <= $1) \
                        OR (r.status = 'sending' AND r.lease_until_ms < $1)) \
                   AND NOT EXISTS (SELECT 1 FROM helpdesk_relays e \
                                   WHERE e.visitor_id = r.visitor_id \
                                     AND e.status IN ('queued', 'sending') \
                                     AND (e.created_at_ms < r.created_at_ms \
                                          OR (e.created_at_ms = r.created_at_ms AND e.id < r.id))) \
                 ORDER BY r.due_at_ms, r.created_at_ms LIMIT $2 {lock}"
            ),
            vec![now_ms.into(), i64::try_from(most).unwrap_or(1).into()],
        ))
        .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut relay = read_relay(row)?;
        relay.attempts += 1;
        txn.execute_raw(db.statement(
            "UPDATE helpdesk_relays SET status = 'sending', attempts = $2, lease_until_ms = $3, \
             updated_at_ms = $4 WHERE id = $1",
            vec![
                relay.id.clone().into(),
                relay.attempts.into(),
                lease_until_ms.into(),
                now_ms.into(),
            ],
        ))
        .await?;
        claimed.push(relay);
    }
    txn.commit().await?;
    Ok(claimed)
}

/// One attempt's answer: the helpdesk's HTTP status, or why there was none.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub attempt: i32,
    pub attempted_at_ms: i64,
    pub duration_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

pub async fn record_attempt(
    conn: &impl ConnectionTrait,
    db: &Db,
    relay_id: &str,
    attempt: &Attempt,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "INSERT INTO helpdesk_attempts (relay_id, attempt, attempted_at_ms, duration_ms, \
         response_status, error) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (relay_id, attempt) DO NOTHING",
        vec![
            relay_id.to_owned().into(),
            attempt.attempt.into(),
            attempt.attempted_at_ms.into(),
            attempt.duration_ms.into(),
            attempt.status.map(i32::from).into(),
            attempt.error.clone().into(),
        ],
    ))
    .await?;
    Ok(())
}

/// The attempts of a relay, in order.
pub async fn attempts(db: &Db, relay_id: &str) -> Result<Vec<Attempt>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            "SELECT attempt, attempted_at_ms, duration_ms, response_status, error \
             FROM helpdesk_attempts WHERE relay_id = $1 ORDER BY attempt",
            vec![relay_id.to_owned().into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Attempt {
                attempt: row.try_get("", "attempt")?,
                attempted_at_ms: row.try_get("", "attempted_at_ms")?,
                duration_ms: row.try_get("", "duration_ms")?,
                status: row
                    .try_get::<Option<i32>>("", "response_status")?
                    .and_then(|s| u16::try_from(s).ok()),
                error: row.try_get("", "error")?,
            })
        })
        .collect()
}

/// The relay goes back in the queue, due at `due_at_ms` (unless its lease
/// ran out and another took it meanwhile).
pub async fn retry(
    db: &Db,
    relay: &RelayRow,
    attempt: &Attempt,
    due_at_ms: i64,
) -> Result<(), DbErr> {
    let txn = db.begin_write().await?;
    record_attempt(&*txn, db, &relay.id, attempt).await?;
    txn.execute_raw(db.statement(
        "UPDATE helpdesk_relays SET status = 'queued', due_at_ms = $2, lease_until_ms = NULL, \
         last_status = $3, last_error = $4, updated_at_ms = $5 \
         WHERE id = $1 AND status = 'sending' AND attempts = $6",
        vec![
            relay.id.clone().into(),
            due_at_ms.into(),
            attempt.status.map(i32::from).into(),
            attempt.error.clone().into(),
            attempt.attempted_at_ms.into(),
            relay.attempts.into(),
        ],
    ))
    .await?;
    txn.commit().await
}

/// The relay ended (`delivered` or `failed`): its text is not kept. False
/// when it was not this attempt's to end (its lease ran out and another
/// took it).
pub async fn end(
    conn: &impl ConnectionTrait,
    db: &Db,
    relay: &RelayRow,
    status: &str,
    attempt: &Attempt,
) -> Result<bool, DbErr> {
    record_attempt(conn, db, &relay.id, attempt).await?;
    let ended = conn
        .execute_raw(db.statement(
            "UPDATE helpdesk_relays SET status = $2, body = NULL, lease_until_ms = NULL, \
             last_status = $3, last_error = $4, updated_at_ms = $5 \
             WHERE id = $1 AND status = 'sending' AND attempts = $6",
            vec![
                relay.id.clone().into(),
                status.to_owned().into(),
                attempt.status.map(i32::from).into(),
                attempt.error.clone().into(),
                attempt.attempted_at_ms.into(),
                relay.attempts.into(),
            ],
        ))
        .await?;
    Ok(ended.rows_affected() > 0)
}

/// Records that the helpdesk's message `message_id` was taken; false if
/// it was already.
pub async fn take_inbound(
    conn: &impl ConnectionTrait,
    db: &Db,
    message_id: &str,
    visitor_id: &str,
    at_ms: i64,
) -> Result<bool, DbErr> {
    let done = conn
        .execute_raw(db.statement(
            "INSERT INTO helpdesk_inbound (message_id, visitor_id, received_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
            vec![
                message_id.to_owned().into(),
                visitor_id.to_owned().into(),
                at_ms.into(),
            ],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn inbound_taken(
    conn: &impl ConnectionTrait,
    db: &Db,
    message_id: &str,
) -> Result<bool, DbErr> {
    Ok(conn
        .query_one_raw(db.statement(
            "SELECT 1 AS one FROM helpdesk_inbound WHERE message_id = $1",
            vec![message_id.to_owned().into()],
        ))
        .await?
        .is_some())
}
