//! The hub: one task per process that takes every event from the log
//! tailer, serializes it once, works out who may see it, and hands the frame
//! to each connected client that wants it.
//!
//! Every client has a bounded queue. The hub fills the queues of the clients
//! whose viewer and type filter match, and never waits: a client whose
//! queue is full has overflowed (its mailbox says when it lagged; see
//! [`super::feed`] for what comes of it), and nobody else is slowed down.
//! Clients that do not want an event are not even woken for it.

use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use bytestring::ByteString;
use tokio::task::JoinSet;
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

/// One client's queue and interest, shared by the hub (which fills the
/// queue) and the connection (which drains it). One allocation per client,
/// and no frame storage while the client is idle.
pub struct Mailbox {
    queue: Mutex<Queue>,
    pub interest: RwLock<Interest>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Arc<Frame>>,
    /// The connection waiting for a frame.
    waker: Option<Waker>,
    /// When a frame did not fit.
    lagged: Option<Instant>,
    /// The hub has stopped: no frame will come.
    closed: bool,
}

/// What a connection takes from its mailbox.
pub enum Received {
    /// A frame, and whether it was the last one queued (and nothing was
    /// dropped): the client has caught up with the live feed.
    Frame(Arc<Frame>, bool),
    /// A frame did not fit (see [`Mailbox::lagged_for`]).
    Lagged,
    /// The hub has stopped.
    Closed,
}

/// Room kept for frames once a backlog is drained; more is given back.
const KEEP_CAPACITY: usize = 16;

impl Mailbox {
    /// Queues `frame`, or marks the client lagged when its queue is full.
    ///
    /// Once lagged, the queue is emptied and takes nothing more until the
    /// connection has seen the flag: a client that was not reading is
    /// closed (the frames would never be sent), and one still catching up,
    /// or reading when the queue overflowed, reads the log up to the hub's
    /// head, which covers every frame dropped here. So a client that stops
    /// reading holds no frames.
    fn offer(&self, frame: &Arc<Frame>, capacity: usize) {
        let waker = {
            let Ok(mut queue) = self.queue.lock() else {
                return;
            };
            if queue.lagged.is_some() {
                return;
            }
            if queue.frames.len() >= capacity {
                queue.lagged = Some(Instant::now());
                queue.frames = VecDeque::new();
            } else {
                queue.frames.push_back(frame.clone());
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = self.queue.lock().ok().and_then(|mut queue| {
            queue.closed = true;
            queue.waker.take()
        });
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next queued frame, or news that the queue overflowed or closed.
    /// Cancel-safe.
    pub async fn recv(&self) -> Received {
        poll_fn(|cx| {
            let Ok(mut queue) = self.queue.lock() else {
                return Poll::Ready(Received::Closed);
            };
            if queue.lagged.is_some() {
                return Poll::Ready(Received::Lagged);
            }
            if let Some(frame) = queue.frames.pop_front() {
                let drained = queue.frames.is_empty();
                if drained && queue.frames.capacity() > KEEP_CAPACITY {
                    queue.frames = VecDeque::new();
                }
                return Poll::Ready(Received::Frame(frame, drained));
            }
            if queue.closed {
                return Poll::Ready(Received::Closed);
            }
            match &mut queue.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    /// How long ago a frame was dropped because the queue was full, if one
    /// was.
    pub fn lagged_for(&self) -> Option<Duration> {
        self.queue
            .lock()
            .ok()
            .and_then(|queue| queue.lagged)
            .map(|at| at.elapsed())
    }

    pub fn clear_lagged(&self) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.lagged = None;
        }
    }
}

/// Where the hub is and who it hands frames to.
struct Clients {
    /// The cursor of the last frame handed out.
    head: Cursor,
    mailboxes: HashMap<u64, Arc<Mailbox>>,
}

struct Shared {
    /// The cursor of the last frame handed out, and every client. One lock:
    /// a client registered at head `h` gets exactly the frames after `h`.
    state: Mutex<Clients>,
    /// Set (under the state lock) once the hub has closed every mailbox:
    /// a client registering later is closed at once.
    stopped: AtomicBool,
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
    pub mailbox: Arc<Mailbox>,
    /// The cursor the queue starts after.
    pub head: Cursor,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.mailboxes.remove(&self.id);
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
                state: Mutex::new(Clients {
                    head: subscription.cursor(),
                    mailboxes: HashMap::new(),
                }),
                next_id: AtomicU64::new(1),
                stopped: AtomicBool::new(false),
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
            self.shared.stopped.store(true, Ordering::Release);
            for (_, mailbox) in state.mailboxes.drain() {
                mailbox.close();
            }
        }
    }

    fn publish(&self, frame: Arc<Frame>) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        state.head = frame.cursor();
        for mailbox in state.mailboxes.values() {
            let wants = mailbox
                .interest
                .read()
                .map(|interest| interest.wants(&frame))
                .unwrap_or(false);
            if wants {
                mailbox.offer(&frame, self.shared.capacity);
            }
        }
    }

    /// Registers a client: its queue gets every frame it wants after the
    /// returned head.
    pub fn register(&self, interest: Interest) -> Registration {
        let mailbox = Arc::new(Mailbox {
            queue: Mutex::new(Queue::default()),
            interest: RwLock::new(interest),
        });
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let head = match self.shared.state.lock() {
            // The server is stopping: the connection ends at once (1001).
            Ok(state) if self.shared.stopped.load(Ordering::Acquire) => {
                mailbox.close();
                state.head
            }
            Ok(mut state) => {
                state.mailboxes.insert(id, mailbox.clone());
                state.head
            }
            // A poisoned lock means the hub panicked: the queue is closed
            // and the connection ends at once.
            Err(_) => {
                mailbox.close();
                Cursor::START
            }
        };
        Registration {
            shared: self.shared.clone(),
            id,
            mailbox,
            head,
        }
    }

    /// The cursor of the newest frame handed out.
    pub fn head(&self) -> Cursor {
        self.shared
            .state
            .lock()
            .map(|state| state.head)
            .unwrap_or_default()
    }

    pub fn store(&self) -> &EventStore {
        &self.shared.store
    }

    /// Clients connected to this process.
    pub fn clients(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|state| state.mailboxes.len())
            .unwrap_or(0)
    }
}
