//! The live feed under load, against the service running as its own process
//! on PostgreSQL (so its memory can be read from `/proc/<pid>/status`):
//!
//! 1. `BENCH_CLIENTS` (1,000) clients on the admin feed
//!    (`GET /ws?types=transaction.created`, one API key with `events:read`)
//!    while admin top-ups (`POST /api/v1/admin/users/{id}/top-up`) are posted
//!    at exactly `BENCH_RATE` (100) requests/s for `BENCH_SECONDS` (10), after
//!    `BENCH_WARMUP_SECONDS` (3) of the same that are not counted. Each top-up
//!    appends `payment.created`, `payment.completed` and `transaction.created`;
//!    its reason (`wsbench-seq-<n>`) is the description of the ledger entry in
//!    `transaction.created`, which is what the clients receive. Reported:
//!    latency from sending the HTTP request to each client receiving its
//!    event, over every (event, client) pair; frames lost (every client must
//!    receive every event whose request succeeded); the service's RSS.
//! 2. `BENCH_IDLE_CLIENTS` (10,000) idle clients on a freshly started service:
//!    its RSS before they connect, once they are connected, and
//!    `BENCH_IDLE_HOLD_SECONDS` (30) later, past the first ping and key
//!    re-check of each connection.
//!
//! ```sh
//! cargo bench --bench ws
//! BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_SECONDS=10 \
//!     BENCH_CLIENTS=1000 BENCH_RATE=100 BENCH_IDLE_CLIENTS=10000 cargo bench --bench ws
//! ```
//!
//! It creates (and afterwards drops) the database `switchboard_bench_ws`. The
//! bench process and the service each hold one socket per client: the file
//! descriptor limit must allow `BENCH_IDLE_CLIENTS` plus a few hundred.
//!
//! `BENCH_SERVICE_WRAPPER` runs the service under another program, e.g.
//! `BENCH_SERVICE_WRAPPER="valgrind --tool=massif" BENCH_IDLE_CLIENTS=2000`
//! for a heap profile by allocation site (the RSS figures are then the
//! profiler's, not the service's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mod.rs"]
mod support;

use std::{
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
use serde_json::{Value, json};
use support::{
    BOT_TOKEN, TICKS_PER_SECOND, cpu_ticks, drop_database, fresh_database, init_data,
    machine_ticks, psql,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::WebSocketConfig,
};
use tokio_util::sync::CancellationToken;

const JWT_SECRET: &str = "bench-secret-bench-secret-bench-secret-0";
const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench-password-0123456789";
const DB_NAME: &str = "switchboard_bench_ws";
/// Marks the top-up reason; it lands in the ledger entry's `description`.
const MARK: &str = "wsbench-seq-";
/// The reason of the warm-up top-ups (not counted).
const WARMUP_MARK: &str = "wsbench-warmup-";
/// Users the top-ups go round: a balance is one stream per user, and 100
/// appends/s on one stream would mostly measure optimistic-concurrency retries.
const USERS: usize = 20;
/// WebSocket handshakes in flight at once.
const CONNECT_PARALLEL: usize = 200;
/// How long after the last request the clients get to receive its event.
const GRACE: Duration = Duration::from_secs(10);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // reqwest is built with rustls but no crypto provider of its own.
    switchboard::app::install_crypto_provider();
    let admin_url = support::admin_url();
    let settings = Settings {
        seconds: support::seconds(),
        clients: env_or("BENCH_CLIENTS", 1000),
        rate: env_or("BENCH_RATE", 100),
        idle_clients: env_or("BENCH_IDLE_CLIENTS", 10_000),
        warmup: env_or("BENCH_WARMUP_SECONDS", 3),
        hold: env_or("BENCH_IDLE_HOLD_SECONDS", 30),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&admin_url, settings));
}

#[derive(Clone, Copy)]
struct Settings {
    seconds: u64,
    clients: usize,
    rate: u64,
    idle_clients: usize,
    /// Seconds of appends before the measurement.
    warmup: u64,
    /// Seconds the idle clients stay connected after the first reading
    /// (the service pings each and re-checks its key every 25 s).
    hold: u64,
}

async fn run(admin_url: &str, settings: Settings) {
    let url = fresh_database(admin_url, DB_NAME);
    let pg_version = psql(&url, "SHOW server_version").trim().to_owned();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();

    // 1. Fan-out latency with events flowing.
    let server = Server::start(&url).await;
    let setup = setup(&server, &url).await;
    let load = load(&server, &setup, settings).await;
    server.stop().await;

    // 2. Memory per idle connection, on a fresh process.
    let server = Server::start(&url).await;
    let idle = idle(&server, &setup.key, settings.idle_clients, settings.hold).await;
    server.stop().await;

    drop_database(admin_url, DB_NAME);

    println!();
    println!(
        "service: release build, own process, {workers} HTTP workers (one per core), PostgreSQL {pg_version} on the same machine; {workers} cores shared by the service, PostgreSQL and the clients (load average {load_average} at the start)"
    );
    println!(
        "load: {} clients on `GET /ws?types=transaction.created` (API key), `POST /api/v1/admin/users/{{id}}/top-up` at {}/s for {}s after {}s of warm-up, round {USERS} users: {} requests, {} failed (HTTP p50 {:.2} ms, p99 {:.2} ms); CPU: service {:.0}% of one core, bench process {:.0}%, whole machine {:.0}% busy",
        settings.clients,
        settings.rate,
        settings.seconds,
        settings.warmup,
        load.requests,
        load.failed,
        load.http_p50,
        load.http_p99,
        load.server_cpu,
        load.client_cpu,
        load.machine_busy,
    );
    println!();
    println!("| measurement | result | target |");
    println!("|---|---:|---:|");
    println!(
        "| append → receive p50 / p99 / max ({} clients, {} events/s) | {:.1} / {:.1} / {:.1} ms | p99 < 100 ms |",
        settings.clients, settings.rate, load.p50, load.p99, load.max
    );
    println!(
        "| of which event timestamp → receive, client 0, p50 / p99 | {:.1} / {:.1} ms | |",
        load.feed_p50, load.feed_p99
    );
    println!(
        "| frames expected / received / lost / duplicated | {} / {} / {} / {} | 0 lost |",
        load.expected, load.received, load.lost, load.duplicates
    );
    println!(
        "| clients disconnected during the run | {} | 0 |",
        load.disconnected
    );
    println!(
        "| service RSS: started / {} clients connected / peak under load | {:.1} / {:.1} / {:.1} MiB | |",
        settings.clients,
        mib(load.rss_start),
        mib(load.rss_connected),
        mib(load.rss_peak)
    );
    println!(
        "| service RSS: before / with {} idle clients | {:.1} / {:.1} MiB | |",
        idle.connected,
        mib(idle.rss_before),
        mib(idle.rss_after)
    );
    println!(
        "| service RSS per idle connection | {:.1} KiB | < 20 KiB |",
        idle.per_connection_kib
    );
    println!(
        "| service RSS with {} idle clients after {} s more (past a ping and key re-check each) | {:.1} MiB ({:.1} KiB per connection) | |",
        idle.still,
        settings.hold,
        mib(idle.rss_held),
        (idle.rss_held as f64 - idle.rss_before as f64) / idle.connected as f64
    );
    println!(
        "| time to connect {} clients ({CONNECT_PARALLEL} handshakes at a time) | {:.1} s | |",
        idle.connected, idle.connect_seconds
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// The service as a child process.

struct Server {
    child: Child,
    base: String,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Server {
    async fn start(database_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Built before the child is spawned: a panic here leaves no process behind.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        // `BENCH_SERVICE_WRAPPER="valgrind --tool=massif"` runs the service
        // under a profiler (its RSS is then the profiler's).
        let mut command = match std::env::var("BENCH_SERVICE_WRAPPER") {
            Ok(wrap) => {
                let mut parts = wrap.split_whitespace();
                let mut c = Command::new(parts.next().unwrap());
                c.args(parts);
                c.arg(env!("CARGO_BIN_EXE_switchboard"));
                c
            }
            Err(_) => Command::new(env!("CARGO_BIN_EXE_switchboard")),
        };
        let child = command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("SWITCHBOARD_LISTEN", addr.to_string())
            .env("SWITCHBOARD_JWT_SECRET", JWT_SECRET)
            .env("SWITCHBOARD_TELEGRAM_BOT_TOKEN", BOT_TOKEN)
            // Never Telegram's own: nothing listens there.
            .env("SWITCHBOARD_TELEGRAM_API_URL", "http://127.0.0.1:9")
            .env("SWITCHBOARD_AUTH_RATE_PER_IP", "100000")
            .env("SWITCHBOARD_AUTH_RATE_PER_ACCOUNT", "100000")
            .env("SWITCHBOARD_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the service");
        let server = Self {
            child,
            base: format!("http://{addr}"),
            addr,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = server
                .http
                .get(format!("{}/readyz", server.base))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the service was not ready in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    fn cpu_ticks(&self) -> u64 {
        cpu_ticks(&format!("/proc/{}/stat", self.pid()))
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("the service did not stop within 40 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached with the child still running on a panic.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Setup: an owner, an API key, users to top up.

struct Setup {
    key: String,
    users: Vec<String>,
}

async fn setup(server: &Server, database_url: &str) -> Setup {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["admin", "create", "--email", ADMIN_EMAIL, "--role", "owner"])
        .env("DATABASE_URL", database_url)
        .env("SWITCHBOARD_JWT_SECRET", JWT_SECRET)
        .env("SWITCHBOARD_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{ADMIN_PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success(), "admin create failed");

    let http = &server.http;
    let base = &server.base;
    let tokens: Value = ok_json(
        http.post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    )
    .await;
    let jwt = tokens["access_token"].as_str().unwrap();
    let key: Value = ok_json(
        http.post(format!("{base}/api/v1/admin/api-keys"))
            .bearer_auth(jwt)
            .json(&json!({
                "name": "ws bench",
                "scopes": ["events:read", "ledger:read", "ledger:manage", "stats:read"],
            })),
    )
    .await;
    let key = key["secret"].as_str().unwrap().to_owned();

    let mut users = Vec::new();
    for n in 0..USERS {
        let tokens: Value = ok_json(
            http.post(format!("{base}/api/v1/cabinet/auth/telegram/mini-app"))
                .json(&json!({"init_data": init_data(5000 + n as u32)})),
        )
        .await;
        let me: Value = ok_json(
            http.get(format!("{base}/api/v1/cabinet/me"))
                .bearer_auth(tokens["access_token"].as_str().unwrap()),
        )
        .await;
        users.push(me["id"].as_str().unwrap().to_owned());
    }
    Setup { key, users }
}

async fn ok_json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------
// Clients.

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects to the admin feed and waits for its greeting: from then on the
/// feed is subscribed and receives every event appended later.
async fn connect(addr: SocketAddr, path: &str, key: &str) -> Result<Ws, String> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().map_err(|_| "header")?,
    );
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    // Small client buffers: 10,000 of them live in this process.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.contains("\"connected\"") => Ok(ws),
        other => Err(format!("no greeting: {other:?}")),
    }
}

/// The sequence number in a `transaction.created` frame of ours.
fn sequence_of(text: &str) -> Option<u32> {
    let at = text.find(MARK)? + MARK.len();
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// What one client of the load test saw.
#[derive(Default)]
struct Received {
    frames: Vec<(u32, Instant)>,
    /// The event timestamp and when it was received (client 0 only).
    timestamps: Vec<(u32, String, Instant)>,
    ended: Option<String>,
}

async fn read_frames(
    mut ws: Ws,
    keep_timestamps: bool,
    stop: CancellationToken,
    counter: Arc<AtomicU64>,
) -> Received {
    let mut out = Received::default();
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let now = Instant::now();
                if let Some(seq) = sequence_of(&text) {
                    out.frames.push((seq, now));
                    counter.fetch_add(1, Ordering::Relaxed);
                    if keep_timestamps && let Some(ts) = timestamp_of(&text) {
                        out.timestamps.push((seq, ts.to_owned(), now));
                    }
                }
            }
            Some(Ok(Message::Close(frame))) => {
                out.ended = Some(format!("closed: {frame:?}"));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                out.ended = Some(format!("error: {e}"));
                break;
            }
            None => {
                out.ended = Some("dropped".to_owned());
                break;
            }
        }
    }
    out
}

fn timestamp_of(text: &str) -> Option<&str> {
    let key = "\"timestamp\":\"";
    let at = text.find(key)? + key.len();
    let end = text[at..].find('"')?;
    Some(&text[at..at + end])
}

// ---------------------------------------------------------------------------
// 1. Latency and loss with events flowing.

struct Load {
    requests: usize,
    failed: usize,
    http_p50: f64,
    http_p99: f64,
    p50: f64,
    p99: f64,
    max: f64,
    feed_p50: f64,
    feed_p99: f64,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    disconnected: usize,
    rss_start: u64,
    rss_connected: u64,
    rss_peak: u64,
    server_cpu: f64,
    client_cpu: f64,
    /// Share of all cores busy (everything on the machine).
    machine_busy: f64,
}

async fn load(server: &Server, setup: &Setup, settings: Settings) -> Load {
    let rss_start = server.rss_kib();

    // Connect every client; each reads from the moment it is connected.
    let stop = CancellationToken::new();
    let counter = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLEL));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 0..settings.clients {
        let (gate, ready, stop, counter) = (
            gate.clone(),
            ready_tx.clone(),
            stop.clone(),
            counter.clone(),
        );
        let (addr, key) = (server.addr, setup.key.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let ws = connect(addr, "/ws?types=transaction.created", &key).await;
            drop(permit);
            match ws {
                Ok(ws) => {
                    let _ = ready.send(Ok(()));
                    read_frames(ws, n == 0, stop, counter).await
                }
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    Received {
                        ended: Some(e),
                        ..Received::default()
                    }
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..settings.clients {
        if let Err(e) = ready_rx.recv().await.unwrap() {
            panic!("a client could not connect: {e}");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = server.rss_kib();

    // Sample the service's memory while the events flow.
    let sampling = CancellationToken::new();
    let sampler = {
        let pid = server.pid();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !sampling.is_cancelled() {
                tick.tick().await;
                if let Some(rss) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.split_whitespace().next())
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                {
                    peak = peak.max(rss);
                }
            }
            peak
        })
    };

    // Warm up (connection pools, prepared statements, the allocator) with
    // events the clients do not count, then measure.
    let warmup = (settings.rate * settings.warmup) as usize;
    for (_, _, ok) in append_paced(server, setup, settings.rate, warmup, WARMUP_MARK).await {
        assert!(ok, "a warm-up top-up failed");
    }
    let total = (settings.rate * settings.seconds) as usize;
    let base_instant = Instant::now();
    let base_system = SystemTime::now();
    let server_cpu_before = server.cpu_ticks();
    let client_cpu_before = cpu_ticks("/proc/self/stat");
    let machine_before = machine_ticks();
    let outcomes = append_paced(server, setup, settings.rate, total, MARK).await;
    let mut sent_at = Vec::with_capacity(total);
    let mut http_times = Vec::with_capacity(total);
    for (sent, took, ok) in outcomes {
        sent_at.push(ok.then_some(sent));
        http_times.push(took);
    }
    let appended = sent_at.iter().filter(|s| s.is_some()).count() as u64;
    let expected = appended * settings.clients as u64;
    let grace_end = Instant::now() + GRACE;
    while counter.load(Ordering::Relaxed) < expected && Instant::now() < grace_end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = base_instant.elapsed().as_secs_f64();
    let server_cpu =
        100.0 * (server.cpu_ticks() - server_cpu_before) as f64 / TICKS_PER_SECOND / elapsed;
    let client_cpu = 100.0 * (cpu_ticks("/proc/self/stat") - client_cpu_before) as f64
        / TICKS_PER_SECOND
        / elapsed;
    let machine_after = machine_ticks();
    let machine_busy = 100.0 * (machine_after.busy - machine_before.busy) as f64
        / (machine_after.total - machine_before.total).max(1) as f64;
    sampling.cancel();
    let rss_peak = sampler.await.unwrap().max(rss_connected);
    stop.cancel();

    let mut latencies = Vec::with_capacity(expected as usize);
    let (mut received, mut lost, mut duplicates, mut disconnected) = (0u64, 0u64, 0u64, 0usize);
    let mut timestamps = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        if let Some(why) = &got.ended {
            disconnected += 1;
            if disconnected <= 3 {
                eprintln!("a client ended early: {why}");
            }
        }
        if !got.timestamps.is_empty() {
            timestamps = got.timestamps;
        }
        let mut seen = vec![false; total];
        for (seq, at) in got.frames {
            let seq = seq as usize;
            let Some(Some(sent)) = sent_at.get(seq) else {
                continue;
            };
            if std::mem::replace(&mut seen[seq], true) {
                duplicates += 1;
                continue;
            }
            received += 1;
            latencies.push(at.saturating_duration_since(*sent));
        }
        lost += sent_at
            .iter()
            .zip(&seen)
            .filter(|(sent, seen)| sent.is_some() && !**seen)
            .count() as u64;
    }
    latencies.sort_unstable();
    http_times.sort_unstable();

    // The feed's own share: from the event's timestamp (taken by the
    // service when it appends) to client 0 receiving it. Wall clock of the
    // same machine, millisecond resolution.
    let mut feed: Vec<Duration> = timestamps
        .iter()
        .filter_map(|(_, ts, received)| {
            let ts: SystemTime = chrono::DateTime::parse_from_rfc3339(ts).ok()?.into();
            let appended = base_instant + ts.duration_since(base_system).ok()?;
            Some(received.saturating_duration_since(appended))
        })
        .collect();
    feed.sort_unstable();

    Load {
        requests: total,
        failed: total - appended as usize,
        http_p50: pct(&http_times, 0.5),
        http_p99: pct(&http_times, 0.99),
        p50: pct(&latencies, 0.5),
        p99: pct(&latencies, 0.99),
        max: pct(&latencies, 1.0),
        feed_p50: pct(&feed, 0.5),
        feed_p99: pct(&feed, 0.99),
        expected,
        received,
        lost,
        duplicates,
        disconnected,
        rss_start,
        rss_connected,
        rss_peak,
        server_cpu,
        client_cpu,
        machine_busy,
    }
}

/// Posts `count` top-ups at exactly `rate` per second, the reason of the
/// n-th being `{marker}{n}`; each is its own task, so a slow response never
/// delays the next one. When each was sent, how long it took, whether it
/// succeeded.
async fn append_paced(
    server: &Server,
    setup: &Setup,
    rate: u64,
    count: usize,
    marker: &str,
) -> Vec<(Instant, Duration, bool)> {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(count);
    for seq in 0..count {
        interval.tick().await;
        let request = server
            .http
            .post(format!(
                "{}/api/v1/admin/users/{}/top-up",
                server.base,
                setup.users[seq % setup.users.len()]
            ))
            .bearer_auth(&setup.key)
            .json(&json!({"amount": 1, "currency": "RUB", "reason": format!("{marker}{seq}")}));
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = request.send().await;
            let took = sent.elapsed();
            let ok = match outcome {
                Ok(r) if r.status().as_u16() == 201 => true,
                Ok(r) => {
                    eprintln!(
                        "top-up {seq}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    false
                }
                Err(e) => {
                    eprintln!("top-up {seq}: {e}");
                    false
                }
            };
            (sent, took, ok)
        }));
    }
    let mut outcomes = Vec::with_capacity(count);
    for request in requests {
        outcomes.push(request.await.unwrap());
    }
    outcomes
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------
// 2. Memory per idle connection.

struct Idle {
    connected: usize,
    rss_before: u64,
    rss_after: u64,
    per_connection_kib: f64,
    connect_seconds: f64,
    /// RSS after holding the connections for a while.
    rss_held: u64,
    /// Connections the service still counted then.
    still: usize,
}

async fn idle(server: &Server, key: &str, clients: usize, hold: u64) -> Idle {
    // One connection first, so what is set up once (the hub's first
    // subscriber, the upgrade path) is not counted per connection.
    let warm = connect(server.addr, "/ws", key).await.unwrap();
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = server.rss_kib();

    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLEL));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (gate, ready, stop) = (gate.clone(), ready_tx.clone(), stop.clone());
        let (addr, key) = (server.addr, key.to_owned());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let ws = connect(addr, "/ws", &key).await;
            drop(permit);
            match ws {
                Ok(ws) => {
                    let _ = ready.send(Ok(()));
                    // Keep reading, so the service's pings are answered.
                    read_frames(ws, false, stop, Arc::new(AtomicU64::new(0))).await;
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        }));
    }
    drop(ready_tx);
    let mut connected = 0;
    let mut failed = 0;
    // Every task reports once (and keeps its sender while it reads on).
    for _ in 0..clients {
        match ready_rx.recv().await.unwrap() {
            Ok(()) => connected += 1,
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("an idle client could not connect: {e}");
                }
            }
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    assert_eq!(failed, 0, "{failed} idle clients could not connect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = server.rss_kib();

    let gauge = clients_gauge(server, key).await;
    assert_eq!(
        gauge,
        Some(connected),
        "switchboard_ws_clients{{feed=\"admin\"}}"
    );

    // Past the first ping (and key re-check) of every connection.
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let rss_held = server.rss_kib();
    let still = clients_gauge(server, key).await;

    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    Idle {
        connected,
        rss_before,
        rss_after,
        per_connection_kib: (rss_after as f64 - rss_before as f64) / connected as f64,
        connect_seconds,
        rss_held,
        still: still.unwrap_or(0),
    }
}

/// `switchboard_ws_clients{feed="admin"}` from `GET /metrics`.
async fn clients_gauge(server: &Server, key: &str) -> Option<usize> {
    let metrics = server
        .http
        .get(format!("{}/metrics", server.base))
        .bearer_auth(key)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics
        .lines()
        .find(|l| l.starts_with("switchboard_ws_clients{") && l.contains("\"admin\""))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as usize)
}
