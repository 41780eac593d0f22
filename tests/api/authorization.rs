//! The role matrix: every authenticated route, tried with no token, an
//! expired token, a cabinet token on admin routes (and an admin token on
//! cabinet routes), a token signed with another key, an `alg: none` token,
//! each admin role and an API key. Only the intended callers get through.

use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::helpers::{JWT_SECRET, TestApp, both_backends};

pub(crate) fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// Bad credentials forged from a real token's claims.
pub(crate) fn forged(real: &str) -> Vec<(&'static str, String)> {
    let mut claims = claims_of(real);
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let expired = jsonwebtoken::encode(
        &Header::default(),
        &expired,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let other_key = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
    )
    .unwrap();
    claims["exp"] = json!(now + 3600);
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        engine.encode(r#"{"alg":"none","typ":"JWT"}"#),
        engine.encode(claims.to_string())
    );
    vec![
        ("expired", expired),
        ("signed with another key", other_key),
        ("alg none", alg_none),
        ("garbage", "not.a.token".to_owned()),
    ]
}

/// (method, path, body, who gets through, the status they get)
type Route<'a> = (Method, String, Option<Value>, &'a [Caller], u16);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Caller {
    Role(Role),
    ApiKey,
}

both_backends! {
    async fn only_the_intended_callers_reach_each_admin_route(db) {
        let app = TestApp::spawn(&db).await;
        let mut callers = Vec::new();
        for role in Role::ALL {
            let tokens = app.admin_with_role(&format!("{}@example.com", role.as_str()), role).await;
            callers.push((Caller::Role(role), tokens.access_token));
        }
        let owner = callers[0].1.clone();
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&owner), json!({"name": "k", "scopes": ["events:read", "users:read"]})).await.json().await.unwrap();
        callers.push((Caller::ApiKey, key["secret"].as_str().unwrap().to_owned()));
        let cabinet: crate::helpers::Tokens = app
            .post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(99, "u")}))
            .await
            .json()
            .await
            .unwrap();

        let missing = uuid::Uuid::now_v7();
        // (method, path, body, who gets through, status when through)
        let owner_admin: &[Caller] = &[Caller::Role(Role::Owner), Caller::Role(Role::Admin)];
        let everyone: &[Caller] = &[Caller::Role(Role::Owner), Caller::Role(Role::Admin), Caller::Role(Role::Operator), Caller::Role(Role::Viewer), Caller::ApiKey];
        let admins_only: &[Caller] = &[Caller::Role(Role::Owner), Caller::Role(Role::Admin), Caller::Role(Role::Operator), Caller::Role(Role::Viewer)];
        let routes: Vec<Route> = vec![
            (Method::GET, "/api/v1/admin/me".into(), None, everyone, 200),
            (Method::GET, "/api/v1/admin/api-keys".into(), None, owner_admin, 200),
            (Method::POST, "/api/v1/admin/api-keys".into(), Some(json!({"name": "n", "scopes": ["events:read"]})), owner_admin, 201),
            (Method::DELETE, format!("/api/v1/admin/api-keys/{missing}"), None, owner_admin, 404),
            (Method::GET, "/api/v1/admin/admins".into(), None, &[Caller::Role(Role::Owner)], 200),
            (Method::POST, "/api/v1/admin/admins".into(), Some(json!({"email": "new@example.com", "password": "x", "role": "viewer"})), &[Caller::Role(Role::Owner)], 422),
            // Authenticated callers get as far as validating the new password.
            (Method::POST, "/api/v1/auth/password".into(), Some(json!({"current_password": "x", "new_password": "short"})), admins_only, 422),
            (Method::GET, "/api/v1/admin/broadcasts".into(), None, owner_admin, 200),
            (Method::POST, "/api/v1/admin/broadcasts?dry_run=true".into(), Some(json!({"text": "x", "audience": {"all": true}})), owner_admin, 200),
            (Method::POST, "/api/v1/admin/broadcasts".into(), Some(json!({"audience": {"all": true}})), owner_admin, 422),
            (Method::GET, format!("/api/v1/admin/broadcasts/{missing}"), None, owner_admin, 404),
            (Method::GET, format!("/api/v1/admin/broadcasts/{missing}/recipients"), None, owner_admin, 404),
            (Method::POST, format!("/api/v1/admin/broadcasts/{missing}/cancel"), None, owner_admin, 404),
            (Method::GET, "/api/v1/admin/settings/helpdesk".into(), None, owner_admin, 200),
            (Method::PUT, "/api/v1/admin/settings/helpdesk".into(), Some(json!({"kind": "generic", "enabled": false, "base_url": "https://helpdesk.example.com"})), owner_admin, 200),
            (Method::GET, "/api/v1/admin/settings/log_id".into(), None, owner_admin, 404),
            // Through, the bridge is off.
            (Method::POST, "/api/v1/integrations/helpdesk/messages".into(), Some(json!({"visitor_id": "v", "text": "x"})), owner_admin, 404),
            (Method::POST, "/send-message".into(), Some(json!({"message": "x", "user_ids": [1]})), owner_admin, 202),
        ];

        for (method, path, body, allowed, through) in &routes {
            let label = format!("{method} {path}");
            let status = app.request(method.clone(), path, None, body.clone()).await.status().as_u16();
            assert_eq!(status, 401, "{label} without a token");
            let status = app.request(method.clone(), path, Some(&cabinet.access_token), body.clone()).await.status().as_u16();
            assert_eq!(status, 401, "{label} with a cabinet token");
            for (what, token) in forged(&owner) {
                let status = app.request(method.clone(), path, Some(&token), body.clone()).await.status().as_u16();
                assert_eq!(status, 401, "{label} with a token {what}");
            }
            for (caller, token) in &callers {
                let status = app.request(method.clone(), path, Some(token), body.clone()).await.status().as_u16();
                let expected = if allowed.contains(caller) { *through } else { 403 };
                assert_eq!(status, expected, "{label} as {caller:?}");
            }
        }

        // Logout: any bad credential is 401; the API key has no session.
        for (what, token) in forged(&owner) {
            let status = app.request(Method::POST, "/api/v1/auth/logout", Some(&token), None).await.status().as_u16();
            assert_eq!(status, 401, "logout with a token {what}");
        }
        let key_logout = app.request(Method::POST, "/api/v1/auth/logout", Some(&callers[4].1), None).await;
        assert_eq!(key_logout.status().as_u16(), 403);
        app.stop().await;
    }
}

both_backends! {
    async fn cabinet_routes_take_only_cabinet_tokens(db) {
        let app = TestApp::spawn(&db).await;
        let user: crate::helpers::Tokens = app
            .post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(7, "seven")}))
            .await
            .json()
            .await
            .unwrap();
        let admin = app.admin_with_role("o@example.com", Role::Owner).await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&admin.access_token), json!({"name": "k", "scopes": ["users:read"]})).await.json().await.unwrap();
        for (method, path) in [(Method::GET, "/api/v1/cabinet/me"), (Method::POST, "/api/v1/cabinet/auth/logout")] {
            assert_eq!(app.request(method.clone(), path, None, None).await.status().as_u16(), 401, "{path} without a token");
            assert_eq!(app.request(method.clone(), path, Some(&admin.access_token), None).await.status().as_u16(), 401, "{path} with an admin token");
            assert_eq!(app.request(method.clone(), path, Some(key["secret"].as_str().unwrap()), None).await.status().as_u16(), 401, "{path} with an API key");
            for (what, token) in forged(&user.access_token) {
                assert_eq!(app.request(method.clone(), path, Some(&token), None).await.status().as_u16(), 401, "{path} with a token {what}");
            }
        }
        let me: Value = app.get_with("/api/v1/cabinet/me", &user.access_token).await.json().await.unwrap();
        assert_eq!(me["telegram_id"], 7);
        app.stop().await;
    }
}

both_backends! {
    async fn concurrent_cabinet_requests_each_get_their_own_sessions_answer(db) {
        // Session checks that arrive together are answered by one query;
        // each request still gets the verdict on its own session.
        let app = TestApp::spawn(&db).await;
        let live = crate::tickets::cabinet_user(&app, 801).await;
        let logged_out = crate::tickets::cabinet_user(&app, 802).await;
        let blocked = crate::tickets::cabinet_user(&app, 803).await;
        assert_eq!(app.request(Method::POST, "/api/v1/cabinet/auth/logout", Some(&logged_out.access_token), None).await.status().as_u16(), 204);
        // Blocking revokes the sessions too; here only the status says so.
        use sea_orm::ConnectionTrait;
        app.state.db.conn().execute_unprepared("UPDATE users SET status = 'blocked' WHERE telegram_id = 803").await.unwrap();
        // A live session presented with another user's id, signed with the
        // real key: the session is not that user's.
        let mut claims = claims_of(&live.access_token);
        claims["sub"] = json!(claims_of(&logged_out.access_token)["sub"]);
        let borrowed = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
        let live_id = claims_of(&live.access_token)["sub"].clone();

        let callers = [(&live.access_token, 200), (&logged_out.access_token, 401), (&blocked.access_token, 403), (&borrowed, 401)];
        let requests = (0..40).map(|n| {
            let (token, expected) = callers[n % callers.len()];
            let app = &app;
            async move {
                let response = app.get_with("/api/v1/cabinet/me", token).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (n, expected, status, body)
            }
        });
        for (n, expected, status, body) in futures::future::join_all(requests).await {
            assert_eq!(status, expected, "request {n}: {body}");
            if expected == 200 {
                assert_eq!(body["id"], live_id, "{body}");
            }
        }
        app.stop().await;
    }
}
