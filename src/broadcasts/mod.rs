//! Broadcasts: one message to an audience of users, sent through the
//! Telegram outbox within its limits and after replies and API sends
//! ([`crate::telegram::outbox`]). The audience is resolved once, when the
//! broadcast starts, into recipient rows and their sends, written in one
//! transaction with `broadcast.started`; each recipient's row is written
//! with their send's outcome. A restart resumes where the outbox stood; a
//! send whose outcome was lost is `unknown` and never made again.

pub mod audience;
pub mod content;
pub mod domain;
pub mod routes;
pub mod store;
pub mod worker;

pub use self::domain::BroadcastEvent;
use self::{
    audience::Member,
    domain::{Counts, LeftOut, Resolved},
    store::{BroadcastRow, Recipient},
};
use crate::{ids::UserId, telegram::outbox::NewSend};

/// The outbox's `origin` of a broadcast's sends.
pub const ORIGIN: &str = "broadcast";

/// Broadcasts' sends wait while replies and API sends (priority 0) are due.
const PRIORITY: i32 = 1;

/// `members` as the recipients of broadcast `row`, each with their send.
pub fn resolved(row: &BroadcastRow, members: Vec<Member>, left_out: LeftOut) -> Resolved {
    let mut resolved = Resolved {
        recipients: Vec::with_capacity(members.len()),
        sends: Vec::with_capacity(members.len()),
        left_out,
    };
    for member in members {
        let mut params = row.params.clone();
        if let Some(params) = params.as_object_mut() {
            params.insert("chat_id".into(), member.chat_id.into());
        }
        let mut send = NewSend::new(member.chat_id, &row.method, params, ORIGIN);
        send.user_id = Some(UserId::from_uuid(member.user_id));
        send.reference = Some(row.id.clone());
        send.priority = PRIORITY;
        send.paid = row.paid;
        resolved.recipients.push(Recipient {
            chat_id: member.chat_id,
            user_id: member.user_id.to_string(),
            send_id: send.id.to_string(),
        });
        resolved.sends.push(send);
    }
    resolved
}

/// Messages ended a second, from the start to the end (or now).
pub fn rate(counts: &Counts, started_at_ms: Option<i64>, finished_at_ms: Option<i64>) -> f64 {
    let Some(started) = started_at_ms else {
        return 0.0;
    };
    let until = finished_at_ms.unwrap_or_else(crate::telegram::outbox::now_ms);
    let seconds = (until - started) as f64 / 1000.0;
    if seconds <= 0.0 {
        return 0.0;
    }
    let rate = counts.done() as f64 / seconds;
    (rate * 10.0).round() / 10.0
}
