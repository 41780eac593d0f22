//! Webhook tables: endpoints with their type filters, the delivery queue
//! (claim under a lease, record the outcome), attempts, and statistics.
//!
//! Backend-specific SQL for webhooks lives here. Statements are written
//! with `$1`-style parameters and numbered `?1` for SQLite. Times are
//! milliseconds since the Unix epoch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, LazyLock},
};

use sea_orm::{ConnectionTrait, DbErr, QueryResult, Statement, Value as DbValue};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    db::{Backend, Db},
    events::{Cursor, EventStore, RecordedEvent, TypePattern},
    ids::{EventId, WebhookEndpointId},
};

/// An endpoint as stored (secrets sealed).
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: WebhookEndpointId,
    pub name: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub headers: BTreeMap<String, String>,
    pub ordered: bool,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at_ms: Option<i64>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until_ms: Option<i64>,
    pub failing_since_ms: Option<i64>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// A secret the receiver chose (sealed), signing `X-Webhook-Signature`
    /// instead of `secret`: endpoints made through the older cabinet API.
    pub legacy_secret: Option<String>,
    /// What a request's body is.
    pub body: BodyShape,
}

/// The body of an endpoint's requests.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BodyShape {
    /// The event envelope (DESIGN.md).
    #[default]
    Envelope,
    /// The event's payload alone, as receivers written against the older
    /// cabinet API read it (the type is in `X-Webhook-Event`).
    Payload,
}

impl BodyShape {
    fn as_str(self) -> &'static str {
        match self {
            Self::Envelope => "envelope",
            Self::Payload => "payload",
        }
    }
}

/// A delivery claimed by a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub endpoint_id: WebhookEndpointId,
    pub event_id: EventId,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub lease_token: Uuid,
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub attempted_at_ms: i64,
    pub duration_ms: i64,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    Delivered,
    RetryAt(i64),
    Failed,
}

/// A delivery with its attempts, for the API.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub event_id: EventId,
    pub event_type: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub last_response_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub completed_at_ms: Option<i64>,
    pub attempt_log: Vec<AttemptRow>,
}

#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub attempt: u32,
    pub attempted_at_ms: i64,
    pub duration_ms: i64,
    pub response_status: Option<u16>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// Counts for one endpoint (or all).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
    pub attempts_24h: u64,
    pub successful_attempts_24h: u64,
    pub durations_24h: Vec<i64>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn statement(db: &Db, text: &str, values: Vec<DbValue>) -> Statement {
    db.statement(text, values)
}

fn uuid_value(backend: Backend, id: Uuid) -> DbValue {
    match backend {
        Backend::Postgres => id.into(),
        Backend::Sqlite => id.to_string().into(),
    }
}

fn json_value(backend: Backend, value: Value) -> DbValue {
    match backend {
        Backend::Postgres => DbValue::Json(Some(Box::new(value))),
        Backend::Sqlite => value.to_string().into(),
    }
}

fn get_uuid(backend: Backend, row: &QueryResult, column: &str) -> Result<Uuid, DbErr> {
    get_uuid_at(backend, row, "", column)
}

fn get_uuid_at(
    backend: Backend,
    row: &QueryResult,
    prefix: &str,
    column: &str,
) -> Result<Uuid, DbErr> {
    match backend {
        Backend::Postgres => row.try_get(prefix, column),
        Backend::Sqlite => {
            let raw: String = row.try_get(prefix, column)?;
            raw.parse()
                .map_err(|e| DbErr::Custom(format!("bad uuid in {column}: {e}")))
        }
    }
}

fn get_json_at(
    backend: Backend,
    row: &QueryResult,
    prefix: &str,
    column: &str,
) -> Result<Value, DbErr> {
    match backend {
        Backend::Postgres => row.try_get(prefix, column),
        Backend::Sqlite => {
            let raw: String = row.try_get(prefix, column)?;
            serde_json::from_str(&raw)
                .map_err(|e| DbErr::Custom(format!("bad JSON in {column}: {e}")))
        }
    }
}

fn get_u16(row: &QueryResult, column: &str) -> Result<Option<u16>, DbErr> {
    let value: Option<i32> = row.try_get("", column)?;
    Ok(value.and_then(|v| u16::try_from(v).ok()))
}

const ENDPOINT_COLUMNS: &str = "id, name, url, description, event_types, headers, ordered, enabled, \
     disabled_reason, disabled_at_ms, secret, previous_secret, previous_secret_until_ms, \
     failing_since_ms, created_by, created_at_ms, updated_at_ms, legacy_secret, body";

fn decode_endpoint(backend: Backend, row: &QueryResult) -> Result<EndpointRow, DbErr> {
    decode_endpoint_at(backend, row, "")
}

/// PostgreSQL: [`ENDPOINT_COLUMNS`] of the endpoints table as `alias`, each
/// named `prefix` and its name (for a query that joins them to others).
fn endpoint_columns_as(alias: &str, prefix: &str) -> String {
    ENDPOINT_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c} AS {prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An endpoint from a row whose endpoint columns are named `prefix` and
/// their names.
fn decode_endpoint_at(
    backend: Backend,
    row: &QueryResult,
    prefix: &str,
) -> Result<EndpointRow, DbErr> {
    let event_types = get_json_at(backend, row, prefix, "event_types")?;
    let headers = get_json_at(backend, row, prefix, "headers")?;
    Ok(EndpointRow {
        id: WebhookEndpointId::from_uuid(get_uuid_at(backend, row, prefix, "id")?),
        name: row.try_get(prefix, "name")?,
        url: row.try_get(prefix, "url")?,
        description: row.try_get(prefix, "description")?,
        event_types: serde_json::from_value(event_types).unwrap_or_default(),
        headers: serde_json::from_value(headers).unwrap_or_default(),
        ordered: row.try_get(prefix, "ordered")?,
        enabled: row.try_get(prefix, "enabled")?,
        disabled_reason: row.try_get(prefix, "disabled_reason")?,
        disabled_at_ms: row.try_get(prefix, "disabled_at_ms")?,
        secret: row.try_get(prefix, "secret")?,
        previous_secret: row.try_get(prefix, "previous_secret")?,
        previous_secret_until_ms: row.try_get(prefix, "previous_secret_until_ms")?,
        failing_since_ms: row.try_get(prefix, "failing_since_ms")?,
        created_by: row.try_get(prefix, "created_by")?,
        created_at_ms: row.try_get(prefix, "created_at_ms")?,
        updated_at_ms: row.try_get(prefix, "updated_at_ms")?,
        legacy_secret: row.try_get(prefix, "legacy_secret")?,
        body: match row.try_get::<String>(prefix, "body")?.as_str() {
            "payload" => BodyShape::Payload,
            _ => BodyShape::Envelope,
        },
    })
}

/// An endpoint's columns, in [`ENDPOINT_COLUMNS`] order.
fn endpoint_values(backend: Backend, row: &EndpointRow) -> Vec<DbValue> {
    vec![
        uuid_value(backend, row.id.as_uuid()),
        row.name.clone().into(),
        row.url.clone().into(),
        row.description.clone().into(),
        json_value(backend, serde_json::json!(row.event_types)),
        json_value(backend, serde_json::json!(row.headers)),
        row.ordered.into(),
        row.enabled.into(),
        row.disabled_reason.clone().into(),
        row.disabled_at_ms.into(),
        row.secret.clone().into(),
        row.previous_secret.clone().into(),
        row.previous_secret_until_ms.into(),
        row.failing_since_ms.into(),
        row.created_by.clone().into(),
        row.created_at_ms.into(),
        row.updated_at_ms.into(),
        row.legacy_secret.clone().into(),
        row.body.as_str().into(),
    ]
}

/// Writes the endpoint's type filters as the enqueue trigger reads them.
async fn write_filters(
    conn: &impl ConnectionTrait,
    db: &Db,
    id: WebhookEndpointId,
    patterns: &[TypePattern],
) -> Result<(), DbErr> {
    let backend = db.backend();
    conn.execute_raw(statement(
        db,
        "DELETE FROM webhook_endpoint_filters WHERE endpoint_id = $1",
        vec![uuid_value(backend, id.as_uuid())],
    ))
    .await?;
    let any = [TypePattern::Any];
    let patterns = if patterns.is_empty() {
        &any[..]
    } else {
        patterns
    };
    for pattern in patterns {
        let (kind, value) = match pattern {
            TypePattern::Any => ("any", String::new()),
            TypePattern::Prefix(prefix) => ("prefix", prefix.clone()),
            TypePattern::Exact(name) => ("exact", name.clone()),
        };
        conn.execute_raw(statement(
            db,
            "INSERT INTO webhook_endpoint_filters (endpoint_id, kind, value) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
            vec![uuid_value(backend, id.as_uuid()), kind.into(), value.into()],
        ))
        .await?;
    }
    Ok(())
}

pub async fn insert_endpoint(
    db: &Db,
    row: &EndpointRow,
    patterns: &[TypePattern],
) -> Result<(), DbErr> {
    let backend = db.backend();
    let txn = db.begin_write().await?;
    txn.execute_raw(statement(
        db,
        &format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ),
        endpoint_values(backend, row),
    ))
    .await?;
    write_filters(&*txn, db, row.id, patterns).await?;
    txn.commit().await
}

/// Saves every field but the id and creation (filters when given).
pub async fn update_endpoint(
    db: &Db,
    row: &EndpointRow,
    patterns: Option<&[TypePattern]>,
) -> Result<bool, DbErr> {
    let backend = db.backend();
    let txn = db.begin_write().await?;
    let result = txn
        .execute_raw(statement(
            db,
            // Every column in ENDPOINT_COLUMNS order; creation stays as it was.
            "UPDATE webhook_endpoints SET name = $2, url = $3, description = $4, event_types = $5, \
             headers = $6, ordered = $7, enabled = $8, disabled_reason = $9, disabled_at_ms = $10, \
             secret = $11, previous_secret = $12, previous_secret_until_ms = $13, \
             failing_since_ms = $14, created_by = $15, created_at_ms = $16, updated_at_ms = $17, \
             legacy_secret = $18, body = $19 WHERE id = $1",
            endpoint_values(backend, row),
        ))
        .await?;
    if result.rows_affected() == 0 {
        txn.rollback().await?;
        return Ok(false);
    }
    if let Some(patterns) = patterns {
        write_filters(&*txn, db, row.id, patterns).await?;
    }
    txn.commit().await?;
    Ok(true)
}

pub async fn get_endpoint(db: &Db, id: WebhookEndpointId) -> Result<Option<EndpointRow>, DbErr> {
    let backend = db.backend();
    let row = db
        .conn()
        .query_one_raw(statement(
            db,
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"),
            vec![uuid_value(backend, id.as_uuid())],
        ))
        .await?;
    row.map(|row| decode_endpoint(backend, &row)).transpose()
}

pub async fn get_endpoints(db: &Db, ids: &[WebhookEndpointId]) -> Result<Vec<EndpointRow>, DbErr> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.backend();
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id IN ({})",
                placeholders.join(", ")
            ),
            ids.iter()
                .map(|id| uuid_value(backend, id.as_uuid()))
                .collect(),
        ))
        .await?;
    rows.iter()
        .map(|row| decode_endpoint(backend, row))
        .collect()
}

/// A page of endpoints (newest first) and the total.
pub async fn list_endpoints(
    db: &Db,
    enabled: Option<bool>,
    limit: u32,
    offset: u64,
) -> Result<(Vec<EndpointRow>, u64), DbErr> {
    let backend = db.backend();
    let (condition, mut values): (&str, Vec<DbValue>) = match enabled {
        Some(enabled) => ("WHERE enabled = $1", vec![enabled.into()]),
        None => ("", vec![]),
    };
    let total = db
        .conn()
        .query_one_raw(statement(
            db,
            &format!("SELECT COUNT(*) AS n FROM webhook_endpoints {condition}"),
            values.clone(),
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    let n = values.len();
    values.push(i64::from(limit).into());
    values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            &format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints {condition} \
                 ORDER BY created_at_ms DESC, id LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
            values,
        ))
        .await?;
    let endpoints = rows
        .iter()
        .map(|row| decode_endpoint(backend, row))
        .collect::<Result<_, _>>()?;
    Ok((endpoints, u64::try_from(total).unwrap_or(0)))
}

pub async fn delete_endpoint(db: &Db, id: WebhookEndpointId) -> Result<bool, DbErr> {
    let backend = db.backend();
    let txn = db.begin_write().await?;
    // No foreign keys on these (see the migration): delete them here.
    for table in ["webhook_attempts", "webhook_deliveries"] {
        txn.execute_raw(statement(
            db,
            &format!("DELETE FROM {table} WHERE endpoint_id = $1"),
            vec![uuid_value(backend, id.as_uuid())],
        ))
        .await?;
    }
    let result = txn
        .execute_raw(statement(
            db,
            "DELETE FROM webhook_endpoints WHERE id = $1",
            vec![uuid_value(backend, id.as_uuid())],
        ))
        .await?;
    txn.commit().await?;
    Ok(result.rows_affected() > 0)
}

/// A claimed delivery with what sending it takes.
#[derive(Debug, Clone)]
pub struct Claim {
    pub delivery: Claimed,
    pub endpoint: Arc<EndpointRow>,
    pub event: Arc<RecordedEvent>,
}

/// PostgreSQL's claim: one round trip, the deliveries with their endpoints
/// and events.
///
/// Ordered heads and any due unordered deliveries, read from the due index
/// in order up to the limit and no further than the due time: retries
/// waiting for later are never walked. Planned once per session (see
/// [`Db::queue`]); statistics that went stale as the queue grew from
/// nothing could plan it as a sort of every due row, which is why the
/// worker refreshes them after a full claim that was slow. Each ordered
/// endpoint's first pending delivery is found through the index and computed once (MATERIALIZED), and taken only if it
/// is below the log's horizon: an event that commits later has a larger
/// transaction id, so it can never turn out to come before one already
/// delivered.
static PG_CLAIM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH h AS MATERIALIZED ( \
             SELECT e.id AS endpoint_id, head.event_id FROM webhook_endpoints e \
             CROSS JOIN LATERAL ( \
                 SELECT d2.event_id, d2.event_tx FROM webhook_deliveries d2 \
                 WHERE d2.endpoint_id = e.id AND d2.status = 'pending' \
                 ORDER BY d2.event_tx, d2.event_position LIMIT 1) head \
             WHERE e.enabled AND e.ordered \
               AND head.event_tx < {horizon}::text::bigint), \
         ordered AS ( \
             UPDATE webhook_deliveries d \
             SET lease_token = $1, lease_until_ms = $2 + $3, lease_owner = $5, attempts = d.attempts + 1 \
             FROM h \
             WHERE d.endpoint_id = h.endpoint_id AND d.event_id = h.event_id \
               AND d.status = 'pending' AND d.next_attempt_at_ms <= $2 \
               AND (d.lease_until_ms IS NULL OR d.lease_until_ms < $2) \
             RETURNING d.endpoint_id, d.event_id, d.attempts), \
         unordered AS ( \
             UPDATE webhook_deliveries d \
             SET lease_token = $1, lease_until_ms = $2 + $3, lease_owner = $5, attempts = d.attempts + 1 \
             FROM (SELECT d2.endpoint_id, d2.event_id FROM webhook_deliveries d2 \
                   JOIN webhook_endpoints e ON e.id = d2.endpoint_id AND e.enabled AND NOT e.ordered \
                   WHERE d2.status = 'pending' AND d2.next_attempt_at_ms <= $2 \
                     AND (d2.lease_until_ms IS NULL OR d2.lease_until_ms < $2) \
                   ORDER BY d2.next_attempt_at_ms LIMIT $4 \
                   FOR UPDATE OF d2 SKIP LOCKED) c \
             WHERE d.endpoint_id = c.endpoint_id AND d.event_id = c.event_id \
             RETURNING d.endpoint_id, d.event_id, d.attempts) \
         SELECT c.endpoint_id, c.event_id, c.attempts, {endpoint}, {event} \
         FROM (SELECT * FROM ordered UNION ALL SELECT * FROM unordered) c \
         JOIN webhook_endpoints ep ON ep.id = c.endpoint_id \
         JOIN events ev ON ev.id = c.event_id",
        horizon = crate::events::store::pg_horizon!(),
        endpoint = endpoint_columns_as("ep", "ep_"),
        event = crate::events::store::pg_columns_as("ev", "ev_"),
    )
});

/// SQLite's claim: ordered heads, then due unordered deliveries.
const SQLITE_CLAIM: [&str; 2] = [
    "UPDATE webhook_deliveries \
     SET lease_token = $1, lease_until_ms = $2 + $3, lease_owner = $5, attempts = attempts + 1 \
     WHERE (endpoint_id, event_id) IN ( \
         SELECT e.id, (SELECT d2.event_id FROM webhook_deliveries d2 \
                       WHERE d2.endpoint_id = e.id AND d2.status = 'pending' \
                       ORDER BY d2.event_tx, d2.event_position LIMIT 1) \
         FROM webhook_endpoints e WHERE e.enabled = 1 AND e.ordered = 1) \
       AND next_attempt_at_ms <= $2 AND (lease_until_ms IS NULL OR lease_until_ms < $2) \
       AND $4 > 0 \
     RETURNING endpoint_id, event_id, attempts",
    "UPDATE webhook_deliveries \
     SET lease_token = $1, lease_until_ms = $2 + $3, lease_owner = $5, attempts = attempts + 1 \
     WHERE (endpoint_id, event_id) IN ( \
         SELECT d2.endpoint_id, d2.event_id FROM webhook_deliveries d2 \
         JOIN webhook_endpoints e ON e.id = d2.endpoint_id AND e.enabled = 1 AND e.ordered = 0 \
         WHERE d2.status = 'pending' AND d2.next_attempt_at_ms <= $2 \
           AND (d2.lease_until_ms IS NULL OR d2.lease_until_ms < $2) \
         ORDER BY d2.next_attempt_at_ms LIMIT $4) \
     RETURNING endpoint_id, event_id, attempts",
];

/// Claims due deliveries for `lease_token` until `now + lease`: up to
/// `limit` of unordered endpoints, and for each ordered endpoint its first
/// undelivered event in log order (if due and not leased), with their
/// endpoints and events. The leases name `owner`, the instance taking
/// them, when it has one. A delivery whose endpoint or event is gone is
/// left out (its lease runs out; there is nothing to send).
pub async fn claim(
    store: &EventStore,
    lease_token: Uuid,
    owner: Option<i64>,
    now: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<Claim>, DbErr> {
    let db = store.db();
    let backend = db.backend();
    let values = vec![
        uuid_value(backend, lease_token),
        now.into(),
        lease_ms.into(),
        i64::from(limit).into(),
        owner.into(),
    ];
    let claimed_of = |row: &QueryResult| -> Result<Claimed, DbErr> {
        let attempt: i32 = row.try_get("", "attempts")?;
        Ok(Claimed {
            endpoint_id: WebhookEndpointId::from_uuid(get_uuid(backend, row, "endpoint_id")?),
            event_id: EventId::from_uuid(get_uuid(backend, row, "event_id")?),
            attempt: u32::try_from(attempt).unwrap_or(1),
            lease_token,
        })
    };
    if backend == Backend::Postgres {
        let rows = db
            .queue()
            .query_all_raw(statement(db, &PG_CLAIM, values))
            .await?;
        // Deliveries of one endpoint or one event share its copy.
        let mut endpoints: HashMap<WebhookEndpointId, Arc<EndpointRow>> = HashMap::new();
        let mut events: HashMap<EventId, Arc<RecordedEvent>> = HashMap::new();
        return rows
            .iter()
            .map(|row| {
                let delivery = claimed_of(row)?;
                let endpoint = match endpoints.get(&delivery.endpoint_id) {
                    Some(endpoint) => endpoint.clone(),
                    None => {
                        let endpoint = Arc::new(decode_endpoint_at(backend, row, "ep_")?);
                        endpoints.insert(delivery.endpoint_id, endpoint.clone());
                        endpoint
                    }
                };
                let event = match events.get(&delivery.event_id) {
                    Some(event) => event.clone(),
                    None => {
                        let event = Arc::new(crate::events::store::decode_at(
                            backend,
                            store.log_id(),
                            row,
                            "ev_",
                        )?);
                        events.insert(delivery.event_id, event.clone());
                        event
                    }
                };
                Ok(Claim {
                    delivery,
                    endpoint,
                    event,
                })
            })
            .collect();
    }
    let mut claimed = Vec::new();
    for text in SQLITE_CLAIM {
        let stmt = statement(db, text, values.clone());
        let rows = db
            .write_once(async |conn| conn.query_all_raw(stmt).await)
            .await?;
        for row in &rows {
            claimed.push(claimed_of(row)?);
        }
    }
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let mut endpoint_ids: Vec<WebhookEndpointId> = claimed.iter().map(|c| c.endpoint_id).collect();
    endpoint_ids.sort();
    endpoint_ids.dedup();
    let event_ids: Vec<EventId> = claimed.iter().map(|c| c.event_id).collect();
    let endpoints: HashMap<WebhookEndpointId, Arc<EndpointRow>> = get_endpoints(db, &endpoint_ids)
        .await?
        .into_iter()
        .map(|e| (e.id, Arc::new(e)))
        .collect();
    let events: HashMap<EventId, Arc<RecordedEvent>> = store
        .read_by_ids(&event_ids)
        .await?
        .into_iter()
        .map(|e| (e.id, Arc::new(e)))
        .collect();
    Ok(claimed
        .into_iter()
        .filter_map(|delivery| {
            Some(Claim {
                endpoint: endpoints.get(&delivery.endpoint_id)?.clone(),
                event: events.get(&delivery.event_id)?.clone(),
                delivery,
            })
        })
        .collect())
}

/// One attempt to record, and what comes after it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub claimed: Claimed,
    pub attempt: AttemptRecord,
    pub next: NextStep,
}

/// Records attempts and what comes next, all in one transaction (one
/// statement on PostgreSQL). For each outcome: false if its lease was lost
/// (another worker owns the delivery now; the attempt is recorded anyway).
pub async fn record(db: &Db, outcomes: &[Outcome]) -> Result<Vec<bool>, DbErr> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let backend = db.backend();
    let finished = now_ms();
    let rows: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let (status, next_at, completed) = match o.next {
                NextStep::Delivered => ("delivered", o.attempt.attempted_at_ms, Some(finished)),
                NextStep::RetryAt(at) => ("pending", at, None),
                NextStep::Failed => ("failed", o.attempt.attempted_at_ms, Some(finished)),
            };
            serde_json::json!({
                "endpoint_id": o.claimed.endpoint_id,
                "event_id": o.claimed.event_id,
                "attempt": o.claimed.attempt,
                "attempted_at_ms": o.attempt.attempted_at_ms,
                "duration_ms": o.attempt.duration_ms,
                "response_status": o.attempt.response_status,
                "response_body": o.attempt.response_body,
                "error": o.attempt.error,
                "status": status,
                "next_at": next_at,
                "completed_at": completed,
                "lease_token": o.claimed.lease_token,
            })
        })
        .collect();
    let updated: Vec<(Uuid, Uuid)> = match backend {
        Backend::Postgres => {
            let text = "WITH input AS ( \
                    SELECT * FROM jsonb_to_recordset($1::jsonb) AS t( \
                        endpoint_id uuid, event_id uuid, attempt int, attempted_at_ms bigint, \
                        duration_ms bigint, response_status int, response_body text, error text, \
                        status text, next_at bigint, completed_at bigint, lease_token uuid)), \
                 attempts AS ( \
                    INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, attempted_at_ms, \
                        duration_ms, response_status, response_body, error) \
                    SELECT endpoint_id, event_id, attempt, attempted_at_ms, duration_ms, \
                        response_status, response_body, error FROM input) \
                 UPDATE webhook_deliveries d SET status = i.status, next_attempt_at_ms = i.next_at, \
                    lease_token = NULL, lease_until_ms = NULL, \
                    last_attempt_at_ms = i.attempted_at_ms, last_response_status = i.response_status, \
                    last_error = i.error, completed_at_ms = i.completed_at \
                 FROM input i \
                 WHERE d.endpoint_id = i.endpoint_id AND d.event_id = i.event_id \
                   AND d.lease_token = i.lease_token \
                 RETURNING d.endpoint_id, d.event_id";
            let returned = db
                .queue()
                .query_all_raw(statement(
                    db,
                    text,
                    vec![DbValue::Json(Some(Box::new(Value::Array(rows))))],
                ))
                .await?;
            returned
                .iter()
                .map(|row| {
                    Ok((
                        get_uuid(backend, row, "endpoint_id")?,
                        get_uuid(backend, row, "event_id")?,
                    ))
                })
                .collect::<Result<_, DbErr>>()?
        }
        Backend::Sqlite => {
            let txn = db.begin_write().await?;
            let mut updated = Vec::new();
            for (o, row) in outcomes.iter().zip(&rows) {
                let values = vec![
                    uuid_value(backend, o.claimed.endpoint_id.as_uuid()),
                    uuid_value(backend, o.claimed.event_id.as_uuid()),
                    i64::from(o.claimed.attempt).into(),
                    o.attempt.attempted_at_ms.into(),
                    o.attempt.duration_ms.into(),
                    o.attempt.response_status.map(i32::from).into(),
                    o.attempt.response_body.clone().into(),
                    o.attempt.error.clone().into(),
                    row["status"].as_str().unwrap_or("pending").into(),
                    row["next_at"].as_i64().into(),
                    row["completed_at"].as_i64().into(),
                    uuid_value(backend, o.claimed.lease_token),
                ];
                txn.execute_raw(statement(
                    db,
                    "INSERT INTO webhook_attempts (endpoint_id, event_id, attempt, attempted_at_ms, \
                     duration_ms, response_status, response_body, error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    values[..8].to_vec(),
                ))
                .await?;
                let result = txn
                    .execute_raw(statement(
                        db,
                        "UPDATE webhook_deliveries SET status = $9, next_attempt_at_ms = $10, \
                         lease_token = NULL, lease_until_ms = NULL, last_attempt_at_ms = $4, \
                         last_response_status = $6, last_error = $8, completed_at_ms = $11 \
                         WHERE endpoint_id = $1 AND event_id = $2 AND lease_token = $12",
                        values,
                    ))
                    .await?;
                if result.rows_affected() > 0 {
                    updated.push((
                        o.claimed.endpoint_id.as_uuid(),
                        o.claimed.event_id.as_uuid(),
                    ));
                }
            }
            txn.commit().await?;
            updated
        }
    };
    Ok(outcomes
        .iter()
        .map(|o| {
            updated.contains(&(
                o.claimed.endpoint_id.as_uuid(),
                o.claimed.event_id.as_uuid(),
            ))
        })
        .collect())
}

/// Marks the endpoint failing since `at` (if not already); returns since when.
pub async fn mark_failing(db: &Db, id: WebhookEndpointId, at: i64) -> Result<i64, DbErr> {
    let backend = db.backend();
    let stmt = statement(
        db,
        "UPDATE webhook_endpoints SET failing_since_ms = COALESCE(failing_since_ms, $2) \
         WHERE id = $1 RETURNING failing_since_ms",
        vec![uuid_value(backend, id.as_uuid()), at.into()],
    );
    let row = db
        .write_once(async |conn| conn.query_one_raw(stmt).await)
        .await?;
    Ok(row
        .map(|row| row.try_get::<Option<i64>>("", "failing_since_ms"))
        .transpose()?
        .flatten()
        .unwrap_or(at))
}

pub async fn clear_failing(db: &Db, id: WebhookEndpointId) -> Result<(), DbErr> {
    let backend = db.backend();
    let stmt = statement(
        db,
        "UPDATE webhook_endpoints SET failing_since_ms = NULL \
         WHERE id = $1 AND failing_since_ms IS NOT NULL",
        vec![uuid_value(backend, id.as_uuid())],
    );
    db.write_once(async |conn| conn.execute_raw(stmt).await)
        .await?;
    Ok(())
}

/// Disables an enabled endpoint, through `conn` (the transaction of its
/// `webhook.endpoint_disabled`); false if it was already disabled.
pub async fn disable(
    conn: &impl ConnectionTrait,
    id: WebhookEndpointId,
    reason: &str,
) -> Result<bool, DbErr> {
    let backend = match conn.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => Backend::Postgres,
        _ => Backend::Sqlite,
    };
    let now = now_ms();
    let stmt = Statement::from_sql_and_values(
        conn.get_database_backend(),
        crate::db::placeholders(
            backend,
            "UPDATE webhook_endpoints SET enabled = $2, disabled_reason = $3, disabled_at_ms = $4, \
             updated_at_ms = $4 WHERE id = $1 AND enabled = $5",
        ),
        vec![
            uuid_value(backend, id.as_uuid()),
            false.into(),
            reason.into(),
            now.into(),
            true.into(),
        ],
    );
    Ok(conn.execute_raw(stmt).await?.rows_affected() > 0)
}

/// Queues a delivery again from its first attempt; false if there is none.
pub async fn resend(db: &Db, endpoint: WebhookEndpointId, event: EventId) -> Result<bool, DbErr> {
    let backend = db.backend();
    let stmt = statement(
        db,
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $3, \
         lease_token = NULL, lease_until_ms = NULL, completed_at_ms = NULL \
         WHERE endpoint_id = $1 AND event_id = $2",
        vec![
            uuid_value(backend, endpoint.as_uuid()),
            uuid_value(backend, event.as_uuid()),
            now_ms().into(),
        ],
    );
    let result = db
        .write_once(async |conn| conn.execute_raw(stmt).await)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Queues again every failed delivery of an endpoint created in
/// `[since, until)`; returns how many.
pub async fn recover(
    db: &Db,
    endpoint: WebhookEndpointId,
    since: i64,
    until: i64,
) -> Result<u64, DbErr> {
    let backend = db.backend();
    let stmt = statement(
        db,
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at_ms = $4, \
         lease_token = NULL, lease_until_ms = NULL, completed_at_ms = NULL \
         WHERE endpoint_id = $1 AND status = 'failed' AND created_at_ms >= $2 AND created_at_ms < $3",
        vec![
            uuid_value(backend, endpoint.as_uuid()),
            since.into(),
            until.into(),
            now_ms().into(),
        ],
    );
    let result = db
        .write_once(async |conn| conn.execute_raw(stmt).await)
        .await?;
    Ok(result.rows_affected())
}

/// Deliveries of an endpoint, newest first, with their attempts.
pub async fn list_deliveries(
    db: &Db,
    endpoint: WebhookEndpointId,
    status: Option<&str>,
    limit: u32,
    offset: u64,
) -> Result<(Vec<DeliveryRow>, u64), DbErr> {
    let backend = db.backend();
    let mut values = vec![uuid_value(backend, endpoint.as_uuid())];
    let mut condition = String::new();
    if let Some(status) = status {
        values.push(status.into());
        condition = " AND status = $2".to_owned();
    }
    let total = db
        .conn()
        .query_one_raw(statement(
            db,
            &format!(
                "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1{condition}"
            ),
            values.clone(),
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .map_or(0, |n| u64::try_from(n).unwrap_or(0));
    let n = values.len();
    values.push(i64::from(limit).into());
    values.push(i64::try_from(offset).unwrap_or(i64::MAX).into());
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            &format!(
                "SELECT event_id, event_type, status, attempts, next_attempt_at_ms, \
                 last_response_status, last_error, created_at_ms, completed_at_ms \
                 FROM webhook_deliveries WHERE endpoint_id = $1{condition} \
                 ORDER BY event_id DESC LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
            values,
        ))
        .await?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        let status: String = row.try_get("", "status")?;
        let attempts: i32 = row.try_get("", "attempts")?;
        let next: i64 = row.try_get("", "next_attempt_at_ms")?;
        deliveries.push(DeliveryRow {
            event_id: EventId::from_uuid(get_uuid(backend, row, "event_id")?),
            event_type: row.try_get("", "event_type")?,
            next_attempt_at_ms: (status == "pending").then_some(next),
            status,
            attempts: u32::try_from(attempts).unwrap_or(0),
            last_response_status: get_u16(row, "last_response_status")?,
            last_error: row.try_get("", "last_error")?,
            created_at_ms: row.try_get("", "created_at_ms")?,
            completed_at_ms: row.try_get("", "completed_at_ms")?,
            attempt_log: Vec::new(),
        });
    }
    if deliveries.is_empty() {
        return Ok((deliveries, total));
    }
    let mut values = vec![uuid_value(backend, endpoint.as_uuid())];
    let placeholders: Vec<String> = deliveries
        .iter()
        .enumerate()
        .map(|(i, d)| {
            values.push(uuid_value(backend, d.event_id.as_uuid()));
            format!("${}", i + 2)
        })
        .collect();
    let attempt_rows = db
        .conn()
        .query_all_raw(statement(
            db,
            &format!(
                "SELECT event_id, attempt, attempted_at_ms, duration_ms, response_status, \
                 response_body, error FROM webhook_attempts \
                 WHERE endpoint_id = $1 AND event_id IN ({}) ORDER BY id",
                placeholders.join(", ")
            ),
            values,
        ))
        .await?;
    for row in &attempt_rows {
        let event_id = EventId::from_uuid(get_uuid(backend, row, "event_id")?);
        let attempt: i32 = row.try_get("", "attempt")?;
        if let Some(delivery) = deliveries.iter_mut().find(|d| d.event_id == event_id) {
            delivery.attempt_log.push(AttemptRow {
                attempt: u32::try_from(attempt).unwrap_or(0),
                attempted_at_ms: row.try_get("", "attempted_at_ms")?,
                duration_ms: row.try_get("", "duration_ms")?,
                response_status: get_u16(row, "response_status")?,
                response_body: row.try_get("", "response_body")?,
                error: row.try_get("", "error")?,
            });
        }
    }
    Ok((deliveries, total))
}

/// Counts per endpoint (and, under `None`, for all of them).
pub async fn counts(
    db: &Db,
    since_ms: i64,
) -> Result<BTreeMap<Option<WebhookEndpointId>, Counts>, DbErr> {
    let backend = db.backend();
    let mut out: BTreeMap<Option<WebhookEndpointId>, Counts> = BTreeMap::new();
    out.entry(None).or_default();
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            "SELECT endpoint_id, status, COUNT(*) AS n FROM webhook_deliveries \
             GROUP BY endpoint_id, status",
            vec![],
        ))
        .await?;
    for row in &rows {
        let id = WebhookEndpointId::from_uuid(get_uuid(backend, row, "endpoint_id")?);
        let status: String = row.try_get("", "status")?;
        let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0);
        for key in [Some(id), None] {
            let counts = out.entry(key).or_default();
            match status.as_str() {
                "delivered" => counts.delivered += n,
                "failed" => counts.failed += n,
                _ => counts.pending += n,
            }
        }
    }
    // Recent attempts, newest first, bounded: enough for percentiles.
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            "SELECT endpoint_id, duration_ms, response_status FROM webhook_attempts \
             WHERE attempted_at_ms >= $1 ORDER BY id DESC LIMIT 20000",
            vec![since_ms.into()],
        ))
        .await?;
    for row in &rows {
        let id = WebhookEndpointId::from_uuid(get_uuid(backend, row, "endpoint_id")?);
        let duration: i64 = row.try_get("", "duration_ms")?;
        let ok = get_u16(row, "response_status")?.is_some_and(|s| (200..300).contains(&s));
        for key in [Some(id), None] {
            let counts = out.entry(key).or_default();
            counts.attempts_24h += 1;
            if ok {
                counts.successful_attempts_24h += 1;
                counts.durations_24h.push(duration);
            }
        }
    }
    Ok(out)
}

/// Pending deliveries of enabled endpoints and the oldest one's creation.
pub async fn queue_depth(db: &Db) -> Result<(u64, Option<i64>), DbErr> {
    let row = db
        .conn()
        .query_one_raw(statement(
            db,
            "SELECT COUNT(*) AS n, MIN(d.created_at_ms) AS oldest FROM webhook_deliveries d \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled = $1 \
             WHERE d.status = 'pending'",
            vec![true.into()],
        ))
        .await?;
    let Some(row) = row else {
        return Ok((0, None));
    };
    let n: i64 = row.try_get("", "n")?;
    let oldest: Option<i64> = row.try_get("", "oldest")?;
    Ok((u64::try_from(n).unwrap_or(0), oldest))
}

/// When the next delivery a claim could take is due: the first unleased
/// one of an unordered endpoint, or an ordered endpoint's head. Leases that
/// run out (their worker died) are noticed by the worker's regular wake-up.
pub async fn next_due(db: &Db) -> Result<Option<i64>, DbErr> {
    let text = match db.backend() {
        Backend::Postgres => {
            "SELECT MIN(due) AS due FROM ( \
                (SELECT d.next_attempt_at_ms AS due FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled AND NOT e.ordered \
                 WHERE d.status = 'pending' AND d.lease_token IS NULL \
                 ORDER BY d.next_attempt_at_ms LIMIT 1) \
                UNION ALL \
                (SELECT head.next_attempt_at_ms FROM webhook_endpoints e \
                 CROSS JOIN LATERAL ( \
                     SELECT d2.next_attempt_at_ms, d2.lease_token FROM webhook_deliveries d2 \
                     WHERE d2.endpoint_id = e.id AND d2.status = 'pending' \
                     ORDER BY d2.event_tx, d2.event_position LIMIT 1) head \
                 WHERE e.enabled AND e.ordered AND head.lease_token IS NULL)) AS t"
        }
        Backend::Sqlite => {
            "SELECT MIN(due) AS due FROM ( \
                SELECT * FROM (SELECT d.next_attempt_at_ms AS due FROM webhook_deliveries d \
                 JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.enabled = 1 AND e.ordered = 0 \
                 WHERE d.status = 'pending' AND d.lease_token IS NULL \
                 ORDER BY d.next_attempt_at_ms LIMIT 1) \
                UNION ALL \
                SELECT (SELECT CASE WHEN d2.lease_token IS NULL THEN d2.next_attempt_at_ms END \
                        FROM webhook_deliveries d2 \
                        WHERE d2.endpoint_id = e.id AND d2.status = 'pending' \
                        ORDER BY d2.event_tx, d2.event_position LIMIT 1) \
                FROM webhook_endpoints e WHERE e.enabled = 1 AND e.ordered = 1)"
        }
    };
    let row = db
        .queue()
        .query_one_raw(statement(db, text, vec![]))
        .await?;
    Ok(row
        .map(|row| row.try_get::<Option<i64>>("", "due"))
        .transpose()?
        .flatten())
}

/// PostgreSQL: the advisory lock class that instances holding leases lock
/// their number in (`pg_advisory_lock(LEASE_LOCK_CLASS, owner)`).
pub const LEASE_LOCK_CLASS: i32 = 0x5742_4b31;

/// Lists `owner` among the instances that may hold leases (once it holds
/// its lock).
pub async fn register_owner(db: &Db, owner: i64) -> Result<(), DbErr> {
    db.write_once(async |conn| {
        conn.execute_raw(statement(
            db,
            "INSERT INTO webhook_workers (owner, started_at_ms) VALUES ($1, $2) \
             ON CONFLICT (owner) DO NOTHING",
            vec![owner.into(), now_ms().into()],
        ))
        .await
    })
    .await
    .map(|_| ())
}

/// Frees the leases of instances that are gone, before they run out: on
/// PostgreSQL those of every listed instance whose advisory lock is no
/// longer held (its session ended with its process), on SQLite (one
/// instance, called as it starts) every lease. The attempt they counted was
/// never recorded, so it is not counted. Returns how many were freed.
pub async fn reclaim_abandoned(db: &Db) -> Result<u64, DbErr> {
    let text = match db.backend() {
        Backend::Postgres => {
            "WITH gone AS ( \
                 DELETE FROM webhook_workers w \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_locks l \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                       AND l.classid::bigint = $1 AND l.objid::bigint = w.owner) \
                 RETURNING w.owner) \
             UPDATE webhook_deliveries d \
             SET lease_token = NULL, lease_until_ms = NULL, lease_owner = NULL, \
                 attempts = d.attempts - 1 \
             FROM gone \
             WHERE d.status = 'pending' AND d.lease_token IS NOT NULL AND d.lease_owner = gone.owner"
        }
        Backend::Sqlite => {
            "UPDATE webhook_deliveries \
             SET lease_token = NULL, lease_until_ms = NULL, lease_owner = NULL, \
                 attempts = attempts - 1 \
             WHERE status = 'pending' AND lease_token IS NOT NULL AND $1 IS NOT NULL"
        }
    };
    let values = vec![i64::from(LEASE_LOCK_CLASS).into()];
    let result = db
        .write_once(async |conn| conn.execute_raw(statement(db, text, values)).await)
        .await?;
    Ok(result.rows_affected())
}

/// Refreshes the planner's statistics of the delivery queue (PostgreSQL).
/// A queue that grew from nothing in seconds is planned as if it were still
/// empty (a bitmap scan and a sort of every due row per claim instead of
/// reading the first few in index order) until autovacuum gets to it, which
/// can take a minute.
pub async fn refresh_statistics(db: &Db) -> Result<(), DbErr> {
    if db.backend() == Backend::Postgres {
        db.conn()
            .execute_unprepared("ANALYZE webhook_deliveries")
            .await?;
    }
    Ok(())
}

/// Drops response bodies of attempts older than `before`.
pub async fn prune_bodies(db: &Db, before: i64) -> Result<u64, DbErr> {
    let stmt = statement(
        db,
        "UPDATE webhook_attempts SET response_body = NULL \
         WHERE attempted_at_ms < $1 AND response_body IS NOT NULL",
        vec![before.into()],
    );
    let result = db
        .write_once(async |conn| conn.execute_raw(stmt).await)
        .await?;
    Ok(result.rows_affected())
}

/// The latest backfill of an endpoint: events already in the log queued
/// for it, from `start` (and, with `since_ms`, only those that occurred
/// since) up to `target`, the head when it started.
#[derive(Debug, Clone)]
pub struct BackfillRow {
    pub endpoint_id: WebhookEndpointId,
    /// `running`, `completed` or `cancelled`.
    pub status: String,
    pub since_ms: Option<i64>,
    pub start: Cursor,
    /// How far it has read.
    pub cursor: Cursor,
    pub target: Cursor,
    /// Events read, and deliveries queued (and withdrawn by a cancel).
    pub scanned: i64,
    pub enqueued: i64,
    pub withdrawn: i64,
    /// Deliveries queued per second, at most.
    pub rate: i64,
    pub created_by: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

const BACKFILL_COLUMNS: &str = "endpoint_id, status, since_ms, start_cursor, cursor, target, \
     scanned, enqueued, withdrawn, rate, created_by, created_at_ms, updated_at_ms, finished_at_ms";

fn decode_backfill(backend: Backend, row: &QueryResult) -> Result<BackfillRow, DbErr> {
    let cursor = |column: &str| -> Result<Cursor, DbErr> {
        row.try_get::<String>("", column)?
            .parse()
            .map_err(|_| DbErr::Custom(format!("a backfill's {column} is not a cursor")))
    };
    Ok(BackfillRow {
        endpoint_id: WebhookEndpointId::from_uuid(get_uuid(backend, row, "endpoint_id")?),
        status: row.try_get("", "status")?,
        since_ms: row.try_get("", "since_ms")?,
        start: cursor("start_cursor")?,
        cursor: cursor("cursor")?,
        target: cursor("target")?,
        scanned: row.try_get("", "scanned")?,
        enqueued: row.try_get("", "enqueued")?,
        withdrawn: row.try_get("", "withdrawn")?,
        rate: row.try_get("", "rate")?,
        created_by: row.try_get("", "created_by")?,
        created_at_ms: row.try_get("", "created_at_ms")?,
        updated_at_ms: row.try_get("", "updated_at_ms")?,
        finished_at_ms: row.try_get("", "finished_at_ms")?,
    })
}

/// Starts `row` as the endpoint's backfill, unless one is running (false).
/// The deliveries an earlier backfill queued stop counting as backfilled.
pub async fn start_backfill(db: &Db, row: &BackfillRow) -> Result<bool, DbErr> {
    let backend = db.backend();
    let id = uuid_value(backend, row.endpoint_id.as_uuid());
    let txn = db.begin_write().await?;
    let started = txn
        .execute_raw(statement(
            db,
            &format!(
                "INSERT INTO webhook_backfills ({BACKFILL_COLUMNS}) \
                 VALUES ($1, 'running', $2, $3, $3, $4, 0, 0, 0, $5, $6, $7, $7, NULL) \
                 ON CONFLICT (endpoint_id) DO UPDATE SET status = 'running', since_ms = $2, \
                   start_cursor = $3, cursor = $3, target = $4, scanned = 0, enqueued = 0, \
                   withdrawn = 0, rate = $5, created_by = $6, created_at_ms = $7, \
                   updated_at_ms = $7, finished_at_ms = NULL \
                 WHERE webhook_backfills.status <> 'running'"
            ),
            vec![
                id.clone(),
                row.since_ms.into(),
                row.start.to_string().into(),
                row.target.to_string().into(),
                row.rate.into(),
                row.created_by.clone().into(),
                row.created_at_ms.into(),
            ],
        ))
        .await?
        .rows_affected()
        > 0;
    if !started {
        txn.rollback().await?;
        return Ok(false);
    }
    txn.execute_raw(statement(
        db,
        "UPDATE webhook_deliveries SET backfilled = false WHERE endpoint_id = $1 AND backfilled",
        vec![id],
    ))
    .await?;
    txn.commit().await?;
    Ok(true)
}

pub async fn get_backfill(
    db: &Db,
    endpoint: WebhookEndpointId,
) -> Result<Option<BackfillRow>, DbErr> {
    let backend = db.backend();
    let row = db
        .conn()
        .query_one_raw(statement(
            db,
            &format!("SELECT {BACKFILL_COLUMNS} FROM webhook_backfills WHERE endpoint_id = $1"),
            vec![uuid_value(backend, endpoint.as_uuid())],
        ))
        .await?;
    row.map(|row| decode_backfill(backend, &row)).transpose()
}

pub async fn running_backfills(db: &Db) -> Result<Vec<BackfillRow>, DbErr> {
    let backend = db.backend();
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            &format!("SELECT {BACKFILL_COLUMNS} FROM webhook_backfills WHERE status = 'running'"),
            vec![],
        ))
        .await?;
    rows.iter()
        .map(|row| decode_backfill(backend, row))
        .collect()
}

/// The endpoint's deliveries queued by its latest backfill, by status.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackfillCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

pub async fn backfill_counts(
    db: &Db,
    endpoint: WebhookEndpointId,
) -> Result<BackfillCounts, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            "SELECT status, COUNT(*) AS n FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND backfilled GROUP BY status",
            vec![uuid_value(db.backend(), endpoint.as_uuid())],
        ))
        .await?;
    let mut counts = BackfillCounts::default();
    for row in &rows {
        let n = u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0);
        match row.try_get::<String>("", "status")?.as_str() {
            "pending" => counts.pending = n,
            "delivered" => counts.delivered = n,
            _ => counts.failed = n,
        }
    }
    Ok(counts)
}

/// One event a backfill queues.
#[derive(Debug, Clone)]
pub struct Backfilled {
    pub event_id: EventId,
    pub event_type: String,
    pub cursor: Cursor,
}

/// Moves a running backfill on from `from` (as it was read) to `to`,
/// queueing `events` (those the endpoint already has are left as they
/// are), and ends it when `done`. False, with nothing written, when it was
/// moved on or cancelled meanwhile (by another instance).
pub async fn advance_backfill(
    db: &Db,
    from: &BackfillRow,
    to: Cursor,
    scanned: i64,
    events: &[Backfilled],
    done: bool,
) -> Result<bool, DbErr> {
    let backend = db.backend();
    let id = uuid_value(backend, from.endpoint_id.as_uuid());
    let now = now_ms();
    let txn = db.begin_write().await?;
    let mut enqueued = 0u64;
    for chunk in events.chunks(100) {
        let mut values = vec![id.clone(), now.into()];
        let rows: Vec<String> = chunk
            .iter()
            .map(|event| {
                let tx = match backend {
                    Backend::Postgres => i64::try_from(event.cursor.tx).unwrap_or(i64::MAX),
                    Backend::Sqlite => 0,
                };
                values.push(uuid_value(backend, event.event_id.as_uuid()));
                values.push(event.event_type.clone().into());
                values.push(tx.into());
                values.push(event.cursor.position.into());
                let n = values.len();
                format!(
                    "($1, ${}, ${}, ${}, ${}, 'pending', $2, $2, true)",
                    n - 3,
                    n - 2,
                    n - 1,
                    n
                )
            })
            .collect();
        enqueued += txn
            .execute_raw(statement(
                db,
                &format!(
                    "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, event_tx, \
                     event_position, status, next_attempt_at_ms, created_at_ms, backfilled) \
                     VALUES {} ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                    rows.join(", ")
                ),
                values,
            ))
            .await?
            .rows_affected();
    }
    let moved = txn
        .execute_raw(statement(
            db,
            "UPDATE webhook_backfills SET cursor = $2, scanned = scanned + $3, \
               enqueued = enqueued + $4, updated_at_ms = $5, \
               status = CASE WHEN $6 THEN 'completed' ELSE status END, \
               finished_at_ms = CASE WHEN $6 THEN $5 ELSE NULL END \
             WHERE endpoint_id = $1 AND status = 'running' AND cursor = $7 \
               AND updated_at_ms = $8",
            vec![
                id,
                to.to_string().into(),
                scanned.into(),
                i64::try_from(enqueued).unwrap_or(i64::MAX).into(),
                now.into(),
                done.into(),
                from.cursor.to_string().into(),
                from.updated_at_ms.into(),
            ],
        ))
        .await?
        .rows_affected()
        > 0;
    if moved {
        txn.commit().await?;
    } else {
        txn.rollback().await?;
    }
    Ok(moved)
}

/// Cancels the endpoint's running backfill, withdrawing what it queued that
/// is not being sent yet; false if none was running.
pub async fn cancel_backfill(db: &Db, endpoint: WebhookEndpointId) -> Result<bool, DbErr> {
    let id = uuid_value(db.backend(), endpoint.as_uuid());
    let now = now_ms();
    let txn = db.begin_write().await?;
    let cancelled = txn
        .execute_raw(statement(
            db,
            "UPDATE webhook_backfills SET status = 'cancelled', updated_at_ms = $2, \
               finished_at_ms = $2 WHERE endpoint_id = $1 AND status = 'running'",
            vec![id.clone(), now.into()],
        ))
        .await?
        .rows_affected()
        > 0;
    if !cancelled {
        txn.rollback().await?;
        return Ok(false);
    }
    let withdrawn = txn
        .execute_raw(statement(
            db,
            "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 AND backfilled \
               AND status = 'pending' AND attempts = 0 AND lease_token IS NULL",
            vec![id.clone()],
        ))
        .await?
        .rows_affected();
    txn.execute_raw(statement(
        db,
        "UPDATE webhook_backfills SET withdrawn = $2 WHERE endpoint_id = $1",
        vec![id, i64::try_from(withdrawn).unwrap_or(i64::MAX).into()],
    ))
    .await?;
    txn.commit().await?;
    Ok(true)
}
