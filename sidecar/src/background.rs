//! Building model versions at a lower CPU priority than serving them.
//!
//! A hot swap builds a session (graph optimisation, weight pre-packing) and warms it up: half
//! a second to a second of CPU for the demo's model. At the same priority as the threads
//! answering requests, that CPU comes out of serving: on a machine already 70 % busy the
//! queues back up for as long as the build runs and drain slowly after it (the 20-minute
//! soak measured p99 after a swap at 2-3x the steady p99). Built on a thread whose nice value
//! is raised ([`run`]), a load takes the CPU that serving leaves idle instead.
//!
//! Linux threads inherit their creator's nice value, and an unprivileged thread cannot lower
//! it again. Two things therefore must not be created by the niced thread: the version's
//! inference threads (the reload starts them after [`run`] returns, on its own thread), and
//! ONNX Runtime's intra-op pool threads, which a session creates while it is built. Those are
//! started through [`Spawner`], which ONNX Runtime calls to create them and which spawns them
//! from a thread at the sidecar's own priority.

use std::sync::mpsc;
use std::thread::JoinHandle;

/// Runs `work` on a new thread at nice `nice` (0 leaves the priority as it is) and returns its
/// result. `work` must not start threads that outlive it (see the module documentation).
pub fn run<T: Send>(name: &str, nice: i32, work: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new().name(name.to_string()).spawn_scoped(scope, move || {
            if nice != 0 {
                lower_own_priority(nice);
            }
            work()
        })?;
        thread.join().map_err(|_| std::io::Error::other(format!("{name}: the thread panicked")))
    })
}

/// Raises the calling thread's nice value to `nice` (lowers its priority) unless it is that
/// low already. Raising it needs no privilege; if it still fails the work runs at the normal
/// priority, which costs latency, not answers.
pub fn lower_own_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        if own_nice().is_some_and(|current| current >= nice) {
            return;
        }
        // SAFETY: gettid has no preconditions; setpriority on PRIO_PROCESS with a thread id
        // changes that thread's nice value only (Linux keeps it per thread).
        let changed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if changed != 0 {
            tracing::debug!(nice, error = %std::io::Error::last_os_error(), "cannot lower the model build's CPU priority; building at the normal one");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The nice value of the calling thread (Linux), for tests and diagnostics.
pub fn own_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as in `lower_own_priority`; getpriority only reads.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        };
        // -1 is both a valid nice value and the error return; errno tells them apart.
        // SAFETY: reading this thread's errno.
        (unsafe { *libc::__errno_location() } == 0).then_some(nice)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

type Work = Box<dyn FnOnce() + Send>;

/// A thread to start at a nice value, and where to send its handle.
struct Spawn {
    work: Work,
    nice: i32,
    reply: mpsc::Sender<std::io::Result<JoinHandle<()>>>,
}

/// Starts ONNX Runtime's pool threads from one long-lived thread at the priority the sidecar
/// started with, whichever thread builds the session, each then at the spawner's `nice` (0:
/// the sidecar's priority; a bulk instance's threads run lower). Create it before lowering
/// any priority.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<Spawn>,
    nice: i32,
}

impl Spawner {
    pub fn start() -> std::io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<Spawn>();
        std::thread::Builder::new().name("ort spawner".into()).spawn(move || {
            // Ends when every Spawner (and so every session holding one) is gone.
            for Spawn { work, nice, reply } in incoming {
                let spawned = std::thread::Builder::new().name("ort worker".into()).spawn(move || {
                    if nice != 0 {
                        lower_own_priority(nice);
                    }
                    work()
                });
                let _ = reply.send(spawned);
            }
        })?;
        Ok(Spawner { requests, nice: 0 })
    }

    /// The same spawner, starting threads at `nice`.
    pub fn at_nice(&self, nice: i32) -> Spawner {
        Spawner { requests: self.requests.clone(), nice }
    }
}

/// Threads at a lower priority running blocking work for async callers: pre-processing for
/// the priority levels below the highest, when those run in the background.
pub struct Pool {
    jobs: mpsc::Sender<Work>,
}

impl Pool {
    pub fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Pool> {
        let (jobs, incoming) = mpsc::channel::<Work>();
        let incoming = std::sync::Arc::new(std::sync::Mutex::new(incoming));
        for i in 0..threads.max(1) {
            let incoming = std::sync::Arc::clone(&incoming);
            std::thread::Builder::new().name(format!("{name}#{i}")).spawn(move || {
                lower_own_priority(nice);
                loop {
                    // The lock is held only to take one job; a poisoned one still hands them out.
                    let next = incoming.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    match next {
                        // A panicking job loses its answer (the caller sees `None`), not the thread.
                        Ok(work) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))),
                        Err(_) => return, // the pool is gone
                    }
                }
            })?;
        }
        Ok(Pool { jobs })
    }

    /// Runs `work` on one of the pool's threads; `None` if it panicked.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Work = Box::new(move || {
            let _ = reply.send(work());
        });
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

impl ort::environment::ThreadManager for Spawner {
    type Thread = JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<JoinHandle<()>> {
        let (reply, handle) = mpsc::channel();
        self.requests
            .send(Spawn { work: Box::new(work), nice: self.nice, reply })
            .map_err(|_| ort::Error::new("the thread spawner has stopped"))?;
        match handle.recv() {
            Ok(Ok(thread)) => Ok(thread),
            Ok(Err(e)) => Err(ort::Error::new(format!("cannot start an ONNX Runtime thread: {e}"))),
            Err(_) => Err(ort::Error::new("the thread spawner has stopped")),
        }
    }

    fn join(thread: JoinHandle<()>) -> ort::Result<()> {
        thread.join().map_err(|_| ort::Error::new("an ONNX Runtime thread panicked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_niced_and_the_caller_keeps_its_priority() {
        let before = own_nice();
        let inside = run("test build", 19, own_nice).unwrap();
        assert_eq!(inside, Some(19));
        assert_eq!(own_nice(), before);
    }

    #[test]
    fn threads_from_the_spawner_keep_the_starting_priority() {
        use ort::environment::ThreadManager;
        let spawner = Spawner::start().unwrap();
        let seen = run("test build", 19, || {
            let (tx, rx) = mpsc::channel();
            let thread = spawner.create(move || tx.send(own_nice()).unwrap()).unwrap();
            Spawner::join(thread).unwrap();
            rx.recv().unwrap()
        })
        .unwrap();
        assert_eq!(seen, own_nice());
    }

    #[test]
    fn a_niced_spawner_starts_niced_threads() {
        use ort::environment::ThreadManager;
        let spawner = Spawner::start().unwrap().at_nice(17);
        let (tx, rx) = mpsc::channel();
        let thread = spawner.create(move || tx.send(own_nice()).unwrap()).unwrap();
        Spawner::join(thread).unwrap();
        // A thread never gets a higher priority than the test runs at.
        assert_eq!(rx.recv().unwrap(), own_nice().map(|n| n.max(17)));
    }

    #[tokio::test]
    async fn the_pool_runs_work_niced() {
        let pool = Pool::start("test pool", 1, 18).unwrap();
        assert_eq!(pool.run(own_nice).await, Some(own_nice().map(|n| n.max(18))));
        assert_eq!(pool.run(|| 40 + 2).await, Some(42));
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(pool.run(|| 7).await, Some(7), "a panic ends that job only");
    }

    #[test]
    fn work_may_borrow() {
        let bytes = String::from("borrowed");
        assert_eq!(run("test build", 0, || bytes.len()).unwrap(), 8);
    }
}
