//! The jobs of one version waiting for a batch, one FIFO lane per priority level, and how an
//! inference thread takes a batch out of them.
//!
//! A batch is filled from the highest lane that has work, with [`TopUp::FromLowerLevels`]
//! topped up from the lanes below while there is room: a lower-priority job only ever takes
//! a place no higher-priority job was waiting for. Waiting for a batch to fill happens only
//! while the lanes it may take from are empty, and ends `max_queue_delay` after the oldest
//! job in the batch was queued, so a job arriving meanwhile at its level or above joins the
//! batch. A high-priority job therefore waits at most for the batches already running, never
//! behind queued lower-priority jobs. The order is strict: while higher levels keep the
//! threads busy, lower levels wait (bounded by their admission capacity and deadlines).
//!
//! Generic over the job so the ordering is tested without a model.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub(super) struct Pending<T> {
    state: Mutex<Lanes<T>>,
    /// Signalled on every job pushed and on close.
    arrived: Condvar,
    /// Held by the one thread forming a batch, so two instances never split one batch
    /// between them; it lets go before inference so another can form the next meanwhile.
    /// One per first lane served: threads reserved for different lanes never wait for each
    /// other (see [`Pending::batch_in`]).
    forming: Vec<Mutex<()>>,
}

struct Lanes<T> {
    /// Highest priority first; each oldest first.
    lanes: Vec<VecDeque<(Instant, T)>>,
    closed: bool,
}

impl<T> Lanes<T> {
    /// The oldest job of the highest non-empty lane from `first` down to `lowest`, with its lane.
    fn pop(&mut self, first: usize, lowest: usize) -> Option<(usize, Instant, T)> {
        self.lanes.iter_mut().enumerate().skip(first).take((lowest + 1).saturating_sub(first)).find_map(|(lane, jobs)| {
            let (enqueued, job) = jobs.pop_front()?;
            Some((lane, enqueued, job))
        })
    }
}

/// Whether a batch started at one level takes jobs of the levels below into its free places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopUp {
    /// More images per batch for the lower levels; the higher-level jobs in it then wait for
    /// the bigger batch's inference, which on a CPU takes about as much longer as the batch is
    /// bigger (on a GPU, nearly nothing).
    FromLowerLevels,
    /// A batch holds its first job's level and the levels above it only.
    No,
}

/// A lock whose holder cannot leave the jobs half-changed: after a panic elsewhere they are
/// still served rather than lost.
fn lock<G>(mutex: &Mutex<G>) -> MutexGuard<'_, G> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Pending<T> {
    pub(super) fn new(levels: usize) -> Self {
        Self {
            state: Mutex::new(Lanes { lanes: (0..levels).map(|_| VecDeque::new()).collect(), closed: false }),
            arrived: Condvar::new(),
            forming: (0..levels).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Queues `job` at level `lane` (0 is the highest), queued at `enqueued`.
    pub(super) fn push(&self, lane: usize, enqueued: Instant, job: T) {
        let mut state = lock(&self.state);
        // A level past the last is served at the last rather than lost.
        let last = state.lanes.len() - 1;
        state.lanes[lane.min(last)].push_back((enqueued, job));
        drop(state);
        // Every waiting thread: with lanes reserved, the one woken might not serve this lane.
        self.arrived.notify_all();
    }

    /// No more jobs will come: the threads take what is queued, then [`Pending::batch_in`]
    /// returns `None`.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.arrived.notify_all();
    }

    /// `batch_in` over every lane.
    #[cfg(test)]
    pub(super) fn batch(&self, max: usize, max_delay: Duration, top_up: TopUp) -> Option<Vec<T>> {
        self.batch_in(0..=usize::MAX, max, max_delay, top_up)
    }

    /// Blocks for a first job in `lanes` (clamped to the lanes there are: an inference thread
    /// may be reserved for some levels), then takes up to `max` jobs, highest level first,
    /// waiting for more only while those lanes are empty and the oldest job in the batch has
    /// waited less than `max_delay`. `None` once closed and those lanes are empty.
    pub(super) fn batch_in(&self, lanes: RangeInclusive<usize>, max: usize, max_delay: Duration, top_up: TopUp) -> Option<Vec<T>> {
        let last = self.forming.len() - 1;
        let (from, to) = ((*lanes.start()).min(last), (*lanes.end()).min(last));
        let _forming = self.forming.get(from).map(lock);
        let mut state = lock(&self.state);
        let (level, mut oldest, first) = loop {
            if let Some(job) = state.pop(from, to) {
                break job;
            }
            if state.closed {
                return None;
            }
            state = self.arrived.wait(state).unwrap_or_else(PoisonError::into_inner);
        };
        let lowest = match top_up {
            TopUp::FromLowerLevels => to,
            TopUp::No => level,
        };
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        while batch.len() < max {
            if let Some((_, enqueued, job)) = state.pop(from, lowest) {
                oldest = oldest.min(enqueued);
                batch.push(job);
                continue;
            }
            let now = Instant::now();
            let close_at = oldest + max_delay;
            if state.closed || now >= close_at {
                break;
            }
            state = self.arrived.wait_timeout(state, close_at - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_batch_takes_the_highest_level_first_and_tops_up_from_below() {
        let pending = Pending::new(3);
        let now = Instant::now();
        // Lower levels queued first, and earlier: arrival order does not matter, level does.
        for (lane, job) in [(2, "c1"), (1, "b1"), (2, "c2"), (0, "a1"), (1, "b2"), (0, "a2")] {
            pending.push(lane, now, job);
        }
        assert_eq!(pending.batch(3, LONG, TopUp::FromLowerLevels).unwrap(), ["a1", "a2", "b1"]);
        assert_eq!(pending.batch(3, LONG, TopUp::FromLowerLevels).unwrap(), ["b2", "c1", "c2"]);
    }

    #[test]
    fn without_top_up_a_batch_keeps_to_its_level_and_those_above() {
        let pending = Arc::new(Pending::new(3));
        let now = Instant::now();
        for (lane, job) in [(2, "c1"), (1, "b1"), (0, "a1"), (2, "c2")] {
            pending.push(lane, now, job);
        }
        assert_eq!(pending.batch(8, Duration::ZERO, TopUp::No).unwrap(), ["a1"]);
        assert_eq!(pending.batch(8, Duration::ZERO, TopUp::No).unwrap(), ["b1"]);
        // A higher job arriving while a lower batch fills joins it; lower ones never do.
        pending.push(2, Instant::now(), "c3");
        let pusher = Arc::clone(&pending);
        let push = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            pusher.push(0, Instant::now(), "a2");
        });
        assert_eq!(pending.batch(4, LONG, TopUp::No).unwrap(), ["c1", "c2", "c3", "a2"]);
        push.join().unwrap();
        pending.push(0, now, "a3");
        pending.push(1, now, "b2");
        assert_eq!(pending.batch(8, Duration::from_millis(10), TopUp::No).unwrap(), ["a3"]);
    }

    #[test]
    fn one_level_is_one_fifo_queue() {
        let pending = Pending::new(1);
        let now = Instant::now();
        for job in 0..10 {
            pending.push(0, now, job);
        }
        assert_eq!(pending.batch(4, LONG, TopUp::FromLowerLevels).unwrap(), [0, 1, 2, 3]);
        assert_eq!(pending.batch(4, LONG, TopUp::FromLowerLevels).unwrap(), [4, 5, 6, 7]);
        assert_eq!(pending.batch(4, Duration::ZERO, TopUp::FromLowerLevels).unwrap(), [8, 9]);
    }

    #[test]
    fn a_high_job_never_waits_behind_queued_low_jobs() {
        let pending = Pending::new(2);
        let now = Instant::now();
        for job in 0..100 {
            pending.push(1, now, job);
        }
        pending.push(0, now, 1000);
        // However many low jobs came first, the next batch starts with the high one.
        assert_eq!(pending.batch(8, LONG, TopUp::FromLowerLevels).unwrap(), [1000, 0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_full_batch_or_an_old_enough_one_does_not_wait() {
        let pending = Pending::new(2);
        let started = Instant::now();
        pending.push(0, Instant::now(), "a");
        pending.push(1, Instant::now(), "b");
        assert_eq!(pending.batch(2, LONG, TopUp::FromLowerLevels).unwrap(), ["a", "b"]);
        // The low job has waited its delay already: the batch closes at once, though the high
        // job taken first has just arrived.
        pending.push(1, Instant::now() - LONG, "old");
        pending.push(0, Instant::now(), "new");
        assert_eq!(pending.batch(8, LONG, TopUp::FromLowerLevels).unwrap(), ["new", "old"]);
        assert!(started.elapsed() < LONG / 2, "a batch waited: {:?}", started.elapsed());
    }

    #[test]
    fn a_job_arriving_while_a_batch_fills_joins_it() {
        let pending = Arc::new(Pending::new(2));
        pending.push(1, Instant::now(), "low");
        let pusher = Arc::clone(&pending);
        let push = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            pusher.push(0, Instant::now(), "high");
        });
        let started = Instant::now();
        assert_eq!(pending.batch(2, LONG, TopUp::FromLowerLevels).unwrap(), ["low", "high"]);
        assert!(started.elapsed() < LONG / 2, "the batch waited for its delay: {:?}", started.elapsed());
        push.join().unwrap();
    }

    #[test]
    fn an_unfilled_batch_closes_after_the_delay() {
        let pending = Pending::new(2);
        pending.push(0, Instant::now(), 1);
        let started = Instant::now();
        assert_eq!(pending.batch(8, Duration::from_millis(30), TopUp::FromLowerLevels).unwrap(), [1]);
        assert!(started.elapsed() >= Duration::from_millis(20), "closed early: {:?}", started.elapsed());
    }

    #[test]
    fn closing_serves_what_is_queued_then_ends() {
        let pending = Arc::new(Pending::new(2));
        pending.push(1, Instant::now(), 2);
        pending.push(0, Instant::now(), 1);
        pending.close();
        assert_eq!(pending.batch(1, LONG, TopUp::FromLowerLevels).unwrap(), [1]);
        assert_eq!(pending.batch(8, LONG, TopUp::FromLowerLevels).unwrap(), [2]);
        assert_eq!(pending.batch(8, LONG, TopUp::FromLowerLevels), None);
        // A thread blocked on an empty queue wakes up and ends when it closes.
        let pending = Arc::new(Pending::<u8>::new(1));
        let waiter = Arc::clone(&pending);
        let waiting = std::thread::spawn(move || waiter.batch(8, LONG, TopUp::FromLowerLevels));
        std::thread::sleep(Duration::from_millis(20));
        pending.close();
        assert_eq!(waiting.join().unwrap(), None);
    }

    #[test]
    fn threads_reserved_for_some_levels_take_only_those_and_never_wait_for_each_other() {
        let pending = Arc::new(Pending::new(3));
        let now = Instant::now();
        for (lane, job) in [(2, "c1"), (1, "b1"), (0, "a1"), (1, "b2")] {
            pending.push(lane, now, job);
        }
        // The bulk thread: levels 2 and 3, highest first, topped up within them only.
        assert_eq!(pending.batch_in(1..=2, 8, Duration::ZERO, TopUp::FromLowerLevels).unwrap(), ["b1", "b2", "c1"]);
        assert_eq!(pending.batch_in(0..=0, 8, Duration::ZERO, TopUp::No).unwrap(), ["a1"]);
        // A thread reserved for level 1 waiting for work does not hold up the bulk thread...
        let online = Arc::clone(&pending);
        let waiting = std::thread::spawn(move || online.batch_in(0..=0, 8, Duration::ZERO, TopUp::No));
        std::thread::sleep(Duration::from_millis(20));
        pending.push(2, now, "c2");
        assert_eq!(pending.batch_in(1..=2, 8, Duration::ZERO, TopUp::No).unwrap(), ["c2"]);
        // ...and is woken by a job at its level even while another lane has work.
        pending.push(1, now, "b3");
        pending.push(0, now, "a2");
        assert_eq!(waiting.join().unwrap().unwrap(), ["a2"]);
        assert_eq!(pending.batch_in(1..=5, 8, Duration::ZERO, TopUp::No).unwrap(), ["b3"]);
        pending.close();
        assert!(pending.batch_in(0..=0, 8, LONG, TopUp::No).is_none());
    }
}
