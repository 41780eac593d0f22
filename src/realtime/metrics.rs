//! Live feed metrics: connected clients by feed, messages sent, slow
//! consumers disconnected.

/// Counts a connection while it lives.
pub struct Connected {
    feed: &'static str,
}

impl Connected {
    pub fn new(feed: &'static str) -> Self {
        metrics::gauge!("switchboard_ws_clients", "feed" => feed).increment(1.0);
        Self { feed }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_ws_clients", "feed" => self.feed).decrement(1.0);
    }
}

/// The counter of messages sent on a feed (kept by each connection, so the
/// registry is looked up once, not per message).
pub fn sent(feed: &'static str) -> metrics::Counter {
    metrics::counter!("switchboard_ws_messages_sent_total", "feed" => feed)
}

pub fn slow_consumer(feed: &'static str) {
    metrics::counter!("switchboard_ws_slow_consumer_disconnects_total", "feed" => feed)
        .increment(1);
}
