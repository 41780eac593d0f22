//! Long polling (`getUpdates`) for deployments without a public URL: the
//! same intake as the webhook. An update is stored before the next call
//! confirms it to Telegram (the call's `offset`), so one Telegram handed
//! over is never lost; it is recorded by the update processor as the
//! webhook's are.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::bot_api::{Answer, BotApi};
use crate::db::Db;

/// How long one `getUpdates` waits for updates: within the call's timeout.
pub fn long_poll(config: &crate::config::TelegramConfig) -> Duration {
    config
        .api_timeout
        .saturating_sub(Duration::from_secs(5))
        .clamp(Duration::from_secs(1), Duration::from_secs(50))
}

/// Polls until `shutdown`, waking the processor after each stored batch.
/// `api`'s timeout bounds how long one call may wait for updates.
pub async fn run(
    db: Db,
    api: BotApi,
    long_poll: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    tracing::info!("polling Telegram for updates (getUpdates)");
    let mut offset: Option<i64> = None;
    loop {
        let mut params = json!({"timeout": long_poll.as_secs(), "limit": 100});
        if let Some(offset) = offset {
            params["offset"] = json!(offset);
        }
        let answer = tokio::select! {
            () = shutdown.cancelled() => return,
            answer = api.call("getUpdates", &params) => answer,
        };
        let pause = match answer {
            Answer::Done(Value::Array(updates)) => match store_all(&db, &updates).await {
                Ok(next) => {
                    if next.is_some() {
                        offset = next;
                        wake.notify_one();
                    }
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store Telegram updates; asking for them again");
                    Duration::from_secs(1)
                }
            },
            Answer::Done(other) => {
                tracing::warn!(answer = %other, "getUpdates answered something else than a list");
                Duration::from_secs(5)
            }
            Answer::RetryAfter(seconds) => Duration::from_secs(seconds),
            Answer::Refused {
                code, description, ..
            } => {
                // 409: another poller, or a webhook is set for the bot.
                tracing::error!(code, %description, "Telegram refused getUpdates");
                Duration::from_secs(5)
            }
            Answer::Unavailable { code, description } => {
                tracing::warn!(code, %description, "Telegram could not answer getUpdates");
                Duration::from_secs(2)
            }
            Answer::NotReached(error) | Answer::Lost(error) => {
                tracing::warn!(%error, "getUpdates failed");
                Duration::from_secs(2)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Stores each update; the offset that confirms them all (`None` for none).
async fn store_all(db: &Db, updates: &[Value]) -> Result<Option<i64>, sea_orm::DbErr> {
    let mut next = None;
    for update in updates {
        let Some(update_id) = update.get("update_id").and_then(Value::as_i64) else {
            tracing::warn!("getUpdates gave an update without an update_id; skipped");
            continue;
        };
        if super::updates::is_update(update) {
            super::intake::store(db, update_id, update).await?;
        } else {
            tracing::warn!(
                update_id,
                "getUpdates gave something that is not an update; skipped"
            );
        }
        next = Some(next.map_or(update_id, |n: i64| n.max(update_id)));
    }
    Ok(next.map(|n| n + 1))
}
