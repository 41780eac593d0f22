//! The `balances`, `transactions` and `payments` read models.

use futures::future::BoxFuture;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseExecutor, EntityTrait, QueryFilter,
    Set,
    sea_query::{Expr, OnConflict},
};

use super::domain::{BalanceEvent, PaymentEvent};
use crate::{
    db::entities::{balance, payment, transaction},
    domain::DomainEvent,
    events::RecordedEvent,
    projections::{Projection, ProjectionError},
};

/// `balances`, `transactions` and `payments`.
pub struct Ledger;

impl Projection for Ledger {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn handles(&self) -> &'static [&'static str] {
        &[
            "transaction.created",
            "payment.created",
            "payment.completed",
            "payment.failed",
            "payment.refunded",
        ]
    }

    fn tables(&self) -> &'static [&'static str] {
        &["payments", "transactions", "balances"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a DatabaseExecutor<'a>,
        event: &'a RecordedEvent,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(apply(conn, event))
    }
}

async fn apply(conn: &impl ConnectionTrait, event: &RecordedEvent) -> Result<(), ProjectionError> {
    let at = event.occurred_at;
    if event.event_type.as_str() == "transaction.created" {
        let BalanceEvent::TransactionCreated {
            transaction_id,
            user_id,
            kind,
            amount,
            currency,
            balance_after,
            reference,
            description,
        } = BalanceEvent::from_recorded(event)?;
        transaction::ActiveModel {
            id: Set(transaction_id.as_uuid()),
            user_id: Set(user_id.as_uuid()),
            kind: Set(serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()),
            amount: Set(amount),
            currency: Set(currency.as_str().to_owned()),
            balance_after: Set(balance_after),
            reference: Set(reference),
            description: Set(description),
            created_at: Set(at),
            position: Set(event.position),
        }
        .insert(conn)
        .await?;
        balance::Entity::insert(balance::ActiveModel {
            user_id: Set(user_id.as_uuid()),
            currency: Set(currency.as_str().to_owned()),
            balance: Set(balance_after),
            updated_at: Set(at),
            version: Set(i32::try_from(event.version).unwrap_or(i32::MAX)),
        })
        .on_conflict(
            OnConflict::columns([balance::Column::UserId, balance::Column::Currency])
                .update_columns([
                    balance::Column::Balance,
                    balance::Column::UpdatedAt,
                    balance::Column::Version,
                ])
                .to_owned(),
        )
        .exec(conn)
        .await?;
        return Ok(());
    }
    match PaymentEvent::from_recorded(event)? {
        PaymentEvent::Created {
            payment_id,
            user_id,
            amount,
            currency,
            provider,
            external_id,
        } => {
            payment::ActiveModel {
                id: Set(payment_id.as_uuid()),
                user_id: Set(user_id.as_uuid()),
                amount: Set(amount.get()),
                currency: Set(currency.as_str().to_owned()),
                provider: Set(provider),
                external_id: Set(external_id),
                status: Set("pending".to_owned()),
                failure_reason: Set(None),
                created_at: Set(at),
                updated_at: Set(at),
            }
            .insert(conn)
            .await?;
        }
        PaymentEvent::Completed { payment_id, .. } => {
            payment::Entity::update_many()
                .col_expr(payment::Column::Status, Expr::value("completed"))
                .col_expr(payment::Column::UpdatedAt, Expr::value(at))
                .filter(payment::Column::Id.eq(payment_id.as_uuid()))
                .exec(conn)
                .await?;
        }
        PaymentEvent::Refunded { payment_id, .. } => {
            payment::Entity::update_many()
                .col_expr(payment::Column::Status, Expr::value("refunded"))
                .col_expr(payment::Column::UpdatedAt, Expr::value(at))
                .filter(payment::Column::Id.eq(payment_id.as_uuid()))
                .exec(conn)
                .await?;
        }
        PaymentEvent::Failed {
            payment_id, reason, ..
        } => {
            payment::Entity::update_many()
                .col_expr(payment::Column::Status, Expr::value("failed"))
                .col_expr(payment::Column::FailureReason, Expr::value(reason))
                .col_expr(payment::Column::UpdatedAt, Expr::value(at))
                .filter(payment::Column::Id.eq(payment_id.as_uuid()))
                .exec(conn)
                .await?;
        }
    }
    Ok(())
}
