//! The OpenAPI document: committed, current, served, with the reference UI.

use crate::helpers::{TestApp, both_backends};

#[test]
fn the_committed_openapi_document_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .expect("openapi/openapi.json is missing");
    let current = switchboard::docs::openapi_json();
    assert!(
        committed.trim_end() == current.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

both_backends! {
    async fn the_document_and_the_reference_are_served(db) {
        let app = TestApp::spawn(&db).await;
        let spec: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
        for path in ["/api/v1/auth/login", "/api/v1/admin/me", "/api/v1/cabinet/me", "/api/v1/cabinet/auth/telegram/mini-app", "/api/v1/cabinet/auth/email/register"] {
            assert!(spec["paths"].get(path).is_some(), "{path} is not in the document");
        }
        let docs = app.get("/docs/").await;
        assert_eq!(docs.status().as_u16(), 200);
        let html = docs.text().await.unwrap();
        assert!(html.contains("swagger-ui"));
        // Every asset the page loads comes from this server.
        assert!(!html.contains("cdn."), "the reference page loads assets from a CDN");
        app.stop().await;
    }
}
