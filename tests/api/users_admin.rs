//! Users in the admin API: search, view, edit, block and unblock.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    helpers::{TestApp, assert_problem, both_backends},
    tickets::cabinet_user,
};

both_backends! {
    async fn admins_search_edit_block_and_unblock_users(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let user = cabinet_user(&app, 5551).await;
        cabinet_user(&app, 5552).await;

        let all: Value = app.get_with("/api/v1/admin/users?per_page=1", &operator.access_token).await.json().await.unwrap();
        assert_eq!(all["total"], 2);
        assert_eq!(all["items"].as_array().unwrap().len(), 1);
        let by_name: Value = app.get_with("/api/v1/admin/users?q=@u5551", &operator.access_token).await.json().await.unwrap();
        assert_eq!(by_name["total"], 1);
        let by_id: Value = app.get_with("/api/v1/admin/users?q=5552", &operator.access_token).await.json().await.unwrap();
        assert_eq!(by_id["items"][0]["telegram_id"], 5552);
        let id = by_name["items"][0]["id"].as_str().unwrap().to_owned();

        let edited: Value = app.request(reqwest::Method::PATCH, &format!("/api/v1/admin/users/{id}"), Some(&owner.access_token), Some(json!({"first_name": "Renamed"}))).await.json().await.unwrap();
        assert_eq!(edited["first_name"], "Renamed");

        // Operators read users but do not block them.
        let refused = app.post(&format!("/api/v1/admin/users/{id}/block"), Some(&operator.access_token), json!({"reason": "spam"})).await;
        assert_problem(refused, 403, "forbidden").await;
        let blocked: Value = app.post(&format!("/api/v1/admin/users/{id}/block"), Some(&owner.access_token), json!({"reason": "spam"})).await.json().await.unwrap();
        assert_eq!(blocked["status"], "blocked");
        // The user's sessions end, and signing in again is refused.
        assert_problem(app.get_with("/api/v1/cabinet/me", &user.access_token).await, 401, "invalid_token").await;
        let again = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(5551, "u5551")})).await;
        assert_problem(again, 403, "forbidden").await;
        let only_blocked: Value = app.get_with("/api/v1/admin/users?status=blocked", &operator.access_token).await.json().await.unwrap();
        assert_eq!(only_blocked["total"], 1);

        let unblocked: Value = app.post(&format!("/api/v1/admin/users/{id}/unblock"), Some(&owner.access_token), json!({})).await.json().await.unwrap();
        assert_eq!(unblocked["status"], "active");
        let back = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": crate::telegram_auth::fresh_init_data(5551, "u5551")})).await;
        assert_eq!(back.status().as_u16(), 200);

crate::event_store::settle(&app.state.store).await;
                let types: Vec<String> = app.get_with(&format!("/api/v1/admin/events?stream=user:{id}"), &owner.access_token).await.json::<Value>().await.unwrap()["events"]
            .as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
        // The last sign-in brought Telegram's own first name back: Telegram
        // is the source of its profile fields.
        assert_eq!(types, ["user.created", "user.updated", "user.blocked", "user.unblocked", "user.updated"]);

        assert_problem(app.get_with(&format!("/api/v1/admin/users/{}", uuid::Uuid::now_v7()), &owner.access_token).await, 404, "not_found").await;
        assert_problem(app.get_with("/api/v1/admin/users?status=gone", &owner.access_token).await, 422, "invalid_field").await;
        let empty_reason = app.post(&format!("/api/v1/admin/users/{id}/block"), Some(&owner.access_token), json!({"reason": ""})).await;
        assert_problem(empty_reason, 422, "invalid_field").await;
        app.stop().await;
    }
}

both_backends! {
    async fn dashboard_stats_count_users_tickets_and_revenue(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let user = cabinet_user(&app, 1).await;
        cabinet_user(&app, 2).await;
        crate::tickets::open_ticket(&app, &user, "Help").await;
        let me: Value = app.get_with("/api/v1/cabinet/me", &user.access_token).await.json().await.unwrap();
        for (n, amount) in [(1, 1000), (2, 250)] {
            app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": me["id"], "amount": amount, "currency": "RUB", "provider": "p", "external_id": format!("e{n}"), "status": "completed"})).await;
        }
        app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": me["id"], "amount": 5, "currency": "USD", "provider": "p", "external_id": "f", "status": "failed"})).await;

        let stats: Value = app.get_with("/api/v1/admin/stats", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(stats["users_total"], 2);
        assert_eq!(stats["users_new"], 2);
        assert_eq!(stats["tickets"]["open"], 1);
        assert_eq!(stats["tickets_opened"], 1);
        assert_eq!(stats["payments_completed"], 2);
        assert_eq!(stats["payments_failed"], 1);
        assert_eq!(stats["revenue"], json!({"RUB": 1250}));
        // A period before anything happened.
        let empty: Value = app.get_with("/api/v1/admin/stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(empty["users_new"], 0);
        assert_eq!(empty["revenue"], json!({}));
        assert_problem(app.get_with("/api/v1/admin/stats?from=2021-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", &viewer.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get_with("/api/v1/admin/stats?from=yesterday", &viewer.access_token).await, 400, "invalid_query").await;
        assert_problem(app.get_with("/api/v1/admin/stats", &operator.access_token).await, 403, "forbidden").await;

        // Hour by hour over the last day: the same figures, spread over
        // its 24 or 25 hours.
        let to = chrono::Utc::now() + chrono::Duration::seconds(1);
        let from = to - chrono::Duration::hours(24);
        let hourly: Value = app
            .get_with(&format!("/api/v1/admin/stats?bucket=hour&from={}&to={}", from.format("%FT%TZ"), to.format("%FT%TZ")), &viewer.access_token)
            .await.json().await.unwrap();
        let series = hourly["series"].as_array().unwrap();
        assert!((24..=25).contains(&series.len()), "{hourly}");
        let sum = |field: &str| series.iter().map(|b| b[field].as_u64().unwrap()).sum::<u64>();
        assert_eq!(sum("users_new"), 2, "{hourly}");
        assert_eq!(sum("tickets_opened"), 1);
        assert_eq!(sum("payments_completed"), 2);
        let log = crate::helpers::whole_log(&app.state.store).await.len() as u64;
        assert_eq!(sum("events"), log, "every event of the log is in the last day");
        let rub: i64 = series.iter().filter_map(|b| b["revenue"]["RUB"].as_i64()).sum();
        assert_eq!(rub, 1250, "{hourly}");
        let starts: Vec<&str> = series.iter().map(|b| b["start"].as_str().unwrap()).collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]) && starts[0].ends_with(":00:00Z"), "{starts:?}");
        let daily: Value = app.get_with("/api/v1/admin/stats?bucket=day", &viewer.access_token).await.json().await.unwrap();
        assert_eq!(daily["series"].as_array().unwrap().len(), 31, "{daily}");
        assert!(daily["series"][0]["start"].as_str().unwrap().ends_with("T00:00:00Z"));
        assert!(app.get_with("/api/v1/admin/stats", &viewer.access_token).await.json::<Value>().await.unwrap().get("series").is_none());
        assert_problem(app.get_with("/api/v1/admin/stats?bucket=hour&from=2020-01-01T00:00:00Z&to=2021-01-01T00:00:00Z", &viewer.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get_with("/api/v1/admin/stats?bucket=week", &viewer.access_token).await, 400, "invalid_query").await;
        app.stop().await;
    }
}

both_backends! {
    async fn user_search_ignores_case_and_takes_wildcards_literally(db) {
        let app = TestApp::spawn(&db).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        for (id, name) in [(7001, "Greg_Acc"), (7002, "gregxacc")] {
            let init = crate::telegram_auth::fresh_init_data(id, name);
            let signed = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": init})).await;
            assert_eq!(signed.status().as_u16(), 200);
        }
        let found = |q: &'static str| {
            let app = &app;
            let token = viewer.access_token.clone();
            async move {
                let page: Value = app.get_with(&format!("/api/v1/admin/users?q={q}"), &token).await.json().await.unwrap();
                let mut names: Vec<String> = page["items"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap().to_owned()).collect();
                names.sort();
                names
            }
        };
        assert_eq!(found("Greg_Acc").await, ["Greg_Acc"]);
        assert_eq!(found("greg_acc").await, ["Greg_Acc"]);
        assert_eq!(found("GREG").await, ["Greg_Acc", "gregxacc"]);
        // `_` and `%` are letters here, not wildcards.
        assert_eq!(found("g_a").await, ["Greg_Acc"]);
        assert!(found("g%25c").await.is_empty());
        app.stop().await;
    }
}
