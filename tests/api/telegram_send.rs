//! Sends through the Bot API: operator replies delivered to the user's
//! chat, the sender API, and Telegram's limits kept across instances, all
//! against a fake Bot API on loopback.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{auth::Role, telegram::outbox::Limits};

use crate::{
    fake_bot::{FakeBot, Reply},
    helpers::{TestApp, TestDb, assert_problem, both_backends, test_config, wait_until},
};

pub(crate) const SECRET: &str = "telegram-webhook-secret-0123456789";

/// The app's configuration with the fake as its Bot API, the webhook on,
/// and Telegram's limits scaled down so a test takes seconds.
pub(crate) fn config(db: &TestDb, bot: &FakeBot) -> switchboard::config::Config {
    let mut config = test_config(db.config.clone());
    config.telegram.webhook_secret = Some(secrecy::SecretString::from(SECRET));
    config.telegram.api_url = url::Url::parse(&bot.url()).unwrap();
    config.telegram.api_timeout = Duration::from_secs(1);
    config.telegram.limits = Limits {
        overall: None,
        private_chat: Duration::from_millis(100),
        group: Duration::from_millis(300),
    };
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config
}

/// Telegram user `from` (`@ann<from>`) writes `text` to the bot in their
/// private chat (message and update `update_id`).
pub(crate) async fn user_writes(app: &TestApp, update_id: i64, from: i64, text: &str) {
    let update = json!({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_590_000,
        "chat": {"id": from, "type": "private", "first_name": "Ann"},
        "from": {"id": from, "is_bot": false, "first_name": "Ann", "username": format!("ann{from}")},
        "text": text}});
    let answer = app
        .client
        .post(format!("{}/telegram/webhook", app.address))
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
}

/// The user's open ticket, once their message made one.
async fn ticket_of(app: &TestApp, token: &str, count: usize) -> Value {
    let page = || async {
        let page: Value = app
            .get_with("/api/v1/admin/tickets", token)
            .await
            .json()
            .await
            .unwrap();
        page
    };
    wait_until(|| async {
        page().await["items"]
            .as_array()
            .is_some_and(|items| items.len() >= count)
    })
    .await;
    page().await["items"][0].clone()
}

/// A new API key with one scope, made by `owner`.
pub(crate) async fn api_key(app: &TestApp, owner: &str, scope: &str) -> String {
    let key: Value = app
        .post(
            "/api/v1/admin/api-keys",
            Some(owner),
            json!({"name": scope, "scopes": [scope]}),
        )
        .await
        .json()
        .await
        .unwrap();
    key["secret"].as_str().unwrap().to_owned()
}

async fn sends(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_with(&format!("/api/v1/admin/telegram/sends{query}"), token)
        .await
        .json()
        .await
        .unwrap()
}

fn logged_types(events: &[switchboard::events::RecordedEvent], prefix: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event_type.as_str().starts_with(prefix))
        .map(|e| json!({"type": e.event_type.as_str(), "payload": e.payload}))
        .collect()
}

/// The whole log, once nothing committed is held back (another test's
/// transaction may hold the readable head back a moment).
async fn log(app: &TestApp) -> Vec<switchboard::events::RecordedEvent> {
    crate::helpers::whole_log(&app.state.store).await
}

both_backends! {
    async fn a_user_writes_and_an_operators_reply_reaches_their_chat(db) {
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let receiver = crate::webhooks::Receiver::ok().await;
        let endpoint = app.post("/api/v1/admin/webhooks", Some(&owner.access_token), json!({"name": "bot", "url": receiver.url(), "event_types": ["telegram.message_received"]})).await;
        assert_eq!(endpoint.status().as_u16(), 201);
        user_writes(&app, 1, 4200, "Where is my payment?").await;
        let ticket = ticket_of(&app, &owner.access_token, 1).await;
        receiver.wait_for_events(1).await;
        let delivered: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
        assert_eq!(delivered["type"], "telegram.message_received");
        assert_eq!(delivered["payload"]["text"], "Where is my payment?");

        let reply = app.post(&format!("/api/v1/admin/tickets/{}/messages", ticket["id"].as_str().unwrap()), Some(&owner.access_token), json!({"text": "Found it, credited."})).await;
        assert_eq!(reply.status().as_u16(), 201);
        let reply: Value = reply.json().await.unwrap();
        let send_id = reply["telegram_send_id"].as_str().unwrap().to_owned();
        let calls = bot.wait_for_calls(1).await;
        assert_eq!(calls[0].method, "sendMessage");
        assert_eq!(calls[0].params, json!({"chat_id": 4200, "text": "Found it, credited."}));
        assert_eq!(calls[0].token, format!("bot{}", crate::helpers::BOT_TOKEN));
        wait_until(|| async { sends(&app, &owner.access_token, "?status=sent").await["total"] == 1 }).await;
        let page = sends(&app, &owner.access_token, "?chat_id=4200").await;
        assert_eq!(page["items"][0]["id"], send_id.as_str());
        assert_eq!(page["items"][0]["origin"], "ticket_reply");
        assert_eq!(page["items"][0]["result"]["chat"]["id"], 4200);
        let sent = logged_types(&log(&app).await, "telegram.message_sent");
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["payload"]["send_id"], send_id.as_str());
        assert!(sent[0]["payload"]["message_id"].as_i64().is_some());

        // A reply with a photo is sent as one; a bad media is a 422 and
        // nothing is written.
        let path = format!("/api/v1/admin/tickets/{}/messages", ticket["id"].as_str().unwrap());
        for media in [json!({"type": "photo"}), json!({"type": "photo", "file_id": "a", "url": "https://x.test/p.jpg"}), json!({"type": "photo", "url": "ftp://x/y"}), json!({"type": "video", "file_id": "a"})] {
            let answer = app.post(&path, Some(&owner.access_token), json!({"text": "see", "media": media})).await;
            assert_eq!(answer.status().as_u16(), 422, "{media}");
        }
        let answer = app.post(&path, Some(&owner.access_token), json!({"text": "the receipt", "media": {"type": "photo", "file_id": "AgAD"}})).await;
        assert_eq!(answer.status().as_u16(), 201);
        let calls = bot.wait_for_calls(2).await;
        assert_eq!(calls[1].method, "sendPhoto");
        assert_eq!(calls[1].params, json!({"chat_id": 4200, "photo": "AgAD", "caption": "the receipt"}));
        let messages = logged_types(&log(&app).await, "ticket.message_added");
        assert_eq!(messages.len(), 3, "the user's and two replies");
        // Longer than a Telegram message: two messages, in order.
        let long = "a".repeat(4096) + &"b".repeat(904);
        let answer = app.post(&path, Some(&owner.access_token), json!({"text": long})).await;
        assert_eq!(answer.status().as_u16(), 201);
        let calls = bot.wait_for_calls(4).await;
        assert_eq!((calls[2].method.as_str(), calls[3].method.as_str()), ("sendMessage", "sendMessage"));
        assert_eq!(calls[2].params["text"].as_str().unwrap(), "a".repeat(4096));
        assert_eq!(calls[3].params["text"].as_str().unwrap(), "b".repeat(904));

        // An operator's reply to a user the bot cannot write to (signed in
        // by the Mini App, never wrote): no send.
        let user = crate::tickets::cabinet_user(&app, 4300).await;
        let opened = crate::tickets::open_ticket(&app, &user, "From the cabinet").await;
        let answer: Value = app.post(&format!("/api/v1/admin/tickets/{}/messages", opened["id"].as_str().unwrap()), Some(&owner.access_token), json!({"text": "hi"})).await.json().await.unwrap();
        assert!(answer.get("telegram_send_id").is_none(), "{answer}");
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn telegram_429_5xx_403_and_lost_answers_are_handled_as_telegram_means_them(db) {
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let key = api_key(&app, &owner.access_token, "telegram:send").await;
        let send = |chat: i64, text: &str| {
            let request = app.client.post(format!("{}/api/v1/telegram/sendMessage?wait=true", app.address)).header("X-API-Key", &key).json(&json!({"chat_id": chat, "text": text}));
            async move {
                let answer = request.send().await.unwrap();
                (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
            }
        };
        // 429: sent again after retry_after, not before.
        bot.script(10, &[Reply::RetryAfter(1)]);
        let (status, body) = send(10, "a").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("sent")), "{body}");
        let calls: Vec<_> = bot.calls().into_iter().filter(|c| c.chat_id() == 10).collect();
        assert_eq!(calls.len(), 2);
        assert!(calls[1].at - calls[0].at >= Duration::from_millis(990), "{:?}", calls[1].at - calls[0].at);
        // 5xx: tried again with backoff.
        bot.script(11, &[Reply::Unavailable]);
        let (status, body) = send(11, "b").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("sent")), "{body}");
        assert_eq!(body["attempts"], 2);
        // A lost answer: unknown, and never sent again.
        bot.script(12, &[Reply::Hang]);
        let (status, body) = send(12, "c").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("unknown")), "{body}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(bot.calls().iter().filter(|c| c.chat_id() == 12).count(), 1);
        let failed = logged_types(&log(&app).await, "telegram.send_failed");
        assert_eq!(failed[0]["payload"]["status"], "unknown");

        // 403 from a user who blocked the bot: user.bot_blocked, and
        // nothing more is sent to them until they allow it again.
        user_writes(&app, 5, 13, "/start").await;
        wait_until(|| async { !logged_types(&log(&app).await, "user.created").is_empty() }).await;
        bot.script(13, &[Reply::Blocked]);
        let (status, body) = send(13, "d").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("failed")), "{body}");
        assert_eq!(body["error"], "Forbidden: bot was blocked by the user");
        let blocked = logged_types(&log(&app).await, "user.bot_blocked");
        assert_eq!(blocked.len(), 1, "{blocked:?}");
        let (status, body) = send(13, "e").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("failed")), "{body}");
        assert_eq!(body["error"], "the user blocked the bot");
        assert_eq!(bot.calls().iter().filter(|c| c.chat_id() == 13).count(), 1, "no call after the block");
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn the_sender_api_queues_each_method_with_its_parameters_and_checks_them(db) {
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let key = api_key(&app, &owner.access_token, "telegram:send").await;
        let reader = api_key(&app, &owner.access_token, "events:read").await;
        let post = |path: &str, key: &str, body: Value| {
            app.client.post(format!("{}{path}", app.address)).header("x-api-key", key).json(&body).send()
        };
        let calls = [
            ("sendMessage", json!({"chat_id": 21, "text": "hi", "parse_mode": "HTML"})),
            ("sendPhoto", json!({"chat_id": 22, "photo": "AgAD", "caption": "c"})),
            ("sendDocument", json!({"chat_id": 23, "document": "https://files.test/a.pdf"})),
            ("sendAudio", json!({"chat_id": 24, "audio": "CQAD"})),
            ("sendVoice", json!({"chat_id": 25, "voice": "AwAD"})),
            ("sendVideo", json!({"chat_id": 26, "video": "BAAD"})),
            ("editMessageText", json!({"chat_id": 27, "message_id": 5, "text": "edited"})),
            ("deleteMessage", json!({"chat_id": "28", "message_id": 6})),
        ];
        for (method, params) in &calls {
            let answer = post(&format!("/api/v1/telegram/{method}"), &key, params.clone()).await.unwrap();
            assert_eq!(answer.status().as_u16(), 202, "{method}");
            let body: Value = answer.json().await.unwrap();
            assert_eq!(body["status"], "queued");
            assert!(body["id"].as_str().is_some());
        }
        let received = bot.wait_for_calls(calls.len()).await;
        for (method, params) in &calls {
            let call = received.iter().find(|c| &c.method == method).unwrap();
            let mut expected = params.clone();
            expected["chat_id"] = json!(expected["chat_id"].as_i64().unwrap_or(28));
            assert_eq!(call.params, expected, "{method}");
        }
        // Waiting: Telegram's own result; then the send by its id.
        let answer = post("/api_v1/sendMessage?wait=true", &key, json!({"chat_id": 29, "text": "old path"})).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!((body["status"].as_str(), body["result"]["text"].as_str()), (Some("sent"), Some("old path")), "{body}");
        let view: Value = app.client.get(format!("{}/api/v1/telegram/sends/{}", app.address, body["id"].as_str().unwrap())).header("X-API-Key", &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(view["result"]["chat"]["id"], 29);
        // Refusals: the scope, the method, the parameters.
        assert_problem(post("/api/v1/telegram/sendMessage", &reader, json!({"chat_id": 1, "text": "x"})).await.unwrap(), 403, "forbidden").await;
        let unauthenticated = app.client.post(format!("{}/api/v1/telegram/sendMessage", app.address)).json(&json!({"chat_id": 1, "text": "x"})).send().await.unwrap();
        assert_problem(unauthenticated, 401, "unauthorized").await;
        let answer = post("/api/v1/telegram/getUpdates", &key, json!({})).await.unwrap();
        let problem = assert_problem(answer, 404, "not_found").await;
        assert!(problem["detail"].as_str().unwrap().contains("sendMessage"), "{problem}");
        for (method, body, field) in [
            ("sendMessage", json!({"text": "x"}), "chat_id"),
            ("sendMessage", json!({"chat_id": "@channel", "text": "x"}), "chat_id"),
            ("sendMessage", json!({"chat_id": 1}), "text"),
            ("sendMessage", json!({"chat_id": 1, "text": "x".repeat(4097)}), "text"),
            ("sendPhoto", json!({"chat_id": 1, "photo": "file:///etc/passwd"}), "photo"),
            ("deleteMessage", json!({"chat_id": 1, "message_id": "five"}), "message_id"),
        ] {
            let problem = assert_problem(post(&format!("/api/v1/telegram/{method}"), &key, body.clone()).await.unwrap(), 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}");
        }
        assert_problem(post("/api/v1/telegram/sendMessage", &key, json!([1])).await.unwrap(), 422, "invalid_body").await;
        let missing: Value = app.client.get(format!("{}/api/v1/telegram/sends/nope", app.address)).header("X-API-Key", &key).send().await.unwrap().json().await.unwrap();
        assert_eq!(missing["code"], "not_found");
        // The admin list needs tickets:read.
        let page = app.client.get(format!("{}/api/v1/admin/telegram/sends", app.address)).header("X-API-Key", &key).send().await.unwrap();
        assert_problem(page, 403, "forbidden").await;
        let page = sends(&app, &owner.access_token, "?status=sent&limit=200").await;
        assert_eq!(page["total"], 9, "{page}");
        assert_problem(app.get_with("/api/v1/admin/telegram/sends?status=lost", &owner.access_token).await, 422, "invalid_field").await;
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn files_uploaded_to_the_sender_api_reach_the_bot_api_and_are_not_kept_after(db) {
        use reqwest::multipart::{Form, Part};
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let key = api_key(&app, &owner.access_token, "telegram:send").await;
        let post = |method: &str, form: Form| {
            app.client.post(format!("{}/api/v1/telegram/{method}?wait=true", app.address)).header("x-api-key", &key).multipart(form).send()
        };
        let file = |name: &str, mime: &str, bytes: Vec<u8>| Part::bytes(bytes).file_name(name.to_owned()).mime_str(mime).unwrap();
        let photo: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let form = Form::new().text("chat_id", "31").text("caption", "a cat")
            .text("reply_markup", r#"{"inline_keyboard":[[{"text":"ok","callback_data":"y"}]]}"#)
            .part("photo", file("cat.png", "image/png", photo.clone()));
        let answer = post("sendPhoto", form).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "sent", "{body}");
        let form = Form::new().text("chat_id", "32")
            .part("document", file("report.pdf", "application/pdf", b"%PDF-1.7".to_vec()))
            .part("thumbnail", file("thumb.jpg", "image/jpeg", b"JPEG".to_vec()));
        assert_eq!(post("sendDocument", form).await.unwrap().status().as_u16(), 200);
        let calls = bot.wait_for_calls(2).await;
        let sent = calls.iter().find(|c| c.method == "sendPhoto").unwrap();
        assert_eq!(sent.params, json!({"chat_id": "31", "caption": "a cat", "reply_markup": r#"{"inline_keyboard":[[{"text":"ok","callback_data":"y"}]]}"#}));
        assert_eq!(sent.files, vec![("photo".to_owned(), "cat.png".to_owned(), "image/png".to_owned(), photo)]);
        let document = calls.iter().find(|c| c.method == "sendDocument").unwrap();
        let names: Vec<(&str, &str)> = document.files.iter().map(|(field, name, _, _)| (field.as_str(), name.as_str())).collect();
        assert_eq!(names, [("document", "report.pdf"), ("thumbnail", "thumb.jpg")]);
        // A form without files is a send like a JSON one.
        let answer = post("sendMessage", Form::new().text("chat_id", "33").text("text", "plain form")).await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let calls = bot.wait_for_calls(3).await;
        assert_eq!(calls[2].params["text"], "plain form");
        // Sent files are not kept.
        let db_conn = app.state.db.conn();
        let left = sea_orm::ConnectionTrait::query_one_raw(db_conn, app.state.db.statement("SELECT COUNT(*) AS n FROM telegram_uploads", vec![])).await.unwrap().unwrap();
        assert_eq!(left.try_get::<i64>("", "n").unwrap(), 0);
        // Refusals: a file the method does not take, an empty one, one over the Bot API's limit, a body of another kind.
        let refused = post("sendMessage", Form::new().text("chat_id", "1").text("text", "x").part("photo", file("a.png", "image/png", b"x".to_vec()))).await.unwrap();
        assert_eq!(assert_problem(refused, 422, "invalid_field").await["field"], "photo");
        let refused = post("sendVoice", Form::new().text("chat_id", "1").part("voice", file("a.ogg", "audio/ogg", b"x".to_vec())).part("thumbnail", file("t.jpg", "image/jpeg", b"x".to_vec()))).await.unwrap();
        assert_eq!(assert_problem(refused, 422, "invalid_field").await["field"], "thumbnail");
        let refused = post("sendPhoto", Form::new().text("chat_id", "1").part("photo", file("a.png", "image/png", Vec::new()))).await.unwrap();
        assert_eq!(assert_problem(refused, 422, "invalid_field").await["field"], "photo");
        let refused = post("sendPhoto", Form::new().text("chat_id", "1").part("photo", file("a.png", "image/png", vec![0; 10 * 1024 * 1024 + 1]))).await.unwrap();
        assert_problem(refused, 413, "payload_too_large").await;
        let refused = post("sendPhoto", Form::new().text("chat_id", "1").text("chat_id", "2").part("photo", file("a.png", "image/png", b"x".to_vec()))).await.unwrap();
        assert_eq!(assert_problem(refused, 422, "invalid_field").await["field"], "chat_id");
        let refused = app.client.post(format!("{}/api/v1/telegram/sendMessage", app.address)).header("x-api-key", &key).header("content-type", "multipart/form-data; boundary=x").body("not a form").send().await.unwrap();
        assert_problem(refused, 400, "malformed_form").await;
        let refused = app.client.post(format!("{}/api/v1/telegram/sendMessage", app.address)).header("x-api-key", &key).header("content-type", "text/plain").body("chat_id=1").send().await.unwrap();
        assert_problem(refused, 415, "unsupported_media_type").await;
        assert_eq!(bot.calls().len(), 3, "nothing refused reached Telegram");
        app.stop().await;
        bot.stop().await;
    }
}

/// Two instances send a backlog of 2,000 messages to different chats and
/// 200 to one chat together: the fake sees the overall rate and each chat's
/// interval kept (Telegram's limits scaled down: 200 a second overall,
/// 50 ms between two messages to one chat).
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_together_keep_the_overall_and_per_chat_limits() {
    const ONE_CHAT: usize = 200;
    const CHATS: usize = 2000;
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let bot = FakeBot::start().await;
    let mut config = config(&db, &bot);
    config.telegram.limits.overall = Some(Duration::from_millis(5));
    config.telegram.limits.private_chat = Duration::from_millis(50);
    // Queued before the instances start, as a backlog they share.
    {
        let db = switchboard::db::Db::connect(&db.config).await.unwrap();
        db.migrate().await.unwrap();
        let mut sends: Vec<(i64, usize)> = (0..ONE_CHAT).map(|n| (7, n)).collect();
        sends.extend((0..CHATS).map(|n| (1000 + n as i64, n)));
        for (chat, n) in sends {
            let send = switchboard::telegram::outbox::NewSend::new(
                chat,
                "sendMessage",
                json!({"chat_id": chat, "text": format!("m{n}")}),
                "api",
            );
            db.write_once(async |conn| {
                switchboard::telegram::outbox::enqueue(conn, &db, &send).await
            })
            .await
            .unwrap();
        }
        db.close().await;
    }
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let owner = a.admin_with_role("o@example.com", Role::Owner).await;
    let calls = bot.wait_for_calls(ONE_CHAT + CHATS).await;
    let one_chat: Vec<_> = calls.iter().filter(|c| c.chat_id() == 7).collect();
    assert_eq!(one_chat.len(), ONE_CHAT);
    let texts: Vec<&str> = one_chat
        .iter()
        .map(|c| c.params["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..ONE_CHAT).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "one chat's messages in order");
    // Claimed 50 ms apart at least. A call leaves some ms after its claim
    // (on these two busy cores, up to a few tens), so two calls may look
    // closer; five in a row never do.
    for run in one_chat.windows(5) {
        let span = run[4].at - run[0].at;
        assert!(
            span >= Duration::from_millis(4 * 50 - 40),
            "five sends to one chat within {span:?}"
        );
    }
    let span = one_chat[ONE_CHAT - 1].at - one_chat[0].at;
    assert!(
        span >= Duration::from_millis(50 * (ONE_CHAT as u64 - 1) - 30),
        "{ONE_CHAT} sends to one chat 50 ms apart took {span:?}"
    );
    // The overall rate: no second holds more than 200 (+5 %, the calls
    // leave a few ms after their claims).
    let mut times: Vec<_> = calls.iter().map(|c| c.at).collect();
    times.sort();
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] > Duration::from_secs(1) {
            start += 1;
        }
        assert!(
            end - start < 210,
            "{} sends within a second",
            end - start + 1
        );
    }
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_millis(10_500),
        "2,200 sends at 200/s took {span:?}"
    );
    // Each outcome is recorded just after its call.
    wait_until(|| async {
        sends(&a, &owner.access_token, "?status=sent&limit=1").await["total"]
            == (ONE_CHAT + CHATS) as i64
    })
    .await;
    assert_eq!(bot.calls().len(), ONE_CHAT + CHATS, "no send made twice");
    a.stop().await;
    b.stop().await;
    bot.stop().await;
}

both_backends! {
    async fn in_poll_mode_updates_come_by_get_updates_and_are_confirmed_once_stored(db) {
        let bot = FakeBot::start().await;
        let mut config = config(&db, &bot);
        config.telegram.webhook_secret = None;
        config.telegram.poll = true;
        let update = |id: i64, text: &str| json!({"update_id": id, "message": {
            "message_id": id, "date": 1_764_590_000,
            "chat": {"id": 900, "type": "private", "first_name": "Po"},
            "from": {"id": 900, "is_bot": false, "first_name": "Po"}, "text": text}});
        bot.queue_updates(&[update(70, "first"), update(71, "second")]);
        let app = TestApp::spawn_with(config).await;
        wait_until(|| async { logged_types(&log(&app).await, "telegram.message_received").len() == 2 }).await;
        // The next call confirms both (offset 72), and they are not handed
        // out or recorded again.
        wait_until(|| async { bot.calls().iter().any(|c| c.method == "getUpdates" && c.params["offset"] == 72) }).await;
        bot.queue_updates(&[update(72, "third")]);
        wait_until(|| async { logged_types(&log(&app).await, "telegram.message_received").len() == 3 }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let texts: Vec<Value> = logged_types(&log(&app).await, "telegram.message_received").iter().map(|e| e["payload"]["text"].clone()).collect();
        assert_eq!(texts, vec![json!("first"), json!("second"), json!("third")]);
        assert!(bot.calls().iter().all(|c| c.method != "getUpdates" || c.params["timeout"].as_u64().is_some()));
        app.stop().await;
        bot.stop().await;
    }
}

#[tokio::test]
async fn set_webhook_registers_the_url_with_a_new_secret_and_says_how_to_configure_it() {
    let bot = FakeBot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
    let api = bot.url();
    let run = move |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["telegram", "set-webhook", "--url", url])
            .env("DATABASE_URL", &database)
            .env(
                "SWITCHBOARD_JWT_SECRET",
                "set-webhook-test-secret-0123456789abcdef",
            )
            .env("SWITCHBOARD_TELEGRAM_BOT_TOKEN", crate::helpers::BOT_TOKEN)
            .env("SWITCHBOARD_TELEGRAM_API_URL", &api)
            .env_remove("SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET")
            .output()
            .unwrap()
    };
    let refused = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run("http://bot.example/telegram/webhook")
    })
    .await
    .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("https"));
    let done = tokio::task::spawn_blocking(move || run("https://bot.example/telegram/webhook"))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(
        done.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let secret = out
        .split("SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert!(
        secret.len() >= 32
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{secret}"
    );
    let calls = bot.calls();
    let call = calls
        .iter()
        .find(|c| c.method.eq_ignore_ascii_case("setWebhook"))
        .unwrap();
    assert!(
        call.body.contains("https://bot.example/telegram/webhook"),
        "{}",
        call.body
    );
    assert!(
        call.body.contains(&secret),
        "the secret printed is the one registered"
    );
    bot.stop().await;
}

/// A Telegram update of user `from` with `kind` (`pre_checkout_query`, or
/// a `message` with `successful_payment`).
async fn telegram_sends(app: &TestApp, update: Value) {
    let answer = app
        .client
        .post(format!("{}/telegram/webhook", app.address))
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
}

fn pre_checkout(update_id: i64, from: i64, total: i64, payload: &str) -> Value {
    json!({"update_id": update_id, "pre_checkout_query": {
        "id": format!("q{update_id}"), "currency": "XTR", "total_amount": total, "invoice_payload": payload,
        "from": {"id": from, "is_bot": false, "first_name": "Sy"}}})
}

fn paid(update_id: i64, from: i64, total: i64, payload: &str, charge: &str) -> Value {
    json!({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1_764_590_000,
        "chat": {"id": from, "type": "private", "first_name": "Sy"},
        "from": {"id": from, "is_bot": false, "first_name": "Sy"},
        "successful_payment": {"currency": "XTR", "total_amount": total, "invoice_payload": payload,
            "telegram_payment_charge_id": charge, "provider_payment_charge_id": ""}}})
}

both_backends! {
    async fn stars_invoices_are_checked_before_payment_and_credit_the_balance_once(db) {
        let bot = FakeBot::start().await;
        let mut config = config(&db, &bot);
        config.plans.push(switchboard::config::Plan { id: "stars_month".into(), name: "Month".into(), days: 30, price: 100, currency: "XTR".into() });
        let app = TestApp::spawn_with(config).await;
        let user = crate::tickets::cabinet_user(&app, 950).await;
        let invoice = |body: Value| app.post("/api/v1/cabinet/stars/invoice", Some(&user.access_token), body);
        // Refusals first: nothing reaches Telegram.
        for body in [json!({}), json!({"amount": 5, "plan_id": "stars_month"}), json!({"amount": 0}), json!({"amount": 100_001}), json!({"plan_id": "monthly"}), json!({"plan_id": "none"})] {
            let answer = invoice(body.clone()).await;
            assert_eq!(answer.status().as_u16(), 422, "{body}");
        }
        let anonymous = app.post("/api/v1/cabinet/stars/invoice", None, json!({"amount": 5})).await;
        assert_problem(anonymous, 401, "unauthorized").await;
        assert!(bot.calls().is_empty());

        let answer = invoice(json!({"amount": 250})).await;
        assert_eq!(answer.status().as_u16(), 201);
        let out: Value = answer.json().await.unwrap();
        assert!(out["invoice_link"].as_str().unwrap().starts_with("https://t.me/"), "{out}");
        let call = bot.calls().into_iter().find(|c| c.method == "createInvoiceLink").unwrap();
        assert_eq!(call.params["currency"], "XTR");
        assert_eq!(call.params["prices"][0]["amount"], 250);
        let payload = call.params["payload"].as_str().unwrap().to_owned();
        assert!(payload.len() <= 128);

        // Pre-checkout: ok for our payload and amount, refused otherwise.
        telegram_sends(&app, pre_checkout(1, 950, 250, &payload)).await;
        telegram_sends(&app, pre_checkout(2, 950, 249, &payload)).await;
        telegram_sends(&app, pre_checkout(3, 950, 250, &payload.replace(":250:", ":25:"))).await;
        let answered = || bot.calls().into_iter().filter(|c| c.method == "answerPreCheckoutQuery").collect::<Vec<_>>();
        wait_until(|| async { answered().len() == 3 }).await;
        let answers = answered();
        let ok_of = |id: &str| answers.iter().find(|c| c.params["pre_checkout_query_id"] == id).map(|c| c.params.clone()).unwrap();
        assert_eq!(ok_of("q1")["ok"], true);
        assert_eq!(ok_of("q2")["ok"], false);
        assert!(ok_of("q2")["error_message"].as_str().is_some());
        assert_eq!(ok_of("q3")["ok"], false);

        // The payment: credited once, whatever Telegram resends.
        telegram_sends(&app, paid(4, 950, 250, &payload, "charge-1")).await;
        telegram_sends(&app, paid(5, 950, 250, &payload, "charge-1")).await;
        wait_until(|| async { logged_types(&log(&app).await, "telegram.update_received").len() == 5 }).await;
        let completed = logged_types(&log(&app).await, "payment.completed");
        assert_eq!(completed.len(), 1, "{completed:?}");
        assert_eq!(completed[0]["payload"]["provider"], "telegram_stars");
        assert_eq!(completed[0]["payload"]["external_id"], "charge-1");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance, json!([{"currency": "XTR", "balance": 250}]), "{balance}");

        // A plan priced in Stars: paid, and bought from that balance.
        let out: Value = invoice(json!({"plan_id": "stars_month"})).await.json().await.unwrap();
        assert_eq!(out["amount"], 100);
        let call = bot.calls().into_iter().rfind(|c| c.method == "createInvoiceLink").unwrap();
        let payload = call.params["payload"].as_str().unwrap().to_owned();
        telegram_sends(&app, paid(6, 950, 100, &payload, "charge-2")).await;
        wait_until(|| async { !logged_types(&log(&app).await, "subscription.").is_empty() }).await;
        let subscription: Value = app.get_with("/api/v1/cabinet/subscription", &user.access_token).await.json().await.unwrap();
        assert_eq!(subscription["plan_id"], "stars_month", "{subscription}");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 250, "the plan was paid with what was paid for it: {balance}");
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn an_operator_fetches_a_file_a_user_sent_and_no_one_else_can(db) {
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let answer = app.get_with("/api/v1/admin/telegram/files/AgADphoto-1_x", &operator.access_token).await;
        assert_eq!(answer.status().as_u16(), 200);
        assert_eq!(answer.headers()["content-type"], "image/jpeg");
        let headers = format!("{:?}", answer.headers());
        assert!(!headers.contains(crate::helpers::BOT_TOKEN), "{headers}");
        assert_eq!(answer.bytes().await.unwrap().as_ref(), crate::fake_bot::PHOTO);
        let call = bot.calls().into_iter().find(|c| c.method == "getFile").unwrap();
        assert_eq!(call.params["file_id"], "AgADphoto-1_x");
        assert!(bot.calls().iter().any(|c| c.method.ends_with("photos/file_1.jpg")), "downloaded by the path getFile gave");
        // Unknown to Telegram, or not a file id: 404.
        assert_problem(app.get_with("/api/v1/admin/telegram/files/missing", &operator.access_token).await, 404, "not_found").await;
        assert_problem(app.get_with("/api/v1/admin/telegram/files/a.b", &operator.access_token).await, 404, "not_found").await;
        // Only for tickets:read, never without a credential.
        let key = api_key(&app, &owner.access_token, "events:read").await;
        let denied = app.client.get(format!("{}/api/v1/admin/telegram/files/AgAD", app.address)).header("X-API-Key", &key).send().await.unwrap();
        assert_problem(denied, 403, "forbidden").await;
        let anonymous = app.client.get(format!("{}/api/v1/admin/telegram/files/AgAD", app.address)).send().await.unwrap();
        assert_problem(anonymous, 401, "unauthorized").await;
        let user = crate::tickets::cabinet_user(&app, 960).await;
        assert_eq!(app.get_with("/api/v1/admin/telegram/files/AgAD", &user.access_token).await.status().as_u16(), 401, "a cabinet token");
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn outcomes_recorded_together_record_each_send_once(db) {
        use switchboard::telegram::{outbox, sender::{Ended, RecordOutcomes}};
        // No bot token: no sender of the app's own takes these sends.
        let mut config = test_config(db.config.clone());
        config.telegram.bot_token = None;
        let app = TestApp::spawn_with(config).await;
        let state = &app.state;
        for chat in [1, 2] {
            let send = outbox::NewSend::new(chat, "sendMessage", json!({"chat_id": chat, "text": "hi"}), "api");
            state.db.write_once(async |conn| outbox::enqueue(conn, &state.db, &send).await).await.unwrap();
        }
        let limits = Limits { overall: None, private_chat: Duration::ZERO, group: Duration::ZERO };
        let claimed = outbox::claim(&state.db, &limits, 10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(claimed.sends.len(), 2);
        let (first, second) = (claimed.sends[0].clone(), claimed.sends[1].clone());
        // The first send's late answer and, in the same batch, its outcome as
        // a lost send: only the first is recorded.
        let outcomes = vec![
            (first.clone(), Ended::Sent(json!({"message_id": 7}))),
            (second.clone(), Ended::Failed { error: "Bad Request: chat not found".into(), code: Some(400), blocked: false }),
            (first.clone(), Ended::Unknown("lost".into())),
        ];
        let done = state.commands.run(RecordOutcomes::new(state.db.clone(), outcomes), switchboard::events::Actor::system()).await.unwrap();
        assert_eq!(done.output, vec![true, true, false]);
        let first_row = outbox::get(&state.db, &first.id).await.unwrap().unwrap();
        assert_eq!(first_row.status.as_str(), "sent");
        assert_eq!(first_row.result, Some(json!({"message_id": 7})));
        let second_row = outbox::get(&state.db, &second.id).await.unwrap().unwrap();
        assert_eq!(second_row.status.as_str(), "failed");
        assert_eq!(second_row.error.as_deref(), Some("Bad Request: chat not found"));
        let types: Vec<String> = crate::helpers::whole_log(&state.store).await.iter()
            .filter(|e| e.event_type.as_str().starts_with("telegram."))
            .map(|e| e.event_type.as_str().to_owned()).collect();
        assert_eq!(types, ["telegram.message_sent", "telegram.send_failed"]);
        // Recorded already: nothing more is written.
        let again = state.commands.run(RecordOutcomes::new(state.db.clone(), vec![(first, Ended::Unknown("lost".into()))]), switchboard::events::Actor::system()).await.unwrap();
        assert_eq!(again.output, vec![false]);
        assert!(again.events.is_empty());
        app.stop().await;
    }
}
