//! Admin sessions: login, refresh rotation and reuse detection, logout,
//! password change, API keys, rate limits, bad input.

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::helpers::{TestApp, Tokens, assert_problem, both_backends, test_config};

both_backends! {
    async fn a_refresh_token_rotates_and_its_reuse_revokes_the_whole_session(db) {
        // No grace for a token presented again (see the next test).
        let mut config = test_config(db.config.clone());
        config.auth.refresh_reuse_interval = std::time::Duration::ZERO;
        let app = TestApp::spawn_with(config).await;
        let first = app.admin_with_role("owner@example.com", Role::Owner).await;
        assert_eq!(first.expires_in, 900);

        let refreshed = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": first.refresh_token})).await;
        assert_eq!(refreshed.status().as_u16(), 200);
        let second: Tokens = refreshed.json().await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(app.get_with("/api/v1/admin/me", &second.access_token).await.status().as_u16(), 200);

        // Someone replays the first (already rotated) token: refused, and the
        // session it belongs to ends — the legitimate holder's tokens too.
        let replay = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": first.refresh_token})).await;
        assert_problem(replay, 401, "invalid_token").await;
        let after = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": second.refresh_token})).await;
        assert_problem(after, 401, "invalid_token").await;
        assert_problem(app.get_with("/api/v1/admin/me", &second.access_token).await, 401, "invalid_token").await;

        // Another login is a new session and works.
        let fresh = app.admin_login("owner@example.com", "correct horse battery staple").await;
        assert_eq!(app.get_with("/api/v1/admin/me", &fresh.access_token).await.status().as_u16(), 200);
        app.stop().await;
    }
}

both_backends! {
    async fn logout_ends_the_session_at_once(db) {
        let app = TestApp::spawn(&db).await;
        let tokens = app.admin_with_role("a@example.com", Role::Admin).await;
        let other = app.admin_login("a@example.com", "correct horse battery staple").await;
        let response = app.request(Method::POST, "/api/v1/auth/logout", Some(&tokens.access_token), None).await;
        assert_eq!(response.status().as_u16(), 204);
        assert_problem(app.get_with("/api/v1/admin/me", &tokens.access_token).await, 401, "invalid_token").await;
        assert_problem(app.post("/api/v1/auth/refresh", None, json!({"refresh_token": tokens.refresh_token})).await, 401, "invalid_token").await;
        // Only that session: the other login still works.
        assert_eq!(app.get_with("/api/v1/admin/me", &other.access_token).await.status().as_u16(), 200);
        app.stop().await;
    }
}

both_backends! {
    async fn a_password_change_revokes_every_session_and_the_new_password_works(db) {
        let app = TestApp::spawn(&db).await;
        let one = app.admin_with_role("p@example.com", Role::Operator).await;
        let two = app.admin_login("p@example.com", "correct horse battery staple").await;
        let wrong = app.post("/api/v1/auth/password", Some(&one.access_token), json!({"current_password": "not it at all", "new_password": "a brand new password"})).await;
        assert_problem(wrong, 401, "invalid_credentials").await;
        let weak = app.post("/api/v1/auth/password", Some(&one.access_token), json!({"current_password": "correct horse battery staple", "new_password": "short"})).await;
        let body = assert_problem(weak, 422, "invalid_field").await;
        assert_eq!(body["field"], "new_password");
        let changed = app.post("/api/v1/auth/password", Some(&one.access_token), json!({"current_password": "correct horse battery staple", "new_password": "a brand new password"})).await;
        assert_eq!(changed.status().as_u16(), 204);
        for tokens in [&one, &two] {
            assert_problem(app.get_with("/api/v1/admin/me", &tokens.access_token).await, 401, "invalid_token").await;
        }
        let old = app.post("/api/v1/auth/login", None, json!({"email": "p@example.com", "password": "correct horse battery staple"})).await;
        assert_problem(old, 401, "invalid_credentials").await;
        app.admin_login("p@example.com", "a brand new password").await;
        app.stop().await;
    }
}

both_backends! {
    async fn an_api_key_is_shown_once_works_in_either_header_and_stops_when_revoked(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let created = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "bot backend", "scopes": ["events:read", "telegram:send"]})).await;
        assert_eq!(created.status().as_u16(), 201);
        let created: Value = created.json().await.unwrap();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("sbk_"));

        let me: Value = app.get_with("/api/v1/admin/me", &secret).await.json().await.unwrap();
        assert_eq!(me["kind"], "api_key");
        assert_eq!(me["permissions"], json!(["events:read", "telegram:send"]));
        let by_header = app.client.get(format!("{}/api/v1/admin/me", app.address)).header("X-API-Key", &secret).send().await.unwrap();
        assert_eq!(by_header.status().as_u16(), 200);

        // Listed without the secret, with when it was last used.
        let list: Value = app.get_with("/api/v1/admin/api-keys", &owner.access_token).await.json().await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert!(list[0].get("secret").is_none());
        assert!(!list.to_string().contains(&secret));
        assert!(list[0]["last_used_at"].is_string());

        // An API key cannot manage keys, even with a token of its own.
        let by_key = app.post("/api/v1/admin/api-keys", Some(&secret), json!({"name": "x", "scopes": ["events:read"]})).await;
        assert_problem(by_key, 403, "forbidden").await;
        let too_much = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "x", "scopes": ["api_keys:manage"]})).await;
        assert_problem(too_much, 422, "invalid_field").await;
        let unknown = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "x", "scopes": ["events:write"]})).await;
        assert_problem(unknown, 422, "invalid_field").await;

        let id = created["id"].as_str().unwrap();
        let revoked = app.request(Method::DELETE, &format!("/api/v1/admin/api-keys/{id}"), Some(&owner.access_token), None).await;
        assert_eq!(revoked.status().as_u16(), 204);
        assert_problem(app.get_with("/api/v1/admin/me", &secret).await, 401, "invalid_token").await;
        let again = app.request(Method::DELETE, &format!("/api/v1/admin/api-keys/{id}"), Some(&owner.access_token), None).await;
        assert_problem(again, 404, "not_found").await;
        app.stop().await;
    }
}

both_backends! {
    async fn repeated_failed_logins_are_rate_limited_with_retry_after(db) {
        let mut config = test_config(db.config.clone());
        config.auth.rate_per_account = 3;
        let app = TestApp::spawn_with(config).await;
        for _ in 0..3 {
            let response = app.post("/api/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "guess guess guess"})).await;
            assert_problem(response, 401, "invalid_credentials").await;
        }
        let limited = app.post("/api/v1/auth/login", None, json!({"email": "nobody@example.com", "password": "guess guess guess"})).await;
        let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry_after >= 1);
        assert_problem(limited, 429, "rate_limited").await;
        // Another account from the same address is not blocked by this one.
        let other = app.post("/api/v1/auth/login", None, json!({"email": "other@example.com", "password": "guess guess guess"})).await;
        assert_problem(other, 401, "invalid_credentials").await;
        app.stop().await;
    }
}

both_backends! {
    async fn bad_login_bodies_are_problems_naming_the_field(db) {
        let app = TestApp::spawn(&db).await;
        let raw = app.client.post(format!("{}/api/v1/auth/login", app.address)).header("content-type", "application/json").body("{not json").send().await.unwrap();
        assert_problem(raw, 400, "malformed_json").await;
        let missing = app.post("/api/v1/auth/login", None, json!({"email": "a@example.com"})).await;
        let body = assert_problem(missing, 422, "invalid_body").await;
        assert!(body["detail"].as_str().unwrap().contains("password"));
        let bad_email = app.post("/api/v1/auth/login", None, json!({"email": "not-an-email", "password": "x"})).await;
        let body = assert_problem(bad_email, 422, "invalid_field").await;
        assert_eq!(body["field"], "email");
        let long = app.post("/api/v1/auth/login", None, json!({"email": "a@example.com", "password": "x".repeat(300)})).await;
        let body = assert_problem(long, 422, "invalid_field").await;
        assert_eq!(body["field"], "password");
        let wrong_type = app.post("/api/v1/auth/login", None, json!({"email": 5, "password": "x"})).await;
        assert_problem(wrong_type, 422, "invalid_body").await;
        let form = app.client.post(format!("{}/api/v1/auth/login", app.address)).header("content-type", "text/plain").body("x").send().await.unwrap();
        assert_problem(form, 415, "unsupported_media_type").await;
        app.stop().await;
    }
}

both_backends! {
    async fn a_disabled_admin_and_the_keys_it_created_stop_working(db) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("d@example.com", Role::Admin).await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&admin.access_token), json!({"name": "k", "scopes": ["events:read", "ledger:manage"]})).await.json().await.unwrap();
        let secret = key["secret"].as_str().unwrap().to_owned();
        assert_eq!(app.get_with("/api/v1/admin/me", &secret).await.status().as_u16(), 200);

        switchboard::db::entities::admin::Entity::update_many()
            .col_expr(switchboard::db::entities::admin::Column::Disabled, Expr::value(true))
            .filter(switchboard::db::entities::admin::Column::Email.eq("d@example.com"))
            .exec(app.state.db.conn())
            .await
            .unwrap();
        assert_problem(app.get_with("/api/v1/admin/me", &admin.access_token).await, 403, "forbidden").await;
        assert_problem(app.post("/api/v1/auth/refresh", None, json!({"refresh_token": admin.refresh_token})).await, 401, "invalid_token").await;
        assert_problem(app.get_with("/api/v1/admin/me", &secret).await, 401, "invalid_token").await;
        let login = app.post("/api/v1/auth/login", None, json!({"email": "d@example.com", "password": "correct horse battery staple"})).await;
        assert_problem(login, 403, "forbidden").await;
        app.stop().await;
    }
}

both_backends! {
    async fn a_key_narrows_when_its_creator_is_downgraded(db) {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("n@example.com", Role::Admin).await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&admin.access_token), json!({"name": "k", "scopes": ["events:read", "ledger:manage"]})).await.json().await.unwrap();
        let secret = key["secret"].as_str().unwrap().to_owned();
        switchboard::db::entities::admin::Entity::update_many()
            .col_expr(switchboard::db::entities::admin::Column::Role, Expr::value("viewer"))
            .filter(switchboard::db::entities::admin::Column::Email.eq("n@example.com"))
            .exec(app.state.db.conn())
            .await
            .unwrap();
        let me: Value = app.get_with("/api/v1/admin/me", &secret).await.json().await.unwrap();
        assert_eq!(me["permissions"], json!(["events:read"]));
        app.stop().await;
    }
}

both_backends! {
    async fn owners_change_roles_and_disable_admins_but_never_the_last_owner(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let admins: Value = app.get_with("/api/v1/admin/admins", &owner.access_token).await.json().await.unwrap();
        let id_of = |email: &str| admins.as_array().unwrap().iter().find(|a| a["email"] == email).unwrap()["id"].as_str().unwrap().to_owned();
        let (owner_id, operator_id) = (id_of("owner@example.com"), id_of("op@example.com"));
        let patch = |token: &str, id: &str, body: Value| {
            let (app, token, path) = (&app, token.to_owned(), format!("/api/v1/admin/admins/{id}"));
            async move { app.request(Method::PATCH, &path, Some(&token), Some(body)).await }
        };
        // Only owners, and no one by API key.
        assert_problem(patch(&operator.access_token, &operator_id, json!({"role": "owner"})).await, 403, "forbidden").await;
        // Bad input.
        assert_problem(patch(&owner.access_token, &operator_id, json!({"role": "king"})).await, 422, "invalid_field").await;
        assert_problem(patch(&owner.access_token, &operator_id, json!({"rank": "owner"})).await, 422, "invalid_body").await;
        assert_problem(patch(&owner.access_token, &uuid::Uuid::now_v7().to_string(), json!({"disabled": true})).await, 404, "not_found").await;
        // The only owner can be neither demoted nor disabled.
        assert_problem(patch(&owner.access_token, &owner_id, json!({"role": "admin"})).await, 409, "last_owner").await;
        assert_problem(patch(&owner.access_token, &owner_id, json!({"disabled": true})).await, 409, "last_owner").await;
        // A promoted operator is a second owner; then the first may step down.
        let promoted: Value = patch(&owner.access_token, &operator_id, json!({"role": "owner"})).await.json().await.unwrap();
        assert_eq!(promoted["role"], "owner");
        let stepped: Value = patch(&owner.access_token, &owner_id, json!({"role": "viewer"})).await.json().await.unwrap();
        assert_eq!(stepped["role"], "viewer");
        // Disabling ends the admin's sessions at once.
        let disabled = patch(&operator.access_token, &owner_id, json!({"disabled": true})).await;
        assert_eq!(disabled.status().as_u16(), 200);
        assert_problem(app.get_with("/api/v1/admin/me", &owner.access_token).await, 401, "invalid_token").await;
        let relogin = app.post("/api/v1/auth/login", None, json!({"email": "owner@example.com", "password": "correct horse battery staple"})).await;
        assert_problem(relogin, 403, "forbidden").await;
        app.stop().await;
    }
}

both_backends! {
    async fn two_tabs_refreshing_at_once_both_get_the_same_new_pair(db) {
        let app = TestApp::spawn(&db).await;
        let first = app.admin_with_role("owner@example.com", Role::Owner).await;
        let body = json!({"refresh_token": first.refresh_token});
        let (a, b) = tokio::join!(
            app.post("/api/v1/auth/refresh", None, body.clone()),
            app.post("/api/v1/auth/refresh", None, body.clone()),
        );
        assert_eq!(a.status().as_u16(), 200);
        assert_eq!(b.status().as_u16(), 200);
        let (a, b): (Tokens, Tokens) = (a.json().await.unwrap(), b.json().await.unwrap());
        assert_eq!(a.refresh_token, b.refresh_token);
        assert_ne!(a.refresh_token, first.refresh_token);
        // A third tab, still within the interval, too; the session lives on.
        let c: Tokens = app.post("/api/v1/auth/refresh", None, body).await.json().await.unwrap();
        assert_eq!(c.refresh_token, a.refresh_token);
        for tokens in [&a, &b, &c] {
            assert_eq!(app.get_with("/api/v1/admin/me", &tokens.access_token).await.status().as_u16(), 200);
        }
        let next = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": a.refresh_token})).await;
        assert_eq!(next.status().as_u16(), 200);
        app.stop().await;
    }
}
