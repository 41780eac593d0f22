//! Gathering: callers hand in items one at a time and wait for their
//! answers; what arrives while a batch is being worked waits, and goes
//! together as the next batch. Every batcher in the product is one of
//! these (commands, cabinet session checks, webhook outcomes); each says
//! only how one batch is worked.
//!
//! Items may name keys: an item is never in a batch while another running
//! batch holds one of its keys, and items sharing a key are worked in the
//! order they arrived (in the same batch or in later ones).

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;

/// How one batch is worked. A value of it is cloned into every runner the
/// gathering starts (it carries what the work needs: a database handle…).
pub trait Batch: Clone + Send + Sync + 'static {
    type Item: Send + 'static;
    type Answer: Send + 'static;
    /// What two running batches must not share (`()` when nothing is).
    type Key: Eq + Hash + Clone + Send + 'static;

    /// The keys an item holds while its batch runs.
    fn keys(_item: &Self::Item) -> Vec<Self::Key> {
        Vec::new()
    }

    /// How much of a batch's `max` an item takes (1 unless said: `max`
    /// counts items). An item heavier than `max` makes a batch alone.
    fn weight(_item: &Self::Item) -> usize {
        1
    }

    /// Works one batch: an answer per item, in order. An item left without
    /// an answer (fewer answers than items) hears [`Interrupted`].
    fn run(&self, items: Vec<Self::Item>) -> impl Future<Output = Vec<Self::Answer>> + Send;
}

/// An item that was not answered (a panic, or the runtime shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interrupted {
    /// Its batch stopped while working it: whether it took effect is not
    /// known.
    #[error("interrupted while it was being worked")]
    Midway,
    /// The last runner stopped before taking it: nothing of it happened.
    #[error("not run: the work stopped before it was taken")]
    NotRun,
}

/// The queue of one kind of batch.
pub struct Gather<B: Batch> {
    state: Mutex<State<B>>,
    /// Items in one batch, at most.
    max: usize,
    /// Batches worked at once, at most.
    runners: usize,
    /// An item that finds no batch running is worked by its caller's own
    /// task (no hop to another task); see [`Gather::inline`].
    inline: bool,
}

struct State<B: Batch> {
    queue: VecDeque<Waiting<B>>,
    /// The weight of what is queued.
    queued: usize,
    runners: usize,
    /// Keys held by running batches.
    busy: HashSet<B::Key>,
}

struct Waiting<B: Batch> {
    item: B::Item,
    keys: Vec<B::Key>,
    weight: usize,
    reply: oneshot::Sender<Result<B::Answer, Interrupted>>,
}

impl<B: Batch> Gather<B> {
    /// Batches of up to `max` items, up to `runners` of them at once. A
    /// second runner starts only while more items wait than the running
    /// ones take: on a busy machine, fewer and larger batches do the same
    /// work with fewer statements.
    pub fn new(max: usize, runners: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                queued: 0,
                runners: 0,
                busy: HashSet::new(),
            }),
            max: max.max(1),
            runners: runners.max(1),
            inline: false,
        }
    }

    /// An item that arrives while no batch runs is worked at once by the
    /// submitting task itself (what arrives meanwhile is handed to a runner
    /// task after it). For callers that are never cancelled midway: a
    /// caller dropped while working a batch drops that batch (its items
    /// hear [`Interrupted::Midway`]).
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` for the next batch (worked by `batch`'s clone in a
    /// runner task) and waits for its answer. Dropping the future does not
    /// withdraw the item.
    pub async fn submit(
        self: &Arc<Self>,
        batch: &B,
        item: B::Item,
    ) -> Result<B::Answer, Interrupted> {
        let mut answers = self.submit_all(batch, vec![item]).await;
        answers.pop().unwrap_or(Err(Interrupted::Midway))
    }

    /// Queues `items` together, in this order, and waits for their answers.
    pub async fn submit_all(
        self: &Arc<Self>,
        batch: &B,
        items: Vec<B::Item>,
    ) -> Vec<Result<B::Answer, Interrupted>> {
        if items.is_empty() {
            return Vec::new();
        }
        let mut answers = Vec::with_capacity(items.len());
        let (starts, inline) = {
            let mut state = self.lock();
            for item in items {
                let keys = B::keys(&item);
                let weight = B::weight(&item);
                let (reply, answer) = oneshot::channel();
                state.queued += weight;
                state.queue.push_back(Waiting {
                    item,
                    keys,
                    weight,
                    reply,
                });
                answers.push(answer);
            }
            if self.inline && state.runners == 0 {
                state.runners = 1;
                (0, true)
            } else {
                let mut starts = 0;
                while state.runners == 0
                    || (state.runners < self.runners && state.queued > state.runners * self.max)
                {
                    state.runners += 1;
                    starts += 1;
                }
                (starts, false)
            }
        };
        if inline {
            let mut runner = Runner {
                gather: self.clone(),
                keys: Vec::new(),
                finished: false,
            };
            // These items first, here; whatever came meanwhile, elsewhere.
            if work_one(&mut runner, batch).await {
                let more = {
                    let mut state = self.lock();
                    for key in runner.keys.drain(..) {
                        state.busy.remove(&key);
                    }
                    let more = !state.queue.is_empty();
                    if !more {
                        state.runners -= 1;
                        runner.finished = true;
                    }
                    more
                };
                if more {
                    tokio::spawn(run(runner, batch.clone()));
                }
            }
        }
        for _ in 0..starts {
            // The runner's place is given back even if its task never runs.
            let runner = Runner {
                gather: self.clone(),
                keys: Vec::new(),
                finished: false,
            };
            tokio::spawn(run(runner, batch.clone()));
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.await.unwrap_or(Err(Interrupted::Midway)));
        }
        results
    }
}

/// Takes batches and works them until nothing is left that it may take.
async fn run<B: Batch>(mut runner: Runner<B>, batch: B) {
    while work_one(&mut runner, &batch).await {}
}

/// Takes one batch and works it; `false` if there was nothing it may take
/// (the runner has given its place back then).
async fn work_one<B: Batch>(runner: &mut Runner<B>, batch: &B) -> bool {
    let gather = runner.gather.clone();
    let taken = {
        let mut state = gather.lock();
        for key in runner.keys.drain(..) {
            state.busy.remove(&key);
        }
        let taken = take(&mut state, gather.max);
        if taken.is_empty() {
            state.runners -= 1;
            runner.finished = true;
            return false;
        }
        runner.keys = taken.iter().flat_map(|w| w.keys.iter().cloned()).collect();
        state.busy.extend(runner.keys.iter().cloned());
        taken
    };
    let (items, replies): (Vec<_>, Vec<_>) = taken.into_iter().map(|w| (w.item, w.reply)).unzip();
    let answers = batch.run(items).await;
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The caller may have gone; the answer stands all the same.
        let _ = reply.send(Ok(answer));
    }
    true
}

/// Queued items in arrival order up to a weight of `max` (at least one),
/// leaving those with a key a running batch holds, and every later one
/// sharing a key with an item left (so items of one key never overtake
/// each other). Nothing after the first item that does not fit is taken.
fn take<B: Batch>(state: &mut State<B>, max: usize) -> Vec<Waiting<B>> {
    let mut blocked = state.busy.clone();
    let mut taken = Vec::new();
    let mut weight = 0;
    let mut full = false;
    let mut left = VecDeque::new();
    while let Some(waiting) = state.queue.pop_front() {
        full = full || (!taken.is_empty() && weight + waiting.weight > max);
        if !full && !waiting.keys.iter().any(|k| blocked.contains(k)) {
            weight += waiting.weight;
            state.queued -= waiting.weight;
            taken.push(waiting);
        } else {
            blocked.extend(waiting.keys.iter().cloned());
            left.push_back(waiting);
        }
    }
    state.queue = left;
    taken
}

/// Frees what a runner held if it stops without finishing (a panic, or its
/// runtime stopping, before or after it started): its keys and its place.
/// If it was the last runner, the items still queued hear
/// [`Interrupted::NotRun`] rather than wait for a runner that only the next
/// item would start.
struct Runner<B: Batch> {
    gather: Arc<Gather<B>>,
    keys: Vec<B::Key>,
    finished: bool,
}

impl<B: Batch> Drop for Runner<B> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.gather.lock();
        for key in self.keys.drain(..) {
            state.busy.remove(&key);
        }
        state.runners -= 1;
        if state.runners == 0 {
            state.queued = 0;
            for waiting in state.queue.drain(..) {
                let _ = waiting.reply.send(Err(Interrupted::NotRun));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Item {
        n: u32,
        key: char,
    }

    fn item(n: u32, key: char) -> Item {
        Item { n, key }
    }

    /// Records the batches it was given; answers each item with its number.
    #[derive(Clone, Default)]
    struct Recording {
        batches: Arc<Mutex<Vec<Vec<Item>>>>,
    }

    impl Batch for Recording {
        type Item = Item;
        type Answer = u32;
        type Key = char;

        fn keys(item: &Item) -> Vec<char> {
            vec![item.key]
        }

        async fn run(&self, items: Vec<Item>) -> Vec<u32> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let answers = items.iter().map(|i| i.n).collect();
            self.batches.lock().unwrap().push(items);
            answers
        }
    }

    #[tokio::test]
    async fn what_arrives_while_a_batch_runs_goes_in_the_next_batch_in_order() {
        let gather = Arc::new(Gather::new(100, 1));
        let batch = Recording::default();
        let first = tokio::spawn({
            let (gather, batch) = (gather.clone(), batch.clone());
            async move { gather.submit(&batch, item(0, 'a')).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let rest: Vec<_> = (1..=5)
            .map(|n| {
                let (gather, batch) = (gather.clone(), batch.clone());
                tokio::spawn(async move { gather.submit(&batch, item(n, 'a')).await.unwrap() })
            })
            .collect();
        assert_eq!(first.await.unwrap(), 0);
        for (n, task) in (1..=5).zip(rest) {
            assert_eq!(task.await.unwrap(), n);
        }
        let batches = batch.batches.lock().unwrap().clone();
        assert_eq!(
            batches,
            vec![vec![item(0, 'a')], (1..=5).map(|n| item(n, 'a')).collect()]
        );
    }

    #[test]
    fn an_item_whose_key_is_busy_waits_and_holds_back_later_items_of_its_keys() {
        let mut state: State<Recording> = State {
            queue: VecDeque::new(),
            queued: 3,
            runners: 1,
            busy: HashSet::from(['x']),
        };
        let mut answers = Vec::new();
        for (n, keys) in [(1, vec!['x', 'y']), (2, vec!['y']), (3, vec!['z'])] {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            state.queue.push_back(Waiting {
                item: item(n, keys[0]),
                keys,
                weight: 1,
                reply,
            });
        }
        let taken: Vec<u32> = take(&mut state, 10).iter().map(|w| w.item.n).collect();
        // 1 waits for `x`; 2 shares `y` with 1, so it waits behind it.
        assert_eq!(taken, vec![3]);
        let left: Vec<u32> = state.queue.iter().map(|w| w.item.n).collect();
        assert_eq!(left, vec![1, 2]);
    }

    #[test]
    fn a_batch_takes_items_up_to_its_weight_in_order_and_a_heavy_one_alone() {
        let mut state: State<Recording> = State {
            queue: VecDeque::new(),
            queued: 0,
            runners: 1,
            busy: HashSet::new(),
        };
        let mut answers = Vec::new();
        for (n, weight) in [(1, 150), (2, 100), (3, 30), (4, 500), (5, 10)] {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            state.queued += weight;
            state.queue.push_back(Waiting {
                item: item(n, char::from(b'a' + n as u8)),
                keys: vec![],
                weight,
                reply,
            });
        }
        let mut batches = Vec::new();
        while !state.queue.is_empty() {
            batches.push(
                take(&mut state, 200)
                    .iter()
                    .map(|w| w.item.n)
                    .collect::<Vec<u32>>(),
            );
        }
        // 3 would fit beside 1 but never overtakes 2.
        assert_eq!(batches, vec![vec![1], vec![2, 3], vec![4], vec![5]]);
        assert_eq!(state.queued, 0);
    }
}
