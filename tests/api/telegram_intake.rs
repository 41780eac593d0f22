//! `POST /telegram/webhook`: Telegram's updates, stored before the answer
//! and recorded in the log once each.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::helpers::{TestApp, TestDb, assert_problem, both_backends, test_config, wait_until};

const SECRET: &str = "telegram-webhook-secret-0123456789";

fn with_secret(db: &TestDb) -> switchboard::config::Config {
    let mut config = test_config(db.config.clone());
    config.telegram.webhook_secret = Some(secrecy::SecretString::from(SECRET));
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config
}

async fn send(app: &TestApp, secret: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/telegram/webhook", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(secret) = secret {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    request.send().await.unwrap()
}

/// The `telegram.update_received` events in the log, in order.
async fn recorded(app: &TestApp) -> Vec<Value> {
    let page = app
        .state
        .store
        .read_all(switchboard::events::Cursor::START, 1000)
        .await
        .unwrap();
    page.events
        .iter()
        .filter(|e| e.event_type.as_str() == "telegram.update_received")
        .map(|e| json!({"payload": e.payload, "actor": e.actor, "stream": e.stream.as_str()}))
        .collect()
}

async fn stored(app: &TestApp) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let row = app
        .state
        .db
        .conn()
        .query_one_raw(Statement::from_string(
            app.state.db.database_backend(),
            "SELECT COUNT(*) AS n FROM telegram_updates",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

both_backends! {
    async fn an_update_is_stored_before_the_answer_and_recorded_once(db) {
        let app = TestApp::spawn_with(with_secret(&db)).await;
        let update = json!({"update_id": 1001, "message": {"message_id": 5, "date": 1764590000, "chat": {"id": 42, "type": "private"}, "from": {"id": 42, "is_bot": false, "first_name": "Ann"}, "text": "hello"}});
        let answer = send(&app, Some(SECRET), &update.to_string()).await;
        assert_eq!(answer.status().as_u16(), 200);
        wait_until(|| async { !recorded(&app).await.is_empty() }).await;
        // Telegram sends it again (it did not hear the answer): one record.
        assert_eq!(send(&app, Some(SECRET), &update.to_string()).await.status().as_u16(), 200);
        let other = json!({"update_id": 1002, "edited_message": {"message_id": 5, "text": "hello!"}});
        assert_eq!(send(&app, Some(SECRET), &other.to_string()).await.status().as_u16(), 200);
        wait_until(|| async { recorded(&app).await.len() == 2 }).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let events = recorded(&app).await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0]["payload"], json!({"update_id": 1001, "update": update}));
        assert_eq!(events[0]["actor"]["kind"], "telegram");
        assert_eq!(events[0]["stream"], "telegram_update:1001");
        assert_eq!(events[1]["payload"]["update_id"], 1002);
        assert_eq!(stored(&app).await, 2);

        // Operators (tickets:read) see them in the event browser; a
        // webhook endpoint may take them.
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let page: Value = app.get_with("/api/v1/admin/events?type=telegram.*", &operator.access_token).await.json().await.unwrap();
        assert_eq!(page["events"].as_array().map(Vec::len), Some(2), "{page}");
        let endpoint = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "bot", "url": "http://localhost:9/hook", "event_types": ["telegram.update_received"]})).await;
        assert_eq!(endpoint.status().as_u16(), 201, "the type is in the catalogue");
        let misspelled: Value = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "bot", "url": "http://localhost:9/hook", "event_types": ["telegram.update_recieved"]})).await.json().await.unwrap();
        assert_eq!(misspelled["field"], "event_types", "{misspelled}");
        app.stop().await;
    }
}

both_backends! {
    async fn a_wrong_secret_or_a_malformed_update_stores_nothing(db) {
        let app = TestApp::spawn_with(with_secret(&db)).await;
        let update = json!({"update_id": 7, "message": {"text": "x"}}).to_string();
        for secret in [None, Some("wrong"), Some(&SECRET[..SECRET.len() - 1]), Some("")] {
            let answer = send(&app, secret, &update).await;
            assert_problem(answer, 401, "unauthorized").await;
        }
        assert_problem(send(&app, Some(SECRET), "{not json").await, 400, "malformed_json").await;
        for body in [json!({"message": {}}), json!({"update_id": -1}), json!({"update_id": "7"}), json!([7])] {
            assert_problem(send(&app, Some(SECRET), &body.to_string()).await, 422, "invalid_body").await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(stored(&app).await, 0);
        assert!(recorded(&app).await.is_empty());
        app.stop().await;

        // Without a secret configured the webhook is off.
        let off = TestApp::spawn(&db).await;
        assert_problem(send(&off, Some(SECRET), &update).await, 404, "not_found").await;
        off.stop().await;
    }
}

both_backends! {
    async fn an_update_stored_by_an_instance_that_died_before_recording_it_is_recorded_once(db) {
        // As the process leaves it when it dies right after answering 200.
        let first = TestApp::spawn_with(with_secret(&db)).await;
        first.stop().await;
        {
            use sea_orm::{ConnectionTrait, Statement};
            let db = switchboard::db::Db::connect(&db.config).await.unwrap();
            db.conn()
                .execute_raw(Statement::from_string(
                    db.database_backend(),
                    r#"INSERT INTO telegram_updates (update_id, body, received_at_ms) VALUES (55, '{"update_id": 55, "message": {"text": "left"}}', 0)"#,
                ))
                .await
                .unwrap();
            db.close().await;
        }
        let next = TestApp::spawn_with(with_secret(&db)).await;
        wait_until(|| async { recorded(&next).await.len() == 1 }).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(recorded(&next).await.len(), 1);
        assert_eq!(recorded(&next).await[0]["payload"]["update"]["message"]["text"], "left");
        next.stop().await;
    }
}
