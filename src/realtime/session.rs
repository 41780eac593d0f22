//! One WebSocket connection: the protocol of DESIGN.md ("WebSocket").
//!
//! Server → client: the connection message, event envelopes, `pong`,
//! `subscribed`, `authenticated`, `resync_required`, `error`. Client →
//! server: `ping`, `subscribe`, `auth` (a fresh token for the same
//! principal, which extends the connection past the old one's expiry).
//! Close codes: 4001 (token expired or revoked), 4008 (slow
//! consumer), 1001 (idle for too long, or the server is stopping), 1011
//! (the log could not be read), 1002 (a protocol error from the client),
//! 1007 (text that is not UTF-8).
//!
//! A connection is served by the body of its `101 Switching Protocols`
//! response: the HTTP connection's own task polls it for the next bytes to
//! write, and it reads the client's frames from the request payload in the
//! same poll. A frame queued by the hub thus wakes exactly one task, and no
//! channel or task sits between the hub and the socket (with thousands of
//! idle clients, that is a few KiB per connection less). Frames are parsed
//! and written by actix-http's WebSocket codec.

use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use actix_codec::{Decoder, Encoder};
use actix_http::{
    Payload,
    ws::{self, CloseCode, CloseReason, Codec, HandshakeError, Item, Message, ProtocolError},
};
use actix_web::{
    HttpRequest, HttpResponse,
    body::{BodyStream, MessageBody},
    web::{Bytes, BytesMut},
};
use bytestring::ByteString;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::time::{Instant, Interval, Sleep};
use tracing::Instrument;

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
        extractors::{AdminPrincipal, authenticate_admin, authenticate_user},
        tokens::Audience,
    },
    error::{ApiError, Problem},
    events::{Cursor, TypeFilter},
    ids::{AdminId, ApiKeyId, UserId},
    realtime::audience::permission_for,
};

/// Largest message a client may send (they are small JSON commands).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// A frame's header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;
/// Room kept for the client's next frames; a larger buffer left by a large
/// message is given back.
const KEEP_INBOUND: usize = 4 * 1024;

/// Which feed a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// `GET /ws`: admins and API keys.
    Admin,
    /// `GET /api/v1/cabinet/ws`: a cabinet user.
    Cabinet,
}

/// Who a connection is for; a fresh token must name the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin(AdminId),
    ApiKey(ApiKeyId),
    User(UserId),
}

/// A checked credential: whose it is, what they may see, until when.
pub struct SignedIn {
    pub principal: Principal,
    pub viewer: Viewer,
    /// When the access token expires (API keys do not).
    pub expires_at: Option<DateTime<Utc>>,
    /// The event families the viewer may see (`ticket.*`, …).
    pub visible: Vec<String>,
}

/// Checks `credential` for a feed: a 401 or 403 problem otherwise. An
/// admin who may read no event family at all is refused, naming the
/// permissions that would show some.
pub async fn authenticate(
    state: &AppState,
    feed: FeedKind,
    credential: &str,
) -> Result<SignedIn, ApiError> {
    match feed {
        FeedKind::Admin => {
            let admin = authenticate_admin(state, credential).await?;
            admin.require(Permission::EventsRead)?;
            let families = families();
            let visible: Vec<String> = families
                .iter()
                .filter(|family| admin.permissions.contains(&permission_for(family)))
                .map(|family| format!("{family}.*"))
                .collect();
            if visible.is_empty() {
                let needed: std::collections::BTreeSet<String> = families
                    .iter()
                    .map(|family| format!("`{}`", permission_for(family)))
                    .collect();
                return Err(Problem::forbidden(format!(
                    "this feed would show nothing: reading events needs one of {} besides `events:read`",
                    needed.into_iter().collect::<Vec<_>>().join(", ")
                ))
                .into());
            }
            let (principal, expires_at) = match &admin.principal {
                AdminPrincipal::Admin { id, .. } => (
                    Principal::Admin(*id),
                    expiry(state, credential, Audience::Admin),
                ),
                AdminPrincipal::ApiKey { id, .. } => (Principal::ApiKey(*id), None),
            };
            Ok(SignedIn {
                principal,
                viewer: Viewer::Admin {
                    permissions: admin.permissions,
                },
                expires_at,
                visible,
            })
        }
        FeedKind::Cabinet => {
            let user = authenticate_user(state, credential).await?;
            Ok(SignedIn {
                principal: Principal::User(user.id),
                viewer: Viewer::User { id: user.id },
                expires_at: expiry(state, credential, Audience::Cabinet),
                visible: families()
                    .iter()
                    .map(|family| format!("{family}.*"))
                    .collect(),
            })
        }
    }
}

/// The event families of the catalogue (`ticket`, `payment`, …), sorted.
fn families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = crate::domain::catalogue()
        .into_iter()
        .filter_map(|name| name.split('.').next())
        .collect();
    families.sort_unstable();
    families.dedup();
    families
}

fn expiry(state: &AppState, token: &str, audience: Audience) -> Option<DateTime<Utc>> {
    state
        .jwt
        .verify(token, audience)
        .and_then(|claims| DateTime::from_timestamp(claims.exp, 0))
}

/// An authenticated connection about to start.
pub struct Connection {
    pub signed_in: SignedIn,
    /// Kept to re-check the session while connected (logout, block, revoke).
    pub credential: SecretString,
    /// `?cursor=`: replay from here.
    pub cursor: Option<Cursor>,
    /// `?types=`: the initial filter.
    pub types: TypeFilter,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Ping,
    Auth {
        token: String,
    },
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

/// A whole message from the client (continuation frames put together).
enum Inbound {
    Text(Bytes),
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
}

enum Wake {
    Stop(Stop),
    Tick,
    Client(Option<Result<Inbound, ProtocolError>>),
    Frame(Result<Arc<Frame>, FeedError>),
}

/// The response that switches `req`'s connection to the WebSocket protocol
/// and then serves it, or why the request is not a WebSocket handshake.
pub fn respond(
    req: &HttpRequest,
    payload: Payload,
    state: Arc<AppState>,
    connection: Connection,
) -> Result<HttpResponse, HandshakeError> {
    let mut response = ws::handshake(req.head())?;
    let live = Live::start(state, payload, connection);
    let body = futures::stream::unfold(live, |mut live| async move {
        let span = live.span.clone();
        let bytes = live.next_bytes().instrument(span).await?;
        Some((Ok::<_, Infallible>(bytes), live))
    });
    Ok(match response.message_body(BodyStream::new(body).boxed()) {
        Ok(response) => response.into(),
        Err(e) => HttpResponse::from_error(e),
    })
}

struct Live {
    state: Arc<AppState>,
    feed: Feed,
    feed_name: &'static str,
    _connected: metrics::Connected,
    sent: ::metrics::Counter,
    principal: Principal,
    credential: SecretString,
    /// The client's frames: what arrived and is not parsed yet.
    payload: Payload,
    inbound: BytesMut,
    codec: Codec,
    /// A message arriving in continuation frames (`true`: text).
    fragments: Option<(bool, BytesMut)>,
    /// Frames to write, handed to the connection when the step ends.
    out: BytesMut,
    /// A close frame is in `out`: nothing follows it.
    closing: bool,
    /// Replay from here before the first step (`?cursor=`).
    start_from: Option<Cursor>,
    last_heard: Instant,
    ping: Interval,
    idle_timeout: Duration,
    expiry: Option<Pin<Box<Sleep>>>,
    span: tracing::Span,
}

impl Live {
    fn start(state: Arc<AppState>, payload: Payload, connection: Connection) -> Self {
        let Connection {
            signed_in,
            credential,
            cursor,
            types,
        } = connection;
        let feed_name = signed_in.viewer.feed_name();
        let span = tracing::debug_span!("ws_session", feed = feed_name);
        let config = state.config.realtime.clone();
        let feed = Feed::new(
            &state.hub,
            Interest {
                viewer: signed_in.viewer,
                types,
            },
        );
        let head = feed.cursor();
        let types = feed
            .interest()
            .read()
            .map(|i| i.types.to_strings())
            .unwrap_or_default();
        let expiry = signed_in.expires_at.map(sleep_until_expiry);
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut live = Self {
            state,
            feed,
            feed_name,
            _connected: metrics::Connected::new(feed_name),
            sent: metrics::sent(feed_name),
            principal: signed_in.principal,
            credential,
            payload,
            inbound: BytesMut::new(),
            codec: Codec::new().max_size(MAX_CLIENT_MESSAGE),
            fragments: None,
            out: BytesMut::new(),
            closing: false,
            start_from: cursor,
            last_heard: Instant::now(),
            ping,
            idle_timeout: config.idle_timeout,
            expiry,
            span,
        };
        let greeting = json!({
            "type": "connection",
            "status": "connected",
            "message": format!("connected to the {feed_name} event feed"),
            "cursor": cursor.unwrap_or(head),
            "head": head,
            "types": types,
            "visible": signed_in.visible,
            "expires_at": signed_in.expires_at,
        });
        live.push_json(&greeting);
        tracing::debug!(parent: &live.span, "connected");
        live
    }

    /// The next frames to write, as soon as there are any; `None` once the
    /// connection is over (after its close frame, if it has one).
    async fn next_bytes(&mut self) -> Option<Bytes> {
        if let Some(cursor) = self.start_from.take()
            && let Err(stop) = Box::pin(self.resume(cursor)).await
        {
            self.stop(stop);
        }
        while self.out.is_empty() {
            if self.closing {
                return None;
            }
            let wake = tokio::select! {
                biased;
                () = sleep_until_some(self.expiry.as_mut()) => {
                    Wake::Stop(Stop::Close(4001, "token expired"))
                }
                _ = self.ping.tick() => Wake::Tick,
                message = next_inbound(
                    &mut self.payload,
                    &mut self.inbound,
                    &mut self.codec,
                    &mut self.fragments,
                ) => Wake::Client(message),
                frame = self.feed.next() => Wake::Frame(frame),
            };
            let outcome = match wake {
                Wake::Stop(stop) => Err(stop),
                // Rare and large (database queries): boxed, so that they do
                // not make every idle connection as big as they are.
                Wake::Tick => Box::pin(self.on_ping_tick()).await,
                Wake::Client(message) => Box::pin(self.on_client_message(message)).await,
                Wake::Frame(frame) => self.on_frame(frame),
            };
            if let Err(stop) = outcome {
                self.stop(stop);
            }
        }
        // A fresh buffer each time: one large message must not stay
        // allocated for the rest of the connection.
        Some(std::mem::take(&mut self.out).freeze())
    }

    /// Ends the connection: with a close frame, or at once when the client
    /// is gone.
    fn stop(&mut self, stop: Stop) {
        self.closing = true;
        let Stop::Close(code, why) = stop else {
            tracing::debug!(parent: &self.span, "client gone");
            self.out.clear();
            return;
        };
        tracing::debug!(parent: &self.span, code, why, "closing");
        if code == 4008 {
            metrics::slow_consumer(self.feed_name);
        }
        self.push(Message::Close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(why.to_owned()),
        })));
    }

    fn push(&mut self, message: Message) {
        if let Err(e) = self.codec.encode(message, &mut self.out) {
            tracing::warn!(parent: &self.span, error = %e, "cannot encode a WebSocket frame");
        }
    }

    fn push_json(&mut self, value: &serde_json::Value) {
        self.push(Message::Text(ByteString::from(value.to_string())));
    }

    fn on_frame(&mut self, frame: Result<Arc<Frame>, FeedError>) -> Result<(), Stop> {
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
        self.push(Message::Text(frame.json.clone()));
        self.sent.increment(1);
        Ok(())
    }

    async fn on_client_message(
        &mut self,
        message: Option<Result<Inbound, ProtocolError>>,
    ) -> Result<(), Stop> {
        self.last_heard = Instant::now();
        let text = match message {
            None => return Err(Stop::Gone),
            Some(Ok(Inbound::Close(reason))) => {
                // Answer the close handshake, then end.
                self.closing = true;
                self.push(Message::Close(reason));
                return Ok(());
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "protocol error from the client");
                return Err(Stop::Close(1002, "protocol error"));
            }
            Some(Ok(Inbound::Ping(bytes))) => {
                self.push(Message::Pong(bytes));
                return Ok(());
            }
            Some(Ok(Inbound::Pong)) => return Ok(()),
            Some(Ok(Inbound::Binary)) => {
                self.error("invalid_message", "messages are JSON text");
                return Ok(());
            }
            Some(Ok(Inbound::Text(text))) => text,
        };
        let Ok(text) = std::str::from_utf8(&text) else {
            return Err(Stop::Close(1007, "text messages must be UTF-8"));
        };
        match serde_json::from_str::<ClientMessage>(text) {
            Ok(ClientMessage::Ping) => {
                self.push_json(&json!({"type": "pong"}));
                Ok(())
            }
            Ok(ClientMessage::Subscribe { types, cursor }) => self.subscribe(types, cursor).await,
            Ok(ClientMessage::Auth { token }) => {
                self.reauthenticate(SecretString::from(token)).await;
                Ok(())
            }
            Err(e) => {
                self.error(
                    "invalid_message",
                    &format!(
                        "expected {{\"type\":\"ping\"}}, {{\"type\":\"subscribe\",…}} or {{\"type\":\"auth\",\"token\":…}}: {e}"
                    ),
                );
                Ok(())
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
            Some(Err(e)) => {
                self.error("invalid_cursor", &e.to_string());
                return Ok(());
            }
        };
        if let Some(types) = types {
            match TypeFilter::parse(types.iter().map(String::as_str)) {
                Ok(filter) => {
                    if let Ok(mut interest) = self.feed.interest().write() {
                        interest.types = filter;
                    }
                }
                Err(e) => {
                    self.error("invalid_types", &e.to_string());
                    return Ok(());
                }
            }
        }
        let from = cursor.unwrap_or(self.feed.cursor());
        let types = self
            .feed
            .interest()
            .read()
            .map(|i| i.types.to_strings())
            .unwrap_or_default();
        self.push_json(&json!({
            "type": "subscribed",
            "types": types,
            "cursor": from,
        }));
        match cursor {
            Some(cursor) => self.resume(cursor).await,
            None => Ok(()),
        }
    }

    /// Replays after `cursor`, or tells the client to resync: when that is
    /// more than the replay limit, or the cursor is not one this log can
    /// continue from (another log's, or ahead of this one's head).
    async fn resume(&mut self, cursor: Cursor) -> Result<(), Stop> {
        let store = &self.state.store;
        let limit = self.state.config.realtime.replay_limit;
        let (cannot, behind) = match tokio::try_join!(
            store.cannot_continue_from(cursor),
            store.count_after(cursor, limit + 1)
        ) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the events to replay");
                return Err(Stop::Close(1011, "cannot read the event log; reconnect"));
            }
        };
        if let Some(why) = cannot {
            self.resync(&format!("{why}: reload the state through the API"));
            return Ok(());
        }
        if behind > limit {
            self.resync(&format!(
                "more than {limit} events happened since that cursor: reload the state through the API"
            ));
            return Ok(());
        }
        self.feed.rewind(cursor);
        Ok(())
    }

    /// The client must reload its state: live events continue from the
    /// head, whose cursor the message carries.
    fn resync(&mut self, why: &str) {
        self.feed.skip_to_head();
        self.push_json(&json!({
            "type": "resync_required",
            "message": format!("{why}; live events continue from `cursor`"),
            "cursor": self.feed.cursor(),
        }));
    }

    async fn on_ping_tick(&mut self) -> Result<(), Stop> {
        if self.last_heard.elapsed() > self.idle_timeout {
            return Err(Stop::Close(1001, "idle for too long"));
        }
        self.push(Message::Ping(Bytes::new()));
        self.recheck().await
    }

    fn kind(&self) -> Option<FeedKind> {
        let interest = self.feed.interest().read().ok()?;
        Some(match interest.viewer {
            Viewer::Admin { .. } => FeedKind::Admin,
            Viewer::User { .. } => FeedKind::Cabinet,
        })
    }

    /// The session may have ended (logout, password change, blocked user,
    /// revoked key) or the admin's role changed since the upgrade.
    async fn recheck(&mut self) -> Result<(), Stop> {
        let Some(kind) = self.kind() else {
            return Ok(());
        };
        match authenticate(&self.state, kind, self.credential.expose_secret()).await {
            Ok(signed_in) => {
                if let Ok(mut interest) = self.feed.interest().write() {
                    interest.viewer = signed_in.viewer;
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

    /// `{"type":"auth"}`: a fresh token of the same principal replaces the
    /// connection's, and its expiry the old one's. Anything else is an
    /// error message; the connection goes on as it was.
    async fn reauthenticate(&mut self, token: SecretString) {
        let Some(kind) = self.kind() else {
            return;
        };
        let signed_in = match authenticate(&self.state, kind, token.expose_secret()).await {
            Ok(signed_in) => signed_in,
            Err(ApiError::Problem(problem)) => {
                self.error(
                    "invalid_token",
                    problem.detail.as_deref().unwrap_or(problem.title),
                );
                return;
            }
            Err(ApiError::Internal(e)) => {
                tracing::warn!(error = %e, "cannot check a live feed's new token");
                self.error(
                    "unavailable",
                    "the token could not be checked now; try again",
                );
                return;
            }
        };
        if signed_in.principal != self.principal {
            self.error(
                "another_principal",
                "the token is someone else's: a connection keeps its principal; reconnect to change it",
            );
            return;
        }
        self.credential = token;
        self.expiry = signed_in.expires_at.map(sleep_until_expiry);
        if let Ok(mut interest) = self.feed.interest().write() {
            interest.viewer = signed_in.viewer;
        }
        self.push_json(&json!({
            "type": "authenticated",
            "expires_at": signed_in.expires_at,
            "visible": signed_in.visible,
        }));
    }

    fn error(&mut self, code: &str, message: &str) {
        self.push_json(&json!({"type": "error", "code": code, "message": message}));
    }
}

fn sleep_until_expiry(at: DateTime<Utc>) -> Pin<Box<Sleep>> {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    Box::pin(tokio::time::sleep(left))
}

async fn sleep_until_some(sleep: Option<&mut Pin<Box<Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The client's next whole message. Cancel-safe: what was read stays in
/// `inbound` and `fragments`.
async fn next_inbound(
    payload: &mut Payload,
    inbound: &mut BytesMut,
    codec: &mut Codec,
    fragments: &mut Option<(bool, BytesMut)>,
) -> Option<Result<Inbound, ProtocolError>> {
    loop {
        match codec.decode(inbound) {
            Err(e) => return Some(Err(e)),
            Ok(Some(frame)) => match assemble(frame, fragments) {
                Ok(Some(message)) => return Some(Ok(message)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            },
            // The codec refuses an oversized frame only once all of it has
            // arrived: what is buffered now is one incomplete frame, so
            // more than the largest allowed frame is refused at once.
            Ok(None) if inbound.len() > MAX_CLIENT_MESSAGE + MAX_FRAME_HEADER => {
                return Some(Err(ProtocolError::Overflow));
            }
            Ok(None) => {
                if inbound.is_empty() && inbound.capacity() > KEEP_INBOUND {
                    *inbound = BytesMut::new();
                }
            }
        }
        match payload.next().await? {
            Ok(bytes) => inbound.extend_from_slice(&bytes),
            Err(e) => return Some(Err(ProtocolError::Io(std::io::Error::other(e)))),
        }
    }
}

/// A message from a frame, or `None` while a fragmented one is incomplete.
fn assemble(
    frame: ws::Frame,
    fragments: &mut Option<(bool, BytesMut)>,
) -> Result<Option<Inbound>, ProtocolError> {
    let (text, part, last) = match frame {
        ws::Frame::Text(bytes) => return Ok(Some(Inbound::Text(bytes))),
        ws::Frame::Binary(_) => return Ok(Some(Inbound::Binary)),
        ws::Frame::Ping(bytes) => return Ok(Some(Inbound::Ping(bytes))),
        ws::Frame::Pong(_) => return Ok(Some(Inbound::Pong)),
        ws::Frame::Close(reason) => return Ok(Some(Inbound::Close(reason))),
        ws::Frame::Continuation(Item::FirstText(bytes)) => (Some(true), bytes, false),
        ws::Frame::Continuation(Item::FirstBinary(bytes)) => (Some(false), bytes, false),
        ws::Frame::Continuation(Item::Continue(bytes)) => (None, bytes, false),
        ws::Frame::Continuation(Item::Last(bytes)) => (None, bytes, true),
    };
    let (is_text, buffer) = match (text, fragments.as_mut()) {
        (Some(is_text), None) => fragments.insert((is_text, BytesMut::new())),
        (None, Some(started)) => started,
        (Some(_), Some(_)) => return Err(ProtocolError::ContinuationStarted),
        (None, None) => return Err(ProtocolError::ContinuationNotStarted),
    };
    if buffer.len() + part.len() > MAX_CLIENT_MESSAGE {
        return Err(ProtocolError::Overflow);
    }
    buffer.extend_from_slice(&part);
    let is_text = *is_text;
    if !last {
        return Ok(None);
    }
    let whole = fragments
        .take()
        .map(|(_, b)| b.freeze())
        .unwrap_or_default();
    Ok(Some(if is_text {
        Inbound::Text(whole)
    } else {
        Inbound::Binary
    }))
}
