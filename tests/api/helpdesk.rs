//! The helpdesk bridge against a fake Webim on loopback (WEBIM.md §4): a
//! user's Telegram messages reach the helpdesk as one visitor's until its
//! chat is closed, operators' answers reach the user's chat once each,
//! messages wait out an outage in order, texts can be kept nowhere, and a
//! bridge turned on through one instance is used by another.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, http::StatusCode, web};
use serde_json::{Value, json};
use switchboard::{auth::Role, config::Config};

use crate::{
    fake_bot::FakeBot,
    helpers::{TestApp, TestDb, assert_problem, both_backends, wait_until},
    telegram_intake::user_of,
    telegram_send::{api_key, user_writes},
};

/// What the service presents to the helpdesk.
const TOKEN: &str = "webim-access-token-3c9e71f2";
/// What the helpdesk presents to the service.
const CALLBACK: &str = "webim-callback-secret-6d2b8a40";
/// The fake's channel, under which it takes messages.
const CHANNEL: &str = "/custom-channel/7";
/// When `user_writes` dates the users' messages (Telegram's `date`).
const SENT_AT: i64 = 1_764_590_000;
/// How long a message may take to reach the fake (retries included).
const PATIENCE: Duration = Duration::from_secs(30);
/// The generic helpdesk endpoint.
const REPLY_PATH: &str = "/api/v1/integrations/helpdesk/messages";

/// One call to the fake's `message`, as it came and as it was answered.
#[derive(Debug, Clone)]
struct Received {
    visitor_id: String,
    message_id: String,
    text: String,
    authorization: Option<String>,
    body: Value,
    at: Instant,
    /// The status the fake answered.
    status: u16,
    /// The chat the fake put it in (when it took it).
    chat_id: Option<i64>,
}

#[derive(Default)]
struct State {
    calls: Vec<Received>,
    /// The messages taken, each once, in the order taken.
    accepted: Vec<Received>,
    /// The chat each message taken went to (a repeat gets the same answer).
    taken: HashMap<String, i64>,
    /// Each visitor's latest chat, and whether it is open.
    chats: HashMap<String, (i64, bool)>,
    opened: i64,
    /// Calls still to answer 503.
    failing: usize,
}

impl State {
    /// The visitor's open chat, opened now if it has none.
    fn open_chat(&mut self, visitor_id: &str) -> i64 {
        if let Some(&(chat, true)) = self.chats.get(visitor_id) {
            return chat;
        }
        self.opened += 1;
        let chat = 1000 + self.opened;
        self.chats.insert(visitor_id.to_owned(), (chat, true));
        chat
    }
}

/// A fake Webim custom channel: takes `POST {CHANNEL}/message` with
/// `Authorization: Token {TOKEN}`, opens a chat on a visitor's first message
/// while it has none open, takes a message id once, and calls the
/// service's callback as Webim would.
struct FakeHelpdesk {
    port: u16,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeHelpdesk {
    async fn start() -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let state = shared.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let state = state.clone();
                async move { respond(&state, &req, &body) }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            state,
            handle,
        }
    }

    /// The `base_url` the service is given.
    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}{CHANNEL}", self.port)
    }

    /// The next `n` calls are answered 503.
    fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().failing = n;
    }

    /// Every call, in order, however it was answered.
    fn calls(&self) -> Vec<Received> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The messages taken, each once, in the order taken, once there are
    /// `count` (within `within`).
    async fn wait_for_accepted(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let accepted = self.state.lock().unwrap().accepted.clone();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(
                Instant::now() < deadline,
                "the fake helpdesk took {} messages of {count} in {within:?}; its calls: {:#?}",
                accepted.len(),
                self.calls()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An operator's answer to a visitor, as Webim calls back with it.
    fn operator_message(&self, visitor_id: &str, message_id: &str, text: &str) -> Value {
        let chat = self
            .state
            .lock()
            .unwrap()
            .chats
            .get(visitor_id)
            .map(|c| c.0);
        let mut body = json!({
            "event": "new_message", "visitor": {"id": visitor_id},
            "message": {"id": message_id, "kind": "operator", "text": text,
                        "created_at": "2026-11-21T10:31:05Z",
                        "operator": {"id": 240001, "name": "Anna"}}
        });
        if let Some(chat) = chat {
            body["chat_id"] = chat.into();
        }
        body
    }

    /// Closes the visitor's chat, as an operator does in Webim; the
    /// callback that tells the service.
    fn close_chat(&self, visitor_id: &str) -> Value {
        let mut state = self.state.lock().unwrap();
        let chat = state.chats.get_mut(visitor_id).map(|(chat, open)| {
            *open = false;
            *chat
        });
        json!({"event": "chat_closed", "chat_id": chat, "visitor": {"id": visitor_id}, "closed_by": "operator"})
    }

    /// Posts `body` to the service's callback `times` times, one after the
    /// other, with the channel secret: each answer's status and body.
    async fn calls_back(&self, app: &TestApp, body: &Value, times: usize) -> Vec<(u16, Value)> {
        let authorization = format!("Token {CALLBACK}");
        let mut answers = Vec::new();
        for _ in 0..times {
            let answer = callback(app, Some(&authorization), body).await;
            let status = answer.status().as_u16();
            answers.push((status, answer.json().await.unwrap_or(Value::Null)));
        }
        answers
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn respond(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    if *req.method() != actix_web::http::Method::POST || req.path() != format!("{CHANNEL}/message")
    {
        return HttpResponse::NotFound().json(json!({"error": "not_found"}));
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut call = Received {
        visitor_id: id_text(&body["visitor"]["id"]),
        message_id: id_text(&body["message"]["id"]),
        text: body["message"]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
        at: Instant::now(),
        status: 0,
        chat_id: None,
    };
    let mut state = state.lock().unwrap();
    let (status, answer) = if call.authorization != Some(format!("Token {TOKEN}")) {
        (401, json!({"error": "unauthorized"}))
    } else if state.failing > 0 {
        state.failing -= 1;
        (503, json!({"error": "unavailable"}))
    } else if body["event"] != "new_message"
        || body["message"]["kind"] != "visitor"
        || call.visitor_id.is_empty()
        || call.message_id.is_empty()
    {
        (
            400,
            json!({"error": "bad_request", "desc": "event, visitor.id, message.id or message.kind"}),
        )
    } else {
        let repeat = state.taken.get(&call.message_id).copied();
        let chat = match repeat {
            // A message id again: the same answer, nothing new stored.
            Some(chat) => chat,
            None => {
                let chat = state.open_chat(&call.visitor_id);
                state.taken.insert(call.message_id.clone(), chat);
                state.accepted.push(Received {
                    status: 200,
                    chat_id: Some(chat),
                    ..call.clone()
                });
                chat
            }
        };
        call.chat_id = Some(chat);
        (
            200,
            json!({"result": "ok", "chat_id": chat, "message_id": call.message_id}),
        )
    };
    call.status = status;
    state.calls.push(call);
    HttpResponse::build(StatusCode::from_u16(status).unwrap()).json(answer)
}

/// A JSON id (a number or a string) as text.
fn id_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A call to the service's Webim callback with this `Authorization` (or none).
async fn callback(app: &TestApp, authorization: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/integrations/webim/callback", app.address))
        .json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.send().await.unwrap()
}

/// The app's configuration: the fake Bot API, the Telegram webhook on, and
/// plain `http://` to loopback allowed past the SSRF guard (the fake helpdesk).
fn config(db: &TestDb, bot: &FakeBot) -> Config {
    let mut config = crate::telegram_send::config(db, bot);
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config
}

async fn owner(app: &TestApp) -> String {
    app.admin_with_role("owner@example.com", Role::Owner)
        .await
        .access_token
}

/// The helpdesk setting that bridges to `fake`.
fn webim(fake: &FakeHelpdesk, store_text: bool) -> Value {
    json!({
        "kind": "webim", "enabled": true, "base_url": fake.base_url(),
        "access_token": TOKEN, "callback_secret": CALLBACK, "store_text": store_text
    })
}

/// Changes the helpdesk setting, as an owner does.
async fn put_setting(app: &TestApp, owner: &str, value: Value) {
    let answer = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/admin/settings/helpdesk",
            Some(owner),
            Some(value),
        )
        .await;
    let status = answer.status().as_u16();
    assert_eq!(status, 200, "{}", answer.text().await.unwrap_or_default());
}

/// The payloads of the events of `event_type`, in log order.
async fn events(app: &TestApp, event_type: &str) -> Vec<Value> {
    crate::helpers::whole_log(&app.state.store)
        .await
        .into_iter()
        .filter(|e| e.event_type.as_str() == event_type)
        .map(|e| e.payload)
        .collect()
}

async fn relayed(app: &TestApp) -> Vec<Value> {
    events(app, "helpdesk.message_relayed").await
}

/// The `to_user` relays' message ids, in log order.
async fn relayed_to_user(app: &TestApp) -> Vec<Value> {
    relayed(app)
        .await
        .into_iter()
        .filter(|p| p["direction"] == "to_user")
        .map(|p| p["message_id"].clone())
        .collect()
}

/// Asserts an event's payload holds none of `texts`: ids, direction and
/// length only.
fn assert_no_text(payload: &Value, texts: &[&str]) {
    assert!(payload.get("text").is_none(), "{payload}");
    let raw = payload.to_string();
    for text in texts {
        assert!(!raw.contains(text), "{payload} holds {text:?}");
    }
}

/// The Telegram sends to `chat`, newest first; `filter` is more of the
/// query (`&status=sent`).
async fn sends_to(app: &TestApp, owner: &str, chat: i64, filter: &str) -> Vec<Value> {
    let page: Value = app
        .get_with(
            &format!("/api/v1/admin/telegram/sends?chat_id={chat}{filter}"),
            owner,
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("not a page of sends: {page}"))
}

/// Every Telegram send to `chat`, once `count` of them were sent.
async fn sent_to(app: &TestApp, owner: &str, chat: i64, count: usize) -> Vec<Value> {
    wait_until(|| async { sends_to(app, owner, chat, "&status=sent").await.len() >= count }).await;
    sends_to(app, owner, chat, "").await
}

/// The texts the fake Bot API was asked to send to `chat`, in order.
fn texts_to(bot: &FakeBot, chat: i64) -> Vec<String> {
    bot.calls()
        .iter()
        .filter(|c| c.method == "sendMessage" && c.chat_id() == chat)
        .map(|c| c.params["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn query(app: &TestApp, sql: &str, values: Vec<sea_orm::Value>) -> Vec<sea_orm::QueryResult> {
    use sea_orm::ConnectionTrait;
    let db = &app.state.db;
    db.conn()
        .query_all_raw(db.statement(sql, values))
        .await
        .unwrap()
}

/// A user's rows in `helpdesk_visitors`, oldest first: `[visitor_id,
/// status, chat_id]`.
async fn visitors(app: &TestApp, user_id: &str) -> Vec<Value> {
    let rows = query(
        app,
        "SELECT visitor_id, status, chat_id FROM helpdesk_visitors WHERE user_id = $1 \
         ORDER BY created_at_ms, visitor_id",
        vec![user_id.to_owned().into()],
    )
    .await;
    rows.iter()
        .map(|row| {
            json!([
                row.try_get::<String>("", "visitor_id").unwrap(),
                row.try_get::<String>("", "status").unwrap(),
                row.try_get::<Option<String>>("", "chat_id").unwrap(),
            ])
        })
        .collect()
}

/// Every row of `helpdesk_relays`, oldest first: `[message_id, status,
/// whether it still holds the message]`.
async fn relays(app: &TestApp) -> Vec<Value> {
    let rows = query(
        app,
        "SELECT message_id, status, CASE WHEN body IS NULL THEN 0 ELSE 1 END AS held \
         FROM helpdesk_relays ORDER BY created_at_ms, id",
        Vec::new(),
    )
    .await;
    rows.iter()
        .map(|row| {
            json!([
                row.try_get::<String>("", "message_id").unwrap(),
                row.try_get::<String>("", "status").unwrap(),
                row.try_get::<i32>("", "held").unwrap() == 1,
            ])
        })
        .collect()
}

/// The attempts of the relay of `message_id`, in order: `[attempt,
/// response_status]`.
async fn attempts(app: &TestApp, message_id: &str) -> Vec<Value> {
    let rows = query(
        app,
        "SELECT a.attempt, a.response_status FROM helpdesk_attempts a \
         JOIN helpdesk_relays r ON r.id = a.relay_id WHERE r.message_id = $1 ORDER BY a.attempt",
        vec![message_id.to_owned().into()],
    )
    .await;
    rows.iter()
        .map(|row| {
            json!([
                row.try_get::<i32>("", "attempt").unwrap(),
                row.try_get::<Option<i32>>("", "response_status").unwrap(),
            ])
        })
        .collect()
}

/// An app bridged to a fake Webim, with a fake Bot API and an owner.
struct Bridged {
    app: TestApp,
    bot: FakeBot,
    fake: FakeHelpdesk,
    owner: String,
}

impl Bridged {
    async fn start(db: &TestDb, store_text: bool) -> Self {
        let bot = FakeBot::start().await;
        let fake = FakeHelpdesk::start().await;
        let app = TestApp::spawn_with(config(db, &bot)).await;
        let owner = owner(&app).await;
        put_setting(&app, &owner, webim(&fake, store_text)).await;
        Self {
            app,
            bot,
            fake,
            owner,
        }
    }

    /// The test's first message, from user `from`: as the helpdesk took it,
    /// once its relay ended.
    async fn first_message(&self, from: i64, text: &str) -> Received {
        user_writes(&self.app, 1, from, text).await;
        let accepted = self.fake.wait_for_accepted(1, PATIENCE).await;
        wait_until(|| async { relayed(&self.app).await.len() == 1 }).await;
        accepted[0].clone()
    }

    async fn stop(self) {
        self.app.stop().await;
        self.bot.stop().await;
        self.fake.stop().await;
    }
}

both_backends! {
    async fn a_users_message_reaches_the_helpdesk_and_the_operators_answer_reaches_their_chat(db) {
        const ASKED: &str = "Where is my order?";
        const ANSWERED: &str = "It ships today.";
        let b = Bridged::start(&db, true).await;
        let message = b.first_message(4200, ASKED).await;
        assert_eq!(message.authorization, Some(format!("Token {TOKEN}")));
        assert_eq!((message.message_id.as_str(), message.text.as_str()), ("tg:4200:1", ASKED));
        assert_eq!(message.body["visitor"]["channel_user_id"], "4200", "{}", message.body);
        assert_eq!(message.body["visitor"]["fields"], json!({"name": "Ann", "login": "ann4200"}));
        let created_at = message.body["message"]["created_at"].as_str().unwrap_or_default();
        assert_eq!(chrono::DateTime::parse_from_rfc3339(created_at).ok().map(|t| t.timestamp()), Some(SENT_AT), "{created_at:?}");

        let answer = b.fake.operator_message(&message.visitor_id, "a3f1c0de", ANSWERED);
        assert_eq!(b.fake.calls_back(&b.app, &answer, 1).await, [(200, json!({"result": "ok"}))]);
        let sends = sent_to(&b.app, &b.owner, 4200, 1).await;
        assert_eq!(sends.len(), 1, "{sends:?}");
        assert_eq!(sends[0]["origin"], "helpdesk");
        assert_eq!(texts_to(&b.bot, 4200), [ANSWERED]);
        // Support tickets are on: the ticket shows both sides too.
        let ticket = events(&b.app, "ticket.message_added").await;
        let shown: Vec<Value> = ticket.iter().map(|p| json!([p["channel"], p["author"], p["text"]])).collect();
        assert_eq!(shown, [json!(["telegram", "user", ASKED]), json!(["helpdesk", "operator", ANSWERED])]);
        assert_eq!(ticket[0]["ticket_id"], ticket[1]["ticket_id"]);

        // Both ways in the log, by ids and length, without the texts.
        let user = user_of(&b.app, &b.owner, 4200).await["id"].clone();
        let logged = relayed(&b.app).await;
        let seen: Vec<Value> = logged.iter().map(|p| json!([p["direction"], p["visitor_id"], p["user_id"], p["message_id"], p["length"]])).collect();
        assert_eq!(seen, [
            json!(["to_helpdesk", message.visitor_id, user, "tg:4200:1", ASKED.chars().count()]),
            json!(["to_user", message.visitor_id, user, "a3f1c0de", ANSWERED.chars().count()]),
        ]);
        let chat = message.chat_id.unwrap().to_string();
        assert_eq!(logged.iter().map(|p| id_text(&p["chat_id"])).collect::<Vec<_>>(), [chat.clone(), chat]);
        for payload in &logged {
            assert_no_text(payload, &[ASKED, ANSWERED]);
        }
        b.stop().await;
    }
}

both_backends! {
    async fn a_users_messages_share_a_visitor_until_the_helpdesk_closes_its_chat(db) {
        let b = Bridged::start(&db, true).await;
        user_writes(&b.app, 1, 4300, "first").await;
        user_writes(&b.app, 2, 4300, "second").await;
        let accepted = b.fake.wait_for_accepted(2, PATIENCE).await;
        let (visitor, chat) = (accepted[0].visitor_id.clone(), accepted[0].chat_id);
        assert_eq!((accepted[1].visitor_id.as_str(), accepted[1].chat_id), (visitor.as_str(), chat), "the second message goes to the same visitor's chat");
        wait_until(|| async { relayed(&b.app).await.len() == 2 }).await;
        let user = user_of(&b.app, &b.owner, 4300).await["id"].as_str().unwrap().to_owned();
        let chat_text = chat.unwrap().to_string();
        assert_eq!(visitors(&b.app, &user).await, [json!([visitor, "open", chat_text])]);

        assert_eq!(b.fake.calls_back(&b.app, &b.fake.close_chat(&visitor), 1).await, [(200, json!({"result": "ok"}))]);
        let closed = events(&b.app, "helpdesk.chat_closed").await;
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(json!([closed[0]["visitor_id"], closed[0]["user_id"], closed[0]["closed_by"]]), json!([visitor, user, "operator"]));
        assert_eq!(id_text(&closed[0]["chat_id"]), chat_text);
        // Said again: taken, and closed once.
        assert_eq!(b.fake.calls_back(&b.app, &b.fake.close_chat(&visitor), 1).await, [(200, json!({"result": "ok"}))]);
        assert_eq!(events(&b.app, "helpdesk.chat_closed").await.len(), 1);

        user_writes(&b.app, 3, 4300, "third").await;
        let accepted = b.fake.wait_for_accepted(3, PATIENCE).await;
        let (next, next_chat) = (accepted[2].visitor_id.clone(), accepted[2].chat_id);
        assert_ne!(next, visitor, "a closed chat's visitor is not written for again");
        assert_ne!(next_chat, chat, "the helpdesk opened a new chat");
        wait_until(|| async { relayed(&b.app).await.len() == 3 }).await;
        // The closed visitor is kept: the user's history.
        assert_eq!(visitors(&b.app, &user).await, [
            json!([visitor, "closed", chat_text]),
            json!([next, "open", next_chat.unwrap().to_string()]),
        ]);
        b.stop().await;
    }
}

both_backends! {
    async fn callbacks_need_the_secret_and_a_known_visitor_and_each_answer_is_sent_once(db) {
        let b = Bridged::start(&db, true).await;
        let visitor = b.first_message(4400, "Is anyone there?").await.visitor_id;
        let answer = b.fake.operator_message(&visitor, "op-1", "Sent once");
        // The service's own token is no channel secret.
        let access = format!("Token {TOKEN}");
        for authorization in [None, Some("Token wrong-secret"), Some(access.as_str())] {
            assert_problem(callback(&b.app, authorization, &answer).await, 401, "unauthorized").await;
        }
        assert!(sends_to(&b.app, &b.owner, 4400, "").await.is_empty(), "a refused callback sends nothing");

        let stranger = b.fake.calls_back(&b.app, &b.fake.operator_message("no-such-visitor", "op-2", "Lost"), 1).await;
        assert_eq!((stranger[0].0, stranger[0].1["code"].clone()), (404, json!("unknown_visitor")), "{stranger:?}");
        // Values the database cannot hold are the caller's error.
        for bad in [b.fake.operator_message(&"v".repeat(201), "op-long", "x"), b.fake.operator_message(&visitor, "op\u{0}nul", "x")] {
            let refused = b.fake.calls_back(&b.app, &bad, 1).await;
            assert_eq!((refused[0].0, refused[0].1["code"].clone()), (422, json!("invalid_field")), "{refused:?}");
        }

        // Webim calls again when it missed the answer: taken, sent once.
        assert_eq!(b.fake.calls_back(&b.app, &answer, 2).await, vec![(200, json!({"result": "ok"})); 2]);
        // And twice at once, as its test mode does.
        let racing = b.fake.operator_message(&visitor, "op-3", "Also once");
        let (one, other) = tokio::join!(b.fake.calls_back(&b.app, &racing, 1), b.fake.calls_back(&b.app, &racing, 1));
        assert_eq!([one, other].concat(), vec![(200, json!({"result": "ok"})); 2]);
        let sends = sent_to(&b.app, &b.owner, 4400, 2).await;
        assert_eq!(sends.len(), 2, "{sends:?}");
        assert_eq!(texts_to(&b.bot, 4400), ["Sent once", "Also once"]);
        assert_eq!(relayed_to_user(&b.app).await, [json!("op-1"), json!("op-3")]);

        // The bridge off: no callback is taken.
        let mut off = webim(&b.fake, true);
        off["enabled"] = json!(false);
        put_setting(&b.app, &b.owner, off).await;
        let late = b.fake.calls_back(&b.app, &b.fake.operator_message(&visitor, "op-4", "Too late"), 1).await;
        assert_eq!((late[0].0, late[0].1["code"].clone()), (404, json!("helpdesk_off")), "{late:?}");
        assert_eq!(sends_to(&b.app, &b.owner, 4400, "").await.len(), 2);
        b.stop().await;
    }
}

both_backends! {
    async fn messages_wait_out_a_helpdesk_outage_and_arrive_once_each_in_order(db) {
        let b = Bridged::start(&db, true).await;
        b.fake.fail_next(3);
        for (n, text) in [(1, "m1"), (2, "m2"), (3, "m3")] {
            user_writes(&b.app, n, 4600, text).await;
        }
        let accepted = b.fake.wait_for_accepted(3, PATIENCE).await;
        let taken: Vec<(&str, &str)> = accepted.iter().map(|m| (m.message_id.as_str(), m.text.as_str())).collect();
        assert_eq!(taken, [("tg:4600:1", "m1"), ("tg:4600:2", "m2"), ("tg:4600:3", "m3")]);
        // The outage met the first message; the others waited behind it.
        let calls = b.fake.calls();
        let answered: Vec<(&str, u16)> = calls.iter().map(|c| (c.message_id.as_str(), c.status)).collect();
        assert_eq!(answered, [("tg:4600:1", 503), ("tg:4600:1", 503), ("tg:4600:1", 503), ("tg:4600:1", 200), ("tg:4600:2", 200), ("tg:4600:3", 200)]);
        let tries: Vec<Instant> = calls.iter().filter(|c| c.message_id == "tg:4600:1").map(|c| c.at).collect();
        for (n, pair) in tries.windows(2).enumerate() {
            let (waited, least) = (pair[1] - pair[0], Duration::from_secs(1 << n));
            assert!(waited + Duration::from_millis(50) >= least, "retry {} came {waited:?} after the try before, sooner than {least:?}", n + 1);
        }

        wait_until(|| async { relayed(&b.app).await.len() == 3 }).await;
        let order: Vec<Value> = relayed(&b.app).await.iter().map(|p| p["message_id"].clone()).collect();
        assert_eq!(order, [json!("tg:4600:1"), json!("tg:4600:2"), json!("tg:4600:3")]);
        assert!(events(&b.app, "helpdesk.relay_failed").await.is_empty());
        assert_eq!(attempts(&b.app, "tg:4600:1").await, [json!([1, 503]), json!([2, 503]), json!([3, 503]), json!([4, 200])]);
        for later in ["tg:4600:2", "tg:4600:3"] {
            assert_eq!(attempts(&b.app, later).await, [json!([1, 200])], "{later}");
        }
        // Delivered, the texts are not held any more.
        assert_eq!(relays(&b.app).await, [
            json!(["tg:4600:1", "delivered", false]),
            json!(["tg:4600:2", "delivered", false]),
            json!(["tg:4600:3", "delivered", false]),
        ]);
        b.stop().await;
    }
}

both_backends! {
    async fn the_generic_endpoint_takes_answers_from_keys_with_helpdesk_reply_once_each(db) {
        const ANSWERED: &str = "From the generic side";
        let b = Bridged::start(&db, true).await;
        let visitor = b.first_message(4500, "Any news?").await.visitor_id;
        let answer = json!({"visitor_id": visitor, "message_id": "hd-1", "text": ANSWERED, "operator": {"id": "240001", "name": "Anna"}});
        assert_problem(b.app.post(REPLY_PATH, None, answer.clone()).await, 401, "unauthorized").await;
        let sender = api_key(&b.app, &b.owner, "telegram:send").await;
        assert_problem(b.app.post(REPLY_PATH, Some(&sender), answer.clone()).await, 403, "forbidden").await;
        assert!(sends_to(&b.app, &b.owner, 4500, "").await.is_empty(), "a refused answer sends nothing");

        let key = api_key(&b.app, &b.owner, "helpdesk:reply").await;
        let queued = b.app.post(REPLY_PATH, Some(&key), answer.clone()).await;
        assert_eq!(queued.status().as_u16(), 202);
        let queued: Value = queued.json().await.unwrap();
        assert_eq!(queued["status"], "queued", "{queued}");
        let sends = sent_to(&b.app, &b.owner, 4500, 1).await;
        assert_eq!(queued["send_ids"], json!(sends.iter().map(|s| s["id"].clone()).collect::<Vec<_>>()));
        assert_eq!(texts_to(&b.bot, 4500), [ANSWERED]);
        assert_eq!(relayed_to_user(&b.app).await, [json!("hd-1")]);

        let again = b.app.post(REPLY_PATH, Some(&key), answer).await;
        assert_eq!(again.status().as_u16(), 200);
        assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");
        assert_eq!(sends_to(&b.app, &b.owner, 4500, "").await.len(), 1, "a repeat sends nothing");

        let stranger = json!({"visitor_id": "no-such-visitor", "message_id": "hd-2", "text": "Hello?"});
        assert_problem(b.app.post(REPLY_PATH, Some(&key), stranger).await, 404, "unknown_visitor").await;
        b.stop().await;
    }
}

/// The whole test database's data, as `pg_dump --data-only` prints it.
#[cfg(postgres_tests)]
async fn pg_dump(db: &TestDb) -> String {
    let switchboard::config::DatabaseConfig::Postgres { url, .. } = &db.config else {
        panic!("pg_dump needs the PostgreSQL database");
    };
    let out = tokio::process::Command::new("pg_dump")
        .args(["--data-only", "--dbname", url.as_str()])
        .output()
        .await
        .expect("pg_dump is on PATH");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tables whose rows in a dump hold `needle`.
#[cfg(postgres_tests)]
fn tables_holding(dump: &str, needle: &str) -> Vec<String> {
    let mut table = "";
    let mut found: Vec<String> = Vec::new();
    for line in dump.lines() {
        if let Some(copy) = line.strip_prefix("COPY ") {
            table = copy.split(' ').next().unwrap_or(copy);
        } else if line.contains(needle) && !found.iter().any(|t| t == table) {
            found.push(table.to_owned());
        }
    }
    found
}

/// Texts not kept: after a round trip neither text is anywhere in the
/// database, and the events say only how long each was.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_texts_not_kept_a_round_trip_leaves_no_text_in_the_database() {
    const ASKED: &str = "secret-order-4711";
    const ANSWERED: &str = "answer-text-9932";
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let b = Bridged::start(&db, false).await;
    let message = b.first_message(4700, ASKED).await;
    assert_eq!(message.text, ASKED, "the helpdesk gets the text");
    let answer = b
        .fake
        .operator_message(&message.visitor_id, "op-private-1", ANSWERED);
    assert_eq!(
        b.fake.calls_back(&b.app, &answer, 1).await,
        [(200, json!({"result": "ok"}))]
    );
    let sends = sent_to(&b.app, &b.owner, 4700, 1).await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(texts_to(&b.bot, 4700), [ANSWERED], "the user gets the text");

    let logged = relayed(&b.app).await;
    let lengths: Vec<Value> = logged
        .iter()
        .map(|p| json!([p["direction"], p["length"]]))
        .collect();
    assert_eq!(
        lengths,
        [
            json!(["to_helpdesk", ASKED.chars().count()]),
            json!(["to_user", ANSWERED.chars().count()])
        ]
    );
    for payload in &logged {
        assert_no_text(payload, &[ASKED, ANSWERED]);
    }
    let received = events(&b.app, "telegram.message_received").await;
    assert_eq!(
        received[0]["text_length"],
        ASKED.chars().count(),
        "{received:?}"
    );
    assert!(
        events(&b.app, "ticket.created").await.is_empty(),
        "no ticket keeps a text"
    );

    let dump = pg_dump(&db).await;
    assert!(
        tables_holding(&dump, &message.visitor_id).contains(&"public.helpdesk_visitors".to_owned()),
        "the dump holds the bridge's rows"
    );
    for text in [ASKED, ANSWERED] {
        assert_eq!(
            tables_holding(&dump, text),
            Vec::<String>::new(),
            "tables holding {text:?}"
        );
    }
    b.stop().await;
}

/// The helpdesk setting as `app` reads it (through its cache).
#[cfg(postgres_tests)]
async fn bridge_of(app: &TestApp) -> Option<switchboard::settings::Helpdesk> {
    app.state
        .settings
        .get::<switchboard::settings::Helpdesk>()
        .await
        .unwrap()
}

/// Two instances on one database: the bridge turned on through the first
/// is seen by the second within a second, and the second alone relays a
/// message both ways; no log line shows a credential or a text.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_turned_on_through_one_instance_is_used_by_another_and_logs_no_secret() {
    const ASKED: &str = "two-instance-question-5830";
    const ANSWERED: &str = "two-instance-answer-2291";
    let db = TestDb::new(crate::helpers::Kind::Postgres).await;
    let bot = FakeBot::start().await;
    let fake = FakeHelpdesk::start().await;
    let first = TestApp::spawn_with(config(&db, &bot)).await;
    let second = TestApp::spawn_with(config(&db, &bot)).await;
    let owner = owner(&first).await;
    // The second has read the setting (none) before the change.
    assert!(bridge_of(&second).await.is_none());
    put_setting(&first, &owner, webim(&fake, true)).await;
    let changed = Instant::now();
    while !bridge_of(&second)
        .await
        .is_some_and(|h| h.enabled && h.base_url.as_str() == fake.base_url())
    {
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the second instance does not see the bridge 1 s after it was turned on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Only the second is left to take the message and relay it.
    first.stop().await;
    user_writes(&second, 1, 4800, ASKED).await;
    let accepted = fake.wait_for_accepted(1, Duration::from_secs(5)).await;
    assert_eq!(accepted[0].text, ASKED);
    wait_until(|| async { relayed(&second).await.len() == 1 }).await;
    let answer = fake.operator_message(&accepted[0].visitor_id, "op-two-1", ANSWERED);
    assert_eq!(
        fake.calls_back(&second, &answer, 1).await,
        [(200, json!({"result": "ok"}))]
    );
    sent_to(&second, &owner, 4800, 1).await;
    assert_eq!(texts_to(&bot, 4800), [ANSWERED]);

    let logs = crate::helpers::captured_logs();
    for secret in [TOKEN, CALLBACK, ASKED, ANSWERED] {
        assert!(!logs.contains(secret), "the logs show {secret:?}");
    }
    second.stop().await;
    bot.stop().await;
    fake.stop().await;
}
