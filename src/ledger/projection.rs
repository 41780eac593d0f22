//! The `balances`, `transactions` and `payments` read models.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseExecutor, EntityTrait, QueryFilter,
    Set, Value,
    sea_query::{Expr, OnConflict},
};
use serde_json::{Value as Json, json};

use super::domain::{BalanceEvent, PaymentEvent};
use crate::{
    db::entities::{balance, payment, transaction},
    domain::DomainEvent,
    events::{DecodeError, RecordedEvent},
    projections::{Fused, Projection, ProjectionError},
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

    fn fused(&self, events: &[&RecordedEvent], first: usize) -> Result<Option<Fused>, DecodeError> {
        fused(events, first).map(Some)
    }
}

/// A transaction's kind as the `transactions` table keeps it (`deposit`,
/// `referral_reward`…).
fn kind_text(kind: super::domain::TransactionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A time as the plain implementation stores it: whole microseconds.
fn micros(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A payment as the events of one append leave it.
enum PaymentRow {
    /// Created by them: the row to insert.
    New(Json),
    /// One made before: what they change.
    Changed(Json),
}

/// The ledger's events projected by the statement that appends them
/// ([`Fused`]): what applying them one by one leaves, written at once.
/// A statement does not see its own writes, so each payment's events are
/// folded into the one insert or update they come to, and each balance
/// into its last transaction; every row is joined to the event it comes
/// from in `written`, so nothing is written when the events are not.
fn fused(events: &[&RecordedEvent], first: usize) -> Result<Fused, DecodeError> {
    let mut payments: Vec<(uuid::Uuid, PaymentRow)> = Vec::new();
    let mut transactions = Vec::new();
    let mut balances: Vec<((uuid::Uuid, String), Json)> = Vec::new();
    for event in events {
        let at = micros(event.occurred_at);
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
            transactions.push(json!({
                "id": transaction_id.as_uuid(),
                "user_id": user_id.as_uuid(),
                "kind": kind_text(kind),
                "amount": amount,
                "currency": currency.as_str(),
                "balance_after": balance_after,
                "reference": reference,
                "description": description,
                "created_at": at,
                "event_id": event.id.as_uuid(),
            }));
            let key = (user_id.as_uuid(), currency.as_str().to_owned());
            let row = json!({
                "user_id": user_id.as_uuid(),
                "currency": currency.as_str(),
                "balance": balance_after,
                "updated_at": at,
                "version": i32::try_from(event.version).unwrap_or(i32::MAX),
                "event_id": event.id.as_uuid(),
            });
            match balances.iter_mut().find(|(k, _)| *k == key) {
                Some((_, last)) => *last = row,
                None => balances.push((key, row)),
            }
            continue;
        }
        let (payment_id, status, reason) = match PaymentEvent::from_recorded(event)? {
            PaymentEvent::Created {
                payment_id,
                user_id,
                amount,
                currency,
                provider,
                external_id,
            } => {
                let row = json!({
                    "id": payment_id.as_uuid(),
                    "user_id": user_id.as_uuid(),
                    "amount": amount.get(),
                    "currency": currency.as_str(),
                    "provider": provider,
                    "external_id": external_id,
                    "status": "pending",
                    "failure_reason": null,
                    "created_at": at,
                    "updated_at": at,
                    "event_id": event.id.as_uuid(),
                });
                payments.push((payment_id.as_uuid(), PaymentRow::New(row)));
                continue;
            }
            PaymentEvent::Completed { payment_id, .. } => (payment_id, "completed", None),
            PaymentEvent::Refunded { payment_id, .. } => (payment_id, "refunded", None),
            PaymentEvent::Failed {
                payment_id, reason, ..
            } => (payment_id, "failed", Some(reason)),
        };
        let id = payment_id.as_uuid();
        let n = match payments.iter().position(|(p, _)| *p == id) {
            Some(n) => n,
            None => {
                let changed = json!({"id": id, "failure_reason": null, "set_reason": false});
                payments.push((id, PaymentRow::Changed(changed)));
                payments.len() - 1
            }
        };
        let (_, PaymentRow::New(row) | PaymentRow::Changed(row)) = &mut payments[n];
        row["status"] = json!(status);
        row["updated_at"] = json!(at);
        row["event_id"] = json!(event.id.as_uuid());
        if let Some(reason) = reason {
            row["failure_reason"] = json!(reason);
            row["set_reason"] = json!(true);
        }
    }
    let (mut new, mut changed) = (Vec::new(), Vec::new());
    for (_, row) in payments {
        match row {
            PaymentRow::New(row) => new.push(row),
            PaymentRow::Changed(row) => changed.push(row),
        }
    }
    let balances: Vec<Json> = balances.into_iter().map(|(_, row)| row).collect();
    let p: Vec<String> = (first..first + 4).map(|n| format!("${n}")).collect();
    let sql = format!(
        ", fused_payments AS (INSERT INTO payments (id, user_id, amount, currency, provider, \
           external_id, status, failure_reason, created_at, updated_at) \
           SELECT r.id, r.user_id, r.amount, r.currency, r.provider, r.external_id, r.status, \
             r.failure_reason, r.created_at, r.updated_at \
           FROM jsonb_to_recordset({}::jsonb) AS r(id uuid, user_id uuid, amount int8, \
             currency text, provider text, external_id text, status text, failure_reason text, \
             created_at timestamptz, updated_at timestamptz, event_id uuid) \
           JOIN written AS w ON w.id = r.event_id), \
         fused_payment_changes AS (UPDATE payments AS t SET status = r.status, \
           updated_at = r.updated_at, \
           failure_reason = CASE WHEN r.set_reason THEN r.failure_reason ELSE t.failure_reason END \
           FROM jsonb_to_recordset({}::jsonb) AS r(id uuid, status text, failure_reason text, \
             set_reason bool, updated_at timestamptz, event_id uuid) \
           JOIN written AS w ON w.id = r.event_id \
           WHERE t.id = r.id), \
         fused_transactions AS (INSERT INTO transactions (id, user_id, kind, amount, currency, \
           balance_after, reference, description, created_at, position) \
           SELECT r.id, r.user_id, r.kind, r.amount, r.currency, r.balance_after, r.reference, \
             r.description, r.created_at, w.position \
           FROM jsonb_to_recordset({}::jsonb) AS r(id uuid, user_id uuid, kind text, amount int8, \
             currency text, balance_after int8, reference text, description text, \
             created_at timestamptz, event_id uuid) \
           JOIN written AS w ON w.id = r.event_id), \
         fused_balances AS (INSERT INTO balances (user_id, currency, balance, updated_at, version) \
           SELECT r.user_id, r.currency, r.balance, r.updated_at, r.version \
           FROM jsonb_to_recordset({}::jsonb) AS r(user_id uuid, currency text, balance int8, \
             updated_at timestamptz, version int4, event_id uuid) \
           JOIN written AS w ON w.id = r.event_id \
           ON CONFLICT (user_id, currency) DO UPDATE SET balance = EXCLUDED.balance, \
             updated_at = EXCLUDED.updated_at, version = EXCLUDED.version)",
        p[0], p[1], p[2], p[3]
    );
    let document = |rows: Vec<Json>| Value::Json(Some(Box::new(Json::Array(rows))));
    Ok(Fused {
        sql,
        values: vec![
            document(new),
            document(changed),
            document(transactions),
            document(balances),
        ],
    })
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
            kind: Set(kind_text(kind)),
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
