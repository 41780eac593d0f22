//! A fake Bot API on loopback: records every call with its time and
//! answers as told (ok, 429 with `retry_after`, 403, 5xx, or never).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// The one photo the fake serves: an image a browser shows (a 1×1 PNG,
/// which browsers decode whatever type it is served as).
pub const PHOTO: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x04, 0x00, 0x00, 0x00, 0xb5, 0x1c, 0x0c,
    0x02, 0x00, 0x00, 0x00, 0x0b, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64, 0x60, 0x00, 0x00,
    0x00, 0x06, 0x00, 0x02, 0x30, 0x81, 0xd0, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44,
    0xae, 0x42, 0x60, 0x82,
];

/// One call as the fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub at: Instant,
    /// The path's token part (`bot<token>`).
    pub token: String,
    /// The body as sent (multipart for teloxide-core's file methods).
    pub body: String,
    /// A multipart call's file parts: field, file name, content type, bytes.
    pub files: Vec<(String, String, String, Vec<u8>)>,
}

impl Call {
    pub fn chat_id(&self) -> i64 {
        let id = &self.params["chat_id"];
        id.as_i64()
            .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_default()
    }
}

/// How the fake answers one call.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Ok,
    /// 429 with `retry_after` seconds.
    RetryAfter(u64),
    /// 403: the user blocked the bot.
    Blocked,
    /// 502.
    Unavailable,
    /// No answer until the caller gives up.
    Hang,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Answers for the next calls to a chat, in order (then `Ok`).
    script: HashMap<i64, VecDeque<Reply>>,
    /// Updates `getUpdates` hands out until an offset confirms them.
    updates: Vec<Value>,
    next_message_id: i64,
    /// Telegram's limits, when the fake keeps them: so many calls within
    /// a second overall, one call to a chat within this long.
    limits: Option<(usize, Duration)>,
    /// 429s answered for a limit broken.
    limited: usize,
}

pub struct FakeBot {
    pub port: u16,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeBot {
    pub async fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let state = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let state = state.clone();
                async move { answer(&state, &req, &body).await }
            }))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            state,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next calls to `chat` get these answers, in order.
    pub fn script(&self, chat: i64, replies: &[Reply]) {
        let mut state = self.state.lock().unwrap();
        state.script.entry(chat).or_default().extend(replies);
    }

    /// Answers 429 (`retry_after` 1) to a call over `rate` within a second
    /// overall, or to a chat within `per_chat` of its last call, as
    /// Telegram does; with the slack of Telegram's "about 30 a second"
    /// (5 % over the rate, `per_chat` as 90 % of it), since calls leave a
    /// few ms after their turn on these busy cores.
    #[cfg_attr(not(postgres_tests), allow(dead_code))]
    pub fn enforce(&self, rate: usize, per_chat: Duration) {
        self.state.lock().unwrap().limits = Some((rate, per_chat));
    }

    /// How many 429s the fake answered for a limit broken.
    #[cfg_attr(not(postgres_tests), allow(dead_code))]
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    /// Updates for `getUpdates` (kept until a call's `offset` confirms them).
    pub fn queue_updates(&self, updates: &[Value]) {
        self.state
            .lock()
            .unwrap()
            .updates
            .extend_from_slice(updates);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub async fn wait_for_calls(&self, count: usize) -> Vec<Call> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let calls = self.calls();
            if calls.len() >= count {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "the fake Bot API got {} calls of {count}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn answer(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let mut segments = req.path().trim_start_matches('/').splitn(2, '/');
    let token = segments.next().unwrap_or_default().to_owned();
    let method = segments.next().unwrap_or_default().to_owned();
    let now = Instant::now();
    let (params, files) = match req.headers().get("content-type") {
        Some(t)
            if t.to_str()
                .unwrap_or_default()
                .starts_with("multipart/form-data") =>
        {
            form(req, body).await
        }
        _ => (
            serde_json::from_slice(body).unwrap_or(Value::Null),
            Vec::new(),
        ),
    };
    let call = Call {
        method: method.clone(),
        params: params.clone(),
        at: now,
        token,
        body: String::from_utf8_lossy(body).into_owned(),
        files,
    };
    let chat = call.chat_id();
    {
        let mut state = state.lock().unwrap();
        if let Some((rate, per_chat)) = state.limits
            && method.starts_with("send")
        {
            let window = Duration::from_secs(1);
            let recent = state
                .calls
                .iter()
                .rev()
                .take_while(|c| now - c.at < window)
                .count();
            let chat_recent = chat != 0
                && state
                    .calls
                    .iter()
                    .rev()
                    .find(|c| c.chat_id() == chat)
                    .is_some_and(|c| now - c.at < per_chat.mul_f64(0.9));
            if recent as f64 >= rate as f64 * 1.05 || chat_recent {
                state.limited += 1;
                return HttpResponse::TooManyRequests().json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}));
            }
        }
        state.calls.push(call);
    }
    if req.path().starts_with("/file/") {
        // A download: what getFile named.
        return match req.path().ends_with("/photos/file_1.jpg") {
            true => HttpResponse::Ok()
                .content_type("image/jpeg")
                .body(PHOTO.to_vec()),
            false => HttpResponse::NotFound().finish(),
        };
    }
    if method == "getUpdates" {
        return updates(state, &params).await;
    }
    let (reply, message_id) = {
        let mut state = state.lock().unwrap();
        let scripted = state.script.get_mut(&chat).and_then(VecDeque::pop_front);
        let reply = scripted.unwrap_or(Reply::Ok);
        state.next_message_id += 1;
        (reply, state.next_message_id)
    };
    let error = |status: u16, body: Value| {
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
    };
    match reply {
        Reply::Ok => {
            // Telegram's method names are case-insensitive.
            let result = match method.to_ascii_lowercase().as_str() {
                "deletemessage" => json!(true),
                "getfile" if params["file_id"] == "missing" => {
                    return error(
                        400,
                        json!({"ok": false, "error_code": 400, "description": "Bad Request: invalid file_id"}),
                    );
                }
                "getfile" => {
                    json!({"file_id": params["file_id"], "file_unique_id": "u", "file_size": 10, "file_path": "photos/file_1.jpg"})
                }
                "getme" => {
                    json!({"id": 1, "is_bot": true, "first_name": "Bot", "username": "fake_bot"})
                }
                "setwebhook" | "deletewebhook" | "answerprecheckoutquery" => json!(true),
                "createinvoicelink" => json!(format!("https://t.me/$invoice{message_id}")),
                _ => json!({
                    "message_id": message_id,
                    "date": 1_764_590_000,
                    "chat": {"id": chat, "type": if chat < 0 { "group" } else { "private" }},
                    "text": params["text"],
                }),
            };
            HttpResponse::Ok().json(json!({"ok": true, "result": result}))
        }
        Reply::RetryAfter(seconds) => error(
            429,
            json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {seconds}"), "parameters": {"retry_after": seconds}}),
        ),
        Reply::Blocked => error(
            403,
            json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
        ),
        Reply::Unavailable => error(
            502,
            json!({"ok": false, "error_code": 502, "description": "Bad Gateway"}),
        ),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            HttpResponse::Ok().finish()
        }
    }
}

type Files = Vec<(String, String, String, Vec<u8>)>;

/// A multipart body: its text fields as strings, and its file parts.
async fn form(req: &HttpRequest, body: &[u8]) -> (Value, Files) {
    use futures::StreamExt;
    let bytes = web::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok(bytes) });
    let mut form = actix_multipart::Multipart::new(req.headers(), stream);
    let mut params = serde_json::Map::new();
    let mut files = Vec::new();
    while let Some(Ok(mut field)) = form.next().await {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field
            .content_disposition()
            .and_then(|d| d.get_filename())
            .map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let mut data = Vec::new();
        while let Some(Ok(chunk)) = field.next().await {
            data.extend_from_slice(&chunk);
        }
        match filename {
            Some(filename) => files.push((name, filename, content_type.unwrap_or_default(), data)),
            None => {
                params.insert(
                    name,
                    Value::String(String::from_utf8_lossy(&data).into_owned()),
                );
            }
        }
    }
    (Value::Object(params), files)
}

/// `getUpdates`: confirms what is below `offset`, hands out the rest, or
/// after a while (a long poll, shortened) nothing.
async fn updates(state: &Mutex<State>, params: &Value) -> HttpResponse {
    let offset = params["offset"].as_i64().unwrap_or(0);
    let pending = {
        let mut state = state.lock().unwrap();
        state
            .updates
            .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        state.updates.clone()
    };
    if pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    HttpResponse::Ok().json(json!({"ok": true, "result": pending}))
}
