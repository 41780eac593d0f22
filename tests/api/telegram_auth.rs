//! Cabinet sign-in through Telegram: the shared vectors over HTTP, fresh
//! payloads signed here, expiry, one-time widget use, user creation.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{BOT_TOKEN, TestApp, assert_problem, both_backends, test_config};

fn vectors() -> Value {
    serde_json::from_str(include_str!("../data/telegram_auth_vectors.json")).unwrap()
}

pub use crate::telegram_signing::sign_init_data;

pub fn fresh_init_data(telegram_id: i64, username: &str) -> String {
    sign_init_data(&[
        ("query_id", "AAH".to_owned()),
        (
            "user",
            json!({"id": telegram_id, "first_name": "Ann", "username": username, "language_code": "ru"}).to_string(),
        ),
        ("auth_date", chrono::Utc::now().timestamp().to_string()),
    ])
}

pub(crate) fn widget_fields(telegram_id: i64, auth_date: i64) -> Value {
    let mut fields = vec![
        ("auth_date".to_owned(), auth_date.to_string()),
        ("first_name".to_owned(), "Bob".to_owned()),
        ("id".to_owned(), telegram_id.to_string()),
        ("username".to_owned(), "bob".to_owned()),
    ];
    fields.sort();
    let check = fields
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let secret = Sha256::digest(BOT_TOKEN.as_bytes());
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&secret).unwrap();
    mac.update(check.as_bytes());
    let mut object: serde_json::Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    object.insert(
        "hash".into(),
        Value::String(hex::encode(mac.finalize().into_bytes())),
    );
    Value::Object(object)
}

both_backends! {
    async fn the_shared_vectors_sign_in_and_the_tampered_one_does_not(db) {
        let mut config = test_config(db.config.clone());
        // The vectors are dated 2025-11-21: accept any age here.
        config.telegram.auth_max_age = Duration::from_secs(100 * 365 * 86_400);
        let app = TestApp::spawn_with(config).await;
        let v = vectors();

        let first = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": v["mini_app"]["init_data"]})).await;
        assert_eq!(first.status().as_u16(), 200);
        let tokens: crate::helpers::Tokens = first.json().await.unwrap();
        let me: Value = app.get_with("/api/v1/cabinet/me", &tokens.access_token).await.json().await.unwrap();
        assert_eq!(me["telegram_id"], 279_058_397);
        assert_eq!(me["username"], "vdkfrost");

        // Replayed: accepted as the same user, nothing else.
        let again: crate::helpers::Tokens = app
            .post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": v["mini_app"]["init_data"]}))
            .await
            .json()
            .await
            .unwrap();
        let me_again: Value = app.get_with("/api/v1/cabinet/me", &again.access_token).await.json().await.unwrap();
        assert_eq!(me_again["id"], me["id"]);

        let tampered = app
            .post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": v["mini_app"]["tampered_init_data"]}))
            .await;
        assert_problem(tampered, 401, "invalid_telegram_auth").await;

        let widget = app.post("/api/v1/cabinet/auth/telegram/widget", None, v["login_widget"]["fields"].clone()).await;
        assert_eq!(widget.status().as_u16(), 200);
        let widget_tokens: crate::helpers::Tokens = widget.json().await.unwrap();
        let widget_me: Value = app.get_with("/api/v1/cabinet/me", &widget_tokens.access_token).await.json().await.unwrap();
        assert_eq!(widget_me["id"], me["id"], "the same Telegram account is the same user");
        app.stop().await;
    }
}

both_backends! {
    async fn expired_telegram_data_is_refused(db) {
        let app = TestApp::spawn(&db).await;
        let v = vectors();
        // Default maximum age: 24 hours; the vectors are a year old.
        let response = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": v["mini_app"]["init_data"]})).await;
        let body = assert_problem(response, 401, "invalid_telegram_auth").await;
        assert!(body["detail"].as_str().unwrap().contains("too old"));
        let response = app.post("/api/v1/cabinet/auth/telegram/widget", None, v["login_widget"]["fields"].clone()).await;
        assert_problem(response, 401, "invalid_telegram_auth").await;
        app.stop().await;
    }
}

both_backends! {
    async fn a_first_mini_app_sign_in_creates_the_user_once_with_its_source(db) {
        let app = TestApp::spawn(&db).await;
        for _ in 0..2 {
            let response = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": fresh_init_data(555, "ann")})).await;
            assert_eq!(response.status().as_u16(), 200);
        }
        let log = crate::event_store::read_whole_log(&app.state.store, 1).await;
        assert_eq!(log[0].event_type.as_str(), "user.created");
        assert_eq!(log[0].payload["source"], "mini_app");
        assert_eq!(log[0].payload["telegram_id"], 555);
        assert_eq!(log[0].actor.kind, switchboard::events::ActorKind::Telegram);
        app.stop().await;
    }
}

both_backends! {
    async fn a_login_widget_payload_works_once(db) {
        let app = TestApp::spawn(&db).await;
        let now = chrono::Utc::now().timestamp();
        let fields = widget_fields(777, now);
        let first = app.post("/api/v1/cabinet/auth/telegram/widget", None, fields.clone()).await;
        assert_eq!(first.status().as_u16(), 200);
        let second = app.post("/api/v1/cabinet/auth/telegram/widget", None, fields.clone()).await;
        assert_problem(second, 401, "invalid_telegram_auth").await;
        // The same payload with the hash in upper case is the same payload.
        let mut shouting = fields.clone();
        shouting["hash"] = json!(fields["hash"].as_str().unwrap().to_uppercase());
        let third = app.post("/api/v1/cabinet/auth/telegram/widget", None, shouting).await;
        assert_problem(third, 401, "invalid_telegram_auth").await;
        // A fresh payload for the same account works and finds the same user.
        let fresh = app.post("/api/v1/cabinet/auth/telegram/widget", None, widget_fields(777, now - 1)).await;
        assert_eq!(fresh.status().as_u16(), 200);
        app.stop().await;
    }
}

both_backends! {
    async fn malformed_telegram_bodies_are_4xx_problems(db) {
        let app = TestApp::spawn(&db).await;
        let response = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": "not=a&valid=payload"})).await;
        assert_problem(response, 401, "invalid_telegram_auth").await;
        let response = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init": 1})).await;
        assert_problem(response, 422, "invalid_body").await;
        let response = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": "x".repeat(10_000)})).await;
        let body = assert_problem(response, 422, "invalid_field").await;
        assert_eq!(body["field"], "init_data");
        let response = app.post("/api/v1/cabinet/auth/telegram/widget", None, json!({"id": [1]})).await;
        assert_problem(response, 422, "invalid_field").await;
        app.stop().await;
    }
}
