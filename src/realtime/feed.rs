//! One client's position in the log: replay from a cursor, then live frames
//! from its hub queue, with no gap and no duplicate at the seam.
//!
//! The client registers at the hub first, which fixes the head its queue
//! starts after. Replay reads the log from the client's cursor up to at
//! least that head; queued frames at or before what was replayed are
//! skipped by cursor. A queue that overflows while the client is still
//! catching up only means reading more of the log. So does an overflow the
//! client is there to see: one noticed within [`READING`] of it, as a client
//! that is reading notices a burst larger than its queue (the tailer
//! released a backlog at once). One noticed later means the connection was
//! not reading (its socket was full): the client is too slow, and is told
//! so (4008) when its connection comes back to the feed.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use sea_orm::DbErr;

use super::hub::{Frame, Hub, Interest, Received, Registration};
use crate::events::{
    Cursor,
    catch_up::{CatchUp, Positioned},
};

/// Events read from the log per query while replaying.
const REPLAY_BATCH: u32 = 500;

/// An overflow noticed within this long was noticed by a client that was
/// reading.
pub const READING: Duration = Duration::from_secs(1);

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
    catch_up: CatchUp<Arc<Frame>>,
    /// Until the queue has been drained once after a (re)start.
    catching_up: bool,
}

impl Positioned for Arc<Frame> {
    fn cursor(&self) -> Cursor {
        Frame::cursor(self)
    }
}

impl Feed {
    /// Live frames from now on, as `interest` asks.
    pub fn new(hub: &Hub, interest: Interest) -> Self {
        let registration = hub.register(interest);
        Self {
            hub: hub.clone(),
            catch_up: CatchUp::new(registration.head, None, REPLAY_BATCH),
            registration,
            catching_up: true,
        }
    }

    pub fn interest(&self) -> &RwLock<Interest> {
        &self.registration.mailbox.interest
    }

    /// The cursor of the last event returned: the client resumes from here.
    pub fn cursor(&self) -> Cursor {
        self.catch_up.cursor()
    }

    /// From now on, every event after `after` (from the log), then live.
    pub fn rewind(&mut self, after: Cursor) {
        let after = self.hub.store().normalize(after);
        self.catch_up.rewind(after, self.hub.head());
        self.catching_up = true;
    }

    /// Skips ahead to the live head (after a resync).
    pub fn skip_to_head(&mut self) {
        self.catch_up.skip_to(self.hub.head());
        self.catching_up = true;
    }

    /// The next event in log order: replayed ones are every event (the
    /// caller filters them), queued ones are those the hub found wanted.
    /// Cancel-safe: nothing is lost if the future is dropped early.
    pub async fn next(&mut self) -> Result<Arc<Frame>, FeedError> {
        loop {
            if let Some(ago) = self.registration.mailbox.lagged_for() {
                if !self.catching_up && ago > READING {
                    return Err(FeedError::Overflow);
                }
                // Frames were dropped while replaying, or in a burst the
                // client was reading through: the log has them.
                self.registration.mailbox.clear_lagged();
                self.catch_up.fell_behind(self.hub.head());
            }
            let replayed = self
                .catch_up
                .next_from_log(self.hub.store(), |e| Arc::new(Frame::new(Arc::new(e))))
                .await?;
            if let Some(frame) = replayed {
                return Ok(frame);
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
            if let Some(frame) = self.catch_up.accept(frame) {
                return Ok(frame);
            }
        }
    }
}
