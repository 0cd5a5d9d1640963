//! `switchyard-sidecar-bench`: the measuring side of `cargo xtask bench sidecar`.
//!
//! * `inprocess`: the sidecar's own pipeline (decode, pre-process, inference) in a loop on
//!   one thread, no network: the limit a server can approach.
//! * `grpc`: a closed-loop load generator for any features.v1 server (the sidecar or the
//!   Python baseline), so both are measured by the same client; with `--rate`, open-loop
//!   (requests sent on a fixed schedule whatever the answers do, latency counted from the
//!   scheduled time): online traffic at a given rate. With `--unique`, every request's image
//!   is made unique (a JPEG comment), so the feature cache misses every time; the answers'
//!   `x-switchyard-cache` values are counted either way.
//! * `bulk`: `ExtractBatch` calls back to back, at a priority, for a duration: offline
//!   extraction saturating the server while `grpc --rate` measures the online traffic.
//! * `otlp-sink`: an OTLP/gRPC trace receiver that counts spans and discards them, for the
//!   sidecar with tracing on (its export is real, the collector's storage is not measured).
//! * `span-cost`: the sidecar's spans for one request (the `telemetry` module's calls, in the
//!   order the service makes them) in a loop, exported to a sink: their CPU time per request,
//!   which the served figures are too noisy to resolve.
//!
//! Each prints one JSON object on stdout (the sink: its address once ready, its counts at
//! the end of its stdin).

use clap::{Parser, Subcommand};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_proto::features::v1::{
    extract_batch_item, extract_realtime_request::ImageFormat, feature_extraction_service_client::FeatureExtractionServiceClient,
    ExtractRealtimeRequest,
};
use switchyard_sidecar::config::RuntimeConfig;
use switchyard_sidecar::onnx::{Engine, Runtime};
use switchyard_sidecar::preprocess::{self, Limits};
use switchyard_sidecar::repository::{ModelConfig, MODEL_FILE};

#[cfg(test)]
mod tests {
    #[test]
    fn a_unique_jpeg_decodes_to_the_same_pixels() {
        use switchyard_sidecar::preprocess::{decode, Format, Limits};
        let limits = Limits { max_bytes: 1 << 20, max_side: 64, max_pixels: 4096 };
        let mut jpeg = Vec::new();
        let pixels: Vec<u8> = (0..16 * 16 * 3).map(|i| (i * 7 % 251) as u8).collect();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg).encode(&pixels, 16, 16, image::ExtendedColorType::Rgb8).unwrap();
        let (a, b) = (super::unique_jpeg(&jpeg, 1).unwrap(), super::unique_jpeg(&jpeg, 2).unwrap());
        assert_ne!(a, b);
        let (mut original, mut unique) = (Vec::new(), Vec::new());
        assert_eq!(decode(Format::Jpeg, &jpeg, &limits, &mut original).unwrap(), (16, 16));
        assert_eq!(decode(Format::Jpeg, &a, &limits, &mut unique).unwrap(), (16, 16));
        assert_eq!(original, unique);
        assert!(super::unique_jpeg(b"\x89PNG", 1).is_none());
    }
}

#[derive(Parser)]
#[command(name = "switchyard-sidecar-bench", about = "Benchmark client for the Switchyard sidecar")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run decode + pre-process + inference in-process, one image at a time.
    Inprocess {
        /// Model directory (`<repo>/<model>`, with config.toml).
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// Directory of .jpg/.png images, used round-robin.
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// ONNX Runtime intra-op threads (0 = its choice).
        #[arg(long, default_value_t = 0)]
        intra_op_threads: usize,
        /// Loops running side by side, each with its own session.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
    },
    /// Closed-loop gRPC load: `concurrency` callers, each sending its next image as soon as
    /// the previous answer arrives.
    Grpc {
        /// e.g. http://127.0.0.1:50051
        #[arg(long)]
        target: String,
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_seconds: f64,
        /// Value of `x-model-version`, if any.
        #[arg(long)]
        pin: Option<String>,
        /// Send each request a new sampled W3C `traceparent`, as Envoy's tracer would.
        #[arg(long)]
        traceparent: bool,
        /// Open loop: this many requests per second on a fixed schedule (`concurrency` is
        /// then ignored).
        #[arg(long)]
        rate: Option<f64>,
        /// Value of `x-priority`, if any.
        #[arg(long)]
        priority: Option<String>,
        /// Make every image unique (a JPEG comment with a number, right after the SOI marker:
        /// same pixels, same decoding work, another SHA-256), so a feature cache never hits.
        #[arg(long)]
        unique: bool,
    },
    /// `ExtractBatch` calls of `images_per_call` images, `calls` at once, back to back for
    /// `seconds`.
    Bulk {
        #[arg(long)]
        target: String,
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 2)]
        calls: usize,
        #[arg(long, default_value_t = 64)]
        images_per_call: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Value of `x-priority`, if any.
        #[arg(long)]
        priority: Option<String>,
    },
    /// Receive OTLP traces and discard them, counting spans, until stdin is closed.
    OtlpSink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// Make and export the spans of `requests` traced requests; print the CPU time per request.
    SpanCost {
        /// OTLP/gRPC endpoint, e.g. the sink's `http://127.0.0.1:4317`.
        #[arg(long)]
        otlp_endpoint: String,
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
    },
}

fn load_images(dir: &Path) -> anyhow::Result<Vec<(Vec<u8>, ImageFormat)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot read {} ({e}); run `cargo xtask setup`", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "jpeg" | "png")))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .jpg/.png images in {}", dir.display());
    files
        .iter()
        .map(|p| {
            let format = if p.extension().is_some_and(|e| e == "png") { ImageFormat::Png } else { ImageFormat::Jpeg };
            Ok((std::fs::read(p)?, format))
        })
        .collect()
}

/// `image` with a JPEG comment segment holding `n` right after its SOI marker (decoders skip
/// comments); `None` if it is not a JPEG.
fn unique_jpeg(image: &[u8], n: u64) -> Option<Vec<u8>> {
    let rest = image.strip_prefix(&[0xFF, 0xD8])?;
    let comment = format!("switchyard bench {n:016x}");
    let length = u16::try_from(comment.len() + 2).ok()?;
    let mut out = Vec::with_capacity(image.len() + comment.len() + 4);
    out.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xFE]);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(comment.as_bytes());
    out.extend_from_slice(rest);
    Some(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut latencies_ms: Vec<f64>, elapsed: Duration) -> serde_json::Value {
    latencies_ms.sort_by(f64::total_cmp);
    json!({
        "count": latencies_ms.len(),
        "seconds": elapsed.as_secs_f64(),
        "images_per_s": latencies_ms.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": percentile(&latencies_ms, 0.50),
        "p99_ms": percentile(&latencies_ms, 0.99),
    })
}

struct InProcess<'a> {
    model: &'a Path,
    version: u64,
    images: &'a Path,
    seconds: f64,
    warmup: f64,
    intra_op_threads: usize,
    threads: usize,
    onnxruntime: Option<PathBuf>,
}

/// Per-image (decode+pre-process ms, inference ms) for each measured image of one loop.
type Timings = Vec<(f64, f64)>;

fn inprocess(args: InProcess<'_>) -> anyhow::Result<serde_json::Value> {
    let images = load_images(args.images)?;
    let runtime = Runtime::init(&RuntimeConfig {
        onnxruntime: args.onnxruntime.clone(),
        intra_op_threads: args.intra_op_threads,
        ..RuntimeConfig::default()
    })
    .map_err(anyhow::Error::msg)?;
    let config = ModelConfig::read(args.model).map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(args.model.join(args.version.to_string()).join(MODEL_FILE))?;
    let limits = Limits { max_bytes: 16 << 20, max_side: 16_384, max_pixels: 50_000_000 };
    let mut engines = Vec::new();
    for _ in 0..args.threads.max(1) {
        let (session, _) = runtime.session(&bytes, "bench", 0).map_err(anyhow::Error::msg)?;
        let mut engine = Engine::new(session, config.clone()).map_err(anyhow::Error::msg)?;
        engine.warm_up(1).map_err(anyhow::Error::msg)?;
        engines.push(engine);
    }
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let until = start + Duration::from_secs_f64(args.seconds);
    let results: Vec<anyhow::Result<Timings>> = std::thread::scope(|scope| {
        let handles: Vec<_> = engines
            .into_iter()
            .enumerate()
            .map(|(t, mut engine)| {
                let (images, config) = (&images, &config);
                scope.spawn(move || -> anyhow::Result<Timings> {
                    let mut scratch = preprocess::Scratch::default();
                    let mut timings = Vec::new();
                    let mut i = t;
                    loop {
                        let (data, _) = &images[i % images.len()];
                        i += 1;
                        let t0 = Instant::now();
                        if t0 >= until {
                            return Ok(timings);
                        }
                        let prepared = preprocess::prepare_with(&mut scratch, data, None, &limits, &config.input)?;
                        let t1 = Instant::now();
                        let out = engine.run(&[prepared.rgb.as_slice()]).map_err(anyhow::Error::msg)?;
                        anyhow::ensure!(!out[0].features.is_empty(), "empty feature vector");
                        let t2 = Instant::now();
                        if t0 >= start && t2 <= until {
                            timings.push(((t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3));
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("bench thread panicked")))).collect()
    });
    let mut timings = Vec::new();
    for r in results {
        timings.extend(r?);
    }
    let mean = |f: fn(&(f64, f64)) -> f64| timings.iter().map(f).sum::<f64>() / timings.len().max(1) as f64;
    let (pre, infer) = (mean(|t| t.0), mean(|t| t.1));
    let mut out = summary(timings.iter().map(|t| t.0 + t.1).collect(), Duration::from_secs_f64(args.seconds));
    out["threads"] = json!(args.threads);
    out["intra_op_threads"] = json!(args.intra_op_threads);
    out["decode_preprocess_ms"] = json!(pre);
    out["inference_ms"] = json!(infer);
    Ok(out)
}

/// A `traceparent` for a new sampled trace whose parent is a span of the caller's.
fn new_traceparent() -> String {
    format!("00-{:032x}-{:016x}-01", fastrand::u128(1..), fastrand::u64(1..))
}

type Client = FeatureExtractionServiceClient<tonic::transport::Channel>;

async fn connect(target: &str) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(target.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
    Ok(FeatureExtractionServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

fn with_priority<T>(mut request: tonic::Request<T>, priority: Option<&str>) -> tonic::Request<T> {
    if let Some(v) = priority.and_then(|p| p.parse().ok()) {
        request.metadata_mut().insert("x-priority", v);
    }
    request
}

/// Online traffic: `rate` requests per second on a fixed schedule, each its own task, so a
/// slow answer never delays the next request (no coordinated omission: latency is counted
/// from when the request was due).
async fn open_loop(target: String, images: &Path, rate: f64, seconds: f64, warmup: f64, priority: Option<String>) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(rate > 0.0, "--rate must be positive");
    let images = load_images(images)?;
    let client = connect(&target).await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let mut calls = tokio::task::JoinSet::new();
    let mut due = start;
    let mut i = 0;
    while due < until {
        tokio::time::sleep_until(due).await;
        let (data, format) = &images[i % images.len()];
        let request = ExtractRealtimeRequest { request_id: i.to_string(), image_data: data.clone(), image_format: *format as i32 };
        let request = with_priority(tonic::Request::new(request), priority.as_deref());
        let mut client = client.clone();
        let measured = due >= measure_from;
        calls.spawn(async move {
            let result = client.extract_realtime(request).await;
            (measured, due.elapsed(), result.err().map(|s| s.code()))
        });
        i += 1;
        due += interval;
    }
    let mut latencies = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(call) = calls.join_next().await {
        match call? {
            (false, _, _) => {}
            (true, latency, None) => latencies.push(latency.as_secs_f64() * 1e3),
            (true, _, Some(code)) => *errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }
    let mut out = summary(latencies, Duration::from_secs_f64(seconds));
    out["rate"] = json!(rate);
    out["sent"] = json!(i);
    out["errors"] = json!(errors);
    Ok(out)
}

/// Offline traffic: `calls` `ExtractBatch` calls at once, each of `per_call` images, a new
/// one as soon as one ends, until `seconds` have passed.
async fn bulk(target: String, images: &Path, calls: usize, per_call: usize, seconds: f64, priority: Option<String>) -> anyhow::Result<serde_json::Value> {
    let images = std::sync::Arc::new(load_images(images)?);
    let client = connect(&target).await?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for caller in 0..calls {
        let (mut client, images, priority) = (client.clone(), std::sync::Arc::clone(&images), priority.clone());
        tasks.push(tokio::spawn(async move {
            let (mut served, mut failed, mut calls_made) = (0usize, 0usize, 0usize);
            while Instant::now() < until {
                let batch: Vec<ExtractRealtimeRequest> = (0..per_call)
                    .map(|n| {
                        let (data, format) = &images[(caller * per_call + n) % images.len()];
                        ExtractRealtimeRequest { request_id: n.to_string(), image_data: data.clone(), image_format: *format as i32 }
                    })
                    .collect();
                let request = with_priority(tonic::Request::new(futures::stream::iter(batch)), priority.as_deref());
                calls_made += 1;
                match client.extract_batch(request).await {
                    Ok(response) => {
                        let items = response.into_inner().items;
                        let ok = items.iter().filter(|i| matches!(i.result, Some(extract_batch_item::Result::Response(_)))).count();
                        served += ok;
                        failed += items.len() - ok;
                    }
                    Err(_) => failed += per_call,
                }
            }
            (served, failed, calls_made)
        }));
    }
    let (mut served, mut failed, mut calls_made) = (0, 0, 0);
    for task in tasks {
        let (s, f, c) = task.await?;
        (served, failed, calls_made) = (served + s, failed + f, calls_made + c);
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({"images_served": served, "images_failed": failed, "calls": calls_made, "seconds": elapsed, "images_per_s": served as f64 / elapsed}))
}

/// The closed loop's options beyond its target, images and duration.
struct Closed {
    concurrency: usize,
    pin: Option<String>,
    traceparent: bool,
    unique: bool,
}

async fn grpc(target: String, images: &Path, seconds: f64, warmup: f64, options: Closed) -> anyhow::Result<serde_json::Value> {
    let Closed { concurrency, pin, traceparent, unique } = options;
    let images = std::sync::Arc::new(load_images(images)?);
    if unique {
        anyhow::ensure!(images.iter().all(|(_, f)| *f == ImageFormat::Jpeg), "--unique needs JPEG images");
    }
    // Unique across runs too: a later run against the same sidecar must not hit.
    let unique_base = fastrand::u64(..) & !0xFFFF_FFFF;
    let client = connect(&target).await?;
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let until = measure_from + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = client.clone();
        let images = std::sync::Arc::clone(&images);
        let pin = pin.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
            let mut cache: std::collections::BTreeMap<String, usize> = Default::default();
            let mut sent_total = 0u64;
            let mut i = worker;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let (data, format) = &images[i % images.len()];
                i += concurrency;
                let image_data = match unique {
                    true => unique_jpeg(data, unique_base + i as u64).unwrap_or_else(|| data.clone()),
                    false => data.clone(),
                };
                let mut request =
                    tonic::Request::new(ExtractRealtimeRequest { request_id: i.to_string(), image_data, image_format: *format as i32 });
                if let Some(pin) = &pin {
                    if let Ok(v) = pin.parse() {
                        request.metadata_mut().insert("x-model-version", v);
                    }
                }
                if traceparent {
                    if let Ok(v) = new_traceparent().parse() {
                        request.metadata_mut().insert("traceparent", v);
                    }
                }
                let sent = Instant::now();
                sent_total += 1;
                let result = client.extract_realtime(request).await;
                let done = Instant::now();
                if sent < measure_from || done > until {
                    continue;
                }
                match result {
                    Ok(response) => {
                        latencies.push((done - sent).as_secs_f64() * 1e3);
                        if let Some(source) = response.metadata().get("x-switchyard-cache").and_then(|v| v.to_str().ok()) {
                            *cache.entry(source.to_owned()).or_default() += 1;
                        }
                    }
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            (latencies, errors, cache, sent_total)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut cache: std::collections::BTreeMap<String, usize> = Default::default();
    let mut sent = 0;
    for task in tasks {
        let (l, e, c, n) = task.await?;
        latencies.extend(l);
        sent += n;
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in c {
            *cache.entry(k).or_default() += v;
        }
    }
    let mut out = summary(latencies, Duration::from_secs_f64(seconds));
    out["concurrency"] = json!(concurrency);
    out["errors"] = json!(errors);
    // The feature cache's answers (`x-switchyard-cache`) among the measured requests.
    out["cache"] = json!(cache);
    // Every request, warm-up included (what a traced server exported spans for).
    out["sent"] = json!(sent);
    Ok(out)
}

/// The sink's counts.
#[derive(Default)]
struct Received {
    spans: std::sync::atomic::AtomicU64,
    exports: std::sync::atomic::AtomicU64,
}

struct Sink(std::sync::Arc<Received>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let spans: usize = request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.spans.fetch_add(spans as u64, Relaxed);
        self.0.exports.fetch_add(1, Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// CPU time (user + system) of this process so far, in seconds.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// The spans of `requests` requests, as the service makes them (batches of 4), flushed every
/// 1,000 requests so the export queue never drops any: every span is made and sent.
async fn span_cost(otlp_endpoint: String, requests: usize) -> anyhow::Result<serde_json::Value> {
    use std::time::SystemTime;
    use switchyard_sidecar::telemetry::{next_batch_id, BatchRun, Telemetry};
    let config = switchyard_sidecar::config::TracingConfig { otlp_endpoint: Some(otlp_endpoint.clone()), ..Default::default() };
    let telemetry = std::sync::Arc::new(Telemetry::start(&otlp_endpoint, &config)?);
    let run = std::sync::Arc::clone(&telemetry);
    let (cpu, wall) = tokio::task::spawn_blocking(move || {
        let (cpu0, wall0) = (process_cpu_seconds(), Instant::now());
        for i in 0..requests {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(v) = new_traceparent().parse() {
                metadata.insert("traceparent", v);
            }
            let request = run.request(&metadata, "features.v1.FeatureExtractionService", "ExtractRealtime");
            request.served_by("orientation/1");
            if let Some(image) = request.image() {
                image.preprocessed(SystemTime::now(), None);
                let queued = image.queued();
                let now = SystemTime::now();
                queued.ran(&BatchRun { id: next_batch_id(), size: 4, started: now, inference: (now, now), ended: now, error: None });
            }
            request.finish(tonic::Code::Ok);
            if i % 1000 == 999 {
                run.flush();
            }
        }
        run.flush();
        (process_cpu_seconds() - cpu0, wall0.elapsed())
    })
    .await?;
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(json!({
        "requests": requests,
        "spans_per_request": 5,
        "cpu_us_per_request": cpu * 1e6 / requests.max(1) as f64,
        "seconds": wall.as_secs_f64(),
    }))
}

/// Serves the sink until stdin closes; returns its counts.
async fn otlp_sink(listen: std::net::SocketAddr) -> anyhow::Result<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("{}", json!({"event": "ready", "otlp": listener.local_addr()?.to_string()}));
    let received = std::sync::Arc::new(Received::default());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Sink(std::sync::Arc::clone(&received))))
        .serve_with_incoming_shutdown(incoming, async {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut sink).await;
        });
    server.await?;
    Ok(json!({"spans": received.spans.load(Relaxed), "exports": received.exports.load(Relaxed)}))
}

fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().command {
        Command::Inprocess { model, version, images, seconds, warmup_seconds, intra_op_threads, threads, onnxruntime } => {
            inprocess(InProcess {
                model: &model,
                version,
                images: &images,
                seconds,
                warmup: warmup_seconds,
                intra_op_threads,
                threads,
                onnxruntime,
            })?
        }
        Command::Grpc { target, images, rate: Some(rate), seconds, warmup_seconds, priority, .. } => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(open_loop(target, &images, rate, seconds, warmup_seconds, priority))?
        }
        Command::Grpc { target, images, concurrency, seconds, warmup_seconds, pin, traceparent, rate: None, unique, .. } => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(grpc(target, &images, seconds, warmup_seconds, Closed { concurrency, pin, traceparent, unique }))?
        }
        Command::Bulk { target, images, calls, images_per_call, seconds, priority } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(bulk(target, &images, calls, images_per_call, seconds, priority))?,
        Command::SpanCost { otlp_endpoint, requests } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(span_cost(otlp_endpoint, requests))?,
        Command::OtlpSink { listen } => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(otlp_sink(listen))?
        }
    };
    println!("{result}");
    Ok(())
}
