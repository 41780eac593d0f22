//! Broadcasts against a fake Bot API on loopback: audiences and their
//! narrowing, content, schedules, the older service's entry point, a
//! restart mid-run, cancelling, and Telegram's limits across two
//! instances.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    fake_bot::{FakeBot, Reply},
    helpers::{TestApp, assert_problem, both_backends, wait_until, whole_log},
    telegram_intake::user_of,
    telegram_send::{SECRET, api_key, config},
};

/// Telegram users `ids` press /start (in `language`), sixteen at a time;
/// returns once every one is a user.
pub(crate) async fn users(app: &TestApp, owner: &str, ids: std::ops::Range<i64>, language: &str) {
    use futures::StreamExt;
    let before = user_count(app, owner).await;
    let count = ids.end - ids.start;
    futures::stream::iter(ids)
        .map(|id| async move {
            let update = json!({"update_id": id, "message": {
                "message_id": 1, "date": 1_764_590_000,
                "chat": {"id": id, "type": "private", "first_name": "U"},
                "from": {"id": id, "is_bot": false, "first_name": "U", "language_code": language},
                "text": "/start"}});
            let answer = app
                .client
                .post(format!("{}/telegram/webhook", app.address))
                .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
                .json(&update)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 200);
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    wait_long(Duration::from_secs(60), || async {
        user_count(app, owner).await >= before + count
    })
    .await;
}

async fn user_count(app: &TestApp, owner: &str) -> i64 {
    let page: Value = app
        .get_with("/api/v1/admin/users?per_page=1", owner)
        .await
        .json()
        .await
        .unwrap();
    page["total"].as_i64().unwrap()
}

async fn wait_long<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "condition not met in {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn broadcast(app: &TestApp, owner: &str, id: &str) -> Value {
    app.get_with(&format!("/api/v1/admin/broadcasts/{id}"), owner)
        .await
        .json()
        .await
        .unwrap()
}

/// Waits until broadcast `id` has `status`; returns it.
async fn ended(app: &TestApp, owner: &str, id: &str, status: &str, limit: Duration) -> Value {
    wait_long(limit, || async {
        broadcast(app, owner, id).await["status"] == status
    })
    .await;
    broadcast(app, owner, id).await
}

fn adds_up(b: &Value) {
    let c = &b["counts"];
    let sum: i64 = [
        "queued",
        "sent",
        "failed",
        "blocked",
        "unknown",
        "cancelled",
    ]
    .iter()
    .map(|k| c[*k].as_i64().unwrap())
    .sum();
    assert_eq!(sum, c["total"].as_i64().unwrap(), "{c}");
}

both_backends! {
    async fn a_broadcast_reaches_its_narrowed_audience_with_its_media_and_buttons(db) {
        let bot = FakeBot::start().await;
        let app = TestApp::spawn_with(config(&db, &bot)).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let token = owner.access_token.as_str();
        users(&app, token, 101..103, "ru").await;
        users(&app, token, 103..105, "en").await;
        // 103 is blocked by an admin; 104 blocks the bot.
        let blocked = user_of(&app, token, 103).await;
        let answer = app.post(&format!("/api/v1/admin/users/{}/block", blocked["id"].as_str().unwrap()), Some(token), json!({"reason": "spam"})).await;
        assert_eq!(answer.status().as_u16(), 200);
        let bot_user = json!({"id": 1, "is_bot": true, "first_name": "Bot"});
        let kicked = json!({"update_id": 900, "my_chat_member": {
            "chat": {"id": 104, "type": "private", "first_name": "U"},
            "from": {"id": 104, "is_bot": false, "first_name": "U"}, "date": 1_764_590_000,
            "old_chat_member": {"user": bot_user, "status": "member"},
            "new_chat_member": {"user": bot_user, "status": "kicked", "until_date": 0}}});
        app.client.post(format!("{}/telegram/webhook", app.address)).header("X-Telegram-Bot-Api-Secret-Token", SECRET).json(&kicked).send().await.unwrap();
        wait_until(|| async { user_of(&app, token, 104).await["bot_blocked"] == true }).await;

        // Dry runs: the audience's size, narrowed, and why.
        let dry = |audience: Value| {
            let app = &app;
            async move {
                let answer = app.post("/api/v1/admin/broadcasts?dry_run=true", Some(token), json!({"text": "x", "audience": audience})).await;
                assert_eq!(answer.status().as_u16(), 200);
                let body: Value = answer.json().await.unwrap();
                assert!(body.get("id").is_none(), "{body}");
                body
            }
        };
        let all = dry(json!({"all": true})).await;
        assert_eq!(all["total"], 2);
        assert_eq!(all["left_out"], json!({"no_chat": 0, "bot_blocked": 1, "blocked": 1, "not_found": 0}));
        assert_eq!(dry(json!({"language": "ru"})).await["total"], 2);
        assert_eq!(dry(json!({"language": "en"})).await["total"], 0);
        assert_eq!(dry(json!({"language": "ru", "subscription": "none"})).await["total"], 2);
        assert_eq!(dry(json!({"subscription": "active"})).await["total"], 0);
        assert_eq!(dry(json!({"registered_after": "2100-01-01T00:00:00Z"})).await["total"], 0);
        let listed = dry(json!({"telegram_ids": [101, 104, 999]})).await;
        assert_eq!((listed["total"].as_i64(), listed["left_out"]["bot_blocked"].as_i64(), listed["left_out"]["not_found"].as_i64()), (Some(1), Some(1), Some(1)));
        assert!(bot.calls().is_empty(), "a dry run sends nothing");

        // A photo with the text as its caption and two rows of buttons.
        let buttons = json!([[{"text": "Shop", "url": "https://shop.test/sale"}], [{"text": "Later", "callback_data": "later"}]]);
        let answer = app.post("/api/v1/admin/broadcasts", Some(token), json!({
            "text": "<b>Sale</b>", "parse_mode": "HTML",
            "media": {"type": "photo", "url": "https://files.test/sale.jpg"},
            "buttons": buttons, "audience": {"all": true}})).await;
        assert_eq!(answer.status().as_u16(), 202);
        let created: Value = answer.json().await.unwrap();
        assert_eq!((created["status"].as_str(), created["total"].as_i64()), (Some("running"), Some(2)), "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let done = ended(&app, token, &id, "completed", Duration::from_secs(20)).await;
        adds_up(&done);
        assert_eq!(done["counts"]["sent"], 2, "{done}");
        let calls = bot.calls();
        let mut chats: Vec<i64> = calls.iter().map(|c| c.chat_id()).collect();
        chats.sort();
        assert_eq!(chats, [101, 102]);
        for call in &calls {
            assert_eq!(call.method, "sendPhoto");
            assert_eq!(call.params["photo"], "https://files.test/sale.jpg");
            assert_eq!(call.params["caption"], "<b>Sale</b>");
            assert_eq!(call.params["parse_mode"], "HTML");
            assert_eq!(call.params["reply_markup"], json!({"inline_keyboard": buttons}));
            assert!(call.params.get("allow_paid_broadcast").is_none());
        }
        let page: Value = app.get_with(&format!("/api/v1/admin/broadcasts/{id}/recipients?status=sent"), token).await.json().await.unwrap();
        assert_eq!(page["total"], 2);
        assert_problem(app.get_with(&format!("/api/v1/admin/broadcasts/{id}/recipients?status=lost"), token).await, 422, "invalid_field").await;
        let types: Vec<String> = whole_log(&app.state.store).await.iter()
            .filter(|e| e.stream.as_str() == format!("broadcast:{id}"))
            .map(|e| e.event_type.as_str().to_owned()).collect();
        assert_eq!(types.first().map(String::as_str), Some("broadcast.created"));
        assert_eq!(types.get(1).map(String::as_str), Some("broadcast.started"));
        assert_eq!(types.last().map(String::as_str), Some("broadcast.completed"));

        // A 403 on the way: that user is recorded as blocking the bot.
        bot.script(102, &[Reply::Blocked]);
        let ids = [user_of(&app, token, 101).await["id"].clone(), user_of(&app, token, 102).await["id"].clone()];
        let answer = app.post("/api/v1/admin/broadcasts", Some(token), json!({"text": "again", "audience": {"user_ids": ids}})).await;
        let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let done = ended(&app, token, &id, "completed", Duration::from_secs(20)).await;
        adds_up(&done);
        assert_eq!((done["counts"]["sent"].as_i64(), done["counts"]["blocked"].as_i64()), (Some(1), Some(1)), "{done}");
        assert_eq!(user_of(&app, token, 102).await["bot_blocked"], true);

        // Scheduled: it starts at `send_at`.
        let send_at = chrono::Utc::now() + chrono::Duration::seconds(2);
        let answer = app.post("/api/v1/admin/broadcasts", Some(token), json!({"text": "later", "audience": {"telegram_ids": [101]}, "send_at": send_at})).await;
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "scheduled", "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(broadcast(&app, token, &id).await["status"], "scheduled");
        let done = ended(&app, token, &id, "completed", Duration::from_secs(20)).await;
        let started: chrono::DateTime<chrono::Utc> = serde_json::from_value(done["started_at"].clone()).unwrap();
        assert!(started >= send_at, "started {started}, due {send_at}");
        assert!(bot.calls().iter().any(|c| c.params["text"] == "later"));

        // A paid broadcast: Telegram's `allow_paid_broadcast`.
        let answer = app.post("/api/v1/admin/broadcasts", Some(token), json!({"text": "paid", "paid": true, "audience": {"telegram_ids": [101]}})).await;
        let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        ended(&app, token, &id, "completed", Duration::from_secs(20)).await;
        let call = bot.calls().into_iter().find(|c| c.params["text"] == "paid").unwrap();
        assert_eq!(call.params["allow_paid_broadcast"], true);

        // The older service's entry point, with an API key as a bearer token.
        let key = api_key(&app, token, "telegram:send").await;
        let answer = app.client.post(format!("{}/send-message", app.address)).bearer_auth(&key)
            .json(&json!({"message": "from the old service", "media_type": "video", "media_url": "https://files.test/v.mp4", "user_ids": [101]})).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 202);
        let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        ended(&app, token, &id, "completed", Duration::from_secs(20)).await;
        let call = bot.calls().into_iter().find(|c| c.method == "sendVideo").unwrap();
        assert_eq!((call.chat_id(), call.params["video"].as_str(), call.params["caption"].as_str()), (101, Some("https://files.test/v.mp4"), Some("from the old service")));
        let reader = api_key(&app, token, "events:read").await;
        let answer = app.client.post(format!("{}/send-message", app.address)).bearer_auth(&reader).json(&json!({"message": "x", "user_ids": [101]})).send().await.unwrap();
        assert_problem(answer, 403, "forbidden").await;

        // Refusals.
        for (body, field) in [
            (json!({"audience": {"all": true}}), "text"),
            (json!({"text": "x", "audience": {"all": true, "telegram_ids": [1]}}), "audience"),
            (json!({"text": "x", "audience": {}}), "audience"),
            (json!({"text": "x", "audience": {"user_ids": []}}), "audience"),
            (json!({"text": "x", "parse_mode": "html5", "audience": {"all": true}}), "parse_mode"),
            (json!({"text": "x", "buttons": [[{"text": "b"}]], "audience": {"all": true}}), "buttons"),
            (json!({"media": {"type": "photo", "url": "file:///etc/passwd"}, "audience": {"all": true}}), "media"),
            (json!({"text": "x", "send_at": "2300-01-01T00:00:00Z", "audience": {"all": true}}), "send_at"),
        ] {
            let problem = assert_problem(app.post("/api/v1/admin/broadcasts", Some(token), body.clone()).await, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{body}");
        }
        assert_problem(app.post("/api/v1/admin/broadcasts", Some(token), json!({"txt": "x", "audience": {"all": true}})).await, 422, "invalid_body").await;
        assert_problem(app.post(&format!("/api/v1/admin/broadcasts/{id}/cancel"), Some(token), json!({})).await, 409, "broadcast_ended").await;
        assert_problem(app.get_with("/api/v1/admin/broadcasts/nope", token).await, 404, "not_found").await;
        let listed: Value = app.get_with("/api/v1/admin/broadcasts?limit=2", token).await.json().await.unwrap();
        assert_eq!((listed["total"].as_i64(), listed["items"].as_array().map(Vec::len)), (Some(5), Some(2)));
        app.stop().await;
        bot.stop().await;
    }
}

both_backends! {
    async fn a_cancelled_broadcast_sends_nothing_more_within_a_second(db) {
        let bot = FakeBot::start().await;
        let mut config = config(&db, &bot);
        config.telegram.limits.overall = Some(Duration::from_millis(20));
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let token = owner.access_token.as_str();
        users(&app, token, 1000..1200, "en").await;
        // A send Telegram cannot take goes back in the queue for a retry
        // after a second: by then its broadcast is cancelled.
        let retried = 1000;
        bot.script(retried, &[Reply::Unavailable]);
        let answer = app.post("/api/v1/admin/broadcasts", Some(token), json!({"text": "x", "audience": {"all": true}})).await;
        let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        bot.wait_for_calls(20).await;
        // A send of the sender API goes before the broadcast's waiting ones.
        let key = api_key(&app, token, "telegram:send").await;
        let (asked_at, asked_on) = (Instant::now(), chrono::Utc::now());
        let answer = app.client.post(format!("{}/api/v1/telegram/sendMessage?wait=true", app.address)).header("x-api-key", &key)
            .json(&json!({"chat_id": 5000, "text": "a reply"})).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        // When it was queued (the request itself may take a while under load).
        let sent: Value = answer.json().await.unwrap();
        let created: chrono::DateTime<chrono::Utc> = serde_json::from_value(sent["created_at"].clone()).unwrap();
        let queued_at = asked_at + (created - asked_on).to_std().unwrap_or_default();
        let calls = bot.calls();
        let reply = calls.iter().position(|c| c.chat_id() == 5000).unwrap();
        let before = calls.iter().filter(|c| c.at < queued_at).count();
        // After at most the broadcast's turns claimed already (a claim takes
        // turns up to 20 ms ahead: at 50/s, two or three).
        assert!(reply <= before + 5, "the reply was call {reply}, queued after call {before}");
        let answer = app.post(&format!("/api/v1/admin/broadcasts/{id}/cancel"), Some(token), json!({})).await;
        let cancelled_at = Instant::now();
        assert_eq!(answer.status().as_u16(), 200);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["status"], "cancelled");
        adds_up(&body);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let calls = bot.calls();
        let late = calls.iter().filter(|c| c.at > cancelled_at + Duration::from_secs(1)).count();
        assert_eq!(late, 0, "calls more than a second after the cancel");
        wait_until(|| async { broadcast(&app, token, &id).await["counts"]["queued"] == 0 }).await;
        let done = broadcast(&app, token, &id).await;
        adds_up(&done);
        let counts = &done["counts"];
        assert_eq!(counts["total"], 200);
        assert!(counts["cancelled"].as_i64().unwrap() > 0, "{counts}");
        let answered_ok = calls.iter().filter(|c| c.chat_id() != retried && c.chat_id() != 5000).count();
        assert_eq!(counts["sent"].as_i64().unwrap(), answered_ok as i64, "what was in flight is reported");
        assert_eq!(calls.iter().filter(|c| c.chat_id() == retried).count(), 1, "a cancelled broadcast's retry is not made");
        let cancelled: Value = app.get_with(&format!("/api/v1/admin/broadcasts/{id}/recipients?status=cancelled&limit=200"), token).await.json().await.unwrap();
        assert!(cancelled["items"].as_array().unwrap().iter().any(|r| r["chat_id"] == retried), "{cancelled}");
        assert_eq!(done["status"], "cancelled");
        let cancelled = whole_log(&app.state.store).await.iter().filter(|e| e.event_type.as_str() == "broadcast.cancelled").count();
        assert_eq!(cancelled, 1);
        assert_problem(app.post(&format!("/api/v1/admin/broadcasts/{id}/cancel"), Some(token), json!({})).await, 409, "broadcast_ended").await;
        app.stop().await;
        bot.stop().await;
    }
}

/// 5,000 recipients; the instance sending is killed (its runtime dropped
/// mid-call, as `kill -9` would leave it) and another takes over: no chat
/// gets the message twice, every recipient ends `sent`, or `unknown` when
/// its send was on its way at the kill.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_cut_off_mid_run_resumes_and_sends_no_one_twice() {
    use std::collections::HashSet;

    use crate::helpers::TestDb;
    const RECIPIENTS: i64 = 5000;
    let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let bot = FakeBot::start().await;
    let config = config(&db, &bot);
    let token = {
        let app = TestApp::spawn_with(config.clone()).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        users(&app, &owner.access_token, 10_000..10_000 + RECIPIENTS, "en").await;
        app.stop().await;
        owner.access_token
    };
    // The first instance runs on a runtime of its own, dropped at once.
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let (ready, address) = tokio::sync::oneshot::channel::<String>();
    let first = config.clone();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = TestApp::spawn_with(first).await;
            ready.send(app.address.clone()).unwrap();
            let _ = killed.await;
            std::mem::forget(app);
        });
        runtime.shutdown_background();
    });
    let address = address.await.unwrap();
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{address}/api/v1/admin/broadcasts"))
        .bearer_auth(&token)
        .json(&json!({"text": "hello", "audience": {"all": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    let created: Value = answer.json().await.unwrap();
    assert_eq!(created["total"], RECIPIENTS);
    let id = created["id"].as_str().unwrap().to_owned();
    bot.wait_for_calls(1500).await;
    kill.send(()).unwrap();
    thread.join().unwrap();
    let at_kill = bot.calls().len();
    assert!(
        (at_kill as i64) < RECIPIENTS,
        "the broadcast ended before the kill"
    );
    // Another instance takes over; what the first had on its way becomes
    // `unknown` once its lease ran out.
    let app = TestApp::spawn_with(config).await;
    let done = ended(&app, &token, &id, "completed", Duration::from_secs(90)).await;
    adds_up(&done);
    let counts = &done["counts"];
    let (sent, unknown) = (
        counts["sent"].as_i64().unwrap(),
        counts["unknown"].as_i64().unwrap(),
    );
    assert_eq!(sent + unknown, RECIPIENTS, "{counts}");
    // At most what one instance has on its way (the sender's 128 calls).
    assert!(unknown <= 128, "only what was on its way: {counts}");
    let calls = bot.calls();
    let chats: HashSet<i64> = calls.iter().map(|c| c.chat_id()).collect();
    assert_eq!(chats.len(), calls.len(), "a chat got the message twice");
    assert!(calls.len() as i64 >= sent && calls.len() as i64 <= sent + unknown);
    // Every `sent` recipient is one the fake received.
    let mut offset = 0;
    loop {
        let page: Value = app
            .get_with(
                &format!(
                    "/api/v1/admin/broadcasts/{id}/recipients?status=sent&limit=200&offset={offset}"
                ),
                &token,
            )
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        for item in items {
            assert!(chats.contains(&item["chat_id"].as_i64().unwrap()), "{item}");
        }
        offset += items.len();
    }
    assert_eq!(offset as i64, sent);
    app.stop().await;
    bot.stop().await;
}

/// Telegram's own limits (30 a second, one a second per chat), kept by a
/// fake that answers 429 beyond them: 600 recipients take 20 s ± 5 % with
/// two instances sending together, and no 429.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_a_broadcast_at_telegrams_rate_with_no_429() {
    use crate::helpers::TestDb;
    let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let bot = FakeBot::start().await;
    let mut config = config(&db, &bot);
    config.telegram.limits = switchboard::telegram::outbox::Limits::telegram(30);
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;
    let owner = a.admin_with_role("o@example.com", Role::Owner).await;
    let token = owner.access_token.as_str();
    users(&a, token, 20_000..20_600, "en").await;
    bot.enforce(30, Duration::from_secs(1));
    let answer = b
        .post(
            "/api/v1/admin/broadcasts",
            Some(token),
            json!({"text": "at the limit", "audience": {"all": true}}),
        )
        .await;
    let id = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = ended(&a, token, &id, "completed", Duration::from_secs(60)).await;
    adds_up(&done);
    assert_eq!(done["counts"]["sent"], 600, "{done}");
    assert_eq!(bot.limited(), 0, "429s from the fake");
    // Progress at most once a second across both instances, counts moving.
    let progress: Vec<Value> = whole_log(&a.state.store)
        .await
        .iter()
        .filter(|e| e.event_type.as_str() == "broadcast.progress")
        .map(|e| e.payload.clone())
        .collect();
    assert!(
        progress.len() >= 10,
        "{} progress events in 20 s",
        progress.len()
    );
    for pair in progress.windows(2) {
        let at = |p: &Value| {
            serde_json::from_value::<chrono::DateTime<chrono::Utc>>(p["at"].clone()).unwrap()
        };
        assert!(
            at(&pair[1]) - at(&pair[0]) >= chrono::Duration::seconds(1),
            "{} then {}",
            pair[0],
            pair[1]
        );
        assert!(pair[1]["sent"].as_i64() > pair[0]["sent"].as_i64());
        assert_eq!(pair[1]["total"], 600);
    }
    let calls = bot.calls();
    let sends: Vec<_> = calls.iter().filter(|c| c.method == "sendMessage").collect();
    assert_eq!(sends.len(), 600);
    let span = sends.last().unwrap().at - sends[0].at;
    assert!(
        // Never faster than the limit; under the whole suite on two shared
        // cores up to 7 % slow was seen (the benchmark measures the rate).
        span >= Duration::from_millis(19_000) && span <= Duration::from_millis(22_000),
        "600 sends at 30/s took {span:?}"
    );
    a.stop().await;
    b.stop().await;
    bot.stop().await;
}
