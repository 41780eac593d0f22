//! E-mail sign-up through a real SMTP exchange on loopback: register, the
//! link in the e-mail verifies, login; forgot / reset; no enumeration.

use serde_json::{Value, json};

use crate::helpers::{
    SmtpSink, TestApp, Tokens, assert_problem, both_backends, test_config, token_from_email,
};
use crate::pages::browser;

async fn app_with_mail(db: &crate::helpers::TestDb) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let mut config = test_config(db.config.clone());
    sink.configure(&mut config);
    (TestApp::spawn_with(config).await, sink)
}

both_backends! {
    async fn the_link_in_the_verification_email_verifies_the_account_and_login_follows(db) {
        let (app, sink) = app_with_mail(&db).await;
        let registered = app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "Ann@Example.com", "password": "a long enough password", "language": "ru"})).await;
        assert_eq!(registered.status().as_u16(), 202);

        let mail = sink.wait_for("ann@example.com", "token=").await;
        // Russian was asked for; both alternatives carry the link.
        assert_eq!(mail.subject, "Подтвердите адрес электронной почты");
        assert!(mail.text.contains("/api/v1/cabinet/auth/email/verify?token="));
        assert!(mail.html.contains(&token_from_email(&mail)));

        // Before verification: refused, and says why.
        let early = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "ann@example.com", "password": "a long enough password"})).await;
        assert_problem(early, 403, "email_not_verified").await;

        let token = token_from_email(&mail);
        // Opening the link shows a page and changes nothing (a mail scanner
        // fetching it verifies nothing).
        let page = app.get(&format!("/api/v1/cabinet/auth/email/verify?token={token}")).await;
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(page.text().await.unwrap().contains(&token));
        let still = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "ann@example.com", "password": "a long enough password"})).await;
        assert_problem(still, 403, "email_not_verified").await;
        // The page's button posts the token.
        let verified = app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": token})).await;
        assert_eq!(verified.status().as_u16(), 200);
        // A link works once, and only for its purpose.
        let again = app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": token})).await;
        assert_problem(again, 400, "invalid_link").await;

        let login = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "ann@example.com", "password": "a long enough password"})).await;
        assert_eq!(login.status().as_u16(), 200);
        let tokens: Tokens = login.json().await.unwrap();
        let me: Value = app.get_with("/api/v1/cabinet/me", &tokens.access_token).await.json().await.unwrap();
        assert_eq!(me["email"], "ann@example.com");
        assert_eq!(me["email_verified"], true);

        let types: Vec<String> = crate::event_store::read_whole_log(&app.state.store, 2)
            .await
            .iter()
            .map(|e| e.event_type.as_str().to_owned())
            .collect();
        assert_eq!(types, ["user.created", "user.email_verified"]);
        app.stop().await;
    }
}

both_backends! {
    async fn registering_a_taken_address_answers_the_same_and_mails_its_owner(db) {
        let (app, sink) = app_with_mail(&db).await;
        let body = json!({"email": "bob@example.com", "password": "a long enough password"});
        let first = app.post("/api/v1/cabinet/auth/email/register", None, body.clone()).await;
        let first_body: Value = first.json().await.unwrap();
        let link = sink.wait_for("bob@example.com", "token=").await;
        app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": token_from_email(&link)})).await;
        let second = app.post("/api/v1/cabinet/auth/email/register", None, body).await;
        assert_eq!(second.status().as_u16(), 202);
        let second_body: Value = second.json().await.unwrap();
        assert_eq!(first_body, second_body);
        let notice = sink.wait_for("bob@example.com", "already have").await;
        // Its link opens the forgot-password page, which exists.
        let start = notice.text.find("http").unwrap();
        let url = notice.text[start..].split_whitespace().next().unwrap();
        let path = &url[url.find("/api/").unwrap()..];
        let page = app.get(path).await;
        assert_eq!(page.status().as_u16(), 200);
        assert!(page.text().await.unwrap().contains("id=\"forgot\""), "the form asking for a link");
        // Still one user (created, then verified).
        let log = crate::event_store::read_whole_log(&app.state.store, 2).await;
        assert_eq!(log[0].event_type.as_str(), "user.created");
        assert_eq!(log[1].event_type.as_str(), "user.email_verified");
        app.stop().await;
    }
}

both_backends! {
    async fn a_password_reset_revokes_sessions_and_sets_the_new_password(db) {
        let (app, sink) = app_with_mail(&db).await;
        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "cy@example.com", "password": "the first password"})).await;
        let verify = token_from_email(&sink.wait_for("cy@example.com", "token=").await);
        // A verification token is no reset token.
        let wrong = app.post("/api/v1/cabinet/auth/email/reset", None, json!({"token": verify, "new_password": "the wrong purpose"})).await;
        assert_problem(wrong, 400, "invalid_link").await;
        app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": verify})).await;
        let session: Tokens = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "cy@example.com", "password": "the first password"})).await.json().await.unwrap();

        // Unknown addresses get the same answer.
        let unknown = app.post("/api/v1/cabinet/auth/email/forgot", None, json!({"email": "nobody@example.com"})).await;
        let known = app.post("/api/v1/cabinet/auth/email/forgot", None, json!({"email": "cy@example.com"})).await;
        assert_eq!(unknown.status().as_u16(), 202);
        assert_eq!(known.status().as_u16(), 202);
        assert_eq!(unknown.json::<Value>().await.unwrap(), known.json::<Value>().await.unwrap());

        let reset_mail = sink.wait_for("cy@example.com", "/reset?token=").await;
        let token = token_from_email(&reset_mail);
        // The link opens a form; a reset token is no verification token.
        let form = app.get(&format!("/api/v1/cabinet/auth/email/reset?token={token}")).await;
        let form = form.text().await.unwrap();
        assert!(form.contains("id=\"reset\"") && form.contains(&format!("data-token=\"{token}\"")), "{form}");
        let wrong = app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": token})).await;
        assert_problem(wrong, 400, "invalid_link").await;
        let weak = app.post("/api/v1/cabinet/auth/email/reset", None, json!({"token": token, "new_password": "short"})).await;
        assert_problem(weak, 422, "invalid_field").await;
        let reset = app.post("/api/v1/cabinet/auth/email/reset", None, json!({"token": token, "new_password": "the second password"})).await;
        assert_eq!(reset.status().as_u16(), 200);

        assert_problem(app.get_with("/api/v1/cabinet/me", &session.access_token).await, 401, "invalid_token").await;
        assert_problem(app.post("/api/v1/cabinet/auth/refresh", None, json!({"refresh_token": session.refresh_token})).await, 401, "invalid_token").await;
        let old = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "cy@example.com", "password": "the first password"})).await;
        assert_problem(old, 401, "invalid_credentials").await;
        let new = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "cy@example.com", "password": "the second password"})).await;
        assert_eq!(new.status().as_u16(), 200);
        // The reset link was single-use.
        let reused = app.post("/api/v1/cabinet/auth/email/reset", None, json!({"token": token, "new_password": "the third password"})).await;
        assert_problem(reused, 400, "invalid_link").await;
        app.stop().await;
    }
}

both_backends! {
    async fn cabinet_refresh_rotates_and_logout_ends_the_session(db) {
        // No grace for a token presented again.
        let mut config = test_config(db.config.clone());
        config.auth.refresh_reuse_interval = std::time::Duration::ZERO;
        let app = TestApp::spawn_with(config).await;
        let init = crate::telegram_auth::fresh_init_data(4242, "dee");
        let first: Tokens = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": init})).await.json().await.unwrap();
        let second: Tokens = app.post("/api/v1/cabinet/auth/refresh", None, json!({"refresh_token": first.refresh_token})).await.json().await.unwrap();
        assert_problem(app.post("/api/v1/cabinet/auth/refresh", None, json!({"refresh_token": first.refresh_token})).await, 401, "invalid_token").await;
        assert_problem(app.get_with("/api/v1/cabinet/me", &second.access_token).await, 401, "invalid_token").await;

        let third: Tokens = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(4242, "dee")})).await.json().await.unwrap();
        assert_eq!(app.request(reqwest::Method::POST, "/api/v1/cabinet/auth/logout", Some(&third.access_token), None).await.status().as_u16(), 204);
        assert_problem(app.get_with("/api/v1/cabinet/me", &third.access_token).await, 401, "invalid_token").await;
        // An admin refresh token is no good at the cabinet and vice versa.
        let admin = app.admin_with_role("x@example.com", switchboard::auth::Role::Viewer).await;
        assert_problem(app.post("/api/v1/cabinet/auth/refresh", None, json!({"refresh_token": admin.refresh_token})).await, 401, "invalid_token").await;
        app.stop().await;
    }
}

both_backends! {
    async fn an_email_waits_in_the_outbox_while_smtp_is_down_and_is_sent_once_it_is_up(db) {
        use sea_orm::EntityTrait;
        // A port nobody listens on yet.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config = test_config(db.config.clone());
        config.mail.smtp_host = Some("127.0.0.1".to_owned());
        config.mail.smtp_port = port;
        config.mail.smtp_tls = switchboard::config::SmtpTls::None;
        config.mail.retry_base = std::time::Duration::from_millis(200);
        let app = TestApp::spawn_with(config).await;

        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "late@example.com", "password": "a long enough password"})).await;
        // The first attempt fails and is recorded.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let rows = switchboard::db::entities::mail::Entity::find().all(app.state.db.conn()).await.unwrap();
            if rows.iter().any(|r| r.attempts >= 1 && r.last_error.is_some() && r.status == "pending") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no failed attempt recorded: {rows:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let sink = SmtpSink::start_on(port).await;
        let mail = sink.wait_for("late@example.com", "token=").await;
        assert_eq!(mail.subject, "Confirm your e-mail address");
        let rows = switchboard::db::entities::mail::Entity::find().all(app.state.db.conn()).await.unwrap();
        assert_eq!(rows.len(), 1);
        crate::helpers::wait_until(|| async {
            switchboard::db::entities::mail::Entity::find().all(app.state.db.conn()).await.unwrap()[0].status == "sent"
        })
        .await;
        app.stop().await;
    }
}

both_backends! {
    async fn registering_an_unverified_address_again_sends_a_new_link_and_the_new_password_counts(db) {
        let (app, sink) = app_with_mail(&db).await;
        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "eve@example.com", "password": "a stranger's password"})).await;
        sink.wait_for("eve@example.com", "token=").await;
        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "eve@example.com", "password": "the owner's password"})).await;
        crate::helpers::wait_until(|| async { sink.count_to("eve@example.com") == 2 }).await;
        let second = sink.received().into_iter().filter(|m| m.to == "eve@example.com").nth(1).unwrap();
        assert!(second.text.contains("token="), "the second e-mail is a fresh verification link");
        app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": token_from_email(&second)})).await;
        let stranger = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "eve@example.com", "password": "a stranger's password"})).await;
        assert_problem(stranger, 401, "invalid_credentials").await;
        let owner = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "eve@example.com", "password": "the owner's password"})).await;
        assert_eq!(owner.status().as_u16(), 200);
        // Still one user.
        let users = crate::event_store::read_whole_log(&app.state.store, 2).await;
        assert_eq!(users.iter().filter(|e| e.event_type.as_str() == "user.created").count(), 1);
        app.stop().await;
    }
}

both_backends! {
    async fn whoever_proves_the_mailbox_gets_the_password_they_chose(db) {
        let (app, sink) = app_with_mail(&db).await;
        let register = |password: &str| json!({"email": "dee@example.com", "password": password});
        app.post("/api/v1/cabinet/auth/email/register", None, register("the owner's password")).await;
        let owners_link = token_from_email(&sink.wait_for("dee@example.com", "token=").await);
        // A stranger registers the same address before the owner confirms.
        app.post("/api/v1/cabinet/auth/email/register", None, register("the stranger's password")).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while sink.count_to("dee@example.com") < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second e-mail");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The owner confirms with their own link.
        let verified = app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": owners_link})).await;
        assert_eq!(verified.status().as_u16(), 200);
        let login = |password: &str| json!({"email": "dee@example.com", "password": password});
        let stranger = app.post("/api/v1/cabinet/auth/email/login", None, login("the stranger's password")).await;
        assert_problem(stranger, 401, "invalid_credentials").await;
        let owner = app.post("/api/v1/cabinet/auth/email/login", None, login("the owner's password")).await;
        assert_eq!(owner.status().as_u16(), 200);
        // The stranger's link, in the owner's mailbox, no longer works.
        let strangers_link = sink
            .received()
            .iter()
            .filter(|m| m.to == "dee@example.com")
            .map(token_from_email)
            .find(|t| *t != owners_link)
            .unwrap();
        let late = app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": strangers_link})).await;
        assert_problem(late, 400, "invalid_link").await;
        app.stop().await;
    }
}

both_backends! {
    async fn the_link_pages_opened_in_a_browser_do_what_they_say(db) {
        let (app, sink) = app_with_mail(&db).await;
        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "eve@example.com", "password": "the first password"})).await;
        let verify = token_from_email(&sink.wait_for("eve@example.com", "token=").await);
        let page = |name: &str, url: String, action: &str, value: &str| {
            json!({"name": format!("{name}-{}", db.kind_name()), "url": url, "action": action, "value": value})
        };
        let ran = browser("link_page", &app, page("verify-email", format!("{}/api/v1/cabinet/auth/email/verify?token={verify}", app.address), "confirm", "")).await;
        assert_eq!(ran["posted"], "/api/v1/cabinet/auth/email/verify", "{ran}");
        assert_eq!(ran["answer"], 200, "{ran}");
        assert!(ran["shown"].as_str().unwrap().contains("confirmed"), "{ran}");
        let login = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "eve@example.com", "password": "the first password"})).await;
        assert_eq!(login.status().as_u16(), 200);

        let ran = browser("link_page", &app, page("forgot-password", format!("{}/api/v1/cabinet/auth/email/forgot", app.address), "forgot", "eve@example.com")).await;
        assert_eq!(ran["posted"], "/api/v1/cabinet/auth/email/forgot", "{ran}");
        let reset = token_from_email(&sink.wait_for("eve@example.com", "/reset?token=").await);
        let ran = browser("link_page", &app, page("reset-password", format!("{}/api/v1/cabinet/auth/email/reset?token={reset}", app.address), "reset", "the second password")).await;
        assert_eq!(ran["posted"], "/api/v1/cabinet/auth/email/reset", "{ran}");
        assert!(ran["shown"].as_str().unwrap().contains("changed"), "{ran}");
        let login = app.post("/api/v1/cabinet/auth/email/login", None, json!({"email": "eve@example.com", "password": "the second password"})).await;
        assert_eq!(login.status().as_u16(), 200);
        // A used link says so.
        let ran = browser("link_page", &app, page("reset-password-used", format!("{}/api/v1/cabinet/auth/email/reset?token={reset}", app.address), "reset", "the third password")).await;
        assert_eq!(ran["answer"], 400, "{ran}");
        assert!(ran["shown"].as_str().unwrap().contains("invalid, used or expired"), "{ran}");
        // The new password opens the cabinet in a plain browser.
        let ran = browser("cabinet_email", &app, json!({"email": "eve@example.com", "password": "the second password", "name": format!("cabinet-email-{}", db.kind_name())})).await;
        assert_eq!(ran["back_to"], "#/account", "{ran}");
        app.stop().await;
    }
}
