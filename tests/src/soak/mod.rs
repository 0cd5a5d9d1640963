//! The churn soak (`cargo xtask soak`, and compressed in `tests/tests/soak.rs`): the demo
//! stack under steady open-loop load at about 70 % of what it was just measured to sustain,
//! while everything it depends on changes on a [`schedule`]. Every answer is classified: a
//! failure the schedule caused on purpose (an injected error, a shed low-priority request, a
//! budget too tight to meet, the sidecar restarting) is expected; anything else is not.

mod events;
pub mod load;
pub mod plot;
pub mod report;
pub mod schedule;
mod stack;

use anyhow::Result;
use load::Load;
use report::{EventRecord, MemorySample, Report};
use stack::Stack;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Options {
    /// Length of the loaded run (after calibration).
    pub duration: Duration,
    /// Share of the measured capacity offered.
    pub load_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { duration: Duration::from_secs(20 * 60), load_share: 0.7 }
    }
}

/// Runs the soak; the report and everything it was computed from.
pub async fn run(options: &Options) -> Result<report::Run> {
    eprintln!("soak: starting the demo stack (sidecar, Envoy with the {:?} filter)", crate::envoy::Build::current());
    let mut stack = Stack::start().await?;
    let url = stack.envoy.url();
    let pages: Vec<(u32, Vec<u8>)> = [0, 90, 180, 270].into_iter().map(|r| (r, crate::sidecar::page(r))).collect();

    load::capacity(&url, crate::sidecar::page(0), 8, Duration::from_secs(2)).await?;
    let capacity = load::capacity(&url, crate::sidecar::page(0), 8, Duration::from_secs(6)).await?;
    let rate = ((capacity * options.load_share).round() as u32).max(1);
    eprintln!("soak: the stack sustains {capacity:.1} requests/s closed loop; offering {rate}/s open loop for {:?}", options.duration);

    let load = Load::start(&url, pages)?;
    let started = Instant::now();
    load.set_rate(rate);
    let memory = Arc::new(Mutex::new(Vec::new()));
    let sidecar_admin = stack.sidecar()?.admin;
    let sampler = tokio::spawn(sample_memory(Arc::clone(&stack.pids), sidecar_admin, Arc::clone(&memory), started));

    let mut events = Vec::new();
    for (at, event) in schedule::plan(options.duration) {
        tokio::time::sleep_until((started + at).into()).await;
        let began = Instant::now();
        let outcome = events::apply(&mut stack, &load, &event).await;
        let record = EventRecord::new(&event, started, began, Instant::now(), outcome);
        eprintln!("soak: {:>7.1} s  {:<24} {}", record.at_s, record.event, record.outcome);
        events.push(record);
    }
    tokio::time::sleep_until((started + options.duration).into()).await;
    load.set_rate(0);
    // What is in flight finishes (ample budgets are 20 s; nothing should take that long).
    let sent_until = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    let samples = load.samples();
    let filter_failures = stack.envoy.filter_failures();
    let memory: Vec<MemorySample> = memory.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let report = Report::compute(
        report::Inputs {
            duration: options.duration,
            capacity_rps: capacity,
            rate_rps: rate,
            started,
            sent_until,
            filter_failures,
            build: crate::envoy::Build::current(),
        },
        &samples,
        &events,
        &memory,
    );
    Ok(report::Run { report, samples, events, memory, started })
}

/// Every second: each process's resident memory (it changes pid on a restart), and the
/// sidecar's malloc figures from its admin port (fixed for the run).
async fn sample_memory(pids: Arc<stack::Pids>, sidecar_admin: u16, out: Arc<Mutex<Vec<MemorySample>>>, started: Instant) {
    loop {
        let t = started.elapsed().as_secs_f64();
        let heap = tokio::task::spawn_blocking(move || sidecar_heap(sidecar_admin)).await.ok().flatten();
        for (process, pid) in [("envoy", pids.envoy.load(Ordering::Relaxed)), ("sidecar", pids.sidecar.load(Ordering::Relaxed))] {
            if let Some(resident) = resident(pid) {
                let heap = heap.filter(|_| process == "sidecar");
                out.lock().unwrap_or_else(|p| p.into_inner()).push(MemorySample { t, process, pid, resident, heap });
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `switchyard_sidecar_heap_in_use_bytes` and `_heap_free_bytes`; `None` while the sidecar
/// is down or does not export them (a live process never has 0 bytes in use).
fn sidecar_heap(admin: u16) -> Option<report::Heap> {
    let names = ["switchyard_sidecar_heap_in_use_bytes", "switchyard_sidecar_heap_free_bytes"];
    let [in_use, free] = crate::sidecar::metric_sums(admin, names).ok()?.map(|b| b as f64 / (1024.0 * 1024.0));
    (in_use > 0.0).then_some(report::Heap { in_use_mb: in_use, free_mb: free })
}

/// A live process's resident memory from `/proc/<pid>/status`.
fn resident(pid: u32) -> Option<report::Resident> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mib = |field: &str| -> Option<f64> {
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())?;
        Some(kb as f64 / 1024.0)
    };
    Some(report::Resident { total_mb: mib("VmRSS:")?, anon_mb: mib("RssAnon:")?, file_mb: mib("RssFile:")? })
}
