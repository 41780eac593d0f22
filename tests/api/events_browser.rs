//! The admin event-log browser and the projections rebuild.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    helpers::{TestApp, assert_problem, both_backends},
    tickets::{cabinet_user, open_ticket},
};

both_backends! {
    async fn the_event_browser_pages_through_the_log_with_filters(db) {
        let app = TestApp::spawn(&db).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let user = cabinet_user(&app, 1).await;
        let ticket = open_ticket(&app, &user, "Browse").await;
        let id = ticket["id"].as_str().unwrap();
        crate::event_store::read_whole_log(&app.state.store, 3).await;

        let all: Value = app.get_with("/api/v1/admin/events?limit=2", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(all["events"].as_array().unwrap().len(), 2);
        assert_eq!(all["events"][0]["type"], "user.created");
        let next = all["next_cursor"].as_str().unwrap();
        let rest: Value = app.get_with(&format!("/api/v1/admin/events?cursor={next}"), &viewer.access_token).await.json().await.unwrap();
        assert_eq!(rest["events"].as_array().unwrap().len(), 1);
        assert_eq!(rest["events"][0]["type"], "ticket.message_added");

        let tickets: Value = app.get_with("/api/v1/admin/events?type=ticket.*", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(tickets["events"].as_array().unwrap().len(), 2);
        let exact: Value = app.get_with("/api/v1/admin/events?type=ticket.created", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(exact["events"].as_array().unwrap().len(), 1);
        assert_eq!(exact["events"][0]["payload"]["subject"], "Browse");
        let stream: Value = app.get_with(&format!("/api/v1/admin/events?stream=ticket:{id}"), &viewer.access_token).await.json().await.unwrap();
        assert_eq!(stream["events"].as_array().unwrap().len(), 2);
        // `_` in a type prefix is a literal character, not a LIKE wildcard.
        let none: Value = app.get_with("/api/v1/admin/events?type=ticket_*", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(none["events"].as_array().unwrap().len(), 0);

        assert_problem(app.get_with("/api/v1/admin/events?cursor=bogus", &viewer.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get_with("/api/v1/admin/events?limit=100000", &viewer.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get_with("/api/v1/admin/events?type=DROP%20TABLE", &viewer.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get("/api/v1/admin/events").await, 401, "unauthorized").await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "k", "scopes": ["tickets:read"]})).await.json().await.unwrap();
        assert_problem(app.get_with("/api/v1/admin/events", key["secret"].as_str().unwrap()).await, 403, "forbidden").await;
        app.stop().await;
    }
}

both_backends! {
    async fn the_newest_events_come_first_with_the_head_a_feed_resumes_from(db) {
        let app = TestApp::spawn(&db).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let user = cabinet_user(&app, 1).await;
        open_ticket(&app, &user, "One").await;
        crate::event_store::read_whole_log(&app.state.store, 3).await;
        let log: Vec<String> = crate::helpers::whole_log(&app.state.store).await.iter().map(|e| e.id.to_string()).collect();
        let ids = |page: &Value| page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();

        let newest: Value = app.get_with("/api/v1/admin/events?order=desc&limit=2", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(ids(&newest), vec![log[2].clone(), log[1].clone()], "{newest}");
        let head = newest["head"].as_str().unwrap();
        assert_eq!(head, newest["events"][0]["cursor"], "the head is the newest event");
        let older: Value = app.get_with(&format!("/api/v1/admin/events?order=desc&cursor={}", newest["next_cursor"].as_str().unwrap()), &viewer.access_token).await.json().await.unwrap();
        assert_eq!(ids(&older), vec![log[0].clone()]);
        assert!(older.get("head").is_none());
        let done: Value = app.get_with(&format!("/api/v1/admin/events?order=desc&cursor={}", older["next_cursor"].as_str().unwrap()), &viewer.access_token).await.json().await.unwrap();
        assert_eq!(ids(&done), Vec::<String>::new());
        // Filtered: the newest ticket event; the head is still the log's.
        let created: Value = app.get_with("/api/v1/admin/events?order=desc&type=ticket.created", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(ids(&created), vec![log[1].clone()]);
        assert_eq!(created["head"], head);

        // A feed resumed from the head carries what came after the page.
        let mut feed = app.ws(&format!("/ws?cursor={head}"), Some(&viewer.access_token)).await.unwrap();
        assert_eq!(feed.next_json().await["type"], "connection");
        open_ticket(&app, &cabinet_user(&app, 2).await, "Two").await;
        assert_eq!(feed.next_event().await["type"], "user.created");
        assert_eq!(feed.next_event().await["type"], "ticket.created");
        assert_problem(app.get_with("/api/v1/admin/events?order=sideways", &viewer.access_token).await, 400, "invalid_query").await;
        app.stop().await;
    }
}

both_backends! {
    async fn rebuilding_the_projections_gives_exactly_the_live_tables(db) {
        let app = TestApp::spawn(&db).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let mut expected_events = 0;
        for n in 0..3 {
            let user = cabinet_user(&app, 100 + n).await;
            let ticket = open_ticket(&app, &user, &format!("T{n}")).await;
            let id = ticket["id"].as_str().unwrap();
            app.post(&format!("/api/v1/admin/tickets/{id}/messages"), Some(&operator.access_token), json!({"text": "reply"})).await;
            app.post(&format!("/api/v1/cabinet/tickets/{id}/messages"), Some(&user.access_token), json!({"text": "thanks"})).await;
            // user.created, ticket.created, message, message+answered, message+open
            expected_events += 7;
        }
        // Money: a top-up (payment.created, payment.completed,
        // transaction.created) and a withdrawal (transaction.created).
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let me: Value = app.get_with("/api/v1/cabinet/me", &cabinet_user(&app, 100).await.access_token).await.json().await.unwrap();
        let uid = me["id"].as_str().unwrap();
        let r = app.post(&format!("/api/v1/admin/users/{uid}/top-up"), Some(&owner.access_token), json!({"amount": 1000, "currency": "RUB", "reason": "r"})).await;
        assert_eq!(r.status().as_u16(), 201);
        let r = app.post(&format!("/api/v1/admin/users/{uid}/withdrawals"), Some(&owner.access_token), json!({"amount": 300, "currency": "RUB", "reason": "r"})).await;
        assert_eq!(r.status().as_u16(), 201);
        expected_events += 4;
        // A renamed Telegram profile: a user.updated event.
        app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(100, "renamed")})).await;
        expected_events += 1;
        crate::event_store::read_whole_log(&app.state.store, expected_events).await;

        let live = switchboard::projections::rebuild::dump(app.state.db.conn()).await.unwrap();
        assert!(live.contains("renamed"));
        let replayed = switchboard::projections::rebuild::rebuild(&app.state.store).await.unwrap();
        assert_eq!(replayed, expected_events as u64);
        let rebuilt = switchboard::projections::rebuild::dump(app.state.db.conn()).await.unwrap();
        assert_eq!(rebuilt, live);
        assert_eq!(
            rebuilt.lines().count(),
            3 + 3 + 9 + 1 + 2 + 1,
            "3 users, 3 tickets, 9 messages, 1 balance, 2 transactions, 1 payment"
        );
        app.stop().await;
    }
}
