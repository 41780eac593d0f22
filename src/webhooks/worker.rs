//! The delivery worker: claims due deliveries under a lease, sends them
//! (never holding a database transaction during the HTTP call), records each
//! attempt, and schedules the next one.
//!
//! Woken at once by appends in this process and, through the log tailer, in
//! others; otherwise it sleeps until the next delivery is due.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rand::Rng;
use secrecy::ExposeSecret;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::domain::{Endpoint, EndpointCommand, EndpointError};
use super::{
    signing::{SecretBox, legacy_signature, signature_header},
    ssrf::{AddressPolicy, GuardedResolver},
    store::{
        self, AttemptRecord, BodyShape, Claim, Claimed, EndpointRow, NextStep, Outcome, now_ms,
    },
};
use crate::{
    batch::{Batch, Gather},
    config::WebhookConfig,
    db::{Db, WriteTxn},
    domain::{Command, CommandError, Commands, Target, Work},
    events::{Actor, Cursor, RecordedEvent},
    ids::WebhookEndpointId,
};

/// Response bodies are kept up to this many bytes.
pub const BODY_EXCERPT: usize = 4096;
/// And read up to this many, at most, before the connection is dropped.
const BODY_READ_CAP: usize = 64 * 1024;

/// What one HTTP attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub record: AttemptRecord,
    /// `Retry-After`, in milliseconds, when the receiver sent one.
    pub retry_after_ms: Option<i64>,
}

impl AttemptOutcome {
    pub fn succeeded(&self) -> bool {
        self.record
            .response_status
            .is_some_and(|s| (200..300).contains(&s))
    }
}

/// Sends signed requests (shared by the worker and "send test event").
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: AddressPolicy,
    secrets: SecretBox,
}

impl Sender {
    pub fn new(config: &WebhookConfig, secrets: SecretBox) -> anyhow::Result<Self> {
        let policy = AddressPolicy::new(config.allow_networks.clone());
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Switchboard-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            // As many kept open as may be in flight: a busy receiver's
            // requests reuse connections rather than open new ones.
            .pool_max_idle_per_host(config.concurrency)
            .build()?;
        Ok(Self {
            client,
            policy,
            secrets,
        })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Signs and sends `event` to `endpoint` once.
    pub async fn send(&self, endpoint: &EndpointRow, event: &RecordedEvent) -> AttemptOutcome {
        let started = Instant::now();
        let attempted_at_ms = now_ms();
        let result = self.try_send(endpoint, event).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (response_status, response_body, error, retry_after_ms) = match result {
            Ok((status, body, retry_after)) => (Some(status), Some(body), None, retry_after),
            Err(error) => (None, None, Some(error), None),
        };
        AttemptOutcome {
            record: AttemptRecord {
                attempted_at_ms,
                duration_ms,
                response_status,
                response_body,
                error,
            },
            retry_after_ms,
        }
    }

    async fn try_send(
        &self,
        endpoint: &EndpointRow,
        event: &RecordedEvent,
    ) -> Result<(u16, String, Option<i64>), String> {
        let url = url::Url::parse(&endpoint.url).map_err(|e| format!("bad URL: {e}"))?;
        if let Some(refused) = self.policy.refuses_literal(&url) {
            return Err(format!("refused: {refused}"));
        }
        let current = self
            .secrets
            .open(&endpoint.secret)
            .map_err(|e| e.to_string())?;
        let previous = match (&endpoint.previous_secret, endpoint.previous_secret_until_ms) {
            (Some(sealed), Some(until)) if until > now_ms() => self.secrets.open(sealed).ok(),
            _ => None,
        };
        let legacy = match &endpoint.legacy_secret {
            Some(sealed) => Some(self.secrets.open(sealed).map_err(|e| e.to_string())?),
            None => None,
        };
        let body = match endpoint.body {
            BodyShape::Envelope => event.to_envelope_json().into_bytes(),
            BodyShape::Payload => event.payload.to_string().into_bytes(),
        };
        let id = event.id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let mut secrets = vec![current.expose_secret()];
        if let Some(previous) = &previous {
            secrets.push(previous.expose_secret());
        }
        let mut request = self.client.post(url);
        // Custom headers first: the signature headers always win.
        for (name, value) in &endpoint.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = request
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header(&secrets, &id, timestamp, &body),
            )
            .header("x-webhook-event", event.event_type.as_str())
            .header("x-webhook-id", &id)
            .header(
                "x-webhook-signature",
                legacy_signature(legacy.as_ref().unwrap_or(&current).expose_secret(), &body),
            );
        let mut response = request.body(body).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut excerpt = Vec::new();
        let mut read = 0usize;
        while read < BODY_READ_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = BODY_EXCERPT.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok((
            status,
            String::from_utf8_lossy(&excerpt).into_owned(),
            retry_after,
        ))
    }
}

/// A short, secret-free description of a transport error.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    // The source chain says why (refused address, DNS, TLS…); the URL is
    // left out (it may carry a token in its query).
    let mut cause = String::new();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    }
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(raw: &str) -> Option<i64> {
    if let Ok(seconds) = raw.trim().parse::<i64>() {
        return Some(seconds.max(0).saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc2822(raw.trim())
        .ok()
        .map(|at| (at.timestamp_millis() - now_ms()).max(0))
}

/// Writes attempt outcomes in batches: deliveries finishing together share
/// one transaction (one commit) instead of one each.
#[derive(Clone)]
pub struct Recorder {
    db: Db,
    gather: Arc<Gather<Recorder>>,
}

/// Outcomes written together, at most.
const RECORD_BATCH: usize = 500;

impl Batch for Recorder {
    type Item = Outcome;
    /// Whether the lease still held (the outcome was kept).
    type Answer = Result<bool, String>;
    type Key = ();

    async fn run(&self, outcomes: Vec<Outcome>) -> Vec<Result<bool, String>> {
        match store::record(&self.db, &outcomes).await {
            Ok(kept) => kept.into_iter().map(Ok).collect(),
            Err(e) => {
                let message = e.to_string();
                outcomes.iter().map(|_| Err(message.clone())).collect()
            }
        }
    }
}

impl Recorder {
    /// One writer: what arrives while a batch is being written makes the
    /// next batch, so a busy queue is written in fewer, larger transactions.
    pub fn new(db: Db) -> Self {
        Self {
            db,
            gather: Arc::new(Gather::new(RECORD_BATCH, 1)),
        }
    }

    /// Records one outcome (with whatever else is being recorded now).
    async fn record(&self, outcome: Outcome) -> Result<bool, String> {
        self.gather
            .submit(self, outcome)
            .await
            .map_err(|e| format!("recording the outcome was {e}"))?
    }
}

pub struct WebhookWorker {
    pub db: Db,
    pub commands: Commands,
    pub config: WebhookConfig,
    pub sender: Sender,
    /// The log tailer's position: changes when events have been read from
    /// the log, which is how another instance's commits wake this worker.
    /// This instance's own wake it at their commit (the deliveries their
    /// trigger wrote can be claimed then; an ordered endpoint's next one
    /// waits in the claim itself until it is below the log's horizon),
    /// without waiting for the tailer's read.
    pub published: watch::Receiver<Cursor>,
    /// Nudged by the API (resend, recover, enable).
    pub wake: Arc<Notify>,
    pub recorder: Recorder,
}

/// PostgreSQL: this instance's hold on the leases it takes. A session-level
/// advisory lock on a connection of its own, held while the process lives,
/// says it is alive; the leases it stamps with its number are freed by any
/// instance once the lock is gone (the process died, or its session ended)
/// rather than when they run out. Its connection is checked before claims
/// at most every [`RECLAIM_INTERVAL`]; when it broke, claims carry no owner
/// (freed only when they run out) until a lock is taken again, under a new
/// number, so a reclaim that saw the old one gone frees none of the new
/// leases. An instance whose session ended while it lived counts as gone:
/// what it had in flight may be sent again by another (at most its
/// concurrency, as after a crash).
struct LeaseOwner {
    number: i64,
    connection: Option<sea_orm::sqlx::PgConnection>,
}

/// How long a check or a taking of the lock may take.
const LOCK_TIMEOUT: Duration = Duration::from_secs(2);

impl LeaseOwner {
    fn new() -> Self {
        Self {
            number: 0,
            connection: None,
        }
    }

    /// Holds the lock (taking one again, under a new number, if its
    /// connection broke); the number leases are stamped with while it is
    /// held.
    async fn keep(&mut self, db: &Db) -> Option<i64> {
        use sea_orm::sqlx::{self, Connection};
        let pool = db.postgres_pool()?;
        if let Some(connection) = &mut self.connection
            && matches!(
                tokio::time::timeout(LOCK_TIMEOUT, connection.ping()).await,
                Ok(Ok(()))
            )
        {
            return Some(self.number);
        }
        self.connection = None;
        let number = rand::rng().random_range(1..=i32::MAX);
        let taken = tokio::time::timeout(LOCK_TIMEOUT, async {
            let mut connection = pool.acquire().await?.detach();
            let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
                .bind(store::LEASE_LOCK_CLASS)
                .bind(number)
                .fetch_one(&mut connection)
                .await?;
            Ok::<_, sqlx::Error>(locked.then_some(connection))
        })
        .await;
        let connection = match taken {
            Ok(Ok(Some(connection))) => connection,
            // Another instance drew the same number: another one next time.
            Ok(Ok(None)) => return None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot take this instance's lease lock");
                return None;
            }
            Err(_) => {
                tracing::warn!("taking this instance's lease lock timed out");
                return None;
            }
        };
        if let Err(e) = store::register_owner(db, i64::from(number)).await {
            tracing::warn!(error = %e, "cannot list this instance among the lease holders");
            return None;
        }
        self.number = i64::from(number);
        self.connection = Some(connection);
        Some(self.number)
    }
}

/// How often leases of instances that are gone are looked for.
const RECLAIM_INTERVAL: Duration = Duration::from_secs(2);

/// Claims between two refreshes of the queue's statistics, at least.
const ANALYZE_AFTER_CLAIMS: usize = 2000;
/// Time between two refreshes of the queue's statistics, at least.
const ANALYZE_INTERVAL: Duration = Duration::from_secs(10);

/// A full claim slower than this refreshes the queue's statistics…
const SLOW_CLAIM: Duration = Duration::from_millis(25);
/// …at most this often.
const ANALYZE_AFTER_SLOW_CLAIM: Duration = Duration::from_secs(5);

/// Retry-After is honoured up to this long.
const MAX_RETRY_AFTER_MS: i64 = 24 * 3600 * 1000;

impl WebhookWorker {
    #[tracing::instrument(name = "webhook_worker", skip_all)]
    pub async fn run(mut self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut in_flight: JoinSet<bool> = JoinSet::new();
        let mut last_prune = Instant::now() - Duration::from_secs(3600);
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        tracing::info!(
            concurrency = self.config.concurrency,
            "webhook worker started"
        );
        // After a full claim, claim again once this many slots are free:
        // a backlog drains in batches, not one claim per finished delivery.
        let min_batch = (self.config.concurrency / 4).max(1);
        let mut backlog = false;
        let mut claimed_since_analyze = 0usize;
        let mut last_analyze = Instant::now();
        let mut analyzing = tokio::spawn(async {});
        let mut last_due_check = Instant::now() - Duration::from_secs(1);
        let mut appended = self.db.watch_appends();
        let mut owner = LeaseOwner::new();
        let mut held = owner.keep(&self.db).await;
        let shared = self.db.postgres_pool().is_some();
        if !shared {
            self.reclaim().await;
        }
        let mut last_reclaim = Instant::now() - RECLAIM_INTERVAL;
        'work: loop {
            if shared && last_reclaim.elapsed() >= RECLAIM_INTERVAL {
                last_reclaim = Instant::now();
                held = owner.keep(&self.db).await;
                self.reclaim().await;
            }
            while in_flight.try_join_next().is_some() {}
            appended.borrow_and_update();
            self.published.borrow_and_update();
            let free = permits.available_permits();
            let mut slow_claim = false;
            if free > 0 && (!backlog || free >= min_batch || in_flight.is_empty()) {
                let started = Instant::now();
                let claimed = self
                    .claim_and_send(held, free, &permits, &mut in_flight)
                    .await;
                let took = started.elapsed();
                match claimed {
                    Ok(n) => {
                        backlog = n >= free;
                        // A plan gone wrong shows on a queue with more due
                        // than was taken, not on an empty one.
                        slow_claim = backlog && took > SLOW_CLAIM;
                        claimed_since_analyze += n;
                    }
                    Err(e) => {
                        backlog = false;
                        tracing::warn!(error = %e, "cannot claim webhook deliveries");
                    }
                }
            }
            if last_gauges.elapsed() > Duration::from_secs(5) {
                last_gauges = Instant::now();
                self.publish_gauges().await;
            }
            // The queue's statistics go stale fastest when it is busiest,
            // and a claim planned on stale ones is slow. Refreshed beside
            // the loop: claims go on meanwhile.
            let stale = (claimed_since_analyze >= ANALYZE_AFTER_CLAIMS
                && last_analyze.elapsed() > ANALYZE_INTERVAL)
                || (slow_claim && last_analyze.elapsed() > ANALYZE_AFTER_SLOW_CLAIM);
            if stale && analyzing.is_finished() {
                claimed_since_analyze = 0;
                last_analyze = Instant::now();
                let db = self.db.clone();
                analyzing = tokio::spawn(async move {
                    if let Err(e) = store::refresh_statistics(&db).await {
                        tracing::warn!(error = %e, "cannot refresh the webhook queue's statistics");
                    }
                });
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = Instant::now();
                self.prune().await;
            }
            if backlog {
                // More are due: go again as slots free up.
                tokio::select! {
                    () = shutdown.cancelled() => break 'work,
                    _ = in_flight.join_next() => {}
                }
                continue;
            }
            // Woken by every append when busy: the next retry's time is read
            // at most every 200 ms, and appends wake the worker anyway.
            let sleep = if last_due_check.elapsed() > Duration::from_millis(200) {
                last_due_check = Instant::now();
                self.until_next_due().await
            } else {
                Duration::from_millis(200)
            };
            let deadline = tokio::time::Instant::now() + sleep;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break 'work,
                    _ = appended.changed() => break,
                    _ = self.published.changed() => break,
                    () = self.wake.notified() => break,
                    // The next event of an ordered endpoint is due as soon
                    // as the one before it is done.
                    Some(done) = in_flight.join_next() => if done.unwrap_or(true) { break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        // Deliveries in flight finish (bounded by the request timeout); any
        // that cannot are re-sent when their lease runs out.
        let _ = tokio::time::timeout(self.config.timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        tracing::info!("webhook worker stopped");
    }

    /// Frees the leases of instances that are gone (on SQLite, once: the
    /// instance before this one left them).
    async fn reclaim(&self) {
        match store::reclaim_abandoned(&self.db).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(
                    deliveries = n,
                    "took back the leases of an instance that is gone"
                );
                self.wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for abandoned webhook leases"),
        }
    }

    /// How long to sleep before a claim could take something (2 s at
    /// most, which is also how soon a lost lease is noticed).
    async fn until_next_due(&self) -> Duration {
        let cap = Duration::from_secs(2);
        match store::next_due(&self.db).await {
            Ok(Some(due)) => {
                // Due already but not taken (an ordered head whose
                // transaction is not below the horizon yet): look again soon.
                let wait = u64::try_from(due - now_ms()).unwrap_or(0).max(5);
                Duration::from_millis(wait).min(cap)
            }
            Ok(None) => cap,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook queue");
                cap
            }
        }
    }

    /// Claims up to `free` deliveries and starts sending them; returns how
    /// many were claimed.
    async fn claim_and_send(
        &self,
        owner: Option<i64>,
        free: usize,
        permits: &Arc<Semaphore>,
        in_flight: &mut JoinSet<bool>,
    ) -> Result<usize, sea_orm::DbErr> {
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(60_000);
        let token = Uuid::now_v7();
        let claimed = store::claim(
            self.commands.store(),
            token,
            owner,
            now_ms(),
            lease_ms,
            u32::try_from(free).unwrap_or(u32::MAX),
        )
        .await?;
        let count = claimed.len();
        for Claim {
            delivery,
            endpoint,
            event,
        } in claimed
        {
            // Ordered heads may come on top of the free slots: they are
            // sent anyway rather than left waiting out their lease.
            // Held until the outcome is written: what a crash can leave
            // sent but unrecorded (and so sent again) is at most the
            // concurrency.
            let permit = permits.clone().try_acquire_owned().ok();
            let job = Delivery {
                db: self.db.clone(),
                commands: self.commands.clone(),
                config: self.config.clone(),
                sender: self.sender.clone(),
                recorder: self.recorder.clone(),
            };
            in_flight.spawn(async move {
                job.deliver(delivery, &endpoint, &event).await;
                drop(permit);
                endpoint.ordered
            });
        }
        Ok(count)
    }

    async fn publish_gauges(&self) {
        match store::queue_depth(&self.db).await {
            Ok((depth, oldest)) => {
                metrics::gauge!("switchboard_webhook_queue_depth").set(depth as f64);
                let age = oldest.map_or(0, |at| (now_ms() - at).max(0));
                metrics::gauge!("switchboard_webhook_oldest_pending_seconds")
                    .set(age as f64 / 1000.0);
            }
            Err(e) => tracing::debug!(error = %e, "cannot measure the webhook queue"),
        }
    }

    async fn prune(&self) {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        match store::prune_bodies(&self.db, now_ms().saturating_sub(retention)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(attempts = n, "pruned old webhook response bodies"),
            Err(e) => tracing::warn!(error = %e, "cannot prune webhook response bodies"),
        }
    }
}

/// One delivery attempt and its bookkeeping.
struct Delivery {
    db: Db,
    commands: Commands,
    config: WebhookConfig,
    sender: Sender,
    recorder: Recorder,
}

impl Delivery {
    #[tracing::instrument(name = "webhook_delivery", skip_all, fields(endpoint = %claimed.endpoint_id, event = %claimed.event_id, attempt = claimed.attempt))]
    async fn deliver(&self, claimed: Claimed, endpoint: &EndpointRow, event: &RecordedEvent) {
        let outcome = self.sender.send(endpoint, event).await;
        let status = outcome.record.response_status;
        let next = if outcome.succeeded() {
            NextStep::Delivered
        } else if status == Some(410) {
            NextStep::Failed
        } else {
            self.retry_or_give_up(claimed.attempt, outcome.retry_after_ms)
        };
        let result = match next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retry",
            NextStep::Failed => "failed",
        };
        metrics::counter!("switchboard_webhook_deliveries_total", "outcome" => result).increment(1);
        metrics::histogram!("switchboard_webhook_request_seconds")
            .record(outcome.record.duration_ms as f64 / 1000.0);
        if next == NextStep::Delivered {
            let age = (now_ms() - event.occurred_at.timestamp_millis()).max(0);
            metrics::histogram!("switchboard_webhook_delivery_latency_seconds")
                .record(age as f64 / 1000.0);
        }
        tracing::debug!(
            status,
            error = outcome.record.error.as_deref(),
            result,
            "attempt"
        );
        let attempted_at_ms = outcome.record.attempted_at_ms;
        let recorded = self
            .recorder
            .record(Outcome {
                claimed,
                attempt: outcome.record,
                next,
            })
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!("lease lost before the attempt was recorded"),
            Err(e) => {
                // The lease runs out and the delivery is sent again: at least once.
                tracing::warn!(error = %e, "cannot record a webhook attempt");
                return;
            }
        }
        if next == NextStep::Delivered {
            if endpoint.failing_since_ms.is_some()
                && let Err(e) = store::clear_failing(&self.db, endpoint.id).await
            {
                tracing::warn!(error = %e, "cannot clear an endpoint's failing state");
            }
            return;
        }
        if status == Some(410) {
            self.disable(endpoint, "the endpoint answered 410 Gone")
                .await;
            return;
        }
        match store::mark_failing(&self.db, endpoint.id, attempted_at_ms).await {
            Ok(since) => {
                let limit =
                    i64::try_from(self.config.disable_after.as_millis()).unwrap_or(i64::MAX);
                if attempted_at_ms - since >= limit {
                    let hours = self.config.disable_after.as_secs() / 3600;
                    self.disable(
                        endpoint,
                        &format!("every delivery failed for {hours} hours"),
                    )
                    .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot mark an endpoint as failing"),
        }
    }

    fn retry_or_give_up(&self, attempt: u32, retry_after_ms: Option<i64>) -> NextStep {
        let Some(delay) = self.config.retry_schedule.get(attempt as usize) else {
            return NextStep::Failed;
        };
        let base = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        // ±20 % so that endpoints coming back are not hit all at once.
        let jitter = if base > 0 {
            rand::rng().random_range(-(base / 5)..=base / 5)
        } else {
            0
        };
        let mut wait = base + jitter;
        if let Some(retry_after) = retry_after_ms {
            wait = wait.max(retry_after.min(MAX_RETRY_AFTER_MS));
        }
        NextStep::RetryAt(now_ms() + wait)
    }

    async fn disable(&self, endpoint: &EndpointRow, reason: &str) {
        let disable = DisableEndpoint {
            endpoint_id: endpoint.id,
            name: endpoint.name.clone(),
            reason: reason.to_owned(),
        };
        match self.commands.run(disable, Actor::system()).await {
            Ok(_) => tracing::warn!(endpoint = %endpoint.id, reason, "webhook endpoint disabled"),
            Err(CommandError::Domain(EndpointError::AlreadyDisabled)) => {}
            Err(e) => tracing::warn!(error = %e, "cannot disable a webhook endpoint"),
        }
    }
}

/// Disables an endpoint and appends `webhook.endpoint_disabled`
/// (operational; `webhooks:manage` readers see it on the feed and in the
/// event browser), together.
pub struct DisableEndpoint {
    pub endpoint_id: WebhookEndpointId,
    pub name: String,
    pub reason: String,
}

impl Command for DisableEndpoint {
    type Output = ();
    type Error = EndpointError;
    fn writes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Endpoint>(self.endpoint_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), EndpointError> {
        work.execute::<Endpoint>(
            self.endpoint_id,
            EndpointCommand::Disable {
                endpoint_id: self.endpoint_id,
                name: self.name.clone(),
                reason: self.reason.clone(),
            },
        )?;
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<EndpointError>> {
        if store::disable(&**txn, self.endpoint_id, &self.reason).await? {
            Ok(())
        } else {
            Err(CommandError::Domain(EndpointError::AlreadyDisabled))
        }
    }
}
