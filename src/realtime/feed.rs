//! One client's position in the log: replay from a cursor, then live frames
//! from its hub queue, with no gap and no duplicate at the seam.
//!
//! The client registers at the hub first, which fixes the head its queue
//! starts after. Replay reads the log from the client's cursor up to at
//! least that head; queued frames at or before what was replayed are
//! skipped by cursor. A queue that overflows while the client is still
//! catching up only means reading more of the log; once the client has
//! caught up, it means the client is too slow.

use std::{
    collections::VecDeque,
    sync::{Arc, RwLock},
};

use sea_orm::DbErr;

use super::hub::{Frame, Hub, Interest, Received, Registration};
use crate::events::Cursor;

/// Events read from the log per query while replaying.
const REPLAY_BATCH: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The client fell a whole queue behind the live feed.
    #[error("the client is too slow: its queue overflowed")]
    Overflow,
    #[error("reading the log to replay: {0}")]
    Db(#[from] DbErr),
    #[error("the live feed has stopped")]
    Closed,
}

pub struct Feed {
    hub: Hub,
    registration: Registration,
    /// The last event returned, or where the feed started.
    last: Cursor,
    /// Replay from the log until at least here before taking queued frames.
    replay_to: Option<Cursor>,
    backlog: VecDeque<Arc<Frame>>,
    /// Until the queue has been drained once after a (re)start.
    catching_up: bool,
}

impl Feed {
    /// Live frames from now on, as `interest` asks.
    pub fn new(hub: &Hub, interest: Interest) -> Self {
        let registration = hub.register(interest);
        Self {
            hub: hub.clone(),
            last: registration.head,
            registration,
            replay_to: None,
            backlog: VecDeque::new(),
            catching_up: true,
        }
    }

    pub fn interest(&self) -> &RwLock<Interest> {
        &self.registration.mailbox.interest
    }

    /// The cursor of the last event returned: the client resumes from here.
    pub fn cursor(&self) -> Cursor {
        self.last
    }

    /// From now on, every event after `after` (from the log), then live.
    pub fn rewind(&mut self, after: Cursor) {
        self.last = self.hub.store().normalize(after);
        self.backlog.clear();
        self.replay_to = Some(self.hub.head());
        self.catching_up = true;
    }

    /// Skips ahead to the live head (after a resync).
    pub fn skip_to_head(&mut self) {
        self.backlog.clear();
        self.replay_to = None;
        self.catching_up = true;
        self.last = self.last.max(self.hub.head());
    }

    /// The next event in log order: replayed ones are every event (the
    /// caller filters them), queued ones are those the hub found wanted.
    /// Cancel-safe: nothing is lost if the future is dropped early.
    pub async fn next(&mut self) -> Result<Arc<Frame>, FeedError> {
        loop {
            if let Some(frame) = self.backlog.pop_front() {
                if frame.cursor() > self.last {
                    self.last = frame.cursor();
                    return Ok(frame);
                }
                continue;
            }
            if self.registration.mailbox.lagged() {
                if !self.catching_up {
                    return Err(FeedError::Overflow);
                }
                // Frames were dropped while replaying: the log has them.
                self.registration.mailbox.clear_lagged();
                self.replay_to = Some(self.hub.head().max(self.last));
            }
            if let Some(target) = self.replay_to {
                if self.last < target {
                    // Boxed: only replaying connections pay for the query's
                    // state, not every idle one.
                    let page = Box::pin(self.hub.store().read_all(self.last, REPLAY_BATCH)).await?;
                    if !page.events.is_empty() {
                        self.backlog.extend(
                            page.events
                                .into_iter()
                                .map(|e| Arc::new(Frame::new(Arc::new(e)))),
                        );
                        continue;
                    }
                }
                self.replay_to = None;
            }
            let frame = match self.registration.mailbox.recv().await {
                Received::Frame(frame, drained) => {
                    if drained {
                        self.catching_up = false;
                    }
                    frame
                }
                // Seen at the top of the loop.
                Received::Lagged => continue,
                Received::Closed => return Err(FeedError::Closed),
            };
            // At or before the replay: already returned.
            if frame.cursor() > self.last {
                self.last = frame.cursor();
                return Ok(frame);
            }
        }
    }
}
