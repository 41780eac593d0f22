//! Balances, payments and the ledger.

use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::{
    helpers::{TestApp, assert_problem, both_backends},
    tickets::cabinet_user,
};

/// The signed-in cabinet user's id.
pub async fn user_id(app: &TestApp, token: &str) -> String {
    let me: Value = app
        .get_with("/api/v1/cabinet/me", token)
        .await
        .json()
        .await
        .unwrap();
    me["id"].as_str().unwrap().to_owned()
}

both_backends! {
    async fn a_duplicated_payment_callback_credits_once(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let user = cabinet_user(&app, 1).await;
        let uid = user_id(&app, &user.access_token).await;
        let callback = json!({"user_id": uid, "amount": 49900, "currency": "RUB", "provider": "yookassa", "external_id": "pay_123", "status": "completed"});

        let first = app.post("/api/v1/admin/payments", Some(&owner.access_token), callback.clone()).await;
        assert_eq!(first.status().as_u16(), 201);
        let second = app.post("/api/v1/admin/payments", Some(&owner.access_token), callback.clone()).await;
        assert_eq!(second.status().as_u16(), 200);
        // And several at once.
        let (a, b, c) = tokio::join!(
            app.post("/api/v1/admin/payments", Some(&owner.access_token), callback.clone()),
            app.post("/api/v1/admin/payments", Some(&owner.access_token), callback.clone()),
            app.post("/api/v1/admin/payments", Some(&owner.access_token), callback.clone()),
        );
        for r in [a, b, c] {
            assert_eq!(r.status().as_u16(), 200);
        }
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance, json!([{"currency": "RUB", "balance": 49900}]));
        let payments: Value = app.get_with("/api/v1/cabinet/payments", &user.access_token).await.json().await.unwrap();
        assert_eq!(payments["total"], 1);
        assert_eq!(payments["items"][0]["status"], "completed");
        let transactions: Value = app.get_with("/api/v1/cabinet/transactions", &user.access_token).await.json().await.unwrap();
        assert_eq!(transactions["total"], 1);
        assert_eq!(transactions["items"][0]["kind"], "deposit");

        // The same provider id with another amount is refused, not credited.
        let mut other = callback.clone();
        other["amount"] = json!(1);
        assert_problem(app.post("/api/v1/admin/payments", Some(&owner.access_token), other).await, 409, "payment_mismatch").await;

crate::event_store::settle(&app.state.store).await;
                let types: Vec<String> = app.get_with("/api/v1/admin/events?type=payment.*", &owner.access_token).await.json::<Value>().await.unwrap()["events"]
            .as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
        assert_eq!(types, ["payment.created", "payment.completed"]);
        app.stop().await;
    }
}

both_backends! {
    async fn concurrent_debits_never_overdraw_the_balance(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let user = cabinet_user(&app, 2).await;
        let uid = user_id(&app, &user.access_token).await;
        let top_up = app.post(&format!("/api/v1/admin/users/{uid}/top-up"), Some(&owner.access_token), json!({"amount": 100, "currency": "USD", "reason": "test"})).await;
        assert_eq!(top_up.status().as_u16(), 201);

        let path = format!("/api/v1/admin/users/{uid}/withdrawals");
        let body = json!({"amount": 30, "currency": "USD", "reason": "race"});
        let requests = (0..8).map(|_| app.post(&path, Some(&owner.access_token), body.clone()));
        let responses = futures::future::join_all(requests).await;
        let mut succeeded = 0;
        for r in responses {
            match r.status().as_u16() {
                201 => succeeded += 1,
                409 => {
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(body["code"], "insufficient_funds");
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!(succeeded, 3, "100 covers exactly three debits of 30");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 10);
        let ledger: Value = app.get_with(&format!("/api/v1/admin/users/{uid}/ledger"), &owner.access_token).await.json().await.unwrap();
        let afters: Vec<i64> = ledger["transactions"]["items"].as_array().unwrap().iter().map(|t| t["balance_after"].as_i64().unwrap()).collect();
        assert_eq!(afters, [10, 40, 70, 100]);
        app.stop().await;
    }
}

both_backends! {
    async fn money_input_is_validated_and_guarded_by_permissions(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let user = cabinet_user(&app, 3).await;
        let uid = user_id(&app, &user.access_token).await;
        let path = format!("/api/v1/admin/users/{uid}/top-up");
        for (amount, currency, field) in [(json!(-5), "RUB", "amount"), (json!(0), "RUB", "amount"), (json!(2_000_000_000_000i64), "RUB", "amount"), (json!(5), "rub", "currency"), (json!(5), "RUBLES", "currency"), (json!(5), "QQQ", "currency")] {
            let r = app.post(&path, Some(&owner.access_token), json!({"amount": amount, "currency": currency, "reason": "x"})).await;
            assert_eq!(assert_problem(r, 422, "invalid_field").await["field"], field);
        }
        let overflow = app
            .client
            .post(format!("{}{path}", app.address))
            .bearer_auth(&owner.access_token)
            .header("content-type", "application/json")
            .body(r#"{"amount": 99999999999999999999999, "currency": "RUB", "reason": "x"}"#)
            .send()
            .await
            .unwrap();
        assert_problem(overflow, 422, "invalid_body").await;
        let float = app.post(&path, Some(&owner.access_token), json!({"amount": 1.5, "currency": "RUB", "reason": "x"})).await;
        assert_problem(float, 422, "invalid_body").await;
        let nobody = uuid::Uuid::now_v7();
        let unknown = app.post(&format!("/api/v1/admin/users/{nobody}/top-up"), Some(&owner.access_token), json!({"amount": 5, "currency": "RUB", "reason": "x"})).await;
        assert_eq!(assert_problem(unknown, 404, "not_found").await["detail"], "no such user");
        let unknown_ledger = app.get_with(&format!("/api/v1/admin/users/{nobody}/ledger"), &viewer.access_token).await;
        assert_problem(unknown_ledger, 404, "not_found").await;
        let unknown_payer = app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": nobody, "amount": 5, "currency": "RUB", "provider": "p", "external_id": "e", "status": "completed"})).await;
        assert_problem(unknown_payer, 404, "not_found").await;

        assert_problem(app.post(&path, Some(&operator.access_token), json!({"amount": 5, "currency": "RUB", "reason": "x"})).await, 403, "forbidden").await;
        assert_problem(app.post(&path, Some(&viewer.access_token), json!({"amount": 5, "currency": "RUB", "reason": "x"})).await, 403, "forbidden").await;
        assert_eq!(app.get_with(&format!("/api/v1/admin/users/{uid}/ledger"), &viewer.access_token).await.status().as_u16(), 200);
        assert_problem(app.get_with(&format!("/api/v1/admin/users/{uid}/ledger"), &operator.access_token).await, 403, "forbidden").await;
        assert_problem(app.get("/api/v1/cabinet/balance").await, 401, "unauthorized").await;

        // Each user sees only their own money.
        app.post(&path, Some(&owner.access_token), json!({"amount": 500, "currency": "RUB", "reason": "gift"})).await;
        let other = cabinet_user(&app, 4).await;
        let theirs: Value = app.get_with("/api/v1/cabinet/balance", &other.access_token).await.json().await.unwrap();
        assert_eq!(theirs, json!([]));
        let theirs: Value = app.get_with("/api/v1/cabinet/transactions", &other.access_token).await.json().await.unwrap();
        assert_eq!(theirs["total"], 0);
        app.stop().await;
    }
}

both_backends! {
    async fn a_completed_payment_is_refunded_once_and_debits_the_balance(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let user = cabinet_user(&app, 7).await;
        let uid = user_id(&app, &user.access_token).await;
        let paid: Value = app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": uid, "amount": 700, "currency": "RUB", "provider": "p", "external_id": "r1", "status": "completed"})).await.json().await.unwrap();
        let id = paid["id"].as_str().unwrap();
        let refunded = app.post(&format!("/api/v1/admin/payments/{id}/refund"), Some(&owner.access_token), json!({"reason": "asked"})).await;
        assert_eq!(refunded.status().as_u16(), 200);
        assert_eq!(refunded.json::<Value>().await.unwrap()["status"], "refunded");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 0);
        let again = app.post(&format!("/api/v1/admin/payments/{id}/refund"), Some(&owner.access_token), json!({"reason": "again"})).await;
        assert_problem(again, 409, "payment_final").await;

        // Money already spent cannot be refunded from the balance.
        let paid: Value = app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": uid, "amount": 500, "currency": "RUB", "provider": "p", "external_id": "r2", "status": "completed"})).await.json().await.unwrap();
        app.post(&format!("/api/v1/admin/users/{uid}/withdrawals"), Some(&owner.access_token), json!({"amount": 300, "currency": "RUB", "reason": "spent"})).await;
        let spent = app.post(&format!("/api/v1/admin/payments/{}/refund", paid["id"].as_str().unwrap()), Some(&owner.access_token), json!({"reason": "asked"})).await;
        assert_problem(spent, 409, "insufficient_funds").await;
        let failed: Value = app.post("/api/v1/admin/payments", Some(&owner.access_token), json!({"user_id": uid, "amount": 5, "currency": "RUB", "provider": "p", "external_id": "r3", "status": "failed"})).await.json().await.unwrap();
        let not_refundable = app.post(&format!("/api/v1/admin/payments/{}/refund", failed["id"].as_str().unwrap()), Some(&owner.access_token), json!({"reason": "x"})).await;
        assert_problem(not_refundable, 409, "payment_not_refundable").await;
        assert_problem(app.post(&format!("/api/v1/admin/payments/{}/refund", uuid::Uuid::now_v7()), Some(&owner.access_token), json!({"reason": "x"})).await, 404, "not_found").await;
        crate::event_store::settle(&app.state.store).await;
        let kinds: Vec<String> = app.get_with(&format!("/api/v1/admin/users/{uid}/ledger"), &owner.access_token).await.json::<Value>().await.unwrap()["transactions"]["items"]
            .as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap().to_owned()).collect();
        assert_eq!(kinds, ["withdrawal", "deposit", "refund", "deposit"]);
        app.stop().await;
    }
}

both_backends! {
    async fn a_top_ups_reason_is_kept_and_a_contradicting_callback_is_a_mismatch(db) {
        let app = TestApp::spawn(&db).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let user = cabinet_user(&app, 4).await;
        let uid = user_id(&app, &user.access_token).await;
        let top_up = app.post(&format!("/api/v1/admin/users/{uid}/top-up"), Some(&owner.access_token), json!({"amount": 700, "currency": "RUB", "reason": "goodwill for the outage"})).await;
        assert_eq!(top_up.status().as_u16(), 201);
        let ledger: Value = app.get_with(&format!("/api/v1/admin/users/{uid}/ledger"), &owner.access_token).await.json().await.unwrap();
        assert_eq!(ledger["transactions"]["items"][0]["description"], "goodwill for the outage", "{ledger}");
        // A payment reported failed, then completed: the second contradicts
        // the first and changes nothing.
        let failed = json!({"user_id": uid, "amount": 300, "currency": "RUB", "provider": "card", "external_id": "c1", "status": "failed", "failure_reason": "declined"});
        assert_eq!(app.post("/api/v1/admin/payments", Some(&owner.access_token), failed).await.status().as_u16(), 201);
        let completed = json!({"user_id": uid, "amount": 300, "currency": "RUB", "provider": "card", "external_id": "c1", "status": "completed"});
        let contradicting = app.post("/api/v1/admin/payments", Some(&owner.access_token), completed).await;
        let problem = assert_problem(contradicting, 409, "payment_mismatch").await;
        assert!(problem["detail"].as_str().unwrap().contains("failed"), "{problem}");
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance, json!([{"currency": "RUB", "balance": 700}]));
        app.stop().await;
    }
}
