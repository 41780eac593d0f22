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
use sea_orm::{ConnectionTrait, DbErr, Statement, Value as DbValue};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::domain::{Update, UpdateCommand, UpdateError};
use crate::{
    app::AppState,
    db::{Db, WriteTxn},
    domain::{Command, CommandError, Commands, Target, Work},
    error::{ApiError, Problem},
    events::{Actor, ActorKind, RecordedEvent},
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

/// Whether `given` is `secret`, in time that does not depend on where they
/// differ (nor on the secret's length: digests are compared).
fn secret_matches(given: &[u8], secret: &str) -> bool {
    let given = Sha256::digest(given);
    let secret = Sha256::digest(secret.as_bytes());
    given.ct_eq(&secret).into()
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
    if !secret_matches(given, secret.expose_secret()) {
        return Err(
            Problem::unauthorized("a missing or wrong X-Telegram-Bot-Api-Secret-Token").into(),
        );
    }
    let update: Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON")
            .detail(e.to_string())
    })?;
    let Some(update_id) = update
        .get("update_id")
        .and_then(Value::as_i64)
        .filter(|id| *id >= 0)
    else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "Invalid request body",
        )
        .detail("an update is an object with a non-negative integer `update_id`")
        .into());
    };
    let stored = store(&state.db, update_id, &update).await?;
    if stored {
        state.telegram_wake.notify_one();
    } else {
        tracing::debug!(update_id, "a Telegram update arrived again");
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({"ok": true})))
}

/// Stores an update unless it is stored already (false then).
async fn store(db: &Db, update_id: i64, update: &Value) -> Result<bool, DbErr> {
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

async fn mark_processed(conn: &impl ConnectionTrait, db: &Db, update_id: i64) -> Result<(), DbErr> {
    conn.execute_raw(statement(
        db,
        "UPDATE telegram_updates SET processed_at_ms = $2 \
         WHERE update_id = $1 AND processed_at_ms IS NULL",
        vec![update_id.into(), now_ms().into()],
    ))
    .await?;
    Ok(())
}

/// Records one stored update in the log and marks it processed, together.
struct RecordUpdate {
    db: Db,
    update_id: i64,
    update: Value,
}

impl Command for RecordUpdate {
    type Output = ();
    type Error = UpdateError;

    fn writes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Update>(self.update_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), UpdateError> {
        work.execute::<Update>(
            self.update_id,
            UpdateCommand::Record {
                update_id: self.update_id,
                update: self.update.clone(),
            },
        )?;
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<UpdateError>> {
        mark_processed(&**txn, &self.db, self.update_id).await?;
        Ok(())
    }
}

/// Records stored updates in the log as they arrive (woken by the webhook;
/// every second too, for what another instance stored or a crash left),
/// until `shutdown`.
pub async fn run(db: Db, commands: Commands, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        match waiting(&db).await {
            Ok(updates) => {
                let full = updates.len() as i64 == BATCH;
                for (update_id, body) in updates {
                    record(&db, &commands, update_id, &body).await;
                }
                if full {
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

async fn record(db: &Db, commands: &Commands, update_id: i64, body: &str) {
    let Ok(update) = serde_json::from_str::<Value>(body) else {
        // Stored only once it parsed; nothing else writes the table.
        tracing::error!(
            update_id,
            "a stored Telegram update is not JSON; left unprocessed"
        );
        return;
    };
    let command = RecordUpdate {
        db: db.clone(),
        update_id,
        update,
    };
    match commands
        .run(command, Actor::new(ActorKind::Telegram, "telegram"))
        .await
    {
        Ok(_) => {}
        // Recorded before a crash kept it from being marked.
        Err(CommandError::Domain(UpdateError::AlreadyRecorded)) => {
            let marked = db
                .write_once(async |conn| mark_processed(conn, db, update_id).await)
                .await;
            if let Err(e) = marked {
                tracing::warn!(update_id, error = %e, "cannot mark a Telegram update processed");
            }
        }
        Err(e) => tracing::warn!(update_id, error = %e, "cannot record a Telegram update"),
    }
}
