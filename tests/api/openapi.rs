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

/// What generated clients rely on: one `operationId` per operation, one name
/// per schema, every error with the problem body, and the statuses every
/// route can answer at the edge.
#[test]
fn the_document_is_exact() {
    let spec: serde_json::Value = serde_json::from_str(&switchboard::docs::openapi_json()).unwrap();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            let responses = operation["responses"].as_object().unwrap();
            for status in ["500", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} does not document {status}"
                    );
                }
            }
            if path.contains('{') {
                assert!(
                    responses.contains_key("404"),
                    "{method} {path} does not document 404"
                );
            }
            for (status, response) in responses {
                if status.as_str() >= "400" {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/ProblemBody",
                        "{method} {path} {status} has no problem body"
                    );
                }
            }
        }
    }
    // The dashboard's figures and the webhooks' are two schemas.
    let stats = &spec["paths"]["/api/v1/admin/stats"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"];
    let webhook_stats = &spec["paths"]["/api/v1/admin/webhooks/stats"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_ne!(stats, webhook_stats);
    assert_eq!(webhook_stats, "#/components/schemas/WebhookStatsOut");
    // A ticket's status and a Telegram send's are two schemas too (one name
    // for both made the ticket status body list a send's statuses).
    let schemas = &spec["components"]["schemas"];
    assert_eq!(
        schemas["StatusIn"]["properties"]["status"]["$ref"],
        "#/components/schemas/TicketStatus"
    );
    assert_eq!(
        schemas["TicketStatus"]["enum"],
        serde_json::json!(["open", "answered", "pending", "closed"])
    );
    assert_eq!(schemas["SendStatus"]["enum"][0], "queued");
}
