//! Ledger commands that span aggregates: a completed payment credits the
//! balance in the same transaction; both retry together on a conflict.

use actix_web::http::StatusCode;
use sea_orm::EntityTrait;
use uuid::Uuid;

use super::domain::{
    Amount, Balance, Currency, Entry, LedgerError, Payment, PaymentCommand, PaymentError,
    TransactionKind,
};
use crate::{
    app::AppState,
    db::entities::{payment, user},
    domain::{CommandError, execute},
    error::{ApiError, Problem},
    events::{Actor, AppendError},
    ids::{PaymentId, TransactionId, UserId},
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

pub struct PaymentIn {
    pub user_id: UserId,
    pub amount: Amount,
    pub currency: Currency,
    pub provider: String,
    pub external_id: String,
    /// `None`: completed; `Some(reason)`: failed.
    pub failure: Option<String>,
}

fn is_conflict<E: crate::domain::DomainError>(e: &CommandError<E>) -> bool {
    matches!(e, CommandError::Append(AppendError::Conflict { .. }))
}

pub async fn ensure_user(state: &AppState, user_id: UserId) -> Result<(), ApiError> {
    if user::Entity::find_by_id(user_id.as_uuid())
        .one(state.db.conn())
        .await?
        .is_none()
    {
        return Err(Problem::invalid_field("user_id", "no such user").into());
    }
    Ok(())
}

/// Records a payment's outcome; a completed one credits the balance. The
/// second time the same payment is reported, nothing changes and `false`
/// comes back with the payment as it is.
pub async fn record_payment(
    state: &AppState,
    input: PaymentIn,
    actor: Actor,
) -> Result<(payment::Model, bool), ApiError> {
    let id = payment_id(&input.provider, &input.external_id);
    for _ in 0..5 {
        let txn = state.db.begin_write().await?;
        let command = match &input.failure {
            None => PaymentCommand::Complete {
                payment_id: id,
                user_id: input.user_id,
                amount: input.amount,
                currency: input.currency.clone(),
                provider: input.provider.clone(),
                external_id: input.external_id.clone(),
            },
            Some(reason) => PaymentCommand::Fail {
                payment_id: id,
                user_id: input.user_id,
                amount: input.amount,
                currency: input.currency.clone(),
                provider: input.provider.clone(),
                external_id: input.external_id.clone(),
                reason: reason.clone(),
            },
        };
        match execute::<Payment>(&state.store, &txn, id, command, actor.clone()).await {
            Ok(_) => {}
            Err(CommandError::Domain(PaymentError::AlreadyFinal(_))) => {
                drop(txn);
                let existing = find_payment(state, id).await?;
                if existing.user_id != input.user_id.as_uuid()
                    || existing.amount != input.amount.get()
                    || existing.currency != input.currency.as_str()
                {
                    return Err(Problem::new(
                        StatusCode::CONFLICT,
                        "payment_mismatch",
                        "Payment mismatch",
                    )
                    .detail("this provider payment was already recorded with another user, amount or currency")
                    .into());
                }
                return Ok((existing, false));
            }
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        if input.failure.is_none() {
            let key = Balance::key(input.user_id, &input.currency);
            let entry = Entry {
                transaction_id: TransactionId::new(),
                user_id: input.user_id,
                currency: input.currency.clone(),
                kind: TransactionKind::Deposit,
                amount: input.amount,
                reference: Some(format!("payment:{id}")),
                description: Some(format!("payment via {}", input.provider)),
            };
            match execute::<Balance>(&state.store, &txn, &key, entry, actor.clone()).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            if state.config.referral_percent > 0 {
                match crate::referrals::reward(
                    &state.store,
                    &txn,
                    input.user_id,
                    id,
                    input.amount,
                    &input.currency,
                    state.config.referral_percent,
                )
                .await
                {
                    Ok(()) => {}
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        txn.commit().await?;
        return Ok((find_payment(state, id).await?, true));
    }
    Err(busy())
}

/// One ledger entry on its own (withdrawals, manual adjustments).
pub async fn post_entry(state: &AppState, entry: Entry, actor: Actor) -> Result<(), ApiError> {
    let key = Balance::key(entry.user_id, &entry.currency);
    match crate::domain::run::<Balance>(&state.store, &key, || entry.clone(), actor).await {
        Ok(_) => Ok(()),
        Err(CommandError::Domain(LedgerError::InsufficientFunds { balance, needed })) => {
            Err(Problem::new(
                StatusCode::CONFLICT,
                "insufficient_funds",
                "Insufficient funds",
            )
            .detail(format!("the balance is {balance}, {needed} needed"))
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Refunds a completed payment: `payment.refunded` and a `refund` debit of
/// the balance, together (409 `insufficient_funds` if the money was spent).
pub async fn refund(
    state: &AppState,
    id: PaymentId,
    reason: String,
    actor: Actor,
) -> Result<payment::Model, ApiError> {
    let existing = find_payment(state, id)
        .await
        .map_err(|_| Problem::not_found().detail("no such payment"))?;
    let currency =
        Currency::parse(&existing.currency).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let amount =
        Amount::parse(existing.amount).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let user_id = UserId::from_uuid(existing.user_id);
    for _ in 0..5 {
        let txn = state.db.begin_write().await?;
        match execute::<Payment>(
            &state.store,
            &txn,
            id,
            PaymentCommand::Refund {
                reason: reason.clone(),
            },
            actor.clone(),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let entry = Entry {
            transaction_id: TransactionId::new(),
            user_id,
            currency: currency.clone(),
            kind: TransactionKind::Refund,
            amount,
            reference: Some(format!("payment:{id}")),
            description: Some(reason.clone()),
        };
        match execute::<Balance>(
            &state.store,
            &txn,
            &Balance::key(user_id, &currency),
            entry,
            actor.clone(),
        )
        .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => continue,
            Err(CommandError::Domain(LedgerError::InsufficientFunds { balance, needed })) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "insufficient_funds",
                    "Insufficient funds",
                )
                .detail(format!(
                    "the balance is {balance}; refunding needs {needed}"
                ))
                .into());
            }
            Err(e) => return Err(e.into()),
        }
        txn.commit().await?;
        return find_payment(state, id).await;
    }
    Err(busy())
}

async fn find_payment(state: &AppState, id: PaymentId) -> Result<payment::Model, ApiError> {
    payment::Entity::find_by_id(id.as_uuid())
        .one(state.db.conn())
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("payment {id} has no read model row")))
}

fn busy() -> ApiError {
    Problem::new(
        StatusCode::CONFLICT,
        "version_conflict",
        "Changed concurrently",
    )
    .detail("too many concurrent changes; try again")
    .into()
}
