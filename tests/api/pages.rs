//! The pages: how they are served, and what people do with them in a real
//! browser (Debian's chromium driven by `tests/browser/*.mjs`).

use std::path::Path;

use serde_json::{Value, json};

use switchboard::auth::Role;

use crate::{
    fake_bot::FakeBot,
    helpers::{ADMIN_PASSWORD, Kind, TestApp, TestDb, assert_problem},
};

/// A scenario's finding that is a list of strings.
fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// How a scenario signs in as an admin made by [`TestApp::admin_with_role`].
fn signs_in(email: &str) -> Value {
    json!({"email": email, "password": ADMIN_PASSWORD})
}

/// Runs `tests/browser/<scenario>.mjs` with `args` (plus the app's address
/// and the artifacts directory, `target/browser/`): its findings. A page's
/// console error, uncaught exception, failed request or 5xx answer fails it.
pub(crate) async fn browser(scenario: &str, app: &TestApp, mut args: Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser").join(format!("{scenario}.mjs"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "the browser tests need `npm ci --prefix tests/browser` and Debian's chromium (.ci/run installs both)"
    );
    args["base_url"] = json!(app.address);
    args["artifacts"] = json!(root.join("target/browser").to_string_lossy());
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .env("BROWSER_ARGS", args.to_string())
        .output()
        .await
        .expect("node must be installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let findings: Value = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("{scenario}: no findings\n{stdout}\n{stderr}"));
    assert!(
        output.status.success() && findings["ok"] == true,
        "{scenario}: {findings:#}\n{stderr}"
    );
    findings["result"].clone()
}

#[tokio::test]
async fn the_pages_are_served_with_a_policy_that_runs_only_their_own_files() {
    let db = TestDb::new(Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status().as_u16(), 302);
    assert_eq!(root.headers()["location"], "/admin");

    for (page, framed_by) in [
        ("/admin", "'none'"),
        ("/cabinet", "https://web.telegram.org"),
    ] {
        let response = app.get(page).await;
        assert_eq!(response.status().as_u16(), 200, "{page}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("script-src 'self';"), "{page}: {csp}");
        assert!(!csp.contains("unsafe"), "{page}: {csp}");
        assert!(
            csp.ends_with(&format!("frame-ancestors {framed_by}")),
            "{page}: {csp}"
        );
        let html = response.text().await.unwrap();
        assert!(
            !html.contains("<script>"),
            "{page}: an inline script would not run"
        );
        // Every file the page links is served, with its type, cached for
        // good under its version.
        let linked: Vec<&str> = html
            .split(['"', '\''])
            .filter(|part| part.starts_with("/assets/"))
            .collect();
        assert!(linked.len() >= 3, "{page}: {linked:?}");
        for url in linked {
            let file = app.get(url).await;
            assert_eq!(file.status().as_u16(), 200, "{url}");
            let kind = file.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(
                kind.starts_with("text/css") || kind.starts_with("text/javascript"),
                "{url}: {kind}"
            );
            assert!(
                file.headers()["cache-control"]
                    .to_str()
                    .unwrap()
                    .contains("immutable"),
                "{url}"
            );
            assert!(!file.text().await.unwrap().is_empty(), "{url}");
        }
    }
    let unversioned = app.get("/assets/admin.js").await;
    assert_eq!(unversioned.headers()["cache-control"], "no-cache");
    // Revalidated, it is not sent again while it has not changed.
    let etag = unversioned.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(format!("{}/assets/admin.js", app.address))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert!(again.text().await.unwrap().is_empty());
    let stale = app
        .client
        .get(format!("{}/assets/admin.js", app.address))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 200);
    for missing in [
        "/assets/nothing.js",
        "/assets/..%2FCargo.toml",
        "/assets/%2e%2e%2fCargo.toml",
    ] {
        assert_problem(app.get(missing).await, 404, "not_found").await;
    }
    app.stop().await;
}

#[tokio::test]
async fn an_operator_and_a_user_talk_live_through_the_pages_and_the_feed_survives_a_reload() {
    let db = TestDb::new(Kind::Sqlite).await;
    let bot = FakeBot::start().await;
    let app = TestApp::spawn_with(crate::telegram_send::config(&db, &bot)).await;
    app.admin_with_role("op@example.com", Role::Operator).await;
    let init_data = crate::telegram_auth::fresh_init_data(4242, "ann");
    let ran = browser(
        "support",
        &app,
        json!({"admin": signs_in("op@example.com"), "init_data": init_data}),
    )
    .await;

    // What the pages showed is what the API holds.
    let operator = app.admin_login("op@example.com", ADMIN_PASSWORD).await;
    let ticket: Value = app
        .get_with(
            &format!(
                "/api/v1/admin/tickets/{}",
                ran["ticket_id"].as_str().unwrap()
            ),
            &operator.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let said: Vec<(&str, &str)> = ticket["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["author"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("user", "My payment is stuck"),
            ("operator", "We are looking into it"),
            ("user", "Thanks!"),
            ("user", "one more thing"),
            ("user", "and another"),
        ],
        "{ticket}"
    );
    let shown_in_cabinet = strings(&ran["cabinet_messages"]);
    let first_three: Vec<&str> = ticket["messages"].as_array().unwrap()[..3]
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown_in_cabinet, first_three, "each message once, in order");

    // After the reload the feed's rows are the log's newest, newest first,
    // none missing and none twice.
    let feed = strings(&ran["feed"]);
    let mut unique = feed.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), feed.len(), "a row shown twice: {feed:?}");
    let visible: Value = app
        .get_with(
            "/api/v1/admin/events?order=desc&limit=100",
            &operator.access_token,
        )
        .await
        .json()
        .await
        .unwrap();
    let visible = visible["events"].as_array().unwrap();
    let newest: Vec<&str> = visible.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        feed, newest,
        "the feed is not the log's newest events the operator may see"
    );
    // Among them the messages written while the page was reloading.
    let last = visible
        .iter()
        .find(|e| e["type"] == "ticket.message_added")
        .unwrap();
    assert_eq!(last["payload"]["text"], "and another");
    let whole: Vec<String> = crate::helpers::whole_log(&app.state.store)
        .await
        .iter()
        .rev()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(feed, whole, "the whole log, newest first");
    // The cabinet behaved as a Mini App: it told Telegram it is ready and
    // took Telegram's colours.
    let posted = ran["mini_app_events"].to_string();
    assert!(
        posted.contains("web_app_ready") && posted.contains("web_app_expand"),
        "{posted}"
    );
    assert_eq!(ran["themed_bg"]["bg"], "#17212b");
    assert_eq!(
        ran["back_button_shown"], true,
        "a sub-screen shows Telegram's back button"
    );
    // Surfaces follow the dark theme too (not app.css's light grey).
    let panel = ran["themed_bg"]["panel"].as_str().unwrap();
    assert!(panel.starts_with('#') && panel < "#808080", "{panel}");
    app.stop().await;
    bot.stop().await;
}

#[tokio::test]
async fn a_broadcast_composed_on_the_dashboard_shows_its_progress_reach_100_percent() {
    let db = TestDb::new(Kind::Sqlite).await;
    let bot = FakeBot::start().await;
    let app = TestApp::spawn_with(crate::telegram_send::config(&db, &bot)).await;
    let owner = app.admin_with_role("owner@example.com", Role::Owner).await;
    crate::broadcasts::users(&app, &owner.access_token, 201..206, "en").await;
    let ran = browser(
        "broadcast",
        &app,
        json!({"admin": signs_in("owner@example.com")}),
    )
    .await;
    assert_eq!(
        ran["preview_text"], "Spring sale\nEverything -20 %",
        "{ran}"
    );
    assert_eq!(ran["counted"], "5", "{ran}");
    assert_eq!(ran["value"], ran["max"], "{ran}");
    assert_eq!(ran["sent"], "Sent\n5", "{ran}");
    // What the composer made is what Telegram got, once per user.
    let mut chats: Vec<i64> = bot
        .calls()
        .iter()
        .filter(|c| {
            c.method == "sendMessage" && c.params["text"] == "Spring sale\nEverything -20 %"
        })
        .map(|c| {
            assert_eq!(
                c.params["reply_markup"]["inline_keyboard"][0][0],
                json!({"text": "Open the shop", "url": "https://shop.example/sale"})
            );
            c.params["chat_id"].as_i64().unwrap()
        })
        .collect();
    chats.sort_unstable();
    assert_eq!(chats, (201..206).collect::<Vec<_>>());
    app.stop().await;
    bot.stop().await;
}

#[tokio::test]
async fn every_page_as_each_role_sees_it_in_light_and_dark_at_both_widths() {
    let db = TestDb::new(Kind::Sqlite).await;
    let bot = FakeBot::start().await;
    let app = TestApp::spawn_with(crate::telegram_send::config(&db, &bot)).await;
    let owner = app.admin_with_role("owner@example.com", Role::Owner).await;
    app.admin_with_role("viewer@example.com", Role::Viewer)
        .await;
    let token = owner.access_token.as_str();
    // A Telegram user sends a photo (a ticket), pays; an endpoint and a key.
    let photo = json!({"update_id": 1, "message": {
        "message_id": 1, "date": 1_764_590_000,
        "chat": {"id": 301, "type": "private", "first_name": "Ann"},
        "from": {"id": 301, "is_bot": false, "first_name": "Ann", "username": "ann"},
        "photo": [{"file_id": "AgADphoto-1_x", "file_unique_id": "u1", "width": 10, "height": 10, "file_size": 10}]}});
    let answer = app
        .client
        .post(format!("{}/telegram/webhook", app.address))
        .header(
            "X-Telegram-Bot-Api-Secret-Token",
            crate::telegram_send::SECRET,
        )
        .json(&photo)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    crate::helpers::wait_until(|| async {
        let tickets: Value = app
            .get_with("/api/v1/admin/tickets", token)
            .await
            .json()
            .await
            .unwrap();
        tickets["total"] == 1
    })
    .await;
    let tickets: Value = app
        .get_with("/api/v1/admin/tickets", token)
        .await
        .json()
        .await
        .unwrap();
    let ticket = &tickets["items"][0];
    let user_id = ticket["user_id"].as_str().unwrap();
    let paid = app
        .post("/api/v1/admin/payments", Some(token), json!({"user_id": user_id, "amount": 49_900, "currency": "RUB", "provider": "p", "external_id": "e1", "status": "completed"}))
        .await;
    assert!(paid.status().is_success());
    let endpoint: Value = app
        .post(
            "/api/v1/admin/webhooks",
            Some(token),
            json!({"name": "crm", "url": "http://localhost:9/hook", "event_types": ["ticket.*"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = app
        .post(
            "/api/v1/admin/api-keys",
            Some(token),
            json!({"name": "bot", "scopes": ["events:read"]}),
        )
        .await;
    assert!(key.status().is_success());
    let widget = crate::telegram_auth::widget_fields(302, chrono::Utc::now().timestamp());

    let ran = browser(
        "tour",
        &app,
        json!({
            "owner": signs_in("owner@example.com"),
            "viewer": signs_in("viewer@example.com"),
            "ticket_id": ticket["id"], "user_id": user_id, "webhook_id": endpoint["id"],
            "widget": widget,
        }),
    )
    .await;
    assert_eq!(
        ran["sign_in_tab_order"],
        json!(["password", "submit"]),
        "{ran}"
    );
    assert_eq!(ran["signed_out"], true);
    let names = |key: &str| {
        ran[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let owner_nav = names("owner_nav");
    for section in [
        "Stats",
        "Live feed",
        "Tickets",
        "Users",
        "Webhooks",
        "Broadcasts",
        "API keys",
    ] {
        assert!(
            owner_nav.iter().any(|n| n == section),
            "{section}: {owner_nav:?}"
        );
    }
    assert_eq!(
        ran["landing"], "Stats",
        "the dashboard opens on its figures: {ran}"
    );
    let viewer_nav = names("viewer_nav");
    assert!(
        viewer_nav.iter().any(|n| n == "Tickets") && viewer_nav.iter().any(|n| n == "Stats"),
        "{viewer_nav:?}"
    );
    for hidden in ["Webhooks", "Broadcasts", "API keys"] {
        assert!(
            !viewer_nav.iter().any(|n| n == hidden),
            "a viewer sees {hidden}: {viewer_nav:?}"
        );
    }
    assert_eq!(ran["owner_can_reply"], 1);
    assert_eq!(ran["viewer_reply_boxes"], 0, "{ran}");
    assert_eq!(ran["viewer_reply_buttons"], 0);
    assert_eq!(ran["viewer_block_buttons"], 0);
    assert!(ran["event_bars"].as_u64().unwrap() >= 1, "{ran}");
    // The photo came through the files route, with the operator's token.
    assert_eq!(
        ran["photo"],
        json!({"file_id": "AgADphoto-1_x", "src": "blob:"}),
        "{ran}"
    );
    assert!(bot.calls().iter().any(|c| c.method == "getFile"));
    let bot_id = crate::helpers::BOT_TOKEN.split(':').next().unwrap();
    let link = ran["widget_link"].as_str().unwrap();
    assert!(
        link.starts_with("https://oauth.telegram.org/auth?")
            && link.contains(&format!("bot_id={bot_id}")),
        "{link}"
    );
    assert_eq!(
        ran["bot_link"], "https://t.me/switchboard_test_bot",
        "{ran}"
    );
    assert_eq!(
        ran["hash_after_sign_in"], "",
        "the signed payload is taken out of the address"
    );
    assert!(
        ran["subscription"]
            .as_str()
            .unwrap()
            .contains("No subscription"),
        "{ran}"
    );
    app.stop().await;
    bot.stop().await;
}

#[tokio::test]
async fn the_dashboards_feed_outlives_its_access_token_on_one_connection() {
    let db = TestDb::new(Kind::Sqlite).await;
    let mut config = crate::helpers::test_config(db.config.clone());
    config.auth.access_token_ttl = std::time::Duration::from_secs(6);
    let app = TestApp::spawn_with(config).await;
    app.admin_with_role("owner@example.com", Role::Owner).await;
    let user = crate::tickets::cabinet_user(&app, 1).await;
    let user_id = crate::ledger::user_id(&app, &user.access_token).await;
    let ran = browser(
        "feed_refresh",
        &app,
        json!({"admin": signs_in("owner@example.com"), "user_id": user_id, "ttl_seconds": 6}),
    )
    .await;
    assert_eq!(ran["paid"], 201, "{ran}");
    assert_eq!(ran["refreshed"], true, "{ran}");
    // 15 s, two and a half access tokens: one socket, never closed, never
    // anything but live.
    assert_eq!(ran["sockets"], 1, "{ran}");
    assert_eq!(ran["closes"], 0, "{ran}");
    assert!(
        ran["states"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s == "live"),
        "{ran}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_dropped_feed_connection_resumes_with_no_row_lost_or_repeated() {
    let db = TestDb::new(Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    app.admin_with_role("owner@example.com", Role::Owner).await;
    let user = crate::tickets::cabinet_user(&app, 1).await;
    let user_id = crate::ledger::user_id(&app, &user.access_token).await;
    let ran = browser(
        "feed_drop",
        &app,
        json!({"admin": signs_in("owner@example.com"), "user_id": user_id}),
    )
    .await;
    assert_eq!(ran["statuses"], json!([201, 201, 201]), "{ran}");
    assert!(
        ran["sockets"].as_u64().unwrap() >= 2,
        "it reconnected: {ran}"
    );
    let shown = strings(&ran["shown"]);
    let whole: Vec<String> = crate::helpers::whole_log(&app.state.store)
        .await
        .iter()
        .rev()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(shown, whole, "the whole log, newest first, each event once");
    app.stop().await;
}

#[tokio::test]
async fn what_an_owner_does_on_the_dashboard_is_what_the_api_holds() {
    let db = TestDb::new(Kind::Sqlite).await;
    let mut config = crate::helpers::test_config(db.config.clone());
    config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let app = TestApp::spawn_with(config).await;
    let owner = app.admin_with_role("owner@example.com", Role::Owner).await;
    let token = owner.access_token.as_str();
    let user = crate::tickets::cabinet_user(&app, 1).await;
    let ticket = crate::tickets::open_ticket(&app, &user, "Refund please").await;
    let user_id = crate::ledger::user_id(&app, &user.access_token).await;
    let ran = browser(
        "actions",
        &app,
        json!({"owner": signs_in("owner@example.com"), "ticket_id": ticket["id"], "user_id": user_id}),
    )
    .await;
    let get = |path: String| {
        let app = &app;
        async move {
            app.get_with(&path, token)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let seen = get(format!(
        "/api/v1/admin/tickets/{}",
        ticket["id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(
        (&seen["status"], &seen["priority"]),
        (&json!("pending"), &json!("urgent")),
        "{seen}"
    );
    let account = get(format!("/api/v1/admin/users/{user_id}")).await;
    assert_eq!(account["status"], "blocked", "{account}");
    let ledger = get(format!("/api/v1/admin/users/{user_id}/ledger")).await;
    assert!(
        ledger.to_string().contains("goodwill credit") && ledger.to_string().contains("1250"),
        "{ledger}"
    );
    let endpoint = get(format!(
        "/api/v1/admin/webhooks/{}",
        ran["webhook_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(endpoint["url"], "http://localhost:9/crm", "{endpoint}");
    assert_eq!(
        endpoint["event_types"],
        json!(["ticket.*", "payment.completed"]),
        "{endpoint}"
    );
    let secret = get(format!(
        "/api/v1/admin/webhooks/{}/secret",
        ran["webhook_id"].as_str().unwrap()
    ))
    .await;
    assert!(
        ran["created_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "{ran}"
    );
    assert_ne!(ran["rotated_secret"], ran["created_secret"]);
    assert!(
        secret
            .to_string()
            .contains(ran["rotated_secret"].as_str().unwrap()),
        "{secret}"
    );
    assert!(
        !secret
            .to_string()
            .contains(ran["created_secret"].as_str().unwrap()),
        "a grace of 0 ends the old secret: {secret}"
    );
    assert_eq!(ran["revoke_status"], 204, "{ran}");
    let revoked = app
        .get_with("/api/v1/admin/me", ran["api_key"].as_str().unwrap())
        .await;
    assert_eq!(
        revoked.status().as_u16(),
        401,
        "a revoked key opens nothing"
    );
    let types = ran["filtered_types"].as_array().unwrap();
    assert!(
        !types.is_empty()
            && types
                .iter()
                .all(|t| t.as_str().unwrap().starts_with("ticket.")),
        "{ran}"
    );
    app.stop().await;
}
