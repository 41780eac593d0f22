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

/// The `telegram.*` events in the log, in order.
async fn recorded(app: &TestApp) -> Vec<Value> {
    logged(app, "telegram.").await
}

/// The events whose type starts with `prefix`, in log order.
async fn logged(app: &TestApp, prefix: &str) -> Vec<Value> {
    crate::helpers::whole_log(&app.state.store)
        .await
        .iter()
        .filter(|e| e.event_type.as_str().starts_with(prefix))
        .map(|e| json!({"type": e.event_type.as_str(), "payload": e.payload, "actor": e.actor, "stream": e.stream.as_str()}))
        .collect()
}

/// A private message from Telegram user `from` (update `update_id`).
fn message(update_id: i64, from: i64, fields: Value) -> Value {
    let mut message = json!({
        "message_id": update_id,
        "date": 1_764_590_000,
        "chat": {"id": from, "type": "private", "first_name": "Ann"},
        "from": {"id": from, "is_bot": false, "first_name": "Ann", "username": format!("ann{from}")},
    });
    if let (Some(m), Some(extra)) = (message.as_object_mut(), fields.as_object()) {
        m.extend(extra.clone());
    }
    json!({"update_id": update_id, "message": message})
}

/// The user with this Telegram id, as the admin API shows them.
pub(crate) async fn user_of(app: &TestApp, token: &str, telegram_id: i64) -> Value {
    let page: Value = app
        .get_with(&format!("/api/v1/admin/users?q={telegram_id}"), token)
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["telegram_id"] == telegram_id)
        .cloned()
        .unwrap_or(Value::Null)
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
        assert_eq!(events[0]["type"], "telegram.message_received");
        assert_eq!(events[0]["payload"]["text"], "hello");
        assert_eq!(events[0]["actor"]["kind"], "telegram");
        assert_eq!(events[0]["stream"], "telegram_update:1001");
        assert_eq!(events[1]["type"], "telegram.update_received");
        assert_eq!(events[1]["payload"], json!({"update_id": 1002, "update": other}));
        assert_eq!(stored(&app).await, 2);

        // Operators (tickets:read) see them in the event browser; a
        // webhook endpoint may take them.
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let page: Value = app.get_with("/api/v1/admin/events?type=telegram.*", &operator.access_token).await.json().await.unwrap();
        assert_eq!(page["events"].as_array().map(Vec::len), Some(2), "{page}");
        let endpoint = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "bot", "url": "http://localhost:9/hook", "event_types": ["telegram.update_received", "telegram.message_received", "user.bot_blocked", "user.bot_unblocked"]})).await;
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
        for body in [json!({"message": {}}), json!({"update_id": -1}), json!({"update_id": "7"}), json!([7]), json!({"update_id": 4_294_967_296_i64})] {
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
                    r#"INSERT INTO telegram_updates (update_id, body, received_at_ms) VALUES (55, '{"update_id": 55, "message": {"message_id": 1, "date": 1764590000, "chat": {"id": 77, "type": "private"}, "from": {"id": 77, "is_bot": false, "first_name": "Bo"}, "text": "left"}}', 0)"#,
                ))
                .await
                .unwrap();
            db.close().await;
        }
        let next = TestApp::spawn_with(with_secret(&db)).await;
        wait_until(|| async { recorded(&next).await.len() == 1 }).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        assert_eq!(recorded(&next).await.len(), 1);
        assert_eq!(recorded(&next).await[0]["payload"]["text"], "left");
        next.stop().await;
    }
}

both_backends! {
    async fn start_creates_a_telegram_user_once_with_their_referrer_and_chat(db) {
        let app = TestApp::spawn_with(with_secret(&db)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        crate::tickets::cabinet_user(&app, 500).await;
        let code = user_of(&app, &owner.access_token, 500).await["referral_code"].as_str().unwrap().to_owned();
        let start = message(1, 501, json!({"text": format!("/start {code}"), "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}));
        assert_eq!(send(&app, Some(SECRET), &start.to_string()).await.status().as_u16(), 200);
        wait_until(|| async { !user_of(&app, &owner.access_token, 501).await.is_null() }).await;
        let user = user_of(&app, &owner.access_token, 501).await;
        assert_eq!(user["username"], "ann501");
        assert_eq!(user["telegram_reachable"], true);
        let created = logged(&app, "user.created").await;
        let mine = created.iter().find(|e| e["payload"]["telegram_id"] == 501).unwrap();
        assert_eq!(mine["payload"]["source"], "telegram");
        assert_eq!(mine["payload"]["telegram_chat_id"], 501);
        assert_eq!(mine["actor"]["kind"], "telegram");
        let referrals = logged(&app, "referral.registered").await;
        assert_eq!(referrals.len(), 1, "{referrals:?}");
        assert_eq!(referrals[0]["payload"]["referee_id"], user["id"]);
        let received = logged(&app, "telegram.message_received").await;
        assert_eq!(received.len(), 1);
        assert_eq!(received[0]["payload"]["user_id"], user["id"]);
        assert_eq!(received[0]["payload"]["entities"][0]["type"], "bot_command");
        // A command is no ticket message.
        assert!(logged(&app, "ticket.").await.is_empty());

        // /start again: the message, and nothing about the user.
        send(&app, Some(SECRET), &message(2, 501, json!({"text": "/start"})).to_string()).await;
        wait_until(|| async { logged(&app, "telegram.message_received").await.len() == 2 }).await;
        assert_eq!(logged(&app, "user.").await.len(), 2, "the referrer's and this user's user.created only");

        // A user who signed in through the Mini App: their chat becomes known.
        let mini_app = user_of(&app, &owner.access_token, 500).await;
        assert_eq!(mini_app["telegram_reachable"], false);
        send(&app, Some(SECRET), &message(3, 500, json!({"text": "/start"})).to_string()).await;
        wait_until(|| async { user_of(&app, &owner.access_token, 500).await["telegram_reachable"] == true }).await;
        let updated = logged(&app, "user.updated").await;
        assert_eq!(updated.len(), 1, "{updated:?}");
        assert_eq!(updated[0]["payload"]["telegram_chat_id"], 500);
        assert_eq!(logged(&app, "user.created").await.len(), 2);
        app.stop().await;
    }
}

both_backends! {
    async fn private_messages_go_to_the_users_ticket_with_support_on_and_are_only_events_with_it_off(db) {
        let app = TestApp::spawn_with(with_secret(&db)).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        send(&app, Some(SECRET), &message(10, 600, json!({"text": "My payment is missing\nI paid yesterday"})).to_string()).await;
        send(&app, Some(SECRET), &message(11, 600, json!({"caption": "the receipt", "photo": [{"file_id": "AgAD", "file_unique_id": "u1", "width": 10, "height": 10, "file_size": 321}]})).to_string()).await;
        wait_until(|| async { logged(&app, "ticket.message_added").await.len() == 2 }).await;
        let created = logged(&app, "ticket.created").await;
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0]["payload"]["subject"], "My payment is missing");
        let messages = logged(&app, "ticket.message_added").await;
        assert_eq!(messages[0]["payload"]["channel"], "telegram");
        assert_eq!(messages[0]["payload"]["text"], "My payment is missing\nI paid yesterday");
        assert_eq!(messages[1]["payload"]["text"], "the receipt");
        assert_eq!(messages[1]["payload"]["ticket_id"], created[0]["payload"]["ticket_id"]);
        assert_eq!(messages[0]["actor"]["kind"], "user");
        let received = logged(&app, "telegram.message_received").await;
        assert_eq!(received[1]["payload"]["media"], json!([{"type": "photo", "file_id": "AgAD", "file_unique_id": "u1", "file_size": 321}]));
        let tickets: Value = app.get_with("/api/v1/admin/tickets", &operator.access_token).await.json().await.unwrap();
        assert_eq!(tickets["total"], 1, "{tickets}");
        // The photo is on the ticket's message, in the event and in the
        // ticket's view (the dashboard shows it through the files route).
        let photo = json!([{"type": "photo", "file_id": "AgAD", "file_unique_id": "u1", "file_size": 321}]);
        assert_eq!(messages[1]["payload"]["media"], photo);
        assert!(messages[0]["payload"].get("media").is_none(), "no files, no field");
        let id = created[0]["payload"]["ticket_id"].as_str().unwrap();
        let detail: Value = app.get_with(&format!("/api/v1/admin/tickets/{id}"), &operator.access_token).await.json().await.unwrap();
        assert_eq!(detail["messages"][1]["media"], photo, "{detail}");
        assert_eq!(detail["messages"][0]["media"], json!([]));

        // A user an admin blocked: the message is recorded, no ticket.
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        send(&app, Some(SECRET), &message(12, 601, json!({"text": "hi"})).to_string()).await;
        wait_until(|| async { logged(&app, "ticket.created").await.len() == 2 }).await;
        let blocked = user_of(&app, &owner.access_token, 601).await;
        let answer = app.post(&format!("/api/v1/admin/users/{}/block", blocked["id"].as_str().unwrap()), Some(&owner.access_token), json!({"reason": "spam"})).await;
        assert_eq!(answer.status().as_u16(), 200);
        send(&app, Some(SECRET), &message(13, 601, json!({"text": "again"})).to_string()).await;
        wait_until(|| async { logged(&app, "telegram.message_received").await.len() == 4 }).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(logged(&app, "ticket.message_added").await.len(), 3);
        app.stop().await;

        // Support off: messages are events only.
        let mut config = with_secret(&db);
        config.telegram.support = false;
        let off = TestApp::spawn_with(config).await;
        send(&off, Some(SECRET), &message(20, 602, json!({"text": "hello"})).to_string()).await;
        wait_until(|| async { logged(&off, "telegram.message_received").await.len() == 5 }).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(logged(&off, "ticket.message_added").await.len(), 3);
        off.stop().await;
    }
}

both_backends! {
    async fn a_user_blocking_and_allowing_the_bot_is_recorded_on_them(db) {
        let app = TestApp::spawn_with(with_secret(&db)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        send(&app, Some(SECRET), &message(30, 700, json!({"text": "/start"})).to_string()).await;
        wait_until(|| async { !user_of(&app, &owner.access_token, 700).await.is_null() }).await;
        let bot = json!({"id": 1, "is_bot": true, "first_name": "Bot"});
        let member = json!({"user": bot, "status": "member"});
        let kicked = json!({"user": bot, "status": "kicked", "until_date": 0});
        let change = |update_id: i64, old: &Value, new: &Value| json!({"update_id": update_id, "my_chat_member": {
            "chat": {"id": 700, "type": "private", "first_name": "Ann"},
            "from": {"id": 700, "is_bot": false, "first_name": "Ann"},
            "date": 1_764_590_000, "old_chat_member": old, "new_chat_member": new}});
        send(&app, Some(SECRET), &change(31, &member, &kicked).to_string()).await;
        wait_until(|| async { user_of(&app, &owner.access_token, 700).await["bot_blocked"] == true }).await;
        assert_eq!(user_of(&app, &owner.access_token, 700).await["telegram_reachable"], false);
        send(&app, Some(SECRET), &change(32, &kicked, &member).to_string()).await;
        wait_until(|| async { user_of(&app, &owner.access_token, 700).await["bot_blocked"] == false }).await;
        let types: Vec<Value> = logged(&app, "user.bot_").await.iter().map(|e| e["type"].clone()).collect();
        assert_eq!(types, vec![json!("user.bot_blocked"), json!("user.bot_unblocked")]);
        // The updates themselves, raw.
        let raw = logged(&app, "telegram.update_received").await;
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[0]["payload"]["update"]["my_chat_member"]["new_chat_member"]["status"], "kicked");
        app.stop().await;
    }
}
