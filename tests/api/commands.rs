//! The command pipeline: random commands give the same log and read models
//! whichever read model implementations write them; events that do not
//! decode are errors; a hot aggregate is worked in turn, not refused.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use switchboard::{
    config::DatabaseConfig,
    db::Db,
    domain::{Command, CommandError, Commands, Decide, DomainError, Refusal, Target, Work},
    events::{Actor, ActorKind, EventStore, RecordedEvent},
    ids::{MessageId, TicketId, TransactionId, UserId},
    ledger::{
        domain::{Amount, Balance, Currency, Entry, TransactionKind},
        service::{PaymentIn, RecordPayment, Refund, payment_id},
    },
    projections::Projections,
    referrals::{self, Referrals},
    subscriptions::domain::{Buy, PlanTerms, Subscription, SubscriptionCommand},
    tickets::domain::{Channel, Priority, Status, Ticket, TicketCommand},
    users::{
        UserCommand, UserState,
        domain::{Source, UserCreated},
        service::BlockUser,
    },
};

use crate::helpers::{Kind, TestApp, TestDb, assert_problem, both_backends};

/// One step of a random scenario, over a few users and tickets.
#[derive(Debug, Clone)]
enum Op {
    Register { user: u8, referrer: Option<u8> },
    Open { user: u8, ticket: u8 },
    Write { user: u8, ticket: u8 },
    Reply { ticket: u8 },
    SetStatus { ticket: u8, status: u8 },
    SetPriority { ticket: u8, priority: u8 },
    Pay { user: u8, payment: u8, fail: bool },
    Refund { user: u8, payment: u8 },
    Withdraw { user: u8, amount: u16 },
    Buy { user: u8, renewal: bool },
    Cancel { user: u8 },
    Block { user: u8 },
    Unblock { user: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0u8..4;
    let ticket = 0u8..3;
    prop_oneof![
        (user.clone(), proptest::option::of(0u8..4))
            .prop_map(|(user, referrer)| Op::Register { user, referrer }),
        (user.clone(), ticket.clone()).prop_map(|(user, ticket)| Op::Open { user, ticket }),
        (user.clone(), ticket.clone()).prop_map(|(user, ticket)| Op::Write { user, ticket }),
        (user.clone(), ticket.clone()).prop_map(|(user, ticket)| Op::Write { user, ticket }),
        ticket.clone().prop_map(|ticket| Op::Reply { ticket }),
        ticket.clone().prop_map(|ticket| Op::Reply { ticket }),
        (ticket.clone(), 0u8..4).prop_map(|(ticket, status)| Op::SetStatus { ticket, status }),
        (ticket.clone(), 0u8..4)
            .prop_map(|(ticket, priority)| Op::SetPriority { ticket, priority }),
        (user.clone(), 0u8..5, proptest::bool::weighted(0.2)).prop_map(|(user, payment, fail)| {
            Op::Pay {
                user,
                payment,
                fail,
            }
        }),
        (user.clone(), 0u8..5).prop_map(|(user, payment)| Op::Refund { user, payment }),
        (user.clone(), 1u16..3000).prop_map(|(user, amount)| Op::Withdraw { user, amount }),
        (user.clone(), any::<bool>()).prop_map(|(user, renewal)| Op::Buy { user, renewal }),
        user.clone().prop_map(|user| Op::Cancel { user }),
        user.clone().prop_map(|user| Op::Block { user }),
        user.prop_map(|user| Op::Unblock { user }),
    ]
}

/// Only new messages: a group of these is written in one statement with
/// its read models on PostgreSQL.
fn message() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(user, ticket)| Op::Write { user, ticket }),
        (0u8..3).prop_map(|ticket| Op::Reply { ticket }),
    ]
}

/// A scenario: its steps, in groups that are queued together (some of
/// only new messages).
fn scenario() -> impl Strategy<Value = Vec<Vec<Op>>> {
    let group = prop_oneof![
        2 => proptest::collection::vec(op(), 1..12),
        1 => proptest::collection::vec(message(), 1..8),
    ];
    proptest::collection::vec(group, 1..8)
}

/// Ids of one scenario's users, tickets, messages and payments: the same
/// in both runs of it, distinct from other scenarios'.
#[derive(Clone, Copy)]
struct Ids {
    case: u64,
}

impl Ids {
    fn uuid(&self, kind: u8, n: u64) -> uuid::Uuid {
        // The low half differs for every id (referral codes are made of it).
        let low = ((u64::from(kind) << 48) | n)
            .wrapping_add(self.case)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        uuid::Uuid::from_u64_pair(self.case, low)
    }

    fn user(&self, n: u8) -> UserId {
        UserId::from_uuid(self.uuid(1, u64::from(n)))
    }

    fn ticket(&self, user: u8, n: u8) -> TicketId {
        TicketId::from_uuid(self.uuid(2, u64::from(user) * 16 + u64::from(n)))
    }

    fn step(&self, n: usize) -> uuid::Uuid {
        self.uuid(3, n as u64)
    }
}

/// A refusal of any of the scenario's commands (they are expected: a
/// message to a closed ticket, a withdrawal beyond the balance…).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl DomainError for Refused {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        "refused"
    }
}

/// A new user, registered with their referrer when they have one.
struct Register {
    created: UserCreated,
}

impl Command for Register {
    type Output = ();
    type Error = Refused;

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<UserState>(self.created.user_id)];
        targets.extend(self.created.referred_by.map(Target::of::<Referrals>));
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), Refused> {
        work.execute::<UserState>(
            self.created.user_id,
            UserCommand::Register(self.created.clone()),
        )
        .map_err(|e| Refused(e.to_string()))?;
        if let Some(referrer) = self.created.referred_by {
            referrals::register(work, referrer, self.created.user_id)
                .map_err(|e| Refused(e.to_string()))?;
        }
        Ok(())
    }
}

/// Any of the product's commands, so a scenario's group can be queued at
/// once.
enum Any {
    Register(Register),
    Ticket(Decide<Ticket>),
    User(Decide<UserState>),
    Pay(RecordPayment),
    Refund(Refund),
    Entry(Decide<Balance>),
    Buy(Buy),
    Subscription(Decide<Subscription>),
    Block(BlockUser),
}

fn refused<E: std::fmt::Display>(e: E) -> Refused {
    Refused(e.to_string())
}

impl Command for Any {
    type Output = ();
    type Error = Refused;

    fn writes(&self) -> bool {
        match self {
            Self::Block(c) => c.writes(),
            _ => false,
        }
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<Refused>> {
        match self {
            Self::Pay(c) => c.prepare(conn).await.map_err(|e| e.map_domain(refused)),
            _ => Ok(()),
        }
    }

    fn targets(&self) -> Vec<Target> {
        match self {
            Self::Register(c) => c.targets(),
            Self::Ticket(c) => c.targets(),
            Self::User(c) => c.targets(),
            Self::Pay(c) => c.targets(),
            Self::Refund(c) => c.targets(),
            Self::Entry(c) => c.targets(),
            Self::Buy(c) => c.targets(),
            Self::Subscription(c) => c.targets(),
            Self::Block(c) => c.targets(),
        }
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), Refused> {
        match self {
            Self::Register(c) => c.decide(work),
            Self::Ticket(c) => c.decide(work).map(drop).map_err(refused),
            Self::User(c) => c.decide(work).map(drop).map_err(refused),
            Self::Pay(c) => c.decide(work).map(drop).map_err(refused),
            Self::Refund(c) => c.decide(work).map_err(refused),
            Self::Entry(c) => c.decide(work).map(drop).map_err(refused),
            Self::Buy(c) => c.decide(work).map_err(refused),
            Self::Subscription(c) => c.decide(work).map(drop).map_err(refused),
            Self::Block(c) => c.decide(work).map_err(refused),
        }
    }

    async fn write(
        &self,
        txn: &switchboard::db::WriteTxn,
        _output: &mut (),
        events: &[RecordedEvent],
    ) -> Result<(), CommandError<Refused>> {
        match self {
            Self::Block(c) => c
                .write(txn, &mut (), events)
                .await
                .map_err(|e| e.map_domain(refused)),
            _ => Ok(()),
        }
    }
}

fn rub() -> Currency {
    Currency::parse("RUB").unwrap()
}

/// A payment's amount follows from its number, so a refund can name it.
fn paid(payment: u8) -> Amount {
    Amount::parse(500 + 250 * i64::from(payment)).unwrap()
}

fn command(ids: Ids, n: usize, op: &Op) -> Any {
    let step = ids.step(n);
    let now =
        Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap() + chrono::Duration::hours(n as i64);
    match *op {
        Op::Register { user, referrer } => {
            let user_id = ids.user(user);
            Any::Register(Register {
                created: UserCreated {
                    user_id,
                    source: Source::Admin,
                    telegram: None,
                    email: Some(format!("u{user}-{}@example.com", ids.case)),
                    language_code: None,
                    referral_code: Some(UserCreated::referral_code_for(user_id)),
                    referred_by: referrer.filter(|r| *r != user).map(|r| ids.user(r)),
                    telegram_chat_id: None,
                },
            })
        }
        Op::Open { user, ticket } => {
            let ticket_id = ids.ticket(user, ticket);
            Any::Ticket(Decide::new(
                ticket_id,
                TicketCommand::Open {
                    ticket_id,
                    user_id: ids.user(user),
                    subject: format!("subject {n}"),
                    text: format!("first {n}"),
                    message_id: MessageId::from_uuid(step),
                    channel: Channel::Cabinet,
                    media: Vec::new(),
                },
            ))
        }
        Op::Write { user, ticket } => Any::Ticket(Decide::new(
            ids.ticket(user, ticket),
            TicketCommand::AddUserMessage {
                user_id: ids.user(user),
                message_id: MessageId::from_uuid(step),
                text: format!("message {n}"),
                channel: Channel::Cabinet,
                media: Vec::new(),
            },
        )),
        Op::Reply { ticket } => Any::Ticket(Decide::new(
            ids.ticket(ticket % 2, ticket),
            TicketCommand::Reply {
                admin_id: "operator".into(),
                message_id: MessageId::from_uuid(step),
                text: format!("reply {n}"),
                channel: Channel::Admin,
            },
        )),
        Op::SetStatus { ticket, status } => Any::Ticket(Decide::new(
            ids.ticket(ticket % 2, ticket),
            TicketCommand::ChangeStatus(
                [
                    Status::Open,
                    Status::Answered,
                    Status::Pending,
                    Status::Closed,
                ][status as usize],
            ),
        )),
        Op::SetPriority { ticket, priority } => Any::Ticket(Decide::new(
            ids.ticket(ticket % 2, ticket),
            TicketCommand::ChangePriority(
                [
                    Priority::Low,
                    Priority::Normal,
                    Priority::High,
                    Priority::Urgent,
                ][priority as usize],
            ),
        )),
        Op::Pay {
            user,
            payment,
            fail,
        } => Any::Pay(RecordPayment::new(
            PaymentIn {
                user_id: ids.user(user),
                amount: paid(payment),
                currency: rub(),
                provider: "test".into(),
                external_id: format!("{}-{user}-{payment}", ids.case),
                failure: fail.then(|| "declined".to_owned()),
                description: None,
            },
            10,
        )),
        Op::Refund { user, payment } => Any::Refund(Refund {
            payment_id: payment_id("test", &format!("{}-{user}-{payment}", ids.case)),
            user_id: ids.user(user),
            amount: paid(payment),
            currency: rub(),
            reason: format!("refund {n}"),
        }),
        Op::Withdraw { user, amount } => Any::Entry(Decide::new(
            Balance::key(ids.user(user), &rub()),
            Entry {
                transaction_id: TransactionId::from_uuid(step),
                user_id: ids.user(user),
                currency: rub(),
                kind: TransactionKind::Withdrawal,
                amount: Amount::parse(i64::from(amount)).unwrap(),
                reference: None,
                description: Some(format!("withdrawal {n}")),
            },
        )),
        Op::Buy { user, renewal } => Any::Buy(Buy {
            user_id: ids.user(user),
            transaction_id: TransactionId::from_uuid(step),
            plan: PlanTerms {
                plan_id: "monthly".into(),
                days: 30,
                price: 1200,
                currency: "RUB".into(),
            },
            description: "Monthly (30 days)".into(),
            renewal,
            now,
            amount: Amount::parse(1200).unwrap(),
            currency: rub(),
        }),
        Op::Cancel { user } => Any::Subscription(Decide::new(
            ids.user(user),
            SubscriptionCommand::Cancel {
                user_id: ids.user(user),
            },
        )),
        Op::Block { user } => Any::Block(BlockUser {
            user_id: ids.user(user),
            reason: format!("block {n}"),
        }),
        Op::Unblock { user } => Any::User(Decide::new(ids.user(user), UserCommand::Unblock)),
    }
}

/// A database for one run: the fast one with the fast read models and
/// states remembered between groups, the plain one with the plain read
/// models and every aggregate read from the database each time.
async fn runner(config: &DatabaseConfig, fast: bool) -> Commands {
    let db = Db::connect(config).await.unwrap();
    db.migrate().await.unwrap();
    if fast {
        Commands::new(EventStore::with_projections(db, Projections::default()))
    } else {
        Commands::reading_every_time(EventStore::with_projections(db, Projections::plain()))
    }
}

/// What a scenario did: each command's outcome, as text, and the streams
/// it wrote.
struct Played {
    outcomes: Vec<String>,
    streams: std::collections::BTreeSet<switchboard::events::StreamName>,
}

/// Runs a scenario: each group queued at once, one group after another.
async fn play(commands: &Commands, ids: Ids, groups: &[Vec<Op>]) -> Played {
    let mut played = Played {
        outcomes: Vec::new(),
        streams: Default::default(),
    };
    let mut n = 0;
    for group in groups {
        let batch: Vec<Any> = group
            .iter()
            .map(|op| {
                n += 1;
                command(ids, n, op)
            })
            .collect();
        let actor = Actor::new(ActorKind::Admin, "scenario");
        for answer in commands.run_all(batch, actor).await {
            played.outcomes.push(match answer {
                Ok(done) => {
                    played
                        .streams
                        .extend(done.events.iter().map(|e| e.stream.clone()));
                    format!("ok: {} events", done.events.len())
                }
                Err(CommandError::Domain(e)) => format!("refused: {e}"),
                // The one open ticket per user, kept by the read model.
                Err(e) if e.is_unique_violation() => {
                    "refused: a read model's unique key".to_owned()
                }
                Err(e) => format!("failed: {e}"),
            });
        }
    }
    played
}

/// These streams' events: versions, types, payloads and actors (positions
/// and times differ from run to run).
async fn log_of(
    store: &EventStore,
    streams: &std::collections::BTreeSet<switchboard::events::StreamName>,
) -> BTreeMap<String, Vec<Value>> {
    let mut log = BTreeMap::new();
    for stream in streams {
        let events = store.read_stream(stream).await.unwrap();
        log.insert(
            stream.as_str().to_owned(),
            events
                .iter()
                .map(|e| {
                    json!({
                        "version": e.version,
                        "type": e.event_type.as_str(),
                        "payload": e.payload,
                        "actor": e.actor,
                    })
                })
                .collect::<Vec<_>>(),
        );
    }
    log
}

fn same_database(db: &TestDb) -> Kind {
    match db.config {
        DatabaseConfig::Sqlite { .. } => Kind::Sqlite,
        DatabaseConfig::Postgres { .. } => Kind::Postgres,
    }
}

both_backends! {
    async fn random_commands_give_the_same_log_and_read_models_with_plain_and_fast_implementations(db) {
        // Keeps both cores busy for a while: not beside a test that measures time.
        let _exclusive = crate::helpers::EXCLUSIVE_POSTGRES.lock().await;
        let other = TestDb::new(same_database(&db)).await;
        let fast = runner(&db.config, true).await;
        let plain = runner(&other.config, false).await;
        let handle = tokio::runtime::Handle::current();
        let mut cases = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 32,
            failure_persistence: None,
            ..Default::default()
        });
        let result = cases.run(&scenario(), |groups| {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let ids = Ids { case: rand::random() };
                    let fast_run = play(&fast, ids, &groups).await;
                    let plain_run = play(&plain, ids, &groups).await;
                    let failed: Vec<&String> = fast_run.outcomes.iter().chain(&plain_run.outcomes).filter(|o| o.starts_with("failed")).collect();
                    prop_assert!(failed.is_empty(), "{:?}", failed);
                    prop_assert_eq!(&fast_run.outcomes, &plain_run.outcomes);
                    prop_assert_eq!(&fast_run.streams, &plain_run.streams);
                    let fast_log = log_of(fast.store(), &fast_run.streams).await;
                    let plain_log = log_of(plain.store(), &plain_run.streams).await;
                    prop_assert_eq!(fast_log, plain_log);
                    // What the fast implementations wrote is what the plain
                    // ones make of the same log.
                    let conn = fast.store().db().conn();
                    let live = switchboard::projections::rebuild::dump(conn).await.unwrap();
                    let replay = EventStore::with_projections(fast.store().db().clone(), Projections::plain());
                    switchboard::projections::rebuild::rebuild(&replay).await.unwrap();
                    let rebuilt = switchboard::projections::rebuild::dump(conn).await.unwrap();
                    prop_assert_eq!(live, rebuilt);
                    Ok(())
                })
            })
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

both_backends! {
    async fn a_stored_event_that_does_not_decode_fails_its_command_and_stops_a_rebuild(db) {
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("o@example.com", switchboard::auth::Role::Owner).await;
        let user = crate::tickets::cabinet_user(&app, 1).await;
        let id = crate::ledger::user_id(&app, &user.access_token).await;
        // A `user.updated` whose payload lost its shape, stored around the
        // store (as an older version's event after a change would be).
        let stream = format!("user:{id}");
        let event_id = uuid::Uuid::now_v7();
        let payload = json!({"user_id": 42});
        let (sql, values): (&str, Vec<sea_orm::Value>) = match db.config {
            DatabaseConfig::Postgres { .. } => (
                "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
                 VALUES ($1, $2, 2, 'user.updated', $3, '{\"kind\":\"system\"}', now())",
                vec![event_id.into(), stream.clone().into(), payload.into()],
            ),
            DatabaseConfig::Sqlite { .. } => (
                "INSERT INTO events (id, stream, version, type, payload, actor, occurred_at) \
                 VALUES (?1, ?2, 2, 'user.updated', ?3, '{\"kind\":\"system\"}', '2026-12-01T00:00:00.000000Z')",
                vec![event_id.to_string().into(), stream.clone().into(), payload.to_string().into()],
            ),
        };
        app.state
            .db
            .conn()
            .execute_raw(sea_orm::Statement::from_sql_and_values(app.state.db.database_backend(), sql, values))
            .await
            .unwrap();
        let block = app
            .post(&format!("/api/v1/admin/users/{id}/block"), Some(&admin.access_token), json!({"reason": "spam"}))
            .await;
        assert_problem(block, 500, "internal").await;
        let logged = crate::helpers::captured_logs();
        assert!(
            logged.contains("user.updated") && logged.contains(&format!("{stream} v2")),
            "the log line names the event: {logged}"
        );
        // Nothing was written.
        assert_eq!(app.state.store.read_stream(&switchboard::events::StreamName::parse(&stream).unwrap()).await.unwrap().len(), 2);
        let err = switchboard::projections::rebuild::rebuild(&app.state.store).await.unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("user.updated") && message.contains("cannot be read"), "{message}");
        // The read models are as they were: the rebuild changed nothing.
        let users: Value = app.get_with("/api/v1/admin/users", &admin.access_token).await.json().await.unwrap();
        assert_eq!(users["total"], 1);
        app.stop().await;
    }
}

both_backends! {
    async fn callbacks_for_one_balance_arriving_together_all_land_in_turn(db) {
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("o@example.com", switchboard::auth::Role::Owner).await;
        let user = crate::tickets::cabinet_user(&app, 1).await;
        let id = crate::ledger::user_id(&app, &user.access_token).await;
        let callbacks: Vec<_> = (0..60)
            .map(|n| {
                let request = app
                    .client
                    .post(format!("{}/api/v1/admin/payments", app.address))
                    .bearer_auth(&admin.access_token)
                    .json(&json!({
                        "user_id": id, "amount": 100, "currency": "RUB",
                        "provider": "load", "external_id": format!("p{n}"), "status": "completed",
                    }));
                tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
            })
            .collect();
        for callback in callbacks {
            assert_eq!(callback.await.unwrap(), 201);
        }
        let balance: Value = app.get_with("/api/v1/cabinet/balance", &user.access_token).await.json().await.unwrap();
        assert_eq!(balance[0]["balance"], 6000, "{balance}");
        let stream = switchboard::events::StreamName::parse(&format!("balance:{id}:RUB")).unwrap();
        let versions: Vec<u32> = app.state.store.read_stream(&stream).await.unwrap().iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=60).collect::<Vec<_>>());
        app.stop().await;
    }
}

both_backends! {
    async fn a_malformed_id_in_a_path_is_a_404_naming_what_is_not_there(db) {
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("o@example.com", switchboard::auth::Role::Owner).await;
        let user = crate::tickets::cabinet_user(&app, 1).await;
        let token = admin.access_token.as_str();
        let endpoint = uuid::Uuid::now_v7();
        for (method, path, caller, noun) in [
            (reqwest::Method::GET, "/api/v1/admin/tickets/not-an-id".to_owned(), token, "ticket"),
            (reqwest::Method::GET, "/api/v1/admin/users/42".to_owned(), token, "user"),
            (reqwest::Method::GET, "/api/v1/admin/users/42/ledger".to_owned(), token, "user"),
            (reqwest::Method::POST, "/api/v1/admin/payments/x/refund".to_owned(), token, "payment"),
            (reqwest::Method::GET, "/api/v1/admin/webhooks/x".to_owned(), token, "webhook"),
            (reqwest::Method::DELETE, "/api/v1/admin/api-keys/x".to_owned(), token, "api key"),
            (reqwest::Method::POST, format!("/api/v1/admin/webhooks/{endpoint}/deliveries/x/resend"), token, "delivery"),
            (reqwest::Method::GET, "/api/v1/cabinet/tickets/x".to_owned(), user.access_token.as_str(), "ticket"),
        ] {
            let response = app.request(method, &path, Some(caller), Some(json!({"reason": "r"}))).await;
            let problem = assert_problem(response, 404, "not_found").await;
            assert_eq!(problem["detail"], format!("no such {noun}"), "{path}");
        }
        app.stop().await;
    }
}

both_backends! {
    async fn a_nul_character_anywhere_is_a_422_naming_the_field(db) {
        let app = TestApp::spawn(&db).await;
        let admin = app.admin_with_role("o@example.com", switchboard::auth::Role::Owner).await;
        let user = crate::tickets::cabinet_user(&app, 1).await;
        let id = crate::ledger::user_id(&app, &user.access_token).await;
        let nul = "a\u{0}b";
        let admin_token = admin.access_token.as_str();
        let user_token = user.access_token.as_str();
        for (method, path, token, body, field) in [
            (reqwest::Method::POST, "/api/v1/cabinet/tickets".to_owned(), user_token, json!({"subject": nul, "text": "x"}), "subject"),
            (reqwest::Method::POST, "/api/v1/cabinet/tickets".to_owned(), user_token, json!({"subject": "s", "text": nul}), "text"),
            (reqwest::Method::PATCH, format!("/api/v1/admin/users/{id}"), admin_token, json!({"first_name": nul}), "first_name"),
            (reqwest::Method::POST, format!("/api/v1/admin/users/{id}/top-up"), admin_token, json!({"amount": 100, "currency": "RUB", "reason": nul}), "reason"),
            (reqwest::Method::POST, "/api/v1/admin/payments".to_owned(), admin_token, json!({"user_id": id, "amount": 100, "currency": "RUB", "provider": nul, "external_id": "e", "status": "completed"}), "provider"),
            (reqwest::Method::POST, "/api/v1/admin/payments".to_owned(), admin_token, json!({"user_id": id, "amount": 100, "currency": "RUB", "provider": "p", "external_id": nul, "status": "completed"}), "external_id"),
        ] {
            let response = app.request(method, &path, Some(token), Some(body)).await;
            let problem = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{path}");
        }
        for (path, field) in [
            ("/api/v1/admin/payments?status=a%00b", "status"),
            ("/api/v1/admin/users?q=%00", "q"),
            ("/api/v1/admin/subscriptions?status=%00", "status"),
        ] {
            let response = app.get_with(path, admin_token).await;
            let problem = assert_problem(response, 422, "invalid_field").await;
            assert_eq!(problem["field"], field, "{path}");
        }
        // Nothing was written.
        let tickets: Value = app.get_with("/api/v1/cabinet/tickets", user_token).await.json().await.unwrap();
        assert_eq!(tickets["total"], 0);
        app.stop().await;
    }
}

/// A ticket that opens while another of its user's tickets is being closed
/// waits for the close before it has a transaction id, so the log orders it
/// after the close (as it happened) and a replay in log order opens it
/// without breaking the one-open-ticket key.
#[cfg(postgres_tests)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opening_behind_its_users_closing_one_comes_after_it_in_the_log() {
    let db = TestDb::new(Kind::Postgres).await;
    let commands = runner(&db.config, true).await;
    let store = commands.store().clone();
    let actor = || Actor::new(ActorKind::Admin, "scenario");
    let user = UserId::new();
    let open = move |ticket: TicketId| {
        Decide::<Ticket>::new(
            ticket,
            TicketCommand::Open {
                ticket_id: ticket,
                user_id: user,
                subject: "s".into(),
                text: "t".into(),
                message_id: MessageId::new(),
                channel: Channel::Cabinet,
                media: Vec::new(),
            },
        )
    };
    let first = TicketId::new();
    commands.run(open(first), actor()).await.unwrap();
    // The close, written and not committed yet.
    let txn = store.db().begin_write().await.unwrap();
    let close = switchboard::events::Append::new(
        <Ticket as switchboard::domain::Aggregate>::stream(first),
        switchboard::events::ExpectedVersion::at(2),
        vec![switchboard::domain::DomainEvent::to_new_event(
            &switchboard::tickets::domain::TicketEvent::StatusChanged {
                ticket_id: first,
                user_id: user,
                old_status: Status::Open,
                new_status: Status::Closed,
            },
            actor(),
        )],
    );
    store.append(vec![close], Some(&txn)).await.unwrap();
    let second = TicketId::new();
    let opening = {
        let commands = commands.clone();
        tokio::spawn(async move { commands.run(open(second), actor()).await.map(|_| ()) })
    };
    // The opening waits, and holds no transaction id while it does.
    let conn = store.db().conn();
    let mut waiting = None;
    for _ in 0..100 {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT backend_xid IS NULL AS no_xid FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            ))
            .await
            .unwrap();
        if let Some(row) = row {
            waiting = Some(row.try_get::<bool>("", "no_xid").unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        waiting,
        Some(true),
        "the opening waits without a transaction id"
    );
    assert!(!opening.is_finished());
    txn.commit().await.unwrap();
    opening.await.unwrap().unwrap();
    // The log as readers see it once nothing older is still running (a
    // transaction of another test's may hold it back a moment).
    let mut page = store
        .read_all(switchboard::events::Cursor::START, 100)
        .await
        .unwrap();
    for _ in 0..100 {
        if !page.pending && page.events.len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        page = store
            .read_all(switchboard::events::Cursor::START, 100)
            .await
            .unwrap();
    }
    let types: Vec<(String, String)> = page
        .events
        .iter()
        .map(|e| {
            (
                e.stream.as_str().to_owned(),
                e.event_type.as_str().to_owned(),
            )
        })
        .collect();
    let closed = types
        .iter()
        .position(|(_, t)| t == "ticket.status_changed")
        .unwrap();
    let reopened = types
        .iter()
        .rposition(|(s, t)| {
            t == "ticket.created"
                && s == <Ticket as switchboard::domain::Aggregate>::stream(second).as_str()
        })
        .unwrap();
    assert!(closed < reopened, "{types:?}");
    let replay = EventStore::with_projections(store.db().clone(), Projections::plain());
    switchboard::projections::rebuild::rebuild(&replay)
        .await
        .unwrap();
}
