//! A fake Bot API in a process of its own (the benchmark's binary run
//! again with `BENCH_FAKE_BOT` set), so the service's CPU is measured apart
//! from it: it answers every call ok, or enforces Telegram's limits itself
//! (a 429 for a call over the overall rate or a second call to one chat
//! within a second), and tells what it saw at `GET /stats`.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// Set (to the overall limit, 0 for none) in the fake's process.
pub const FAKE_MODE: &str = "BENCH_FAKE_BOT";

/// Runs the fake instead of the benchmark when this process is one.
pub fn run_if_fake() -> bool {
    match std::env::var(FAKE_MODE) {
        Ok(limit) => {
            fake_bot_process(limit.parse().unwrap_or(0));
            true
        }
        Err(_) => false,
    }
}

/// An owner's access token (`telegram:send`), signed in over HTTP.
pub async fn owner_token(
    state: &switchboard::app::AppState,
    http: &reqwest::Client,
    base: &str,
) -> String {
    let password = "correct horse battery staple";
    switchboard::admin::accounts::create(
        &state.db,
        "bench@example.com",
        password,
        switchboard::auth::Role::Owner,
    )
    .await
    .unwrap();
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

/// The fake Bot API in its own process.
pub struct FakeBot {
    pub base: String,
}

/// What the fake saw.
#[derive(Debug)]
pub struct Seen {
    pub calls: u64,
    pub limited: u64,
    pub span_s: f64,
}

impl FakeBot {
    /// A fake enforcing `limit` calls a second overall (0: none) and one a
    /// second per chat.
    pub fn spawn(limit: u32) -> (Self, std::process::Child) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(FAKE_MODE, limit.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap();
        (
            Self {
                base: format!("http://127.0.0.1:{port}"),
            },
            child,
        )
    }

    pub async fn wait_for(&self, calls: u64) -> Seen {
        let http = reqwest::Client::new();
        loop {
            let stats: Value = http
                .get(format!("{}/stats", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ok = stats["ok"].as_u64().unwrap_or(0);
            if ok >= calls {
                return Seen {
                    calls: ok,
                    limited: stats["limited"].as_u64().unwrap_or(0),
                    span_s: stats["span_us"].as_f64().unwrap_or(0.0) / 1e6,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[derive(Default)]
struct FakeState {
    /// Times of the calls answered ok.
    ok: Vec<u64>,
    limited: u64,
    /// Each chat's last answered call.
    chats: HashMap<i64, u64>,
}

fn fake_bot_process(limit: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state: Arc<Mutex<FakeState>> = Arc::default();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let calls = shared.clone();
            let stats = shared.clone();
            App::new()
                .route(
                    "/stats",
                    web::get().to(move || {
                        let stats = stats.clone();
                        async move {
                            let s = stats.lock().unwrap();
                            let span = match (s.ok.iter().min(), s.ok.iter().max()) {
                                (Some(a), Some(b)) => b - a,
                                _ => 0,
                            };
                            HttpResponse::Ok().json(
                                json!({"ok": s.ok.len(), "limited": s.limited, "span_us": span}),
                            )
                        }
                    }),
                )
                .default_service(web::to(move |body: web::Bytes| {
                    let calls = calls.clone();
                    async move {
                        let at = now_us();
                        let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let chat = params["chat_id"].as_i64().unwrap_or(0);
                        let mut s = calls.lock().unwrap();
                        let second_ago = at.saturating_sub(1_000_000);
                        let over_chat = s.chats.get(&chat).is_some_and(|t| *t > second_ago);
                        // Telegram's overall limit, with the 5 % its "about
                        // 30 a second" leaves.
                        let over_all = limit > 0 && {
                            let recent = s.ok.iter().rev().take_while(|t| **t > second_ago).count();
                            recent as f64 >= f64::from(limit) * 1.05
                        };
                        if over_chat || over_all {
                            s.limited += 1;
                            return HttpResponse::TooManyRequests().json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}));
                        }
                        s.ok.push(at);
                        s.chats.insert(chat, at);
                        HttpResponse::Ok().json(json!({"ok": true, "result": {"message_id": 1, "date": 0, "chat": {"id": chat, "type": "private"}}}))
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
