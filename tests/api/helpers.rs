//! Test harness: a fresh database per test and the app started on port 0.

use std::{sync::Arc, time::Duration};

use switchboard::{
    app::{AppState, Application},
    config::{Config, DatabaseConfig},
};

/// Runs a test body once per backend: `sqlite` always, `postgres` when the
/// suite was built with `TEST_DATABASE_URL` set.
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($db:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::helpers::TestDb::new($crate::helpers::Kind::Sqlite).await;
                $body
            }

            #[cfg(postgres_tests)]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let $db = $crate::helpers::TestDb::new($crate::helpers::Kind::Postgres).await;
                $body
            }
        }
    };
}
pub(crate) use both_backends;

/// Held by tests that load Postgres (or both cores) heavily and by tests
/// that measure latency or a rate on it, so the two never overlap. Transaction ids are cluster-wide:
/// another test's open write transactions hold back this test's log horizon.
#[allow(dead_code)]
pub static EXCLUSIVE_POSTGRES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    #[allow(dead_code)]
    Postgres,
}

/// A database that exists for one test: a temporary SQLite file, or a
/// Postgres database created for the test and dropped after it.
pub struct TestDb {
    pub config: DatabaseConfig,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// `sqlite` or `postgres`: names what a test writes under `target/`.
    pub fn kind_name(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("switchboard.db");
                Self {
                    config: DatabaseConfig::Sqlite { path },
                    _dir: Some(dir),
                    postgres: None,
                }
            }
            Kind::Postgres => {
                let admin_url = std::env::var("TEST_DATABASE_URL")
                    .expect("TEST_DATABASE_URL must be set for the Postgres suite");
                let name = format!("switchboard_test_{}", uuid_simple());
                let mut conn = pg_connect(&admin_url).await;
                sqlx_execute(&mut conn, &format!("CREATE DATABASE {name}")).await;
                let url = replace_database(&admin_url, &name);
                Self {
                    config: DatabaseConfig::Postgres {
                        url,
                        max_connections: 10,
                    },
                    _dir: None,
                    postgres: Some((admin_url, name)),
                }
            }
        }
    }

    #[cfg_attr(not(postgres_tests), allow(dead_code))]
    /// The same database with a larger pool (for tests with many writers).
    pub fn with_max_connections(&self, n: u32) -> DatabaseConfig {
        match &self.config {
            DatabaseConfig::Postgres { url, .. } => DatabaseConfig::Postgres {
                url: url.clone(),
                max_connections: n,
            },
            other => other.clone(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs outside async context: use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut conn = pg_connect(&admin_url).await;
                    sqlx_execute(
                        &mut conn,
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    )
                    .await;
                });
            })
            .join();
        }
    }
}

async fn pg_connect(url: &str) -> sea_orm::sqlx::PgConnection {
    use sea_orm::sqlx::Connection;
    sea_orm::sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to TEST_DATABASE_URL: {e}"))
}

async fn sqlx_execute(conn: &mut sea_orm::sqlx::PgConnection, sql: &str) {
    use sea_orm::sqlx::{AssertSqlSafe, Executor};
    // Test-generated names only; no outside input reaches this string.
    conn.execute(AssertSqlSafe(sql.to_owned())).await.unwrap();
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

fn uuid_simple() -> String {
    switchboard::ids::EventId::new()
        .as_uuid()
        .simple()
        .to_string()
}

/// The JWT secret every test app signs with (tests forge tokens with it).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub use crate::telegram_signing::BOT_TOKEN;

/// A configuration for tests: port 0, one HTTP worker, known secrets,
/// generous rate limits (the rate-limit test sets its own).
/// Where the tests' Bot API is unless a test starts a fake one: nothing
/// listens there (port 9, discard), so no send ever leaves the machine.
pub const CLOSED_BOT_API: &str = "http://127.0.0.1:9";

pub fn test_config(database: DatabaseConfig) -> Config {
    let mut config = Config::from_lookup(|name| match name {
        "SWITCHBOARD_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        "SWITCHBOARD_TELEGRAM_BOT_TOKEN" => Some(BOT_TOKEN.to_owned()),
        "SWITCHBOARD_TELEGRAM_BOT_USERNAME" => Some("switchboard_test_bot".to_owned()),
        // Never Telegram's own: a closed port unless a test starts a fake.
        "SWITCHBOARD_TELEGRAM_API_URL" => Some(CLOSED_BOT_API.to_owned()),
        "SWITCHBOARD_AUTH_RATE_PER_IP" => Some("10000".to_owned()),
        "SWITCHBOARD_AUTH_RATE_PER_ACCOUNT" => Some("10000".to_owned()),
        _ => None,
    })
    .unwrap();
    config.database = database;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http_workers = 1;
    config.shutdown_timeout = Duration::from_secs(5);
    // The tests' own events (appended straight to the store).
    config.webhooks.extra_event_types = vec!["load.tick".to_owned()];
    config
}

/// Everything the app logs during the test run, captured for the tests
/// that check what logs must never contain.
pub static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    switchboard::app::install_crypto_provider();
    use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("TEST_LOG")
            .unwrap_or_else(|_| "debug,sqlx=warn,sea_orm=warn,h2=warn,hyper=warn".to_owned());
        let _ = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(|| CaptureWriter),
            )
            .try_init();
    });
}

/// The captured log text so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// A running app.
/// The password of the admins [`TestApp::admin_with_role`] creates.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub address: String,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(test_config(db.config.clone())).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        // Logs are captured; `TEST_LOG=debug cargo test …` also prints them.
        init_logs();
        let app = Application::build(config).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state();
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            address,
            state,
            client: reqwest::Client::new(),
            handle,
            task: Some(task),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    /// Any request, with an optional bearer token and JSON body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, token, Some(body))
            .await
    }

    pub async fn get_with(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Creates an admin account directly (its password is
    /// [`ADMIN_PASSWORD`]) and logs it in; returns the tokens.
    pub async fn admin_with_role(&self, email: &str, role: switchboard::auth::Role) -> Tokens {
        switchboard::admin::accounts::create(&self.state.db, email, ADMIN_PASSWORD, role)
            .await
            .unwrap();
        self.admin_login(email, ADMIN_PASSWORD).await
    }

    pub async fn admin_login(&self, email: &str, password: &str) -> Tokens {
        let response = self
            .post(
                "/api/v1/auth/login",
                None,
                serde_json::json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200, "admin login failed");
        response.json().await.unwrap()
    }

    pub async fn healthz(&self) -> reqwest::Response {
        self.get("/healthz").await
    }

    pub async fn readyz(&self) -> reqwest::Response {
        self.get("/readyz").await
    }

    /// Stops the server gracefully and waits for its background tasks.
    pub async fn stop(mut self) {
        self.state.closing.cancel();
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// A local SMTP server that accepts every message and keeps it.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On a given port (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                    let mut in_data = false;
                    let mut data = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                store.lock().unwrap().push(std::mem::take(&mut data));
                                let _ = write.write_all(b"250 queued\r\n").await;
                            } else {
                                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                                data.push_str("\r\n");
                            }
                            continue;
                        }
                        let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250-sink\r\n250 AUTH PLAIN LOGIN\r\n",
                            "AUTH" => b"235 accepted\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go on\r\n"
                            }
                            "QUIT" => {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                break;
                            }
                            _ => b"250 ok\r\n",
                        };
                        let _ = write.write_all(reply).await;
                    }
                });
            }
        });
        Self { port, messages }
    }

    /// The configuration change that sends the app's mail here.
    pub fn configure(&self, config: &mut Config) {
        config.mail.smtp_host = Some("127.0.0.1".to_owned());
        config.mail.smtp_port = self.port;
        config.mail.smtp_tls = switchboard::config::SmtpTls::None;
    }

    /// Every message received so far, decoded.
    pub fn received(&self) -> Vec<ReceivedEmail> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|raw| {
                let message = mail_parser::MessageParser::default().parse(raw.as_bytes())?;
                Some(ReceivedEmail {
                    to: message
                        .to()
                        .and_then(|to| to.first())
                        .and_then(|a| a.address())
                        .unwrap_or_default()
                        .to_owned(),
                    subject: message.subject().unwrap_or_default().to_owned(),
                    text: message
                        .body_text(0)
                        .map(|t| t.into_owned())
                        .unwrap_or_default(),
                    html: message
                        .body_html(0)
                        .map(|t| t.into_owned())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The first message to `recipient` whose plain text contains `needle`.
    pub async fn wait_for(&self, recipient: &str, needle: &str) -> ReceivedEmail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(email) = self
                .received()
                .into_iter()
                .find(|m| m.to == recipient && m.text.contains(needle))
            {
                return email;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no e-mail to {recipient} containing {needle:?} arrived; got {:?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn count_to(&self, recipient: &str) -> usize {
        self.received().iter().filter(|m| m.to == recipient).count()
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The `token` parameter of the first link in an e-mail.
pub fn token_from_email(email: &ReceivedEmail) -> String {
    let text = &email.text;
    let start = text.find("token=").expect("no token in the e-mail") + "token=".len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Waits (20 s at most) until `check` holds.
pub async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a response is problem+json with the given status and code.
pub async fn assert_problem(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "problem body: {body}");
    assert_eq!(body["status"], status);
    body
}

/// A WebSocket client of the live feeds.
pub struct WsClient {
    stream: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

/// How a feed refused or ended a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEnd {
    Closed(u16),
    /// The connection ended without a close frame.
    Dropped,
}

impl TestApp {
    /// Opens `path` (`/ws?…`) with `Authorization: Bearer <token>` if given;
    /// `Err(status)` when refused before the upgrade.
    pub async fn ws(&self, path: &str, token: Option<&str>) -> Result<WsClient, u16> {
        self.ws_with_buffer(path, token, None).await
    }

    /// Like [`TestApp::ws`], with a small receive buffer (a client whose
    /// socket fills up quickly when it stops reading).
    pub async fn ws_with_buffer(
        &self,
        path: &str,
        token: Option<&str>,
        recv_buffer: Option<u32>,
    ) -> Result<WsClient, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("{}{path}", self.address.replace("http://", "ws://"));
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket
            .connect(self.address.trim_start_matches("http://").parse().unwrap())
            .await
            .unwrap();
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((stream, _)) => Ok(WsClient { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("WebSocket connection failed: {e}"),
        }
    }
}

impl WsClient {
    /// The next text message as JSON (20 s at most); panics if the
    /// connection ends first.
    pub async fn next_json(&mut self) -> serde_json::Value {
        match self.next_message().await {
            Ok(value) => value,
            Err(end) => panic!("the feed ended ({end:?}) while a message was expected"),
        }
    }

    /// The next text message, or how the connection ended.
    pub async fn next_message(&mut self) -> Result<serde_json::Value, WsEnd> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(20), self.stream.next())
                .await
                .expect("no message from the feed within 20 s");
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("feed messages are JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(WsEnd::Dropped, |f| WsEnd::Closed(f.code.into())));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(WsEnd::Dropped),
            }
        }
    }

    /// The next event envelope, skipping protocol messages.
    pub async fn next_event(&mut self) -> serde_json::Value {
        loop {
            let message = self.next_json().await;
            if message.get("position").is_some() {
                return message;
            }
        }
    }

    /// Reads until the server closes; returns the close code and the
    /// events received on the way.
    pub async fn until_closed(&mut self) -> (WsEnd, Vec<serde_json::Value>) {
        let mut events = Vec::new();
        loop {
            match self.next_message().await {
                Ok(message) if message.get("position").is_some() => events.push(message),
                Ok(_) => {}
                Err(end) => return (end, events),
            }
        }
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        use futures::SinkExt;
        self.stream
            .send(tokio_tungstenite::tungstenite::Message::text(
                value.to_string(),
            ))
            .await
            .unwrap();
    }

    /// Sends a message or a raw frame as it is.
    pub async fn send_raw(&mut self, message: tokio_tungstenite::tungstenite::Message) {
        use futures::SinkExt;
        self.stream.send(message).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Every event in the log, read once no committed event is held back
/// (`pending`: a transaction elsewhere may hold the readable head back for
/// a moment; up to 2 s).
pub async fn whole_log(
    store: &switchboard::events::EventStore,
) -> Vec<switchboard::events::RecordedEvent> {
    let mut page = store
        .read_all(switchboard::events::Cursor::START, 10_000)
        .await
        .unwrap();
    for _ in 0..100 {
        if !page.pending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        page = store
            .read_all(switchboard::events::Cursor::START, 10_000)
            .await
            .unwrap();
    }
    page.events
}
