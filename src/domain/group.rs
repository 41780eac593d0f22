//! Group commit for commands: commands to one kind of aggregate that arrive
//! while others are being written go to the database together, with one
//! read of every aggregate they touch, one statement for their events and
//! one per read model (on PostgreSQL often one statement for all of it),
//! instead of a transaction each.
//!
//! Each command is still decided on its own, in arrival order; a second
//! command to the same aggregate decides on the state the first left, and
//! both land with consecutive versions. What the group cannot settle (the
//! aggregate changed meanwhile, or the group's transaction failed, e.g. on
//! a read model's unique key that one of the commands broke) goes back to
//! its caller, which runs it alone as before: one command never fails
//! another.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    ops::Range,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use sea_orm::DbErr;
use tokio::sync::oneshot;

use super::{Aggregate, CommandError, DomainEvent, Executed, Loaded, load_all};
use crate::{
    db::{Backend, WriteTxn, is_unavailable},
    events::{
        Actor, AppendError, EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamName,
    },
};

/// Commands in one group, at most.
const MAX_GROUP: usize = 128;

/// Aggregates remembered per type, at most (see `QueueState::known`).
const MAX_KNOWN: usize = 10_000;

/// Groups written at once on PostgreSQL, at most (each on a connection of
/// its own); SQLite has one writer at a time anyway. A second group starts
/// only while more commands wait than one group takes: on a busy machine,
/// groups written side by side are smaller, and the same work costs more
/// statements.
const POSTGRES_RUNNERS: usize = 4;

/// What became of a command sent to the group.
pub(super) enum Outcome<A: Aggregate> {
    Settled(Result<Executed<A>, CommandError<A::Error>>),
    /// Not settled in the group, and nothing of it written: run it alone.
    Alone,
}

struct Job<A: Aggregate> {
    id: String,
    stream: StreamName,
    command: A::Command,
    actor: Actor,
    reply: oneshot::Sender<Outcome<A>>,
}

/// The commands waiting for a group, per aggregate type (one per store).
pub(super) struct Queue<A: Aggregate> {
    state: Mutex<QueueState<A>>,
}

struct QueueState<A: Aggregate> {
    jobs: VecDeque<Job<A>>,
    runners: usize,
    /// PostgreSQL: aggregates as this instance's groups last wrote them, so
    /// that a group reads from the database only those it has not seen. An
    /// entry that has gone stale (another instance, or a command run alone,
    /// wrote since) cannot do harm: every append is checked against the
    /// version it was decided on, so its commands run alone and the entry
    /// is dropped. A refusal decided on a remembered state is not trusted
    /// (nothing written checks it): that command runs alone too.
    known: HashMap<String, Loaded<A>>,
    /// Aggregates a running group has read: a second group must wait for
    /// them rather than race it to the same versions.
    busy: HashSet<StreamName>,
}

impl<A: Aggregate> Default for Queue<A> {
    fn default() -> Self {
        Self {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                runners: 0,
                known: HashMap::new(),
                busy: HashSet::new(),
            }),
        }
    }
}

impl<A: Aggregate> Queue<A> {
    fn lock(&self) -> MutexGuard<'_, QueueState<A>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, ids: &[String]) {
        let mut state = self.lock();
        for id in ids {
            state.known.remove(id);
        }
    }

    /// Remembers what a group wrote (`Some`), forgets the rest (`None`).
    fn remember(&self, aggregates: impl IntoIterator<Item = (String, Option<Loaded<A>>)>) {
        let mut state = self.lock();
        for (id, loaded) in aggregates {
            match loaded {
                Some(loaded) => {
                    if state.known.len() >= MAX_KNOWN && !state.known.contains_key(&id) {
                        // Simpler than least-recently-used, and rare: the
                        // next groups read from the database again.
                        state.known.clear();
                    }
                    state.known.insert(id, loaded);
                }
                None => {
                    state.known.remove(&id);
                }
            }
        }
    }
}

impl<A: Aggregate + Clone> Queue<A> {
    fn remembered(&self, ids: &[String]) -> HashMap<String, Loaded<A>> {
        let state = self.lock();
        ids.iter()
            .filter_map(|id| Some((id.clone(), state.known.get(id)?.clone())))
            .collect()
    }
}

/// Queues `command` for the next group of its aggregate type and waits for
/// what became of it.
pub(super) async fn submit<A>(
    store: &EventStore,
    id: String,
    command: A::Command,
    actor: Actor,
) -> Outcome<A>
where
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Command: Send + 'static,
    A::Error: Send + 'static,
{
    let queue = store.shared::<Queue<A>>();
    let (reply, answer) = oneshot::channel();
    let runners = match store.db().backend() {
        Backend::Postgres => POSTGRES_RUNNERS,
        Backend::Sqlite => 1,
    };
    let start = {
        let mut state = queue.lock();
        state.jobs.push_back(Job {
            stream: A::stream(&id),
            id,
            command,
            actor,
            reply,
        });
        let start = state.runners == 0
            || (state.runners < runners && state.jobs.len() > state.runners * MAX_GROUP);
        if start {
            state.runners += 1;
        }
        start
    };
    if start {
        tokio::spawn(run(store.clone(), queue));
    }
    answer.await.unwrap_or_else(|_| {
        // The runner went away (a panic, or the runtime stopping), in the
        // middle of this command's group or before taking it: whether it was
        // committed is not known here, so it is not run again.
        Outcome::Settled(Err(CommandError::Db(DbErr::Custom(
            "the command was interrupted".into(),
        ))))
    })
}

/// Takes groups from the queue and runs them until no command is left that
/// it may take.
async fn run<A>(store: EventStore, queue: Arc<Queue<A>>)
where
    A: Aggregate + Clone + Send + Sync + 'static,
    A::Command: Send + 'static,
    A::Error: Send + 'static,
{
    let mut runner = Runner {
        queue: &queue,
        streams: Vec::new(),
        finished: false,
    };
    loop {
        let group = {
            let mut state = queue.lock();
            for stream in runner.streams.drain(..) {
                state.busy.remove(&stream);
            }
            let group = take(&mut state);
            if group.is_empty() {
                state.runners -= 1;
                runner.finished = true;
                return;
            }
            runner.streams = group.iter().map(|job| job.stream.clone()).collect();
            state.busy.extend(runner.streams.iter().cloned());
            group
        };
        let (replies, commands): (Vec<_>, Vec<_>) = group
            .into_iter()
            .map(|job| (job.reply, (job.id, job.stream, job.command, job.actor)))
            .unzip();
        let outcomes = settle::<A>(&store, &queue, commands).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The caller may have gone; the command stands all the same.
            let _ = reply.send(outcome);
        }
    }
}

/// Up to [`MAX_GROUP`] queued commands, in arrival order, leaving those of
/// aggregates another group is working on.
fn take<A: Aggregate>(state: &mut QueueState<A>) -> Vec<Job<A>> {
    let mut group = Vec::new();
    let mut left = VecDeque::new();
    while let Some(job) = state.jobs.pop_front() {
        if group.len() < MAX_GROUP && !state.busy.contains(&job.stream) {
            group.push(job);
        } else {
            left.push_back(job);
        }
    }
    state.jobs = left;
    group
}

/// Frees what a runner held if it stops without finishing (a panic, or its
/// runtime stopping): its aggregates and its place. If it was the last
/// runner, the commands still queued are answered with an error (their
/// reply channels close) rather than left waiting for a runner that only
/// the next command would start.
struct Runner<'a, A: Aggregate> {
    queue: &'a Queue<A>,
    streams: Vec<StreamName>,
    finished: bool,
}

impl<A: Aggregate> Drop for Runner<'_, A> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.queue.lock();
        for stream in self.streams.drain(..) {
            state.busy.remove(&stream);
        }
        state.runners -= 1;
        if state.runners == 0 {
            state.jobs.clear();
        }
    }
}

/// A command's decision within the group.
enum Decision<A: Aggregate> {
    Refused {
        append: usize,
        error: A::Error,
    },
    /// `events` are its events' places in the append of its aggregate.
    Decided {
        append: usize,
        before: A,
        events: Range<usize>,
    },
}

/// Runs one group; an outcome per command, in order.
///
/// On SQLite the group is one transaction, holding the write lock from the
/// read on (writes go one at a time there anyway). On PostgreSQL the
/// aggregates are read before any transaction: every append is checked
/// against the version read, so a change in between only sends that
/// aggregate's commands to run alone. When all the group's events can be
/// written with their read models in one statement
/// ([`EventStore::append_many_once`]), there is no transaction at all:
/// two round trips for the group instead of five.
async fn settle<A: Aggregate + Clone>(
    store: &EventStore,
    queue: &Queue<A>,
    commands: Vec<(String, StreamName, A::Command, Actor)>,
) -> Vec<Outcome<A>> {
    let count = commands.len();
    let txn = match store.db().backend() {
        Backend::Sqlite => match store.db().begin_write().await {
            Ok(txn) => Some(txn),
            Err(e) => return failed(&e, count),
        },
        Backend::Postgres => None,
    };
    let mut ids: Vec<String> = Vec::new();
    for (id, ..) in &commands {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    // Only PostgreSQL remembers aggregates (see `QueueState::known`).
    let remembered = match txn {
        Some(_) => HashMap::new(),
        None => queue.remembered(&ids),
    };
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !remembered.contains_key(*id))
        .cloned()
        .collect();
    let loaded = match &txn {
        _ if unknown.is_empty() => Ok(HashMap::new()),
        Some(txn) => load_all::<A>(store, &**txn, &unknown).await,
        None => load_all::<A>(store, store.db().conn(), &unknown).await,
    };
    let mut current = match loaded {
        Ok(current) => current,
        Err(e) => {
            if let Some(txn) = txn {
                let _ = txn.rollback().await;
            }
            return failed(&e, count);
        }
    };
    let remembered: HashSet<String> = remembered
        .into_iter()
        .map(|(id, loaded)| {
            current.insert(id.clone(), loaded);
            id
        })
        .collect();
    // One append per aggregate, in the order they first appear.
    let mut appends: Vec<(StreamName, ExpectedVersion, Vec<NewEvent>)> = Vec::new();
    let mut append_of: HashMap<String, usize> = HashMap::new();
    let mut decisions = Vec::with_capacity(count);
    for (id, stream, command, actor) in commands {
        let loaded = current.entry(id.clone()).or_insert_with(|| Loaded {
            state: A::default(),
            version: 0,
        });
        let append = *append_of.entry(id).or_insert_with(|| {
            let expected = match loaded.version {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v),
            };
            appends.push((stream, expected, Vec::new()));
            appends.len() - 1
        });
        match loaded.state.decide(command) {
            Err(error) => decisions.push(Decision::Refused { append, error }),
            Ok(decided) => {
                let before = loaded.state.clone();
                for event in &decided {
                    loaded.state.apply(event);
                }
                let events = &mut appends[append].2;
                let start = events.len();
                events.extend(decided.iter().map(|e| e.to_new_event(actor.clone())));
                decisions.push(Decision::Decided {
                    append,
                    before,
                    events: start..events.len(),
                });
            }
        }
    }
    // A remembered aggregate given no events has nothing written to check
    // its state against: its commands run alone. Where events are written,
    // the version check vouches for every decision on that state, refusals
    // included.
    let unverified: HashSet<usize> = append_of
        .iter()
        .filter(|(id, append)| remembered.contains(*id) && appends[**append].2.is_empty())
        .map(|(_, append)| *append)
        .collect();
    let postgres = txn.is_none();
    let once = postgres && store.appends_once(appends.iter().flat_map(|a| &a.2));
    let written = if once {
        store.append_many_once(appends).await.map_err(|e| match e {
            AppendError::Db(e) => Failure::NotWritten(e),
            AppendError::Unavailable(e) => Failure::Lost(e),
            _ => Failure::Alone,
        })
    } else {
        in_transaction(store, txn, appends).await
    };
    let written = match written {
        Ok(written) => written,
        Err(failure) => {
            queue.forget(&ids);
            return (0..count).map(|_| failure.outcome()).collect();
        }
    };
    if postgres {
        queue.remember(append_of.into_iter().map(|(id, append)| {
            let written = written[append]
                .as_ref()
                .filter(|_| !unverified.contains(&append));
            // Not an aggregate that does not exist (yet): anyone could fill
            // the memory with made-up ids.
            let loaded = written.and_then(|events| {
                let state = current.remove(&id)?;
                let version = events.last().map_or(state.version, |e| e.version);
                (version > 0).then_some(Loaded {
                    version,
                    state: state.state,
                })
            });
            (id, loaded)
        }));
    }
    decisions
        .into_iter()
        .map(|decision| match decision {
            // Decided on an aggregate that changed meanwhile: decide again.
            Decision::Refused { append, .. } | Decision::Decided { append, .. }
                if written[append].is_none() || unverified.contains(&append) =>
            {
                Outcome::Alone
            }
            Decision::Refused { error, .. } => Outcome::Settled(Err(CommandError::Domain(error))),
            Decision::Decided {
                append,
                before,
                events,
            } => Outcome::Settled(Ok(Executed {
                before,
                events: written[append]
                    .as_ref()
                    .map(|all| all[events].to_vec())
                    .unwrap_or_default(),
            })),
        })
        .collect()
}

type Written = Vec<Option<Vec<RecordedEvent>>>;

/// Why a group's transaction did not go through.
enum Failure {
    /// Nothing was written.
    NotWritten(DbErr),
    /// Nothing was written, and the database answered: each command may
    /// run alone.
    Alone,
    /// The commit's answer was lost: it may have gone through.
    Commit(DbErr),
    /// An autocommit statement's outcome is unknown (the connection broke,
    /// or its answer could not be read): it may have gone through.
    Lost(String),
}

impl Failure {
    fn outcome<A: Aggregate>(&self) -> Outcome<A> {
        match self {
            Self::NotWritten(e) => failed_one(e),
            Self::Alone => Outcome::Alone,
            // Running the commands again could write them twice.
            Self::Commit(e) => Outcome::Settled(Err(if is_unavailable(e) {
                unavailable(e)
            } else {
                CommandError::Db(DbErr::Custom(format!("commit: {e}")))
            })),
            Self::Lost(e) => Outcome::Settled(Err(CommandError::Append(AppendError::Unavailable(
                e.clone(),
            )))),
        }
    }
}

/// The group's appends in a transaction (`txn`, or a new one) and its
/// commit.
async fn in_transaction(
    store: &EventStore,
    txn: Option<WriteTxn>,
    appends: Vec<(StreamName, ExpectedVersion, Vec<NewEvent>)>,
) -> Result<Written, Failure> {
    let txn = match txn {
        Some(txn) => txn,
        None => store
            .db()
            .begin_write()
            .await
            .map_err(Failure::NotWritten)?,
    };
    let written = match store.append_many_in(&txn, appends).await {
        Ok(written) => written,
        Err(e) => {
            // Rolled back before the SQLite write lock is let go, so that
            // the commands running alone next do not find the database
            // locked by this transaction's connection.
            let _ = txn.rollback().await;
            return Err(match e {
                AppendError::Db(e) => Failure::NotWritten(e),
                _ => Failure::Alone,
            });
        }
    };
    txn.commit().await.map_err(Failure::Commit)?;
    Ok(written)
}

/// The group's transaction failed, so nothing of it was written. When the
/// database cannot be reached every command hears so; otherwise one of them
/// may be the cause (a read model's unique key), and each runs alone.
fn failed<A: Aggregate>(e: &DbErr, count: usize) -> Vec<Outcome<A>> {
    (0..count).map(|_| failed_one(e)).collect()
}

fn failed_one<A: Aggregate>(e: &DbErr) -> Outcome<A> {
    if is_unavailable(e) {
        Outcome::Settled(Err(unavailable(e)))
    } else {
        Outcome::Alone
    }
}

fn unavailable<E: super::DomainError>(e: &DbErr) -> CommandError<E> {
    CommandError::Append(AppendError::Unavailable(e.to_string()))
}
