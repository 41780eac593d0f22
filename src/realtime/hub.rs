//! The hub: one task per process that takes every event from the log
//! tailer, serializes it once, works out who may see it, and publishes the
//! frame to every connected feed.
//!
//! Publishing is a broadcast ring of [`Frame`]s shared by every client: a
//! client's queue is its distance behind the newest frame, bounded by the
//! ring's capacity. A client that falls further behind has overflowed and is
//! disconnected (4008); nobody waits for it.

use std::sync::Arc;

use bytestring::ByteString;
use tokio::{
    sync::{broadcast, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::audience::Audience;
use crate::events::{Cursor, EventStore, RecordedEvent, SubscriptionError, Tailer};

/// An event ready to go out: its envelope as text and its audience.
#[derive(Debug)]
pub struct Frame {
    pub event: Arc<RecordedEvent>,
    pub json: ByteString,
    pub audience: Audience,
}

impl Frame {
    pub fn new(event: Arc<RecordedEvent>) -> Self {
        Self {
            json: ByteString::from(event.to_envelope_json()),
            audience: Audience::of(&event),
            event,
        }
    }

    pub fn cursor(&self) -> Cursor {
        self.event.cursor
    }
}

/// Hands out feeds; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Frame>>,
    /// The cursor of the last frame sent. Updated before the send, so a feed
    /// that subscribes and then reads it receives every later frame.
    published: watch::Sender<Cursor>,
    store: EventStore,
    capacity: usize,
}

impl Hub {
    /// Starts the hub on `tasks`, fed by `tailer`, with room for `capacity`
    /// frames per client.
    pub fn start(
        tailer: &Tailer,
        store: EventStore,
        capacity: usize,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Self {
        let subscription = tailer.subscribe();
        let hub = Self {
            sender: broadcast::Sender::new(capacity.max(1)),
            published: watch::Sender::new(subscription.cursor()),
            store,
            capacity: capacity.max(1),
        };
        tasks.spawn(hub.clone().run(subscription, shutdown));
        hub
    }

    #[tracing::instrument(name = "ws_hub", skip_all)]
    async fn run(self, mut subscription: crate::events::Subscription, shutdown: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = subscription.next() => event,
            };
            match event {
                Ok(event) => {
                    let frame = Arc::new(Frame::new(event));
                    self.published.send_replace(frame.cursor());
                    // No receivers: nobody is connected; fine.
                    let _ = self.sender.send(frame);
                }
                Err(SubscriptionError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed hub cannot read the log; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// The cursor of the newest frame published.
    pub fn head(&self) -> Cursor {
        *self.published.borrow()
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// How many frames a client may be behind before it has overflowed.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A receiver of every frame from now on, and the cursor it starts after.
    pub(super) fn subscribe(&self) -> (broadcast::Receiver<Arc<Frame>>, Cursor) {
        let receiver = self.sender.subscribe();
        let head = *self.published.borrow();
        (receiver, head)
    }
}
