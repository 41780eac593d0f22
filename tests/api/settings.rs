//! Integration settings through the admin API: who may read and change
//! them, known keys only, bad bodies named by field, secrets write-only and
//! stored sealed, the in-memory cache and its invalidation (across two
//! instances on PostgreSQL), and first values from the environment.

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use switchboard::{auth::Role, config::Config, settings::Helpdesk};

use crate::helpers::{TestApp, TestDb, assert_problem, both_backends, captured_logs, test_config};

const PATH: &str = "/api/v1/admin/settings/helpdesk";
const TOKEN: &str = "helpdesk-access-token-5b7c9d1e";
const CALLBACK: &str = "helpdesk-callback-secret-8a6f4e2d";

/// A whole helpdesk setting, both secrets given.
fn helpdesk(department: &str) -> Value {
    json!({
        "kind": "webim", "enabled": true, "base_url": "https://helpdesk.example.com/api",
        "access_token": TOKEN, "callback_secret": CALLBACK, "department": department
    })
}

fn with(field: &str, value: Value) -> Value {
    let mut body = helpdesk("sales");
    body[field] = value;
    body
}

fn without(field: &str) -> Value {
    let mut body = helpdesk("sales");
    body.as_object_mut().unwrap().remove(field);
    body
}

async fn put(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.request(Method::PUT, PATH, Some(token), Some(body))
        .await
}

/// A `settings` row as a dump of the database shows it.
async fn stored(app: &TestApp, key: &str) -> Option<String> {
    use sea_orm::ConnectionTrait;
    let db = &app.state.db;
    db.conn()
        .query_one_raw(db.statement(
            "SELECT value FROM settings WHERE key = $1",
            vec![key.into()],
        ))
        .await
        .unwrap()
        .map(|row| row.try_get::<String>("", "value").unwrap())
}

/// Changes the stored department behind the service's back, as a tool
/// writing the database directly would.
async fn change_behind(app: &TestApp, department: &str) {
    use sea_orm::ConnectionTrait;
    let mut value: Value =
        serde_json::from_str(&stored(app, "integration:helpdesk").await.unwrap()).unwrap();
    value["department"] = json!(department);
    let db = &app.state.db;
    db.conn()
        .execute_raw(db.statement(
            "UPDATE settings SET value = $1 WHERE key = 'integration:helpdesk'",
            vec![value.to_string().into()],
        ))
        .await
        .unwrap();
}

/// The department the service itself reads (through its cache).
async fn department(app: &TestApp) -> Option<String> {
    app.state
        .settings
        .get::<Helpdesk>()
        .await
        .unwrap()
        .and_then(|helpdesk| helpdesk.department)
}

both_backends! {
    async fn only_signed_in_owners_and_admins_read_and_change_settings(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        let admin = app.admin_with_role("admin@example.com", Role::Admin).await.access_token;
        let operator = app.admin_with_role("operator@example.com", Role::Operator).await.access_token;
        let viewer = app.admin_with_role("viewer@example.com", Role::Viewer).await.access_token;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&owner), json!({"name": "k", "scopes": ["webhooks:manage", "users:manage"]})).await.json().await.unwrap();
        let key = key["secret"].as_str().unwrap().to_owned();
        // No API key can be given the permission.
        let refused = app.post("/api/v1/admin/api-keys", Some(&owner), json!({"name": "s", "scopes": ["settings:manage"]})).await;
        assert_eq!(assert_problem(refused, 422, "invalid_field").await["field"], "scopes");

        for (method, body) in [(Method::GET, None), (Method::PUT, Some(helpdesk("sales")))] {
            assert_problem(app.request(method.clone(), PATH, None, body.clone()).await, 401, "unauthorized").await;
            for token in [&operator, &viewer, &key] {
                assert_problem(app.request(method.clone(), PATH, Some(token.as_str()), body.clone()).await, 403, "forbidden").await;
            }
        }
        // The refused changes changed nothing.
        let unset: Value = app.get_with(PATH, &owner).await.json().await.unwrap();
        assert_eq!(unset, json!({"key": "helpdesk", "value": null, "updated_at": null, "updated_by": null}));
        assert!(stored(&app, "integration:helpdesk").await.is_none());

        for token in [&owner, &admin] {
            assert_eq!(put(&app, token, helpdesk("sales")).await.status().as_u16(), 200);
            assert_eq!(app.get_with(PATH, token).await.status().as_u16(), 200);
        }
        app.stop().await;
    }
}

both_backends! {
    async fn only_known_keys_are_reachable_and_the_services_own_rows_never(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        let log_id = stored(&app, "log_id").await.unwrap();
        for key in ["log_id", "integration:helpdesk", "integration%3Ahelpdesk", "Helpdesk", "crm"] {
            let path = format!("/api/v1/admin/settings/{key}");
            let problem = assert_problem(app.get_with(&path, &owner).await, 404, "not_found").await;
            assert!(problem["detail"].as_str().unwrap().ends_with("the settings are: helpdesk"), "{problem}");
            let answer = app.request(Method::PUT, &path, Some(owner.as_str()), Some(json!({"value": "1"}))).await;
            assert_problem(answer, 404, "not_found").await;
        }
        assert_eq!(stored(&app, "log_id").await.unwrap(), log_id);
        // A change is stored under the prefix, never under its bare key.
        assert_eq!(put(&app, &owner, helpdesk("sales")).await.status().as_u16(), 200);
        assert!(stored(&app, "integration:helpdesk").await.is_some());
        assert!(stored(&app, "helpdesk").await.is_none());
        app.stop().await;
    }
}

both_backends! {
    async fn a_bad_body_names_its_field_and_changes_nothing(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        for (body, field) in [
            (with("colour", json!("red")), "colour"),
            (with("enabled", json!("yes")), "enabled"),
            (with("kind", json!("zendesk")), "kind"),
            (with("store_text", json!(1)), "store_text"),
            (with("department", json!(["a"])), "department"),
            (with("department", json!("d".repeat(201))), "department"),
            (with("base_url", json!("ftp://helpdesk.example.com")), "base_url"),
            (with("base_url", json!("/api")), "base_url"),
            (with("base_url", json!("https://user:pass@helpdesk.example.com")), "base_url"),
            (with("access_token", json!(918_273_645)), "access_token"),
            (with("access_token", json!(" ")), "access_token"),
            (with("callback_secret", json!({"secret": CALLBACK})), "callback_secret"),
            (without("kind"), "kind"),
            (without("enabled"), "enabled"),
            (without("base_url"), "base_url"),
        ] {
            let problem = assert_problem(put(&app, &owner, body.clone()).await, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}: {problem}");
            // A secret sent wrongly is not repeated back.
            let detail = problem["detail"].as_str().unwrap();
            assert!(!detail.contains("918273645") && !detail.contains(CALLBACK), "{detail}");
        }
        assert_problem(put(&app, &owner, json!([helpdesk("sales")])).await, 422, "invalid_body").await;
        assert!(stored(&app, "integration:helpdesk").await.is_none());
        app.stop().await;
    }
}

both_backends! {
    async fn secrets_are_shown_masked_stored_sealed_kept_when_left_out_and_cleared_by_null(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        let me: Value = app.get_with("/api/v1/admin/me", &owner).await.json().await.unwrap();

        let answer = put(&app, &owner, helpdesk("sales")).await;
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.headers()["cache-control"], "no-store");
        let text = answer.text().await.unwrap();
        assert!(!text.contains(TOKEN) && !text.contains(CALLBACK), "{text}");
        let changed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(changed["key"], "helpdesk");
        assert_eq!(changed["value"], json!({
            "kind": "webim", "enabled": true, "base_url": "https://helpdesk.example.com/api",
            "access_token": "••••9d1e", "callback_secret": "••••4e2d",
            "department": "sales", "store_text": true
        }));
        assert_eq!(changed["updated_by"], me["id"]);
        assert!(changed["updated_at"].is_string(), "{changed}");
        let viewed = app.get_with(PATH, &owner).await.text().await.unwrap();
        assert!(!viewed.contains(TOKEN) && !viewed.contains(CALLBACK), "{viewed}");
        assert_eq!(serde_json::from_str::<Value>(&viewed).unwrap(), changed);
        // A dump of the database does not show them either.
        let raw = stored(&app, "integration:helpdesk").await.unwrap();
        assert!(!raw.contains(TOKEN) && !raw.contains(CALLBACK), "{raw}");
        // The service itself reads them in clear, and never prints them.
        let read = app.state.settings.get::<Helpdesk>().await.unwrap().unwrap();
        assert_eq!(read.access_token.as_ref().map(|s| s.expose_secret()), Some(TOKEN));
        assert_eq!(read.callback_secret.as_ref().map(|s| s.expose_secret()), Some(CALLBACK));
        assert!(!format!("{read:?}").contains(TOKEN));

        // Left out: kept. `null`: cleared.
        let mut body = without("access_token");
        body["callback_secret"] = Value::Null;
        body["department"] = json!("support");
        let changed: Value = put(&app, &owner, body).await.json().await.unwrap();
        assert_eq!((changed["value"]["access_token"].as_str(), changed["value"]["callback_secret"].as_str()), (Some("••••9d1e"), None));
        assert_eq!(changed["value"]["department"], "support");
        let read = app.state.settings.get::<Helpdesk>().await.unwrap().unwrap();
        assert_eq!(read.access_token.as_ref().map(|s| s.expose_secret()), Some(TOKEN));
        assert!(read.callback_secret.is_none());

        // A short secret is masked whole.
        let changed: Value = put(&app, &owner, with("access_token", json!("k3y-7q"))).await.json().await.unwrap();
        assert_eq!(changed["value"]["access_token"], "••••");

        let logs = captured_logs();
        assert!(!logs.contains(TOKEN) && !logs.contains(CALLBACK) && !logs.contains("k3y-7q"));
        app.stop().await;
    }
}

both_backends! {
    async fn settings_are_read_from_memory_until_a_change_drops_them(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        assert_eq!(department(&app).await, None);
        assert_eq!(put(&app, &owner, helpdesk("sales")).await.status().as_u16(), 200);
        assert_eq!(department(&app).await.as_deref(), Some("sales"));
        // Changed behind the service's back: it goes on with what it read.
        change_behind(&app, "behind").await;
        assert_eq!(department(&app).await.as_deref(), Some("sales"));
        let viewed: Value = app.get_with(PATH, &owner).await.json().await.unwrap();
        assert_eq!(viewed["value"]["department"], "sales");
        // Changed through the API: at once.
        assert_eq!(put(&app, &owner, helpdesk("support")).await.status().as_u16(), 200);
        assert_eq!(department(&app).await.as_deref(), Some("support"));
        app.stop().await;
    }
}

/// A configuration whose `SWITCHBOARD_HELPDESK_*` variables are set.
fn seeding(db: &TestDb) -> Config {
    let mut config = test_config(db.config.clone());
    config.helpdesk = Config::from_lookup(|name| {
        let value = match name {
            "SWITCHBOARD_HELPDESK_KIND" => "generic",
            "SWITCHBOARD_HELPDESK_URL" => "https://seeded.example.com/api",
            "SWITCHBOARD_HELPDESK_TOKEN" => TOKEN,
            "SWITCHBOARD_HELPDESK_CALLBACK_SECRET" => CALLBACK,
            _ => return None,
        };
        Some(value.to_owned())
    })
    .unwrap()
    .helpdesk;
    config
}

both_backends! {
    async fn the_environment_gives_the_first_values_and_never_overrides_a_change(db) {
        let app = TestApp::spawn_with(seeding(&db)).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await.access_token;
        let seeded: Value = app.get_with(PATH, &owner).await.json().await.unwrap();
        assert_eq!(seeded["value"], json!({
            "kind": "generic", "enabled": true, "base_url": "https://seeded.example.com/api",
            "access_token": "••••9d1e", "callback_secret": "••••4e2d",
            "department": null, "store_text": true
        }));
        assert_eq!(seeded["updated_by"], Value::Null);
        assert!(!stored(&app, "integration:helpdesk").await.unwrap().contains(TOKEN));
        assert_eq!(put(&app, &owner, helpdesk("sales")).await.status().as_u16(), 200);
        app.stop().await;

        // Started again with the variables still set: the change stays.
        let app = TestApp::spawn_with(seeding(&db)).await;
        let read = app.state.settings.get::<Helpdesk>().await.unwrap().unwrap();
        assert_eq!(read.base_url.as_str(), "https://helpdesk.example.com/api");
        assert_eq!(read.department.as_deref(), Some("sales"));
        app.stop().await;
    }
}

/// Two instances on one database: a change through the first reaches the
/// second's cache within a second, carried by `NOTIFY` (the second goes on
/// with what it read until told).
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_reaches_the_others_cache_within_a_second() {
    use std::time::{Duration, Instant};

    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let first = TestApp::spawn(&db).await;
    let second = TestApp::spawn(&db).await;
    let owner = first
        .admin_with_role("owner@example.com", Role::Owner)
        .await
        .access_token;
    assert_eq!(department(&second).await, None);
    for wanted in ["sales", "support"] {
        assert_eq!(
            put(&first, &owner, helpdesk(wanted))
                .await
                .status()
                .as_u16(),
            200
        );
        let changed = Instant::now();
        while department(&second).await.as_deref() != Some(wanted) {
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "the second instance does not read {wanted:?} 1 s after the change"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // What it reads is its memory, not the database.
    change_behind(&first, "behind").await;
    assert_eq!(department(&second).await.as_deref(), Some("support"));
    second.stop().await;
    first.stop().await;
}
