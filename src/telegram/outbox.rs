//! The Telegram outbox (`telegram_sends`): a row per Bot API send, written
//! in the transaction of the command that causes it, and the pacing that
//! keeps every instance together within Telegram's limits
//! (`telegram_pacing`): at most the configured rate overall, one message a
//! second to a private chat, twenty a minute to a group.
//!
//! A claim is one short transaction that holds the `overall` pacing row
//! (the instances take turns on it): it finds the oldest due sends, of the
//! highest priority, whose chats' turns have come and that have nothing
//! else on its way (a chat's messages leave in order), takes as many as
//! their schedule has turns for (the overall rate's, or paid broadcast
//! messages'), marks them `sending` under a lease, and moves the schedules
//! and the chats' next turns on. The calls to Telegram are made after the
//! claim committed, each at its turn; their outcomes are recorded by a
//! command each.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value as DbValue};
use serde_json::Value;
use uuid::Uuid;

use super::send::Status;
use crate::{
    db::{Backend, Db},
    ids::UserId,
};

/// A send to enqueue.
#[derive(Debug, Clone)]
pub struct NewSend {
    pub id: Uuid,
    pub chat_id: i64,
    pub method: String,
    /// The Bot API parameters (`chat_id` included).
    pub params: Value,
    pub user_id: Option<UserId>,
    pub origin: &'static str,
    pub reference: Option<String>,
    /// Sends of a lower priority (a higher number) wait while any of a
    /// higher one is due: 0 for replies and API sends, 1 for broadcasts.
    pub priority: i32,
    /// A paid broadcast message (`allow_paid_broadcast`): paced on its own
    /// schedule, at [`PAID_RATE`], rather than the overall rate.
    pub paid: bool,
    /// Files uploaded with it; each parameter naming one holds
    /// [`Upload::marker`].
    pub uploads: Vec<Upload>,
    /// Its parameters and Telegram's answer are not kept once it ended
    /// (the helpdesk bridge's privacy mode): only the chat and the sent
    /// message's id remain.
    pub private: bool,
    /// When it was queued.
    pub created_at_ms: i64,
}

/// A file uploaded for a send's parameter (`photo`, `document`, …).
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: String,
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Upload {
    /// What the send's parameter holds in place of the file:
    /// `attach://<field>`, as the Bot API names an uploaded file.
    pub fn marker(field: &str) -> String {
        format!("{ATTACH}{field}")
    }
}

const ATTACH: &str = "attach://";

/// The parameters of `params` that name an uploaded file.
pub fn uploaded_fields(params: &Value) -> Vec<String> {
    params
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, value)| value.as_str().and_then(|v| v.strip_prefix(ATTACH)) == Some(name))
        .map(|(name, _)| name.clone())
        .collect()
}

impl NewSend {
    pub fn new(chat_id: i64, method: &str, params: Value, origin: &'static str) -> Self {
        Self {
            id: Uuid::now_v7(),
            chat_id,
            method: method.to_owned(),
            params,
            user_id: None,
            origin,
            reference: None,
            priority: 0,
            paid: false,
            uploads: Vec::new(),
            private: false,
            created_at_ms: now_ms(),
        }
    }
}

/// A send as the outbox holds it.
#[derive(Debug, Clone)]
pub struct SendRow {
    pub id: String,
    pub chat_id: i64,
    pub method: String,
    pub params: Value,
    pub status: Status,
    pub user_id: Option<UserId>,
    pub origin: String,
    pub reference: Option<String>,
    pub paid: bool,
    /// See [`NewSend::private`].
    pub private: bool,
    /// When its call is to leave (µs since the epoch; 0: at once): a claim
    /// may take a turn a little before its time.
    pub turn_at_us: i64,
    pub attempts: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const COLUMNS: &str = "id, chat_id, method, params, status, user_id, origin, reference, paid, \
                       private, attempts, result, error, created_at_ms, updated_at_ms";

fn read_row(row: &QueryResult) -> Result<SendRow, DbErr> {
    let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    let status: String = row.try_get("", "status")?;
    Ok(SendRow {
        id: row.try_get("", "id")?,
        chat_id: row.try_get("", "chat_id")?,
        method: row.try_get("", "method")?,
        params: json(row.try_get("", "params")?).unwrap_or(Value::Null),
        status: Status::parse(&status).unwrap_or(Status::Unknown),
        user_id: row
            .try_get::<Option<String>>("", "user_id")?
            .and_then(|u| u.parse().ok()),
        origin: row.try_get("", "origin")?,
        reference: row.try_get("", "reference")?,
        paid: row.try_get("", "paid")?,
        private: row.try_get("", "private")?,
        turn_at_us: 0,
        attempts: row.try_get("", "attempts")?,
        result: json(row.try_get("", "result")?),
        error: row.try_get("", "error")?,
        created_at_ms: row.try_get("", "created_at_ms")?,
        updated_at_ms: row.try_get("", "updated_at_ms")?,
    })
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Writes `send` as queued, through `conn` (the causing command's
/// transaction).
pub async fn enqueue(conn: &impl ConnectionTrait, db: &Db, send: &NewSend) -> Result<(), DbErr> {
    enqueue_all(conn, db, std::slice::from_ref(send)).await
}

/// Writes `sends` as queued, through `conn`, a few hundred rows a
/// statement.
pub async fn enqueue_all(
    conn: &impl ConnectionTrait,
    db: &Db,
    sends: &[NewSend],
) -> Result<(), DbErr> {
    const COLUMNS: usize = 13;
    for chunk in sends.chunks(400) {
        let mut rows = Vec::with_capacity(chunk.len());
        let mut values: Vec<DbValue> = Vec::with_capacity(chunk.len() * COLUMNS);
        for send in chunk {
            let n = values.len();
            let places: Vec<String> = (1..=COLUMNS).map(|i| format!("${}", n + i)).collect();
            // attempts, due_at_ms, created_at_ms, updated_at_ms
            rows.push(format!(
                "({}, 'queued', 0, {}, {}, {})",
                places[..10].join(", "),
                places[10],
                places[11],
                places[12]
            ));
            values.extend([
                send.id.to_string().into(),
                send.chat_id.into(),
                send.method.clone().into(),
                send.params.to_string().into(),
                send.user_id.map(|u| u.to_string()).into(),
                send.origin.into(),
                send.reference.clone().into(),
                send.priority.into(),
                send.paid.into(),
                send.private.into(),
                send.created_at_ms.into(),
                send.created_at_ms.into(),
                send.created_at_ms.into(),
            ]);
        }
        conn.execute_raw(db.statement(
            &format!(
                "INSERT INTO telegram_sends (id, chat_id, method, params, user_id, origin, \
                 reference, priority, paid, private, status, attempts, due_at_ms, created_at_ms, \
                 updated_at_ms) VALUES {}",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    }
    for send in sends {
        for upload in &send.uploads {
            conn.execute_raw(db.statement(
                "INSERT INTO telegram_uploads (send_id, field, filename, content_type, bytes) \
                 VALUES ($1, $2, $3, $4, $5)",
                vec![
                    send.id.to_string().into(),
                    upload.field.clone().into(),
                    upload.filename.clone().into(),
                    upload.content_type.clone().into(),
                    upload.bytes.clone().into(),
                ],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Sends queued at once from this many on refresh PostgreSQL's
/// statistics of the outbox.
const BULK: usize = 1000;

/// After `count` sends were queued at once (a broadcast starting): on
/// PostgreSQL the outbox's statistics are refreshed, so that claims walk
/// the queue in order and stop once they have their sends, rather than
/// sorting all of it as they would while the planner believes it small
/// (autovacuum notices only later).
pub async fn queued_in_bulk(db: &Db, count: usize) {
    if count < BULK || db.backend() != Backend::Postgres {
        return;
    }
    if let Err(e) = db.conn().execute_unprepared("ANALYZE telegram_sends").await {
        tracing::warn!(error = %e, "cannot refresh the Telegram outbox's statistics");
    }
}

/// The files uploaded with send `id`.
pub async fn uploads(db: &Db, id: &str) -> Result<Vec<Upload>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            "SELECT field, filename, content_type, bytes FROM telegram_uploads \
             WHERE send_id = $1 ORDER BY field",
            vec![id.to_owned().into()],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Upload {
                field: row.try_get("", "field")?,
                filename: row.try_get("", "filename")?,
                content_type: row.try_get("", "content_type")?,
                bytes: row.try_get("", "bytes")?,
            })
        })
        .collect()
}

/// One send.
pub async fn get(db: &Db, id: &str) -> Result<Option<SendRow>, DbErr> {
    let row = db
        .conn()
        .query_one_raw(db.statement(
            &format!("SELECT {COLUMNS} FROM telegram_sends WHERE id = $1"),
            vec![id.to_owned().into()],
        ))
        .await?;
    row.as_ref().map(read_row).transpose()
}

/// Sends, newest first, with optional filters; and how many match.
pub async fn list(
    db: &Db,
    status: Option<Status>,
    chat_id: Option<i64>,
    limit: u64,
    offset: u64,
) -> Result<(Vec<SendRow>, i64), DbErr> {
    let mut conditions = Vec::new();
    let mut values: Vec<DbValue> = Vec::new();
    if let Some(status) = status {
        values.push(status.as_str().into());
        conditions.push(format!("status = ${}", values.len()));
    }
    if let Some(chat_id) = chat_id {
        values.push(chat_id.into());
        conditions.push(format!("chat_id = ${}", values.len()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let total = db
        .conn()
        .query_one_raw(db.statement(
            &format!("SELECT COUNT(*) AS n FROM telegram_sends {filter}"),
            values.clone(),
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    let n = values.len();
    values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            &format!(
                "SELECT {COLUMNS} FROM telegram_sends {filter} \
                 ORDER BY created_at_ms DESC, id DESC LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
            values,
        ))
        .await?;
    let rows = rows.iter().map(read_row).collect::<Result<_, _>>()?;
    Ok((rows, total))
}

/// Telegram's limits, as the pacer keeps them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Between two sends overall (`None`: no overall limit).
    pub overall: Option<Duration>,
    /// Between two sends to one private chat.
    pub private_chat: Duration,
    /// Between two sends to one group.
    pub group: Duration,
}

impl Limits {
    /// Telegram's: `rate` a second overall (0: none), one a second per
    /// private chat, twenty a minute per group.
    pub fn telegram(rate: u32) -> Self {
        Self {
            overall: (rate > 0).then(|| Duration::from_secs(1) / rate),
            private_chat: Duration::from_secs(1),
            group: Duration::from_secs(3),
        }
    }

    fn chat(&self, chat_id: i64) -> i64 {
        let interval = if chat_id < 0 {
            self.group
        } else {
            self.private_chat
        };
        millis(interval)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a claim came to.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Sends that are the caller's to make (they are `sending` now).
    pub sends: Vec<SendRow>,
    /// Sends that are not to be made, and why (they are `sending` now,
    /// for the caller to record as ended).
    pub skipped: Vec<(SendRow, Skip)>,
    /// When nothing was claimed: sends are waiting for their turn, claim
    /// again after this long (`None`: nothing is queued).
    pub wait: Option<Duration>,
}

/// Why a claimed send is not to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its user blocked the bot.
    Blocked,
    /// Its broadcast was cancelled (after it went back in the queue for a
    /// retry).
    Cancelled,
}

/// How long a claimed send may take before it counts as lost (its
/// instance stopped during the call): longer than any call may take.
pub fn lease(api_timeout: Duration) -> Duration {
    api_timeout + Duration::from_secs(10)
}

/// Paid broadcast messages a second at most, overall (Telegram's limit
/// for `allow_paid_broadcast`).
pub const PAID_RATE: u32 = 1000;

/// Claims up to `most` sends whose turn has come (to different chats), if
/// any, each leased for `lease`.
pub async fn claim(
    db: &Db,
    limits: &Limits,
    most: usize,
    lease: Duration,
) -> Result<Claimed, DbErr> {
    let txn = db.begin_write().await?;
    let claimed = claim_in(&*txn, db, limits, most.max(1), lease).await;
    match &claimed {
        Ok(c) if !c.sends.is_empty() || !c.skipped.is_empty() => txn.commit().await?,
        _ => {
            let _ = txn.rollback().await;
        }
    }
    claimed
}

/// One of the two overall schedules: the overall rate's, or paid
/// broadcast messages'. In microseconds.
struct Schedule {
    scope: &'static str,
    /// Between two turns (`None`: no limit): a second over the rate, and
    /// [`LATE_US`] more, so that no second ever holds more than the rate
    /// even when turns are taken late.
    interval: Option<i64>,
    /// The first turn this claim may take.
    first: i64,
    /// Turns due now (or within [`EARLY_US`]).
    due: usize,
    /// Turns this claim took.
    taken: usize,
}

/// How late a claim may still take a turn it missed: a claim a little late
/// does not push every later turn back, and no more than this is saved up
/// while idle.
const LATE_US: i64 = 20_000;

/// How early a claim may take a turn: its send waits for the turn's time
/// before its call, so a claim that is itself slow (a transaction on a busy
/// database) does not make the turn late.
const EARLY_US: i64 = 20_000;

impl Schedule {
    fn new(
        scope: &'static str,
        interval: Option<Duration>,
        next: i64,
        now: i64,
        most: usize,
    ) -> Self {
        let Some(interval) = interval else {
            return Self {
                scope,
                interval: None,
                first: now,
                due: most,
                taken: 0,
            };
        };
        // In µs, from the exact interval, rounded up: never a little over
        // the rate.
        let exact = i64::try_from(interval.as_nanos()).unwrap_or(i64::MAX);
        let interval = (exact
            .saturating_mul(1_000_000 + LATE_US)
            .saturating_add(999_999_999)
            / 1_000_000_000)
            .max(1);
        let first = next.max(now - LATE_US);
        let due = if first > now + EARLY_US {
            0
        } else {
            usize::try_from((now + EARLY_US - first) / interval + 1)
                .unwrap_or(most)
                .min(most)
        };
        Self {
            scope,
            interval: Some(interval),
            first,
            due,
            taken: 0,
        }
    }

    /// Takes the next turn, if one is due: its time (now, without a limit).
    fn take(&mut self, now: i64) -> Option<i64> {
        if self.taken >= self.due {
            return None;
        }
        let at = match self.interval {
            None => now,
            Some(interval) => self.first.saturating_add(
                interval.saturating_mul(i64::try_from(self.taken).unwrap_or(i64::MAX)),
            ),
        };
        self.taken += 1;
        Some(at)
    }

    /// How long until a claim may take this schedule's next turn (`None`:
    /// no limit).
    fn wait(&self, now: i64) -> Option<Duration> {
        self.interval?;
        Some(Duration::from_micros(
            u64::try_from(self.first - EARLY_US - now)
                .unwrap_or(0)
                .max(100),
        ))
    }

    /// The next turn once this claim's were taken.
    fn moved_on(&self) -> Option<i64> {
        let interval = self.interval?;
        let taken = i64::try_from(self.taken).unwrap_or(i64::MAX);
        Some(self.first.saturating_add(interval.saturating_mul(taken)))
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn claim_in(
    txn: &impl ConnectionTrait,
    db: &Db,
    limits: &Limits,
    most: usize,
    lease: Duration,
) -> Result<Claimed, DbErr> {
    let lock = match db.backend() {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    // The overall row is the instances' turn-taking: held to the end.
    let rows = txn
        .query_all_raw(db.statement(
            &format!(
                "SELECT scope, next_at_us FROM telegram_pacing \
                 WHERE scope IN ('overall', 'paid') ORDER BY scope{lock}"
            ),
            vec![],
        ))
        .await?;
    let next = |scope: &str| -> Result<i64, DbErr> {
        for row in &rows {
            if row.try_get::<String>("", "scope")? == scope {
                return row.try_get("", "next_at_us");
            }
        }
        Ok(0)
    };
    // Read once the turn is this claim's: another instance may have held it.
    let now_exact = now_us();
    let now = now_exact / 1000;
    let paid_interval = limits.overall.map(|_| Duration::from_secs(1) / PAID_RATE);
    let mut overall = Schedule::new("overall", limits.overall, next("overall")?, now_exact, most);
    let mut paid = Schedule::new("paid", paid_interval, next("paid")?, now_exact, most);
    if overall.due == 0 && paid.due == 0 {
        return Ok(Claimed {
            wait: [overall.wait(now_exact), paid.wait(now_exact)]
                .into_iter()
                .flatten()
                .min(),
            ..Claimed::default()
        });
    }
    let scope = match db.backend() {
        Backend::Postgres => "'chat:' || s.chat_id::text",
        Backend::Sqlite => "'chat:' || s.chat_id",
    };
    // A few more than are wanted: two may be for one chat.
    let candidates = txn
        .query_all_raw(db.statement(
            &format!(
                "SELECT {COLUMNS}, \
                 COALESCE((SELECT u.bot_blocked FROM users u WHERE u.telegram_chat_id = s.chat_id \
                           LIMIT 1), false) AS blocked, \
                 EXISTS (SELECT 1 FROM broadcasts b WHERE s.origin = 'broadcast' \
                         AND b.id = s.reference AND b.status = 'cancelled') AS cancelled \
                 FROM telegram_sends s \
                 WHERE s.status = 'queued' AND s.due_at_ms <= $1 \
                   AND ((s.paid AND $2) OR (NOT s.paid AND $3)) \
                   AND NOT EXISTS (SELECT 1 FROM telegram_pacing p \
                                   WHERE p.scope = {scope} AND p.next_at_ms > $1) \
                   AND NOT EXISTS (SELECT 1 FROM telegram_sends f \
                                   WHERE f.chat_id = s.chat_id AND f.status = 'sending') \
                 ORDER BY s.priority, s.due_at_ms, s.created_at_ms, s.id LIMIT $4"
            ),
            vec![
                now.into(),
                (paid.due > 0).into(),
                (overall.due > 0).into(),
                i64::try_from(most * 2).unwrap_or(i64::MAX).into(),
            ],
        ))
        .await?;
    // The sends to take: one a chat, as many as their schedule has turns.
    let mut chosen: Vec<(SendRow, Option<Skip>)> = Vec::new();
    let mut chats = std::collections::HashSet::new();
    for row in &candidates {
        if chosen.len() >= most {
            break;
        }
        let mut send = read_row(row)?;
        let schedule = if send.paid { &mut paid } else { &mut overall };
        if schedule.taken >= schedule.due || !chats.insert(send.chat_id) {
            continue;
        }
        let skip = if row.try_get("", "cancelled")? {
            Some(Skip::Cancelled)
        } else if row.try_get("", "blocked")? {
            Some(Skip::Blocked)
        } else {
            send.turn_at_us = schedule.take(now_exact).unwrap_or(now_exact);
            None
        };
        chosen.push((send, skip));
    }
    // Taken only while still queued (a cancelled broadcast's are gone): two
    // statements for the lot, whatever its size.
    let lease_until = now + millis(lease);
    let mut taken = std::collections::HashSet::new();
    for (made, counted) in [(true, "attempts + 1"), (false, "attempts")] {
        let ids: Vec<DbValue> = chosen
            .iter()
            .filter(|(_, skip)| skip.is_none() == made)
            .map(|(send, _)| send.id.clone().into())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let places: Vec<String> = (0..ids.len()).map(|n| format!("${}", n + 3)).collect();
        let mut values: Vec<DbValue> = vec![lease_until.into(), now.into()];
        values.extend(ids);
        let rows = txn
            .query_all_raw(db.statement(
                &format!(
                    "UPDATE telegram_sends SET status = 'sending', attempts = {counted}, \
                     lease_until_ms = $1, updated_at_ms = $2 \
                     WHERE status = 'queued' AND id IN ({}) RETURNING id",
                    places.join(", ")
                ),
                values,
            ))
            .await?;
        for row in rows {
            taken.insert(row.try_get::<String>("", "id")?);
        }
    }
    let mut claimed = Claimed::default();
    for (mut send, skip) in chosen {
        if !taken.contains(&send.id) {
            continue;
        }
        match skip {
            Some(skip) => claimed.skipped.push((send, skip)),
            None => {
                send.attempts += 1;
                claimed.sends.push(send);
            }
        }
    }
    // Each chat's next turn, one statement.
    if !claimed.sends.is_empty() {
        let mut rows = Vec::with_capacity(claimed.sends.len());
        let mut values: Vec<DbValue> = Vec::with_capacity(claimed.sends.len() * 2);
        for send in &claimed.sends {
            rows.push(format!("(${}, ${})", values.len() + 1, values.len() + 2));
            values.push(format!("chat:{}", send.chat_id).into());
            let call_at = (send.turn_at_us / 1000).max(now);
            values.push((call_at + limits.chat(send.chat_id)).into());
        }
        txn.execute_raw(db.statement(
            &format!(
                "INSERT INTO telegram_pacing (scope, next_at_ms) VALUES {} \
                 ON CONFLICT (scope) DO UPDATE SET next_at_ms = excluded.next_at_ms",
                rows.join(", ")
            ),
            values,
        ))
        .await?;
    }
    for schedule in [&overall, &paid] {
        if schedule.taken > 0
            && let Some(next) = schedule.moved_on()
        {
            txn.execute_raw(db.statement(
                "UPDATE telegram_pacing SET next_at_us = $2 WHERE scope = $1",
                vec![schedule.scope.into(), next.into()],
            ))
            .await?;
        }
    }
    if claimed.sends.is_empty() && claimed.skipped.is_empty() {
        let waiting = txn
            .query_one_raw(db.statement(
                "SELECT 1 AS one FROM telegram_sends WHERE status = 'queued' LIMIT 1",
                vec![],
            ))
            .await?;
        // Sends wait for their chat's turn (look again soon), or only for
        // the overall turn.
        let soon = Duration::from_millis(25);
        let overall_turn = if overall.taken >= overall.due {
            overall.wait(now_exact)
        } else {
            None
        };
        claimed.wait = waiting.map(|_| overall_turn.unwrap_or(soon).min(soon));
    }
    Ok(claimed)
}

async fn set_pace(
    conn: &impl ConnectionTrait,
    db: &Db,
    scope: &str,
    next_at_ms: i64,
) -> Result<(), DbErr> {
    conn.execute_raw(db.statement(
        "INSERT INTO telegram_pacing (scope, next_at_ms) VALUES ($1, $2) \
         ON CONFLICT (scope) DO UPDATE SET next_at_ms = excluded.next_at_ms",
        vec![scope.to_owned().into(), next_at_ms.into()],
    ))
    .await?;
    Ok(())
}

/// Telegram said 429 for `send`: it waits `retry_after`, and so does its
/// chat; when the chat before that one to be limited was another and
/// recent, the whole sender waits too (Telegram limits the bot, not one
/// chat): the overall schedule, or paid broadcast messages' for a paid
/// one. The attempt is not counted.
pub async fn retry_after(db: &Db, send: &SendRow, wait: Duration) -> Result<(), DbErr> {
    let now = now_ms();
    let until = now.saturating_add(millis(wait.min(Duration::from_secs(3600))));
    let txn = db.begin_write().await?;
    let done = async {
        // The schedules' rows in the order a claim takes them: never the
        // other way round.
        if db.backend() == Backend::Postgres {
            txn.execute_raw(db.statement(
                "SELECT next_at_ms FROM telegram_pacing WHERE scope IN ('overall', 'paid') \
                 ORDER BY scope FOR UPDATE",
                vec![],
            ))
            .await?;
        }
        let schedule = if send.paid { "paid" } else { "overall" };
        requeue_in(&*txn, db, &send.id, until, false).await?;
        set_pace(&*txn, db, &format!("chat:{}", send.chat_id), until).await?;
        let recent = now - 10_000;
        txn.execute_raw(db.statement(
            "UPDATE telegram_pacing SET \
             next_at_us = CASE WHEN limited_chat IS NOT NULL AND limited_chat <> $1 \
                               AND limited_at_ms > $2 AND next_at_us < $3 * 1000 \
                          THEN $3 * 1000 ELSE next_at_us END, \
             limited_chat = $1, limited_at_ms = $4 \
             WHERE scope = $5",
            vec![
                send.chat_id.into(),
                recent.into(),
                until.into(),
                now.into(),
                schedule.into(),
            ],
        ))
        .await?;
        Ok::<(), DbErr>(())
    }
    .await;
    match done {
        Ok(()) => txn.commit().await,
        Err(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
    }
}

/// `send` goes back in the queue, due at `due_at_ms`.
pub async fn requeue(db: &Db, id: &str, due_at_ms: i64) -> Result<(), DbErr> {
    db.write_once(async |conn| requeue_in(conn, db, id, due_at_ms, true).await)
        .await
}

async fn requeue_in(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: &str,
    due_at_ms: i64,
    counted: bool,
) -> Result<(), DbErr> {
    let attempts = if counted { "attempts" } else { "attempts - 1" };
    conn.execute_raw(db.statement(
        &format!(
            "UPDATE telegram_sends SET status = 'queued', due_at_ms = $2, lease_until_ms = NULL, \
             attempts = {attempts}, updated_at_ms = $3 WHERE id = $1 AND status = 'sending'"
        ),
        vec![id.to_owned().into(), due_at_ms.into(), now_ms().into()],
    ))
    .await?;
    Ok(())
}

/// How one send ended, for [`finish`].
pub struct Finished<'a> {
    pub send: &'a SendRow,
    pub status: Status,
    /// Telegram's answer.
    pub result: Option<&'a Value>,
    pub error: Option<&'a str>,
}

/// Ends sends that were `sending`, through `conn` (the transaction of
/// their outcomes' events): one statement for all their rows.
pub async fn finish(
    conn: &impl ConnectionTrait,
    db: &Db,
    finished: &[Finished<'_>],
) -> Result<(), DbErr> {
    if finished.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = finished
        .iter()
        .map(|f| {
            // A private send keeps its chat and its message's id, nothing
            // of what it said.
            let (params, result) = if f.send.private {
                let message_id = f.result.and_then(|r| r.get("message_id")).cloned();
                (
                    Some(serde_json::json!({"chat_id": f.send.chat_id})),
                    message_id.map(|id| serde_json::json!({"message_id": id})),
                )
            } else {
                (None, f.result.cloned())
            };
            serde_json::json!({
                "id": f.send.id,
                "status": f.status.as_str(),
                "result": result.map(|r| r.to_string()),
                "error": f.error,
                "params": params.map(|p| p.to_string()),
            })
        })
        .collect();
    let text = match db.backend() {
        Backend::Postgres => {
            "UPDATE telegram_sends s SET status = i.status, result = i.result, error = i.error, \
             lease_until_ms = NULL, updated_at_ms = $2, params = COALESCE(i.params, s.params) \
             FROM jsonb_to_recordset($1::jsonb) \
                 AS i(id text, status text, result text, error text, params text) \
             WHERE s.id = i.id AND s.status = 'sending'"
        }
        Backend::Sqlite => {
            "UPDATE telegram_sends SET status = i.value ->> 'status', \
             result = i.value ->> 'result', \
             error = i.value ->> 'error', lease_until_ms = NULL, updated_at_ms = $2, \
             params = COALESCE(i.value ->> 'params', telegram_sends.params) \
             FROM json_each($1) AS i \
             WHERE telegram_sends.id = i.value ->> 'id' \
               AND telegram_sends.status = 'sending'"
        }
    };
    conn.execute_raw(db.statement(
        text,
        vec![Value::Array(rows).to_string().into(), now_ms().into()],
    ))
    .await?;
    // An ended send's files are not kept.
    for f in finished {
        if !uploaded_fields(&f.send.params).is_empty() {
            conn.execute_raw(db.statement(
                "DELETE FROM telegram_uploads WHERE send_id = $1",
                vec![f.send.id.clone().into()],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Sends whose lease ran out while `sending` (their instance stopped
/// during the call): they may have reached Telegram.
pub async fn lost(db: &Db) -> Result<Vec<SendRow>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(db.statement(
            &format!(
                "SELECT {COLUMNS} FROM telegram_sends \
                 WHERE status = 'sending' AND lease_until_ms < $1 LIMIT 100"
            ),
            vec![now_ms().into()],
        ))
        .await?;
    rows.iter().map(read_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most turns any second holds when claims come every `every` µs,
    /// over a minute of them; and how many turns the minute had.
    fn busiest_second(rate: u32, every: i64) -> (usize, usize) {
        let interval = Some(Duration::from_secs(1) / rate);
        let mut next = 0;
        let mut turns = Vec::new();
        let mut now = 1_000_000;
        while now < 61_000_000 {
            let mut schedule = Schedule::new("overall", interval, next, now, 64);
            while let Some(at) = schedule.take(now) {
                // A call leaves at its turn, never before.
                assert!(at >= now - LATE_US && at <= now + EARLY_US);
                turns.push(at.max(now));
            }
            if schedule.taken > 0 {
                next = schedule.moved_on().unwrap();
            }
            now += every;
        }
        turns.sort_unstable();
        let mut most = 0;
        for (n, at) in turns.iter().enumerate() {
            let within = turns[n..]
                .iter()
                .take_while(|t| **t < at + 1_000_000)
                .count();
            most = most.max(within);
        }
        (most, turns.len())
    }

    #[test]
    fn no_second_holds_more_than_the_rate_however_the_claims_come() {
        for rate in [30, 25, 29, 200, 1000] {
            for every in [300, 1_000, 3_000, 7_000, 25_000, 40_000, 100_000] {
                let (most, total) = busiest_second(rate, every);
                assert!(
                    most <= rate as usize,
                    "{most} turns in a second at {rate}/s, claims every {every} ms"
                );
                // Claims at least as often as the turns: the rate is kept
                // up, 2 % under it, when claims come no later than a turn
                // may be taken.
                if every <= LATE_US {
                    let minute = 60 * rate as usize;
                    assert!(
                        total * 100 >= minute * 95,
                        "{total} turns in a minute at {rate}/s, claims every {every} ms"
                    );
                }
            }
        }
        // After an idle minute, the turns of 40 ms (20 late, 20 early), not
        // a minute's worth.
        let idle = Schedule::new(
            "overall",
            Some(Duration::from_secs(1) / 30),
            0,
            60_000_000,
            64,
        );
        assert_eq!(idle.due, 2);
        let open = Schedule::new("overall", None, 0, 60_000_000, 64);
        assert_eq!(open.due, 64);
    }
}
