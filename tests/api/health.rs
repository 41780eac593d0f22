use crate::helpers::{TestApp, assert_problem, both_backends};

both_backends! {
    async fn healthz_and_readyz_answer_when_the_database_is_up(db) {
        let app = TestApp::spawn(&db).await;

        let response = app.healthz().await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(response.headers().contains_key("x-request-id"));

        let response = app.readyz().await;
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        app.stop().await;
    }
}

both_backends! {
    async fn an_unknown_route_is_a_problem_json_404(db) {
        let app = TestApp::spawn(&db).await;
        let body = assert_problem(app.get("/no/such/route").await, 404, "not_found").await;
        assert_eq!(body["type"], "urn:switchboard:problem:not_found");
        app.stop().await;
    }
}

both_backends! {
    async fn every_response_gets_its_own_request_id(db) {
        let app = TestApp::spawn(&db).await;
        let first = app.healthz().await;
        let second = app.healthz().await;
        let id = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(id(&first), id(&second));
        app.stop().await;
    }
}

#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_when_the_database_goes_away() {
    use crate::helpers::{Kind, TestDb};
    let db = TestDb::new(Kind::Postgres).await;
    let app = TestApp::spawn(&db).await;
    assert_eq!(app.readyz().await.status().as_u16(), 200);

    // Drop the database under the running app (FORCE ends its connections).
    drop(db);

    let response = app.readyz().await;
    assert_problem(response, 503, "unavailable").await;
    // Liveness is about the process, not the database.
    assert_eq!(app.healthz().await.status().as_u16(), 200);
}

both_backends! {
    async fn responses_carry_the_security_headers_and_tokens_are_never_cached(db) {
        let app = TestApp::spawn(&db).await;
        // Every answer: no content sniffing.
        for path in ["/healthz", "/no/such/route", "/openapi.json", "/docs/"] {
            let response = app.get(path).await;
            assert_eq!(response.headers()["x-content-type-options"], "nosniff", "{path}");
        }
        let docs = app.get("/docs/").await;
        let csp = docs.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        // The e-mail link pages: their own script only.
        let page = app.get("/api/v1/cabinet/auth/email/verify?token=abc").await;
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        let html = page.text().await.unwrap();
        assert!(html.contains("<script src=\"/assets/email-pages.js?v="), "{html}");
        assert!(!html.contains("<script>") && !html.contains("<style"), "nothing inline: {html}");
        assert!(csp.starts_with("default-src 'none'") && csp.contains("script-src 'self';"), "{csp}");
        // Tokens and secrets: never stored.
        let admin = app.admin_with_role("o@example.com", switchboard::auth::Role::Owner).await;
        let login = app.post("/api/v1/auth/login", None, serde_json::json!({"email": "o@example.com", "password": "correct horse battery staple"})).await;
        assert_eq!(login.headers()["cache-control"], "no-store");
        let key = app.post("/api/v1/admin/api-keys", Some(&admin.access_token), serde_json::json!({"name": "k", "scopes": ["events:read"]})).await;
        assert_eq!(key.status().as_u16(), 201);
        assert_eq!(key.headers()["cache-control"], "no-store");
        let refreshed = app.post("/api/v1/auth/refresh", None, serde_json::json!({"refresh_token": admin.refresh_token})).await;
        assert_eq!(refreshed.headers()["cache-control"], "no-store");
        app.stop().await;
    }
}

both_backends! {
    async fn cross_origin_calls_are_allowed_from_the_configured_origins_only(db) {
        let preflight = |app: &TestApp, origin: &'static str| {
            let request = app
                .client
                .request(reqwest::Method::OPTIONS, format!("{}/api/v1/admin/me", app.address))
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization");
            async move { request.send().await.unwrap() }
        };
        // Off by default: no CORS headers for anyone.
        let closed = TestApp::spawn(&db).await;
        let answer = preflight(&closed, "https://cabinet.example.com").await;
        assert!(answer.headers().get("access-control-allow-origin").is_none());
        closed.stop().await;

        let mut config = crate::helpers::test_config(db.config.clone());
        config.cors_origins = vec!["https://cabinet.example.com".to_owned()];
        let app = TestApp::spawn_with(config).await;
        let allowed = preflight(&app, "https://cabinet.example.com").await;
        assert!(allowed.status().is_success(), "{}", allowed.status());
        assert_eq!(allowed.headers()["access-control-allow-origin"], "https://cabinet.example.com");
        let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
        assert!(methods.contains("GET") && methods.contains("PATCH"), "{methods}");
        assert!(allowed.headers().get("access-control-allow-credentials").is_none());
        let other = preflight(&app, "https://evil.example.com").await;
        assert!(other.headers().get("access-control-allow-origin").is_none());
        // A same-origin page's POST (it sends `Origin` too) still works.
        let same = app
            .client
            .post(format!("{}/api/v1/cabinet/auth/email/verify", app.address))
            .header("origin", app.address.clone())
            .json(&serde_json::json!({"token": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(same.status().as_u16(), 400);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_containers_health_check_passes_on_a_ready_service_only() {
    let db = crate::helpers::TestDb::new(crate::helpers::Kind::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let address = app.address.clone();
    let check = |url: String| tokio::task::spawn_blocking(move || switchboard::cli::ready(&url));
    check(format!("{address}/readyz")).await.unwrap().unwrap();
    let not_found = check(format!("{address}/nothing"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(not_found.to_string().contains("404"), "{not_found}");
    assert!(
        check("https://localhost/readyz".into())
            .await
            .unwrap()
            .is_err(),
        "http only"
    );
    app.stop().await;
    // Nobody listening any more.
    assert!(check(format!("{address}/readyz")).await.unwrap().is_err());
}
