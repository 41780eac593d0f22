//! The event-log browser: `GET /api/v1/admin/events` (`events:read`).

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::AppState,
    auth::{CurrentAdmin, Permission},
    error::{ApiError, Problem},
    events::{Cursor, EventType, LogFilter, RecordedEvent, StreamName},
    realtime::audience::Audience,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(browse);
}

#[derive(Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Resume after this cursor (from a previous page's `next_cursor` or an
    /// event's `cursor`); from the beginning when absent. With
    /// `order=desc`: the events before it; from the newest when absent.
    pub cursor: Option<String>,
    /// `asc` (the default): the log's order from `cursor` on. `desc`: the
    /// newest first, back from `cursor`; the first page also answers
    /// `head`, where a live feed resumes so that it joins the page.
    pub order: Option<Order>,
    /// An exact type (`ticket.created`) or a prefix wildcard (`ticket.*`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// One stream, e.g. `ticket:0193…`.
    pub stream: Option<String>,
    /// At most 500 (default 100).
    pub limit: Option<u32>,
}

#[derive(Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Serialize, ToSchema)]
pub struct EventsPageOut {
    /// Event envelopes, as on the WebSocket and in webhooks.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<RecordedEvent>,
    /// Pass as `cursor` (with the same `order`) for the next page.
    pub next_cursor: String,
    /// `order=desc` without a cursor: the log's head when the page was
    /// read. A feed resumed from it (`/ws?cursor=`) carries every event
    /// after the page, none twice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

/// Reads the event log in its global order, with optional filters. Only
/// events the caller may read through the rest of the admin API are shown
/// (`user.*` needs `users:read`, `ticket.*` `tickets:read`, `payment.*`,
/// `transaction.*`, `subscription.*` and `referral.*` `ledger:read`,
/// `webhook.*` `webhooks:manage`), as on the live feed.
#[utoipa::path(tag = "events", params(EventsQuery), responses((status = 200, body = EventsPageOut), (status = 400), (status = 401), (status = 403), (status = 422)), security(("bearer" = []), ("api_key" = [])))]
#[get("/events")]
#[tracing::instrument(skip_all)]
pub async fn browse(
    state: web::Data<AppState>,
    caller: CurrentAdmin,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Permission::EventsRead)?;
    let cursor = match &query.cursor {
        None => None,
        Some(raw) => Some(
            raw.parse::<Cursor>()
                .map_err(|e| Problem::invalid_field("cursor", e.to_string()))?,
        ),
    };
    if let Some(cursor) = cursor
        && let Some(why) = state.store.cannot_continue_from(cursor).await?
    {
        return Err(
            Problem::invalid_field("cursor", format!("{why}: start again without one")).into(),
        );
    }
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > 500 {
        return Err(Problem::invalid_field("limit", "must be between 1 and 500").into());
    }
    if let Some(event_type) = &query.event_type {
        // `ticket.created`, or a prefix with a `*`: `ticket.*`, `ticket*`.
        let name = event_type
            .strip_suffix('*')
            .map_or(event_type.as_str(), |prefix| prefix.trim_end_matches('.'));
        if EventType::parse(name).is_err() {
            return Err(Problem::invalid_field(
                "type",
                "an event type such as `ticket.created` or `ticket.*`",
            )
            .into());
        }
    }
    if let Some(stream) = &query.stream
        && StreamName::parse(stream).is_err()
    {
        return Err(Problem::invalid_field("stream", "a stream name such as `ticket:<id>`").into());
    }
    let filter = LogFilter {
        event_type: query.event_type.clone(),
        stream: query.stream.clone(),
    };
    let (events, next, head) = if query.order == Some(Order::Desc) {
        let (events, head) = state.store.read_back(cursor, limit, &filter).await?;
        // The oldest of the page, or where it started when it is empty.
        let next = events.last().map(|e| e.cursor).or(cursor).or(head);
        (events, next.unwrap_or(Cursor::START), head)
    } else {
        let page = state
            .store
            .read_filtered(cursor.unwrap_or(Cursor::START), limit, &filter)
            .await?;
        (page.events, page.next, None)
    };
    // The same events the caller's live feed carries (see realtime::audience):
    // a page may come back shorter than `limit`; `next_cursor` moves on anyway.
    let events = events
        .into_iter()
        .filter(|e| Audience::of(e).admin_may_see(&caller.permissions))
        .collect();
    Ok(HttpResponse::Ok().json(EventsPageOut {
        events,
        next_cursor: next.to_string(),
        head: head.map(|h| h.to_string()),
    }))
}
