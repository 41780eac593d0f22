//! The hub: one task per process that takes every event from the log
//! tailer, serializes it once, works out who may see it, and hands the frame
//! to each connected client that wants it.
//!
//! Every client has a bounded queue. The hub fills the queues of the clients
//! whose viewer and type filter match, and never waits: a client whose
//! queue is full has overflowed (it is told through its `lagged` flag and
//! closed with 4008), and nobody else is slowed down. Clients that do not
//! want an event are not even woken for it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use bytestring::ByteString;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::audience::Audience;
use crate::{
    auth::Permission,
    events::{Cursor, EventStore, RecordedEvent, SubscriptionError, Tailer, TypeFilter},
    ids::UserId,
};

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

/// Which feed a connection is on, and whose it is.
#[derive(Debug, Clone)]
pub enum Viewer {
    Admin { permissions: Vec<Permission> },
    User { id: UserId },
}

impl Viewer {
    pub fn feed_name(&self) -> &'static str {
        match self {
            Self::Admin { .. } => "admin",
            Self::User { .. } => "cabinet",
        }
    }
}

/// What a client wants: the events its viewer may see, of its types.
#[derive(Debug, Clone)]
pub struct Interest {
    pub viewer: Viewer,
    pub types: TypeFilter,
}

impl Interest {
    pub fn wants(&self, frame: &Frame) -> bool {
        let visible = match &self.viewer {
            Viewer::Admin { permissions } => frame.audience.admin_may_see(permissions),
            Viewer::User { id } => frame.audience.user_may_see(*id),
        };
        visible && self.types.matches(frame.event.event_type.as_str())
    }
}

struct Client {
    queue: mpsc::Sender<Arc<Frame>>,
    interest: Arc<RwLock<Interest>>,
    lagged: Arc<AtomicBool>,
}

struct Shared {
    /// The cursor of the last frame handed out, and every client. One lock:
    /// a client registered at head `h` gets exactly the frames after `h`.
    state: Mutex<(Cursor, HashMap<u64, Client>)>,
    next_id: AtomicU64,
    store: EventStore,
    capacity: usize,
}

/// Hands out registrations; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

/// A client's place at the hub; leaving it (dropping) unregisters.
pub struct Registration {
    shared: Arc<Shared>,
    id: u64,
    pub queue: mpsc::Receiver<Arc<Frame>>,
    pub interest: Arc<RwLock<Interest>>,
    /// Set by the hub when a frame did not fit in the queue.
    pub lagged: Arc<AtomicBool>,
    /// The cursor the queue starts after.
    pub head: Cursor,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.1.remove(&self.id);
        }
    }
}

impl Hub {
    /// Starts the hub on `tasks`, fed by `tailer`, with a queue of
    /// `capacity` frames per client. When `closing` is cancelled every
    /// queue is closed, which ends every connection.
    pub fn start(
        tailer: &Tailer,
        store: EventStore,
        capacity: usize,
        tasks: &mut JoinSet<()>,
        closing: CancellationToken,
    ) -> Self {
        let subscription = tailer.subscribe();
        let hub = Self {
            shared: Arc::new(Shared {
                state: Mutex::new((subscription.cursor(), HashMap::new())),
                next_id: AtomicU64::new(1),
                store,
                capacity: capacity.max(1),
            }),
        };
        tasks.spawn(hub.clone().run(subscription, closing));
        hub
    }

    #[tracing::instrument(name = "ws_hub", skip_all)]
    async fn run(self, mut subscription: crate::events::Subscription, closing: CancellationToken) {
        loop {
            let event = tokio::select! {
                () = closing.cancelled() => break,
                event = subscription.next() => event,
            };
            match event {
                Ok(event) => self.publish(Arc::new(Frame::new(event))),
                Err(SubscriptionError::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed hub cannot read the log; retrying");
                    tokio::select! {
                        () = closing.cancelled() => break,
                        () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
                    }
                }
            }
        }
        // Closing the queues ends the connections (1001).
        if let Ok(mut state) = self.shared.state.lock() {
            state.1.clear();
        }
    }

    fn publish(&self, frame: Arc<Frame>) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        state.0 = frame.cursor();
        state.1.retain(|_, client| {
            let wants = client
                .interest
                .read()
                .map(|interest| interest.wants(&frame))
                .unwrap_or(false);
            if !wants {
                return true;
            }
            match client.queue.try_send(frame.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    client.lagged.store(true, Ordering::Release);
                    true
                }
                // The connection ended; its registration is being dropped.
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Registers a client: its queue gets every frame it wants after the
    /// returned head.
    pub fn register(&self, interest: Interest) -> Registration {
        let (sender, receiver) = mpsc::channel(self.shared.capacity);
        let interest = Arc::new(RwLock::new(interest));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let head = match self.shared.state.lock() {
            Ok(mut state) => {
                state.1.insert(
                    id,
                    Client {
                        queue: sender,
                        interest: interest.clone(),
                        lagged: lagged.clone(),
                    },
                );
                state.0
            }
            // A poisoned lock means the hub panicked: the queue stays
            // closed and the connection ends at once.
            Err(_) => Cursor::START,
        };
        Registration {
            shared: self.shared.clone(),
            id,
            queue: receiver,
            interest,
            lagged,
            head,
        }
    }

    /// The cursor of the newest frame handed out.
    pub fn head(&self) -> Cursor {
        self.shared
            .state
            .lock()
            .map(|state| state.0)
            .unwrap_or_default()
    }

    pub fn store(&self) -> &EventStore {
        &self.shared.store
    }

    /// Frames a client may be behind before it has overflowed.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Clients connected to this process.
    pub fn clients(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|state| state.1.len())
            .unwrap_or(0)
    }
}
