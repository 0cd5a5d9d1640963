//! Hot reload: new versions and changed files swap in under load without a failed request;
//! corrupt or mismatched files are refused while the old version keeps serving; SIGTERM
//! drains.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use switchyard_proto::features::v1::extract_realtime_request::ImageFormat;

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// Polls `/v1/models` until `ready` holds (or fails after 30 s with the last snapshot).
fn wait_for(sidecar: &Sidecar, what: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let models = sidecar.models();
        if ready(&models) {
            return models;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}: {models:#}\n{}", sidecar.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn served(models: &serde_json::Value) -> Vec<(String, String)> {
    models["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v["sha256"].as_str().unwrap().to_string()))
        .collect()
}

fn rejected(models: &serde_json::Value, name: &str) -> Option<String> {
    models["rejected"].as_array().unwrap().iter().find(|r| r["name"] == name).map(|r| r["reason"].as_str().unwrap().to_string())
}

/// Clients that send continuously and record every answer.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Result<String, tonic::Status>>>>,
}

impl Load {
    fn start(sidecar: &Sidecar, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let image = page(180, "jpg");
        let tasks = (0..clients)
            .map(|_| {
                let (stop, seen, image, mut client) = (Arc::clone(&stop), Arc::clone(&seen), image.clone(), sidecar.client());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = client.extract_realtime(request(image.clone(), ImageFormat::Jpeg)).await.map(|r| {
                            let r = r.into_inner();
                            assert_eq!(predicted_class(&r.quality_scores), "180");
                            r.model_version
                        });
                        seen.lock().unwrap().push(answer);
                    }
                })
            })
            .collect();
        Load { stop, tasks, seen }
    }

    fn answered_by(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().filter_map(|r| r.as_ref().ok().cloned()).collect()
    }

    async fn stop(self) -> Vec<Result<String, tonic::Status>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_fails_no_request() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &config("[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 2000\n"));
    let load = Load::start(&sidecar, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new version appears: the admin call loads it and retires the old one (latest = 1).
    repo.install("orientation", 2, &model_file("orientation", 2));
    let (status, body) = tokio::task::block_in_place(|| sidecar.http("POST", "/v1/reload", ""));
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["loaded"], serde_json::json!(["orientation/2"]), "{report}");
    assert_eq!(report["unloaded"], serde_json::json!(["orientation/1"]), "{report}");
    let until = Instant::now() + Duration::from_secs(10);
    while !load.answered_by().iter().any(|v| v == "orientation/2") {
        assert!(Instant::now() < until, "no answer from orientation/2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The same version's file changes (here: to the v1 weights): SIGHUP swaps it in place.
    let before = served(&sidecar.models());
    repo.install("orientation", 2, &model_file("orientation", 1));
    sidecar.signal(SIGHUP);
    let after = tokio::task::block_in_place(|| {
        wait_for(&sidecar, "the changed orientation/2", |m| served(m) != before && !served(m).is_empty())
    });
    assert_eq!(served(&after)[0].1, sha256(&std::fs::read(model_file("orientation", 1)).unwrap()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let results = load.stop().await;
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), results.len(), &failures[..failures.len().min(5)]);
    assert!(results.iter().any(|r| r.as_ref().is_ok_and(|v| v == "orientation/1")));
    assert!(results.len() > 50, "only {} requests", results.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_mismatched_models_are_rejected_and_the_old_version_keeps_serving() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &config(""));
    let mut client = sidecar.client();
    let ask = |mut client: Client| async move {
        client.extract_realtime(request(page(90, "jpg"), ImageFormat::Jpeg)).await.map(|r| r.into_inner().model_version)
    };

    // Garbage that the manifest vouches for: ONNX Runtime refuses it.
    let garbage = b"this is not an onnx model".repeat(100);
    repo.write_model("orientation", 2, &garbage);
    repo.set_checksum("orientation", 2, &sha256(&garbage));
    sidecar.signal(SIGHUP);
    let models = tokio::task::block_in_place(|| wait_for(&sidecar, "orientation/2 rejected", |m| rejected(m, "orientation/2").is_some()));
    assert_eq!(rejected(&models, "orientation/2").as_deref(), Some("invalid_model"));
    assert_eq!(ask(client.clone()).await.unwrap(), "orientation/1");

    // A real model whose manifest line does not match: refused before loading.
    repo.write_model("orientation", 3, &std::fs::read(model_file("orientation", 2)).unwrap());
    repo.set_checksum("orientation", 3, &"0".repeat(64));
    let (_, body) = tokio::task::block_in_place(|| sidecar.http("POST", "/v1/reload", ""));
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = report["rejected"].as_array().unwrap().iter().find(|r| r["name"] == "orientation/3").unwrap();
    assert_eq!(reason["reason"], "checksum_mismatch", "{report}");
    assert!(reason["error"].as_str().unwrap().contains("SHA256SUMS says 0000"), "{report}");
    assert_eq!(ask(client.clone()).await.unwrap(), "orientation/1");

    // The served version's own file is damaged: it goes on serving from memory.
    std::fs::remove_dir_all(repo.path().join("orientation/2")).unwrap();
    std::fs::remove_dir_all(repo.path().join("orientation/3")).unwrap();
    repo.write_model("orientation", 1, &garbage);
    let (_, body) = tokio::task::block_in_place(|| sidecar.http("POST", "/v1/reload", ""));
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["rejected"][0]["name"], "orientation/1", "{report}");
    assert_eq!(report["rejected"][0]["previous_still_serving"], true, "{report}");
    let r = client.extract_realtime(request(page(270, "jpg"), ImageFormat::Jpeg)).await.unwrap().into_inner();
    assert_eq!((r.model_version.as_str(), predicted_class(&r.quality_scores).as_str()), ("orientation/1", "270"));

    let metrics = sidecar.metrics();
    for reason in ["invalid_model", "checksum_mismatch"] {
        assert!(metric(&metrics, "switchyard_sidecar_model_load_failures_total", &[("reason", reason)]) >= 1.0, "{reason}");
    }
    assert!(sidecar.log().contains("model version rejected"), "{}", sidecar.log());
    assert_eq!(metric(&metrics, "switchyard_sidecar_loaded", &[("version", "1")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_loads_a_new_version() {
    let repo = Repo::with(&[("orientation-lite", &[1])]);
    let sidecar = Sidecar::start(
        repo.path(),
        "[runtime]\nintra_op_threads = 1\n[repository]\nwatch = true\nwatch_debounce_ms = 200\n[models.orientation-lite]\nversions = { all = true }\n",
    );
    repo.install("orientation-lite", 5, &model_file("orientation-lite", 1));
    tokio::task::block_in_place(|| {
        wait_for(&sidecar, "orientation-lite/5 from the file watch", |m| served(m).iter().any(|(n, _)| n == "orientation-lite/5"))
    });
    let mut client = sidecar.client();
    let r = client.extract_realtime(pinned(request(page(0, "png"), ImageFormat::Png), "5")).await.unwrap().into_inner();
    assert_eq!(r.model_version, "orientation-lite/5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let mut sidecar = Sidecar::start(repo.path(), &config("[batching]\nmax_batch_size = 8\nmax_queue_delay_us = 1000000\n"));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let mut client = sidecar.client();
            tokio::spawn(async move { client.extract_realtime(request(page(0, "jpg"), ImageFormat::Jpeg)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sidecar.signal(SIGTERM);
    for call in calls {
        let r = call.await.unwrap().expect("in-flight request finished during drain").into_inner();
        assert_eq!(predicted_class(&r.quality_scores), "0");
    }
    let code = tokio::task::block_in_place(|| sidecar.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "{}", sidecar.log());
    assert!(sidecar.log().contains("drained; exiting"), "{}", sidecar.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_is_built_at_background_priority_and_served_at_the_sidecars() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let config = "[runtime]\nintra_op_threads = 2\nload_nice = 15\n\n[repository]\nwatch = false\n";
    let sidecar = Sidecar::start(repo.path(), config);
    repo.install("orientation", 2, &model_file("orientation", 2));
    let (status, body) = tokio::task::block_in_place(|| sidecar.http("POST", "/v1/reload", ""));
    assert_eq!(status, 200, "{body}");

    // Both loads (at start and this one) ran niced (never at a higher priority than the
    // sidecar runs at)...
    let threads = threads(sidecar.pid());
    let main_nice = threads.first().unwrap().1;
    let log = sidecar.log();
    let built: Vec<&str> = log.lines().filter(|l| l.contains("model version loaded and warmed up")).collect();
    assert_eq!(built.len(), 2, "{log}");
    let wanted = format!("built_at_nice={}", main_nice.max(15));
    assert!(built.iter().all(|l| l.contains(&wanted)), "{wanted}: {built:#?}");

    // ...but no thread that serves inherited it: not the inference threads, not ONNX Runtime's
    // intra-op threads that building the session started.
    assert!(threads.iter().any(|(name, _)| name.starts_with("infer orientat")), "{threads:?}");
    assert!(threads.iter().any(|(name, _)| name == "ort worker"), "{threads:?}");
    let niced: Vec<_> = threads.iter().filter(|(_, nice)| *nice != main_nice).collect();
    assert!(niced.is_empty(), "threads at another priority than the sidecar's ({main_nice}): {niced:?}");
}
