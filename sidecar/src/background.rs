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
/// low already. Raising it needs no privilege; if it still fails the load runs at the normal
/// priority, which costs latency, not answers.
fn lower_own_priority(nice: i32) {
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

/// Starts ONNX Runtime's pool threads from one long-lived thread at the priority the sidecar
/// started with, whichever thread builds the session. Create it before lowering any priority.
#[derive(Clone)]
pub struct Spawner {
    requests: mpsc::Sender<(Work, mpsc::Sender<std::io::Result<JoinHandle<()>>>)>,
}

impl Spawner {
    pub fn start() -> std::io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<(Work, mpsc::Sender<std::io::Result<JoinHandle<()>>>)>();
        std::thread::Builder::new().name("ort spawner".into()).spawn(move || {
            // Ends when every Spawner (and so every session holding one) is gone.
            for (work, reply) in incoming {
                let _ = reply.send(std::thread::Builder::new().name("ort worker".into()).spawn(work));
            }
        })?;
        Ok(Spawner { requests })
    }
}

impl ort::environment::ThreadManager for Spawner {
    type Thread = JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<JoinHandle<()>> {
        let (reply, handle) = mpsc::channel();
        self.requests
            .send((Box::new(work), reply))
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
    fn work_may_borrow() {
        let bytes = String::from("borrowed");
        assert_eq!(run("test build", 0, || bytes.len()).unwrap(), 8);
    }
}
