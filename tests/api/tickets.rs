//! Tickets through the cabinet and admin APIs, with their events.

use reqwest::Method;
use serde_json::{Value, json};
use switchboard::auth::Role;

use crate::helpers::{TestApp, Tokens, assert_problem, both_backends};

pub async fn cabinet_user(app: &TestApp, telegram_id: i64) -> Tokens {
    let init = crate::telegram_auth::fresh_init_data(telegram_id, &format!("u{telegram_id}"));
    app.post(
        "/api/v1/cabinet/auth/telegram/mini-app",
        None,
        json!({"init_data": init}),
    )
    .await
    .json()
    .await
    .unwrap()
}

pub async fn open_ticket(app: &TestApp, user: &Tokens, subject: &str) -> Value {
    let response = app
        .post(
            "/api/v1/cabinet/tickets",
            Some(&user.access_token),
            json!({"subject": subject, "text": "Hello, I need help"}),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    response.json().await.unwrap()
}

both_backends! {
    async fn a_ticket_conversation_moves_through_its_statuses_with_events(db) {
        let app = TestApp::spawn(&db).await;
        let user = cabinet_user(&app, 1).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let ticket = open_ticket(&app, &user, "Payment missing").await;
        let id = ticket["id"].as_str().unwrap().to_owned();
        assert_eq!(ticket["status"], "open");
        assert_eq!(ticket["messages"].as_array().unwrap().len(), 1);

        // Only one open ticket at a time.
        let second = app.post("/api/v1/cabinet/tickets", Some(&user.access_token), json!({"subject": "Another", "text": "x"})).await;
        assert_problem(second, 409, "ticket_already_open").await;

        // The operator sees one unread message, replies; the ticket is answered.
        let list: Value = app.get_with("/api/v1/admin/tickets?status=open", &operator.access_token).await.json().await.unwrap();
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["unread"], 1);
        let replied = app.post(&format!("/api/v1/admin/tickets/{id}/messages"), Some(&operator.access_token), json!({"text": "Checking now"})).await;
        assert_eq!(replied.status().as_u16(), 201);
        let replied: Value = replied.json().await.unwrap();
        assert_eq!(replied["status"], "answered");
        assert!(replied["message"]["author_id"].is_string(), "operators see who wrote");
        assert_eq!(replied["message"]["text"], "Checking now");

        // The user has one unread reply; viewing marks it read.
        let mine: Value = app.get_with("/api/v1/cabinet/tickets", &user.access_token).await.json().await.unwrap();
        assert_eq!(mine["items"][0]["unread"], 1);
        let view: Value = app.get_with(&format!("/api/v1/cabinet/tickets/{id}"), &user.access_token).await.json().await.unwrap();
        assert_eq!(view["messages"][1]["author"], "operator");
        assert!(view["messages"][1].get("author_id").is_none(), "users do not see operator ids");
        let mine: Value = app.get_with("/api/v1/cabinet/tickets", &user.access_token).await.json().await.unwrap();
        assert_eq!(mine["items"][0]["unread"], 0);

        // The user answers: open again. Priority, assignment, then closed.
        let again: Value = app.post(&format!("/api/v1/cabinet/tickets/{id}/messages"), Some(&user.access_token), json!({"text": "Thanks!"})).await.json().await.unwrap();
        assert_eq!(again["status"], "open");
        let owner = app.admin_with_role("owner@example.com", Role::Owner).await;
        let me: Value = app.get_with("/api/v1/admin/me", &operator.access_token).await.json().await.unwrap();
        let put = |path: String, body: Value| {
            let app = &app;
            let token = owner.access_token.clone();
            async move { app.request(Method::PUT, &path, Some(&token), Some(body)).await }
        };
        assert_eq!(put(format!("/api/v1/admin/tickets/{id}/priority"), json!({"priority": "urgent"})).await.status().as_u16(), 200);
        let assigned: Value = put(format!("/api/v1/admin/tickets/{id}/assignee"), json!({"assignee_id": me["id"]})).await.json().await.unwrap();
        assert_eq!(assigned["assignee_id"], me["id"]);
        let closed: Value = put(format!("/api/v1/admin/tickets/{id}/status"), json!({"status": "closed"})).await.json().await.unwrap();
        assert_eq!(closed["status"], "closed");

        // Closed: no messages from either side; a new ticket may be opened.
        let late = app.post(&format!("/api/v1/cabinet/tickets/{id}/messages"), Some(&user.access_token), json!({"text": "one more"})).await;
        assert_problem(late, 409, "ticket_closed").await;
        let late_reply = app.post(&format!("/api/v1/admin/tickets/{id}/messages"), Some(&operator.access_token), json!({"text": "one more"})).await;
        assert_problem(late_reply, 409, "ticket_closed").await;
        open_ticket(&app, &user, "A new question").await;

        let types: Vec<String> = app.state.store.read_stream(&switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap()).await.unwrap().iter().map(|e| e.event_type.as_str().to_owned()).collect();
        assert_eq!(types, [
            "ticket.created", "ticket.message_added",
            "ticket.message_added", "ticket.status_changed",
            "ticket.message_added", "ticket.status_changed",
            "ticket.priority_changed", "ticket.assigned", "ticket.status_changed",
        ]);
        let status_events = app.state.store.read_stream(&switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap()).await.unwrap();
        assert_eq!(status_events[8].payload["old_status"], "open");
        assert_eq!(status_events[8].payload["new_status"], "closed");
        app.stop().await;
    }
}

both_backends! {
    async fn a_user_never_sees_or_touches_another_users_ticket(db) {
        let app = TestApp::spawn(&db).await;
        let alice = cabinet_user(&app, 10).await;
        let bob = cabinet_user(&app, 11).await;
        let ticket = open_ticket(&app, &alice, "Alice's").await;
        let id = ticket["id"].as_str().unwrap();
        assert_problem(app.get_with(&format!("/api/v1/cabinet/tickets/{id}"), &bob.access_token).await, 404, "not_found").await;
        assert_problem(app.post(&format!("/api/v1/cabinet/tickets/{id}/messages"), Some(&bob.access_token), json!({"text": "hi"})).await, 404, "not_found").await;
        let bobs: Value = app.get_with("/api/v1/cabinet/tickets", &bob.access_token).await.json().await.unwrap();
        assert_eq!(bobs["total"], 0);
        // Nothing of Bob's reached Alice's ticket.
        let view: Value = app.get_with(&format!("/api/v1/cabinet/tickets/{id}"), &alice.access_token).await.json().await.unwrap();
        assert_eq!(view["messages"].as_array().unwrap().len(), 1);
        app.stop().await;
    }
}

both_backends! {
    async fn two_concurrent_replies_both_land_with_consecutive_versions(db) {
        let app = TestApp::spawn(&db).await;
        let user = cabinet_user(&app, 20).await;
        let a = app.admin_with_role("a@example.com", Role::Operator).await;
        let b = app.admin_with_role("b@example.com", Role::Operator).await;
        let ticket = open_ticket(&app, &user, "Race").await;
        let id = ticket["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/admin/tickets/{id}/messages");
        let (ra, rb) = tokio::join!(
            app.post(&path, Some(&a.access_token), json!({"text": "from A"})),
            app.post(&path, Some(&b.access_token), json!({"text": "from B"})),
        );
        assert_eq!(ra.status().as_u16(), 201);
        assert_eq!(rb.status().as_u16(), 201);
        let events = app.state.store.read_stream(&switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap()).await.unwrap();
        let versions: Vec<u32> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=events.len() as u32).collect::<Vec<_>>());
        let texts: Vec<&str> = events.iter().filter_map(|e| e.payload["text"].as_str()).collect();
        assert!(texts.contains(&"from A") && texts.contains(&"from B"));
        app.stop().await;
    }
}

both_backends! {
    async fn ticket_routes_refuse_bad_input_with_problems(db) {
        let app = TestApp::spawn(&db).await;
        let user = cabinet_user(&app, 30).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        let empty = app.post("/api/v1/cabinet/tickets", Some(&user.access_token), json!({"subject": " ", "text": "x"})).await;
        assert_eq!(assert_problem(empty, 422, "invalid_field").await["field"], "subject");
        let long = app.post("/api/v1/cabinet/tickets", Some(&user.access_token), json!({"subject": "s", "text": "x".repeat(10_001)})).await;
        assert_eq!(assert_problem(long, 422, "invalid_field").await["field"], "text");
        assert_problem(app.get_with("/api/v1/cabinet/tickets?per_page=100000", &user.access_token).await, 422, "invalid_field").await;
        assert_problem(app.get_with("/api/v1/cabinet/tickets?page=-1", &user.access_token).await, 400, "invalid_query").await;
        assert_problem(app.get_with("/api/v1/cabinet/tickets/not-a-uuid", &user.access_token).await, 404, "not_found").await;
        let unknown = uuid::Uuid::now_v7();
        assert_problem(app.post(&format!("/api/v1/admin/tickets/{unknown}/messages"), Some(&owner.access_token), json!({"text": "x"})).await, 404, "not_found").await;
        let bad_status = app.request(Method::PUT, &format!("/api/v1/admin/tickets/{unknown}/status"), Some(&owner.access_token), Some(json!({"status": "done"}))).await;
        assert_problem(bad_status, 422, "invalid_body").await;
        assert_problem(app.get_with("/api/v1/admin/tickets?status=done", &owner.access_token).await, 422, "invalid_field").await;
        app.stop().await;
    }
}

both_backends! {
    async fn ticket_permissions_follow_roles_and_scopes(db) {
        let app = TestApp::spawn(&db).await;
        let user = cabinet_user(&app, 40).await;
        let ticket = open_ticket(&app, &user, "Perms").await;
        let id = ticket["id"].as_str().unwrap();
        let viewer = app.admin_with_role("v@example.com", Role::Viewer).await;
        let owner = app.admin_with_role("o@example.com", Role::Owner).await;
        assert_eq!(app.get_with("/api/v1/admin/tickets", &viewer.access_token).await.status().as_u16(), 200);
        let reply = app.post(&format!("/api/v1/admin/tickets/{id}/messages"), Some(&viewer.access_token), json!({"text": "x"})).await;
        assert_problem(reply, 403, "forbidden").await;
        let key: Value = app.post("/api/v1/admin/api-keys", Some(&owner.access_token), json!({"name": "helpdesk", "scopes": ["tickets:read", "tickets:reply"]})).await.json().await.unwrap();
        let secret = key["secret"].as_str().unwrap();
        let by_key = app.post(&format!("/api/v1/admin/tickets/{id}/messages"), Some(secret), json!({"text": "from the helpdesk"})).await;
        assert_eq!(by_key.status().as_u16(), 201);
        let events = app.state.store.read_stream(&switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap()).await.unwrap();
        assert_eq!(events.last().unwrap().event_type.as_str(), "ticket.status_changed");
        assert_eq!(events[2].actor.kind, switchboard::events::ActorKind::ApiKey);
        assert_problem(app.get_with("/api/v1/cabinet/tickets", &owner.access_token).await, 401, "invalid_token").await;
        app.stop().await;
    }
}

both_backends! {
    async fn a_burst_of_messages_lands_whole_and_in_order(db) {
        // Commands that arrive together are written together: many tickets
        // and several concurrent messages per ticket in each group.
        let app = TestApp::spawn(&db).await;
        let mut tickets = Vec::new();
        for n in 0..6 {
            let user = cabinet_user(&app, 50 + n).await;
            let ticket = open_ticket(&app, &user, "Burst").await;
            tickets.push((user, ticket["id"].as_str().unwrap().to_owned()));
        }
        let sends = tickets.iter().flat_map(|(user, id)| {
            let app = &app;
            (0..8).map(move |k| async move {
                let path = format!("/api/v1/cabinet/tickets/{id}/messages");
                let response = app.post(&path, Some(&user.access_token), json!({"text": format!("message {k}")})).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 201, "{body}");
                (id.clone(), body["message"]["id"].as_str().unwrap().to_owned())
            })
        });
        let answered: Vec<(String, String)> = futures::future::join_all(sends).await;
        for (user, id) in &tickets {
            let events = app.state.store.read_stream(&switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap()).await.unwrap();
            let versions: Vec<u32> = events.iter().map(|e| e.version).collect();
            assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "created, the first message and 8 more");
            // Each answer names a message that is in the log, once.
            let logged: Vec<&str> = events.iter().filter_map(|e| e.payload["message_id"].as_str()).collect();
            let mine: Vec<&str> = answered.iter().filter(|(t, _)| t == id).map(|(_, m)| m.as_str()).collect();
            assert_eq!(mine.len(), 8);
            assert!(mine.iter().all(|m| logged.iter().filter(|l| *l == m).count() == 1), "{mine:?} in {logged:?}");
            // The read model took every one, in log order.
            let view: Value = app.get_with(&format!("/api/v1/cabinet/tickets/{id}"), &user.access_token).await.json().await.unwrap();
            let shown: Vec<&str> = view["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
            assert_eq!(shown, logged);
            let listed: Value = app.get_with("/api/v1/cabinet/tickets", &user.access_token).await.json().await.unwrap();
            assert_eq!(listed["items"][0]["messages_count"], 9, "{listed}");
        }
        // The read models the groups wrote are what replaying the log gives
        // (counts, versions, times and positions alike).
        let live = switchboard::projections::rebuild::dump(app.state.db.conn()).await.unwrap();
        switchboard::projections::rebuild::rebuild(&app.state.store).await.unwrap();
        let rebuilt = switchboard::projections::rebuild::dump(app.state.db.conn()).await.unwrap();
        assert_eq!(rebuilt, live);
        app.stop().await;
    }
}

both_backends! {
    async fn concurrent_opens_give_one_ticket_per_user_and_fail_no_one_else(db) {
        // A group in which one command breaks the one-open-ticket key fails
        // as a whole; its commands then run alone, and only that one is
        // refused.
        let app = TestApp::spawn(&db).await;
        let mut users = Vec::new();
        for n in 0..4 {
            users.push(cabinet_user(&app, 70 + n).await);
        }
        let opens = users.iter().flat_map(|user| {
            let app = &app;
            (0..3).map(move |_| async move {
                app.post("/api/v1/cabinet/tickets", Some(&user.access_token), json!({"subject": "Twice", "text": "Hello"})).await.status().as_u16()
            })
        });
        let statuses: Vec<u16> = futures::future::join_all(opens).await;
        for per_user in statuses.chunks(3) {
            let mut sorted = per_user.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, [201, 409, 409], "{statuses:?}");
        }
        for user in &users {
            let listed: Value = app.get_with("/api/v1/cabinet/tickets", &user.access_token).await.json().await.unwrap();
            assert_eq!(listed["total"], 1);
        }
        app.stop().await;
    }
}

/// Changes `id`'s status the way another instance would: through a runner
/// of its own, not this instance's.
async fn change_status_elsewhere(
    app: &TestApp,
    id: &str,
    status: switchboard::tickets::domain::Status,
) {
    use switchboard::{
        domain::{Commands, Decide},
        events::Actor,
        tickets::domain::{Ticket, TicketCommand},
    };
    let elsewhere = Commands::new(app.state.store.clone());
    let done = elsewhere
        .run(
            Decide::<Ticket>::new(id, TicketCommand::ChangeStatus(status)),
            Actor::system(),
        )
        .await
        .unwrap();
    assert_eq!(done.events.len(), 1);
}

both_backends! {
    async fn commands_see_what_changed_behind_the_groups_back(db) {
        // What a group remembers of a ticket never outweighs the log: a
        // change made elsewhere is seen by the next command, whether the
        // remembered state would have let it through or refused it.
        use switchboard::tickets::domain::Status;
        let app = TestApp::spawn(&db).await;
        let user = cabinet_user(&app, 95).await;
        let ticket = open_ticket(&app, &user, "Behind").await;
        let id = ticket["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/cabinet/tickets/{id}/messages");
        let send = |text: &'static str| app.post(&path, Some(&user.access_token), json!({"text": text}));
        assert_eq!(send("first").await.status().as_u16(), 201);
        // Closed elsewhere while the ticket is remembered open: refused.
        change_status_elsewhere(&app, &id, Status::Closed).await;
        assert_problem(send("while closed").await, 409, "ticket_closed").await;
        assert_problem(send("still closed").await, 409, "ticket_closed").await;
        // Reopened elsewhere while it is remembered closed: taken.
        change_status_elsewhere(&app, &id, Status::Open).await;
        let taken = send("reopened").await;
        assert_eq!(taken.status().as_u16(), 201);
        let view: Value = app.get_with(&format!("/api/v1/cabinet/tickets/{id}"), &user.access_token).await.json().await.unwrap();
        assert_eq!(view["status"], "open");
        let texts: Vec<&str> = view["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["Hello, I need help", "first", "reopened"]);
        let stream = switchboard::events::StreamName::parse(&format!("ticket:{id}")).unwrap();
        let versions: Vec<u32> = app.state.store.read_stream(&stream).await.unwrap().iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6], "created, message, message, closed, opened, message");
        app.stop().await;
    }
}

both_backends! {
    async fn the_inbox_can_put_the_tickets_operators_have_not_read_first(db) {
        let app = TestApp::spawn(&db).await;
        let operator = app.admin_with_role("op@example.com", Role::Operator).await;
        let older = open_ticket(&app, &cabinet_user(&app, 1).await, "Older").await;
        let newer = open_ticket(&app, &cabinet_user(&app, 2).await, "Newer").await;
        // The operator reads the newer one.
        app.get_with(&format!("/api/v1/admin/tickets/{}", newer["id"].as_str().unwrap()), &operator.access_token).await;
        let subjects = |page: Value| page["items"].as_array().unwrap().iter().map(|t| t["subject"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
        let recent: Value = app.get_with("/api/v1/admin/tickets", &operator.access_token).await.json().await.unwrap();
        assert_eq!(subjects(recent), ["Newer", "Older"]);
        let unread: Value = app.get_with("/api/v1/admin/tickets?sort=unread", &operator.access_token).await.json().await.unwrap();
        assert_eq!(unread["items"][0]["unread"], 1, "{unread}");
        assert_eq!(subjects(unread), ["Older", "Newer"]);
        // Once both are read, activity decides again.
        app.get_with(&format!("/api/v1/admin/tickets/{}", older["id"].as_str().unwrap()), &operator.access_token).await;
        let read: Value = app.get_with("/api/v1/admin/tickets?sort=unread", &operator.access_token).await.json().await.unwrap();
        assert_eq!(subjects(read), ["Newer", "Older"]);
        assert_problem(app.get_with("/api/v1/admin/tickets?sort=oldest", &operator.access_token).await, 400, "invalid_query").await;
        app.stop().await;
    }
}
