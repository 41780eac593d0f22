//! The sender: claims sends from the outbox in their turn
//! ([`outbox::claim`]), calls the Bot API, and records each outcome once
//! (`telegram.message_sent` / `telegram.send_failed`, the row's status in
//! the same transaction). A 429 waits its `retry_after`; a 5xx or a
//! request that never reached Telegram is tried again with backoff; an
//! answer that was lost is `unknown` and never sent again; a 403 from a
//! user who blocked the bot records `user.bot_blocked`, and that user is
//! sent nothing more until they allow the bot again.

use std::{sync::Arc, time::Duration};

use sea_orm::DbErr;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{
    bot_api::{Answer, BotApi},
    outbox::{self, Finished, Limits, SendRow, Skip},
    send::{Send, SendError, SendEvent, SendOf, Status},
};
use crate::{
    batch::{Batch, Gather},
    broadcasts::store::Delivery,
    db::{Db, WriteTxn},
    domain::{Command, CommandError, Commands, Target, Work},
    events::{Actor, RecordedEvent},
    ids::UserId,
    users::{UserCommand, UserError, UserState},
};

/// Attempts at a send Telegram could not take (5xx) or never got.
const MAX_ATTEMPTS: i32 = 5;

/// Calls in flight per instance, at most.
const IN_FLIGHT: usize = 128;

/// Sends claimed together, at most.
const BATCH: usize = 64;

/// How a send ended, for its outcome command.
#[derive(Debug, Clone)]
pub enum Ended {
    Sent(Value),
    Failed {
        error: String,
        code: Option<u16>,
        /// The user blocked the bot.
        blocked: bool,
    },
    Unknown(String),
    /// Not made, and why.
    Skipped(Skip),
}

/// Records sends' outcomes: each one's event, and with them, in one
/// statement each, the sends' rows and their broadcast recipients'. An
/// outcome recorded already (a lost send's, by another instance) is left
/// out; its output says which were recorded.
pub struct RecordOutcomes {
    db: Db,
    outcomes: Vec<(SendRow, Ended)>,
}

impl RecordOutcomes {
    pub fn new(db: Db, outcomes: Vec<(SendRow, Ended)>) -> Self {
        Self { db, outcomes }
    }
}

/// The user of a send that found the bot blocked.
fn blocked_user(send: &SendRow, ended: &Ended) -> Option<UserId> {
    match ended {
        Ended::Failed { blocked: true, .. } => send.user_id,
        _ => None,
    }
}

/// The event that records how `send` ended.
fn outcome_event(send: &SendRow, ended: &Ended) -> SendEvent {
    let of = SendOf {
        send_id: send.id.clone(),
        chat_id: send.chat_id,
        method: send.method.clone(),
        user_id: send.user_id,
        origin: send.origin.clone(),
        reference: send.reference.clone(),
    };
    match ended {
        Ended::Sent(result) => SendEvent::Sent {
            send: of,
            message_id: result.get("message_id").and_then(Value::as_i64),
        },
        Ended::Failed { error, code, .. } => SendEvent::Failed {
            send: of,
            status: Status::Failed,
            error: error.clone(),
            error_code: *code,
        },
        Ended::Unknown(error) => SendEvent::Failed {
            send: of,
            status: Status::Unknown,
            error: error.clone(),
            error_code: None,
        },
        Ended::Skipped(skip) => SendEvent::Failed {
            send: of,
            status: Status::Failed,
            error: skipped(*skip).into(),
            error_code: None,
        },
    }
}

impl Command for RecordOutcomes {
    /// Whether each outcome was recorded now, in order.
    type Output = Vec<bool>;
    type Error = UserError;

    fn writes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::with_capacity(self.outcomes.len());
        for (send, ended) in &self.outcomes {
            targets.push(Target::of::<Send>(&send.id));
            targets.extend(blocked_user(send, ended).map(Target::of::<UserState>));
        }
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<Vec<bool>, UserError> {
        let mut recorded = Vec::with_capacity(self.outcomes.len());
        for (send, ended) in &self.outcomes {
            match work.execute::<Send>(&send.id, outcome_event(send, ended)) {
                Ok(_) => {}
                Err(SendError::AlreadyRecorded) => {
                    recorded.push(false);
                    continue;
                }
            }
            if let Some(user) = blocked_user(send, ended)
                && work.state::<UserState>(user).id.is_some()
            {
                work.execute::<UserState>(user, UserCommand::SetBotBlocked(true))?;
            }
            recorded.push(true);
        }
        Ok(recorded)
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        recorded: &mut Vec<bool>,
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<UserError>> {
        let now: Vec<&(SendRow, Ended)> = self
            .outcomes
            .iter()
            .zip(recorded.iter())
            .filter_map(|(outcome, recorded)| recorded.then_some(outcome))
            .collect();
        let finished: Vec<Finished<'_>> = now
            .iter()
            .map(|(send, ended)| {
                let (status, result, error) = match ended {
                    Ended::Sent(result) => (Status::Sent, Some(result), None),
                    Ended::Failed { error, .. } => (Status::Failed, None, Some(error.as_str())),
                    Ended::Unknown(error) => (Status::Unknown, None, Some(error.as_str())),
                    Ended::Skipped(skip) => (Status::Failed, None, Some(skipped(*skip))),
                };
                Finished {
                    send,
                    status,
                    result,
                    error,
                }
            })
            .collect();
        outbox::finish(&**txn, &self.db, &finished).await?;
        let deliveries: Vec<(&str, Delivery, Option<&str>)> = finished
            .iter()
            .zip(&now)
            .filter(|(f, _)| f.send.origin == crate::broadcasts::ORIGIN)
            .map(|(f, (_, ended))| {
                let delivery = match ended {
                    Ended::Sent(_) => Delivery::Sent,
                    Ended::Failed { blocked: true, .. } | Ended::Skipped(Skip::Blocked) => {
                        Delivery::Blocked
                    }
                    Ended::Skipped(Skip::Cancelled) => Delivery::Cancelled,
                    Ended::Failed { .. } => Delivery::Failed,
                    Ended::Unknown(_) => Delivery::Unknown,
                };
                (f.send.id.as_str(), delivery, f.error)
            })
            .collect();
        crate::broadcasts::store::delivered(&**txn, &self.db, &deliveries).await?;
        Ok(())
    }
}

/// Why a send was not made, as its error says.
fn skipped(skip: Skip) -> &'static str {
    match skip {
        Skip::Blocked => "the user blocked the bot",
        Skip::Cancelled => "its broadcast was cancelled",
    }
}

/// Records outcomes in batches: sends that end while a batch is being
/// written make the next one, a single [`RecordOutcomes`] (one statement
/// for their rows) instead of a command each.
#[derive(Clone)]
pub struct Recorder {
    db: Db,
    commands: Commands,
    gather: Arc<Gather<Recorder>>,
}

impl Batch for Recorder {
    type Item = (SendRow, Ended);
    type Answer = Result<(), String>;
    type Key = ();

    async fn run(&self, outcomes: Vec<(SendRow, Ended)>) -> Vec<Result<(), String>> {
        let n = outcomes.len();
        let command = RecordOutcomes::new(self.db.clone(), outcomes);
        let answer = match self.commands.run(command, Actor::system()).await {
            Ok(_) => Ok(()),
            // Left `sending`: when its lease runs out it is `unknown`.
            Err(e) => Err(format!("{e} (with {n} outcomes in its batch)")),
        };
        vec![answer; n]
    }
}

impl Recorder {
    pub fn new(db: Db, commands: Commands) -> Self {
        Self {
            db,
            commands,
            gather: Arc::new(Gather::new(IN_FLIGHT, 2)),
        }
    }

    /// Records how `send` ended (with whatever else ends now).
    async fn record(&self, send: SendRow, ended: Ended) -> Result<(), String> {
        self.gather
            .submit(self, (send, ended))
            .await
            .map_err(|e| format!("recording the outcome was {e}"))?
    }
}

/// The sender of one instance.
pub struct Sender {
    pub db: Db,
    pub commands: Commands,
    pub api: BotApi,
    pub limits: Limits,
    /// How long a claimed send may take ([`outbox::lease`]).
    pub lease: Duration,
    /// Woken when a send is queued.
    pub wake: Arc<Notify>,
    /// Told when a send ended (waiting API callers listen).
    pub ended: Arc<Notify>,
    pub recorder: Recorder,
}

impl Sender {
    /// Sends until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut last_lost_check = tokio::time::Instant::now() - Duration::from_secs(60);
        loop {
            if last_lost_check.elapsed() > Duration::from_secs(5) {
                last_lost_check = tokio::time::Instant::now();
                this.record_lost().await;
            }
            // Wait for a free slot, then claim as many as are free.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let free = (in_flight.available_permits() + 1).min(BATCH);
            let pause = match outbox::claim(&this.db, &this.limits, free, this.lease).await {
                Ok(claimed) if !claimed.sends.is_empty() || !claimed.skipped.is_empty() => {
                    let mut permit = Some(permit);
                    for send in claimed.sends {
                        let Some(permit) = permit
                            .take()
                            .or_else(|| in_flight.clone().try_acquire_owned().ok())
                        else {
                            break;
                        };
                        let sender = this.clone();
                        tokio::spawn(async move {
                            sender.send(send).await;
                            drop(permit);
                        });
                    }
                    for (send, skip) in claimed.skipped {
                        this.record(send, Ended::Skipped(skip)).await;
                    }
                    continue;
                }
                Ok(claimed) => claimed.wait,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a Telegram send");
                    Some(Duration::from_secs(1))
                }
            };
            drop(permit);
            let pause = pause.unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = this.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn send(&self, send: SendRow) {
        // A turn taken a little early: its call leaves at its time.
        let early = send.turn_at_us - chrono::Utc::now().timestamp_micros();
        if let Ok(early) = u64::try_from(early) {
            tokio::time::sleep(Duration::from_micros(early)).await;
        }
        let uploads = if outbox::uploaded_fields(&send.params).is_empty() {
            Vec::new()
        } else {
            match outbox::uploads(&self.db, &send.id).await {
                Ok(uploads) => uploads,
                Err(e) => {
                    tracing::warn!(send = %send.id, error = %e, "cannot read a send's files");
                    self.requeue(&send, outbox::now_ms() + 1_000).await;
                    return;
                }
            }
        };
        let answer = self
            .api
            .call_with_files(&send.method, &send.params, uploads)
            .await;
        let retry = |attempts: i32| {
            // 1 s, 2 s, 4 s, 8 s.
            let wait = 1_000_i64 << (attempts - 1).clamp(0, 10);
            outbox::now_ms() + wait
        };
        let ended = match answer {
            Answer::Done(result) => Ended::Sent(result),
            Answer::RetryAfter(seconds) => {
                tracing::warn!(
                    chat_id = send.chat_id,
                    seconds,
                    "Telegram asked to wait (429)"
                );
                let wait = Duration::from_secs(seconds);
                if let Err(e) = outbox::retry_after(&self.db, &send, wait).await {
                    tracing::warn!(error = %e, "cannot put a Telegram send back in the queue");
                }
                return;
            }
            Answer::Refused {
                code,
                description,
                blocked,
            } => Ended::Failed {
                error: description,
                code: Some(code),
                blocked,
            },
            Answer::Unavailable { code, description } if send.attempts < MAX_ATTEMPTS => {
                tracing::warn!(code, %description, attempts = send.attempts, "Telegram could not take a send; it is tried again");
                self.requeue(&send, retry(send.attempts)).await;
                return;
            }
            Answer::NotReached(error) if send.attempts < MAX_ATTEMPTS => {
                tracing::warn!(%error, attempts = send.attempts, "a send did not reach Telegram; it is tried again");
                self.requeue(&send, retry(send.attempts)).await;
                return;
            }
            Answer::Unavailable { code, description } => Ended::Failed {
                error: description,
                code: Some(code),
                blocked: false,
            },
            Answer::NotReached(error) => Ended::Failed {
                error,
                code: None,
                blocked: false,
            },
            Answer::Lost(error) => Ended::Unknown(error),
        };
        self.record(send, ended).await;
    }

    async fn requeue(&self, send: &SendRow, due_at_ms: i64) {
        if let Err(e) = outbox::requeue(&self.db, &send.id, due_at_ms).await {
            tracing::warn!(error = %e, "cannot put a Telegram send back in the queue");
        }
    }

    async fn record(&self, send: SendRow, ended: Ended) {
        if let Err(e) = self.recorder.record(send, ended).await {
            tracing::warn!(error = %e, "cannot record a Telegram send's outcome");
        }
        self.ended.notify_waiters();
    }

    /// Sends whose instance stopped during the call: `unknown`.
    async fn record_lost(&self) {
        let lost = match outbox::lost(&self.db).await {
            Ok(lost) => lost,
            Err(e) => return warn_lost(&e),
        };
        for send in lost {
            let ended = Ended::Unknown(
                "the instance sending it stopped before Telegram's answer was recorded".into(),
            );
            self.record(send, ended).await;
        }
    }
}

fn warn_lost(e: &DbErr) {
    tracing::warn!(error = %e, "cannot look for lost Telegram sends");
}
