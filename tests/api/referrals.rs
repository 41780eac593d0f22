//! Referrals: a code at sign-up registers the referee; their deposits
//! reward the referrer.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    helpers::{TestApp, Tokens, both_backends},
    telegram_auth::sign_init_data,
    tickets::cabinet_user,
};

both_backends! {
    async fn a_referees_deposit_rewards_the_referrer_once(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let alice = cabinet_user(&app, 1).await;
        let alice_ref: Value = app.get_with("/api/v1/cabinet/referral", &alice.access_token).await.json().await.unwrap();
        let code = alice_ref["code"].as_str().unwrap().to_owned();
        assert_eq!(code.len(), 16);

        // Bob opens the Mini App from Alice's link (?startapp=<code>).
        let init = sign_init_data(&[
            ("user", json!({"id": 2, "first_name": "Bob", "username": "bob"}).to_string()),
            ("start_param", code.clone()),
            ("auth_date", chrono::Utc::now().timestamp().to_string()),
        ]);
        let bob: Tokens = app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": init})).await.json().await.unwrap();
        let bob_me: Value = app.get_with("/api/v1/cabinet/me", &bob.access_token).await.json().await.unwrap();
        let bob_id = bob_me["id"].as_str().unwrap().to_owned();

        let payment = json!({"user_id": bob_id, "amount": 1000, "currency": "RUB", "provider": "stars", "external_id": "x1", "status": "completed"});
        assert_eq!(app.post("/api/v1/admin/payments", Some(&owner.access_token), payment.clone()).await.status().as_u16(), 201);
        assert_eq!(app.post("/api/v1/admin/payments", Some(&owner.access_token), payment).await.status().as_u16(), 200);

        let alice_ref: Value = app.get_with("/api/v1/cabinet/referral", &alice.access_token).await.json().await.unwrap();
        assert_eq!(alice_ref["referees"][0]["user_id"], bob_id.as_str());
        assert_eq!(alice_ref["earnings"], json!([{"currency": "RUB", "amount": 100}]));
        let alice_balance: Value = app.get_with("/api/v1/cabinet/balance", &alice.access_token).await.json().await.unwrap();
        assert_eq!(alice_balance, json!([{"currency": "RUB", "balance": 100}]));
        let bob_balance: Value = app.get_with("/api/v1/cabinet/balance", &bob.access_token).await.json().await.unwrap();
        assert_eq!(bob_balance, json!([{"currency": "RUB", "balance": 1000}]));

crate::event_store::settle(&app.state.store).await;
                let types: Vec<String> = app.get_with("/api/v1/admin/events?type=referral.*", &owner.access_token).await.json::<Value>().await.unwrap()["events"]
            .as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
        assert_eq!(types, ["referral.registered", "referral.reward_granted"]);
        // Events the system causes carry `"id": null` (the envelope always
        // has both fields).
        let events: Value = app.get_with("/api/v1/admin/events?type=referral.*", &owner.access_token).await.json().await.unwrap();
        assert_eq!(events["events"][0]["actor"], json!({"kind": "system", "id": null}));

        // An unknown code is simply no referral.
        let init = sign_init_data(&[
            ("user", json!({"id": 3, "first_name": "Cy"}).to_string()),
            ("start_param", "nobodyscode".to_owned()),
            ("auth_date", chrono::Utc::now().timestamp().to_string()),
        ]);
        assert_eq!(app.post("/api/v1/cabinet/auth/telegram/mini-app", None, json!({"init_data": init})).await.status().as_u16(), 200);
        let alice_ref: Value = app.get_with("/api/v1/cabinet/referral", &alice.access_token).await.json().await.unwrap();
        assert_eq!(alice_ref["referees"].as_array().unwrap().len(), 1);
        // Bob's own deposit did not reward Bob.
        let bob_ref: Value = app.get_with("/api/v1/cabinet/referral", &bob.access_token).await.json().await.unwrap();
        assert_eq!(bob_ref["earnings"], json!([]));
        // An admin's manual top-up of Bob (a compensation, say) earns Alice
        // nothing.
        let top_up = app.post(&format!("/api/v1/admin/users/{bob_id}/top-up"), Some(&owner.access_token), json!({"amount": 5000, "currency": "RUB", "reason": "compensation"})).await;
        assert_eq!(top_up.status().as_u16(), 201);
        let alice_ref: Value = app.get_with("/api/v1/cabinet/referral", &alice.access_token).await.json().await.unwrap();
        assert_eq!(alice_ref["earnings"], json!([{"currency": "RUB", "amount": 100}]));
        app.stop().await;
    }
}
