//! Subscriptions: one per user, bought (and renewed) from the balance,
//! cancelled by the user, expired by the scheduler when due. Time comes in
//! with the command, so deciding stays pure.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, Command, DomainError, DomainEvent, Refusal, Target, Work},
    ids::{TransactionId, UserId},
    ledger::domain::{Amount, Balance, Currency, Entry, LedgerError, TransactionKind},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum SubscriptionEvent {
    #[serde(rename = "subscription.activated")]
    Activated {
        user_id: UserId,
        plan_id: String,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        price: i64,
        currency: String,
    },
    #[serde(rename = "subscription.renewed")]
    Renewed {
        user_id: UserId,
        plan_id: String,
        previous_expires_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        price: i64,
        currency: String,
    },
    #[serde(rename = "subscription.cancelled")]
    Cancelled { user_id: UserId, plan_id: String },
    #[serde(rename = "subscription.expired")]
    Expired {
        user_id: UserId,
        plan_id: String,
        expired_at: DateTime<Utc>,
    },
}

impl DomainEvent for SubscriptionEvent {
    const TYPES: &'static [&'static str] = &[
        "subscription.activated",
        "subscription.renewed",
        "subscription.cancelled",
        "subscription.expired",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    None,
    Active,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub status: Status,
    pub plan_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a plan costs and gives.
#[derive(Debug, Clone)]
pub struct PlanTerms {
    pub plan_id: String,
    pub days: u32,
    pub price: i64,
    pub currency: String,
}

#[derive(Debug, Clone)]
pub enum SubscriptionCommand {
    Purchase {
        user_id: UserId,
        plan: PlanTerms,
        now: DateTime<Utc>,
    },
    Renew {
        user_id: UserId,
        plan: PlanTerms,
        now: DateTime<Utc>,
    },
    Cancel {
        user_id: UserId,
    },
    Expire {
        user_id: UserId,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("a subscription is already active; renew it instead")]
    AlreadyActive,
    #[error("there is no active subscription")]
    NotActive,
}

impl DomainError for SubscriptionError {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyActive => "subscription_active",
            Self::NotActive => "subscription_not_active",
        }
    }
}

impl Aggregate for Subscription {
    const CATEGORY: &'static str = "subscription";
    type Event = SubscriptionEvent;
    type Command = SubscriptionCommand;
    type Error = SubscriptionError;

    fn apply(&mut self, event: &SubscriptionEvent) {
        match event {
            SubscriptionEvent::Activated {
                plan_id,
                expires_at,
                ..
            }
            | SubscriptionEvent::Renewed {
                plan_id,
                expires_at,
                ..
            } => {
                self.status = Status::Active;
                self.plan_id = Some(plan_id.clone());
                self.expires_at = Some(*expires_at);
            }
            SubscriptionEvent::Cancelled { .. } => self.status = Status::Cancelled,
            SubscriptionEvent::Expired { .. } => self.status = Status::Expired,
        }
    }

    fn decide(
        &self,
        command: SubscriptionCommand,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let active_until = match (self.status, self.expires_at) {
            (Status::Active, Some(at)) => Some(at),
            _ => None,
        };
        match command {
            SubscriptionCommand::Purchase { user_id, plan, now } => {
                if active_until.is_some_and(|at| at > now) {
                    return Err(SubscriptionError::AlreadyActive);
                }
                Ok(vec![activated(user_id, plan, now)])
            }
            SubscriptionCommand::Renew { user_id, plan, now } => {
                match active_until.filter(|at| *at > now) {
                    // Renewing early extends from the current end, not from now.
                    Some(until) => Ok(vec![SubscriptionEvent::Renewed {
                        user_id,
                        previous_expires_at: until,
                        expires_at: until + Duration::days(i64::from(plan.days)),
                        plan_id: plan.plan_id,
                        price: plan.price,
                        currency: plan.currency,
                    }]),
                    None => Ok(vec![activated(user_id, plan, now)]),
                }
            }
            SubscriptionCommand::Cancel { user_id } => {
                if self.status != Status::Active {
                    return Err(SubscriptionError::NotActive);
                }
                Ok(vec![SubscriptionEvent::Cancelled {
                    user_id,
                    plan_id: self.plan_id.clone().unwrap_or_default(),
                }])
            }
            SubscriptionCommand::Expire { user_id, now } => Ok(match active_until {
                Some(at) if at <= now => vec![SubscriptionEvent::Expired {
                    user_id,
                    plan_id: self.plan_id.clone().unwrap_or_default(),
                    expired_at: at,
                }],
                // Not due, or already over: nothing (exactly once).
                _ => Vec::new(),
            }),
        }
    }
}

/// Buys a plan (or renews it) from the balance: the subscription and the
/// balance's debit go in together, or neither does.
pub struct Buy {
    pub user_id: UserId,
    /// The balance's entry.
    pub transaction_id: TransactionId,
    pub plan: PlanTerms,
    /// The ledger entry's description.
    pub description: String,
    pub renewal: bool,
    pub now: DateTime<Utc>,
    pub amount: Amount,
    pub currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuyError {
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl DomainError for BuyError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Subscription(e) => e.refusal(),
            Self::Ledger(e) => e.refusal(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Subscription(e) => e.code(),
            Self::Ledger(e) => e.code(),
        }
    }
}

impl Command for Buy {
    type Output = ();
    type Error = BuyError;

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::of::<Subscription>(self.user_id),
            Target::of::<Balance>(Balance::key(self.user_id, &self.currency)),
        ]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), BuyError> {
        let (user_id, plan, now) = (self.user_id, self.plan.clone(), self.now);
        let command = if self.renewal {
            SubscriptionCommand::Renew { user_id, plan, now }
        } else {
            SubscriptionCommand::Purchase { user_id, plan, now }
        };
        work.execute::<Subscription>(self.user_id, command)?;
        work.execute::<Balance>(
            Balance::key(self.user_id, &self.currency),
            Entry {
                transaction_id: self.transaction_id,
                user_id: self.user_id,
                currency: self.currency.clone(),
                kind: TransactionKind::SubscriptionPayment,
                amount: self.amount,
                reference: Some(format!("subscription:{}", self.user_id)),
                description: Some(self.description.clone()),
            },
        )?;
        Ok(())
    }
}

fn activated(user_id: UserId, plan: PlanTerms, now: DateTime<Utc>) -> SubscriptionEvent {
    SubscriptionEvent::Activated {
        user_id,
        started_at: now,
        expires_at: now + Duration::days(i64::from(plan.days)),
        plan_id: plan.plan_id,
        price: plan.price,
        currency: plan.currency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Actor;

    fn plan() -> PlanTerms {
        PlanTerms {
            plan_id: "monthly".into(),
            days: 30,
            price: 100,
            currency: "RUB".into(),
        }
    }

    fn given(events: &[SubscriptionEvent]) -> Subscription {
        let mut s = Subscription::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    #[test]
    fn a_purchase_activates_for_the_plans_days_and_twice_is_refused() {
        let (user, now) = (UserId::new(), Utc::now());
        let events = Subscription::default()
            .decide(SubscriptionCommand::Purchase {
                user_id: user,
                plan: plan(),
                now,
            })
            .unwrap();
        assert!(
            matches!(&events[0], SubscriptionEvent::Activated { expires_at, .. } if *expires_at == now + Duration::days(30))
        );
        assert_eq!(
            given(&events)
                .decide(SubscriptionCommand::Purchase {
                    user_id: user,
                    plan: plan(),
                    now
                })
                .unwrap_err(),
            SubscriptionError::AlreadyActive
        );
        assert_eq!(
            events[0].to_new_event(Actor::system()).event_type.as_str(),
            "subscription.activated"
        );
    }

    #[test]
    fn renewing_early_extends_from_the_current_end() {
        let (user, now) = (UserId::new(), Utc::now());
        let bought = Subscription::default()
            .decide(SubscriptionCommand::Purchase {
                user_id: user,
                plan: plan(),
                now,
            })
            .unwrap();
        let renewed = given(&bought)
            .decide(SubscriptionCommand::Renew {
                user_id: user,
                plan: plan(),
                now: now + Duration::days(10),
            })
            .unwrap();
        assert!(
            matches!(&renewed[0], SubscriptionEvent::Renewed { expires_at, .. } if *expires_at == now + Duration::days(60))
        );
    }

    #[test]
    fn expiry_happens_once_and_only_when_due() {
        let (user, now) = (UserId::new(), Utc::now());
        let bought = Subscription::default()
            .decide(SubscriptionCommand::Purchase {
                user_id: user,
                plan: plan(),
                now,
            })
            .unwrap();
        let active = given(&bought);
        assert!(
            active
                .decide(SubscriptionCommand::Expire {
                    user_id: user,
                    now: now + Duration::days(29)
                })
                .unwrap()
                .is_empty()
        );
        let expired = active
            .decide(SubscriptionCommand::Expire {
                user_id: user,
                now: now + Duration::days(31),
            })
            .unwrap();
        assert_eq!(
            expired[0].to_new_event(Actor::system()).event_type.as_str(),
            "subscription.expired"
        );
        let after = given(&[bought, expired].concat());
        assert!(
            after
                .decide(SubscriptionCommand::Expire {
                    user_id: user,
                    now: now + Duration::days(40)
                })
                .unwrap()
                .is_empty()
        );
        // After expiry a purchase starts a new period.
        assert!(
            after
                .decide(SubscriptionCommand::Purchase {
                    user_id: user,
                    plan: plan(),
                    now: now + Duration::days(40)
                })
                .is_ok()
        );
    }

    #[test]
    fn only_an_active_subscription_can_be_cancelled() {
        let (user, now) = (UserId::new(), Utc::now());
        assert_eq!(
            Subscription::default()
                .decide(SubscriptionCommand::Cancel { user_id: user })
                .unwrap_err(),
            SubscriptionError::NotActive
        );
        let bought = Subscription::default()
            .decide(SubscriptionCommand::Purchase {
                user_id: user,
                plan: plan(),
                now,
            })
            .unwrap();
        let cancelled = given(&bought)
            .decide(SubscriptionCommand::Cancel { user_id: user })
            .unwrap();
        assert_eq!(
            cancelled[0]
                .to_new_event(Actor::system())
                .event_type
                .as_str(),
            "subscription.cancelled"
        );
        let after = given(&[bought, cancelled].concat());
        assert!(
            after
                .decide(SubscriptionCommand::Expire {
                    user_id: user,
                    now: now + Duration::days(31)
                })
                .unwrap()
                .is_empty()
        );
    }
}
