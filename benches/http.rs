//! The full HTTP path of "a user adds a ticket message" (JWT check, session
//! lookup, ownership check, decide, append, projection, response) with 64
//! concurrent clients against PostgreSQL, next to `pgbench` doing a bare
//! single-row INSERT with 64 clients, in the same run. Then provider payment
//! callbacks (`POST /api/v1/admin/payments`) at a fixed rate, all for one
//! user's balance (a hot aggregate), and the same spread over 20 users.
//!
//! ```sh
//! cargo bench --bench http
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_SECONDS=10 \
//!     BENCH_CLIENTS=64 BENCH_PAYMENT_RATE=200 cargo bench --bench http
//! ```
//!
//! It creates (and afterwards drops) the database `switchboard_bench_http`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use support::{
    TICKS_PER_SECOND, cpu_ticks, drop_database, fresh_database, init_data, machine_ticks,
    postgres_ticks, psql,
};

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::app::Application;

const TEXT: &str =
    "Hello! My subscription was charged twice this month, could you check please? Thanks a lot.";

fn main() {
    let admin_url = support::admin_url();
    let seconds = support::seconds();
    let clients: u32 = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&admin_url, Duration::from_secs(seconds), clients));
}

async fn run(admin_url: &str, duration: Duration, clients: u32) {
    let db_name = "switchboard_bench_http";
    let url = fresh_database(admin_url, db_name);

    let config = support::service_config(&url, |name| {
        (name == "SWITCHBOARD_AUTH_RATE_PER_IP").then(|| "100000".to_owned())
    });
    let app = Application::build(config).await.unwrap();
    let app_port = app.port();
    let base = format!("http://127.0.0.1:{app_port}");
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());

    // One user and one open ticket per client.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients as usize)
        .build()
        .unwrap();
    let mut sessions = Vec::new();
    for n in 0..clients {
        let tokens: Value = http
            .post(format!("{base}/api/v1/cabinet/auth/telegram/mini-app"))
            .json(&json!({"init_data": init_data(1000 + n)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = tokens["access_token"].as_str().unwrap().to_owned();
        let ticket: Value = http
            .post(format!("{base}/api/v1/cabinet/tickets"))
            .bearer_auth(&token)
            .json(&json!({"subject": "Load", "text": TEXT}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sessions.push((token, ticket["id"].as_str().unwrap().to_owned()));
    }
    let tokens: Vec<String> = sessions.iter().map(|(token, _)| token.clone()).collect();

    // The load: each client on an HTTP/1.1 connection of its own, sending
    // one request after another (a bare hyper connection: the load generator
    // shares the two cores with the service and PostgreSQL, so it is kept as
    // lean as pgbench's client).
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let cpu_before = (
        cpu_ticks("/proc/self/stat"),
        postgres_ticks(),
        machine_ticks(),
    );
    let body = hyper::body::Bytes::from(json!({"text": TEXT}).to_string());
    let mut tasks = Vec::new();
    for (token, ticket) in sessions {
        let path = format!("/api/v1/cabinet/tickets/{ticket}/messages");
        let host = format!("127.0.0.1:{}", app_port);
        let bearer = format!("Bearer {token}");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let request = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, host.as_str())
                    .header(hyper::header::AUTHORIZATION, bearer.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(body.clone()))
                    .unwrap();
                let t = Instant::now();
                let answer = async {
                    let response = sender.send_request(request).await?;
                    let status = response.status();
                    let body = http_body_util::BodyExt::collect(response.into_body()).await?;
                    Ok::<_, hyper::Error>((status, body.to_bytes()))
                }
                .await;
                match answer {
                    Ok((status, _)) if status.as_u16() == 201 => latencies.push(t.elapsed()),
                    Ok((status, body)) => {
                        failures += 1;
                        if failures == 1 {
                            eprintln!("failed: {status} {}", String::from_utf8_lossy(&body));
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            eprintln!("failed: {e}");
                        }
                        break;
                    }
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (l, f) = task.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = Cpu::since(cpu_before, elapsed, latencies.len());
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies[((latencies.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
    };
    let rps = latencies.len() as f64 / elapsed;
    let (p50, p99) = (pct(0.5), pct(0.99));

    // Provider callbacks: an operator's API credentials, the users' ids.
    let rate: u32 = std::env::var("BENCH_PAYMENT_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let operator = admin_token(&http, &base, &url).await;
    let mut user_ids = Vec::new();
    for token in &tokens {
        let me: Value = http
            .get(format!("{base}/api/v1/cabinet/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        user_ids.push(me["id"].as_str().unwrap().to_owned());
    }
    let hot = payments(&base, &operator, &user_ids[..1], rate, duration).await;
    let spread = payments(
        &base,
        &operator,
        &user_ids[..20.min(user_ids.len())],
        rate,
        duration,
    )
    .await;

    handle.stop(true).await;
    let _ = server.await;

    // The reference: a bare INSERT of the message event's payload size.
    psql(
        &url,
        "CREATE TABLE bench_raw (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload JSONB NOT NULL)",
    );
    let payload = json!({"ticket_id": uuid::Uuid::now_v7(), "user_id": uuid::Uuid::now_v7(), "message_id": uuid::Uuid::now_v7(), "author": "user", "author_id": uuid::Uuid::now_v7().to_string(), "text": TEXT, "channel": "cabinet"}).to_string();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        format!(
            "INSERT INTO bench_raw (payload) VALUES ('{}');\n",
            payload.replace('\'', "''")
        ),
    )
    .unwrap();
    let tps = support::pgbench_tps(&url, &script, clients, duration);

    println!(
        "{clients} clients, {}s, payload {} bytes, {failures} failed requests",
        duration.as_secs(),
        payload.len()
    );
    println!();
    println!("| path | requests/s | p50 ms | p99 ms | ratio to bare INSERT |");
    println!("|---|---:|---:|---:|---:|");
    println!("| pgbench bare INSERT ({clients} clients) | {tps:.0} | | | 100% |");
    println!(
        "| POST /api/v1/cabinet/tickets/{{id}}/messages | {rps:.0} | {p50:.2} | {p99:.2} | {:.0}% |",
        100.0 * rps / tps
    );
    println!();
    println!("| provider callbacks at {rate}/s | sent | failed | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (label, phase) in [
        ("one user's balance", &hot),
        ("20 users' balances", &spread),
    ] {
        println!(
            "| {label} | {} | {} | {:.2} | {:.2} |",
            phase.sent, phase.failed, phase.p50_ms, phase.p99_ms
        );
    }
    println!();
    println!(
        "CPU during the load, in cores: service and load generator {:.2}, PostgreSQL {:.2}, \
         idle {:.2}, taken by the hypervisor {:.2}; per request: {:.0} µs in the service and \
         load generator, {:.0} µs in PostgreSQL",
        cpu.process,
        cpu.postgres,
        cpu.idle,
        cpu.steal,
        cpu.process_per_request,
        cpu.postgres_per_request
    );

    drop_database(admin_url, db_name);
}

/// An operator's access token (created in the database directly).
async fn admin_token(http: &reqwest::Client, base: &str, url: &str) -> String {
    let db = switchboard::db::Db::connect(&switchboard::config::DatabaseConfig::Postgres {
        url: url.to_owned(),
        max_connections: 1,
    })
    .await
    .unwrap();
    let password = "correct horse battery staple";
    switchboard::admin::accounts::create(
        &db,
        "bench@example.com",
        password,
        switchboard::auth::Role::Owner,
    )
    .await
    .unwrap();
    db.close().await;
    let tokens: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "bench@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// What a fixed-rate phase came to.
struct Phase {
    sent: usize,
    failed: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Completed-payment callbacks at `rate` per second for `duration`, each
/// for the next of `users` in turn; every one a new provider payment. Sent
/// on schedule whatever the answers (open loop): a slow answer does not
/// slow the load.
async fn payments(
    base: &str,
    token: &str,
    users: &[String],
    rate: u32,
    duration: Duration,
) -> Phase {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();
    let total = (u64::from(rate) * duration.as_secs()) as usize;
    let run = uuid::Uuid::now_v7();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(rate))).await;
        let request = http
            .post(format!("{base}/api/v1/admin/payments"))
            .bearer_auth(token)
            .json(&json!({
                "user_id": users[i % users.len()],
                "amount": 1000,
                "currency": "RUB",
                "provider": "bench",
                "external_id": format!("{run}-{i}"),
                "status": "completed",
            }));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let response = request.send().await;
            let ok = response.as_ref().is_ok_and(|r| r.status().as_u16() == 201);
            if !ok && i % 50 == 0 {
                match response {
                    Ok(r) => eprintln!(
                        "callback failed: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(e) => eprintln!("callback failed: {e}"),
                }
            }
            (ok, t.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        if !ok {
            failed += 1;
        }
        latencies.push(latency);
    }
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Phase {
        sent: total,
        failed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    }
}

/// Where the machine's CPU went during the load (read from `/proc`).
struct Cpu {
    process: f64,
    postgres: f64,
    idle: f64,
    steal: f64,
    process_per_request: f64,
    postgres_per_request: f64,
}

impl Cpu {
    fn since(
        (process, postgres, machine): (u64, u64, support::MachineTicks),
        seconds: f64,
        requests: usize,
    ) -> Self {
        let cores = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds;
        let now = machine_ticks();
        let process = cores(cpu_ticks("/proc/self/stat") - process);
        let postgres = cores(postgres_ticks().saturating_sub(postgres));
        let per_request = |cores: f64| cores * seconds * 1e6 / requests.max(1) as f64;
        Self {
            process,
            postgres,
            idle: cores(now.idle - machine.idle),
            steal: cores(now.steal - machine.steal),
            process_per_request: per_request(process),
            postgres_per_request: per_request(postgres),
        }
    }
}
