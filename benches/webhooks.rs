//! Webhook deliveries, measured twice.
//!
//! Over HTTP, as a user sees it: provider payment callbacks
//! (`POST /api/v1/admin/payments`, spread over 20 users) at 50/s and 200/s,
//! then from 32 senders as fast as they are answered (saturation), then at
//! 50/s again with 20,000 retries waiting for later in the queue, with 10
//! endpoints taking `payment.completed`, received in another process (this
//! program run again as the receiver). Reports deliveries/s and the latency
//! from the callback being sent to the receiver having the delivery (wall
//! clock, one machine).
//!
//! In-process: the same shape with events appended to the store directly
//! (every event to each of 10 endpoints) and the receiver in this process:
//! what the delivery path costs without the HTTP intake.
//!
//! ```sh
//! cargo bench --bench webhooks
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_SECONDS=10 \
//!     cargo bench --bench webhooks
//! ```
//!
//! It creates (and afterwards drops) the database `switchboard_bench_webhooks`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use support::{drop_database, fresh_database, psql};

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use switchboard::{
    app::Application,
    events::{Actor, Append, EventType, ExpectedVersion, NewEvent, StreamName},
};

const ENDPOINTS: usize = 10;
/// Retries waiting for later in the last HTTP phase.
const WAITING_RETRIES: u32 = 20_000;

/// When each event's append started, by sequence number; and every receipt.
#[derive(Default)]
struct Clock {
    appended: Mutex<Vec<Option<Instant>>>,
    received: Mutex<Vec<(u64, Instant)>>,
}

/// Set in the environment of this program run again as the receiver.
const RECEIVER_MODE: &str = "BENCH_WEBHOOK_RECEIVER";

fn main() {
    if std::env::var_os(RECEIVER_MODE).is_some() {
        receiver_process();
        return;
    }
    let admin_url = support::admin_url();
    let seconds = support::seconds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&admin_url, Duration::from_secs(seconds)));
}

async fn run(admin_url: &str, duration: Duration) {
    let db_name = "switchboard_bench_webhooks";
    let url = fresh_database(admin_url, db_name);

    // The receiver: one actix worker that notes the time of each request.
    let clock = Arc::new(Clock::default());
    let seen = clock.clone();
    let receiver = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().default_service(web::to(move |body: web::Bytes| {
            let seen = seen.clone();
            async move {
                let at = Instant::now();
                if let Ok(event) = serde_json::from_slice::<Value>(&body)
                    && let Some(seq) = event["payload"]["seq"].as_u64()
                {
                    seen.received.lock().unwrap().push((seq, at));
                }
                HttpResponse::NoContent().finish()
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let receiver_port = receiver.addrs()[0].port();
    let receiver = receiver.run();
    let receiver_handle = receiver.handle();
    tokio::spawn(receiver);

    let mut config = support::service_config(&url, |name| match name {
        "SWITCHBOARD_WEBHOOK_ENCRYPTION_KEY" => {
            Some("bench-key-bench-key-bench-key-bench-key".to_owned())
        }
        "SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS" => Some("127.0.0.0/8".to_owned()),
        // The worker's settings (concurrency, lease…) can be tried out.
        name if name.starts_with("SWITCHBOARD_WEBHOOK_") => std::env::var(name).ok(),
        _ => None,
    });
    config.webhooks.extra_event_types = vec!["bench.tick".to_owned()];
    let concurrency = config.webhooks.concurrency;
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());

    switchboard::admin::accounts::create(
        &state.db,
        "bench@example.com",
        "correct horse battery staple",
        switchboard::auth::Role::Owner,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "bench@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let receiver = format!("http://127.0.0.1:{receiver_port}");
    create_endpoints(&http, &base, &token, &receiver, "bench.*").await;

    let over_http = over_http(&base, &http, &token, &url).await;

    let mut rows = Vec::new();
    let mut next_seq = 0u64;
    for rate in [50u64, 200] {
        let count = rate * duration.as_secs();
        let result = measure(&state, &clock, &mut next_seq, count, Some(rate)).await;
        rows.push((format!("{rate} events/s"), result));
    }
    // Saturation: as fast as appends go, for as many events as 200/s would take.
    let count = 200 * duration.as_secs();
    let result = measure(&state, &clock, &mut next_seq, count, None).await;
    rows.push(("saturation".to_owned(), result));

    handle.stop(true).await;
    let _ = server.await;
    receiver_handle.stop(true).await;
    let version = psql(&url, "SHOW server_version");

    println!(
        "{ENDPOINTS} endpoints; {}s per phase; worker concurrency {concurrency}; PostgreSQL {}",
        duration.as_secs(),
        version.trim()
    );
    println!();
    println!(
        "| over HTTP: payment callbacks, 20 users, receiver in another process | callbacks | deliveries | deliveries/s | callback→receipt p50 ms | p95 ms | p99 ms | max ms | callback answered p50 ms | p99 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, r) in &over_http {
        let (answer_p50, answer_p99) = r.answer.unwrap_or_default();
        println!(
            "| {label} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {answer_p50:.1} | {answer_p99:.1} |",
            r.events, r.deliveries, r.per_second, r.p50, r.p95, r.p99, r.max
        );
    }
    println!();
    println!(
        "| over HTTP, by stage (ms, whole) | sent→queued p50 | p99 | queued→attempt p50 | p99 | request p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, r) in &over_http {
        let s = r.stages.as_ref().unwrap();
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            s.intake.0, s.intake.1, s.hop.0, s.hop.1, s.request.0, s.request.1
        );
    }
    println!();
    println!(
        "| in-process: appends to the store, every event to each endpoint | events | deliveries | deliveries/s | append→receipt p50 ms | p95 ms | p99 ms | max ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, r) in rows {
        println!(
            "| {label} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.events, r.deliveries, r.per_second, r.p50, r.p95, r.p99, r.max
        );
    }

    drop_database(admin_url, db_name);
}

/// [`ENDPOINTS`] endpoints taking `event_type`, at `receiver`'s `/hook/{n}`.
async fn create_endpoints(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    receiver: &str,
    event_type: &str,
) {
    for n in 0..ENDPOINTS {
        let response = http
            .post(format!("{base}/api/v1/admin/webhooks"))
            .bearer_auth(token)
            .json(&json!({
                "name": format!("{event_type} {n}"),
                "url": format!("{receiver}/hook/{n}"),
                "event_types": [event_type],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }
}

struct Measured {
    events: u64,
    deliveries: usize,
    per_second: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    /// Over HTTP: the callbacks' own answer time, p50 and p99 ms (what
    /// of the latency is the intake rather than the delivery).
    answer: Option<(f64, f64)>,
    /// Over HTTP: where the time went, read back from the database.
    stages: Option<Stages>,
}

/// A delivery's way in three stages, p50 and p99 ms each (whole
/// milliseconds: the database keeps times in ms): from the callback being
/// sent to its deliveries being written (the intake, up to the trigger in
/// the command's transaction), from there to the first attempt starting
/// (the commit, the worker's wake and its claim), and the attempt's
/// request itself.
struct Stages {
    intake: (f64, f64),
    hop: (f64, f64),
    request: (f64, f64),
}

impl Stages {
    /// Read from the deliveries of `run`'s payments.
    fn of_run(db_url: &str, run: &str) -> Self {
        let pair = |column: &str| {
            format!(
                "percentile_disc(0.5) WITHIN GROUP (ORDER BY {column}), \
                 percentile_disc(0.99) WITHIN GROUP (ORDER BY {column})"
            )
        };
        let sql = format!(
            "WITH s AS ( \
                SELECT d.created_at_ms \
                         - split_part(e.payload ->> 'external_id', ':', 2)::bigint / 1000 AS intake, \
                       a.attempted_at_ms - d.created_at_ms AS hop, a.duration_ms AS request \
                FROM events e \
                JOIN webhook_deliveries d ON d.event_id = e.id \
                JOIN webhook_attempts a ON a.endpoint_id = d.endpoint_id \
                                       AND a.event_id = d.event_id AND a.attempt = 1 \
                WHERE e.type = 'payment.completed' \
                  AND e.payload ->> 'external_id' LIKE '{run}:%') \
             SELECT concat_ws(' ', {}, {}, {}) FROM s",
            pair("intake"),
            pair("hop"),
            pair("request")
        );
        let figures: Vec<f64> = psql(db_url, &sql)
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let [a, b, c, d, e, f] = figures[..] else {
            panic!("no stages read back for run {run}");
        };
        Self {
            intake: (a, b),
            hop: (c, d),
            request: (e, f),
        }
    }
}

/// Appends `count` events (at `rate` per second, or as fast as possible)
/// and waits until every delivery has arrived.
async fn measure(
    state: &switchboard::app::AppState,
    clock: &Arc<Clock>,
    next_seq: &mut u64,
    count: u64,
    rate: Option<u64>,
) -> Measured {
    let first = *next_seq;
    *next_seq += count;
    {
        let mut appended = clock.appended.lock().unwrap();
        appended.resize(*next_seq as usize, None);
    }
    clock.received.lock().unwrap().clear();
    let start = Instant::now();
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_micros(1_000_000 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut appends = tokio::task::JoinSet::new();
    for seq in first..first + count {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        } else if appends.len() >= 64 {
            appends.join_next().await;
        }
        let store = state.store.clone();
        let clock = clock.clone();
        appends.spawn(async move {
            let stream = StreamName::parse(&format!("bench:{seq}")).unwrap();
            let event = NewEvent::new(
                EventType::parse("bench.tick").unwrap(),
                json!({"seq": seq, "text": "a small payload like a ticket message or a payment"}),
                Actor::system(),
            );
            clock.appended.lock().unwrap()[seq as usize] = Some(Instant::now());
            store
                .append(
                    vec![Append::new(
                        stream.clone(),
                        ExpectedVersion::NoStream,
                        vec![event],
                    )],
                    None,
                )
                .await
                .unwrap();
        });
    }
    while appends.join_next().await.is_some() {}
    let expected = count as usize * ENDPOINTS;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = clock.received.lock().unwrap().len();
        if got >= expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {expected} deliveries arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let appended = clock.appended.lock().unwrap();
    let mut latencies: Vec<f64> = clock
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(seq, at)| {
            let sent = appended[*seq as usize].unwrap();
            at.saturating_duration_since(sent).as_secs_f64() * 1000.0
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| quantile(&latencies, q);
    Measured {
        events: count,
        deliveries: latencies.len(),
        per_second: latencies.len() as f64 / elapsed,
        p50: pct(0.5),
        p95: pct(0.95),
        p99: pct(0.99),
        max: *latencies.last().unwrap(),
        answer: None,
        stages: None,
    }
}

// Over HTTP.

/// Wall-clock microseconds: the receiver is another process.
fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// The receiver: answers every delivery with 204 and notes, per run, how
/// long after the callback was sent it arrived (the callback's external id
/// is `run:sent_at_us:n`). `GET /runs/{run}` answers what it noted.
fn receiver_process() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let runs: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
        let noted = runs.clone();
        let server = HttpServer::new(move || {
            let noted = noted.clone();
            let read = noted.clone();
            App::new()
                .route(
                    "/runs/{run}",
                    web::get().to(move |run: web::Path<String>| {
                        let read = read.clone();
                        async move {
                            let latencies = read.lock().unwrap().get(run.as_str()).cloned();
                            HttpResponse::Ok().json(latencies.unwrap_or_default())
                        }
                    }),
                )
                .default_service(web::to(move |body: web::Bytes| {
                    let noted = noted.clone();
                    async move {
                        let at = now_us();
                        if let Ok(event) = serde_json::from_slice::<Value>(&body)
                            && let Some(id) = event["payload"]["external_id"].as_str()
                            && let [run, sent, _] = id.split(':').collect::<Vec<_>>()[..]
                            && let Ok(sent) = sent.parse::<u64>()
                        {
                            noted
                                .lock()
                                .unwrap()
                                .entry(run.to_owned())
                                .or_default()
                                .push(at.saturating_sub(sent));
                        }
                        HttpResponse::NoContent().finish()
                    }
                }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        println!("{}", server.addrs()[0].port());
        server.run().await.unwrap();
    });
}

/// Payment callbacks over HTTP, delivered to a receiver in another process.
async fn over_http(
    base: &str,
    http: &reqwest::Client,
    token: &str,
    db_url: &str,
) -> Vec<(String, Measured)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(RECEIVER_MODE, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let receiver = format!("http://127.0.0.1:{}", line.trim());
    create_endpoints(http, base, token, &receiver, "payment.completed").await;
    let mut users = Vec::new();
    for n in 0..20 {
        let tokens: Value = http
            .post(format!("{base}/api/v1/cabinet/auth/telegram/mini-app"))
            .json(&json!({"init_data": support::init_data(7000 + n)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let me: Value = http
            .get(format!("{base}/api/v1/cabinet/me"))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        users.push(me["id"].as_str().unwrap().to_owned());
    }
    let sender = Sender {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        base: base.to_owned(),
        token: token.to_owned(),
        users: Arc::new(users),
        receiver,
        db_url: db_url.to_owned(),
    };
    let duration = Duration::from_secs(support::seconds());
    // Warm-up: connections and caches, not measured.
    sender.phase(Load::Rate(20), Duration::from_secs(2)).await;
    let mut rows = Vec::new();
    for rate in [50u64, 200] {
        rows.push((
            format!("{rate} callbacks/s"),
            sender.phase(Load::Rate(rate), duration).await,
        ));
    }
    rows.push((
        "saturation, 32 senders".to_owned(),
        sender.phase(Load::Senders(32), duration).await,
    ));
    // Retries waiting for an hour (a receiver that was down), written
    // straight into the queue: a claim reads the due ones, never these.
    let later = now_us() / 1000 + 3_600_000;
    psql(
        db_url,
        &format!(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, event_tx, \
                 event_position, status, next_attempt_at_ms, created_at_ms) \
             SELECT (SELECT id FROM webhook_endpoints ORDER BY id LIMIT 1), gen_random_uuid(), \
                 'payment.completed', 0, g, 'pending', {later}, {later} \
             FROM generate_series(1, {WAITING_RETRIES}) g; \
             ANALYZE webhook_deliveries"
        ),
    );
    rows.push((
        format!("50 callbacks/s, {WAITING_RETRIES} retries waiting"),
        sender.phase(Load::Rate(50), duration).await,
    ));
    let _ = child.kill();
    let _ = child.wait();
    rows
}

enum Load {
    /// Callbacks sent on schedule, whatever the answers.
    Rate(u64),
    /// Senders each sending the next callback when the last is answered.
    Senders(usize),
}

#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    base: String,
    token: String,
    users: Arc<Vec<String>>,
    receiver: String,
    /// Where the stages are read back from.
    db_url: String,
}

impl Sender {
    /// One callback: a completed provider payment for the `n`th user in
    /// turn, its external id carrying the run and the time it was sent.
    /// How long its answer took, if it was accepted.
    async fn callback(&self, run: &str, n: usize) -> Option<Duration> {
        let sent = Instant::now();
        let response = self
            .http
            .post(format!("{}/api/v1/admin/payments", self.base))
            .bearer_auth(&self.token)
            .json(&json!({
                "user_id": self.users[n % self.users.len()],
                "amount": 1000,
                "currency": "RUB",
                "provider": "bench",
                "external_id": format!("{run}:{}:{n}", now_us()),
                "status": "completed",
            }))
            .send()
            .await;
        response
            .is_ok_and(|r| r.status().as_u16() == 201)
            .then(|| sent.elapsed())
    }

    async fn phase(&self, load: Load, duration: Duration) -> Measured {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        match load {
            Load::Rate(rate) => {
                let total = (rate * duration.as_secs()) as usize;
                let begin = tokio::time::Instant::now();
                for n in 0..total {
                    tokio::time::sleep_until(
                        begin + Duration::from_secs_f64(n as f64 / rate as f64),
                    )
                    .await;
                    let (sender, run) = (self.clone(), run.clone());
                    tasks.spawn(async move { Vec::from_iter(sender.callback(&run, n).await) });
                }
            }
            Load::Senders(senders) => {
                let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                for _ in 0..senders {
                    let (sender, run, next) = (self.clone(), run.clone(), next.clone());
                    tasks.spawn(async move {
                        let mut answered = Vec::new();
                        while start.elapsed() < duration {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            answered.extend(sender.callback(&run, n).await);
                        }
                        answered
                    });
                }
            }
        }
        let mut answers = Vec::new();
        while let Some(answered) = tasks.join_next().await {
            answers.extend(answered.unwrap());
        }
        answers.sort_unstable();
        let accepted = answers.len();
        let expected = accepted * ENDPOINTS;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut latencies: Vec<u64>;
        loop {
            latencies = self
                .http
                .get(format!("{}/runs/{run}", self.receiver))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if latencies.len() >= expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {expected} deliveries arrived",
                latencies.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let pct = |q: f64| ms(quantile(&latencies, q));
        Measured {
            events: accepted as u64,
            deliveries: latencies.len(),
            per_second: latencies.len() as f64 / elapsed,
            p50: pct(0.5),
            p95: pct(0.95),
            p99: pct(0.99),
            max: ms(*latencies.last().unwrap()),
            answer: Some((
                quantile(&answers, 0.5).as_secs_f64() * 1000.0,
                quantile(&answers, 0.99).as_secs_f64() * 1000.0,
            )),
            stages: Some(Stages::of_run(&self.db_url, &run)),
        }
    }
}

/// The `q` quantile of sorted `values`.
fn quantile<T: Copy>(values: &[T], q: f64) -> T {
    values[((values.len() as f64 - 1.0) * q).round() as usize]
}
