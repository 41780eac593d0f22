//! Ledger commands that span aggregates: a completed payment credits the
//! balance (and the referrer's share) in the same append; a refund debits
//! it.

use sea_orm::EntityTrait;
use uuid::Uuid;

use super::domain::{
    Amount, Balance, Currency, Entry, LedgerError, MoneyError, Payment, PaymentCommand,
    PaymentError, TransactionKind,
};
use crate::{
    app::AppState,
    db::entities::{payment, user},
    domain::{Command, CommandError, Decide, Target, Work},
    error::{ApiError, Problem},
    events::Actor,
    ids::{PaymentId, TransactionId, UserId},
    referrals::Reward,
};

/// Payments are identified by the provider's id: the same callback twice is
/// the same payment (and credits once).
pub fn payment_id(provider: &str, external_id: &str) -> PaymentId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x5b1c_7e8a_4d2f_4e11_9a3b_6c0d_2e4f_8a17);
    PaymentId::from_uuid(Uuid::new_v5(
        &NAMESPACE,
        format!("{provider}\n{external_id}").as_bytes(),
    ))
}

/// The ledger entry a payment makes for `purpose` (its deposit, its
/// referral reward, its refund): derived from the payment, so that deciding
/// the command again gives the same entry.
pub fn entry_id(payment: PaymentId, purpose: &str) -> TransactionId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x0c3e_91d4_77a2_4b6e_8f15_3a9d_6e20_b4c8);
    TransactionId::from_uuid(Uuid::new_v5(
        &NAMESPACE,
        format!("{payment}\n{purpose}").as_bytes(),
    ))
}

#[derive(Debug, Clone)]
pub struct PaymentIn {
    pub user_id: UserId,
    pub amount: Amount,
    pub currency: Currency,
    pub provider: String,
    pub external_id: String,
    /// `None`: completed; `Some(reason)`: failed.
    pub failure: Option<String>,
    /// The ledger entry's description (`payment via <provider>` if none).
    pub description: Option<String>,
}

/// The provider of an admin's manual top-up.
pub const TOP_UP_PROVIDER: &str = "admin";

/// 404 unless the user exists (named in the path or in the body alike).
pub async fn ensure_user(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    if user::Entity::find_by_id(user_id.as_uuid())
        .one(state.db.conn())
        .await?
        .is_none()
    {
        return Err(Problem::not_found().detail("no such user").into());
    }
    Ok(())
}

/// Records a payment's outcome; a completed one credits the balance, and
/// the referrer's share when the payer was referred.
pub struct RecordPayment {
    input: PaymentIn,
    id: PaymentId,
    referral_percent: u32,
    /// Looked up before it is decided.
    reward: Option<Reward>,
}

impl RecordPayment {
    pub fn new(input: PaymentIn, referral_percent: u32) -> Self {
        Self {
            id: payment_id(&input.provider, &input.external_id),
            input,
            referral_percent,
            reward: None,
        }
    }
}

/// Whether a payment was recorded now or had been before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// Reported before: nothing changed.
    Again,
}

impl Command for RecordPayment {
    type Output = Recorded;
    type Error = MoneyError;

    async fn prepare(
        &mut self,
        conn: &sea_orm::DatabaseConnection,
    ) -> Result<(), CommandError<MoneyError>> {
        // The payer is read once: whether they exist, and who referred them.
        let payer = user::Entity::find_by_id(self.input.user_id.as_uuid())
            .one(conn)
            .await?
            .ok_or(CommandError::Domain(MoneyError::NoSuchUser))?;
        if self.input.failure.is_none() {
            self.reward = Reward::of(&payer, self.referral_percent);
        }
        Ok(())
    }

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Payment>(self.id)];
        if self.input.failure.is_none() {
            targets.push(Target::of::<Balance>(Balance::key(
                self.input.user_id,
                &self.input.currency,
            )));
            if let Some(reward) = &self.reward {
                targets.extend(reward.targets(&self.input.currency));
            }
        }
        targets
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<Recorded, MoneyError> {
        let input = &self.input;
        let command = match &input.failure {
            None => PaymentCommand::Complete {
                payment_id: self.id,
                user_id: input.user_id,
                amount: input.amount,
                currency: input.currency.clone(),
                provider: input.provider.clone(),
                external_id: input.external_id.clone(),
            },
            Some(reason) => PaymentCommand::Fail {
                payment_id: self.id,
                user_id: input.user_id,
                amount: input.amount,
                currency: input.currency.clone(),
                provider: input.provider.clone(),
                external_id: input.external_id.clone(),
                reason: reason.clone(),
            },
        };
        match work.execute::<Payment>(self.id, command) {
            Ok(_) => {}
            Err(PaymentError::AlreadyFinal(_)) => return Ok(Recorded::Again),
            Err(e) => return Err(e.into()),
        }
        if input.failure.is_some() {
            return Ok(Recorded::New);
        }
        work.execute::<Balance>(
            Balance::key(input.user_id, &input.currency),
            Entry {
                transaction_id: entry_id(self.id, "deposit"),
                user_id: input.user_id,
                currency: input.currency.clone(),
                kind: TransactionKind::Deposit,
                amount: input.amount,
                reference: Some(format!("payment:{}", self.id)),
                description: Some(
                    input
                        .description
                        .clone()
                        .unwrap_or_else(|| format!("payment via {}", input.provider)),
                ),
            },
        )?;
        if let Some(reward) = &self.reward {
            reward.grant(work, input.user_id, self.id, input.amount, &input.currency)?;
        }
        Ok(Recorded::New)
    }
}

/// Records a payment: the payment as it stands afterwards, and whether it
/// was new. A repeat that contradicts what was recorded (another user,
/// amount, currency, or outcome) is refused with 409 `payment_mismatch`, a
/// payment of a user who does not exist with 404.
/// Referrers earn from deposits that came from a provider (or Telegram
/// Stars); from an admin's top-up only when so configured.
pub async fn record_payment(
    state: &AppState,
    input: PaymentIn,
    actor: Actor,
) -> Result<(payment::Model, Recorded), ApiError> {
    let id = payment_id(&input.provider, &input.external_id);
    let rewarded = input.provider != TOP_UP_PROVIDER || state.config.referral_on_top_ups;
    let percent = if rewarded {
        state.config.referral_percent
    } else {
        0
    };
    let recorded = state
        .commands
        .run(RecordPayment::new(input.clone(), percent), actor)
        .await?
        .output;
    let payment = find_payment(state, id).await?;
    if recorded == Recorded::Again {
        let same_facts = payment.user_id == input.user_id.as_uuid()
            && payment.amount == input.amount.get()
            && payment.currency == input.currency.as_str();
        // A completed payment may have been refunded since; a failed one
        // never completes, nor a completed one fails.
        let same_outcome = match input.failure {
            None => payment.status == "completed" || payment.status == "refunded",
            Some(_) => payment.status == "failed",
        };
        if !same_facts || !same_outcome {
            let detail = if same_facts {
                format!(
                    "this provider payment was already recorded as {}",
                    payment.status
                )
            } else {
                "this provider payment was already recorded with another user, amount or currency"
                    .to_owned()
            };
            return Err(Problem::new(
                actix_web::http::StatusCode::CONFLICT,
                "payment_mismatch",
                "Payment mismatch",
            )
            .detail(detail)
            .into());
        }
    }
    Ok((payment, recorded))
}

/// One ledger entry on its own (withdrawals, manual adjustments).
pub async fn post_entry(state: &AppState, entry: Entry, actor: Actor) -> Result<(), ApiError> {
    let key = Balance::key(entry.user_id, &entry.currency);
    match state
        .commands
        .run(Decide::<Balance>::new(key, entry), actor)
        .await
    {
        Ok(_) => Ok(()),
        Err(CommandError::Domain(LedgerError::InsufficientFunds { balance, needed })) => {
            Err(insufficient_funds(format!("the balance is {balance}, {needed} needed")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// A completed payment's money goes back to the payer: `payment.refunded`
/// and a `refund` debit of the balance, together.
pub struct Refund {
    pub payment_id: PaymentId,
    pub user_id: UserId,
    pub amount: Amount,
    pub currency: Currency,
    pub reason: String,
}

impl Command for Refund {
    type Output = ();
    type Error = MoneyError;

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::of::<Payment>(self.payment_id),
            Target::of::<Balance>(Balance::key(self.user_id, &self.currency)),
        ]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), MoneyError> {
        work.execute::<Payment>(
            self.payment_id,
            PaymentCommand::Refund {
                reason: self.reason.clone(),
            },
        )?;
        work.execute::<Balance>(
            Balance::key(self.user_id, &self.currency),
            Entry {
                transaction_id: entry_id(self.payment_id, "refund"),
                user_id: self.user_id,
                currency: self.currency.clone(),
                kind: TransactionKind::Refund,
                amount: self.amount,
                reference: Some(format!("payment:{}", self.payment_id)),
                description: Some(self.reason.clone()),
            },
        )?;
        Ok(())
    }
}

/// Refunds a completed payment (409 `insufficient_funds` if the money was
/// spent).
pub async fn refund(
    state: &AppState,
    id: PaymentId,
    reason: String,
    actor: Actor,
) -> Result<payment::Model, ApiError> {
    let existing = payment::Entity::find_by_id(id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| Problem::not_found().detail("no such payment"))?;
    let currency =
        Currency::parse(&existing.currency).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let amount =
        Amount::parse(existing.amount).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let refund = Refund {
        payment_id: id,
        user_id: UserId::from_uuid(existing.user_id),
        amount,
        currency,
        reason,
    };
    match state.commands.run(refund, actor).await {
        Ok(_) => {}
        Err(CommandError::Domain(MoneyError::Ledger(LedgerError::InsufficientFunds {
            balance,
            needed,
        }))) => {
            return Err(insufficient_funds(format!(
                "the balance is {balance}; refunding needs {needed}"
            ))
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    find_payment(state, id).await
}

fn insufficient_funds(detail: String) -> Problem {
    Problem::new(
        actix_web::http::StatusCode::CONFLICT,
        "insufficient_funds",
        "Insufficient funds",
    )
    .detail(detail)
}

async fn find_payment(state: &AppState, id: PaymentId) -> Result<payment::Model, ApiError> {
    payment::Entity::find_by_id(id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("payment {id} has no read model row")))
}
