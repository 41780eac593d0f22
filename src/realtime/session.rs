//! One WebSocket connection: the protocol of DESIGN.md ("WebSocket").
//!
//! Server → client: the connection message, event envelopes, `pong`,
//! `subscribed`, `resync_required`, `error`. Client → server: `ping`,
//! `subscribe`. Close codes: 4001 (token expired or revoked), 4008 (slow
//! consumer), 1001 (idle for too long, or the server is stopping), 1011
//! (the log could not be read).

use std::{sync::Arc, time::Duration};

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

pub use super::hub::Viewer;
use super::{
    feed::{Feed, FeedError},
    hub::{Frame, Interest},
    metrics,
};
use crate::{
    app::AppState,
    auth::{
        Permission,
        extractors::{authenticate_admin, authenticate_user},
    },
    error::ApiError,
    events::{Cursor, TypeFilter},
};

/// An authenticated connection about to start.
pub struct Connection {
    pub viewer: Viewer,
    /// Kept to re-check the session while connected (logout, block, revoke).
    pub credential: SecretString,
    /// When the access token expires (API keys do not).
    pub expires_at: Option<DateTime<Utc>>,
    /// `?cursor=`: replay from here.
    pub cursor: Option<Cursor>,
    /// `?types=`: the initial filter.
    pub types: TypeFilter,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Ping,
    Subscribe {
        #[serde(default)]
        types: Option<Vec<String>>,
        #[serde(default)]
        cursor: Option<String>,
    },
}

/// Why a connection ends.
enum Stop {
    /// The client went away (or closed): nothing more to send.
    Gone,
    Close(u16, &'static str),
}

enum Wake {
    Stop(Stop),
    Tick,
    Client(Option<Result<AggregatedMessage, actix_ws::ProtocolError>>),
    Frame(Result<Arc<Frame>, FeedError>),
}

struct Live {
    state: Arc<AppState>,
    session: Session,
    feed: Feed,
    sent: ::metrics::Counter,
    credential: SecretString,
    last_heard: Instant,
}

/// Serves one connection until it ends (or the hub closes its queue when
/// the server stops).
#[tracing::instrument(name = "ws_session", skip_all, fields(feed = connection.viewer.feed_name()))]
pub async fn run(
    state: Arc<AppState>,
    session: Session,
    mut stream: AggregatedMessageStream,
    connection: Connection,
) {
    let feed_name = connection.viewer.feed_name();
    let _connected = metrics::Connected::new(feed_name);
    let config = state.config.realtime.clone();
    let feed = Feed::new(
        &state.hub,
        Interest {
            viewer: connection.viewer,
            types: connection.types,
        },
    );
    let head = feed.cursor();
    let types = feed
        .interest()
        .read()
        .map(|i| i.types.to_strings())
        .unwrap_or_default();
    let mut live = Live {
        state,
        session,
        feed,
        sent: metrics::sent(feed_name),
        credential: connection.credential,
        last_heard: Instant::now(),
    };
    tracing::debug!("connected");

    let start = connection.cursor.unwrap_or(head);
    let greeting = Box::new(json!({
        "type": "connection",
        "status": "connected",
        "message": format!("connected to the {feed_name} event feed"),
        "cursor": start,
        "head": head,
        "types": types,
    }));
    let mut outcome = Box::pin(live.send_json(&greeting)).await;
    drop(greeting);
    if outcome.is_ok()
        && let Some(cursor) = connection.cursor
    {
        outcome = Box::pin(live.resume(cursor)).await;
    }

    let expiry = sleep_until_some(connection.expires_at.map(|at| {
        let left = (at - Utc::now()).to_std().unwrap_or_default();
        Instant::now() + left
    }));
    tokio::pin!(expiry);
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while outcome.is_ok() {
        let wake = tokio::select! {
            biased;
            () = &mut expiry => Wake::Stop(Stop::Close(4001, "token expired")),
            _ = ping.tick() => Wake::Tick,
            message = stream.recv() => Wake::Client(message),
            frame = live.feed.next() => Wake::Frame(frame),
        };
        outcome = match wake {
            Wake::Stop(stop) => Err(stop),
            // Rare and large (database queries): boxed, so that they do not
            // make every idle connection's task as big as they are.
            Wake::Tick => Box::pin(live.on_ping_tick(config.idle_timeout)).await,
            Wake::Client(message) => Box::pin(live.on_client_message(message)).await,
            Wake::Frame(frame) => live.on_frame(frame).await,
        };
    }
    match outcome {
        Err(Stop::Close(code, why)) => {
            tracing::debug!(code, why, "closing");
            if code == 4008 {
                metrics::slow_consumer(feed_name);
            }
            // A client that stopped reading may never take the close frame:
            // give it as long as an idle client gets, then let go.
            let reason = CloseReason {
                code: CloseCode::Other(code),
                description: Some(why.to_owned()),
            };
            let _ =
                tokio::time::timeout(config.idle_timeout, live.session.close(Some(reason))).await;
        }
        Err(Stop::Gone) | Ok(()) => {
            tracing::debug!("client gone");
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Live {
    async fn on_frame(&mut self, frame: Result<Arc<Frame>, FeedError>) -> Result<(), Stop> {
        let frame = match frame {
            Ok(frame) => frame,
            Err(FeedError::Overflow) => return Err(Stop::Close(4008, "slow consumer")),
            Err(FeedError::Closed) => return Err(Stop::Close(1001, "the server is stopping")),
            Err(FeedError::Db(e)) => {
                tracing::warn!(error = %e, "cannot replay the log to a client");
                return Err(Stop::Close(1011, "cannot read the event log; reconnect"));
            }
        };
        // Queued frames were chosen by the hub; replayed ones were not.
        let wanted = self
            .feed
            .interest()
            .read()
            .map(|interest| interest.wants(&frame))
            .unwrap_or(false);
        if !wanted {
            return Ok(());
        }
        self.send(frame.json.clone()).await?;
        self.sent.increment(1);
        Ok(())
    }

    async fn on_client_message(
        &mut self,
        message: Option<Result<AggregatedMessage, actix_ws::ProtocolError>>,
    ) -> Result<(), Stop> {
        self.last_heard = Instant::now();
        let text = match message {
            None | Some(Ok(AggregatedMessage::Close(_))) => return Err(Stop::Gone),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "protocol error from the client");
                return Err(Stop::Close(1002, "protocol error"));
            }
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                return self.session.pong(&bytes).await.map_err(|_| Stop::Gone);
            }
            Some(Ok(AggregatedMessage::Pong(_))) => return Ok(()),
            Some(Ok(AggregatedMessage::Binary(_))) => {
                return self
                    .error("invalid_message", "messages are JSON text")
                    .await;
            }
            Some(Ok(AggregatedMessage::Text(text))) => text,
        };
        match serde_json::from_str::<ClientMessage>(&text) {
            Ok(ClientMessage::Ping) => self.send_json(&json!({"type": "pong"})).await,
            Ok(ClientMessage::Subscribe { types, cursor }) => self.subscribe(types, cursor).await,
            Err(e) => {
                self.error(
                    "invalid_message",
                    &format!("expected {{\"type\":\"ping\"}} or {{\"type\":\"subscribe\",…}}: {e}"),
                )
                .await
            }
        }
    }

    async fn subscribe(
        &mut self,
        types: Option<Vec<String>>,
        cursor: Option<String>,
    ) -> Result<(), Stop> {
        let cursor = match cursor.map(|raw| raw.parse::<Cursor>()) {
            None => None,
            Some(Ok(cursor)) => Some(cursor),
            Some(Err(e)) => return self.error("invalid_cursor", &e.to_string()).await,
        };
        if let Some(types) = types {
            match TypeFilter::parse(types.iter().map(String::as_str)) {
                Ok(filter) => {
                    if let Ok(mut interest) = self.feed.interest().write() {
                        interest.types = filter;
                    }
                }
                Err(e) => return self.error("invalid_types", &e.to_string()).await,
            }
        }
        let from = cursor.unwrap_or(self.feed.cursor());
        let types = self
            .feed
            .interest()
            .read()
            .map(|i| i.types.to_strings())
            .unwrap_or_default();
        self.send_json(&json!({
            "type": "subscribed",
            "types": types,
            "cursor": from,
        }))
        .await?;
        match cursor {
            Some(cursor) => self.resume(cursor).await,
            None => Ok(()),
        }
    }

    /// Replays after `cursor`, or tells the client to resync when that is
    /// more than the replay limit.
    async fn resume(&mut self, cursor: Cursor) -> Result<(), Stop> {
        let limit = self.state.config.realtime.replay_limit;
        let behind = match self.state.store.count_after(cursor, limit + 1).await {
            Ok(behind) => behind,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the events to replay");
                return Err(Stop::Close(1011, "cannot read the event log; reconnect"));
            }
        };
        if behind > limit {
            self.feed.skip_to_head();
            return self
                .send_json(&json!({
                    "type": "resync_required",
                    "message": format!(
                        "more than {limit} events happened since that cursor: reload the state through the API; live events continue from `cursor`"
                    ),
                    "cursor": self.feed.cursor(),
                }))
                .await;
        }
        self.feed.rewind(cursor);
        Ok(())
    }

    async fn on_ping_tick(&mut self, idle_timeout: Duration) -> Result<(), Stop> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(Stop::Close(1001, "idle for too long"));
        }
        if self.session.ping(b"").await.is_err() {
            return Err(Stop::Gone);
        }
        self.recheck().await
    }

    /// The session may have ended (logout, password change, blocked user,
    /// revoked key) or the admin's role changed since the upgrade.
    async fn recheck(&mut self) -> Result<(), Stop> {
        let credential = self.credential.expose_secret();
        let viewer = self.feed.interest().read().map(|i| i.viewer.clone());
        let Ok(viewer) = viewer else {
            return Ok(());
        };
        let outcome = match viewer {
            Viewer::Admin { .. } => {
                authenticate_admin(&self.state, credential)
                    .await
                    .and_then(|admin| {
                        admin.require(Permission::EventsRead)?;
                        Ok(Viewer::Admin {
                            permissions: admin.permissions,
                        })
                    })
            }
            Viewer::User { .. } => authenticate_user(&self.state, credential)
                .await
                .map(|user| Viewer::User { id: user.id }),
        };
        match outcome {
            Ok(viewer) => {
                if let Ok(mut interest) = self.feed.interest().write() {
                    interest.viewer = viewer;
                }
                Ok(())
            }
            Err(ApiError::Problem(_)) => Err(Stop::Close(4001, "token revoked")),
            // The database is briefly unreachable: not the client's fault.
            Err(ApiError::Internal(e)) => {
                tracing::warn!(error = %e, "cannot re-check a live feed's session");
                Ok(())
            }
        }
    }

    async fn error(&mut self, code: &str, message: &str) -> Result<(), Stop> {
        self.send_json(&json!({"type": "error", "code": code, "message": message}))
            .await
    }

    async fn send_json(&mut self, value: &serde_json::Value) -> Result<(), Stop> {
        self.send(ByteString::from(value.to_string())).await
    }

    /// Sends, noticing meanwhile if the client stopped reading for so long
    /// that its queue overflowed.
    async fn send(&mut self, text: ByteString) -> Result<(), Stop> {
        let send = self.session.text(text);
        tokio::pin!(send);
        loop {
            tokio::select! {
                sent = &mut send => return sent.map_err(|_| Stop::Gone),
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    if self.feed.overflowed() {
                        return Err(Stop::Close(4008, "slow consumer"));
                    }
                }
            }
        }
    }
}
