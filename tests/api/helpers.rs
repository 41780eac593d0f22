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

/// Held by tests that load Postgres heavily and by tests that measure
/// latency on it, so the two never overlap. Transaction ids are cluster-wide:
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

/// A configuration for tests: port 0, one HTTP worker, quiet logs.
pub fn test_config(database: DatabaseConfig) -> Config {
    let mut config = Config::from_lookup(|_| None).unwrap();
    config.database = database;
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.http_workers = 1;
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

/// A running app.
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
        // `TEST_LOG=debug cargo test …` shows the app's logs.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            switchboard::telemetry::init(switchboard::config::LogFormat::Pretty, &filter);
        }
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

    pub async fn healthz(&self) -> reqwest::Response {
        self.get("/healthz").await
    }

    pub async fn readyz(&self) -> reqwest::Response {
        self.get("/readyz").await
    }

    /// Stops the server gracefully and waits for its background tasks.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
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
