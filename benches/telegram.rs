//! The Telegram bridge from outside, against PostgreSQL:
//!
//! 1. Intake: 64 clients post updates (private messages from different
//!    users) to `POST /telegram/webhook` as fast as they are answered:
//!    updates acknowledged per second and the answer's p50/p99, next to
//!    `pgbench` inserting the same bodies with 64 clients in the same run;
//!    then how long the processor takes to record them all (each a user,
//!    a ticket and four events).
//! 2. Sender pacing: 1,000 messages to different chats queued through the
//!    sender API, sent to a fake Bot API in another process that enforces
//!    Telegram's limits itself (a 429 for a call over the overall rate or a
//!    second call to one chat within a second): the time from the first
//!    call to the last against 999 / rate, and the 429s it had to give.
//! 3. With the overall limit off, the engine's own ceiling against a fake
//!    that answers at once: 5,000 messages to different chats.
//!
//! ```sh
//! cargo bench --bench telegram
//! BENCH_SECONDS=10 BENCH_TELEGRAM_RATE=30 cargo bench --bench telegram
//! ```
//!
//! It creates (and afterwards drops) the database `switchboard_bench_telegram`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{
    drop_database,
    fake_bot::{FakeBot, owner_token},
    fresh_database, psql,
};
use switchboard::app::Application;

const SECRET: &str = "bench-telegram-webhook-secret-0123456789";
const CLIENTS: usize = 64;

fn main() {
    if support::fake_bot::run_if_fake() {
        return;
    }
    let admin_url = support::admin_url();
    let seconds = support::seconds();
    let rate: u32 = std::env::var("BENCH_TELEGRAM_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&admin_url, Duration::from_secs(seconds), rate));
}

fn update(update_id: u64) -> Value {
    let from = 10_000 + update_id;
    json!({"update_id": update_id, "message": {
        "message_id": 1, "date": 1_764_590_000,
        "chat": {"id": from, "type": "private", "first_name": "Load"},
        "from": {"id": from, "is_bot": false, "first_name": "Load", "language_code": "en"},
        "text": "Hello! My subscription was charged twice this month, could you check please?"}})
}

async fn run(admin_url: &str, duration: Duration, rate: u32) {
    let db_name = "switchboard_bench_telegram";
    let url = fresh_database(admin_url, db_name);

    // The reference: pgbench inserting the update bodies, 64 clients.
    psql(
        &url,
        "CREATE TABLE bench_raw (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body TEXT NOT NULL, received_at_ms BIGINT NOT NULL)",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        format!(
            "INSERT INTO bench_raw (body, received_at_ms) VALUES ('{}', 0);\n",
            // `":` spaced out: pgbench takes `:name` for a variable.
            update(1)
                .to_string()
                .replace("\":", "\": ")
                .replace('\'', "''")
        ),
    )
    .unwrap();
    let tps = support::pgbench_tps(&url, &script, CLIENTS as u32, duration);
    println!("reference: pgbench bare INSERT of the update body, {CLIENTS} clients: {tps:.0}/s");

    // 1. Intake.
    let (fake, mut fake_child) = FakeBot::spawn(rate);
    let config = support::service_config(&url, |name| match name {
        "SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET" => Some(SECRET.to_owned()),
        "SWITCHBOARD_TELEGRAM_API_URL" => Some(fake.base.clone()),
        "SWITCHBOARD_TELEGRAM_RATE" => Some(rate.to_string()),
        _ => None,
    });
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());

    let next = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let next = next.clone();
        let host = base.trim_start_matches("http://").to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let body = hyper::body::Bytes::from(update(id).to_string());
                let request = hyper::Request::post("/telegram/webhook")
                    .header(hyper::header::HOST, host.as_str())
                    .header("x-telegram-bot-api-secret-token", SECRET)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(body))
                    .unwrap();
                let t = Instant::now();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .unwrap();
                assert_eq!(status.as_u16(), 200);
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let acknowledged = latencies.len();
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    let (p50, p99) = (pct(0.5), pct(0.99));
    // Until every acknowledged update is recorded.
    loop {
        let waiting = psql(
            &url,
            "SELECT COUNT(*) FROM telegram_updates WHERE processed_at_ms IS NULL",
        );
        if waiting.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded_in = started.elapsed().as_secs_f64();
    let body_size = update(1).to_string().len();
    let ups = acknowledged as f64 / elapsed;
    println!(
        "intake: {CLIENTS} clients, {}s, update body {body_size} bytes",
        duration.as_secs()
    );
    println!();
    println!("| path | per second | p50 ms | p99 ms | ratio to bare INSERT |");
    println!("|---|---:|---:|---:|---:|");
    println!("| pgbench bare INSERT of the body ({CLIENTS} clients) | {tps:.0} | | | 100% |");
    println!(
        "| POST /telegram/webhook, acknowledged | {ups:.0} | {p50:.2} | {p99:.2} | {:.0}% |",
        100.0 * ups / tps
    );
    println!(
        "| the same updates recorded (a user, a ticket, 4 events each) | {:.0} | | | {:.0}% |",
        acknowledged as f64 / recorded_in,
        100.0 * acknowledged as f64 / recorded_in / tps
    );
    println!();

    // 2. Pacing at the configured rate: 1,000 sends to different chats.
    let http = reqwest::Client::new();
    let owner = owner_token(&state, &http, &base).await;
    queue_sends(&http, &base, &owner, 1_000_000, 1000).await;
    let paced = fake.wait_for(1000).await;
    handle.stop(true).await;
    let _ = server.await;
    let _ = fake_child.kill();

    // 3. The ceiling: no overall limit, a fake that answers at once.
    let (open, mut open_child) = FakeBot::spawn(0);
    let config = support::service_config(&url, |name| match name {
        "SWITCHBOARD_TELEGRAM_API_URL" => Some(open.base.clone()),
        "SWITCHBOARD_TELEGRAM_RATE" => Some("0".to_owned()),
        _ => None,
    });
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    queue_sends(&http, &base, &owner, 2_000_000, 5000).await;
    let open_run = open.wait_for(5000).await;
    handle.stop(true).await;
    let _ = server.await;
    let _ = open_child.kill();

    drop_database(admin_url, db_name);

    let expected = 999.0 / f64::from(rate);
    println!("| sender | sends | took s | expected s | off by | 429s from the fake |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| limit {rate}/s, fake enforcing it | {} | {:.2} | {expected:.2} | {:+.1}% | {} |",
        paced.calls,
        paced.span_s,
        100.0 * (paced.span_s - expected) / expected,
        paced.limited
    );
    println!(
        "| no overall limit, fake answering at once | {} | {:.2} | | {:.0} sends/s | {} |",
        open_run.calls,
        open_run.span_s,
        (open_run.calls - 1) as f64 / open_run.span_s,
        open_run.limited
    );
}

/// Queues `count` messages to chats `first..first + count` through the
/// sender API, 16 requests at a time.
async fn queue_sends(http: &reqwest::Client, base: &str, token: &str, first: i64, count: i64) {
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for n in 0..count {
        let request = http
            .post(format!("{base}/api/v1/telegram/sendMessage"))
            .bearer_auth(token)
            .json(&json!({"chat_id": first + n, "text": format!("broadcast {n}")}));
        pending.push(async move { request.send().await.unwrap().status().as_u16() });
        if pending.len() >= 16 {
            assert_eq!(pending.next().await, Some(202));
        }
    }
    while let Some(status) = pending.next().await {
        assert_eq!(status, 202);
    }
}
