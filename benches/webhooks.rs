//! Webhook deliveries to a local receiver: 10 endpoints subscribed to every
//! event, events appended at 50/s and 200/s (each is 10 deliveries), then as
//! fast as they can be appended (saturation). Reports deliveries/s and the
//! latency from the start of the append to the receiver having the request.
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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use switchboard::{
    app::Application,
    events::{Actor, Append, EventType, ExpectedVersion, NewEvent, StreamName},
};

const ENDPOINTS: usize = 10;

/// When each event's append started, by sequence number; and every receipt.
#[derive(Default)]
struct Clock {
    appended: Mutex<Vec<Option<Instant>>>,
    received: Mutex<Vec<(u64, Instant)>>,
}

fn main() {
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
    for n in 0..ENDPOINTS {
        let response = http
            .post(format!("{base}/api/v1/admin/webhooks"))
            .bearer_auth(&token)
            .json(&json!({
                "name": format!("receiver {n}"),
                "url": format!("http://127.0.0.1:{receiver_port}/hook/{n}"),
                "event_types": ["bench.*"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
    }

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
        "{ENDPOINTS} endpoints, every event to each; {}s per rate; worker concurrency {concurrency}; PostgreSQL {}",
        duration.as_secs(),
        version.trim()
    );
    println!();
    println!(
        "| load | events | deliveries | deliveries/s | append→receipt p50 ms | p95 ms | p99 ms | max ms |"
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

struct Measured {
    events: u64,
    deliveries: usize,
    per_second: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
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
    let pct = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    Measured {
        events: count,
        deliveries: latencies.len(),
        per_second: latencies.len() as f64 / elapsed,
        p50: pct(0.5),
        p95: pct(0.95),
        p99: pct(0.99),
        max: *latencies.last().unwrap(),
    }
}
