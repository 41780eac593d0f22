//! Delivers users' messages to the helpdesk: the oldest waiting message of
//! each visitor (the next waits until it ended), several visitors at
//! once, each retried with the same message id after a 429, a 5xx or no
//! answer, with a growing delay (the helpdesk's `Retry-After` when longer).
//! A refusal (another 4xx, or an error in a 200's body) or the last retry
//! ends it as `helpdesk.relay_failed`. Every attempt's answer is kept;
//! the text is erased once the relay ended.

use std::{sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    domain::{Direction, HelpdeskError, HelpdeskEvent, Relayed, Visitor},
    store::{self, Attempt, RelayRow},
};
use crate::{
    db::{Db, WriteTxn},
    domain::{Command, CommandError, Commands, Target, Work},
    events::{Actor, RecordedEvent},
    settings::{Helpdesk, Settings},
    webhooks::ssrf::{AddressPolicy, GuardedResolver},
};

/// Relays delivered side by side, at most.
const MOST: usize = 16;
/// A helpdesk that has not answered by then is tried again later.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Tries before a relay fails for good (about an hour of retries).
pub const MAX_ATTEMPTS: i32 = 15;

pub struct Relay {
    pub db: Db,
    pub commands: Commands,
    pub settings: Settings,
    pub policy: AddressPolicy,
    /// Woken when a message is queued for the helpdesk.
    pub wake: Arc<Notify>,
}

/// How one attempt went.
enum Outcome {
    Delivered {
        status: u16,
        chat_id: Option<String>,
    },
    /// Not to be tried again.
    Refused { status: Option<u16>, error: String },
    /// To be tried again (after at least `retry_after_ms`, if given).
    Transient {
        status: Option<u16>,
        error: String,
        retry_after_ms: Option<i64>,
    },
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) {
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Switchboard-Helpdesk/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy.clone(),
            }))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the helpdesk client; messages wait in the outbox");
                return;
            }
        };
        loop {
            let busy = match self.settings.get::<Helpdesk>().await {
                Ok(Some(helpdesk)) if helpdesk.enabled => match self.pass(&client, &helpdesk).await
                {
                    Ok(n) => n > 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the helpdesk outbox");
                        false
                    }
                },
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the helpdesk settings; messages wait");
                    false
                }
            };
            if busy && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                // Retries fall due, settings change: look again soon.
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Delivers what is due; how many relays it took.
    async fn pass(&self, client: &reqwest::Client, helpdesk: &Helpdesk) -> anyhow::Result<usize> {
        let now = now_ms();
        let lease = i64::try_from((TIMEOUT * 2).as_millis()).unwrap_or(i64::MAX);
        let claimed = store::claim(&self.db, MOST, now, now + lease).await?;
        let n = claimed.len();
        futures::future::join_all(
            claimed
                .into_iter()
                .map(|relay| self.deliver(client, helpdesk, relay)),
        )
        .await;
        Ok(n)
    }

    async fn deliver(&self, client: &reqwest::Client, helpdesk: &Helpdesk, relay: RelayRow) {
        let started = Instant::now();
        let attempted_at_ms = now_ms();
        let outcome = self.call(client, helpdesk, &relay).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (status, error) = match &outcome {
            Outcome::Delivered { status, .. } => (Some(*status), None),
            Outcome::Refused { status, error } | Outcome::Transient { status, error, .. } => {
                (*status, Some(error.clone()))
            }
        };
        let attempt = Attempt {
            attempt: relay.attempts,
            attempted_at_ms,
            duration_ms,
            status,
            error,
        };
        let relayed = |chat_id: Option<String>| Relayed {
            direction: Direction::ToHelpdesk,
            visitor_id: relay.visitor_id.clone(),
            user_id: relay.user_id,
            message_id: relay.message_id.clone(),
            delivered_as: None,
            chat_id,
            length: relay.length,
        };
        let ended = match outcome {
            Outcome::Delivered { chat_id, .. } => {
                tracing::info!(relay = %relay.id, visitor = %relay.visitor_id, message = %relay.message_id, attempt = relay.attempts, duration_ms, "a message was relayed to the helpdesk");
                Ended {
                    event: HelpdeskEvent::MessageRelayed(relayed(chat_id.clone())),
                    chat_id,
                }
            }
            Outcome::Transient {
                retry_after_ms,
                status,
                error,
            } if relay.attempts < MAX_ATTEMPTS => {
                let delay = backoff(relay.attempts).max(retry_after_ms.unwrap_or(0));
                tracing::warn!(relay = %relay.id, visitor = %relay.visitor_id, attempt = relay.attempts, status, error = %error, retry_in_ms = delay, duration_ms, "the helpdesk did not take a message; it is tried again");
                if let Err(e) = store::retry(&self.db, &relay, &attempt, now_ms() + delay).await {
                    tracing::warn!(relay = %relay.id, error = %e, "cannot record a helpdesk attempt; its lease will run out and it is tried again");
                }
                return;
            }
            Outcome::Refused { status, error } | Outcome::Transient { status, error, .. } => {
                tracing::error!(relay = %relay.id, visitor = %relay.visitor_id, attempt = relay.attempts, status, error = %error, duration_ms, "a message could not be relayed to the helpdesk");
                Ended {
                    event: HelpdeskEvent::RelayFailed {
                        relay: relayed(None),
                        attempts: relay.attempts,
                        status,
                        error,
                    },
                    chat_id: None,
                }
            }
        };
        let command = EndRelay {
            db: self.db.clone(),
            relay,
            attempt,
            ended,
        };
        match self.commands.run(command, Actor::system()).await {
            Ok(_) => {}
            Err(CommandError::Domain(HelpdeskError::Superseded)) => {
                tracing::info!(
                    "a relay's outcome came after its lease ran out; the attempt that took it over records it"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a relay's outcome; its lease will run out and it is delivered again (the helpdesk takes a message id once)")
            }
        }
    }

    async fn call(
        &self,
        client: &reqwest::Client,
        helpdesk: &Helpdesk,
        relay: &RelayRow,
    ) -> Outcome {
        let Some(out) = &relay.body else {
            return Outcome::Refused {
                status: None,
                error: "the message's text is gone".to_owned(),
            };
        };
        let request = super::request(helpdesk, out);
        let url = super::endpoint(&helpdesk.base_url, request.path);
        if let Err(refused) = self.reachable(&url) {
            return Outcome::Transient {
                status: None,
                error: refused,
                retry_after_ms: None,
            };
        }
        let mut call = client.post(url).json(&request.body);
        if let Some((name, value)) = &request.authorization {
            call = call.header(*name, value);
        }
        let response = match call.send().await {
            Ok(response) => response,
            Err(e) => {
                return Outcome::Transient {
                    status: None,
                    error: describe(&e),
                    retry_after_ms: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after_ms = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|s| s.clamp(0, 3600) * 1000);
        let body = response.bytes().await.unwrap_or_default();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        match status {
            200..=299 => match super::accepted(helpdesk.kind, &answer) {
                Ok(chat_id) => Outcome::Delivered { status, chat_id },
                Err(error) => Outcome::Refused {
                    status: Some(status),
                    error: format!("refused: {error}"),
                },
            },
            408 | 429 | 500..=599 => Outcome::Transient {
                status: Some(status),
                error: format!("HTTP {status}"),
                retry_after_ms,
            },
            _ => Outcome::Refused {
                status: Some(status),
                error: format!("HTTP {status}"),
            },
        }
    }

    /// Whether the helpdesk's URL may be reached: `https://`, or
    /// `http://` to a literal address of the allow list (the SSRF guard
    /// applies to both).
    fn reachable(&self, url: &url::Url) -> Result<(), String> {
        if let Some(refused) = self.policy.refuses_literal(url) {
            return Err(format!("the helpdesk URL is refused: {refused}"));
        }
        if url.scheme() == "http" && !self.policy.lists_literal(url) {
            return Err(
                "the helpdesk URL is http:// but not to an address of SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS: use https://"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The delay before retry `attempts + 1`: 1 s, 2 s, 4 s, … up to 10 min.
fn backoff(attempts: i32) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    1000i64.saturating_mul(1 << exponent).min(600_000)
}

/// A transport error, without its URL.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Ended {
    event: HelpdeskEvent,
    chat_id: Option<String>,
}

/// A relay's end recorded: its event, its row (the text erased), the
/// attempt and the helpdesk's chat of its visitor.
struct EndRelay {
    db: Db,
    relay: RelayRow,
    attempt: Attempt,
    ended: Ended,
}

impl Command for EndRelay {
    type Output = ();
    type Error = HelpdeskError;

    fn writes(&self) -> bool {
        true
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Visitor>(&self.relay.visitor_id)]
    }

    fn decide(&self, work: &mut Work<'_>) -> Result<(), HelpdeskError> {
        work.execute::<Visitor>(&self.relay.visitor_id, self.ended.event.clone())?;
        Ok(())
    }

    async fn write(
        &self,
        txn: &WriteTxn,
        _output: &mut (),
        _events: &[RecordedEvent],
    ) -> Result<(), CommandError<HelpdeskError>> {
        let conn = &**txn;
        let status = match self.ended.event {
            HelpdeskEvent::MessageRelayed(_) => "delivered",
            _ => "failed",
        };
        if !store::end(conn, &self.db, &self.relay, status, &self.attempt).await? {
            return Err(CommandError::Domain(HelpdeskError::Superseded));
        }
        if let Some(chat_id) = &self.ended.chat_id {
            store::set_chat(conn, &self.db, &self.relay.visitor_id, chat_id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_twice_as_long_each_time_up_to_ten_minutes() {
        assert_eq!(backoff(1), 1000);
        assert_eq!(backoff(2), 2000);
        assert_eq!(backoff(4), 8000);
        assert_eq!(backoff(MAX_ATTEMPTS), 600_000);
    }
}
