//! Broadcasts from outside, against PostgreSQL, to a fake Bot API in
//! another process:
//!
//! 1. At the limit: a broadcast to 1,000 users created over HTTP with the
//!    overall rate on (`BENCH_TELEGRAM_RATE`, 30 unless given), the fake
//!    enforcing Telegram's limits itself: the rate achieved from the first
//!    call to the last, divided by the configured rate, and the 429s.
//! 2. The engine's ceiling: the limits off, a fake that answers at once, a
//!    broadcast to 10,000 users: sends a second, and the CPU a send costs
//!    (this process, which runs the service, and PostgreSQL's), next to
//!    `pgbench` inserting rows of the outbox's width in the same run.
//!
//! ```sh
//! cargo bench --bench broadcast
//! BENCH_SECONDS=10 BENCH_TELEGRAM_RATE=30 cargo bench --bench broadcast
//! ```
//!
//! The users are written straight into the `users` read model (a broadcast
//! only reads it). It creates (and afterwards drops) the database
//! `switchboard_bench_broadcast`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    TICKS_PER_SECOND, cpu_ticks, drop_database,
    fake_bot::{FakeBot, owner_token},
    fresh_database, postgres_ticks, psql,
};
use switchboard::app::Application;

const AT_LIMIT: i64 = 1000;
const CEILING: i64 = 10_000;

fn main() {
    if support::fake_bot::run_if_fake() {
        return;
    }
    let admin_url = support::admin_url();
    let rate: u32 = std::env::var("BENCH_TELEGRAM_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(
        &admin_url,
        Duration::from_secs(support::seconds()),
        rate,
    ));
}

/// Users `first..first + count`, each with a private chat of the same id.
fn users(url: &str, first: i64, count: i64) {
    psql(
        url,
        &format!(
            "INSERT INTO users (id, telegram_id, first_name, language_code, email_verified, \
             status, source, created_at, updated_at, version, telegram_chat_id, bot_blocked) \
             SELECT gen_random_uuid(), g, 'Load', 'en', false, 'active', 'telegram', now(), \
             now(), 1, g, false FROM generate_series({first}, {}) g",
            first + count - 1
        ),
    );
}

/// Starts the service with the fake as its Bot API at `rate` (0: no
/// overall limit); creates a broadcast to the users whose Telegram ids are
/// `first..first + count`; returns what the fake saw once every message
/// reached it, and the CPU ticks this process and PostgreSQL spent.
async fn broadcast(url: &str, rate: u32, first: i64, count: i64) -> (support::fake_bot::Seen, u64) {
    let (fake, mut child) = FakeBot::spawn(rate);
    let config = support::service_config(url, |name| match name {
        "SWITCHBOARD_TELEGRAM_API_URL" => Some(fake.base.clone()),
        "SWITCHBOARD_TELEGRAM_RATE" => Some(rate.to_string()),
        _ => None,
    });
    let app = Application::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let owner = owner_token(&state, &http, &base).await;
    let ticks_before = cpu_ticks("/proc/self/stat") + postgres_ticks();
    let answer: Value = http
        .post(format!("{base}/api/v1/admin/broadcasts"))
        .bearer_auth(&owner)
        .json(&json!({"text": "A sale, this weekend only", "audience": {"telegram_ids": (first..first + count).collect::<Vec<_>>()}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["total"], count, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let seen = fake.wait_for(u64::try_from(count).unwrap()).await;
    let ticks = cpu_ticks("/proc/self/stat") + postgres_ticks() - ticks_before;
    // Until the broadcast saw every outcome.
    let started = Instant::now();
    loop {
        let view: Value = http
            .get(format!("{base}/api/v1/admin/broadcasts/{id}"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["status"] == "completed" || started.elapsed() > Duration::from_secs(60) {
            assert_eq!(view["counts"]["sent"], count, "{view}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.stop(true).await;
    let _ = server.await;
    let _ = child.kill();
    psql(url, "DELETE FROM admins");
    (seen, ticks)
}

async fn run(admin_url: &str, duration: Duration, rate: u32) {
    let db_name = "switchboard_bench_broadcast";
    let url = fresh_database(admin_url, db_name);
    // The schema, then the users.
    let config = support::service_config(&url, |_| None);
    Application::build(config).await.unwrap();
    users(&url, 1_000_000, AT_LIMIT);
    users(&url, 2_000_000, CEILING);

    // The reference: pgbench inserting outbox-wide rows, 64 clients.
    psql(
        &url,
        "CREATE TABLE bench_sends (id uuid PRIMARY KEY, chat_id bigint, method text, \
         params text, status text, created_at_ms bigint)",
    );
    let script = std::env::temp_dir().join("switchboard_bench_broadcast.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_sends VALUES (gen_random_uuid(), 1, 'sendMessage', \
         '{\"chat_id\": 1, \"text\": \"A sale, this weekend only\"}', 'sent', 0);\n",
    )
    .unwrap();
    let tps = support::pgbench_tps(&url, &script, 64, duration);
    println!("reference: pgbench bare INSERT of an outbox-wide row, 64 clients: {tps:.0}/s");

    let (paced, _) = broadcast(&url, rate, 1_000_000, AT_LIMIT).await;
    let (open, ticks) = broadcast(&url, 0, 2_000_000, CEILING).await;
    drop_database(admin_url, db_name);

    let achieved = (paced.calls - 1) as f64 / paced.span_s;
    println!();
    println!("| broadcast | recipients | took s | sends/s | of the limit | 429s | CPU ms a send |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| limit {rate}/s, fake enforcing it | {} | {:.2} | {achieved:.2} | {:.3} | {} | |",
        paced.calls,
        paced.span_s,
        achieved / f64::from(rate),
        paced.limited
    );
    let ceiling = (open.calls - 1) as f64 / open.span_s;
    println!(
        "| no limit, fake answering at once | {} | {:.2} | {ceiling:.0} ({:.0}% of bare INSERT) | | {} | {:.2} |",
        open.calls,
        open.span_s,
        100.0 * ceiling / tps,
        open.limited,
        1000.0 * ticks as f64 / TICKS_PER_SECOND / open.calls as f64
    );
}
