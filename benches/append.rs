//! Append throughput and latency of the event store on PostgreSQL, next to
//! `pgbench` doing a bare single-row INSERT of the same payload with the same
//! number of clients, in the same run: the store's own append (one call,
//! one statement), and the same event as a command through the runner every
//! write in the product takes (concurrent commands share statements).
//!
//! ```sh
//! cargo bench --bench append
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_SECONDS=10 \
//!     BENCH_CLIENTS=1,8,64 cargo bench --bench append
//! ```
//!
//! It creates (and afterwards drops) the database `switchboard_bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use support::{drop_database, fresh_database, psql};

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use switchboard::{
    config::DatabaseConfig,
    db::Db,
    domain::{Aggregate, Commands, Decide, DomainError, DomainEvent, Loaded, Refusal},
    events::{
        Actor, ActorKind, Append, EventStore, EventType, ExpectedVersion, NewEvent, StreamName,
    },
};

struct Measured {
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let admin_url = support::admin_url();
    let seconds = support::seconds();
    let clients: Vec<u32> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8,64".to_owned())
        .split(',')
        .map(|c| {
            c.trim()
                .parse()
                .expect("BENCH_CLIENTS: comma-separated numbers")
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&admin_url, Duration::from_secs(seconds), &clients));
}

fn payload() -> serde_json::Value {
    // About 250 bytes, the size of a typical ticket message event.
    json!({
        "ticket_id": "0193a5c2-7d1e-7b3a-9c1f-2b8e4d6a0f11",
        "message_id": "0193a5c2-7d1e-7b3a-9c1f-2b8e4d6a0f12",
        "author": "user",
        "text": "Hello! My subscription was charged twice this month, could you check please? Thanks a lot.",
        "attachments": []
    })
}

async fn run(admin_url: &str, duration: Duration, clients: &[u32]) {
    // The service's own default pool size, unless BENCH_POOL says otherwise:
    // writers beyond it wait for a connection, as requests in the app do.
    let pool_size: u32 = std::env::var("BENCH_POOL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let db_name = "switchboard_bench";
    let url = fresh_database(admin_url, db_name);

    let db = Db::connect(&DatabaseConfig::Postgres {
        url: url.clone(),
        max_connections: pool_size,
    })
    .await
    .unwrap();
    db.migrate().await.unwrap();
    let store = EventStore::new(db.clone());
    psql(
        &url,
        "CREATE TABLE bench_raw (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload JSONB NOT NULL)",
    );
    let payload_text = payload().to_string();
    println!(
        "payload: {} bytes of JSON; {}s per measurement; pool {pool_size} connections; PostgreSQL {}",
        payload_text.len(),
        duration.as_secs(),
        psql(&url, "SHOW server_version").trim()
    );

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        format!(
            "INSERT INTO bench_raw (payload) VALUES ('{}');\n",
            payload_text.replace('\'', "''")
        ),
    )
    .unwrap();

    let commands = Commands::new(store.clone());
    let mut rows = Vec::new();
    for &n in clients {
        let reference = pgbench(&url, &script, n, duration, dir.path());
        let single = appends(&store, n, 1, duration).await;
        let batch = appends(&store, n, 10, duration).await;
        let command = commanded(&commands, n, duration).await;
        rows.push((n, reference, single, batch, command));
    }

    println!();
    println!(
        "| writers | pgbench INSERT rows/s (p50/p99 ms) | append ×1 events/s (p50/p99 ms) | ratio | append ×10 events/s (p50/p99 ms per append) | ratio | command ×1 events/s (p50/p99 ms) | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, reference, single, batch, command) in &rows {
        let ratio = |m: &Measured| 100.0 * m.events_per_sec / reference.events_per_sec;
        println!(
            "| {n} | {:.0} ({:.2}/{:.2}) | {:.0} ({:.2}/{:.2}) | {:.0}% | {:.0} ({:.2}/{:.2}) | {:.0}% | {:.0} ({:.2}/{:.2}) | {:.0}% |",
            reference.events_per_sec,
            reference.p50_ms,
            reference.p99_ms,
            single.events_per_sec,
            single.p50_ms,
            single.p99_ms,
            ratio(single),
            batch.events_per_sec,
            batch.p50_ms,
            batch.p99_ms,
            ratio(batch),
            command.events_per_sec,
            command.p50_ms,
            command.p99_ms,
            ratio(command),
        );
    }

    db.close().await;
    drop_database(admin_url, db_name);
}

/// `writers` tasks, each appending to its own stream for `duration`.
async fn appends(store: &EventStore, writers: u32, batch: u32, duration: Duration) -> Measured {
    // A type with no read model: the event store's own append (group
    // commit). Events with read models are appended in their command's
    // transaction with the projections; `benches/http.rs` measures that.
    let event_type = EventType::parse("bench.appended").unwrap();
    let payload = Arc::new(payload());
    let run_id = switchboard::ids::EventId::new();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let event_type = event_type.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::parse(&format!("bench:{run_id}-{batch}-{w}")).unwrap();
            let actor = Actor::new(ActorKind::User, w);
            let mut latencies = Vec::new();
            let mut version = 0u32;
            while Instant::now() < deadline {
                let events = (0..batch)
                    .map(|_| NewEvent::new(event_type.clone(), (*payload).clone(), actor.clone()))
                    .collect();
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                let t = Instant::now();
                store
                    .append(vec![Append::new(stream.clone(), expected, events)], None)
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
                version += batch;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let events = latencies.len() as f64 * f64::from(batch);
    let (p50_ms, p99_ms) = percentiles(&mut latencies);
    Measured {
        events_per_sec: events / elapsed.as_secs_f64(),
        p50_ms,
        p99_ms,
    }
}

/// The benchmark's aggregate: a stream that takes any number of events. It
/// keeps no state, so loading it is reading its version.
#[derive(Debug, Clone, Default)]
struct Bench;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "payload")]
enum BenchEvent {
    #[serde(rename = "bench.appended")]
    Appended(serde_json::Value),
}

impl DomainEvent for BenchEvent {
    const TYPES: &'static [&'static str] = &["bench.appended"];
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl DomainError for Never {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        "never"
    }
}

impl Aggregate for Bench {
    const CATEGORY: &'static str = "bench";
    type Event = BenchEvent;
    type Command = serde_json::Value;
    type Error = Never;

    async fn snapshots(
        conn: &sea_orm::DatabaseExecutor<'_>,
        ids: &[String],
    ) -> Result<HashMap<String, Loaded<Self>>, sea_orm::DbErr> {
        let streams: Vec<StreamName> = ids.iter().map(Self::stream).collect();
        let versions = switchboard::events::store::stream_versions(conn, &streams).await?;
        Ok(ids
            .iter()
            .zip(&streams)
            .map(|(id, stream)| {
                let version = versions.get(stream).copied().unwrap_or(0);
                (
                    id.clone(),
                    Loaded {
                        state: Bench,
                        version,
                    },
                )
            })
            .collect())
    }

    fn apply(&mut self, _event: &BenchEvent) {}

    fn decide(&self, payload: serde_json::Value) -> Result<Vec<BenchEvent>, Never> {
        Ok(vec![BenchEvent::Appended(payload)])
    }
}

/// `writers` tasks, each running one-event commands on its own stream for
/// `duration`.
async fn commanded(commands: &Commands, writers: u32, duration: Duration) -> Measured {
    let payload = Arc::new(payload());
    let run_id = switchboard::ids::EventId::new();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let commands = commands.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("{run_id}-c-{w}");
            let actor = Actor::new(ActorKind::User, w);
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                commands
                    .run(Decide::<Bench>::new(&id, (*payload).clone()), actor.clone())
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let (p50_ms, p99_ms) = percentiles(&mut latencies);
    Measured {
        events_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms,
        p99_ms,
    }
}

fn percentiles(latencies: &mut [Duration]) -> (f64, f64) {
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (at(0.50), at(0.99))
}

/// pgbench with `clients` connections, per-transaction log for percentiles.
fn pgbench(url: &str, script: &Path, clients: u32, duration: Duration, dir: &Path) -> Measured {
    let prefix = dir.join(format!("pgbench-{clients}"));
    let output = Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-l", "--log-prefix"])
        .arg(&prefix)
        .args(["-c", &clients.to_string()])
        .args(["-j", &clients.min(2).to_string()])
        .args(["-T", &duration.as_secs().to_string()])
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .expect("pgbench must be installed (Debian: postgresql-client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps: f64 = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench output: {stdout}"));
    // Log lines: client_id transaction_no time(µs) script_no time_epoch time_us
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(&format!("pgbench-{clients}.")) {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(us));
            }
        }
    }
    let (p50_ms, p99_ms) = percentiles(&mut latencies);
    Measured {
        events_per_sec: tps,
        p50_ms,
        p99_ms,
    }
}
