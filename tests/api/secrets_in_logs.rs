//! Passwords, tokens, API keys and the bot token never reach the logs.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::helpers::{
    BOT_TOKEN, JWT_SECRET, SmtpSink, TestApp, Tokens, both_backends, captured_logs, test_config,
    token_from_email,
};

both_backends! {
    async fn no_secret_appears_in_the_logs(db) {
        let sink = SmtpSink::start().await;
        let mut config = test_config(db.config.clone());
        sink.configure(&mut config);
        config.mail.smtp_password = Some(secrecy::SecretString::from("smtp-password-123"));
        config.mail.smtp_username = Some("mailer".to_owned());
        config.telegram.webhook_secret = Some(secrecy::SecretString::from("telegram-webhook-secret-4a3b"));
        config.webhooks.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        let app = TestApp::spawn_with(config).await;

        let password = "admin-password-9f8e7d";
        switchboard::admin::accounts::create(&app.state.db, "logs@example.com", password, Role::Owner).await.unwrap();
        let tokens = app.admin_login("logs@example.com", password).await;
        // A failed login with a different password, too.
        app.post("/api/v1/auth/login", None, json!({"email": "logs@example.com", "password": "wrong-password-3c2b1a"})).await;
        let refreshed: Tokens = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": tokens.refresh_token})).await.json().await.unwrap();
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&refreshed.access_token), json!({"name": "k", "scopes": ["events:read"]})).await.json().await.unwrap();
        let key_secret = key["secret"].as_str().unwrap().to_owned();
        app.get_with("/api/v1/admin/me", &key_secret).await;
        app.post("/api/v1/cabinet/auth/email/register", None, json!({"email": "logs-user@example.com", "password": "user-password-5e4d3c"})).await;
        let mail = sink.wait_for("logs-user@example.com", "token=").await;
        let link_token = token_from_email(&mail);
        app.get(&format!("/api/v1/cabinet/auth/email/verify?token={link_token}")).await;
        app.post("/api/v1/cabinet/auth/email/verify", None, json!({"token": link_token})).await;
        // Failing requests too: a reused refresh token, a bad body with a
        // password where a number might go, a key in a bare query string.
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": tokens.refresh_token})).await;
        app.post("/api/v1/auth/login", None, json!({"email": ["x"], "password": "bad-body-password-77"})).await;
        app.get(&format!("/api/v1/admin/me?{key_secret}")).await;
        // The Telegram webhook's secret, right and wrong; a key as
        // `?api_key=` on the feed; a webhook secret of the receiver's choosing.
        for secret in ["telegram-webhook-secret-4a3b", "wrong-telegram-secret-9z8y"] {
            app.client
                .post(format!("{}/telegram/webhook", app.address))
                .header("X-Telegram-Bot-Api-Secret-Token", secret)
                .header("content-type", "application/json")
                .body(r#"{"update_id": 1}"#)
                .send()
                .await
                .unwrap();
        }
        let _ = app.ws(&format!("/ws?api_key={key_secret}"), None).await;
        app.post("/api/v1/admin/webhooks", Some(&refreshed.access_token), json!({"name": "old", "url": "http://127.0.0.1:9/hook", "secret": "receiver-chosen-secret-6f5e"})).await;
        let init_data = crate::telegram_auth::fresh_init_data(31337, "leet");
        app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": init_data})).await;
        app.stop().await;

        let logs = captured_logs();
        // The capture works: the flows above were logged.
        assert!(logs.contains("admin logged in"));
        assert!(logs.contains("API key created"));
        assert!(logs.contains("e-mail sent"));
        for (what, secret) in [
            ("admin password", password),
            ("wrong password", "wrong-password-3c2b1a"),
            ("user password", "user-password-5e4d3c"),
            ("access token", tokens.access_token.as_str()),
            ("refresh token", tokens.refresh_token.as_str()),
            ("rotated refresh token", refreshed.refresh_token.as_str()),
            ("API key", key_secret.as_str()),
            ("e-mail link token", link_token.as_str()),
            ("bot token", BOT_TOKEN),
            ("JWT secret", JWT_SECRET),
            ("SMTP password", "smtp-password-123"),
            ("password in a bad body", "bad-body-password-77"),
            ("Telegram webhook secret", "telegram-webhook-secret-4a3b"),
            ("wrong Telegram webhook secret", "wrong-telegram-secret-9z8y"),
            ("receiver-chosen webhook secret", "receiver-chosen-secret-6f5e"),
        ] {
            assert!(!logs.contains(secret), "the {what} appears in the logs");
        }
        // The initData hash (a bearer credential while valid) is not logged either.
        let hash = init_data.rsplit("hash=").next().unwrap();
        assert!(!logs.contains(hash), "the initData hash appears in the logs");
    }
}
