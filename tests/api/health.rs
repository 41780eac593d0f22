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
