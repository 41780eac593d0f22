//! Subscriptions: bought from the balance, renewed, cancelled, expired once.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    helpers::{TestApp, assert_problem, both_backends},
    tickets::cabinet_user,
};

async fn funded_user(app: &TestApp, telegram_id: i64, amount: i64) -> crate::helpers::Tokens {
    let owner = app
        .admin_with_role(&format!("o{telegram_id}@example.com"), Role::Owner)
        .await;
    let user = cabinet_user(app, telegram_id).await;
    let me: Value = app
        .get_with("/api/v1/cabinet/me", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    let uid = me["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/api/v1/admin/users/{uid}/top-up"),
            Some(&owner.access_token),
            json!({"amount": amount, "currency": "RUB", "reason": "test"}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201);
    user
}

both_backends! {
    async fn a_subscription_is_paid_from_the_balance_renewed_and_cancelled(db) {
        let app = TestApp::spawn(&db).await;
        let user = funded_user(&app, 1, 70_000).await;
        let plans: Value = app.get_with("/api/v1/cabinet/plans", &user.access_token).await.json().await.unwrap();
        assert_eq!(plans[0]["id"], "monthly");

        let bought = app.post("/api/v1/cabinet/subscription", Some(&user.access_token), json!({"plan_id": "monthly"})).await;
        assert_eq!(bought.status().as_u16(), 201);
        let bought: Value = bought.json().await.unwrap();
        assert_eq!(bought["status"], "active");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 70_000 - 29_900);

        let twice = app.post("/api/v1/cabinet/subscription", Some(&user.access_token), json!({"plan_id": "monthly"})).await;
        assert_problem(twice, 409, "subscription_active").await;
        let renewed: Value = app.post("/api/v1/cabinet/subscription/renew", Some(&user.access_token), json!({"plan_id": "monthly"})).await.json().await.unwrap();
        let first_end = chrono::DateTime::parse_from_rfc3339(bought["expires_at"].as_str().unwrap()).unwrap();
        let second_end = chrono::DateTime::parse_from_rfc3339(renewed["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!((second_end - first_end).num_days(), 30);

        // 70,000 − 2 × 29,900 = 10,200 left: a third period is not affordable.
        let broke = app.post("/api/v1/cabinet/subscription/renew", Some(&user.access_token), json!({"plan_id": "monthly"})).await;
        assert_problem(broke, 402, "insufficient_funds").await;
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 10_200);

        let cancelled: Value = app.post("/api/v1/cabinet/subscription/cancel", Some(&user.access_token), json!({})).await.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled");
        assert_problem(app.post("/api/v1/cabinet/subscription/cancel", Some(&user.access_token), json!({})).await, 409, "subscription_not_active").await;
        assert_problem(app.post("/api/v1/cabinet/subscription", Some(&user.access_token), json!({"plan_id": "lifetime"})).await, 422, "invalid_field").await;
        app.stop().await;
    }
}

both_backends! {
    async fn a_due_subscription_expires_exactly_once_even_with_two_schedulers(db) {
        let app = TestApp::spawn(&db).await;
        let user = funded_user(&app, 2, 29_900).await;
        app.post("/api/v1/cabinet/subscription", Some(&user.access_token), json!({"plan_id": "monthly"})).await;
        let later = chrono::Utc::now() + chrono::Duration::days(31);
        // Not due yet: nothing happens.
        assert_eq!(switchboard::subscriptions::expire_due(&app.state.commands, chrono::Utc::now()).await.unwrap(), 0);
        // Two schedulers (as on two instances: runners of their own) at the
        // same moment.
        let elsewhere = switchboard::domain::Commands::new(app.state.store.clone());
        let (a, b) = tokio::join!(
            switchboard::subscriptions::expire_due(&app.state.commands, later),
            switchboard::subscriptions::expire_due(&elsewhere, later),
        );
        assert_eq!(a.unwrap() + b.unwrap(), 1);
        let events = crate::event_store::read_whole_log(&app.state.store, 7).await;
        assert_eq!(events.iter().filter(|e| e.event_type.as_str() == "subscription.expired").count(), 1);
        let mine: Value = app.get_with("/api/v1/cabinet/subscription", &user.access_token).await.json().await.unwrap();
        assert_eq!(mine["status"], "expired");
        app.stop().await;
    }
}
