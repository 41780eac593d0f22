//! The live WebSocket feeds: authentication before the upgrade, the
//! protocol's shapes, per-user isolation, resume without gaps under load,
//! slow consumers, token expiry and revocation, idle clients, and delivery
//! across instances.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::{
    auth::Role,
    events::{Actor, Append, EventType, ExpectedVersion, NewEvent, StreamName},
};

use crate::{
    authorization::{claims_of, forged},
    helpers::{JWT_SECRET, TestApp, TestDb, WsEnd, both_backends, captured_logs, test_config},
    ledger::user_id,
    tickets::{cabinet_user, open_ticket},
};

/// Appends `count` events of type `load.tick` to `stream`, `batch` at a time.
async fn append_load(app: &TestApp, stream: &str, count: usize, batch: usize, text: &str) {
    let stream = StreamName::parse(stream).unwrap();
    let mut version = app.state.store.stream_version(&stream).await.unwrap();
    let mut left = count;
    while left > 0 {
        let n = left.min(batch);
        let events = (0..n)
            .map(|i| {
                NewEvent::new(
                    EventType::parse("load.tick").unwrap(),
                    json!({"n": version as usize + i + 1, "text": text}),
                    Actor::system(),
                )
            })
            .collect();
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        app.state
            .store
            .append(vec![Append::new(stream.clone(), expected, events)], None)
            .await
            .unwrap();
        version += n as u32;
        left -= n;
    }
}

/// The ids of every event after `cursor`, in log order (at least `count`).
async fn log_ids_after(app: &TestApp, cursor: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = cursor.parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while ids.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} events in the log",
            ids.len()
        );
        let page = app.state.store.read_all(cursor, 1000).await.unwrap();
        cursor = page.next;
        ids.extend(page.events.iter().map(|e| e.id.to_string()));
        if page.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ids
}

both_backends! {
    async fn feeds_refuse_bad_credentials_with_an_http_error_before_the_upgrade(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let user = cabinet_user(&app, 1).await;
        let key_without: Value = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "k1", "scopes": ["users:read"]})).await.json().await.unwrap();
        let key_with: Value = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "k2", "scopes": ["events:read", "users:read"]})).await.json().await.unwrap();
        let key_without = key_without["secret"].as_str().unwrap();
        let key_with = key_with["secret"].as_str().unwrap();

        // The admin feed.
        assert_eq!(app.ws("/ws", None).await.err(), Some(401), "no token");
        for (what, token) in forged(&owner.access_token) {
            assert_eq!(app.ws("/ws", Some(&token)).await.err(), Some(401), "a token {what}");
        }
        assert_eq!(app.ws("/ws", Some(&user.access_token)).await.err(), Some(401), "a cabinet token");
        assert_eq!(app.ws("/ws", Some(key_without)).await.err(), Some(403), "a key without events:read");
        assert!(app.ws("/ws", Some(key_with)).await.is_ok(), "a key with events:read");
        assert!(app.ws("/ws", Some(&viewer.access_token)).await.is_ok(), "a viewer");
        let by_query = format!("/ws?token={}", owner.access_token);
        assert!(app.ws(&by_query, None).await.is_ok(), "the token as a query parameter");
        // `api_key`, as dashboards written for the older cabinet API send it.
        let by_api_key = format!("/ws?api_key={key_with}");
        assert!(app.ws(&by_api_key, None).await.is_ok(), "a key as `api_key`");
        assert_eq!(app.ws(&format!("/ws?api_key={key_without}"), None).await.err(), Some(403));
        assert_eq!(app.ws("/ws?api_key=sbk_forged", None).await.err(), Some(401));

        // The cabinet feed.
        let path = "/api/v1/cabinet/ws";
        assert_eq!(app.ws(path, None).await.err(), Some(401), "no token");
        for (what, token) in forged(&user.access_token) {
            assert_eq!(app.ws(path, Some(&token)).await.err(), Some(401), "a token {what}");
        }
        assert_eq!(app.ws(path, Some(&owner.access_token)).await.err(), Some(401), "an admin token");
        assert_eq!(app.ws(path, Some(key_with)).await.err(), Some(401), "an API key");
        assert!(app.ws(path, Some(&user.access_token)).await.is_ok());
        let by_query = format!("{path}?token={}", user.access_token);
        assert!(app.ws(&by_query, None).await.is_ok());

        // Bad parameters and plain HTTP requests are problems, not upgrades.
        let bad_cursor = app.ws("/ws?cursor=abc", Some(&owner.access_token)).await.err();
        assert_eq!(bad_cursor, Some(422));
        let bad_types = app.ws("/ws?types=Ticket.*", Some(&owner.access_token)).await.err();
        assert_eq!(bad_types, Some(422));
        let plain = app.get_with("/ws", &owner.access_token).await;
        crate::helpers::assert_problem(plain, 400, "bad_request").await;

        // A token in the query string never reaches the logs.
        let logs = captured_logs();
        assert!(!logs.contains(&owner.access_token), "an admin token was logged");
        assert!(!logs.contains(&user.access_token), "a cabinet token was logged");
        assert!(!logs.contains(key_with), "an API key was logged");
        app.stop().await;
    }
}

both_backends! {
    async fn the_connection_message_and_ping_pong_keep_their_legacy_shapes(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "connection");
        assert_eq!(hello["status"], "connected");
        assert!(hello["message"].is_string());
        assert!(hello["cursor"].as_str().unwrap().contains('-'));

        ws.send_json(json!({"type": "ping"})).await;
        assert_eq!(ws.next_json().await, json!({"type": "pong"}));

        ws.send_json(json!({"type": "dance"})).await;
        let error = ws.next_json().await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "invalid_message");
        ws.send_json(json!({"type": "subscribe", "types": ["Nope"]})).await;
        assert_eq!(ws.next_json().await["code"], "invalid_types");
        ws.send_json(json!({"type": "subscribe", "cursor": "x"})).await;
        assert_eq!(ws.next_json().await["code"], "invalid_cursor");

        // Events are envelopes, with the legacy `type`, `payload`, `timestamp`.
        let user = cabinet_user(&app, 5).await;
        let created = ws.next_event().await;
        assert_eq!(created["type"], "user.created");
        for field in ["id", "position", "cursor", "stream", "version", "timestamp", "actor", "payload"] {
            assert!(created.get(field).is_some(), "envelope without {field}: {created}");
        }

        // A subscription narrows the feed to the types asked for.
        ws.send_json(json!({"type": "subscribe", "types": ["ticket.*"]})).await;
        let subscribed = ws.next_json().await;
        assert_eq!(subscribed["type"], "subscribed");
        assert_eq!(subscribed["types"], json!(["ticket.*"]));
        let _ = cabinet_user(&app, 6).await;
        open_ticket(&app, &user, "Where is my order").await;
        let next = ws.next_event().await;
        assert_eq!(next["type"], "ticket.created", "user.created of the second user is filtered out");
        app.stop().await;
    }
}

/// Frames as WebSocket clients may send them: a message in fragments is
/// read whole, a binary one is refused with an error message, a client's
/// close is answered in kind, and an oversized message ends the connection
/// with 1002.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frames_are_put_together_refused_or_answered() {
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::{
            CloseFrame,
            frame::{
                Frame,
                coding::{CloseCode, Data, OpCode},
            },
        },
    };
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
    ws.next_json().await;

    for (part, opcode, last) in [
        ("{\"type\"", OpCode::Data(Data::Text), false),
        (":", OpCode::Data(Data::Continue), false),
        ("\"ping\"}", OpCode::Data(Data::Continue), true),
    ] {
        ws.send_raw(Message::Frame(Frame::message(part, opcode, last)))
            .await;
    }
    assert_eq!(ws.next_json().await, json!({"type": "pong"}));

    ws.send_raw(Message::binary(vec![1, 2, 3])).await;
    let error = ws.next_json().await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("invalid_message"))
    );

    ws.send_raw(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await;
    assert_eq!(ws.until_closed().await.0, WsEnd::Closed(1000));

    let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
    ws.next_json().await;
    ws.send_raw(Message::text("x".repeat(65 * 1024))).await;
    assert_eq!(ws.until_closed().await.0, WsEnd::Closed(1002));
    app.stop().await;
}

/// Stopping the server closes every feed with 1001, and stops within its
/// shutdown timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_closed_with_1001_when_the_server_stops() {
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        clients.push(ws);
    }
    let stopping = tokio::spawn(app.stop());
    for mut ws in clients {
        assert_eq!(ws.until_closed().await.0, WsEnd::Closed(1001));
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped")
        .unwrap();
}

both_backends! {
    async fn a_cabinet_feed_carries_only_its_users_events(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let alice = cabinet_user(&app, 11).await;
        let bob = cabinet_user(&app, 12).await;
        let alice_id = user_id(&app, &alice.access_token).await;
        let bob_id = user_id(&app, &bob.access_token).await;
        let mut alice_ws = app.ws("/api/v1/cabinet/ws", Some(&alice.access_token)).await.unwrap();
        let mut bob_ws = app.ws("/api/v1/cabinet/ws", Some(&bob.access_token)).await.unwrap();

        // Mixed traffic for both, through the cabinet and admin APIs.
        for (user, id) in [(&alice, &alice_id), (&bob, &bob_id)] {
            let ticket = open_ticket(&app, user, "Help").await;
            let ticket_id = ticket["id"].as_str().unwrap();
            let reply = app.post(&format!("/api/v1/admin/tickets/{ticket_id}/messages"), Some(&owner.access_token), json!({"text": "On it"})).await;
            assert_eq!(reply.status().as_u16(), 201);
            let more = app.post(&format!("/api/v1/cabinet/tickets/{ticket_id}/messages"), Some(&user.access_token), json!({"text": "Thanks"})).await;
            assert_eq!(more.status().as_u16(), 201);
            let top_up = app.post(&format!("/api/v1/admin/users/{id}/top-up"), Some(&owner.access_token), json!({"amount": 50000, "currency": "RUB", "reason": "gift"})).await;
            assert_eq!(top_up.status().as_u16(), 201);
            let bought = app.post("/api/v1/cabinet/subscription", Some(&user.access_token), json!({"plan_id": "monthly"})).await;
            assert!(bought.status().is_success(), "purchase: {}", bought.status());
        }
        // A last event for each, to know when to stop reading.
        for id in [&alice_id, &bob_id] {
            let marker = app.post(&format!("/api/v1/admin/users/{id}/top-up"), Some(&owner.access_token), json!({"amount": 1, "currency": "USD", "reason": "marker"})).await;
            assert_eq!(marker.status().as_u16(), 201);
        }

        for (ws, own) in [(&mut alice_ws, &alice_id), (&mut bob_ws, &bob_id)] {
            let mut types = Vec::new();
            loop {
                let event = ws.next_event().await;
                assert_eq!(event["payload"]["user_id"].as_str(), Some(own.as_str()), "someone else's event: {event}");
                types.push(event["type"].as_str().unwrap().to_owned());
                if event["type"] == "transaction.created" && event["payload"]["currency"] == "USD" {
                    break;
                }
            }
            for expected in ["ticket.created", "ticket.message_added", "transaction.created", "subscription.activated"] {
                assert!(types.iter().any(|t| t == expected), "{expected} missing from {types:?}");
            }
        }
        app.stop().await;
    }
}

both_backends! {
    async fn an_operator_sees_tickets_but_no_money_on_the_admin_feed(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let mut ws = app.ws("/ws", Some(&operator.access_token)).await.unwrap();
        let user = cabinet_user(&app, 21).await;
        let id = user_id(&app, &user.access_token).await;
        let top_up = app.post(&format!("/api/v1/admin/users/{id}/top-up"), Some(&owner.access_token), json!({"amount": 100, "currency": "RUB", "reason": "x"})).await;
        assert_eq!(top_up.status().as_u16(), 201);
        open_ticket(&app, &user, "Hello").await;
        let mut seen = Vec::new();
        loop {
            let event = ws.next_event().await;
            let event_type = event["type"].as_str().unwrap().to_owned();
            seen.push(event_type.clone());
            if event_type == "ticket.message_added" {
                break;
            }
        }
        assert!(seen.contains(&"user.created".to_owned()));
        assert!(seen.contains(&"ticket.created".to_owned()));
        assert!(!seen.iter().any(|t| t.starts_with("payment.") || t.starts_with("transaction.")), "{seen:?}");

        // The event browser shows the same as the feed.
        let browsed: Value = app.get_with("/api/v1/admin/events?limit=500", &operator.access_token).await.json().await.unwrap();
        let browsed: Vec<&str> = browsed["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(browsed, seen);
        let everything: Value = app.get_with("/api/v1/admin/events?limit=500", &owner.access_token).await.json().await.unwrap();
        assert!(everything["events"].as_array().unwrap().iter().any(|e| e["type"] == "payment.completed"));
        app.stop().await;
    }
}

both_backends! {
    async fn a_client_resuming_under_load_gets_every_event_exactly_once_in_order(db) {
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        let app = TestApp::spawn_with(test_config(db.with_max_connections(20))).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        append_load(&app, "load:first", 10, 1, "x").await;
        let mut cursor = String::new();
        for _ in 0..10 {
            cursor = ws.next_event().await["cursor"].as_str().unwrap().to_owned();
        }
        ws.close().await;

        // 1,000 events from 8 concurrent writers while it is away.
        let writers = |tag: &'static str, each: usize| {
            (0..8)
                .map(|w| {
                    let store = app.state.store.clone();
                    tokio::spawn(async move {
                        let stream = StreamName::parse(&format!("load:{tag}{w}")).unwrap();
                        for i in 0..each {
                            let expected = if i == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(i as u32) };
                            let event = NewEvent::new(EventType::parse("load.tick").unwrap(), json!({"w": w, "i": i}), Actor::system());
                            store.append(vec![Append::new(stream.clone(), expected, vec![event])], None).await.unwrap();
                        }
                    })
                })
                .collect::<Vec<_>>()
        };
        for writer in writers("away", 125) {
            writer.await.unwrap();
        }
        // It comes back with its cursor while 400 more are being appended.
        let during = writers("during", 50);
        let mut ws = app.ws(&format!("/ws?cursor={cursor}"), Some(&owner.access_token)).await.unwrap();
        let hello = ws.next_json().await;
        assert_eq!(hello["cursor"], cursor.as_str());
        for writer in during {
            writer.await.unwrap();
        }
        let expected = log_ids_after(&app, &cursor, 1400).await;
        assert_eq!(expected.len(), 1400);
        let mut received = Vec::new();
        while received.len() < expected.len() {
            received.push(ws.next_event().await["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(received, expected, "every event once, in log order");
        app.stop().await;
    }
}

both_backends! {
    async fn a_resume_from_too_far_back_asks_the_client_to_resync(db) {
        let mut config = test_config(db.config.clone());
        config.realtime.replay_limit = 20;
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        append_load(&app, "load:a", 30, 10, "x").await;
        // The live feed has published them all (on Postgres, a moment later).
        let head = app.state.store.head().await.unwrap();
        crate::helpers::wait_until(|| async { app.state.hub.head() >= head }).await;
        let mut ws = app.ws("/ws?cursor=0-0", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        let resync = ws.next_json().await;
        assert_eq!(resync["type"], "resync_required");
        // Live events continue after it.
        append_load(&app, "load:b", 1, 1, "live").await;
        let live = ws.next_event().await;
        assert_eq!(live["stream"], "load:b");

        // Within the limit, the subscribe message replays too.
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        let from = log_ids_after(&app, "0-0", 31).await;
        let page = app.state.store.read_all("0-0".parse().unwrap(), 25).await.unwrap();
        ws.send_json(json!({"type": "subscribe", "cursor": page.next.to_string()})).await;
        assert_eq!(ws.next_json().await["type"], "subscribed");
        let mut replayed = Vec::new();
        for _ in 25..31 {
            replayed.push(ws.next_event().await["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(replayed, from[25..31]);
        app.stop().await;
    }
}

both_backends! {
    async fn a_queue_that_overflows_while_the_client_catches_up_is_made_good_from_the_log(db) {
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        let mut config = test_config(db.config.clone());
        config.realtime.queue = 16;
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        let cursor = ws.next_json().await["cursor"].as_str().unwrap().to_owned();
        ws.close().await;

        let text = "x".repeat(2048);
        append_load(&app, "load:before", 1500, 100, &text).await;
        // It replays 3 MB through a 4 KiB receive buffer without reading:
        // the server is held up mid-replay while more events arrive than
        // its queue holds.
        let mut ws = app
            .ws_with_buffer(&format!("/ws?cursor={cursor}"), Some(&owner.access_token), Some(4096))
            .await
            .unwrap();
        append_load(&app, "load:during", 100, 1, &text).await;
        let expected = log_ids_after(&app, &cursor, 1600).await;
        assert_eq!(expected.len(), 1600);
        assert_eq!(ws.next_json().await["type"], "connection");
        let mut received = Vec::new();
        while received.len() < expected.len() {
            received.push(ws.next_event().await["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(received, expected, "every event exactly once, in log order");
        app.stop().await;
    }
}

both_backends! {
    async fn a_client_that_stops_reading_is_closed_with_4008_and_others_keep_receiving(db) {
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        let mut config = test_config(db.config.clone());
        // Far less than the 2,000 events (4 MB) the stalled client is sent,
        // and slack enough for the reading one on a busy machine.
        config.realtime.queue = 256;
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let mut slow = app.ws_with_buffer("/ws", Some(&owner.access_token), Some(4096)).await.unwrap();
        slow.next_json().await;
        let mut fast = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        fast.next_json().await;

        const EVENTS: usize = 2000;
        let reader = tokio::spawn(async move {
            let mut positions = Vec::new();
            while positions.len() < EVENTS {
                positions.push(fast.next_event().await["position"].as_i64().unwrap());
            }
            (positions, tokio::time::Instant::now())
        });
        let text = "x".repeat(2048);
        append_load(&app, "load:burst", EVENTS, 10, &text).await;
        let appended = tokio::time::Instant::now();
        let (positions, last_received) = reader.await.unwrap();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "the fast client got every event in order");
        // It was never held up by the stalled one (a generous bound: the
        // stalled client never reads again until the end of the test).
        assert!(last_received.saturating_duration_since(appended) < Duration::from_secs(5));

        // It has not read for longer than a reading client takes to come
        // back for its events.
        tokio::time::sleep(switchboard::realtime::feed::READING + Duration::from_millis(500)).await;
        let (end, events) = slow.until_closed().await;
        assert_eq!(end, WsEnd::Closed(4008));
        assert!(events.len() < EVENTS, "it was cut off before the end");
        let slow_positions: Vec<i64> = events.iter().map(|e| e["position"].as_i64().unwrap()).collect();
        assert_eq!(slow_positions[..], positions[..slow_positions.len()], "what it got is a gap-free prefix");
        app.stop().await;
    }
}

both_backends! {
    async fn the_feed_closes_with_4001_when_the_token_expires_or_the_session_ends(db) {
        let mut config = test_config(db.config.clone());
        config.realtime.ping_interval = Duration::from_secs(1);
        config.realtime.idle_timeout = Duration::from_secs(30);
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;

        // A token about to expire: the feed ends when it does.
        let mut claims = claims_of(&owner.access_token);
        claims["exp"] = json!(chrono::Utc::now().timestamp() + 2);
        let short = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
        let mut ws = app.ws("/ws", Some(&short)).await.unwrap();
        assert_eq!(ws.until_closed().await.0, WsEnd::Closed(4001));

        // Logging out ends the feed at the next check.
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        let logout = app.request(Method::POST, "/api/v1/auth/logout", Some(&owner.access_token), None).await;
        assert_eq!(logout.status().as_u16(), 204);
        assert_eq!(ws.until_closed().await.0, WsEnd::Closed(4001));

        // So does blocking a cabinet user.
        let admin = app.admin_with_role("a@example.com", Role::Admin).await;
        let user = cabinet_user(&app, 31).await;
        let id = user_id(&app, &user.access_token).await;
        let mut ws = app.ws("/api/v1/cabinet/ws", Some(&user.access_token)).await.unwrap();
        ws.next_json().await;
        let blocked = app.post(&format!("/api/v1/admin/users/{id}/block"), Some(&admin.access_token), json!({"reason": "spam"})).await;
        assert!(blocked.status().is_success());
        assert_eq!(ws.until_closed().await.0, WsEnd::Closed(4001));
        app.stop().await;
    }
}

/// A client that stops reading and never closes is cut off once it has
/// taken none of the server's data for the idle timeout, although not even
/// a close frame can reach it (its socket is full, so the connection is no
/// longer polled for frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_is_cut_off() {
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let mut config = test_config(db.config.clone());
    config.realtime.ping_interval = Duration::from_secs(1);
    config.realtime.idle_timeout = Duration::from_secs(2);
    // Room for every event: it is never closed as a slow consumer.
    config.realtime.queue = 100_000;
    let app = TestApp::spawn_with(config).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let mut stuck = app
        .ws_with_buffer("/ws", Some(&owner.access_token), Some(4096))
        .await
        .unwrap();
    stuck.next_json().await;
    assert_eq!(app.state.hub.clients(), 1);
    // 6 MB of events: far more than the socket buffers hold.
    append_load(&app, "load:stuck", 3000, 50, &"x".repeat(2048)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.state.hub.clients() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stuck client is still connected after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stuck);
    app.stop().await;
}

/// A WebSocket handshake on a bare socket, for speaking at the frame level
/// (a WebSocket library would answer pings and refuse to send bad frames).
async fn raw_feed(app: &TestApp, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the server closes the socket (20 s at most); returns the
/// frames it sent after the 101 response, as (opcode, payload).
async fn raw_frames_until_closed(tcp: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read_all)
        .await
        .expect("the server never closed the connection");
    let text_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(received.starts_with(b"HTTP/1.1 101"));
    // Server frames are unmasked: opcode, length, payload.
    let mut frames = Vec::new();
    let mut rest = &received[text_end..];
    while rest.len() >= 2 {
        let opcode = rest[0] & 0x0f;
        let (len, header) = match rest[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            n => (usize::from(n), 2),
        };
        frames.push((opcode, rest[header..header + len].to_vec()));
        rest = &rest[header + len..];
    }
    frames
}

fn close_code(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
    match frames.last() {
        Some((0x8, payload)) if payload.len() >= 2 => {
            Some(u16::from_be_bytes([payload[0], payload[1]]))
        }
        _ => None,
    }
}

/// A client that never says anything (not even a pong) is pinged, then
/// closed. Spoken at the frame level: a WebSocket library would answer the
/// pings by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_pinged_and_then_closed() {
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let mut config = test_config(db.config.clone());
    config.realtime.ping_interval = Duration::from_secs(1);
    config.realtime.idle_timeout = Duration::from_secs(2);
    let app = TestApp::spawn_with(config).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;
    let mut tcp = raw_feed(&app, &owner.access_token).await;
    let frames = raw_frames_until_closed(&mut tcp).await;
    assert!(frames.iter().any(|(op, _)| *op == 0x9), "the server pinged");
    assert_eq!(
        close_code(&frames),
        Some(1001),
        "the last frame closes with 1001"
    );
    app.stop().await;
}

/// A frame announced larger than the 64 KiB limit is refused as soon as
/// more than the limit has arrived, not buffered whole; text that is not
/// UTF-8 is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_and_invalid_text_close_the_connection() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::new(crate::helpers::Kind::Sqlite).await;
    let mut config = test_config(db.config.clone());
    config.realtime.idle_timeout = Duration::from_secs(60);
    let app = TestApp::spawn_with(config).await;
    let owner = app.admin_with_role("o@example.com", Role::Owner).await;

    // A text frame announcing 1 GiB (masked, as from a client), then 80 KiB
    // of it; the client keeps its socket open.
    let mut tcp = raw_feed(&app, &owner.access_token).await;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend(std::iter::repeat_n(b'x', 80 * 1024));
    tcp.write_all(&frame).await.unwrap();
    let started = tokio::time::Instant::now();
    let frames = raw_frames_until_closed(&mut tcp).await;
    assert_eq!(close_code(&frames), Some(1002));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not at the idle timeout"
    );

    // A whole text frame of invalid UTF-8 (0xff, 0xfe), masked with zeros.
    let mut tcp = raw_feed(&app, &owner.access_token).await;
    tcp.write_all(&[0x81, 0x80 | 2, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .unwrap();
    let frames = raw_frames_until_closed(&mut tcp).await;
    assert_eq!(close_code(&frames), Some(1007));
    app.stop().await;
}

#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_instance_receives_events_appended_through_another() {
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let a = TestApp::spawn(&db).await;
    let b = TestApp::spawn(&db).await;
    let owner = a.admin_with_role("o@example.com", Role::Owner).await;
    let mut ws = b.ws("/ws", Some(&owner.access_token)).await.unwrap();
    ws.next_json().await;
    let user = cabinet_user(&a, 41).await;
    open_ticket(&a, &user, "Across").await;
    let mut types = Vec::new();
    while types.last().map(String::as_str) != Some("ticket.message_added") {
        types.push(ws.next_event().await["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        types,
        ["user.created", "ticket.created", "ticket.message_added"]
    );
    a.stop().await;
    b.stop().await;
}

both_backends! {
    async fn metrics_show_live_feeds_to_callers_with_stats_read(db) {
        let app = TestApp::spawn(&db).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let user = cabinet_user(&app, 51).await;
        let mut ws = app.ws("/api/v1/cabinet/ws", Some(&user.access_token)).await.unwrap();
        ws.next_json().await;
        assert_eq!(app.get("/metrics").await.status().as_u16(), 401);
        assert_eq!(app.get_with("/metrics", &user.access_token).await.status().as_u16(), 401);
        assert_eq!(app.get_with("/metrics", &operator.access_token).await.status().as_u16(), 403);
        let metrics = app.get_with("/metrics", &viewer.access_token).await;
        assert_eq!(metrics.status().as_u16(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("switchboard_ws_clients{feed=\"cabinet\"}"), "{text}");
        app.stop().await;
    }
}

both_backends! {
    async fn a_cursor_this_log_cannot_continue_from_asks_the_client_to_resync(db) {
        // After the database was reset (or replaced), an old cursor names
        // another log, or lies ahead of this one: never silence.
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        append_load(&app, "load:a", 3, 1, "x").await;
        let head = app.state.store.head().await.unwrap();
        crate::helpers::wait_until(|| async { app.state.hub.head() >= head }).await;
        let log = app.state.store.log_id();
        assert_ne!(log, 0, "the log has an id");
        assert!(head.to_string().ends_with(&format!("-{log}")), "cursors carry it: {head}");
        let other_log = if log == 1 { 2 } else { log - 1 };
        for what in ["another log's", "ahead", "ahead, without an id"] {
            // Made from the head as it is now: events appended since are after it.
            let head = app.state.store.head().await.unwrap().to_string();
            let [tx, position]: [u64; 2] = head.split('-').take(2).map(|n| n.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
            let cursor = &match what {
                "another log's" => format!("{tx}-{position}-{other_log}"),
                "ahead" => format!("{}-{}-{log}", tx + 1_000_000, position + 1000),
                _ => format!("{}-{}", tx + 1_000_000, position + 1000),
            };
            let mut ws = app.ws(&format!("/ws?cursor={cursor}"), Some(&owner.access_token)).await.unwrap();
            ws.next_json().await;
            let resync = ws.next_json().await;
            assert_eq!(resync["type"], "resync_required", "{what}: {resync}");
            // Live events continue after it.
            append_load(&app, "load:b", 1, 1, "live").await;
            assert_eq!(ws.next_event().await["stream"], "load:b", "{what}");
            // The same by a subscribe message.
            let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
            ws.next_json().await;
            ws.send_json(json!({"type": "subscribe", "cursor": cursor})).await;
            assert_eq!(ws.next_json().await["type"], "subscribed");
            assert_eq!(ws.next_json().await["type"], "resync_required", "{what}, subscribed");
            // The event browser refuses it.
            let page = app.get_with(&format!("/api/v1/admin/events?cursor={cursor}"), &owner.access_token).await;
            crate::helpers::assert_problem(page, 422, "invalid_field").await;
        }
        // A cursor of this log still resumes, with or without its id.
        let first = app.state.store.read_all("0-0".parse().unwrap(), 1).await.unwrap().next;
        let without_id = first.to_string().rsplit_once('-').unwrap().0.to_owned();
        for cursor in [first.to_string(), without_id] {
            let mut ws = app.ws(&format!("/ws?cursor={cursor}"), Some(&owner.access_token)).await.unwrap();
            ws.next_json().await;
            let replayed = ws.next_event().await;
            assert_ne!(replayed["type"], "resync_required");
            assert_eq!(replayed["stream"], "load:a", "{cursor}");
        }
        app.stop().await;
    }
}

/// `owner`'s token with its expiry `seconds` from now.
fn expiring_in(token: &str, seconds: i64) -> String {
    let mut claims = claims_of(token);
    claims["exp"] = json!(chrono::Utc::now().timestamp() + seconds);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

both_backends! {
    async fn a_fresh_token_sent_in_band_keeps_the_feed_open_past_the_old_ones_expiry(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let other = app.admin_with_role("a@example.com", Role::Admin).await;
        let mut ws = app.ws("/ws", Some(&expiring_in(&owner.access_token, 3))).await.unwrap();
        let hello = ws.next_json().await;
        assert!(hello["expires_at"].is_string(), "{hello}");
        // Someone else's token, or a forged one, changes nothing.
        ws.send_json(json!({"type": "auth", "token": other.access_token})).await;
        let refused = ws.next_json().await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("another_principal")));
        ws.send_json(json!({"type": "auth", "token": "eyJforged"})).await;
        let refused = ws.next_json().await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("invalid_token")));
        // The same admin's fresh token: the connection outlives the old one.
        let fresh = expiring_in(&owner.access_token, 600);
        ws.send_json(json!({"type": "auth", "token": fresh})).await;
        let accepted = ws.next_json().await;
        assert_eq!(accepted["type"], "authenticated", "{accepted}");
        assert!(accepted["visible"].as_array().unwrap().iter().any(|f| f == "ticket.*"));
        tokio::time::sleep(Duration::from_secs(4)).await;
        append_load(&app, "load:after", 1, 1, "still here").await;
        assert_eq!(ws.next_event().await["stream"], "load:after");

        // Without one, it still ends when the token does.
        let mut ws = app.ws("/ws", Some(&expiring_in(&owner.access_token, 2))).await.unwrap();
        assert_eq!(ws.until_closed().await.0, WsEnd::Closed(4001));

        // The cabinet feed alike, for its own user only.
        let user = cabinet_user(&app, 41).await;
        let stranger = cabinet_user(&app, 42).await;
        let mut ws = app.ws("/api/v1/cabinet/ws", Some(&user.access_token)).await.unwrap();
        ws.next_json().await;
        ws.send_json(json!({"type": "auth", "token": stranger.access_token})).await;
        assert_eq!(ws.next_json().await["code"], "another_principal");
        ws.send_json(json!({"type": "auth", "token": owner.access_token})).await;
        assert_eq!(ws.next_json().await["code"], "invalid_token", "an admin token on the cabinet feed");
        ws.send_json(json!({"type": "auth", "token": expiring_in(&user.access_token, 600)})).await;
        assert_eq!(ws.next_json().await["type"], "authenticated");
        app.stop().await;
    }
}

both_backends! {
    async fn a_key_that_may_read_no_event_family_is_refused_and_the_greeting_lists_what_one_may_see(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let key = |scopes: Value| {
            let app = &app;
            let token = owner.access_token.clone();
            async move {
                let key: Value = app.post("/api/v1/admin/api-keys", Some(&token), json!({"name": "k", "scopes": scopes})).await.json().await.unwrap();
                key["secret"].as_str().unwrap().to_owned()
            }
        };
        let blind = key(json!(["events:read"])).await;
        assert_eq!(app.ws("/ws", Some(&blind)).await.err(), Some(403));
        // The same refusal, read as the problem it is (authentication comes before the upgrade).
        let refused = app.request(reqwest::Method::GET, "/ws", Some(&blind), None).await;
        assert_eq!(refused.status().as_u16(), 403);
        let problem: Value = refused.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("`tickets:read`"), "{problem}");

        let tickets_only = key(json!(["events:read", "tickets:read"])).await;
        let mut ws = app.ws("/ws", Some(&tickets_only)).await.unwrap();
        let hello = ws.next_json().await;
        assert_eq!(hello["visible"], json!(["helpdesk.*", "telegram.*", "ticket.*"]));
        assert!(hello["expires_at"].is_null(), "keys do not expire");

        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        let visible = ws.next_json().await["visible"].clone();
        for family in ["payment.*", "ticket.*", "user.*", "webhook.*"] {
            assert!(visible.as_array().unwrap().iter().any(|f| f == family), "the owner sees {family}: {visible}");
        }
        app.stop().await;
    }
}

both_backends! {
    async fn a_client_that_is_reading_catches_a_burst_larger_than_its_queue_up_from_the_log(db) {
        // The tailer hands the hub a backlog at once (here: one append of
        // 300 events): more than the queue holds, faster than any client
        // reads. A client that is reading is not cut off for it.
        let mut config = test_config(db.config.clone());
        config.realtime.queue = 64;
        let app = TestApp::spawn_with(config).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let mut ws = app.ws("/ws", Some(&owner.access_token)).await.unwrap();
        ws.next_json().await;
        // Live: caught up with the feed.
        append_load(&app, "load:burst", 1, 1, "x").await;
        let mut positions = vec![ws.next_event().await["position"].as_i64().unwrap()];
        for _ in 0..3 {
            append_load(&app, "load:burst", 300, 300, "x").await;
            for _ in 0..300 {
                match ws.next_message().await {
                    Ok(message) if message.get("position").is_some() => positions.push(message["position"].as_i64().unwrap()),
                    Ok(message) => panic!("not an event: {message}"),
                    Err(end) => panic!("a reading client was cut off ({end:?}) after {} events", positions.len()),
                }
            }
        }
        assert_eq!(positions.len(), 901);
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "in log order, each once");
        let log = log_ids_after(&app, "0-0", 901).await;
        assert_eq!(log.len(), 901);
        app.stop().await;
    }
}
