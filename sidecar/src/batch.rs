//! Dynamic batching with Triton's semantics, per model version, with priority levels.
//!
//! * Admission is bounded per priority level: a request takes one of its level's
//!   `queue_capacity` slots before it is even pre-processed, and a realtime request that finds
//!   none gets `RESOURCE_EXHAUSTED` at once, naming the level, so memory stays bounded however
//!   fast clients send, and a flood at one level never takes another level's room.
//! * Inference threads (one per instance, each with its own session) block on the queue off
//!   the async reactor. A batch is filled from the highest level with work, and topped up
//!   from the levels below only with `top_up` (see [`pending`]); it closes when it reaches
//!   `max_batch_size` or when its oldest request has waited `max_queue_delay`. With one
//!   level this is a single FIFO queue.
//! * Before running a batch, requests whose deadline has passed are answered with
//!   `DEADLINE_EXCEEDED` and requests whose client has gone are dropped: neither costs
//!   inference.
//! * When the last handle to a [`Queue`] is dropped (the version was swapped out), its
//!   threads finish what is queued and exit: in-flight requests complete on the old session.
//!   The last thread to exit, once every session of the version is freed, hands the freed
//!   memory back to the OS (see [`crate::memory::release_freed_memory`]).
//! * A traced request's job carries its trace here; its `queue`, `batch` and `inference`
//!   spans are recorded after the batch's answers are sent (see `telemetry`).

mod pending;

use crate::metrics::{LevelMetrics, VersionMetrics};
use crate::onnx::{Engine, Output};
use crate::preprocess::Prepared;
use crate::priority::Priority;
use crate::telemetry::{self, BatchRun, QueuedTrace};
use pending::Pending;
pub use pending::TopUp;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// A queue slot at one priority level, held from admission until the request is answered or
/// dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    priority: Priority,
    depth: Gauge,
    level: LevelMetrics,
}

impl Admission {
    pub fn priority(&self) -> Priority {
        self.priority
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.depth.dec();
        self.level.queue_depth.dec();
    }
}

/// One image waiting for inference, at its admission's priority level.
pub struct Job {
    pub image: Prepared,
    pub deadline: Option<Instant>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Output, Status>>,
    pub admission: Admission,
    /// Only when the request is traced (and sampled).
    pub trace: Option<QueuedTrace>,
}

#[derive(Debug, Clone)]
pub struct BatchPolicy {
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    /// Requests admitted at each priority level, highest first; one entry is a single queue.
    pub queue_capacity: Vec<usize>,
    pub top_up: TopUp,
}

/// An inference instance kept for the levels below the highest, run at a lower CPU
/// priority (`batching.priority.bulk_nice`): its thread and its session's intra-op threads
/// run at `nice`, while the version's other instances serve the highest level only.
pub struct BulkInstance {
    pub engine: Engine,
    pub nice: i32,
}

/// One inference thread to start: its engine, the lanes it serves and its nice value.
struct Instance {
    label: String,
    engine: Engine,
    lanes: std::ops::RangeInclusive<usize>,
    nice: i32,
}

/// The admission slots of one priority level.
struct Level {
    slots: Arc<Semaphore>,
    capacity: usize,
}

/// The batching queue of one model version.
pub struct Queue {
    name: String,
    pending: Arc<Pending<Job>>,
    levels: Vec<Level>,
    /// False when no inference thread could be started: nothing would answer a job.
    served: bool,
    metrics: VersionMetrics,
}

/// The state of one level, for `/v1/models`.
#[derive(Debug, Clone, Copy)]
pub struct LevelLoad {
    pub priority: Priority,
    pub depth: usize,
    pub capacity: usize,
}

impl Queue {
    /// Starts one inference thread per engine, and one for `bulk` if given (then the others
    /// serve the highest level only). `metrics` has one entry per level of `policy`.
    pub fn spawn(name: &str, engines: Vec<Engine>, bulk: Option<BulkInstance>, policy: BatchPolicy, metrics: VersionMetrics) -> Queue {
        let levels: Vec<Level> =
            policy.queue_capacity.iter().map(|&capacity| Level { slots: Arc::new(Semaphore::new(capacity)), capacity }).collect();
        let pending = Arc::new(Pending::new(levels.len()));
        let threads = Arc::new(());
        let last = levels.len().saturating_sub(1);
        // With a bulk instance the others keep to the highest level; one level has no bulk.
        let bulk = bulk.filter(|_| last > 0);
        let online = if bulk.is_some() { 0..=0 } else { 0..=last };
        let instances = engines.into_iter().enumerate().map(|(i, engine)| Instance { label: i.to_string(), engine, lanes: online.clone(), nice: 0 });
        let bulk = bulk.map(|b| Instance { label: "bulk".into(), engine: b.engine, lanes: 1..=last, nice: b.nice });
        let mut served = false;
        for Instance { label, engine, lanes, nice } in instances.chain(bulk) {
            let pending = Arc::clone(&pending);
            let worker = Worker {
                name: name.to_string(),
                engine,
                lanes,
                nice,
                max_batch_size: policy.max_batch_size,
                max_queue_delay: policy.max_queue_delay,
                top_up: policy.top_up,
                metrics: metrics.clone(),
                threads: Arc::clone(&threads),
            };
            match std::thread::Builder::new().name(format!("infer {name}#{label}")).spawn(move || worker.run(&pending)) {
                Ok(_) => served = true,
                Err(e) => tracing::error!(model = name, error = %e, "cannot start an inference thread"),
            }
        }
        Queue { name: name.to_string(), pending, levels, served, metrics }
    }

    /// The level `priority` maps to here (one past the last is served at the last).
    fn level(&self, priority: Priority) -> (Priority, &Level) {
        let priority = priority.at_most(self.levels.len());
        (priority, &self.levels[priority.index()])
    }

    fn admission(&self, priority: Priority, permit: OwnedSemaphorePermit) -> Admission {
        let level = self.metrics.levels[priority.index()].clone();
        self.metrics.queue_depth.inc();
        level.queue_depth.inc();
        Admission { _permit: permit, priority, depth: self.metrics.queue_depth.clone(), level }
    }

    /// A slot at `priority` now, or `RESOURCE_EXHAUSTED` naming the version, the level and its
    /// capacity.
    pub fn try_admit(&self, priority: Priority) -> Result<Admission, Status> {
        let (priority, level) = self.level(priority);
        match Arc::clone(&level.slots).try_acquire_owned() {
            Ok(permit) => Ok(self.admission(priority, permit)),
            Err(_) => {
                self.metrics.levels[priority.index()].rejected.inc();
                Err(Status::resource_exhausted(format!(
                    "{} is at capacity ({} requests admitted at priority level {priority}); retry later or use another version",
                    self.name, level.capacity
                )))
            }
        }
    }

    /// Waits for a slot at `priority` (bulk calls, which prefer waiting to failing).
    pub async fn admit(&self, priority: Priority) -> Result<Admission, Status> {
        let (priority, level) = self.level(priority);
        Arc::clone(&level.slots)
            .acquire_owned()
            .await
            .map(|permit| self.admission(priority, permit))
            .map_err(|_| Status::unavailable(format!("{} is shutting down", self.name)))
    }

    pub fn submit(&self, job: Job) -> Result<(), Status> {
        if !self.served {
            return Err(Status::unavailable(format!("{} has no inference thread", self.name)));
        }
        self.pending.push(job.admission.priority.index(), job.enqueued, job);
        Ok(())
    }

    /// Requests admitted and not yet answered, every level together.
    pub fn depth(&self) -> usize {
        self.levels.iter().map(|l| l.capacity - l.slots.available_permits()).sum()
    }

    /// Every level's capacity together.
    pub fn capacity(&self) -> usize {
        self.levels.iter().map(|l| l.capacity).sum()
    }

    /// Requests admitted at `priority` before it is full.
    pub fn capacity_at(&self, priority: Priority) -> usize {
        self.level(priority).1.capacity
    }

    /// Each level's depth and capacity, highest first.
    pub fn levels(&self) -> Vec<LevelLoad> {
        Priority::all(self.levels.len())
            .zip(&self.levels)
            .map(|(priority, l)| LevelLoad { priority, depth: l.capacity - l.slots.available_permits(), capacity: l.capacity })
            .collect()
    }
}

impl Drop for Queue {
    /// The version is swapped out: its threads finish what is queued, then exit.
    fn drop(&mut self) {
        self.pending.close();
    }
}

struct Worker {
    name: String,
    engine: Engine,
    /// The priority lanes this thread takes batches from (0 is the highest).
    lanes: std::ops::RangeInclusive<usize>,
    /// The thread's nice value (0: the sidecar's priority).
    nice: i32,
    max_batch_size: usize,
    max_queue_delay: Duration,
    top_up: TopUp,
    metrics: VersionMetrics,
    /// Shared by the version's inference threads: the last one to let go of it trims.
    threads: Arc<()>,
}

impl Worker {
    fn run(mut self, pending: &Pending<Job>) {
        if self.nice != 0 {
            crate::background::lower_own_priority(self.nice);
        }
        while let Some(batch) = pending.batch_in(self.lanes.clone(), self.max_batch_size, self.max_queue_delay, self.top_up) {
            self.execute(batch);
        }
        tracing::debug!(model = self.name, "inference thread stopped (version unloaded)");
        let Worker { engine, threads, .. } = self;
        drop(engine);
        // Exactly one thread gets the token back: the last, after every session is freed.
        if Arc::into_inner(threads).is_some() {
            crate::memory::release_freed_memory();
        }
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
                let waited = now.duration_since(job.enqueued).as_secs_f64();
                self.metrics.queue_seconds.observe(waited);
                job.admission.level.queue_seconds.observe(waited);
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
