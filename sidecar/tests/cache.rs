//! The feature cache against the real sidecar, the real model and a real `redis-server`:
//! hits equal misses and a sidecar without the cache, a hot swap is a miss, sidecars share
//! through Redis, and a Redis that is killed, never answers or was never there costs no
//! request and logs one line.

mod support;

use std::time::{Duration, Instant};
use support::*;
use switchyard_proto::features::v1::{extract_batch_item, extract_realtime_request::ImageFormat, ExtractRealtimeResponse};
use testkit::redis::{free_port, read_reply, Redis, Reply};

const HEADER: &str = "x-switchyard-cache";
const BATCH_HEADER: &str = "x-switchyard-cache-hits";
const UNAVAILABLE: &str = "feature cache: Redis is unavailable";
const BACK: &str = "feature cache: Redis answers again";

fn cached(extra: &str) -> String {
    config(&format!("[cache]\nenabled = true\n{extra}"))
}

/// One `ExtractRealtime`: the answer and the cache header (`None`: absent).
async fn ask(client: &mut Client, image: Vec<u8>, id: &str) -> (ExtractRealtimeResponse, Option<String>) {
    let mut message = request(image, ImageFormat::Unknown);
    message.request_id = id.into();
    let response = client.extract_realtime(message).await.unwrap_or_else(|s| panic!("request {id}: {s:?}"));
    let header = response.metadata().get(HEADER).map(|v| v.to_str().unwrap().to_owned());
    (response.into_inner(), header)
}

/// What the cache keeps of an answer: equal bit for bit.
fn features(r: &ExtractRealtimeResponse) -> (Vec<u32>, Vec<(String, u32)>) {
    let mut scores: Vec<(String, u32)> = r.quality_scores.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect();
    scores.sort();
    (r.feature_vector.iter().map(|v| v.to_bits()).collect(), scores)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The cache's keys in `redis` once there are `n` of them (the sidecar writes in the
/// background).
fn wait_for_keys(redis: &Redis, n: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = redis.keys("switchyard:features:*");
        if keys.len() >= n {
            return keys;
        }
        assert!(Instant::now() < until, "{} cache keys in Redis after 10 s, expected {n}", keys.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_from_memory_equal_the_miss_and_a_sidecar_without_the_cache() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let off = Sidecar::start(repo.path(), &config(""));
    let on = Sidecar::start(repo.path(), &cached(""));
    let (mut plain, mut client) = (off.client(), on.client());
    let a = page(90, "jpg");

    // Off by default: no header, no cache metrics.
    let (reference, header) = ask(&mut plain, a.clone(), "r").await;
    assert_eq!(header, None);
    let batch = plain.extract_batch(futures::stream::iter(vec![request(a.clone(), ImageFormat::Jpeg)])).await.unwrap();
    assert!(batch.metadata().get(BATCH_HEADER).is_none());
    assert!(!off.metrics().contains("switchyard_sidecar_cache_"), "{}", off.metrics());

    let (miss, header) = ask(&mut client, a.clone(), "first").await;
    assert_eq!(header.as_deref(), Some("miss"));
    let (hit, header) = ask(&mut client, a.clone(), "second").await;
    assert_eq!(header.as_deref(), Some("hit-memory"));
    assert_eq!(features(&hit), features(&miss));
    assert_eq!(features(&hit), features(&reference), "a cached answer differs from a sidecar's without the cache");
    assert_eq!((hit.request_id.as_str(), hit.model_version.as_str()), ("second", "orientation/1"));
    assert!(hit.processed_at.is_some() && hit.processed_at != miss.processed_at);
    assert_eq!(predicted_class(&hit.quality_scores), "90");

    let (other, header) = ask(&mut client, page(180, "jpg"), "other").await;
    assert_eq!(header.as_deref(), Some("miss"));
    assert_eq!(predicted_class(&other.quality_scores), "180");

    // A bulk call's images seen before skip the queue; the header counts them.
    let images =
        vec![request(a.clone(), ImageFormat::Jpeg), request(page(0, "png"), ImageFormat::Png), request(a.clone(), ImageFormat::Jpeg)];
    let batch = client.extract_batch(futures::stream::iter(images)).await.unwrap();
    assert_eq!(batch.metadata().get(BATCH_HEADER).map(|v| v.to_str().unwrap()), Some("2"));
    let items = batch.into_inner().items;
    for (item, class) in items.iter().zip(["90", "0", "90"]) {
        let Some(extract_batch_item::Result::Response(r)) = &item.result else { panic!("{item:?}") };
        assert_eq!(predicted_class(&r.quality_scores), class);
    }

    let metrics = on.metrics();
    let lookups =
        |result| metric(&metrics, "switchyard_sidecar_cache_lookups_total", &[("tier", "memory"), ("result", result), ("version", "1")]);
    assert_eq!((lookups("hit"), lookups("miss")), (3.0, 3.0), "{metrics}");
    assert_eq!(metric(&metrics, "switchyard_sidecar_cache_entries", &[]), 3.0);
    let bytes = metric(&metrics, "switchyard_sidecar_cache_bytes", &[]);
    assert!(bytes > 3.0 * 1280.0 * 4.0 && bytes < 3.0 * 8192.0, "cache_bytes {bytes}");
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("status", "ok")]), 6.0);

    // Chaos rehearses a misbehaving version: its cached answers fail as well.
    let (status, body) = on.http("POST", "/v1/chaos", r#"{"target":"orientation/1","error_rate":1.0,"error_code":"UNAVAILABLE"}"#);
    assert_eq!(status, 200, "{body}");
    let refused = client.extract_realtime(request(a.clone(), ImageFormat::Jpeg)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    on.http("DELETE", "/v1/chaos", "");
    assert_eq!(ask(&mut client, a, "after").await.1.as_deref(), Some("hit-memory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_is_a_miss_answered_by_the_new_model() {
    let repo = Repo::with(&[("orientation", &[1])]);
    let new_weights = Repo::with(&[("orientation", &[2])]);
    let on = Sidecar::start(repo.path(), &cached(""));
    // The new file's answer, from a sidecar without the cache.
    let reference = Sidecar::start(new_weights.path(), &config(""));
    let mut client = on.client();
    let a = page(270, "png");
    let (before, header) = ask(&mut client, a.clone(), "1").await;
    assert_eq!(header.as_deref(), Some("miss"));
    assert_eq!(ask(&mut client, a.clone(), "2").await.1.as_deref(), Some("hit-memory"));

    // orientation/1's file changes (to the weights of orientation/2): same version, new file.
    repo.install("orientation", 1, &model_file("orientation", 2));
    let (status, body) = tokio::task::block_in_place(|| on.http("POST", "/v1/reload", ""));
    assert_eq!(status, 200, "{body}");
    let served = on.models()["versions"][0]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(served, sha256(&std::fs::read(model_file("orientation", 2)).unwrap()), "the swap did not happen: {body}");

    let (after, header) = ask(&mut client, a.clone(), "3").await;
    assert_eq!(header.as_deref(), Some("miss"), "the first request after a hot swap was served from the cache");
    assert_eq!(after.model_version, "orientation/1");
    let (expected, _) = ask(&mut reference.client(), a.clone(), "ref").await;
    assert_eq!(features(&after), features(&expected), "after the swap, not the new model's answer");
    assert_ne!(features(&after), features(&before), "the two model files answer alike: this test proves nothing");
    let (again, header) = ask(&mut client, a, "4").await;
    assert_eq!(header.as_deref(), Some("hit-memory"));
    assert_eq!(features(&again), features(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_sharing_a_redis_answer_each_others_images() {
    let redis = Redis::start();
    let repo = Repo::with(&[("orientation", &[1])]);
    let shared = cached(&format!("redis = {:?}\n", redis.url()));
    let first = Sidecar::start(repo.path(), &shared);
    let second = Sidecar::start(repo.path(), &shared);
    let (mut one, mut two) = (first.client(), second.client());
    assert!(first.log().contains("feature cache: sharing through Redis"), "{}", first.log());

    let a = page(0, "jpg");
    let (computed, header) = ask(&mut one, a.clone(), "1").await;
    assert_eq!(header.as_deref(), Some("miss"));
    let keys = wait_for_keys(&redis, 1);
    let (shared_answer, header) = ask(&mut two, a.clone(), "2").await;
    assert_eq!(header.as_deref(), Some("hit-redis"));
    assert_eq!(features(&shared_answer), features(&computed));
    // Kept in the second sidecar's memory from then on.
    assert_eq!(ask(&mut two, a.clone(), "3").await.1.as_deref(), Some("hit-memory"));
    match redis.query(&["TTL", &keys[0]]).unwrap() {
        Reply::Integer(ttl) => assert!((86_000..=86_400).contains(&ttl), "TTL {ttl}"),
        other => panic!("TTL: {other:?}"),
    }

    // A value that does not decode is a miss (and an error), never a failure.
    let b = page(90, "png");
    let (b_computed, _) = ask(&mut one, b.clone(), "4").await;
    let b_key = wait_for_keys(&redis, 2).into_iter().find(|k| !keys.contains(k)).unwrap();
    assert_eq!(redis.query(&["SET", &b_key, "not a feature vector"]).unwrap(), Reply::Status("OK".into()));
    let (b_answer, header) = ask(&mut two, b.clone(), "5").await;
    assert_eq!(header.as_deref(), Some("miss"));
    assert_eq!(features(&b_answer), features(&b_computed));
    let metrics = second.metrics();
    assert_eq!(metric(&metrics, "switchyard_sidecar_cache_redis_errors_total", &[("kind", "corrupt")]), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "switchyard_sidecar_cache_redis_errors_total", &[]), 1.0, "{metrics}");
    let lookups = |tier, result| metric(&metrics, "switchyard_sidecar_cache_lookups_total", &[("tier", tier), ("result", result)]);
    assert_eq!(
        (lookups("memory", "hit"), lookups("memory", "miss"), lookups("redis", "hit"), lookups("redis", "miss")),
        (1.0, 2.0, 1.0, 1.0)
    );
    // The recomputed answer replaced the corrupt value.
    let until = Instant::now() + Duration::from_secs(10);
    while redis.query(&["GET", &b_key]).unwrap() == Reply::Bulk(Some(b"not a feature vector".to_vec())) {
        assert!(Instant::now() < until, "the corrupt value was never overwritten");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(&second.log(), UNAVAILABLE), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_killed_mid_run_fails_no_request_and_is_used_again_once_back() {
    const PASSWORD: &str = "s3cret-pw";
    let mut redis = Redis::start_with_password(PASSWORD);
    let port = redis.port;
    let repo = Repo::with(&[("orientation", &[1])]);
    // No in-process tier: every lookup goes to Redis.
    let sidecar = Sidecar::start(repo.path(), &cached(&format!("max_bytes = 0\nredis = {:?}\n", redis.url())));
    let mut client = sidecar.client();
    let a = page(180, "png");
    assert_eq!(ask(&mut client, a.clone(), "1").await.1.as_deref(), Some("miss"));
    wait_for_keys(&redis, 1);
    assert_eq!(ask(&mut client, a.clone(), "2").await.1.as_deref(), Some("hit-redis"));

    redis.kill();
    let images = [page(180, "png"), page(0, "jpg"), page(90, "png"), page(270, "jpg"), page(180, "png"), page(0, "png")];
    for (i, image) in images.into_iter().enumerate() {
        let (_, header) = ask(&mut client, image, &format!("down-{i}")).await;
        assert_eq!(header.as_deref(), Some("miss"));
    }
    let log = sidecar.log();
    assert_eq!(count(&log, UNAVAILABLE), 1, "{log}");
    let line = log.lines().find(|l| l.contains(UNAVAILABLE)).unwrap();
    assert!(line.contains(&format!("redis://:***@127.0.0.1:{port}/0")), "the line does not name the Redis: {line}");
    assert!(!log.contains(PASSWORD), "the password is in the log: {log}");
    assert!(metric(&sidecar.metrics(), "switchyard_sidecar_cache_redis_errors_total", &[]) >= 1.0);

    // Back (empty): the next lookup refills it, the one after hits it.
    let _redis = Redis::start_on(port, Some(PASSWORD));
    let until = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        i += 1;
        if ask(&mut client, a.clone(), &format!("up-{i}")).await.1.as_deref() == Some("hit-redis") {
            break;
        }
        assert!(Instant::now() < until, "no hit through Redis 20 s after it came back\n{}", sidecar.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = sidecar.log();
    assert_eq!((count(&log, UNAVAILABLE), count(&log, BACK)), (1, 1), "{log}");
    assert_eq!(metric(&sidecar.metrics(), "switchyard_sidecar_requests_total", &[("status", "ok")]), 8.0 + i as f64);
}

/// Accepts connections and answers the connection set-up and `PING` as Redis would, but
/// never answers `GET` or `SET`: a Redis that is stuck, or a black hole.
fn redis_that_never_answers() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while let Ok(Reply::Array(command)) = read_reply(&mut reader) {
                    let name = match command.first() {
                        Some(Reply::Bulk(Some(name))) => String::from_utf8_lossy(name).to_ascii_uppercase(),
                        _ => String::new(),
                    };
                    let answer: &[u8] = match name.as_str() {
                        "GET" | "SET" => {
                            // Hold the connection open, answering nothing more.
                            std::thread::sleep(Duration::from_secs(3600));
                            return;
                        }
                        "PING" => b"+PONG\r\n",
                        _ => b"+OK\r\n",
                    };
                    if std::io::Write::write_all(&mut writer, answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_holds_a_request_no_longer_than_its_timeout() {
    let port = redis_that_never_answers();
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar =
        Sidecar::start(repo.path(), &cached(&format!("max_bytes = 0\nredis = \"redis://127.0.0.1:{port}\"\nredis_timeout_ms = 300\n")));
    let mut client = sidecar.client();
    let image = page(90, "jpg");
    let started = Instant::now();
    let mut latencies = Vec::new();
    // Long enough for the circuit's first retry (after 1 s), which finds Redis stuck again.
    while started.elapsed() < Duration::from_millis(1800) {
        let sent = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), ask(&mut client, image.clone(), "t")).await;
        let (response, header) = answer.expect("a request waited on a stuck Redis");
        assert_eq!((header.as_deref(), predicted_class(&response.quality_scores).as_str()), (Some("miss"), "90"));
        latencies.push(sent.elapsed());
    }
    // The first request waited the timeout, then was computed.
    assert!(latencies[0] >= Duration::from_millis(300) && latencies[0] < Duration::from_millis(1300), "{latencies:?}");
    // Then the circuit is open: only the first lookup after a retry (1 s later) waits again
    // (and a background write may time out then too: at most two errors per retry).
    let timeouts = metric(&sidecar.metrics(), "switchyard_sidecar_cache_redis_errors_total", &[("kind", "timeout")]);
    assert!((1.0..=4.0).contains(&timeouts), "{timeouts} timeouts: {latencies:?}\n{}", sidecar.log());
    let waited = latencies.iter().filter(|l| **l >= Duration::from_millis(300)).count();
    assert!(latencies.len() >= 8 && waited <= latencies.len() / 4, "{waited} of {} requests waited: {latencies:?}", latencies.len());
    assert_eq!(count(&sidecar.log(), UNAVAILABLE), 1, "{}", sidecar.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_not_there_is_named_and_the_memory_tier_still_serves_within_its_bound() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    // `serve --check` reads the URL but does not connect; a malformed one is refused by name.
    let check = |url: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("[cache]\nenabled = true\nredis = {url:?}\n")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-sidecar"))
            .args(["serve", "--check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    assert_eq!(check(&url), (true, "ok\n".into()));
    let (ok, message) = check("127.0.0.1:6379");
    assert!(!ok && message.contains("`cache.redis`"), "{message}");

    // Room for about three answers in memory.
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &cached(&format!("max_bytes = 16384\nredis = {url:?}\n")));
    let log = sidecar.log();
    assert_eq!(count(&log, UNAVAILABLE), 1, "{log}");
    assert!(log.lines().any(|l| l.contains(UNAVAILABLE) && l.contains(&url)), "the line does not name {url}: {log}");

    let mut client = sidecar.client();
    let a = page(0, "png");
    assert_eq!(ask(&mut client, a.clone(), "1").await.1.as_deref(), Some("miss"));
    assert_eq!(ask(&mut client, a, "2").await.1.as_deref(), Some("hit-memory"));
    for (i, (degrees, ext)) in
        [(90, "png"), (180, "png"), (270, "png"), (0, "jpg"), (90, "jpg"), (180, "jpg"), (270, "jpg")].into_iter().enumerate()
    {
        assert_eq!(ask(&mut client, page(degrees, ext), &i.to_string()).await.1.as_deref(), Some("miss"));
    }
    let metrics = sidecar.metrics();
    let held = metric(&metrics, "switchyard_sidecar_cache_bytes", &[]);
    assert!(held > 0.0 && held <= 16384.0, "cache_bytes {held} over max_bytes 16384");
    assert!(metric(&metrics, "switchyard_sidecar_cache_entries", &[]) <= 3.0, "{metrics}");
    assert!(metric(&metrics, "switchyard_sidecar_cache_evictions_total", &[]) >= 5.0, "{metrics}");
    assert!(metric(&metrics, "switchyard_sidecar_cache_redis_errors_total", &[("kind", "connect")]) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "switchyard_sidecar_requests_total", &[("status", "ok")]), 9.0);
}
