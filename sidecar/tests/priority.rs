//! Priority levels (`[batching.priority]`): a bulk call flooding its level does not keep
//! online requests out, as it does with a single queue.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use switchyard_proto::features::v1::{extract_batch_item, extract_realtime_request::ImageFormat, ExtractBatchResponse};
use tonic::Code;

/// Room for 16 online requests and 8 bulk ones per version, small batches, one instance:
/// the bulk call below keeps its level full (it has twice that many images in flight).
fn two_levels() -> String {
    config("[batching]\nmax_batch_size = 4\ninstances = 1\n\n[batching.priority]\nlevels = 2\nqueue_capacity = [16, 8]\n")
}

/// The same room for everything in one queue: what the sidecar did before priorities.
fn one_queue() -> String {
    config("[batching]\nmax_batch_size = 4\ninstances = 1\nqueue_capacity = 8\n\n[batching.priority]\nlevels = 1\n")
}

/// An `ExtractBatch` call (no priority header: the bulk level when there are levels) sending
/// images until `stop` is set; answers with its response and how many images it sent.
fn flood(sidecar: &Sidecar, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(Result<ExtractBatchResponse, tonic::Status>, usize)> {
    let mut client = sidecar.client();
    let image = page(90, "jpg");
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&sent);
    let images = std::iter::from_fn(move || {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let n = counted.fetch_add(1, Ordering::Relaxed);
        let mut r = request(image.clone(), ImageFormat::Jpeg);
        r.request_id = format!("bulk-{n}");
        Some(r)
    });
    tokio::spawn(async move {
        let response = client.extract_batch(futures::stream::iter(images)).await.map(tonic::Response::into_inner);
        (response, sent.load(Ordering::Relaxed))
    })
}

/// Starts [`flood`] and waits until it fills the bulk level's 8 slots.
async fn flood_until_full(sidecar: &Sidecar) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(Result<ExtractBatchResponse, tonic::Status>, usize)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = flood(sidecar, Arc::clone(&stop));
    let bulk_level = [("model", "orientation"), ("version", "1"), ("priority", "2")];
    until_metric(sidecar, "switchyard_sidecar_priority_queue_depth", &bulk_level, 8.0).await;
    (stop, bulk)
}

/// Waits until `series` (with `labels`) reads `value` on `/metrics`.
async fn until_metric(sidecar: &Sidecar, series: &str, labels: &[(&str, &str)], value: f64) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(&sidecar.metrics(), series, labels);
        if now == value {
            return;
        }
        assert!(Instant::now() < until, "{series}{labels:?} stayed at {now}, never {value}\n{}", sidecar.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_priority<T>(message: T, priority: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("x-priority", priority.parse().unwrap());
    request
}

/// Mean queue wait (admission to inference) at one level, from `/metrics`.
fn mean_queue_wait(metrics: &str, level: &str) -> f64 {
    let labels = [("priority", level)];
    metric(metrics, "switchyard_sidecar_priority_queue_seconds_sum", &labels)
        / metric(metrics, "switchyard_sidecar_priority_queue_seconds_count", &labels).max(1.0)
}

fn every_image_answered(response: ExtractBatchResponse, sent: usize) {
    assert_eq!(response.items.len(), sent, "the bulk call lost images");
    for item in response.items {
        match item.result {
            Some(extract_batch_item::Result::Response(r)) => assert_eq!(predicted_class(&r.quality_scores), "90"),
            other => panic!("a bulk image failed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_requests_are_served_while_a_bulk_call_fills_its_level() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &two_levels());
    let (stop, bulk) = flood_until_full(&sidecar).await;

    // A realtime request marked low (the filter's value) finds the bulk level full: refused
    // at once, naming the level.
    let mut client = sidecar.client();
    let image = page(0, "jpg");
    let refused = client.extract_realtime(with_priority(request(image.clone(), ImageFormat::Jpeg), "low")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("orientation/1 is at capacity (8 requests admitted at priority level 2)"), "{}", refused.message());

    // Online requests (no header, or level 1 by number) are admitted and served meanwhile.
    let online = 20;
    for i in 0..online {
        let message = request(image.clone(), ImageFormat::Jpeg);
        let call = if i % 2 == 0 { tonic::Request::new(message) } else { with_priority(message, "1") };
        let answer = client.extract_realtime(call).await.unwrap_or_else(|e| panic!("online request {i} failed under the flood: {e:?}"));
        assert_eq!(predicted_class(&answer.into_inner().quality_scores), "0");
    }
    let metrics = sidecar.metrics();
    let (online_wait, bulk_wait) = (mean_queue_wait(&metrics, "1"), mean_queue_wait(&metrics, "2"));
    stop.store(true, Ordering::Relaxed);
    let (response, sent) = bulk.await.unwrap();
    every_image_answered(response.expect("the bulk call succeeds"), sent);

    eprintln!("mean queue wait under the flood: online {:.2} ms, bulk {:.2} ms", online_wait * 1e3, bulk_wait * 1e3);
    // Online requests wait at most for the batch already running; bulk ones for every batch
    // of online work ahead of them and for the bulk images queued before them.
    assert!(
        online_wait < bulk_wait,
        "online requests waited {:.2} ms on average in the queue, bulk images {:.2} ms",
        online_wait * 1e3,
        bulk_wait * 1e3
    );
    let online_level = [("version", "1"), ("priority", "1")];
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_queue_seconds_count", &online_level), f64::from(online));
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_rejected_total", &online_level), 0.0);
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_rejected_total", &[("version", "1"), ("priority", "2")]), 1.0);
    let models = sidecar.models();
    let levels = &models["versions"][0]["priorities"];
    assert_eq!(levels[0]["queue_capacity"], 16, "{models}");
    assert_eq!(levels[1]["queue_capacity"], 8, "{models}");
    assert_eq!(models["versions"][0]["queue_capacity"], 24, "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_queue_the_same_bulk_call_keeps_online_requests_out() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &one_queue());
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = flood(&sidecar, Arc::clone(&stop));
    let queue = [("model", "orientation"), ("version", "1")];
    until_metric(&sidecar, "switchyard_sidecar_queue_depth", &queue, 8.0).await;

    let mut client = sidecar.client();
    let refused = client.extract_realtime(request(page(0, "jpg"), ImageFormat::Jpeg)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("at capacity (8 requests admitted at priority level 1)"), "{}", refused.message());
    // The priority header changes nothing with one level. (The flood refills the slot a
    // finished batch frees; on a busy machine that can take a moment.)
    until_metric(&sidecar, "switchyard_sidecar_queue_depth", &queue, 8.0).await;
    let refused = client.extract_realtime(with_priority(request(page(0, "jpg"), ImageFormat::Jpeg), "1")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    stop.store(true, Ordering::Relaxed);
    let (response, sent) = bulk.await.unwrap();
    every_image_answered(response.expect("the bulk call succeeds"), sent);
    let metrics = sidecar.metrics();
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_rejected_total", &[("version", "1"), ("priority", "1")]), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_bulk_nice_the_lower_levels_run_on_threads_of_their_own_at_that_priority() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let config = "[runtime]\nintra_op_threads = 2\n\n[batching]\nmax_batch_size = 4\ninstances = 1\n\n\
                  [batching.priority]\nlevels = 2\nqueue_capacity = [16, 8]\nbulk_nice = 15\n\n[repository]\nwatch = false\n";
    let sidecar = Sidecar::start(repo.path(), config);
    let (stop, bulk) = flood_until_full(&sidecar).await;

    let mut client = sidecar.client();
    let image = page(0, "jpg");
    for i in 0..20 {
        let answer = client
            .extract_realtime(request(image.clone(), ImageFormat::Jpeg))
            .await
            .unwrap_or_else(|e| panic!("online request {i} failed under the flood: {e:?}"));
        assert_eq!(predicted_class(&answer.into_inner().quality_scores), "0");
    }

    // Which thread runs at which priority: the online instance, its ONNX Runtime thread and
    // the shared pre-processing at the sidecar's; the bulk instance, its ONNX Runtime thread
    // and the bulk pre-processing threads at 15.
    let threads = threads(sidecar.pid());
    let main_nice = threads.first().unwrap().1;
    let nice_of = |prefix: &str| -> Vec<i64> { threads.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, nice)| *nice).collect() };
    // (Linux keeps 15 bytes of a thread's name: `infer orientati`.)
    let sorted = |mut v: Vec<i64>| {
        v.sort();
        v
    };
    // (A thread never gets a higher priority than the sidecar runs at.)
    let bulk_nice = main_nice.max(15);
    let expected = sorted(vec![main_nice, bulk_nice]);
    assert_eq!(sorted(nice_of("infer ")), expected, "one online and one bulk instance: {threads:?}");
    assert_eq!(sorted(nice_of("ort worker")), expected, "{threads:?}");
    let preprocess = nice_of("preprocess bulk");
    assert!(!preprocess.is_empty() && preprocess.iter().all(|n| *n == bulk_nice), "{threads:?}");

    stop.store(true, Ordering::Relaxed);
    let (response, sent) = bulk.await.unwrap();
    every_image_answered(response.expect("the bulk call succeeds"), sent);
    let metrics = sidecar.metrics();
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_queue_seconds_count", &[("version", "1"), ("priority", "1")]), 20.0);
    assert_eq!(metric(&metrics, "switchyard_sidecar_priority_rejected_total", &[("version", "1"), ("priority", "1")]), 0.0);
}
