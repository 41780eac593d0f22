//! Webhooks against a real local HTTP receiver: signatures, retries,
//! crash safety, leases across instances, ordered delivery, the SSRF guard,
//! endpoint management and its permissions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard::{
    auth::Role,
    config::Config,
    events::{Actor, Append, EventType, ExpectedVersion, NewEvent, StreamName},
};

use crate::helpers::{TestApp, TestDb, assert_problem, both_backends, test_config, wait_until};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The `webhook-id` header: the event's id (also in the envelope, but
    /// not in a bare payload).
    pub fn event_id(&self) -> String {
        self.headers["webhook-id"].clone()
    }
}

/// Decides the answer to each request: (status, extra headers).
type Behaviour = Arc<dyn Fn(&Received, usize) -> (u16, Vec<(String, String)>) + Send + Sync>;

/// A local HTTP server that records every request and answers as told.
pub struct Receiver {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::start_on(0, behaviour).await
    }

    pub async fn ok() -> Self {
        Self::start(Arc::new(|_, _| (200, vec![]))).await
    }

    pub async fn start_on(port: u16, behaviour: Behaviour) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = received.clone();
        let server = HttpServer::new(move || {
            let seen = seen.clone();
            let behaviour = behaviour.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let seen = seen.clone();
                let behaviour = behaviour.clone();
                async move {
                    let request = Received {
                        headers: req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect(),
                        body: body.to_vec(),
                    };
                    let id = request.headers.get("webhook-id");
                    let nth = {
                        let mut seen = seen.lock().unwrap();
                        let nth = seen
                            .iter()
                            .filter(|r| r.headers.get("webhook-id") == id)
                            .count();
                        seen.push(request.clone());
                        nth
                    };
                    let (status, headers) = behaviour(&request, nth);
                    let mut response =
                        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    for (k, v) in headers {
                        response.insert_header((k, v));
                    }
                    response.body("thanks")
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            received,
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Distinct event ids received with a 2xx-bound request (all requests).
    pub fn event_ids(&self) -> Vec<String> {
        self.received().iter().map(Received::event_id).collect()
    }

    pub async fn wait_for_events(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut ids = self.event_ids();
            ids.sort();
            ids.dedup();
            if ids.len() >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} events arrived",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Test configuration: loopback allowed, a short retry schedule.
pub fn webhook_config(db: &TestDb, schedule: &str) -> Config {
    let mut config = test_config(db.config.clone());
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config.webhooks.retry_schedule = schedule
        .split(',')
        .map(|d| switchboard::config::parse_duration(d).unwrap())
        .collect();
    config
}

pub async fn create_endpoint(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app.post("/api/v1/admin/webhooks", Some(token), body).await;
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

async fn append(app: &TestApp, stream: &str, n: usize) -> Vec<String> {
    let stream = StreamName::parse(stream).unwrap();
    let version = app.state.store.stream_version(&stream).await.unwrap();
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    let events = (0..n)
        .map(|i| {
            NewEvent::new(
                EventType::parse("load.tick").unwrap(),
                json!({"i": i}),
                Actor::system(),
            )
        })
        .collect();
    app.state
        .store
        .append(vec![Append::new(stream.clone(), expected, events)], None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect()
}

/// The Standard Webhooks check, written from the specification: HMAC-SHA256
/// with the base64-decoded secret over `{id}.{timestamp}.{body}`.
fn verify_standard(secret: &str, headers: &HashMap<String, String>, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(headers["webhook-id"].as_bytes());
    mac.update(b".");
    mac.update(headers["webhook-timestamp"].as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}

fn verify_legacy(secret: &str, headers: &HashMap<String, String>, body: &[u8]) -> bool {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    headers["x-webhook-signature"] == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

both_backends! {
    async fn a_delivery_is_the_envelope_signed_both_ways_over_the_exact_bytes(db) {
        let receiver = Receiver::ok().await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s,100ms")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({
            "name": "CRM", "url": receiver.url(), "event_types": ["user.*"],
            "headers": {"Authorization": "Bearer crm-token"}
        })).await;
        let secret = endpoint["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        let raw = base64::engine::general_purpose::STANDARD.decode(&secret[6..]).unwrap();
        assert!(raw.len() >= 24);

        crate::tickets::cabinet_user(&app, 1).await;
        append(&app, "load:1", 1).await; // not a user.* event: not delivered
        receiver.wait_for_events(1).await;
        let request = &receiver.received()[0];
        let body = request.json();
        assert_eq!(body["type"], "user.created");
        for field in ["id", "position", "cursor", "stream", "version", "timestamp", "actor", "payload"] {
            assert!(body.get(field).is_some(), "{field} missing from {body}");
        }
        assert_eq!(request.headers["webhook-id"], body["id"].as_str().unwrap());
        assert_eq!(request.headers["x-webhook-id"], body["id"].as_str().unwrap());
        assert_eq!(request.headers["x-webhook-event"], "user.created");
        let timestamp: i64 = request.headers["webhook-timestamp"].parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
        assert!(verify_standard(&secret, &request.headers, &request.body));
        assert!(verify_legacy(&secret, &request.headers, &request.body));
        assert!(!verify_standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &request.headers, &request.body));
        assert_eq!(request.headers["authorization"], "Bearer crm-token");
        assert_eq!(request.headers["content-type"], "application/json");

        // Recorded as delivered, with the attempt.
        let id = endpoint["id"].as_str().unwrap();
        let deliveries: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}/deliveries"), &owner.access_token).await.json().await.unwrap();
        wait_until(|| async {
            let d: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}/deliveries?status=delivered"), &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 1
        }).await;
        assert_eq!(deliveries["items"].as_array().unwrap().len(), 1, "only the user.* event: {deliveries}");

        // The secret is encrypted at rest.
        let rows = raw_secrets(&app).await;
        assert!(!rows.iter().any(|r| r.contains(&secret[6..])), "{rows:?}");
        app.stop().await;
        receiver.stop().await;
    }
}

async fn raw_secrets(app: &TestApp) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let rows = app
        .state
        .db
        .conn()
        .query_all_raw(Statement::from_string(
            app.state.db.database_backend(),
            "SELECT secret FROM webhook_endpoints",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "secret").unwrap())
        .collect()
}

both_backends! {
    async fn a_receiver_that_is_down_then_up_gets_every_event_on_schedule(db) {
        // A port with nothing listening on it yet.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let app = TestApp::spawn_with(webhook_config(&db, "0s,300ms,600ms,900ms,1200ms,1500ms,20s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({
            "name": "down", "url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["load.*"]
        })).await;
        let id = endpoint["id"].as_str().unwrap().to_owned();
        let mut ids = append(&app, "load:a", 5).await;
        ids.sort();

        // Attempts fail with a connection error, spaced by the schedule.
        let path = format!("/api/v1/admin/webhooks/{id}/deliveries");
        wait_until(|| async {
            let d: Value = app.get_with(&path, &owner.access_token).await.json().await.unwrap();
            // The attempt log, not the counter: a claim counts an attempt
            // before its outcome is written.
            d["items"].as_array().unwrap().iter().all(|d| d["attempt_log"].as_array().unwrap().len() >= 3)
        }).await;
        let d: Value = app.get_with(&path, &owner.access_token).await.json().await.unwrap();
        for delivery in d["items"].as_array().unwrap() {
            assert_eq!(delivery["status"], "pending");
            let log = delivery["attempt_log"].as_array().unwrap();
            assert!(log[0]["error"].as_str().unwrap().contains("connect"), "{log:?}");
            let at = |i: usize| chrono::DateTime::parse_from_rfc3339(log[i]["at"].as_str().unwrap()).unwrap();
            // 300 ms then 600 ms, ±20 % jitter.
            assert!((at(1) - at(0)).num_milliseconds() >= 240, "{log:?}");
            assert!((at(2) - at(1)).num_milliseconds() >= 480, "{log:?}");
        }

        // The receiver comes up: every event arrives.
        let receiver = Receiver::start_on(port, Arc::new(|_, _| (200, vec![]))).await;
        receiver.wait_for_events(5).await;
        let mut got = receiver.event_ids();
        got.sort();
        got.dedup();
        assert_eq!(got, ids);
        wait_until(|| async {
            let d: Value = app.get_with(&format!("{path}?status=delivered"), &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 5
        }).await;
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn a_failing_receiver_exhausts_the_schedule_then_recover_and_resend_queue_again(db) {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = fail.clone();
        let receiver = Receiver::start(Arc::new(move |_, _| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) { (500, vec![]) } else { (204, vec![]) }
        })).await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s,50ms,50ms")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({"name": "x", "url": receiver.url(), "event_types": ["load.tick"]})).await;
        let id = endpoint["id"].as_str().unwrap().to_owned();
        let ids = append(&app, "load:a", 3).await;
        let failed = format!("/api/v1/admin/webhooks/{id}/deliveries?status=failed");
        wait_until(|| async {
            let d: Value = app.get_with(&failed, &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 3
        }).await;
        let d: Value = app.get_with(&failed, &owner.access_token).await.json().await.unwrap();
        for delivery in d["items"].as_array().unwrap() {
            assert_eq!(delivery["attempts"], 3, "the schedule has three attempts");
            assert_eq!(delivery["attempt_log"][2]["response_status"], 500);
            assert_eq!(delivery["attempt_log"][2]["response_body"], "thanks");
        }
        let stats: Value = app.get_with("/api/v1/admin/webhooks/stats", &owner.access_token).await.json().await.unwrap();
        assert_eq!(stats["overall"]["failed"], 3);
        assert_eq!(stats["overall"]["success_rate"], 0.0);
        let endpoint_now: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}"), &owner.access_token).await.json().await.unwrap();
        assert!(endpoint_now["failing_since"].is_string());

        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let resend = app.post(&format!("/api/v1/admin/webhooks/{id}/deliveries/{}/resend", ids[0]), Some(&owner.access_token), json!({})).await;
        assert_eq!(resend.status().as_u16(), 202);
        let delivered = format!("/api/v1/admin/webhooks/{id}/deliveries?status=delivered");
        wait_until(|| async {
            let d: Value = app.get_with(&delivered, &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 1
        }).await;
        let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let recovered: Value = app.post(&format!("/api/v1/admin/webhooks/{id}/recover"), Some(&owner.access_token), json!({"since": since})).await.json().await.unwrap();
        assert_eq!(recovered["requeued"], 2);
        wait_until(|| async {
            let d: Value = app.get_with(&delivered, &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 3
        }).await;
        let endpoint_now: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}"), &owner.access_token).await.json().await.unwrap();
        assert!(endpoint_now["failing_since"].is_null(), "a success clears the failing state");
        let stats: Value = app.get_with("/api/v1/admin/webhooks/stats", &owner.access_token).await.json().await.unwrap();
        assert_eq!(stats["endpoints"][0]["delivered"], 3);
        assert!(stats["endpoints"][0]["latency_ms"]["p99"].is_number());
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn gone_disables_the_endpoint_and_retry_after_is_honoured(db) {
        let receiver = Receiver::start(Arc::new(|request: &Received, nth| {
            let path_gone = request.headers.get("x-test").is_some_and(|v| v == "gone");
            if path_gone {
                (410, vec![])
            } else if nth == 0 {
                (429, vec![("Retry-After".to_owned(), "2".to_owned())])
            } else {
                (200, vec![])
            }
        })).await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s,100ms,100ms")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let gone = create_endpoint(&app, &owner.access_token, json!({"name": "gone", "url": receiver.url(), "event_types": ["load.*"], "headers": {"X-Test": "gone"}})).await;
        let slow = create_endpoint(&app, &owner.access_token, json!({"name": "slow", "url": receiver.url(), "event_types": ["load.*"]})).await;
        append(&app, "load:a", 1).await;

        let gone_path = format!("/api/v1/admin/webhooks/{}", gone["id"].as_str().unwrap());
        wait_until(|| async {
            let e: Value = app.get_with(&gone_path, &owner.access_token).await.json().await.unwrap();
            e["enabled"] == false
        }).await;
        let e: Value = app.get_with(&gone_path, &owner.access_token).await.json().await.unwrap();
        assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
        // The operational event is in the log.
        wait_until(|| async {
            let events: Value = app.get_with("/api/v1/admin/events?type=webhook.*", &owner.access_token).await.json().await.unwrap();
            events["events"].as_array().unwrap().iter().any(|e| e["type"] == "webhook.endpoint_disabled")
        }).await;
        // A disabled endpoint gets no new deliveries.
        append(&app, "load:b", 1).await;

        let slow_id = slow["id"].as_str().unwrap();
        let delivered = format!("/api/v1/admin/webhooks/{slow_id}/deliveries?status=delivered");
        wait_until(|| async {
            let d: Value = app.get_with(&delivered, &owner.access_token).await.json().await.unwrap();
            d["items"].as_array().unwrap().len() == 2
        }).await;
        let d: Value = app.get_with(&format!("/api/v1/admin/webhooks/{slow_id}/deliveries"), &owner.access_token).await.json().await.unwrap();
        let first = d["items"].as_array().unwrap().iter().find(|d| d["attempts"] == 2).expect("the 429'd delivery");
        let log = first["attempt_log"].as_array().unwrap();
        let at = |i: usize| chrono::DateTime::parse_from_rfc3339(log[i]["at"].as_str().unwrap()).unwrap();
        assert!((at(1) - at(0)).num_milliseconds() >= 1900, "Retry-After: 2 was honoured: {log:?}");
        let gone_deliveries: Value = app.get_with(&format!("{gone_path}/deliveries"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(gone_deliveries["items"].as_array().unwrap().len(), 1);
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn a_rotated_secret_keeps_signing_next_to_the_new_one_during_its_grace(db) {
        let receiver = Receiver::ok().await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({"name": "r", "url": receiver.url(), "event_types": ["load.*"]})).await;
        let id = endpoint["id"].as_str().unwrap();
        let old = endpoint["secret"].as_str().unwrap().to_owned();
        let rotated: Value = app.post(&format!("/api/v1/admin/webhooks/{id}/rotate-secret"), Some(&owner.access_token), json!({})).await.json().await.unwrap();
        let new = rotated["secret"].as_str().unwrap().to_owned();
        assert_ne!(new, old);
        assert!(rotated["previous_secret_valid_until"].is_string());
        let shown: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}/secret"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(shown["secret"], new.as_str());

        append(&app, "load:a", 1).await;
        receiver.wait_for_events(1).await;
        let request = &receiver.received()[0];
        assert_eq!(request.headers["webhook-signature"].split(' ').count(), 2);
        assert!(verify_standard(&new, &request.headers, &request.body));
        assert!(verify_standard(&old, &request.headers, &request.body));
        assert!(verify_legacy(&new, &request.headers, &request.body));

        // Without grace the old secret stops at once.
        app.post(&format!("/api/v1/admin/webhooks/{id}/rotate-secret"), Some(&owner.access_token), json!({"grace_seconds": 0})).await;
        append(&app, "load:b", 1).await;
        receiver.wait_for_events(2).await;
        let request = receiver.received().into_iter().find(|r| r.json()["stream"] == "load:b").unwrap();
        assert_eq!(request.headers["webhook-signature"].split(' ').count(), 1);
        assert!(!verify_standard(&new, &request.headers, &request.body));

        // The test event goes out at once and reports the answer.
        let test: Value = app.post(&format!("/api/v1/admin/webhooks/{id}/test"), Some(&owner.access_token), json!({})).await.json().await.unwrap();
        assert_eq!(test["success"], true);
        assert_eq!(test["response_status"], 200);
        assert!(receiver.received().iter().any(|r| r.json()["type"] == "webhook.test"));
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn internal_addresses_are_refused_at_creation_and_at_delivery(db) {
        let receiver = Receiver::ok().await;
        // Without an allow-list.
        let mut config = test_config(db.config.clone());
        config.webhooks.retry_schedule = vec![Duration::ZERO];
        let app = TestApp::spawn_with(config.clone()).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        for url in ["http://169.254.169.254/latest/meta-data", "http://10.0.0.1/hook", "http://localhost:8080/hook", "http://[::1]/", receiver.url().as_str()] {
            let response = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "x", "url": url})).await;
            let body = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(body["field"], "url", "{url}");
        }
        app.stop().await;

        // Created while loopback was allowed, delivered after it no longer is.
        let allowed = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let endpoint = create_endpoint(&allowed, &owner.access_token, json!({"name": "x", "url": receiver.url(), "event_types": ["load.*"]})).await;
        let localhost = create_endpoint(&allowed, &owner.access_token, json!({"name": "y", "url": format!("http://localhost:{}/hook", receiver.port), "event_types": ["load.*"]})).await;
        allowed.stop().await;
        let app = TestApp::spawn_with(config).await;
        append(&app, "load:a", 1).await;
        for endpoint in [&endpoint, &localhost] {
            let path = format!("/api/v1/admin/webhooks/{}/deliveries?status=failed", endpoint["id"].as_str().unwrap());
            wait_until(|| async {
                let d: Value = app.get_with(&path, &owner.access_token).await.json().await.unwrap();
                d["items"].as_array().unwrap().len() == 1
            }).await;
            let d: Value = app.get_with(&path, &owner.access_token).await.json().await.unwrap();
            let error = d["items"][0]["last_error"].as_str().unwrap();
            assert!(error.contains("internal"), "{error}");
        }
        assert!(receiver.received().is_empty(), "nothing reached the internal address");
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn webhook_routes_need_webhooks_manage_and_refuse_bad_input(db) {
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let user = crate::tickets::cabinet_user(&app, 3).await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "k", "scopes": ["webhooks:manage"]})).await.json().await.unwrap();
        let key = key["secret"].as_str().unwrap().to_owned();
        let endpoint = create_endpoint(&app, &key, json!({"name": "by key", "url": "http://127.0.0.1:9/hook"})).await;
        let id = endpoint["id"].as_str().unwrap().to_owned();
        let event = uuid::Uuid::now_v7();
        let routes: Vec<(Method, String, Option<Value>, u16)> = vec![
            (Method::GET, "/api/v1/admin/webhooks".into(), None, 200),
            (Method::POST, "/api/v1/admin/webhooks".into(), Some(json!({"name": "n", "url": "http://127.0.0.1:9/"})), 201),
            (Method::GET, "/api/v1/admin/webhooks/stats".into(), None, 200),
            (Method::GET, format!("/api/v1/admin/webhooks/{id}"), None, 200),
            (Method::PATCH, format!("/api/v1/admin/webhooks/{id}"), Some(json!({"description": "d"})), 200),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/disable"), None, 200),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/enable"), None, 200),
            (Method::GET, format!("/api/v1/admin/webhooks/{id}/secret"), None, 200),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/rotate-secret"), None, 200),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/test"), None, 200),
            (Method::GET, format!("/api/v1/admin/webhooks/{id}/deliveries"), None, 200),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/deliveries/{event}/resend"), None, 404),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/recover"), Some(json!({"since": "2026-01-01T00:00:00Z"})), 200),
            (Method::GET, format!("/api/v1/admin/webhooks/{id}/backfill"), None, 404),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/backfill/cancel"), None, 404),
            (Method::POST, format!("/api/v1/admin/webhooks/{id}/backfill"), Some(json!({"since": "2026-01-01T00:00:00Z"})), 202),
        ];
        for (method, path, body, through) in &routes {
            let label = format!("{method} {path}");
            assert_eq!(app.request(method.clone(), path, None, body.clone()).await.status().as_u16(), 401, "{label} without a token");
            assert_eq!(app.request(method.clone(), path, Some(&user.access_token), body.clone()).await.status().as_u16(), 401, "{label} as a cabinet user");
            for (what, token) in crate::authorization::forged(&owner.access_token) {
                assert_eq!(app.request(method.clone(), path, Some(&token), body.clone()).await.status().as_u16(), 401, "{label} with a token {what}");
            }
            assert_eq!(app.request(method.clone(), path, Some(&viewer.access_token), body.clone()).await.status().as_u16(), 403, "{label} as a viewer");
            assert_eq!(app.request(method.clone(), path, Some(&owner.access_token), body.clone()).await.status().as_u16(), *through, "{label} as the owner");
        }
        let delete = app.request(Method::DELETE, &format!("/api/v1/admin/webhooks/{id}"), Some(&viewer.access_token), None).await;
        assert_eq!(delete.status().as_u16(), 403);
        let delete = app.request(Method::DELETE, &format!("/api/v1/admin/webhooks/{id}"), Some(&key), None).await;
        assert_eq!(delete.status().as_u16(), 204);
        let gone = app.get_with(&format!("/api/v1/admin/webhooks/{id}"), &owner.access_token).await;
        assert_problem(gone, 404, "not_found").await;

        // Bad input: a problem naming the field, never a 500.
        let bad: Vec<(Value, &str)> = vec![
            (json!({"name": "", "url": "http://127.0.0.1:9/"}), "name"),
            (json!({"name": "x", "url": "not a url"}), "url"),
            (json!({"name": "x", "url": "ftp://127.0.0.1/"}), "url"),
            (json!({"name": "x", "url": format!("http://127.0.0.1/{}", "a".repeat(3000))}), "url"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "event_types": []}), "event_types"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "event_types": ["Ticket.*"]}), "event_types"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "headers": {"webhook-signature": "x"}}), "headers"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "headers": {"bad header": "x"}}), "headers"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "headers": {"x-a": "line\nbreak"}}), "headers"),
            (json!({"name": "x", "url": "http://127.0.0.1:9/", "description": "d".repeat(1001)}), "description"),
        ];
        for (body, field) in bad {
            let response = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), body.clone()).await;
            let problem = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}");
        }
        for body in [json!({"name": 5, "url": "x"}), json!({"url": "http://127.0.0.1:9/"}), json!({"name": "x", "url": "http://127.0.0.1:9/", "extra": 1})] {
            let status = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), body).await.status().as_u16();
            assert!(status == 400 || status == 422, "{status}");
        }
        let other = create_endpoint(&app, &owner.access_token, json!({"name": "o", "url": "http://127.0.0.1:9/"})).await;
        let oid = other["id"].as_str().unwrap();
        for (path, what) in [
            (format!("/api/v1/admin/webhooks/{oid}/deliveries?status=lost"), 422),
            (format!("/api/v1/admin/webhooks/{oid}/deliveries?limit=100000"), 422),
            ("/api/v1/admin/webhooks?limit=0".to_owned(), 422),
            ("/api/v1/admin/webhooks/not-a-uuid".to_owned(), 404),
        ] {
            assert_eq!(app.get_with(&path, &owner.access_token).await.status().as_u16(), what, "{path}");
        }
        let backwards = app.post(&format!("/api/v1/admin/webhooks/{oid}/recover"), Some(&owner.access_token), json!({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})).await;
        assert_problem(backwards, 422, "invalid_field").await;
        let long_grace = app.post(&format!("/api/v1/admin/webhooks/{oid}/rotate-secret"), Some(&owner.access_token), json!({"grace_seconds": 100000000})).await;
        assert_problem(long_grace, 422, "invalid_field").await;
        app.stop().await;
    }
}

/// The log's `load.tick` event ids, in log order.
async fn load_ids_in_log_order(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = switchboard::events::Cursor::START;
    loop {
        let page = app.state.store.read_all(cursor, 1000).await.unwrap();
        if page.events.is_empty() {
            return ids;
        }
        cursor = page.next;
        ids.extend(
            page.events
                .iter()
                .filter(|e| e.event_type.as_str() == "load.tick")
                .map(|e| e.id.to_string()),
        );
    }
}

both_backends! {
    async fn an_ordered_endpoint_gets_events_in_log_order_through_concurrent_writers_and_a_failure(db) {
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        // Writer 3's 17th event fails twice before it is accepted.
        let receiver = Receiver::start(Arc::new(|request: &Received, nth| {
            let payload = &request.json()["payload"];
            if payload["w"] == 3 && payload["i"] == 17 && nth < 2 { (503, vec![]) } else { (200, vec![]) }
        })).await;
        let mut config = webhook_config(&db, "0s,100ms,100ms,100ms");
        config.database = db.with_max_connections(20);
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        create_endpoint(&app, &owner.access_token, json!({"name": "ordered", "url": receiver.url(), "event_types": ["load.*"], "ordered": true})).await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = app.state.store.clone();
                tokio::spawn(async move {
                    let stream = StreamName::parse(&format!("load:w{w}")).unwrap();
                    for i in 0..40u32 {
                        let expected = if i == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(i) };
                        let event = NewEvent::new(EventType::parse("load.tick").unwrap(), json!({"w": w, "i": i}), Actor::system());
                        store.append(vec![Append::new(stream.clone(), expected, vec![event])], None).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        receiver.wait_for_events(320).await;
        let order = load_ids_in_log_order(&app).await;
        assert_eq!(order.len(), 320);
        let index: HashMap<&str, usize> = order.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let requests: Vec<usize> = receiver.event_ids().iter().map(|id| index[id.as_str()]).collect();
        assert_eq!(requests.len(), 322, "320 events and two retries");
        assert!(requests.windows(2).all(|w| w[0] <= w[1]), "sent strictly in log order, a failure holding back the rest: {requests:?}");
        app.stop().await;
        receiver.stop().await;
    }
}

#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_send_one_event_twice_while_leases_hold() {
    let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let receiver = Receiver::start(Arc::new(|_, _| (200, vec![]))).await;
    let mut config = webhook_config(&db, "0s,100ms");
    config.webhooks.concurrency = 8;
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let owner = a.admin_with_role("o@example.com", Role::Owner).await;
    create_endpoint(
        &a,
        &owner.access_token,
        json!({"name": "one", "url": receiver.url(), "event_types": ["load.*"]}),
    )
    .await;
    for n in 0..50 {
        let app = if n % 2 == 0 { &a } else { &b };
        append(app, &format!("load:{n}"), 10).await;
    }
    receiver.wait_for_events(500).await;
    // Both instances worked, and nothing was sent twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids = receiver.event_ids();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        ids.len(),
        500,
        "{} requests for {} events",
        ids.len(),
        distinct.len()
    );
    a.stop().await;
    b.stop().await;
    receiver.stop().await;
}

both_backends! {
    async fn a_crash_in_the_middle_of_a_burst_loses_no_event(db) {
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        let receiver = Receiver::start(Arc::new(|_, _| {
            std::thread::sleep(Duration::from_millis(2));
            (200, vec![])
        })).await;
        let mut config = webhook_config(&db, "0s,100ms,200ms");
        config.webhooks.concurrency = 8;
        config.webhooks.timeout = Duration::from_secs(2);
        config.webhooks.lease = Duration::from_secs(5);
        {
            let setup = TestApp::spawn_with(config.clone()).await;
            let owner = setup.admin_with_role("o@example.com", Role::Owner).await;
            create_endpoint(&setup, &owner.access_token, json!({"name": "crm", "url": receiver.url(), "event_types": ["load.*"]})).await;
            setup.stop().await;
        }

        // The first instance, on a runtime of its own, appends 1,000 events
        // in bursts and is aborted while delivering them. One thread: once
        // `block_on` returns no task of it runs again, as in a crash (with
        // several, a task still running while the others are dropped sees
        // their delivery slots come free and claims more).
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let first = config.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let app = switchboard::app::Application::build(first).await.unwrap();
                let store = app.state().store.clone();
                tokio::spawn(app.run_until_stopped());
                tokio::spawn(async move {
                    for n in 0..100 {
                        let stream = StreamName::parse(&format!("load:{n}")).unwrap();
                        let events = (0..10).map(|i| NewEvent::new(EventType::parse("load.tick").unwrap(), json!({"i": i}), Actor::system())).collect();
                        store.append(vec![Append::new(stream.clone(), ExpectedVersion::NoStream, events)], None).await.unwrap();
                    }
                });
                let _ = killed.await;
            });
            runtime.shutdown_background();
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while receiver.received().len() < 200 {
            assert!(tokio::time::Instant::now() < deadline, "the first instance delivered nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill.send(()).unwrap();
        thread.join().unwrap();
        let at_crash = receiver.received().len();
        // What the dead instance had in flight: claimed, not yet recorded.
        let in_flight: Vec<String> = {
            use sea_orm::{ConnectionTrait, Statement};
            let db = switchboard::db::Db::connect(&config.database).await.unwrap();
            let rows = db.conn().query_all_raw(Statement::from_string(db.database_backend(),
                "SELECT event_id FROM webhook_deliveries WHERE lease_token IS NOT NULL AND status = 'pending'")).await.unwrap();
            let ids = rows.iter().map(|r| match db.backend() {
                switchboard::db::Backend::Postgres => r.try_get::<uuid::Uuid>("", "event_id").unwrap().to_string(),
                switchboard::db::Backend::Sqlite => r.try_get::<String>("", "event_id").unwrap(),
            }).collect();
            db.close().await;
            ids
        };
        assert!(in_flight.len() <= 8);

        // A new instance finishes the job.
        let app = TestApp::spawn_with(config.clone()).await;
        let committed = load_ids_in_log_order(&app).await;
        assert!(committed.len() >= 200 && committed.len() <= 1000);
        receiver.wait_for_events(committed.len()).await;
        let ids = receiver.event_ids();
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        let mut expected = committed.clone();
        expected.sort();
        assert_eq!(distinct, expected, "every committed event arrived");
        // Sent twice only if it was in flight when the instance died.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for id in &ids {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        for (id, n) in counts {
            assert!(n == 1 || (n == 2 && in_flight.iter().any(|f| f == id)), "{id} was sent {n} times");
        }
        assert!(at_crash < ids.len(), "the crash really was in the middle");
        app.stop().await;
        receiver.stop().await;
    }
}

/// The Standard Webhooks reference library (Python) accepts what we send,
/// also during a rotation, and refuses a tampered body. The Rust check above
/// always runs; the Python one runs where `STANDARDWEBHOOKS_PYTHON` names an
/// interpreter with `standardwebhooks` installed (`.ci/run` sets one up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_webhooks_reference_library_accepts_our_signatures() {
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let receiver = Receiver::ok().await;
    let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let endpoint = create_endpoint(
        &app,
        &owner.access_token,
        json!({"name": "py", "url": receiver.url(), "event_types": ["load.*"]}),
    )
    .await;
    let id = endpoint["id"].as_str().unwrap();
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    append(&app, "load:a", 2).await;
    receiver.wait_for_events(2).await;
    let rotated: Value = app
        .post(
            &format!("/api/v1/admin/webhooks/{id}/rotate-secret"),
            Some(&owner.access_token),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    append(&app, "load:b", 1).await;
    receiver.wait_for_events(3).await;

    let mut samples = Vec::new();
    for request in receiver.received() {
        let body = String::from_utf8(request.body.clone()).unwrap();
        let rotated = request.json()["stream"] == "load:b";
        let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .map(|h| (h, request.headers[h].as_str()))
            .collect();
        let secrets = if rotated {
            vec![&new, &old]
        } else {
            vec![&old]
        };
        for secret in secrets {
            assert!(verify_standard(secret, &request.headers, &request.body));
            samples
                .push(json!({"secret": secret, "headers": headers, "body": body, "valid": true}));
        }
        samples.push(json!({"secret": old, "headers": headers, "body": body.replace("load.tick", "load.tock"), "valid": false}));
    }
    assert_eq!(samples.len(), 7);
    app.stop().await;
    receiver.stop().await;

    let Some(python) = std::env::var_os("STANDARDWEBHOOKS_PYTHON") else {
        eprintln!(
            "STANDARDWEBHOOKS_PYTHON is not set: the reference library check is left to .ci/run"
        );
        return;
    };
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&samples).unwrap()).unwrap();
    let output = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/verify_standard_webhooks.py"
        ))
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "standardwebhooks refused: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("7 of 7 samples as expected"), "{stdout}");
}

both_backends! {
    async fn a_rotation_with_a_body_it_cannot_read_is_refused_and_rotates_nothing(db) {
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({"name": "r", "url": "http://127.0.0.1:9/"})).await;
        let id = endpoint["id"].as_str().unwrap();
        let path = format!("/api/v1/admin/webhooks/{id}/rotate-secret");
        let raw = |body: &'static str| {
            app.client
                .post(format!("{}{path}", app.address))
                .bearer_auth(&owner.access_token)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let refusals = [
            ("{", 400, "malformed_json"),
            (r#"{"grace_seconds": "0"}"#, 422, "invalid_body"),
            (r#"{"grace_seconds": -1}"#, 422, "invalid_body"),
            (r#"{"grace_second": 0}"#, 422, "invalid_body"),
            (r#""0""#, 422, "invalid_body"),
        ];
        for (body, status, code) in refusals {
            let response = raw(body).await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{body}");
            let problem = assert_problem(response, status, code).await;
            assert!(problem["detail"].is_string(), "{body}: {problem}");
        }
        let shown: Value = app.get_with(&format!("/api/v1/admin/webhooks/{id}/secret"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(shown["secret"], endpoint["secret"], "nothing was rotated");
        assert!(shown["previous_secret_valid_until"].is_null());

        // No body at all: the configured grace period.
        let rotated = app.request(reqwest::Method::POST, &path, Some(&owner.access_token), None).await;
        assert_eq!(rotated.status().as_u16(), 200);
        let rotated: Value = rotated.json().await.unwrap();
        assert_ne!(rotated["secret"], endpoint["secret"]);
        let until = chrono::DateTime::parse_from_rfc3339(rotated["previous_secret_valid_until"].as_str().unwrap()).unwrap();
        let hours = (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_minutes() as f64 / 60.0;
        assert!((23.9..=24.0).contains(&hours), "{hours} h of grace");
        // An explicit 0 retires the old secret at once.
        let retired: Value = raw(r#"{"grace_seconds": 0}"#).await.unwrap().json().await.unwrap();
        assert!(retired["previous_secret_valid_until"].is_null(), "{retired}");
        app.stop().await;
    }
}

both_backends! {
    async fn a_type_filter_matching_no_event_type_is_refused_naming_the_valid_ones(db) {
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        for types in [json!(["tikcet.created"]), json!(["tikcet.*"]), json!(["ticket.created", "payment.complete"]), json!(["paymentx*"])] {
            let response = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "x", "url": "http://127.0.0.1:9/", "event_types": types})).await;
            let problem = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(problem["field"], "event_types", "{types}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("`ticket.created`") && detail.contains("`payment.completed`"), "lists the valid types: {detail}");
        }
        for types in [json!(["*"]), json!(["ticket.*", "payment.completed"]), json!(["ticket*"]), json!(["webhook.endpoint_disabled"])] {
            let response = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "x", "url": "http://127.0.0.1:9/", "event_types": types})).await;
            assert_eq!(response.status().as_u16(), 201, "{types}");
        }
        let endpoint = create_endpoint(&app, &owner.access_token, json!({"name": "y", "url": "http://127.0.0.1:9/", "event_types": ["user.*"]})).await;
        let path = format!("/api/v1/admin/webhooks/{}", endpoint["id"].as_str().unwrap());
        let patched = app.request(reqwest::Method::PATCH, &path, Some(&owner.access_token), Some(json!({"event_types": ["usr.*"]}))).await;
        assert_problem(patched, 422, "invalid_field").await;
        let kept: Value = app.get_with(&path, &owner.access_token).await.json().await.unwrap();
        assert_eq!(kept["event_types"], json!(["user.*"]));
        app.stop().await;
    }
}

both_backends! {
    async fn the_deliveries_list_says_how_many_there_are(db) {
        let receiver = Receiver::ok().await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = create_endpoint(&app, &owner.access_token, json!({"name": "r", "url": receiver.url(), "event_types": ["load.*"]})).await;
        let path = format!("/api/v1/admin/webhooks/{}/deliveries", endpoint["id"].as_str().unwrap());
        append(&app, "load:a", 3).await;
        receiver.wait_for_events(3).await;
        crate::helpers::wait_until(|| async {
            let page: Value = app.get_with(&format!("{path}?status=delivered"), &owner.access_token).await.json().await.unwrap();
            page["total"] == 3
        })
        .await;
        let page: Value = app.get_with(&format!("{path}?limit=2"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert_eq!(page["total"], 3);
        let page: Value = app.get_with(&format!("{path}?limit=2&offset=2"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 1);
        assert_eq!(page["total"], 3);
        let failed: Value = app.get_with(&format!("{path}?status=failed"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(failed["total"], 0);
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn an_endpoint_made_with_the_older_cabinet_apis_body_signs_with_its_own_secret(db) {
        let receiver = Receiver::ok().await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let chosen = "my-crm-shared-secret";
        let endpoint = create_endpoint(&app, &owner.access_token, json!({
            "name": "crm", "url": receiver.url(), "event_type": "load.tick",
            "secret": chosen, "description": "made by an older client"
        })).await;
        assert_eq!(endpoint["event_types"], json!(["load.tick"]));
        assert_eq!(endpoint["custom_legacy_secret"], true);
        assert_eq!(endpoint["body"], "envelope");
        let standard = endpoint["secret"].as_str().unwrap().to_owned();
        assert!(standard.starts_with("whsec_"));
        append(&app, "load:a", 1).await;
        receiver.wait_for_events(1).await;
        let request = &receiver.received()[0];
        assert!(verify_legacy(chosen, &request.headers, &request.body), "X-Webhook-Signature with the chosen secret");
        assert!(!verify_legacy(&standard, &request.headers, &request.body));
        assert!(verify_standard(&standard, &request.headers, &request.body));
        assert_eq!(request.json()["type"], "load.tick");
        // The chosen secret is sealed at rest too.
        let rows: Vec<String> = {
            use sea_orm::{ConnectionTrait, Statement};
            app.state.db.conn().query_all_raw(Statement::from_string(app.state.db.database_backend(), "SELECT legacy_secret FROM webhook_endpoints")).await.unwrap()
                .iter().map(|r| r.try_get::<String>("", "legacy_secret").unwrap()).collect()
        };
        assert!(rows.iter().all(|r| !r.contains(chosen)), "{rows:?}");

        // The bare payload, for receivers that read only that; `is_active`.
        let path = format!("/api/v1/admin/webhooks/{}", endpoint["id"].as_str().unwrap());
        let patched: Value = app.request(Method::PATCH, &path, Some(&owner.access_token), Some(json!({"body": "payload"}))).await.json().await.unwrap();
        assert_eq!(patched["body"], "payload");
        append(&app, "load:a", 1).await;
        receiver.wait_for_events(2).await;
        let request = &receiver.received()[1];
        assert_eq!(request.json(), json!({"i": 0}), "the payload alone");
        assert_eq!(request.headers["x-webhook-event"], "load.tick");
        assert!(verify_legacy(chosen, &request.headers, &request.body));
        assert!(verify_standard(&standard, &request.headers, &request.body));
        let off: Value = app.request(Method::PATCH, &path, Some(&owner.access_token), Some(json!({"is_active": false}))).await.json().await.unwrap();
        assert_eq!(off["enabled"], false);
        let contradiction = app.request(Method::PATCH, &path, Some(&owner.access_token), Some(json!({"is_active": true, "enabled": false}))).await;
        assert_problem(contradiction, 422, "invalid_field").await;
        // Back to the whsec_ secret for both signatures.
        let back: Value = app.request(Method::PATCH, &path, Some(&owner.access_token), Some(json!({"secret": "", "is_active": true}))).await.json().await.unwrap();
        assert_eq!(back["custom_legacy_secret"], false);
        assert_eq!(back["enabled"], true);

        for (body, field) in [
            (json!({"name": "x", "url": receiver.url(), "event_type": "load.tick", "event_types": ["load.tick"]}), "event_type"),
            (json!({"name": "x", "url": receiver.url(), "secret": "short"}), "secret"),
            (json!({"name": "x", "url": receiver.url(), "event_type": "lod.tick"}), "event_types"),
        ] {
            let response = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), body.clone()).await;
            let problem = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}");
        }
        let created_off = create_endpoint(&app, &owner.access_token, json!({"name": "off", "url": receiver.url(), "is_active": false})).await;
        assert_eq!(created_off["enabled"], false);
        app.stop().await;
        receiver.stop().await;
    }
}

/// Runs `sql` on the test database.
async fn execute(app: &TestApp, sql: String) {
    use sea_orm::{ConnectionTrait, Statement};
    app.state
        .db
        .conn()
        .execute_raw(Statement::from_string(app.state.db.database_backend(), sql))
        .await
        .unwrap();
}

/// An endpoint whose first attempt fails (nothing listens on its port)
/// and whose next one is an hour away: a pending delivery nobody claims.
async fn waiting_endpoint(app: &TestApp, token: &str, name: &str) -> Value {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    create_endpoint(app, token, json!({"name": name, "url": format!("http://127.0.0.1:{port}/hook"), "event_types": ["load.*"]})).await
}

/// Makes the pending delivery of endpoint `name` look claimed by instance
/// `owner` for the next ten minutes, and due.
async fn lease_as_if_claimed_by(app: &TestApp, name: &str, owner: i64) {
    let now = chrono::Utc::now().timestamp_millis();
    execute(app, format!(
        "UPDATE webhook_deliveries SET lease_token = event_id, lease_until_ms = {}, lease_owner = {owner}, \
         next_attempt_at_ms = {now}, attempts = attempts + 1 \
         WHERE status = 'pending' AND endpoint_id = (SELECT id FROM webhook_endpoints WHERE name = '{name}')",
        now + 600_000
    )).await;
}

/// Postgres: a lease whose instance is gone (its advisory lock is not held)
/// is taken back within seconds, not when it runs out; one whose instance
/// lives is left alone until that instance is gone too.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leases_of_an_instance_that_is_gone_are_taken_back_at_once() {
    use sea_orm::sqlx::{self, Connection};

    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let app = TestApp::spawn_with(webhook_config(&db, "0s,1h")).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let dead = waiting_endpoint(&app, &owner.access_token, "dead").await;
    let alive = waiting_endpoint(&app, &owner.access_token, "alive").await;
    append(&app, "load:a", 1).await;
    for endpoint in [&dead, &alive] {
        let path = format!(
            "/api/v1/admin/webhooks/{}/deliveries",
            endpoint["id"].as_str().unwrap()
        );
        wait_until(|| async {
            let d: Value = app
                .get_with(&path, &owner.access_token)
                .await
                .json()
                .await
                .unwrap();
            d["items"][0]["attempt_log"]
                .as_array()
                .is_some_and(|log| log.len() == 1)
        })
        .await;
    }
    // Another instance that lives: it holds its lock on a session of its own.
    let switchboard::config::DatabaseConfig::Postgres { url, .. } = &db.config else {
        unreachable!()
    };
    let mut living = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, 77)")
        .bind(switchboard::webhooks::store::LEASE_LOCK_CLASS)
        .execute(&mut living)
        .await
        .unwrap();
    execute(
        &app,
        "INSERT INTO webhook_workers (owner, started_at_ms) VALUES (76, 0), (77, 0)".to_owned(),
    )
    .await;
    lease_as_if_claimed_by(&app, "dead", 76).await;
    lease_as_if_claimed_by(&app, "alive", 77).await;

    let to_dead = Receiver::ok().await;
    let to_alive = Receiver::ok().await;
    for (endpoint, receiver) in [(&dead, &to_dead), (&alive, &to_alive)] {
        let path = format!(
            "/api/v1/admin/webhooks/{}",
            endpoint["id"].as_str().unwrap()
        );
        let patched = app
            .request(
                Method::PATCH,
                &path,
                Some(&owner.access_token),
                Some(json!({"url": receiver.url()})),
            )
            .await;
        assert_eq!(patched.status().as_u16(), 200);
    }
    let started = std::time::Instant::now();
    to_dead.wait_for_events(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "taken back after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        to_alive.received().is_empty(),
        "a living instance's lease was taken"
    );

    // The attempt the dead instance never recorded is not counted.
    let path = format!(
        "/api/v1/admin/webhooks/{}/deliveries",
        dead["id"].as_str().unwrap()
    );
    wait_until(|| async {
        let d: Value = app
            .get_with(&format!("{path}?status=delivered"), &owner.access_token)
            .await
            .json()
            .await
            .unwrap();
        d["total"] == 1
    })
    .await;
    let d: Value = app
        .get_with(&path, &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["items"][0]["attempts"], 2, "{d}");
    assert_eq!(d["items"][0]["attempt_log"].as_array().unwrap().len(), 2);

    // The other instance ends: its lease goes too.
    living.close().await.unwrap();
    to_alive.wait_for_events(1).await;
    app.stop().await;
    to_dead.stop().await;
    to_alive.stop().await;
}

both_backends! {
    async fn a_lease_left_by_the_instance_before_is_taken_back_as_the_next_one_starts(db) {
        let receiver = Receiver::ok().await;
        let config = webhook_config(&db, "0s,1h");
        let app = TestApp::spawn_with(config.clone()).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let endpoint = waiting_endpoint(&app, &owner.access_token, "left").await;
        append(&app, "load:a", 1).await;
        let path = format!("/api/v1/admin/webhooks/{}", endpoint["id"].as_str().unwrap());
        wait_until(|| async {
            let d: Value = app.get_with(&format!("{path}/deliveries"), &owner.access_token).await.json().await.unwrap();
            d["items"][0]["attempt_log"].as_array().is_some_and(|log| log.len() == 1)
        })
        .await;
        app.request(Method::PATCH, &path, Some(&owner.access_token), Some(json!({"url": receiver.url()}))).await;
        // As an instance that dies with the delivery in flight leaves it
        // (on PostgreSQL, an instance listed but holding no lock).
        execute(&app, "INSERT INTO webhook_workers (owner, started_at_ms) VALUES (91, 0)".to_owned()).await;
        lease_as_if_claimed_by(&app, "left", 91).await;
        app.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(receiver.received().is_empty());

        let started = std::time::Instant::now();
        let next = TestApp::spawn_with(config).await;
        receiver.wait_for_events(1).await;
        assert!(started.elapsed() < Duration::from_secs(10), "taken back after {:?}", started.elapsed());
        next.stop().await;
        receiver.stop().await;
    }
}

/// Appends `n` events of type `event_type` to `stream`.
async fn append_typed(app: &TestApp, stream: &str, event_type: &str, n: usize) {
    let stream = StreamName::parse(stream).unwrap();
    let version = app.state.store.stream_version(&stream).await.unwrap();
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    let events = (0..n)
        .map(|i| {
            NewEvent::new(
                EventType::parse(event_type).unwrap(),
                json!({"i": i}),
                Actor::system(),
            )
        })
        .collect();
    app.state
        .store
        .append(vec![Append::new(stream, expected, events)], None)
        .await
        .unwrap();
}

async fn backfill_of(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_with(&format!("/api/v1/admin/webhooks/{id}/backfill"), token)
        .await
        .json()
        .await
        .unwrap()
}

both_backends! {
    async fn a_new_endpoint_is_backfilled_from_the_log_once_through_its_filter(db) {
        let receiver = Receiver::ok().await;
        let app = TestApp::spawn_with(webhook_config(&db, "0s")).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let token = owner.access_token.clone();
        // History from before the endpoint existed, mixed with another type.
        for round in 0..3 {
            append_typed(&app, &format!("load:old{round}"), "load.tick", 10).await;
            append_typed(&app, &format!("note:old{round}"), "note.added", 5).await;
        }
        let history = load_ids_in_log_order(&app).await;
        assert_eq!(history.len(), 30);
        let endpoint = create_endpoint(&app, &token, json!({"name": "new", "url": receiver.url(), "event_types": ["load.tick"]})).await;
        let id = endpoint["id"].as_str().unwrap().to_owned();
        append_typed(&app, "load:live", "load.tick", 2).await;
        receiver.wait_for_events(2).await;

        let path = format!("/api/v1/admin/webhooks/{id}/backfill");
        let started = app.post(&path, Some(&token), json!({"since": "2020-01-01T00:00:00Z", "rate": 1000})).await;
        assert_eq!(started.status().as_u16(), 202);
        let started: Value = started.json().await.unwrap();
        assert_eq!(started["status"], "running");
        assert_eq!(started["until"], app.state.store.head().await.unwrap().to_string());
        let again = app.post(&path, Some(&token), json!({"since": "2020-01-01T00:00:00Z"})).await;
        assert_problem(again, 409, "backfill_running").await;
        wait_until(|| async { backfill_of(&app, &token, &id).await["delivered"] == 30 }).await;
        let done = backfill_of(&app, &token, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["progress"], 1.0);
        assert_eq!(done["enqueued"], 30, "the live ones were not queued again: {done}");
        assert!(done["finished_at"].is_string());
        receiver.wait_for_events(32).await;
        let ids = receiver.event_ids();
        assert_eq!(ids.len(), 32, "each event once");
        let mut got: Vec<String> = ids.clone();
        got.sort();
        let mut expected = load_ids_in_log_order(&app).await;
        expected.sort();
        assert_eq!(got, expected, "every load.tick, no note.added");

        // From a cursor: only what came after it, and nothing twice.
        let page = app.state.store.read_all(switchboard::events::Cursor::START, 15).await.unwrap();
        let after = page.events.last().unwrap().cursor.to_string();
        let again: Value = app.post(&path, Some(&token), json!({"after": after})).await.json().await.unwrap();
        assert_eq!(again["start"], after);
        wait_until(|| async { backfill_of(&app, &token, &id).await["status"] == "completed" }).await;
        let again = backfill_of(&app, &token, &id).await;
        assert_eq!(again["enqueued"], 0, "{again}");
        assert!(again["scanned"].as_u64().unwrap() >= 20, "{again}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.event_ids().len(), 32);
        let cancel = app.post(&format!("{path}/cancel"), Some(&token), json!({})).await;
        assert_problem(cancel, 409, "backfill_ended").await;

        // Bad input.
        for (body, field) in [
            (json!({}), "since"),
            (json!({"after": "not-a-cursor"}), "after"),
            (json!({"after": format!("{}-{}", u32::MAX, i64::MAX)}), "after"),
            (json!({"since": "2999-01-01T00:00:00Z"}), "since"),
            (json!({"since": "2020-01-01T00:00:00Z", "rate": 0}), "rate"),
        ] {
            let problem = assert_problem(app.post(&path, Some(&token), body.clone()).await, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}");
        }
        app.stop().await;
        receiver.stop().await;
    }
}

both_backends! {
    async fn a_cancelled_backfill_queues_nothing_more_and_withdraws_what_waits(db) {
        // A receiver that holds each request a while: what was queued waits.
        let receiver = Receiver::start(Arc::new(|_, _| {
            std::thread::sleep(Duration::from_millis(300));
            (200, vec![])
        }))
        .await;
        let mut config = webhook_config(&db, "0s");
        config.webhooks.concurrency = 1;
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let token = owner.access_token.clone();
        append_typed(&app, "load:old", "load.tick", 200).await;
        let endpoint = create_endpoint(&app, &token, json!({"name": "new", "url": receiver.url(), "event_types": ["load.*"]})).await;
        let id = endpoint["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/admin/webhooks/{id}/backfill");
        app.post(&path, Some(&token), json!({"since": "2020-01-01T00:00:00Z", "rate": 20})).await;
        wait_until(|| async { backfill_of(&app, &token, &id).await["enqueued"].as_u64().unwrap() >= 20 }).await;
        let cancelled = app.post(&format!("{path}/cancel"), Some(&token), json!({})).await;
        assert_eq!(cancelled.status().as_u16(), 200);
        let cancelled: Value = cancelled.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        let enqueued = cancelled["enqueued"].as_u64().unwrap();
        assert!(enqueued < 200, "paced: {cancelled}");
        assert!(cancelled["withdrawn"].as_u64().unwrap() > 0, "{cancelled}");
        // What was being sent finishes; nothing else comes.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = backfill_of(&app, &token, &id).await;
        assert_eq!(now["enqueued"], enqueued, "nothing more queued");
        assert_eq!(now["pending"], 0, "{now}");
        let sent = now["delivered"].as_u64().unwrap() + now["failed"].as_u64().unwrap();
        assert_eq!(sent + now["withdrawn"].as_u64().unwrap(), enqueued, "{now}");
        let received = receiver.event_ids().len() as u64;
        assert_eq!(received, sent);
        app.stop().await;
        receiver.stop().await;
    }
}

/// Postgres: two instances move one backfill on together at its rate, not
/// at twice it.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_backfill_at_the_backfills_rate_together() {
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    // Deliveries wait (nothing listens): what was queued is what was paced.
    let config = webhook_config(&db, "0s,1h");
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let owner = a.admin_with_role("o@example.com", Role::Owner).await;
    append_typed(&a, "load:old", "load.tick", 300).await;
    let endpoint = waiting_endpoint(&a, &owner.access_token, "paced").await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let response = a
        .post(
            &format!("/api/v1/admin/webhooks/{id}/backfill"),
            Some(&owner.access_token),
            json!({"since": "2020-01-01T00:00:00Z", "rate": 10}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 202);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let progress = backfill_of(&b, &owner.access_token, &id).await;
    let enqueued = progress["enqueued"].as_u64().unwrap();
    let seconds = started.elapsed().as_secs_f64();
    // At 10 a second, one step a second at most, whichever instance.
    assert!(enqueued >= 10, "it moved: {progress}");
    assert!(
        enqueued as f64 <= 10.0 * (seconds / 0.9 + 1.0),
        "{enqueued} queued in {seconds:.1} s: {progress}"
    );
    a.stop().await;
    b.stop().await;
}
