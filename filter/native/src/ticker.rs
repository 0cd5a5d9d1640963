//! One timer thread for the whole module: runs small jobs at given instants. Envoy's
//! dynamic-modules ABI has no timer for HTTP filters, only schedulers that post an event to
//! a thread's dispatcher; the jobs here post such events (a delayed stream's resume, the
//! main thread's tick), so nothing of Envoy's runs on this thread.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

type Run = Box<dyn FnOnce() + Send>;

struct Job {
    at: Instant,
    seq: u64,
    run: Run,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
struct Queue {
    jobs: BinaryHeap<Job>,
    seq: u64,
}

struct Ticker {
    queue: Mutex<Queue>,
    wake: Condvar,
}

fn ticker() -> Option<&'static Ticker> {
    static TICKER: OnceLock<Option<&'static Ticker>> = OnceLock::new();
    *TICKER.get_or_init(|| {
        let t: &'static Ticker = Box::leak(Box::new(Ticker { queue: Mutex::new(Queue::default()), wake: Condvar::new() }));
        std::thread::Builder::new().name("switchyard-ticker".into()).spawn(move || run(t)).ok().map(|_| t)
    })
}

/// Runs `f` on the timer thread at `at` (or soon after). Returns false if the timer thread
/// could not be started.
pub(crate) fn at(at: Instant, f: impl FnOnce() + Send + 'static) -> bool {
    let Some(t) = ticker() else { return false };
    let Ok(mut q) = t.queue.lock() else { return false };
    q.seq = q.seq.wrapping_add(1);
    let seq = q.seq;
    q.jobs.push(Job { at, seq, run: Box::new(f) });
    t.wake.notify_one();
    true
}

fn run(t: &'static Ticker) {
    let Ok(mut q) = t.queue.lock() else { return };
    loop {
        let now = Instant::now();
        match q.jobs.peek().map(|j| j.at) {
            Some(due) if due <= now => {
                if let Some(job) = q.jobs.pop() {
                    drop(q);
                    // A job that panics must not stop the timer for every other one.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job.run));
                    q = match t.queue.lock() {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            }
            Some(due) => {
                q = match t.wake.wait_timeout(q, due - now) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            None => {
                q = match t.wake.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_in_time_order() {
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (ms, name) in [(60, "c"), (20, "a"), (40, "b")] {
            let tx = tx.clone();
            assert!(at(now + Duration::from_millis(ms), move || tx.send(name).unwrap_or(())));
        }
        let got: Vec<&str> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(2)).unwrap()).collect();
        assert_eq!(got, vec!["a", "b", "c"]);
        assert!(now.elapsed() >= Duration::from_millis(60));
    }
}
