//! `POST /telegram/webhook`: updates from Telegram. The secret Telegram
//! echoes (`X-Telegram-Bot-Api-Secret-Token`) is checked in constant time;
//! an update is stored (one row per `update_id`) before Telegram hears
//! 200, so an update Telegram was told about is never lost, even when the
//! process dies right after answering. A processor then records each
//! stored update in the log once, marking it processed in the same
//! transaction; a crash in between leaves it to be recorded again, which
//! the log refuses (its stream exists), so it is marked then.

use std::{sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, post, web};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Statement, Value as DbValue,
};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    bot_api::{Answer, BotApi},
    domain::{TelegramEvent, Update, UpdateCommand, UpdateError, redacted},
    stars::Invoice,
    updates::{self, Incoming},
};
use crate::{
    app::AppState,
    config::Plan,
    db::{Db, WriteTxn, entities::ticket},
    domain::{Command, CommandError, Commands, DomainError, Refusal, Target, Work},
    error::{ApiError, Problem},
    events::{Actor, ActorKind, RecordedEvent},
    helpdesk::{self, Outgoing, Profile, store::VisitorRow},
    ids::TransactionId,
    ids::{MessageId, TicketId, UserId},
    ledger::{
        domain::{Amount, Currency, MoneyError},
        service::{PaymentIn, RecordPayment, Recorded},
    },
    referrals::{self, ReferralError, Referrals},
    settings::{Helpdesk, Settings},
    subscriptions::domain::{Buy, BuyError, PlanTerms},
    tickets::domain::{Channel, Status, Ticket, TicketCommand, TicketError},
    users::{
        UserCommand, UserError, UserState,
        domain::{Source, UserCreated},
        service::find_by_telegram_id,
    },
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(webhook);
}

/// The header Telegram sends the webhook's secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Updates recorded per pass, at most.
const BATCH: i64 = 100;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn statement(db: &Db, text: &str, values: Vec<DbValue>) -> Statement {
    db.statement(text, values)
}

/// An update from Telegram (the Bot API's `setWebhook` with `secret_token`).
#[utoipa::path(tag = "telegram", request_body(content = Object, description = "A Bot API `Update`"), responses((status = 200, description = "stored; it is recorded in the log once"), (status = 400), (status = 401, description = "a missing or wrong `X-Telegram-Bot-Api-Secret-Token`"), (status = 404, description = "the webhook is off (no `SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET`)"), (status = 413), (status = 422)), params(("X-Telegram-Bot-Api-Secret-Token" = String, Header, description = "the configured webhook secret")))]
#[post("/telegram/webhook")]
#[tracing::instrument(skip_all)]
pub async fn webhook(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = &state.config.telegram.webhook_secret else {
        return Err(Problem::not_found()
            .detail("the Telegram webhook is off: set SWITCHBOARD_TELEGRAM_WEBHOOK_SECRET")
            .into());
    };
    let given = request
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !crate::auth::secret_matches(given, secret.expose_secret()) {
        return Err(
            Problem::unauthorized("a missing or wrong X-Telegram-Bot-Api-Secret-Token").into(),
        );
    }
    let update: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            .detail(e.to_string())
    })?;
    let update_id = update.get("update_id").and_then(Value::as_i64);
    let Some(update_id) = update_id.filter(|_| updates::is_update(&update)) else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid request body",
        )
        .detail("not a Bot API Update: an object with an `update_id` (0 to 4294967295)")
        .into());
    };
    let stored = store(&state.db, update_id, &update).await?;
    if stored {
        state.telegram.updates.notify_one();
    } else {
        tracing::debug!(update_id, "a Telegram update arrived again");
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"ok": true})))
}

/// Stores an update unless it is stored already (false then).
pub(super) async fn store(db: &Db, update_id: i64, update: &Value) -> Result<bool, DbErr> {
    let stmt = statement(
        db,
        "INSERT INTO telegram_updates (update_id, body, received_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (update_id) DO NOTHING",
        vec![update_id.into(), update.to_string().into(), now_ms().into()],
    );
    let result = db
        .write_once(async |conn| conn.execute_raw(stmt).await)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Stored updates not recorded yet, oldest first.
async fn waiting(db: &Db) -> Result<Vec<(i64, String)>, DbErr> {
    let rows = db
        .conn()
        .query_all_raw(statement(
            db,
            "SELECT update_id, body FROM telegram_updates WHERE processed_at_ms IS NULL \
             ORDER BY update_id LIMIT $1",
            vec![BATCH.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "update_id")?, row.try_get("", "body")?)))
        .collect()
}

/// Marks an update processed; with `erase`, keeping nothing of it but its
/// id (texts are not kept).
async fn mark_processed(
    conn: &impl ConnectionTrait,
    db: &Db,
    update_id: i64,
    erase: bool,
) -> Result<(), DbErr> {
    let body = erase.then(|| serde_json::json!({"update_id": update_id}).to_string());
    conn.execute_raw(statement(
        db,
        "UPDATE telegram_updates SET processed_at_ms = $2, body = COALESCE($3, body) \
         WHERE update_id = $1 AND processed_at_ms IS NULL",
        vec![update_id.into(), now_ms().into(), body.into()],
    ))
    .await?;
    Ok(())
}

/// Why an update's command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error(transparent)]
    Referral(#[from] ReferralError),
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error(transparent)]
    Buy(#[from] BuyError),
}

impl DomainError for IntakeError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Update(e) => e.refusal(),
            Self::User(e) => e.refusal(),
            Self::Ticket(e) => e.refusal(),
            Self::Referral(e) => e.refusal(),
            Self::Money(e) => e.refusal(),
            Self::Buy(e) => e.refusal(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Update(e) => e.code(),
            Self::User(e) => e.code(),
            Self::Ticket(e) => e.code(),
            Self::Referral(e) => e.code(),
            Self::Money(e) => e.code(),
            Self::Buy(e) => e.code(),
        }
    }
}

/// Records one stored update in the log as what it means, and marks it
/// processed, together: a private message is `telegram.message_received`
/// (its user created on first contact, their chat recorded) and, with
/// support on, a message in the user's open ticket; a user blocking or
/// allowing the bot is `user.bot_blocked` / `user.bot_unblocked`; anything
/// else is `telegram.update_received`, raw.
#[derive(Clone)]
struct ProcessUpdate {
    db: Db,
    update_id: i64,
    raw: Value,
    incoming: Incoming,
    support: bool,
    /// Looked up: the user the update is from, if Switchboard knows them.
    user: Option<UserId>,
    /// The id a new user gets.
    new_user: UserId,
    referrer: Option<UserId>,
    /// Looked up: the user's open ticket.
    open_ticket: Option<TicketId>,
    /// The id a new ticket gets.
    new_ticket: TicketId,
    /// The helpdesk bridge is on: private messages are relayed to it.
    helpdesk: Option<Relaying>,
    /// Looked up: the user's open helpdesk visitor.
    visitor: Option<VisitorRow>,
    /// Looked up: an admin blocked the user (nothing of theirs is relayed).
    blocked: bool,
    /// The id a new visitor gets.
    new_visitor: String,
}

/// How the helpdesk bridge relays messages.
#[derive(Debug, Clone, Copy)]
pub struct Relaying {
    /// Message texts are kept (else the log and the tables keep none).
    pub store_text: bool,
}

impl ProcessUpdate {
    fn new(
        db: Db,
        update_id: i64,
        raw: Value,
        incoming: Incoming,
        support: bool,
        helpdesk: Option<Relaying>,
    ) -> Self {
        Self {
            db,
            update_id,
            raw,
            incoming,
            support,
            user: None,
            new_user: UserId::new(),
            referrer: None,
            open_ticket: None,
            new_ticket: TicketId::new(),
            helpdesk,
            visitor: None,
            blocked: false,
            new_visitor: uuid::Uuid::now_v7().to_string(),
        }
    }

    /// Message texts are kept.
    fn keeps_text(&self) -> bool {
        self.helpdesk.is_none_or(|h| h.store_text)
    }

    /// The message goes to a ticket (not when texts are not kept).
    fn to_ticket(&self) -> bool {
        matches!(&self.incoming, Incoming::Message(m)
            if self.support && self.keeps_text() && !m.command && !m.ticket_text.is_empty())
    }

    /// The message goes to the helpdesk.
    fn to_helpdesk(&self) -> bool {
        matches!(&self.incoming, Incoming::Message(m)
            if self.helpdesk.is_some() && !m.command && !m.ticket_text.is_empty())
    }

    /// Relays the message to the helpdesk, through `conn`: for the user's
    /// open visitor, or a new one.
    async fn relay(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        let Incoming::Message(message) = &self.incoming else {
            return Ok(());
        };
        if !self.to_helpdesk() || self.blocked {
            return Ok(());
        }
        let user = self.user.unwrap_or(self.new_user);
        let event = message.event(user);
        let at = now_ms();
        let visitor_id = match &self.visitor {
            Some(visitor) => visitor.visitor_id.clone(),
            None => {
                let visitor = VisitorRow {
                    visitor_id: self.new_visitor.clone(),
                    user_id: user,
                    telegram_chat_id: message.chat_id,
                    chat_id: None,
                    open: true,
                };
                helpdesk::store::create_visitor(conn, &self.db, &visitor, at).await?;
                visitor.visitor_id
            }
        };
        let profile = &message.profile;
        let name = [profile.first_name.as_deref(), profile.last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let out = Outgoing {
            message_id: format!("tg:{}:{}", message.chat_id, event.message_id),
            visitor_id,
            text: message.ticket_text.clone(),
            created_at: chrono::DateTime::from_timestamp(event.date, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            user: Profile {
                telegram_id: profile.telegram_id,
                name: Some(name).filter(|n| !n.is_empty()),
                username: profile.username.clone(),
            },
        };
        helpdesk::store::enqueue(conn, &self.db, &out, user, at).await
    }
}

impl Command for ProcessUpdate {
    type Output = ();
    type Error = IntakeError;

    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<IntakeError>> {
        let telegram_id = match &self.incoming {
            Incoming::Message(m) => m.profile.telegram_id,
            Incoming::BotBlocked { telegram_id, .. } => *telegram_id,
            _ => return Ok(()),
        };
        let row = find_by_telegram_id(conn, telegram_id).await?;
        self.blocked = row.as_ref().is_some_and(|row| row.status == "blocked");
        self.user = row.map(|row| UserId::from_uuid(row.id));
        self.visitor = match self.user {
            Some(user) if self.to_helpdesk() => {
                helpdesk::store::open_visitor(conn, &self.db, user).await?
            }
            _ => None,
        };
        self.referrer = match (&self.incoming, self.user) {
            (Incoming::Message(m), None) => {
                let code = m.start.as_ref().and_then(Option::as_deref);
                referrals::referrer(conn, code).await?
            }
            _ => None,
        };
        self.open_ticket = match self.user {
            Some(user) if self.to_ticket() => ticket::Entity::find()
                .filter(ticket::Column::UserId.eq(user.as_uuid()))
                .filter(ticket::Column::Status.ne(Status::Closed.as_str()))
                .one(conn)
                .await?
                .map(|row| TicketId::from_uuid(row.id)),
            _ => None,
        };
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Update>(self.update_id)];
        match &self.incoming {
            Incoming::Message(_) => {
                targets.push(Target::of::<UserState>(self.user.unwrap_or(self.new_user)));
                targets.extend(self.referrer.map(Target::of::<Referrals>));
                if self.to_ticket() {
                    targets.extend(self.open_ticket.map(Target::of::<Ticket>));
                    targets.push(Target::of::<Ticket>(self.new_ticket));
                }
            }
            Incoming::BotBlocked { .. } => {
                targets.extend(self.user.map(Target::of::<UserState>));
            }
            _ => {}
        }
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), IntakeError> {
        let raw = || TelegramEvent::UpdateReceived {
            update_id: self.update_id,
            update: if self.keeps_text() {
                self.raw.clone()
            } else {
                redacted(&self.raw)
            },
        };
        match &self.incoming {
            Incoming::Message(message) => {
                let user = self.user.unwrap_or(self.new_user);
                let mut event = message.event(user);
                if !self.keeps_text() {
                    event.redact();
                }
                work.execute::<Update>(
                    self.update_id,
                    UpdateCommand::Record(TelegramEvent::MessageReceived(event)),
                )?;
                if self.user.is_none() {
                    let created = UserCreated {
                        user_id: user,
                        source: Source::Telegram,
                        telegram: Some(message.profile.clone()),
                        email: None,
                        language_code: message.profile.language_code.clone(),
                        referral_code: Some(UserCreated::referral_code_for(user)),
                        referred_by: self.referrer,
                        telegram_chat_id: Some(message.chat_id),
                    };
                    work.execute::<UserState>(user, UserCommand::Register(created))?;
                    if let Some(referrer) = self.referrer {
                        referrals::register(work, referrer, user)?;
                    }
                } else {
                    work.execute::<UserState>(user, UserCommand::LinkChat(message.chat_id))?;
                }
                // An update from a user an admin blocked opens no ticket.
                if !self.to_ticket() || work.state::<UserState>(user).blocked {
                    return Ok(());
                }
                let by_user = Actor::new(ActorKind::User, user);
                let text = message.ticket_text.clone();
                let open = self.open_ticket.filter(|t| {
                    !matches!(work.state::<Ticket>(t).status, None | Some(Status::Closed))
                });
                match open {
                    Some(ticket) => {
                        work.execute_as::<Ticket>(
                            by_user,
                            ticket,
                            TicketCommand::AddUserMessage {
                                user_id: user,
                                message_id: MessageId::new(),
                                text,
                                channel: Channel::Telegram,
                                media: message.media().to_vec(),
                            },
                        )?;
                    }
                    None => {
                        work.execute_as::<Ticket>(
                            by_user,
                            self.new_ticket,
                            TicketCommand::Open {
                                ticket_id: self.new_ticket,
                                user_id: user,
                                subject: subject_of(&text),
                                text,
                                message_id: MessageId::new(),
                                channel: Channel::Telegram,
                                media: message.media().to_vec(),
                            },
                        )?;
                    }
                }
            }
            Incoming::BotBlocked { blocked, .. } => {
                work.execute::<Update>(self.update_id, UpdateCommand::Record(raw()))?;
                if let Some(user) = self.user {
                    work.execute::<UserState>(user, UserCommand::SetBotBlocked(*blocked))?;
                }
            }
            _ => {
                work.execute::<Update>(self.update_id, UpdateCommand::Record(raw()))?;
            }
        }
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<IntakeError>> {
        mark_processed(&**txn, &self.db, self.update_id, !self.keeps_text()).await?;
        self.relay(&**txn).await?;
        Ok(())
    }
}

/// A Stars payment's update: the update recorded (raw), the payment
/// completed and the balance credited, and the plan it was for bought from
/// that balance, in one command; once per `telegram_payment_charge_id`.
struct PayWithStars {
    update: ProcessUpdate,
    payment: RecordPayment,
    buy: Option<Buy>,
}

impl Command for PayWithStars {
    type Output = ();
    type Error = IntakeError;

    fn writes(&self) -> bool {
        true
    }

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<IntakeError>> {
        self.payment
            .prepare(conn)
            .await
            .map_err(|e| e.map_domain(IntakeError::Money))
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = self.update.targets();
        targets.extend(self.payment.targets());
        targets.extend(self.buy.iter().flat_map(Command::targets));
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), IntakeError> {
        self.update.decide(work)?;
        let recorded = self.payment.decide(work)?;
        if recorded == Recorded::New
            && let Some(buy) = &self.buy
        {
            buy.decide(work)?;
        }
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        output: &mut (),
        events: &[RecordedEvent],
    ) -> Result<(), CommandError<IntakeError>> {
        self.update.write(txn, output, events).await
    }
}

/// What the update processor works with.
#[derive(Clone)]
pub struct Intake {
    pub db: Db,
    pub commands: Commands,
    /// Private messages go to tickets.
    pub support: bool,
    /// Answers pre-checkout queries (none without a bot token).
    pub api: Option<BotApi>,
    /// Stars invoice payloads are signed with it.
    pub payload_key: [u8; 32],
    pub referral_percent: u32,
    pub plans: Vec<Plan>,
    /// The helpdesk bridge's setting is read from them.
    pub settings: Settings,
    /// Woken when a message was queued for the helpdesk.
    pub helpdesk: Arc<Notify>,
}

impl Intake {
    pub fn new(
        config: &crate::config::Config,
        db: Db,
        commands: Commands,
        bridge: &super::Bridge,
        settings: Settings,
    ) -> Self {
        Self {
            db,
            commands,
            support: config.telegram.support,
            api: bridge.api.clone(),
            payload_key: bridge.payload_key,
            referral_percent: config.referral_percent,
            plans: config.plans.clone(),
            settings,
            helpdesk: bridge.helpdesk.clone(),
        }
    }

    /// How the helpdesk bridge relays messages now; `None` while it is off.
    async fn relaying(&self) -> Result<Option<Relaying>, crate::settings::SettingsError> {
        Ok(self
            .settings
            .get::<Helpdesk>()
            .await?
            .filter(|h| h.enabled)
            .map(|h| Relaying {
                store_text: h.store_text,
            }))
    }

    /// Answers a pre-checkout query: ok only for an invoice signed here,
    /// still valid, for the amount asked.
    async fn answer_pre_checkout(&self, query_id: &str, currency: &str, total: i64, payload: &str) {
        let Some(api) = &self.api else {
            return;
        };
        let refusal = match Invoice::verify(payload, &self.payload_key) {
            Some(invoice) => invoice.refusal(currency, total, chrono::Utc::now()),
            None => Some("This invoice was not issued by this bot."),
        };
        let mut params =
            serde_json::json!({"pre_checkout_query_id": query_id, "ok": refusal.is_none()});
        if let Some(reason) = refusal {
            tracing::info!(reason, "a Stars pre-checkout is refused");
            params["error_message"] = reason.into();
        }
        if let Answer::Done(_) = api.call("answerPreCheckoutQuery", &params).await {
            return;
        }
        tracing::warn!("cannot answer a Stars pre-checkout query");
    }

    /// The command of a Stars payment's update.
    fn stars_payment(
        &self,
        update: ProcessUpdate,
        charge_id: &str,
        currency: &str,
        total: i64,
        payload: &str,
    ) -> Option<PayWithStars> {
        let Some(invoice) = Invoice::verify(payload, &self.payload_key) else {
            tracing::error!(
                charge_id,
                "a Stars payment's payload was not signed here; recorded only as an update"
            );
            return None;
        };
        let (Ok(amount), Ok(currency)) = (Amount::parse(total), Currency::parse(currency)) else {
            tracing::error!(
                charge_id,
                total,
                currency,
                "a Stars payment's amount cannot be taken; recorded only as an update: credit it by hand"
            );
            return None;
        };
        let payment = RecordPayment::new(
            PaymentIn {
                user_id: invoice.user,
                amount,
                currency: currency.clone(),
                provider: "telegram_stars".into(),
                external_id: charge_id.to_owned(),
                failure: None,
                description: Some("Telegram Stars".into()),
            },
            self.referral_percent,
        );
        // The plan, if it is still sold for what was paid.
        let buy = invoice
            .plan
            .as_deref()
            .and_then(|id| self.plans.iter().find(|p| p.id == id))
            .filter(|plan| plan.price == total && plan.currency == currency.as_str())
            .map(|plan| Buy {
                user_id: invoice.user,
                transaction_id: TransactionId::from_uuid(uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    format!("telegram_stars:{charge_id}:plan").as_bytes(),
                )),
                plan: PlanTerms {
                    plan_id: plan.id.clone(),
                    days: plan.days,
                    price: plan.price,
                    currency: plan.currency.clone(),
                },
                description: format!("{} ({} days)", plan.name, plan.days),
                renewal: true,
                now: chrono::Utc::now(),
                amount,
                currency: currency.clone(),
            });
        Some(PayWithStars {
            update,
            payment,
            buy,
        })
    }
}

/// A ticket's subject from its first message: the first line, shortened.
fn subject_of(text: &str) -> String {
    const MAX: usize = 80;
    let line = text.lines().next().unwrap_or_default().trim();
    let mut subject: String = line.chars().take(MAX).collect();
    if line.chars().count() > MAX {
        subject.push('…');
    }
    if subject.is_empty() {
        "Telegram".to_owned()
    } else {
        subject
    }
}

/// Records stored updates in the log as they arrive (woken by the webhook;
/// every second too, for what another instance stored or a crash left),
/// until `shutdown`.
pub async fn run(intake: Intake, wake: Arc<Notify>, shutdown: CancellationToken) {
    let db = &intake.db;
    loop {
        match waiting(db).await {
            Ok(updates) => {
                let full = updates.len() as i64 == BATCH;
                // One lane per person, in update order; the lanes side by
                // side (the command runner groups what arrives together).
                let mut lanes: Vec<(i64, Vec<(i64, String)>)> = Vec::new();
                for (update_id, body) in updates {
                    let lane = lane_of(update_id, &body);
                    match lanes.iter_mut().find(|(l, _)| *l == lane) {
                        Some((_, updates)) => updates.push((update_id, body)),
                        None => lanes.push((lane, vec![(update_id, body)])),
                    }
                }
                let intake = &intake;
                let done =
                    futures::future::join_all(lanes.into_iter().map(|(_, lane)| async move {
                        let mut progressed = false;
                        // A person's later update waits for one that failed.
                        for (update_id, body) in lane {
                            if !record(intake, update_id, &body).await {
                                break;
                            }
                            progressed = true;
                        }
                        progressed
                    }))
                    .await;
                let progressed = done.into_iter().any(|p| p);
                // Only while it gets on: a batch that failed whole (the
                // database away) waits like an empty one.
                if full && progressed {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the stored Telegram updates"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Whose update it is, for keeping one person's updates in order: their
/// Telegram id, else the update's own.
fn lane_of(update_id: i64, body: &str) -> i64 {
    let Ok(raw) = serde_json::from_str::<Value>(body) else {
        return -update_id;
    };
    [
        "message",
        "edited_message",
        "my_chat_member",
        "callback_query",
        "pre_checkout_query",
    ]
    .iter()
    .find_map(|kind| raw[*kind]["from"]["id"].as_i64())
    .unwrap_or(-update_id)
}

/// Records one stored update; whether it is done with (recorded, or found
/// recorded already).
async fn record(intake: &Intake, update_id: i64, body: &str) -> bool {
    let (db, commands) = (&intake.db, &intake.commands);
    let raw = serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    // Stored only once it was read (nothing else writes the table), so
    // this is only ever an update as the Bot API's types read it.
    let incoming = updates::read(&raw).map_or(Incoming::Other, |(_, incoming)| incoming);
    if raw["message"]["successful_payment"].is_object()
        && !matches!(incoming, Incoming::Paid { .. })
    {
        tracing::error!(
            update_id,
            "a Stars payment's message cannot be read; it is recorded raw and credits nobody: credit it by hand"
        );
    }
    if let Incoming::PreCheckout {
        query_id,
        currency,
        total,
        payload,
    } = &incoming
    {
        // Before it is recorded: Telegram waits 10 s at most.
        intake
            .answer_pre_checkout(query_id, currency, *total, payload)
            .await;
    }
    let paid = match &incoming {
        Incoming::Paid {
            charge_id,
            currency,
            total,
            payload,
            ..
        } => Some((charge_id.clone(), currency.clone(), *total, payload.clone())),
        _ => None,
    };
    // Unread, the setting might have said to keep no text: the update waits.
    let relaying = match intake.relaying().await {
        Ok(relaying) => relaying,
        Err(e) => {
            tracing::warn!(update_id, error = %e, "cannot read the helpdesk setting; the update is tried again");
            return false;
        }
    };
    let command = ProcessUpdate::new(
        db.clone(),
        update_id,
        raw.clone(),
        incoming,
        intake.support,
        relaying,
    );
    let relayed = command.to_helpdesk();
    let actor = Actor::new(ActorKind::Telegram, "telegram");
    let ran = match paid.and_then(|(charge, currency, total, payload)| {
        intake.stars_payment(command.clone(), &charge, &currency, total, &payload)
    }) {
        Some(pay) => commands.run(pay, actor).await.map(|_| ()),
        None => commands.run(command, actor).await.map(|_| ()),
    };
    match ran {
        Ok(()) => {
            if relayed {
                intake.helpdesk.notify_one();
            }
            true
        }
        // Recorded before a crash kept it from being marked.
        Err(CommandError::Domain(IntakeError::Update(UpdateError::AlreadyRecorded))) => {
            let marked = db
                .write_once(async |conn| {
                    let erase = relaying.is_some_and(|r| !r.store_text);
                    mark_processed(conn, db, update_id, erase).await
                })
                .await;
            if let Err(e) = &marked {
                tracing::warn!(update_id, error = %e, "cannot mark a Telegram update processed");
            }
            marked.is_ok()
        }
        // Refused whatever the time: kept raw, so it is not tried forever.
        Err(CommandError::Domain(refused)) => {
            tracing::error!(update_id, error = %refused, "a Telegram update's command is refused; it is recorded raw");
            let raw_only =
                ProcessUpdate::new(db.clone(), update_id, raw, Incoming::Other, false, relaying);
            match commands
                .run(raw_only, Actor::new(ActorKind::Telegram, "telegram"))
                .await
            {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(update_id, error = %e, "cannot record a Telegram update");
                    false
                }
            }
        }
        Err(e) => {
            tracing::warn!(update_id, error = %e, "cannot record a Telegram update; it is tried again");
            false
        }
    }
}
