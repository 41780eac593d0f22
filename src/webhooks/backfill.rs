//! Backfills: events already in the log queued for an endpoint (a new one
//! above all), from a time or a cursor anywhere in the log, through the
//! endpoint's filter, up to the head as it was when the backfill started
//! (what came after is queued as it is appended).
//!
//! Paced: each running backfill queues at most its rate a second, and
//! nothing while [`WINDOW`] of its deliveries wait, so the live deliveries
//! of the endpoint never queue behind more than that. Any instance may move
//! a backfill on, once a second whichever instance it is: a step is skipped
//! when the backfill moved less than a second ago, and dropped when it
//! finds the backfill moved on or cancelled meanwhile. Cancelling withdraws
//! what it queued that is not being sent yet.

use std::{sync::Arc, time::Duration};

use sea_orm::DbErr;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{self, BackfillRow, Backfilled};
use crate::{
    db::Db,
    events::{EventStore, TypeFilter},
};

/// A backfill's deliveries waiting to be sent, at most.
pub const WINDOW: i64 = 100;
/// Events read per step, at most (a filter may match few of them).
const SCAN_LIMIT: i64 = 20_000;
const TICK: Duration = Duration::from_secs(1);
/// A backfill moves on this long after its last step, at the soonest (a
/// little under the tick, which drifts).
const STEP_EVERY_MS: i64 = 900;

/// Moves every running backfill on, once a second, until `shutdown`.
pub async fn run(db: Db, store: EventStore, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
        let running = match store::running_backfills(&db).await {
            Ok(running) => running,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the running webhook backfills");
                continue;
            }
        };
        for backfill in running {
            match step(&db, &store, &backfill).await {
                Ok(0) => {}
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(
                    endpoint = %backfill.endpoint_id,
                    error = %e,
                    "cannot move a webhook backfill on"
                ),
            }
        }
    }
}

/// Queues the next part of `backfill`; returns how many were queued.
async fn step(db: &Db, log: &EventStore, backfill: &BackfillRow) -> Result<usize, DbErr> {
    if store::now_ms() - backfill.updated_at_ms < STEP_EVERY_MS {
        return Ok(0);
    }
    let Some(endpoint) = store::get_endpoint(db, backfill.endpoint_id).await? else {
        return Ok(0);
    };
    let waiting =
        i64::try_from(store::backfill_counts(db, endpoint.id).await?.pending).unwrap_or(i64::MAX);
    let budget = usize::try_from(backfill.rate.min(WINDOW - waiting)).unwrap_or(0);
    if budget == 0 {
        return Ok(0);
    }
    let Ok(filter) = TypeFilter::parse(endpoint.event_types.iter().map(String::as_str)) else {
        tracing::warn!(endpoint = %endpoint.id, "a backfilled endpoint's filter does not parse");
        return Ok(0);
    };
    let target = log.normalize(backfill.target);
    let mut cursor = backfill.cursor;
    let mut scanned = 0i64;
    let mut picked = Vec::new();
    let mut done = log.normalize(cursor) >= target;
    'scan: while !done && scanned < SCAN_LIMIT && picked.len() < budget {
        let page = log.read_all(cursor, 500).await?;
        if page.events.is_empty() {
            // The head moved back (never) or the horizon holds the rest:
            // look again at the next step.
            break;
        }
        for event in page.events {
            if event.cursor > target {
                done = true;
                break 'scan;
            }
            cursor = event.cursor;
            scanned += 1;
            let recent = backfill
                .since_ms
                .is_none_or(|since| event.occurred_at.timestamp_millis() >= since);
            if recent && filter.matches(event.event_type.as_str()) {
                picked.push(Backfilled {
                    event_id: event.id,
                    event_type: event.event_type.as_str().to_owned(),
                    cursor: event.cursor,
                });
                if picked.len() == budget {
                    break 'scan;
                }
            }
        }
        done = log.normalize(cursor) >= target;
    }
    done |= log.normalize(cursor) >= target;
    let moved = store::advance_backfill(db, backfill, cursor, scanned, &picked, done).await?;
    if !moved {
        return Ok(0);
    }
    if done {
        tracing::info!(endpoint = %endpoint.id, "webhook backfill completed");
    }
    Ok(picked.len())
}
