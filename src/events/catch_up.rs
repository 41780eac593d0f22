//! Catching up from the log: what a reader that starts from a cursor, or
//! fell behind its live source, does until it reaches the seam where the
//! live source takes over. Shared by the tailer's subscriptions and the
//! WebSocket feeds.
//!
//! No gap and no duplicate: the log is read from the last event returned
//! up to at least a target (a point the live source is known to carry
//! everything after), and anything at or before the last event returned is
//! skipped, whether it comes from the log or live.

use std::{collections::VecDeque, sync::Arc};

use sea_orm::DbErr;

use super::{RecordedEvent, envelope::Cursor, store::EventStore};

/// Something with a place in the log.
pub trait Positioned {
    fn cursor(&self) -> Cursor;
}

impl Positioned for Arc<RecordedEvent> {
    fn cursor(&self) -> Cursor {
        self.cursor
    }
}

/// A reader's position, and what it still has to read from the log.
pub struct CatchUp<T> {
    /// The last event returned, or where reading started.
    last: Cursor,
    /// Read the log until at least here before taking live events.
    target: Option<Cursor>,
    backlog: VecDeque<T>,
    /// Events read per query.
    batch: u32,
}

impl<T: Positioned> CatchUp<T> {
    /// After `last`; from the log up to `target` first, when there is one.
    pub fn new(last: Cursor, target: Option<Cursor>, batch: u32) -> Self {
        Self {
            last,
            target,
            backlog: VecDeque::new(),
            batch,
        }
    }

    /// The cursor of the last event returned: resume from here.
    pub fn cursor(&self) -> Cursor {
        self.last
    }

    /// From now on, every event after `after`, from the log up to `target`.
    pub fn rewind(&mut self, after: Cursor, target: Cursor) {
        self.last = after;
        self.backlog.clear();
        self.target = Some(target);
    }

    /// The live source dropped events: read the log up to at least `head`.
    pub fn fell_behind(&mut self, head: Cursor) {
        self.target = Some(head.max(self.last));
    }

    /// Skips ahead to `head`, reading nothing of what lies before it.
    pub fn skip_to(&mut self, head: Cursor) {
        self.backlog.clear();
        self.target = None;
        self.last = self.last.max(head);
    }

    /// The next event from the log while catching up (`wrap` makes one of
    /// a stored event); `None` once caught up: take live events then.
    pub async fn next_from_log(
        &mut self,
        store: &EventStore,
        wrap: impl Fn(RecordedEvent) -> T,
    ) -> Result<Option<T>, DbErr> {
        loop {
            if let Some(item) = self.backlog.pop_front() {
                if let Some(item) = self.accept(item) {
                    return Ok(Some(item));
                }
                continue;
            }
            let Some(target) = self.target else {
                return Ok(None);
            };
            if self.last < target {
                // Boxed: only readers that are catching up pay for the
                // query's state, not every idle one.
                let page = Box::pin(store.read_all(self.last, self.batch)).await?;
                if !page.events.is_empty() {
                    self.backlog.extend(page.events.into_iter().map(&wrap));
                    continue;
                }
            }
            self.target = None;
            return Ok(None);
        }
    }

    /// `item` if it comes after the last event returned (it is the last one
    /// then); `None` if it was returned already.
    pub fn accept(&mut self, item: T) -> Option<T> {
        if item.cursor() > self.last {
            self.last = item.cursor();
            Some(item)
        } else {
            None
        }
    }
}
