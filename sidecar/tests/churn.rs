//! Hot-swap churn: one version's file replaced again and again while every version serves.
//! Each swapped-out version must go (its inference thread exits, its session is freed) and
//! the process's resident memory must stay bounded.
//!
//! As a longer soak: `CHURN_SWAPS=30` (default 12), `CHURN_INTRA=2` (intra-op threads per
//! session, default 1), `CHURN_GAP_MS` (quiet time between swaps, default 400). Run with
//! `--nocapture` for RSS and threads per swap and the latency of the versions not swapped.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use switchyard_proto::features::v1::extract_realtime_request::ImageFormat;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `(VmRSS in KiB, Threads)` from /proc/<pid>/status.
fn status(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("Threads:"))
}

/// The lowest RSS seen over `quiet` (what the process holds, without the ups and downs of
/// serving) and the last thread count.
async fn settled(pid: u32, quiet: Duration) -> (u64, u64) {
    let (mut rss, mut threads) = status(pid);
    let until = Instant::now() + quiet;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let now = status(pid);
        (rss, threads) = (rss.min(now.0), now.1);
    }
    (rss, threads)
}

/// Threads whose name starts with `prefix` (the kernel keeps 15 bytes of a name).
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

/// `bytes` (a serialized ONNX ModelProto) with a `doc_string` (field 6, length-delimited)
/// appended: the same network in a different file with a different digest (the last
/// occurrence of a field wins in protobuf).
fn variant(bytes: &[u8], text: &str) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.push(6 << 3 | 2);
    let mut len = text.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(text.as_bytes());
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    match sorted.len() {
        0 => Duration::ZERO,
        n => sorted[((n as f64 * p).ceil() as usize).clamp(1, n) - 1],
    }
}

/// One answered request: when it was sent, how long it took, which version it pinned.
struct Sample {
    sent: Instant,
    took: Duration,
    pin: &'static str,
}

/// KiB in a MiB (/proc reports KiB).
const MIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_out_versions_are_freed_and_memory_stays_bounded() {
    let swaps = env_or("CHURN_SWAPS", 12).max(4) as usize;
    let intra = env_or("CHURN_INTRA", 1);
    let gap = Duration::from_millis(env_or("CHURN_GAP_MS", 400));
    let repo = Repo::with(&[("orientation", &[1, 2]), ("orientation-lite", &[1])]);
    let config = format!(
        "[runtime]\nintra_op_threads = {intra}\n[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 500\n\
         [repository]\nwatch = false\n[models.orientation]\nversions = {{ specific = [1, 2] }}\n"
    );
    let sidecar = Sidecar::start(repo.path(), &config);
    let pid = sidecar.pid();

    // Paced clients, one per version: ~22 requests/s each, ~67/s in all.
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let image = page(180, "jpg");
    let clients: Vec<_> = ["orientation/1", "orientation/2", "orientation-lite/1"]
        .into_iter()
        .map(|pin| {
            let (stop, samples, failures, image, mut client) =
                (Arc::clone(&stop), Arc::clone(&samples), Arc::clone(&failures), image.clone(), sidecar.client());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(45));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let sent = Instant::now();
                    match client.extract_realtime(pinned(request(image.clone(), ImageFormat::Jpeg), pin)).await {
                        Ok(r) if r.get_ref().model_version == pin => {
                            samples.lock().unwrap().push(Sample { sent, took: sent.elapsed(), pin })
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("{pin} answered by {}", r.get_ref().model_version)),
                        Err(status) => failures.lock().unwrap().push(format!("{pin}: {status:?}")),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let inference_threads = threads_named(pid, "infer ");
    assert_eq!(inference_threads, 3, "one inference thread per served version");
    let (rss_start, threads_start) = settled(pid, Duration::from_millis(500)).await;
    println!("start: rss {} MiB, threads {threads_start}", rss_start / MIB);

    let base = std::fs::read(model_file("orientation", 2)).unwrap();
    let mut windows = Vec::new();
    let mut after = Vec::new();
    let mut last_sha256 = String::new();
    for i in 1..=swaps {
        let bytes = variant(&base, &format!("churn swap {i}"));
        last_sha256 = sha256(&bytes);
        repo.write_model("orientation", 2, &bytes);
        repo.set_checksum("orientation", 2, &last_sha256);
        let began = Instant::now();
        let (code, body) = tokio::task::block_in_place(|| sidecar.http("POST", "/v1/reload", ""));
        windows.push((began, Instant::now()));
        assert_eq!(code, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["loaded"], serde_json::json!(["orientation/2"]), "swap {i}: {report}");

        // The old orientation/2 answers what it admitted, then its thread exits (which it
        // does only once the last handle to its queue, i.e. its ModelVersion, is dropped).
        let until = Instant::now() + Duration::from_secs(10);
        while threads_named(pid, "infer ") > inference_threads {
            assert!(Instant::now() < until, "swap {i}: the swapped-out orientation/2 still has its inference thread\n{}", sidecar.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (rss, threads) = settled(pid, gap).await;
        println!("swap {i:>3}: rss {:>4} MiB, threads {threads}, reload {} ms", rss / MIB, (windows[i - 1].1 - began).as_millis());
        after.push((rss, threads));
    }

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);

    // What a swap costs the versions that were not swapped (printed, not asserted: the
    // machine's other work moves these more than a swap does).
    for pin in ["orientation/1", "orientation-lite/1"] {
        let (mut during, mut steady) = (Vec::new(), Vec::new());
        for s in samples.lock().unwrap().iter().filter(|s| s.pin == pin) {
            let overlaps = windows.iter().any(|(b, e)| s.sent < *e && s.sent + s.took > *b);
            if overlaps { &mut during } else { &mut steady }.push(s.took);
        }
        during.sort();
        steady.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{pin}: outside swaps p50 {:.1} ms p99 {:.1} ms (n={}); during swaps p50 {:.1} ms p99 {:.1} ms (n={})",
            ms(percentile(&steady, 0.5)),
            ms(percentile(&steady, 0.99)),
            steady.len(),
            ms(percentile(&during, 0.5)),
            ms(percentile(&during, 0.99)),
            during.len()
        );
    }

    // Only the current versions are served, the last file among them.
    let models = sidecar.models();
    let served: Vec<(&str, &str)> =
        models["versions"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap(), v["sha256"].as_str().unwrap())).collect();
    let names: Vec<&str> = served.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["orientation/1", "orientation/2", "orientation-lite/1"], "{models:#}");
    assert_eq!(served[1].1, last_sha256);
    assert_eq!(metric(&sidecar.metrics(), "switchyard_sidecar_loaded", &[]), 3.0);
    assert_eq!(threads_named(pid, "infer "), inference_threads);
    // ONNX Runtime's pool threads (intra_op_threads > 1) have no name of ours: a session
    // that is never freed shows here. The slack is the blocking pool, which grows and
    // shrinks with load (reloads and pre-processing run on it).
    let threads_end = after.last().unwrap().1;
    assert!(threads_end <= threads_start + 3, "threads: {threads_start} at the start, {threads_end} after {swaps} swaps");

    // Bounded memory: the RSS left after the last four swaps, on average, against the RSS
    // before the first swap (each the lowest seen in a quiet time). Before the sidecar trimmed malloc's arenas once a
    // swapped-out version was freed, each swap kept 7-18 MiB resident (the old session's
    // weights, ONNX Runtime's arena and graph-optimisation temporaries stayed in glibc's
    // arenas): +60 to +130 MiB after 12 swaps here. With the trim there is no trend over 30
    // swaps, but where the arenas and ONNX Runtime's buffers land varies by ~25 MiB from one
    // swap to the next, hence the margin: 50 MiB fails on 4+ MiB kept per swap.
    let late = after[after.len() - 4..].iter().map(|r| r.0).sum::<u64>() / 4;
    let last = after.last().unwrap().0;
    let pick = |n: usize| after.get(n - 1).map_or("-".to_string(), |r| (r.0 / MIB).to_string());
    println!(
        "rss MiB: start {}, after swap 1 {}, 10 {}, 20 {}, 30 {}, last ({swaps}) {}",
        rss_start / MIB,
        pick(1),
        pick(10),
        pick(20),
        pick(30),
        last / MIB
    );
    assert!(
        late < rss_start + 50 * MIB,
        "RSS grew from {} MiB before the first swap to {} MiB after swaps {}-{swaps}: swapped-out versions are not given back",
        rss_start / MIB,
        late / MIB,
        swaps - 3
    );
}
