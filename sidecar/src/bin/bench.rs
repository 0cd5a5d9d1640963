//! `switchyard-sidecar-bench`: the measuring side of `cargo xtask bench sidecar`.
//!
//! * `inprocess`: the sidecar's own pipeline (decode, pre-process, inference) in a loop on
//!   one thread, no network: the limit a server can approach.
//! * `grpc`: a closed-loop load generator for any features.v1 server (the sidecar or the
//!   Python baseline), so both are measured by the same client.
//!
//! Each prints one JSON object on stdout.

use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchyard_proto::features::v1::{
    extract_realtime_request::ImageFormat, feature_extraction_service_client::FeatureExtractionServiceClient,
    ExtractRealtimeRequest,
};
use switchyard_sidecar::config::RuntimeConfig;
use switchyard_sidecar::onnx::{Engine, Runtime};
use switchyard_sidecar::preprocess::{self, Limits};
use switchyard_sidecar::repository::{ModelConfig, MODEL_FILE};

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
        let (session, _) = runtime.session(&bytes, "bench").map_err(anyhow::Error::msg)?;
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

async fn grpc(
    target: String,
    images: &Path,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    pin: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let images = std::sync::Arc::new(load_images(images)?);
    let channel = tonic::transport::Endpoint::from_shared(target.clone())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
    let client = FeatureExtractionServiceClient::new(channel).max_decoding_message_size(64 << 20);
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
            let mut i = worker;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let (data, format) = &images[i % images.len()];
                i += concurrency;
                let mut request = tonic::Request::new(ExtractRealtimeRequest {
                    request_id: i.to_string(),
                    image_data: data.clone(),
                    image_format: *format as i32,
                });
                if let Some(pin) = &pin {
                    if let Ok(v) = pin.parse() {
                        request.metadata_mut().insert("x-model-version", v);
                    }
                }
                let sent = Instant::now();
                let result = client.extract_realtime(request).await;
                let done = Instant::now();
                if sent < measure_from || done > until {
                    continue;
                }
                match result {
                    Ok(_) => latencies.push((done - sent).as_secs_f64() * 1e3),
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let mut out = summary(latencies, Duration::from_secs_f64(seconds));
    out["concurrency"] = json!(concurrency);
    out["errors"] = json!(errors);
    Ok(out)
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
        Command::Grpc { target, images, concurrency, seconds, warmup_seconds, pin } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(grpc(target, &images, concurrency, seconds, warmup_seconds, pin))?,
    };
    println!("{result}");
    Ok(())
}
