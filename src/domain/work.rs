//! What a command decides on: the states of its target aggregates as the
//! group left them, and the events it adds.

use std::{any::Any, collections::HashMap, fmt};

use futures::future::BoxFuture;
use sea_orm::DatabaseExecutor;

use super::{Aggregate, DomainEvent, Loaded};
use crate::events::{Actor, AppendError, EventStore, NewEvent, StreamName};

/// An aggregate a command works on.
#[derive(Clone)]
pub struct Target {
    pub(super) stream: StreamName,
    pub(super) id: String,
    /// The aggregate type's category: targets of one type load together.
    pub(super) category: &'static str,
    pub(super) load: LoadFn,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.stream.as_str())
    }
}

impl Target {
    pub fn of<A: Aggregate>(id: impl fmt::Display) -> Self {
        let id = id.to_string();
        Self {
            stream: A::stream(&id),
            id,
            category: A::CATEGORY,
            load: load_erased::<A>,
        }
    }

    pub fn stream(&self) -> &StreamName {
        &self.stream
    }
}

/// Loads aggregates of one type: their states and versions, by id
/// (verifying snapshots against their streams when asked).
pub(super) type LoadFn = for<'a> fn(
    &'a EventStore,
    &'a DatabaseExecutor<'a>,
    &'a [String],
    bool,
) -> BoxFuture<'a, Result<Vec<(String, Slot)>, AppendError>>;

fn load_erased<'a, A: Aggregate>(
    store: &'a EventStore,
    conn: &'a DatabaseExecutor<'a>,
    ids: &'a [String],
    verify: bool,
) -> BoxFuture<'a, Result<Vec<(String, Slot)>, AppendError>> {
    Box::pin(async move {
        Ok(super::load::<A>(store, conn, ids, verify)
            .await?
            .into_iter()
            .map(|(id, loaded)| (id, Slot::new(loaded)))
            .collect())
    })
}

/// An aggregate's state of some type.
pub(super) trait State: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn State>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<A: Aggregate> State for A {
    fn clone_box(&self) -> Box<dyn State> {
        Box::new(self.clone())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One loaded aggregate in a group.
pub(super) struct Slot {
    pub(super) state: Box<dyn State>,
    /// The version it was loaded at: its append's expected version.
    pub(super) version: u32,
}

impl Slot {
    fn new<A: Aggregate>(loaded: Loaded<A>) -> Self {
        Self {
            state: Box::new(loaded.state),
            version: loaded.version,
        }
    }

    pub(super) fn copy(&self) -> Self {
        Self {
            state: self.state.clone_box(),
            version: self.version,
        }
    }
}

/// One decided event, with the stream it goes to.
pub(super) struct Decided {
    pub(super) stream: StreamName,
    pub(super) event: NewEvent,
}

/// The aggregates of one command's decision: read them, run their commands.
pub struct Work<'a> {
    slots: &'a mut HashMap<StreamName, Slot>,
    actor: Actor,
    /// The states this command changed, as they were before it.
    saved: Vec<(StreamName, Box<dyn State>)>,
    pub(super) decided: Vec<Decided>,
    /// A mistake in the command itself (an aggregate it did not name as a
    /// target): it fails, whatever it decided.
    pub(super) fault: Option<String>,
}

impl<'a> Work<'a> {
    pub(super) fn new(slots: &'a mut HashMap<StreamName, Slot>, actor: Actor) -> Self {
        Self {
            slots,
            actor,
            saved: Vec::new(),
            decided: Vec::new(),
            fault: None,
        }
    }

    /// Who the events are by, unless a step says otherwise.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The aggregate's state as the commands before left it.
    pub fn state<A: Aggregate>(&mut self, id: impl fmt::Display) -> A {
        self.slot::<A>(&A::stream(id)).cloned().unwrap_or_default()
    }

    /// Decides `command` on the aggregate and applies what it decided; the
    /// events are appended with the rest of the group's.
    pub fn execute<A: Aggregate>(
        &mut self,
        id: impl fmt::Display,
        command: A::Command,
    ) -> Result<Vec<A::Event>, A::Error> {
        let actor = self.actor.clone();
        self.execute_as::<A>(actor, id, command)
    }

    /// [`Work::execute`] with events by another actor (the system's part
    /// of a user's command, say).
    pub fn execute_as<A: Aggregate>(
        &mut self,
        actor: Actor,
        id: impl fmt::Display,
        command: A::Command,
    ) -> Result<Vec<A::Event>, A::Error> {
        let stream = A::stream(id);
        let Some(state) = self.slot::<A>(&stream) else {
            return Ok(Vec::new());
        };
        let events = state.decide(command)?;
        if events.is_empty() {
            return Ok(events);
        }
        let Some(slot) = self.slots.get_mut(&stream) else {
            return Ok(Vec::new());
        };
        if !self.saved.iter().any(|(s, _)| s == &stream) {
            self.saved.push((stream.clone(), slot.state.clone_box()));
        }
        if let Some(state) = slot.state.as_any_mut().downcast_mut::<A>() {
            for event in &events {
                state.apply(event);
            }
        }
        self.decided.extend(events.iter().map(|e| Decided {
            stream: stream.clone(),
            event: e.to_new_event(actor.clone()),
        }));
        Ok(events)
    }

    /// The state of a target, or `None` (and a fault) if it is not one.
    fn slot<A: Aggregate>(&mut self, stream: &StreamName) -> Option<&A> {
        let found = self
            .slots
            .get(stream)
            .and_then(|slot| slot.state.as_any().downcast_ref::<A>())
            .is_some();
        if !found {
            self.fault
                .get_or_insert_with(|| format!("{stream} is not among the command's targets"));
            return None;
        }
        self.slots
            .get(stream)
            .and_then(|slot| slot.state.as_any().downcast_ref::<A>())
    }

    /// Puts back the states this command changed (it was refused).
    pub(super) fn undo(&mut self) {
        for (stream, state) in self.saved.drain(..) {
            if let Some(slot) = self.slots.get_mut(&stream) {
                slot.state = state;
            }
        }
        self.decided.clear();
    }
}
