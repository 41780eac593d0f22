//! One client's position in the log: replay from a cursor, then live frames
//! from the hub, with no gap and no duplicate at the seam.
//!
//! The feed subscribes to the hub first and then reads the hub's head: every
//! frame after that head is in its receiver. Replay reads the log from the
//! client's cursor up to at least that head; live frames at or before what
//! was replayed are skipped by cursor. While replaying, falling behind the
//! hub only extends the replay; once live, it means the client is too slow.

use std::{collections::VecDeque, sync::Arc};

use sea_orm::DbErr;
use tokio::sync::broadcast;

use super::hub::{Frame, Hub};
use crate::events::Cursor;

/// Events read from the log per query while replaying.
const REPLAY_BATCH: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The client fell more than the hub's capacity behind the live feed.
    #[error("the client is too slow: its queue overflowed")]
    Overflow,
    #[error("reading the log to replay: {0}")]
    Db(#[from] DbErr),
    #[error("the live feed has stopped")]
    Closed,
}

pub struct Feed {
    hub: Hub,
    receiver: broadcast::Receiver<Arc<Frame>>,
    /// The last event returned, or where the feed started.
    last: Cursor,
    /// Replay from the log until at least here before taking live frames.
    replay_to: Option<Cursor>,
    backlog: VecDeque<Arc<Frame>>,
    /// Between a rewind and the first live frame: live frames piling up in
    /// the receiver meanwhile are not the client's fault.
    catching_up: bool,
}

impl Feed {
    /// Live frames from now on.
    pub fn live(hub: &Hub) -> Self {
        let (receiver, head) = hub.subscribe();
        Self {
            hub: hub.clone(),
            receiver,
            last: head,
            replay_to: None,
            backlog: VecDeque::new(),
            catching_up: false,
        }
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

    /// True when the client is live and further behind than the hub keeps.
    pub fn overflowed(&self) -> bool {
        !self.catching_up && self.receiver.len() >= self.hub.capacity()
    }

    /// The next event in log order. Cancel-safe: nothing is lost if the
    /// future is dropped before it completes.
    pub async fn next(&mut self) -> Result<Arc<Frame>, FeedError> {
        loop {
            if let Some(frame) = self.backlog.pop_front() {
                if frame.cursor() > self.last {
                    self.last = frame.cursor();
                    return Ok(frame);
                }
                continue;
            }
            if let Some(target) = self.replay_to {
                if self.last < target {
                    let page = self.hub.store().read_all(self.last, REPLAY_BATCH).await?;
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
            match self.receiver.recv().await {
                Ok(frame) if frame.cursor() > self.last => {
                    self.last = frame.cursor();
                    self.catching_up = false;
                    return Ok(frame);
                }
                // Already returned from the log while replaying.
                Ok(_) => {}
                // The frames it missed are in the log, up to the head.
                Err(broadcast::error::RecvError::Lagged(_)) if self.catching_up => {
                    self.replay_to = Some(self.hub.head());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(FeedError::Overflow),
                Err(broadcast::error::RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }
}
