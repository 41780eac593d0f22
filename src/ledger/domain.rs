//! Money: a balance per user and currency (its stream is the ledger), and
//! payments. Amounts are integer minor units; a balance never goes below
//! zero, even with concurrent debits (each decision is checked against the
//! balance's stream version).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::{Aggregate, DomainError, DomainEvent, Loaded, Refusal},
    ids::{PaymentId, TransactionId, UserId},
};

/// An ISO 4217 code (three capital letters) — validated, private field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// An ISO 4217 code, or `XTR` (Telegram Stars).
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        let known = raw == "XTR" || iso_currency::Currency::from_code(raw).is_some();
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) && known {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be an ISO 4217 code such as RUB, USD or EUR, or XTR (Telegram Stars)")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = &'static str;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

/// A positive amount of minor units, at most 10^12 (so sums never overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

impl Amount {
    pub fn parse(value: i64) -> Result<Self, &'static str> {
        if value <= 0 {
            Err("must be a positive whole number of minor units")
        } else if value > MAX_AMOUNT {
            Err("is too large")
        } else {
            Ok(Self(value))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = &'static str;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<Amount> for i64 {
    fn from(value: Amount) -> Self {
        value.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    Deposit,
    Withdrawal,
    SubscriptionPayment,
    Refund,
    ReferralReward,
}

impl TransactionKind {
    /// Deposits and referral rewards add to the balance; withdrawals,
    /// subscription payments and refunds (money returned to the payer)
    /// take from it.
    fn is_credit(self) -> bool {
        matches!(self, Self::Deposit | Self::ReferralReward)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum BalanceEvent {
    #[serde(rename = "transaction.created")]
    TransactionCreated {
        transaction_id: TransactionId,
        user_id: UserId,
        kind: TransactionKind,
        /// Signed: credits positive, debits negative.
        amount: i64,
        currency: Currency,
        balance_after: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

impl DomainEvent for BalanceEvent {
    const TYPES: &'static [&'static str] = &["transaction.created"];
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub transaction_id: TransactionId,
    pub user_id: UserId,
    pub currency: Currency,
    pub kind: TransactionKind,
    pub amount: Amount,
    pub reference: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient funds: the balance is {balance}, {needed} needed")]
    InsufficientFunds { balance: i64, needed: i64 },
    #[error("the balance would exceed the maximum")]
    Overflow,
}

impl DomainError for LedgerError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::InsufficientFunds { .. } => Refusal::Conflict,
            Self::Overflow => Refusal::Invalid,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::Overflow => "amount_too_large",
        }
    }
}

/// One user's balance in one currency.
#[derive(Debug, Clone, Default)]
pub struct Balance {
    pub amount: i64,
}

impl Balance {
    /// `balance:<user>:<currency>`
    pub fn key(user: UserId, currency: &Currency) -> String {
        format!("{user}:{}", currency.as_str())
    }
}

impl Aggregate for Balance {
    const CATEGORY: &'static str = "balance";
    type Event = BalanceEvent;
    type Command = Entry;
    type Error = LedgerError;

    /// From the `balances` row, which records its stream's version (a row
    /// with version 0 predates that and is folded instead).
    async fn snapshots(
        conn: &sea_orm::DatabaseExecutor<'_>,
        ids: &[String],
    ) -> Result<HashMap<String, Loaded<Self>>, sea_orm::DbErr> {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

        use crate::db::entities::balance;
        let wanted: Vec<(uuid::Uuid, &str, &String)> = ids
            .iter()
            .filter_map(|id| {
                let (user, currency) = id.split_once(':')?;
                Some((user.parse().ok()?, currency, id))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let users: Vec<uuid::Uuid> = wanted.iter().map(|(user, ..)| *user).collect();
        let rows = balance::Entity::find()
            .filter(balance::Column::UserId.is_in(crate::db::padded(users)))
            .all(conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter(|row| row.version > 0)
            .filter_map(|row| {
                let (.., id) = wanted.iter().find(|(user, currency, _)| {
                    *user == row.user_id && *currency == row.currency
                })?;
                let loaded = Loaded {
                    state: Balance {
                        amount: row.balance,
                    },
                    version: u32::try_from(row.version).ok()?,
                };
                Some(((*id).clone(), loaded))
            })
            .collect())
    }

    fn apply(&mut self, event: &BalanceEvent) {
        let BalanceEvent::TransactionCreated { balance_after, .. } = event;
        self.amount = *balance_after;
    }

    fn decide(&self, entry: Entry) -> Result<Vec<BalanceEvent>, LedgerError> {
        let signed = if entry.kind.is_credit() {
            entry.amount.get()
        } else {
            -entry.amount.get()
        };
        let after = self
            .amount
            .checked_add(signed)
            .ok_or(LedgerError::Overflow)?;
        if after < 0 {
            return Err(LedgerError::InsufficientFunds {
                balance: self.amount,
                needed: entry.amount.get(),
            });
        }
        if after > MAX_AMOUNT * 1000 {
            return Err(LedgerError::Overflow);
        }
        Ok(vec![BalanceEvent::TransactionCreated {
            transaction_id: entry.transaction_id,
            user_id: entry.user_id,
            kind: entry.kind,
            amount: signed,
            currency: entry.currency,
            balance_after: after,
            reference: entry.reference,
            description: entry.description,
        }])
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum PaymentEvent {
    #[serde(rename = "payment.created")]
    Created {
        payment_id: PaymentId,
        user_id: UserId,
        amount: Amount,
        currency: Currency,
        provider: String,
        external_id: String,
    },
    #[serde(rename = "payment.completed")]
    Completed {
        payment_id: PaymentId,
        user_id: UserId,
        amount: Amount,
        currency: Currency,
        provider: String,
        external_id: String,
    },
    #[serde(rename = "payment.failed")]
    Failed {
        payment_id: PaymentId,
        user_id: UserId,
        reason: String,
    },
    #[serde(rename = "payment.refunded")]
    Refunded {
        payment_id: PaymentId,
        user_id: UserId,
        amount: Amount,
        currency: Currency,
        reason: String,
    },
}

impl DomainEvent for PaymentEvent {
    const TYPES: &'static [&'static str] = &[
        "payment.created",
        "payment.completed",
        "payment.failed",
        "payment.refunded",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaymentStatus {
    #[default]
    None,
    Pending,
    Completed,
    Failed,
    Refunded,
}

#[derive(Debug, Clone, Default)]
pub struct Payment {
    pub status: PaymentStatus,
    /// What it was created with.
    pub details: Option<PaymentDetails>,
}

/// A payment's facts, as `payment.created` recorded them.
#[derive(Debug, Clone)]
pub struct PaymentDetails {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub amount: Amount,
    pub currency: Currency,
}

#[derive(Debug, Clone)]
pub enum PaymentCommand {
    /// Money arrived (a provider's callback, Telegram Stars, an admin top-up).
    Complete {
        payment_id: PaymentId,
        user_id: UserId,
        amount: Amount,
        currency: Currency,
        provider: String,
        external_id: String,
    },
    Fail {
        payment_id: PaymentId,
        user_id: UserId,
        amount: Amount,
        currency: Currency,
        provider: String,
        external_id: String,
        reason: String,
    },
    /// The money goes back to the payer: only a completed payment, once.
    Refund { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("the payment is already {0}")]
    AlreadyFinal(&'static str),
    #[error("only a completed payment can be refunded")]
    NotRefundable,
}

impl DomainError for PaymentError {
    fn refusal(&self) -> Refusal {
        Refusal::Conflict
    }

    fn code(&self) -> &'static str {
        match self {
            Self::AlreadyFinal(_) => "payment_final",
            Self::NotRefundable => "payment_not_refundable",
        }
    }
}

/// A refusal of a command that moves money through a payment and a
/// balance together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("no such user")]
    NoSuchUser,
}

impl DomainError for MoneyError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::Payment(e) => e.refusal(),
            Self::Ledger(e) => e.refusal(),
            Self::NoSuchUser => Refusal::NotFound,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Payment(e) => e.code(),
            Self::Ledger(e) => e.code(),
            Self::NoSuchUser => "not_found",
        }
    }
}

impl Aggregate for Payment {
    const CATEGORY: &'static str = "payment";
    type Event = PaymentEvent;
    type Command = PaymentCommand;
    type Error = PaymentError;

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::Created {
                payment_id,
                user_id,
                amount,
                currency,
                ..
            } => {
                self.status = PaymentStatus::Pending;
                self.details = Some(PaymentDetails {
                    payment_id: *payment_id,
                    user_id: *user_id,
                    amount: *amount,
                    currency: currency.clone(),
                });
            }
            PaymentEvent::Completed { .. } => self.status = PaymentStatus::Completed,
            PaymentEvent::Failed { .. } => self.status = PaymentStatus::Failed,
            PaymentEvent::Refunded { .. } => self.status = PaymentStatus::Refunded,
        }
    }

    fn decide(&self, command: PaymentCommand) -> Result<Vec<PaymentEvent>, PaymentError> {
        if let PaymentCommand::Refund { reason } = command {
            return match (self.status, &self.details) {
                (PaymentStatus::Completed, Some(details)) => Ok(vec![PaymentEvent::Refunded {
                    payment_id: details.payment_id,
                    user_id: details.user_id,
                    amount: details.amount,
                    currency: details.currency.clone(),
                    reason,
                }]),
                (PaymentStatus::Refunded, _) => Err(PaymentError::AlreadyFinal("refunded")),
                _ => Err(PaymentError::NotRefundable),
            };
        }
        match self.status {
            PaymentStatus::Completed => return Err(PaymentError::AlreadyFinal("completed")),
            PaymentStatus::Failed => return Err(PaymentError::AlreadyFinal("failed")),
            PaymentStatus::Refunded => return Err(PaymentError::AlreadyFinal("refunded")),
            PaymentStatus::None | PaymentStatus::Pending => {}
        }
        let created = |payment_id,
                       user_id,
                       amount,
                       currency: &Currency,
                       provider: &str,
                       external_id: &str| {
            PaymentEvent::Created {
                payment_id,
                user_id,
                amount,
                currency: currency.clone(),
                provider: provider.to_owned(),
                external_id: external_id.to_owned(),
            }
        };
        let mut events = Vec::new();
        match command {
            PaymentCommand::Complete {
                payment_id,
                user_id,
                amount,
                currency,
                provider,
                external_id,
            } => {
                if self.status == PaymentStatus::None {
                    events.push(created(
                        payment_id,
                        user_id,
                        amount,
                        &currency,
                        &provider,
                        &external_id,
                    ));
                }
                events.push(PaymentEvent::Completed {
                    payment_id,
                    user_id,
                    amount,
                    currency,
                    provider,
                    external_id,
                });
            }
            PaymentCommand::Fail {
                payment_id,
                user_id,
                amount,
                currency,
                provider,
                external_id,
                reason,
            } => {
                if self.status == PaymentStatus::None {
                    events.push(created(
                        payment_id,
                        user_id,
                        amount,
                        &currency,
                        &provider,
                        &external_id,
                    ));
                }
                events.push(PaymentEvent::Failed {
                    payment_id,
                    user_id,
                    reason,
                });
            }
            PaymentCommand::Refund { .. } => {}
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Actor;

    #[test]
    fn currencies_are_iso_4217_codes_or_telegram_stars() {
        for code in ["RUB", "USD", "EUR", "JPY", "XTR"] {
            assert_eq!(
                Currency::parse(code).map(|c| c.as_str().to_owned()),
                Ok(code.to_owned())
            );
        }
        for code in ["QQQ", "rub", "RU", "RUBB", "", "ABC"] {
            assert!(Currency::parse(code).is_err(), "{code}");
        }
    }

    fn entry(kind: TransactionKind, amount: i64) -> Entry {
        Entry {
            transaction_id: TransactionId::new(),
            user_id: UserId::new(),
            currency: Currency::parse("RUB").unwrap(),
            kind,
            amount: Amount::parse(amount).unwrap(),
            reference: None,
            description: None,
        }
    }

    #[test]
    fn a_deposit_credits_and_a_withdrawal_debits_with_the_balance_after() {
        let events = Balance::default()
            .decide(entry(TransactionKind::Deposit, 500))
            .unwrap();
        let mut balance = Balance::default();
        balance.apply(&events[0]);
        assert_eq!(balance.amount, 500);
        let debit = balance
            .decide(entry(TransactionKind::Withdrawal, 200))
            .unwrap();
        let BalanceEvent::TransactionCreated {
            amount,
            balance_after,
            ..
        } = &debit[0];
        assert_eq!((*amount, *balance_after), (-200, 300));
        let new = debit[0].to_new_event(Actor::system());
        assert_eq!(new.event_type.as_str(), "transaction.created");
        assert_eq!(new.payload["currency"], "RUB");
        assert_eq!(new.payload["kind"], "withdrawal");
    }

    #[test]
    fn a_debit_beyond_the_balance_is_refused() {
        let mut balance = Balance::default();
        balance.apply(
            &Balance::default()
                .decide(entry(TransactionKind::Deposit, 100))
                .unwrap()[0],
        );
        assert_eq!(
            balance
                .decide(entry(TransactionKind::SubscriptionPayment, 101))
                .unwrap_err(),
            LedgerError::InsufficientFunds {
                balance: 100,
                needed: 101
            }
        );
    }

    #[test]
    fn amounts_and_currencies_are_validated() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-5).is_err());
        assert!(Amount::parse(MAX_AMOUNT + 1).is_err());
        assert!(Currency::parse("rub").is_err());
        assert!(Currency::parse("RUBL").is_err());
        assert!(Currency::parse("XTR").is_ok());
        assert!(serde_json::from_value::<Amount>(serde_json::json!(-1)).is_err());
    }

    #[test]
    fn a_completed_payment_is_final() {
        let id = PaymentId::new();
        let complete = || PaymentCommand::Complete {
            payment_id: id,
            user_id: UserId::new(),
            amount: Amount::parse(100).unwrap(),
            currency: Currency::parse("USD").unwrap(),
            provider: "stripe".into(),
            external_id: "ch_1".into(),
        };
        let events = Payment::default().decide(complete()).unwrap();
        assert!(matches!(
            events[..],
            [PaymentEvent::Created { .. }, PaymentEvent::Completed { .. }]
        ));
        let mut payment = Payment::default();
        for e in &events {
            payment.apply(e);
        }
        assert_eq!(
            payment.decide(complete()).unwrap_err(),
            PaymentError::AlreadyFinal("completed")
        );
        assert_eq!(
            events[1].to_new_event(Actor::system()).event_type.as_str(),
            "payment.completed"
        );
    }
}
