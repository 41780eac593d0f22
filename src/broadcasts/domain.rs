//! A broadcast as an aggregate (stream `broadcast:<id>`): created
//! (scheduled), started once with its audience resolved into recipients,
//! its progress told at most once a second, then completed or cancelled.
//! Each step is a command whose transaction also writes the broadcast's
//! rows: its recipients and their sends in the Telegram outbox when it
//! starts, their cancellation when it is cancelled.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::store::{self, BroadcastRow, Delivery, Recipient};
use crate::{
    db::{Db, WriteTxn},
    domain::{Aggregate, Command, CommandError, DomainError, DomainEvent, Refusal, Target, Work},
    events::RecordedEvent,
    telegram::outbox::{self, NewSend},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastStatus {
    /// Waiting for its `send_at`.
    Scheduled,
    Running,
    /// Every recipient's message ended (sent, failed, blocked or unknown).
    Completed,
    Cancelled,
    /// Ended with not one message sent.
    Failed,
}

impl BroadcastStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(Value::String(text.to_owned())).ok()
    }
}

/// How many recipients are in each state: they always add up to `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    pub total: i64,
    pub queued: i64,
    pub sent: i64,
    pub failed: i64,
    pub blocked: i64,
    pub unknown: i64,
    pub cancelled: i64,
}

impl Counts {
    pub fn add(&mut self, delivery: Delivery, n: i64) {
        let count = match delivery {
            Delivery::Queued => &mut self.queued,
            Delivery::Sent => &mut self.sent,
            Delivery::Failed => &mut self.failed,
            Delivery::Blocked => &mut self.blocked,
            Delivery::Unknown => &mut self.unknown,
            Delivery::Cancelled => &mut self.cancelled,
        };
        *count += n;
        self.total += n;
    }

    /// Recipients whose message ended one way or another.
    pub fn done(&self) -> i64 {
        self.sent + self.failed + self.blocked + self.unknown
    }
}

/// Users the audience named who get nothing, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeftOut {
    /// The bot cannot write to them: they never wrote to it.
    pub no_chat: i64,
    /// They blocked the bot.
    pub bot_blocked: i64,
    /// An admin blocked them.
    pub blocked: i64,
    /// Ids the audience listed that are no user's.
    pub not_found: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum BroadcastEvent {
    #[serde(rename = "broadcast.created")]
    Created {
        broadcast_id: String,
        /// The Bot API method each recipient's message is sent with.
        method: String,
        /// Its parameters, but the chat.
        params: Value,
        audience: Value,
        paid: bool,
        send_at: chrono::DateTime<chrono::Utc>,
    },
    #[serde(rename = "broadcast.started")]
    Started {
        broadcast_id: String,
        total: i64,
        left_out: LeftOut,
    },
    #[serde(rename = "broadcast.progress")]
    Progress {
        broadcast_id: String,
        #[serde(flatten)]
        counts: Counts,
        /// Messages ended a second since the start.
        rate: f64,
        at: chrono::DateTime<chrono::Utc>,
    },
    #[serde(rename = "broadcast.completed")]
    Completed {
        broadcast_id: String,
        /// `completed`, or `failed` when not one message was sent.
        status: BroadcastStatus,
        #[serde(flatten)]
        counts: Counts,
    },
    #[serde(rename = "broadcast.cancelled")]
    Cancelled { broadcast_id: String },
}

impl DomainEvent for BroadcastEvent {
    const TYPES: &'static [&'static str] = &[
        "broadcast.created",
        "broadcast.started",
        "broadcast.progress",
        "broadcast.completed",
        "broadcast.cancelled",
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    #[error("no such broadcast")]
    NotFound,
    #[error("this broadcast exists already")]
    Exists,
    #[error("this broadcast started already")]
    Started,
    #[error("this broadcast ended already")]
    Ended,
}

impl DomainError for BroadcastError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::NotFound => Refusal::NotFound,
            Self::Exists | Self::Started | Self::Ended => Refusal::Conflict,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::Exists => "conflict",
            Self::Started => "broadcast_started",
            Self::Ended => "broadcast_ended",
        }
    }
}

/// One broadcast's state, as its events left it.
#[derive(Debug, Clone, Default)]
pub struct Broadcast {
    id: String,
    pub status: Option<BroadcastStatus>,
    last_progress: Option<(chrono::DateTime<chrono::Utc>, Counts)>,
}

/// What a step asks of a broadcast.
#[derive(Debug, Clone)]
pub enum BroadcastCommand {
    Create(BroadcastEvent),
    Start {
        total: i64,
        left_out: LeftOut,
    },
    Progress {
        counts: Counts,
        rate: f64,
        at: chrono::DateTime<chrono::Utc>,
    },
    Complete {
        counts: Counts,
    },
    Cancel,
}

impl Aggregate for Broadcast {
    const CATEGORY: &'static str = "broadcast";
    type Event = BroadcastEvent;
    type Command = BroadcastCommand;
    type Error = BroadcastError;

    fn apply(&mut self, event: &BroadcastEvent) {
        match event {
            BroadcastEvent::Created { broadcast_id, .. } => {
                self.id.clone_from(broadcast_id);
                self.status = Some(BroadcastStatus::Scheduled);
            }
            BroadcastEvent::Started { .. } => self.status = Some(BroadcastStatus::Running),
            BroadcastEvent::Progress { counts, at, .. } => {
                self.last_progress = Some((*at, *counts))
            }
            BroadcastEvent::Completed { status, .. } => self.status = Some(*status),
            BroadcastEvent::Cancelled { .. } => self.status = Some(BroadcastStatus::Cancelled),
        }
    }

    fn decide(&self, command: BroadcastCommand) -> Result<Vec<BroadcastEvent>, BroadcastError> {
        use BroadcastStatus::{Running, Scheduled};
        let broadcast_id = self.id.clone();
        match (command, self.status) {
            (BroadcastCommand::Create(created), None) => Ok(vec![created]),
            (BroadcastCommand::Create(_), Some(_)) => Err(BroadcastError::Exists),
            (_, None) => Err(BroadcastError::NotFound),
            (BroadcastCommand::Start { .. }, Some(Running)) => Err(BroadcastError::Started),
            (BroadcastCommand::Start { total, left_out }, Some(Scheduled)) => {
                Ok(vec![BroadcastEvent::Started {
                    broadcast_id,
                    total,
                    left_out,
                }])
            }
            (BroadcastCommand::Progress { counts, rate, at }, Some(Running)) => {
                // At most once a second, and only when something moved.
                let told = self.last_progress.is_some_and(|(last, last_counts)| {
                    at - last < chrono::Duration::seconds(1) || last_counts == counts
                });
                Ok(if told {
                    Vec::new()
                } else {
                    vec![BroadcastEvent::Progress {
                        broadcast_id,
                        counts,
                        rate,
                        at,
                    }]
                })
            }
            (BroadcastCommand::Complete { counts }, Some(Running)) => {
                let status = if counts.sent == 0 && counts.total > 0 {
                    BroadcastStatus::Failed
                } else {
                    BroadcastStatus::Completed
                };
                Ok(vec![BroadcastEvent::Completed {
                    broadcast_id,
                    status,
                    counts,
                }])
            }
            // A step another instance took already.
            (BroadcastCommand::Progress { .. } | BroadcastCommand::Complete { .. }, Some(_)) => {
                Ok(Vec::new())
            }
            (BroadcastCommand::Cancel, Some(Scheduled | Running)) => {
                Ok(vec![BroadcastEvent::Cancelled { broadcast_id }])
            }
            (BroadcastCommand::Start { .. } | BroadcastCommand::Cancel, Some(_)) => {
                Err(BroadcastError::Ended)
            }
        }
    }
}

/// The audience resolved when a broadcast starts: its recipients, each
/// with their send, and who was left out.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub recipients: Vec<Recipient>,
    pub sends: Vec<NewSend>,
    pub left_out: LeftOut,
}

/// What one step writes besides its events.
pub enum Step {
    /// A new broadcast; started at once when `start` is given.
    Create {
        row: Box<BroadcastRow>,
        created: BroadcastEvent,
        start: Option<Resolved>,
    },
    Start(Resolved),
    Progress {
        counts: Counts,
        rate: f64,
    },
    Complete {
        counts: Counts,
    },
    Cancel,
}

/// One step of broadcast `id`, as a command.
pub struct BroadcastStep {
    pub db: Db,
    pub id: String,
    pub step: Step,
    /// When the step is taken.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl BroadcastStep {
    fn start(&self, work: &mut Work<'_>, resolved: &Resolved) -> Result<(), BroadcastError> {
        let total = i64::try_from(resolved.recipients.len()).unwrap_or(i64::MAX);
        work.execute::<Broadcast>(
            &self.id,
            BroadcastCommand::Start {
                total,
                left_out: resolved.left_out,
            },
        )?;
        Ok(())
    }
}

impl Command for BroadcastStep {
    /// The broadcast's status after the step.
    type Output = Option<BroadcastStatus>;
    type Error = BroadcastError;

    fn writes(&self) -> bool {
        !matches!(self.step, Step::Progress { .. })
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Broadcast>(&self.id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<Option<BroadcastStatus>, BroadcastError> {
        let command = match &self.step {
            Step::Create { created, start, .. } => {
                work.execute::<Broadcast>(&self.id, BroadcastCommand::Create(created.clone()))?;
                if let Some(resolved) = start {
                    self.start(work, resolved)?;
                }
                return Ok(work.state::<Broadcast>(&self.id).status);
            }
            Step::Start(resolved) => {
                self.start(work, resolved)?;
                return Ok(work.state::<Broadcast>(&self.id).status);
            }
            Step::Progress { counts, rate } => BroadcastCommand::Progress {
                counts: *counts,
                rate: *rate,
                at: self.at,
            },
            Step::Complete { counts } => BroadcastCommand::Complete { counts: *counts },
            Step::Cancel => BroadcastCommand::Cancel,
        };
        work.execute::<Broadcast>(&self.id, command)?;
        Ok(work.state::<Broadcast>(&self.id).status)
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        status: &mut Option<BroadcastStatus>,
        events: &[RecordedEvent],
    ) -> Result<(), CommandError<BroadcastError>> {
        let conn = &**txn;
        let at = self.at.timestamp_millis();
        let db = &self.db;
        let started = match &self.step {
            Step::Create { row, start, .. } => {
                store::insert(conn, db, row).await?;
                start.as_ref()
            }
            Step::Start(resolved) => Some(resolved),
            _ => None,
        };
        if let Some(resolved) = started {
            store::start(
                conn,
                db,
                &self.id,
                &resolved.recipients,
                &resolved.left_out,
                at,
            )
            .await?;
            outbox::enqueue_all(conn, db, &resolved.sends).await?;
        }
        match &self.step {
            Step::Create { .. } | Step::Start(_) => {}
            Step::Progress { .. } => {}
            // Taken by another instance already: nothing to write.
            Step::Complete { .. } if events.is_empty() => {}
            Step::Complete { .. } => {
                let ended = status.unwrap_or(BroadcastStatus::Completed);
                store::finish(conn, db, &self.id, ended, at).await?;
            }
            Step::Cancel => store::cancel(conn, db, &self.id, at).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given;

    fn created() -> BroadcastEvent {
        BroadcastEvent::Created {
            broadcast_id: "b".into(),
            method: "sendMessage".into(),
            params: serde_json::json!({"text": "hi"}),
            audience: serde_json::json!({"all": true}),
            paid: false,
            send_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_broadcast_starts_once_tells_progress_at_most_once_a_second_and_ends_once() {
        let started = BroadcastEvent::Started {
            broadcast_id: "b".into(),
            total: 3,
            left_out: LeftOut::default(),
        };
        let state = given::<Broadcast>(&[created()]);
        assert_eq!(
            state
                .decide(BroadcastCommand::Start {
                    total: 3,
                    left_out: LeftOut::default()
                })
                .unwrap()
                .len(),
            1
        );
        let mut state = given::<Broadcast>(&[created(), started.clone()]);
        assert_eq!(
            state.decide(BroadcastCommand::Start {
                total: 3,
                left_out: LeftOut::default()
            }),
            Err(BroadcastError::Started)
        );
        let at = chrono::Utc::now();
        let mut counts = Counts::default();
        counts.add(Delivery::Queued, 2);
        counts.add(Delivery::Sent, 1);
        let progress = state
            .decide(BroadcastCommand::Progress {
                counts,
                rate: 1.0,
                at,
            })
            .unwrap();
        assert_eq!(progress.len(), 1);
        state.apply(&progress[0]);
        counts.add(Delivery::Sent, 0);
        let mut moved = counts;
        moved.queued -= 1;
        moved.sent += 1;
        let again = |state: &Broadcast, counts, at| {
            state
                .decide(BroadcastCommand::Progress {
                    counts,
                    rate: 1.0,
                    at,
                })
                .unwrap()
                .len()
        };
        assert_eq!(
            again(&state, moved, at + chrono::Duration::milliseconds(500)),
            0
        );
        assert_eq!(again(&state, counts, at + chrono::Duration::seconds(2)), 0);
        assert_eq!(again(&state, moved, at + chrono::Duration::seconds(2)), 1);
        let mut all_failed = Counts::default();
        all_failed.add(Delivery::Failed, 3);
        let ended = state
            .decide(BroadcastCommand::Complete { counts: all_failed })
            .unwrap();
        assert!(matches!(
            ended[0],
            BroadcastEvent::Completed {
                status: BroadcastStatus::Failed,
                ..
            }
        ));
        state.apply(&ended[0]);
        assert!(
            state
                .decide(BroadcastCommand::Complete { counts: all_failed })
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            state.decide(BroadcastCommand::Cancel),
            Err(BroadcastError::Ended)
        );
        let new = started.to_new_event(crate::events::Actor::system());
        assert_eq!(new.event_type.as_str(), "broadcast.started");
        assert_eq!(new.payload["total"], 3);
    }
}
