//! The command runner: queues commands ([`crate::batch`]), and works each
//! group: load (or recall what the group before left, [`Remembered`]),
//! decide in arrival order, one atomic append, the commands' other writes,
//! commit.

use std::{any::Any, collections::HashMap, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use sea_orm::{DatabaseConnection, DatabaseExecutor, DbErr};

use super::{
    Command, CommandError,
    remembered::Remembered,
    work::{Decided, Slot, Target, Work},
};
use crate::{
    batch::{self, Batch, Gather},
    db::{Backend, WriteTxn},
    events::{
        Actor, Append, AppendError, EventStore, ExpectedVersion, RecordedEvent, StreamName,
        store::stream_versions,
    },
};

/// Commands in one group, at most.
const MAX_GROUP: usize = 128;

/// Groups written at once on PostgreSQL (each on a connection of its own);
/// SQLite has one writer at a time anyway.
const POSTGRES_RUNNERS: usize = 4;

/// Times a group is loaded and decided again after losing a race.
const MAX_CONFLICTS: u32 = 4;

/// What a command that went through gives back.
#[derive(Debug)]
pub struct Done<O> {
    pub output: O,
    /// Its events as written, in the order it decided them.
    pub events: Vec<RecordedEvent>,
}

/// The runner every write goes through; cheap to clone.
#[derive(Clone)]
pub struct Commands {
    store: EventStore,
    gather: Arc<Gather<Group>>,
    remembered: Option<Arc<Remembered>>,
}

impl Commands {
    pub fn new(store: EventStore) -> Self {
        let runners = match store.db().backend() {
            Backend::Postgres => POSTGRES_RUNNERS,
            Backend::Sqlite => 1,
        };
        Self {
            store,
            gather: Arc::new(Gather::new(MAX_GROUP, runners)),
            remembered: Some(Arc::new(Remembered::new())),
        }
    }

    /// A runner that reads every aggregate from the database each time
    /// (what remembering states must be equal to).
    pub fn reading_every_time(store: EventStore) -> Self {
        Self {
            remembered: None,
            ..Self::new(store)
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Runs `command` by `actor` and answers once it is committed (or
    /// refused, or failed: nothing of it is written then, unless the error
    /// says the outcome is unknown).
    #[tracing::instrument(name = "command", skip_all, fields(command = std::any::type_name::<C>()))]
    pub async fn run<C: Command>(
        &self,
        mut command: C,
        actor: Actor,
    ) -> Result<Done<C::Output>, CommandError<C::Error>> {
        command.prepare(self.store.db().conn()).await?;
        self.submit(command, actor).await
    }

    /// Runs `commands` in this order, queued together (so they share
    /// groups as far as they fit): an answer each, in order.
    pub async fn run_all<C: Command>(
        &self,
        commands: Vec<C>,
        actor: Actor,
    ) -> Vec<Result<Done<C::Output>, CommandError<C::Error>>> {
        let mut answers: Vec<Option<Answer<C>>> = Vec::with_capacity(commands.len());
        let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(commands.len());
        for mut command in commands {
            match command.prepare(self.store.db().conn()).await {
                Ok(()) => {
                    answers.push(None);
                    jobs.push(Box::new(Typed::new(command, actor.clone())));
                }
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let group = self.group();
        let mut queued = self.gather.submit_all(&group, jobs).await.into_iter();
        answers
            .into_iter()
            .map(|answer| match answer {
                Some(refused) => refused,
                None => match queued.next() {
                    Some(answer) => downcast::<C>(answer),
                    None => Err(interrupted(batch::Interrupted::Midway)),
                },
            })
            .collect()
    }

    async fn submit<C: Command>(
        &self,
        command: C,
        actor: Actor,
    ) -> Result<Done<C::Output>, CommandError<C::Error>> {
        let group = self.group();
        let job: Box<dyn Job> = Box::new(Typed::new(command, actor));
        downcast::<C>(self.gather.submit(&group, job).await)
    }

    fn group(&self) -> Group {
        Group {
            store: self.store.clone(),
            remembered: self.remembered.clone(),
        }
    }
}

type Answer<C> = Result<Done<<C as Command>::Output>, CommandError<<C as Command>::Error>>;

/// A command's answer, as its group gave it.
fn downcast<C: Command>(answer: Result<Box<dyn Any + Send>, batch::Interrupted>) -> Answer<C> {
    match answer {
        Ok(answer) => match answer.downcast::<Answer<C>>() {
            Ok(answer) => *answer,
            Err(_) => Err(CommandError::Db(DbErr::Custom(
                "a command was answered with another command's answer".into(),
            ))),
        },
        Err(e) => Err(interrupted(e)),
    }
}

/// Its group stopped midway: it may have been committed, so it is not run
/// again. Or it was never taken (the process is stopping): nothing of it
/// was written.
fn interrupted<E>(e: batch::Interrupted) -> CommandError<E> {
    CommandError::Append(match e {
        batch::Interrupted::Midway => AppendError::Unknown(format!("the command was {e}")),
        batch::Interrupted::NotRun => AppendError::Unavailable(format!("the command was {e}")),
    })
}

/// A group's queue: the streams of the commands' targets are its keys.
#[derive(Clone)]
struct Group {
    store: EventStore,
    remembered: Option<Arc<Remembered>>,
}

impl Batch for Group {
    type Item = Box<dyn Job>;
    type Answer = Box<dyn Any + Send>;
    type Key = StreamName;

    fn keys(job: &Box<dyn Job>) -> Vec<StreamName> {
        job.targets().iter().map(|t| t.stream.clone()).collect()
    }

    async fn run(&self, jobs: Vec<Box<dyn Job>>) -> Vec<Box<dyn Any + Send>> {
        settle(&self.store, self.remembered.as_deref(), jobs).await
    }
}

/// A command of any type, in a group.
trait Job: Send + Sync {
    fn targets(&self) -> &[Target];
    fn actor(&self) -> Actor;
    /// Whether it has writes besides its events.
    fn writes(&self) -> bool;
    /// Decides through `work`: whether it went through (its events are in
    /// `work` then). Undoes what it changed otherwise.
    fn decide(&mut self, work: &mut Work<'_>) -> bool;
    /// Its other writes, in the group's transaction. On a failure the
    /// command's own error is kept for its answer; what comes back says
    /// what kind of failure it was, for the group.
    fn write<'a>(
        &'a mut self,
        txn: &'a WriteTxn,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), AppendError>>;
    fn prepare<'a>(&'a mut self, conn: &'a DatabaseConnection) -> BoxFuture<'a, bool>;
    /// Its answer, with its events (the group was written) or why not.
    fn finish(
        self: Box<Self>,
        written: Result<Vec<RecordedEvent>, AppendError>,
    ) -> Box<dyn Any + Send>;
}

impl<C: Command> Typed<C> {
    fn new(command: C, actor: Actor) -> Self {
        Self {
            targets: command.targets(),
            command,
            actor,
            decided: None,
            written: None,
        }
    }
}

struct Typed<C: Command> {
    command: C,
    actor: Actor,
    targets: Vec<Target>,
    /// What it decided last (a group may decide it more than once).
    decided: Option<Result<C::Output, CommandError<C::Error>>>,
    /// Why its other writes failed, if they did.
    written: Option<CommandError<C::Error>>,
}

impl<C: Command> Job for Typed<C> {
    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn actor(&self) -> Actor {
        self.actor.clone()
    }

    fn writes(&self) -> bool {
        self.command.writes() && matches!(self.decided, Some(Ok(_)))
    }

    fn decide(&mut self, work: &mut Work<'_>) -> bool {
        self.written = None;
        let command = &self.command;
        let decided = match std::panic::catch_unwind(AssertUnwindSafe(|| command.decide(work))) {
            Ok(decided) => decided,
            // Only this command fails; the group goes on without it.
            Err(_) => {
                work.undo();
                self.decided = Some(Err(panicked::<C>("deciding")));
                return false;
            }
        };
        let decided = match (decided, work.fault.take()) {
            (_, Some(fault)) => Err(CommandError::Db(DbErr::Custom(format!(
                "{}: {fault}",
                std::any::type_name::<C>()
            )))),
            (Ok(output), None) => Ok(output),
            (Err(e), None) => Err(CommandError::Domain(e)),
        };
        let accepted = decided.is_ok();
        if !accepted {
            work.undo();
        }
        self.decided = Some(decided);
        accepted
    }

    fn write<'a>(
        &'a mut self,
        txn: &'a WriteTxn,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        Box::pin(async move {
            let Some(Ok(output)) = self.decided.as_mut() else {
                return Ok(());
            };
            let written = AssertUnwindSafe(self.command.write(txn, output, events))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(panicked::<C>("writing")));
            let Err(e) = written else {
                return Ok(());
            };
            let kind = match &e {
                CommandError::Append(e) => copy(e),
                CommandError::Db(e) if crate::db::is_unavailable(e) => {
                    AppendError::Unavailable(e.to_string())
                }
                _ => AppendError::Db(DbErr::Custom("a command's other writes refused".into())),
            };
            self.written = Some(e);
            Err(kind)
        })
    }

    fn prepare<'a>(&'a mut self, conn: &'a DatabaseConnection) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            match self.command.prepare(conn).await {
                Ok(()) => {
                    self.targets = self.command.targets();
                    true
                }
                Err(e) => {
                    self.decided = Some(Err(e));
                    false
                }
            }
        })
    }

    fn finish(
        self: Box<Self>,
        written: Result<Vec<RecordedEvent>, AppendError>,
    ) -> Box<dyn Any + Send> {
        let answer: Answer<C> = match (written, self.written, self.decided) {
            // Its own writes refused: that is why the group failed.
            (_, Some(refused), _) => Err(refused),
            (Err(failure), None, _) => Err(CommandError::Append(failure)),
            (Ok(events), None, Some(Ok(output))) => Ok(Done { output, events }),
            (Ok(_), None, Some(Err(e))) => Err(e),
            (Ok(_), None, None) => Err(CommandError::Db(DbErr::Custom(
                "a command was answered before it was decided".into(),
            ))),
        };
        Box::new(answer)
    }
}

/// Whether a group's failure is the same for every command in it: nothing
/// was written and the database could not be reached, or the outcome is
/// unknown. Anything else may be one command's doing (a read model's unique
/// key, its other writes refusing) and is worth finding out one by one.
fn is_shared(e: &AppendError) -> bool {
    matches!(e, AppendError::Unavailable(_) | AppendError::Unknown(_))
}

fn is_unique_violation(e: &AppendError) -> bool {
    matches!(e, AppendError::Db(db)
        if matches!(db.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))))
}

/// The same failure again, for another command of the group.
fn copy(e: &AppendError) -> AppendError {
    match e {
        AppendError::Conflict(m) => AppendError::Conflict(m.clone()),
        AppendError::TooMany(n) => AppendError::TooMany(*n),
        AppendError::Unavailable(m) => AppendError::Unavailable(m.clone()),
        AppendError::Unknown(m) => AppendError::Unknown(m.clone()),
        AppendError::Decode(d) => AppendError::Decode(d.clone()),
        AppendError::Db(db) => AppendError::Db(DbErr::Custom(db.to_string())),
    }
}

/// The failure of a command that panicked.
fn panicked<C: Command>(doing: &str) -> CommandError<C::Error> {
    CommandError::Internal(anyhow::anyhow!(
        "{} panicked while {doing}",
        std::any::type_name::<C>()
    ))
}

/// What one attempt at a group came to.
enum Attempt {
    /// Written (or nothing to write): each command's events, in order.
    Written(Vec<Vec<RecordedEvent>>),
    /// Another writer got to one of its streams first: nothing written.
    Conflict(AppendError),
    Failed(AppendError),
}

/// Works one group; an answer per command, in order.
#[tracing::instrument(name = "command_group", skip_all, fields(commands = jobs.len()))]
async fn settle(
    store: &EventStore,
    remembered: Option<&Remembered>,
    mut jobs: Vec<Box<dyn Job>>,
) -> Vec<Box<dyn Any + Send>> {
    let mut conflicts = 0;
    let mut prepared_again = false;
    loop {
        // After a lost race the snapshots are checked against their streams.
        match attempt(store, remembered, &mut jobs, conflicts > 0).await {
            Attempt::Written(events) => {
                return jobs
                    .into_iter()
                    .zip(events)
                    .map(|(job, events)| job.finish(Ok(events)))
                    .collect();
            }
            Attempt::Conflict(e) if conflicts < MAX_CONFLICTS => {
                conflicts += 1;
                tracing::debug!(error = %e, conflicts, "lost a race; loading and deciding again");
                // A little jitter so racing writers do not collide again.
                let jitter = u64::from(rand::random::<u8>() % 10);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
            }
            Attempt::Conflict(e) if jobs.len() == 1 => return finish_all(jobs, e),
            Attempt::Failed(e) if is_shared(&e) => return finish_all(jobs, e),
            Attempt::Failed(e) if jobs.len() == 1 => {
                if is_unique_violation(&e) && !prepared_again {
                    // Decided once more after a fresh look: what broke the
                    // key may be what the lookup now finds (a user created
                    // by another sign-in meanwhile, say).
                    prepared_again = true;
                    let prepared = match jobs.first_mut() {
                        Some(job) => job.prepare(store.db().conn()).await,
                        None => false,
                    };
                    if prepared {
                        continue;
                    }
                }
                return finish_all(jobs, e);
            }
            // One of them may be the cause: each runs alone.
            Attempt::Conflict(_) | Attempt::Failed(_) => {
                let mut answers = Vec::with_capacity(jobs.len());
                for job in jobs {
                    answers.extend(Box::pin(settle(store, remembered, vec![job])).await);
                }
                return answers;
            }
        }
    }
}

/// Every command hears of the group's failure (the last one gets the
/// error itself, the others copies).
fn finish_all(jobs: Vec<Box<dyn Job>>, failure: AppendError) -> Vec<Box<dyn Any + Send>> {
    let mut answers: Vec<_> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs;
    let last = jobs.pop();
    for job in jobs {
        answers.push(job.finish(Err(copy(&failure))));
    }
    answers.extend(last.map(|job| job.finish(Err(failure))));
    answers
}

/// Where each command's events went: (append, place in it).
type Places = Vec<Vec<(usize, usize)>>;

async fn attempt(
    store: &EventStore,
    remembered: Option<&Remembered>,
    jobs: &mut [Box<dyn Job>],
    verify: bool,
) -> Attempt {
    let streams: Vec<StreamName> = jobs
        .iter()
        .flat_map(|job| job.targets().iter().map(|t| t.stream.clone()))
        .collect();
    // After a lost race nothing remembered is trusted.
    let recalled = match remembered {
        Some(remembered) if !verify => remembered.recall(&streams),
        _ => Vec::new(),
    };
    let recalled_streams: Vec<StreamName> = recalled.iter().map(|(s, _)| s.clone()).collect();
    let mut slots: HashMap<StreamName, Slot> = recalled.into_iter().collect();
    let outcome = attempt_with(store, &mut slots, &recalled_streams, jobs, verify).await;
    if let Some(remembered) = remembered {
        match &outcome {
            Attempt::Written(_) => remembered.keep(slots),
            Attempt::Conflict(_) | Attempt::Failed(_) => remembered.forget(&streams),
        }
    }
    outcome
}

/// One attempt, deciding on `slots` (what was remembered, the `recalled`
/// streams, and the rest loaded); they are left as the group left them, at
/// their new versions when it wrote.
async fn attempt_with(
    store: &EventStore,
    slots: &mut HashMap<StreamName, Slot>,
    recalled: &[StreamName],
    jobs: &mut [Box<dyn Job>],
    verify: bool,
) -> Attempt {
    // SQLite: the write lock from the read on (writes go one at a time
    // there anyway). PostgreSQL: the aggregates are read before any
    // transaction; every append is checked against the version read.
    let txn = match store.db().backend() {
        Backend::Sqlite => match store.db().begin_write().await {
            Ok(txn) => Some(txn),
            Err(e) => return Attempt::Failed(unavailable_or_db(e)),
        },
        Backend::Postgres => None,
    };
    let loaded = match &txn {
        Some(txn) => {
            load(
                store,
                &DatabaseExecutor::Transaction(txn),
                jobs,
                slots,
                verify,
            )
            .await
        }
        None => {
            let conn = DatabaseExecutor::Connection(store.db().conn());
            load(store, &conn, jobs, slots, verify).await
        }
    };
    if let Err(e) = loaded {
        return fail(txn, e).await;
    }
    let (appends, places) = decide(slots, jobs);
    let lengths: Vec<usize> = appends.iter().map(|a| a.events.len()).collect();
    let grown: Vec<(StreamName, usize)> = appends
        .iter()
        .map(|a| (a.stream.clone(), a.events.len()))
        .collect();
    // A remembered state no append checks (what was decided on it was a
    // refusal, or changed nothing) is checked here: either could be wrong
    // on a state another instance has moved on from.
    let unchecked: Vec<StreamName> = recalled
        .iter()
        .filter(|stream| !grown.iter().any(|(s, _)| s == *stream))
        .cloned()
        .collect();
    if !unchecked.is_empty() {
        let current = match &txn {
            Some(txn) => stream_versions(&**txn, &unchecked).await,
            None => stream_versions(store.db().conn(), &unchecked).await,
        };
        let current = match current {
            Ok(current) => current,
            Err(e) => return fail(txn, unavailable_or_db(e)).await,
        };
        let stale = unchecked.iter().find(|stream| {
            let remembered = slots.get(*stream).map(|slot| slot.version);
            remembered != Some(current.get(*stream).copied().unwrap_or(0))
        });
        if let Some(stream) = stale {
            if let Some(txn) = txn {
                let _ = txn.rollback().await;
            }
            return Attempt::Conflict(AppendError::Conflict(format!(
                "{stream} moved on since it was remembered"
            )));
        }
    }
    let writes = jobs.iter().any(|job| job.writes());
    if appends.is_empty() && !writes {
        if let Some(txn) = txn {
            let _ = txn.rollback().await;
        }
        return Attempt::Written(vec![Vec::new(); jobs.len()]);
    }
    let written = if txn.is_none() && !writes {
        // On its own: one statement where the read models allow it.
        store.append(appends, None).await
    } else {
        let txn = match txn {
            Some(txn) => txn,
            None => match store.db().begin_write().await {
                Ok(txn) => txn,
                Err(e) => return Attempt::Failed(unavailable_or_db(e)),
            },
        };
        match in_transaction(store, &txn, appends, &lengths, &places, jobs).await {
            Ok(written) => match txn.commit().await {
                Ok(()) => Ok(written),
                Err(e) => Err(crate::events::store::commit_failed(e)),
            },
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        }
    };
    match written {
        Ok(written) => {
            for (stream, events) in grown {
                if let Some(slot) = slots.get_mut(&stream) {
                    slot.version += u32::try_from(events).unwrap_or(u32::MAX);
                }
            }
            Attempt::Written(split(&written, &lengths, &places))
        }
        Err(e @ AppendError::Conflict(_)) => Attempt::Conflict(e),
        Err(e) => Attempt::Failed(e),
    }
}

async fn fail(txn: Option<WriteTxn>, failure: AppendError) -> Attempt {
    if let Some(txn) = txn {
        let _ = txn.rollback().await;
    }
    Attempt::Failed(failure)
}

fn unavailable_or_db(e: DbErr) -> AppendError {
    if crate::db::is_unavailable(&e) {
        AppendError::Unavailable(e.to_string())
    } else {
        AppendError::Db(e)
    }
}

/// Every target of the group not in `slots` yet, loaded into it: those of
/// one aggregate type together.
async fn load(
    store: &EventStore,
    conn: &DatabaseExecutor<'_>,
    jobs: &[Box<dyn Job>],
    slots: &mut HashMap<StreamName, Slot>,
    verify: bool,
) -> Result<(), AppendError> {
    let mut by_type: Vec<(&Target, Vec<String>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for target in jobs.iter().flat_map(|job| job.targets()) {
        if slots.contains_key(&target.stream) || !seen.insert(&target.stream) {
            continue;
        }
        match by_type
            .iter_mut()
            .find(|(t, _)| t.category == target.category)
        {
            Some((_, ids)) => ids.push(target.id.clone()),
            None => by_type.push((target, vec![target.id.clone()])),
        }
    }
    for (target, ids) in by_type {
        let loaded = (target.load)(store, conn, &ids, verify)
            .await
            .map_err(|e| match e {
                AppendError::Db(db) => unavailable_or_db(db),
                other => other,
            })?;
        for (id, slot) in loaded {
            let stream = StreamName::for_id(target.category, &id);
            slots.insert(stream, slot);
        }
    }
    Ok(())
}

/// Decides every command in order; one append per stream, in the order
/// streams first appear, with where each command's events went.
fn decide(
    slots: &mut HashMap<StreamName, Slot>,
    jobs: &mut [Box<dyn Job>],
) -> (Vec<Append>, Places) {
    let mut appends: Vec<Append> = Vec::new();
    let mut places = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let mut work = Work::new(slots, job.actor());
        let mut mine = Vec::new();
        if job.decide(&mut work) {
            let decided: Vec<Decided> = std::mem::take(&mut work.decided);
            drop(work);
            for Decided { stream, event } in decided {
                let n = match appends.iter().position(|a| a.stream == stream) {
                    Some(n) => n,
                    None => {
                        let version = slots.get(&stream).map_or(0, |slot| slot.version);
                        appends.push(Append::new(
                            stream,
                            ExpectedVersion::at(version),
                            Vec::new(),
                        ));
                        appends.len() - 1
                    }
                };
                mine.push((n, appends[n].events.len()));
                appends[n].events.push(event);
            }
        }
        places.push(mine);
    }
    (appends, places)
}

/// The group's appends and its commands' other writes, in `txn`.
async fn in_transaction(
    store: &EventStore,
    txn: &WriteTxn,
    appends: Vec<Append>,
    lengths: &[usize],
    places: &Places,
    jobs: &mut [Box<dyn Job>],
) -> Result<Vec<RecordedEvent>, AppendError> {
    let written = store.append(appends, Some(txn)).await?;
    let per_job = split(&written, lengths, places);
    for (job, events) in jobs.iter_mut().zip(&per_job) {
        if job.writes() {
            job.write(txn, events).await?;
        }
    }
    Ok(written)
}

/// The written events (append after append) cut back into each command's.
fn split(written: &[RecordedEvent], lengths: &[usize], places: &Places) -> Vec<Vec<RecordedEvent>> {
    let mut starts = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for length in lengths {
        starts.push(at);
        at += length;
    }
    places
        .iter()
        .map(|mine| {
            mine.iter()
                .filter_map(|(n, i)| written.get(starts.get(*n)? + i).cloned())
                .collect()
        })
        .collect()
}
