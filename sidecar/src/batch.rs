//! Dynamic batching with Triton's semantics, per model version.
//!
//! * Admission is bounded: a request takes one of `queue_capacity` slots before it is even
//!   pre-processed, and a realtime request that finds none gets `RESOURCE_EXHAUSTED` at once,
//!   so memory stays bounded however fast clients send.
//! * Inference threads (one per instance, each with its own session) block on the queue off
//!   the async reactor. A batch closes when it reaches `max_batch_size` or when its oldest
//!   request has waited `max_queue_delay`.
//! * Before running a batch, requests whose deadline has passed are answered with
//!   `DEADLINE_EXCEEDED` and requests whose client has gone are dropped: neither costs
//!   inference.
//! * When the last handle to a [`Queue`] is dropped (the version was swapped out), its
//!   threads finish what is queued and exit: in-flight requests complete on the old session.
//!   The last thread to exit, once every session of the version is freed, hands the freed
//!   memory back to the OS (see [`crate::onnx::release_freed_memory`]).
//! * A traced request's job carries its trace here; its `queue`, `batch` and `inference`
//!   spans are recorded after the batch's answers are sent (see `telemetry`).

use crate::metrics::VersionMetrics;
use crate::onnx::{Engine, Output};
use crate::preprocess::Prepared;
use crate::telemetry::{self, BatchRun, QueuedTrace};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// A queue slot, held from admission until the request is answered or dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    depth: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.depth.dec();
    }
}

/// One image waiting for inference.
pub struct Job {
    pub image: Prepared,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Output, Status>>,
    pub admission: Admission,
    /// Only when the request is traced (and sampled).
    pub trace: Option<QueuedTrace>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub queue_capacity: usize,
}

/// The batching queue of one model version.
pub struct Queue {
    name: String,
    tx: Sender<Job>,
    slots: Arc<Semaphore>,
    policy: BatchPolicy,
    metrics: VersionMetrics,
}

impl Queue {
    /// Starts one inference thread per engine.
    pub fn spawn(name: &str, engines: Vec<Engine>, policy: BatchPolicy, metrics: VersionMetrics) -> Queue {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = Arc::new(());
        for (i, engine) in engines.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let metrics = metrics.clone();
            let worker = Worker { name: name.to_string(), engine, policy, metrics, threads: Arc::clone(&threads) };
            let spawned = std::thread::Builder::new().name(format!("infer {name}#{i}")).spawn(move || worker.run(&rx));
            if let Err(e) = spawned {
                tracing::error!(model = name, error = %e, "cannot start an inference thread");
            }
        }
        Queue { name: name.to_string(), tx, slots: Arc::new(Semaphore::new(policy.queue_capacity)), policy, metrics }
    }

    fn admission(&self, permit: OwnedSemaphorePermit) -> Admission {
        self.metrics.queue_depth.inc();
        Admission { _permit: permit, depth: self.metrics.queue_depth.clone() }
    }

    /// A slot now, or `RESOURCE_EXHAUSTED` naming the version and the capacity.
    pub fn try_admit(&self) -> Result<Admission, Status> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Ok(self.admission(permit)),
            Err(_) => Err(Status::resource_exhausted(format!(
                "{} is at capacity ({} requests admitted); retry later or use another version",
                self.name, self.policy.queue_capacity
            ))),
        }
    }

    /// Waits for a slot (bulk calls, which prefer waiting to failing).
    pub async fn admit(&self) -> Result<Admission, Status> {
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map(|permit| self.admission(permit))
            .map_err(|_| Status::unavailable(format!("{} is shutting down", self.name)))
    }

    pub fn submit(&self, job: Job) -> Result<(), Status> {
        self.tx.send(job).map_err(|_| Status::unavailable(format!("{} has no inference thread", self.name)))
    }

    /// Requests admitted and not yet answered.
    pub fn depth(&self) -> usize {
        self.policy.queue_capacity - self.slots.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.policy.queue_capacity
    }
}

struct Worker {
    name: String,
    engine: Engine,
    policy: BatchPolicy,
    metrics: VersionMetrics,
    /// Shared by the version's inference threads: the last one to let go of it trims.
    threads: Arc<()>,
}

impl Worker {
    fn run(mut self, rx: &Mutex<Receiver<Job>>) {
        loop {
            // Only the thread forming a batch holds the receiver; it lets go before inference
            // so another instance can form the next batch meanwhile.
            let batch = {
                let Ok(rx) = rx.lock() else { return };
                match self.collect(&rx) {
                    Some(batch) => batch,
                    None => break,
                }
            };
            self.execute(batch);
        }
        tracing::debug!(model = self.name, "inference thread stopped (version unloaded)");
        let Worker { engine, threads, .. } = self;
        drop(engine);
        // Exactly one thread gets the token back: the last, after every session is freed.
        if Arc::into_inner(threads).is_some() {
            crate::onnx::release_freed_memory();
        }
    }

    /// Blocks for the first job, then gathers more until the batch is full or the oldest
    /// job has waited `max_queue_delay`. `None` when every sender is gone and nothing is left.
    fn collect(&self, rx: &Receiver<Job>) -> Option<Vec<Job>> {
        let first = rx.recv().ok()?;
        let close_at = first.enqueued + self.policy.max_queue_delay;
        let mut batch = Vec::with_capacity(self.policy.max_batch_size);
        batch.push(first);
        while batch.len() < self.policy.max_batch_size {
            match rx.try_recv() {
                Ok(job) => {
                    batch.push(job);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= close_at {
                break;
            }
            match rx.recv_timeout(close_at - now) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        Some(batch)
    }

    fn execute(&mut self, batch: Vec<Job>) {
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for mut job in batch {
            if job.deadline.is_some_and(|d| d <= now) {
                self.metrics.dropped_deadline.inc();
                let waited = now.duration_since(job.enqueued);
                let _ = job.reply.send(Err(Status::deadline_exceeded(format!(
                    "deadline passed after {} ms in the {} queue; dropped before inference",
                    waited.as_millis(),
                    self.name
                ))));
                if let Some(trace) = job.trace.take() {
                    trace.dropped(SystemTime::now(), "deadline passed in the queue");
                }
            } else if job.reply.is_closed() {
                self.metrics.dropped_cancelled.inc();
                if let Some(trace) = job.trace.take() {
                    trace.dropped(SystemTime::now(), "client went away in the queue");
                }
            } else {
                self.metrics.queue_seconds.observe(now.duration_since(job.enqueued).as_secs_f64());
                live.push(job);
            }
        }
        if live.is_empty() {
            return;
        }
        // Empty (no allocation) unless a request in the batch is traced.
        let traces: Vec<QueuedTrace> = live.iter_mut().filter_map(|j| j.trace.take()).collect();
        let clock = (!traces.is_empty()).then(WallClock::now);
        let images: Vec<&[u8]> = live.iter().map(|j| j.image.rgb.as_slice()).collect();
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.engine.run(&images)))
            .unwrap_or_else(|_| Err("inference panicked".to_string()));
        let elapsed = started.elapsed();
        self.metrics.inference_seconds.observe(elapsed.as_secs_f64());
        let size = live.len();
        self.metrics.batch_size.observe(size as f64);
        // For the spans: the batch ends when its answers are ready (they are sent next).
        let ended = clock.map(|_| SystemTime::now());
        let error = clock.and_then(|_| result.as_ref().err().cloned());
        match result {
            Ok(outputs) => {
                for (job, output) in live.into_iter().zip(outputs) {
                    let _ = job.reply.send(Ok(output));
                }
            }
            Err(e) => {
                tracing::error!(model = self.name, batch = size, error = %e, "inference failed");
                for job in live {
                    let _ = job.reply.send(Err(Status::internal(format!("inference failed on {}: {e}", self.name))));
                }
            }
        }
        if let (Some(clock), Some(ended)) = (clock, ended) {
            // Recorded after the answers went out, so tracing never delays them.
            let inference_started = clock.at(started);
            let run = BatchRun {
                id: telemetry::next_batch_id(),
                size,
                started: clock.at(now),
                inference: (inference_started, inference_started + elapsed),
                ended,
                error: error.as_deref(),
            };
            for trace in &traces {
                trace.ran(&run);
            }
        }
    }
}

/// Wall-clock times (what spans carry) for the `Instant`s the batch measures with.
#[derive(Clone, Copy)]
struct WallClock {
    wall: SystemTime,
    mono: Instant,
}

impl WallClock {
    fn now() -> Self {
        Self { wall: SystemTime::now(), mono: Instant::now() }
    }

    fn at(self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.mono) {
            Some(after) => self.wall + after,
            None => self.wall - self.mono.duration_since(t),
        }
    }
}
