//! The states groups left their aggregates in, kept in memory: a group
//! whose targets are all remembered decides without reading them. It is a
//! faster way to load, never a second source of truth: every append still
//! carries the version its state was at, so a remembered state that is no
//! longer the latest (another instance wrote to the stream) loses the race
//! like any stale read, and the group is loaded from the database again.

use std::sync::{Mutex, PoisonError};

use hashlink::LruCache;

use super::work::Slot;
use crate::events::StreamName;

/// Aggregates remembered, at most; the least recently used go first.
const CAPACITY: usize = 10_000;

pub(super) struct Remembered {
    slots: Mutex<LruCache<StreamName, Slot>>,
}

impl Remembered {
    pub(super) fn new() -> Self {
        Self {
            slots: Mutex::new(LruCache::new(CAPACITY)),
        }
    }

    /// Copies of the remembered ones among `streams`.
    pub(super) fn recall<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a StreamName>,
    ) -> Vec<(StreamName, Slot)> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        streams
            .into_iter()
            .filter_map(|stream| Some((stream.clone(), slots.get(stream)?.copy())))
            .collect()
    }

    /// What a group wrote: each state as it left it, at its new version.
    pub(super) fn keep(&self, written: impl IntoIterator<Item = (StreamName, Slot)>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for (stream, slot) in written {
            slots.insert(stream, slot);
        }
    }

    /// The streams of a group that did not go through: what they hold now
    /// is unknown.
    pub(super) fn forget<'a>(&self, streams: impl IntoIterator<Item = &'a StreamName>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in streams {
            slots.remove(stream);
        }
    }
}
