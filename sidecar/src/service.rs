//! `features.v1.FeatureExtractionService`: resolve the version and the priority level,
//! look the image up in the feature cache (when on), admit, pre-process on the blocking
//! pool, queue for a batch, answer. Each stage is a span when tracing is on.

use crate::batch::Job;
use crate::cache::{self, Cache, Features, Source};
use crate::chaos::Chaos;
use crate::config::Config;
use crate::metrics::{Metrics, VersionMetrics};
use crate::models::{ModelSet, ModelVersion};
use crate::preprocess::{self, Format, Limits};
use crate::priority::{Priorities, Priority, Rpc};
use crate::telemetry::{ImageTrace, RequestTrace, Telemetry};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use switchyard_proto::features::v1::{
    extract_batch_item, extract_realtime_request::ImageFormat, feature_extraction_service_server::FeatureExtractionService,
    ExtractBatchItem, ExtractBatchResponse, ExtractError, ExtractRealtimeRequest, ExtractRealtimeResponse,
};
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

/// The gRPC service name, also reported by `grpc.health.v1`.
pub const SERVICE_NAME: &str = "features.v1.FeatureExtractionService";

#[derive(Clone)]
pub struct Extractor {
    shared: Arc<Shared>,
    /// The version for requests without the version header (`None`: the default model's).
    default_pin: Option<Arc<str>>,
}

struct Shared {
    models: Arc<ModelSet>,
    chaos: Arc<Chaos>,
    metrics: Arc<Metrics>,
    limits: Limits,
    version_header: String,
    priorities: Priorities,
    /// Turns at pre-processing for each level below the highest (index 0: the second level).
    ///
    /// Pre-processing runs on the blocking pool, one FIFO for every level: unbounded, a bulk
    /// call would queue up to its level's capacity of images there ahead of an online image.
    /// So each lower level pre-processes at most as many images at once as there are
    /// pre-processing threads, and an image of the highest level waits there at most for the
    /// images already being pre-processed.
    lower_level_turns: Vec<Semaphore>,
    /// Pre-processing for the levels below the highest at `batching.priority.bulk_nice`;
    /// `None` when they share the blocking pool.
    bulk_preprocess: Option<crate::background::Pool>,
    /// `None` when tracing is off.
    telemetry: Option<Arc<Telemetry>>,
    /// `None` when the feature cache is off.
    cache: Option<Arc<Cache>>,
}

impl Shared {
    /// A turn at pre-processing for a job at `priority` (the highest level needs none).
    async fn preprocess_turn(&self, priority: Priority) -> Result<Option<SemaphorePermit<'_>>, Status> {
        let Some(turns) = priority.index().checked_sub(1).and_then(|i| self.lower_level_turns.get(i)) else { return Ok(None) };
        turns.acquire().await.map(Some).map_err(|_| Status::unavailable("the sidecar is shutting down"))
    }
}

/// How a request gets a queue slot.
#[derive(Clone, Copy)]
enum Admit {
    /// Realtime: a full queue is `RESOURCE_EXHAUSTED` at once.
    Now,
    /// Bulk: wait for room.
    Wait,
}

impl Extractor {
    /// The service under `config` (its image limits, version header and priority levels);
    /// `telemetry`: `None` when tracing is off; `cache`: `None` when the feature cache is off.
    pub(crate) fn new(
        models: Arc<ModelSet>,
        chaos: Arc<Chaos>,
        metrics: Arc<Metrics>,
        config: &Config,
        telemetry: Option<Arc<Telemetry>>,
        cache: Option<Arc<Cache>>,
    ) -> Self {
        let limits = config.image_limits();
        let priority = &config.batching.priority;
        let threads = config.runtime.preprocess_thread_count();
        let shared = Shared {
            models,
            chaos,
            metrics,
            limits,
            version_header: config.version_header.clone(),
            priorities: Priorities::new(priority),
            lower_level_turns: (1..priority.levels).map(|_| Semaphore::new(threads)).collect(),
            bulk_preprocess: priority.bulk().and_then(|nice| {
                crate::background::Pool::start("preprocess bulk", threads, nice)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot start the bulk pre-processing threads; every level shares the blocking pool"))
                    .ok()
            }),
            telemetry,
            cache,
        };
        Self { shared: Arc::new(shared), default_pin: None }
    }

    fn trace<T>(&self, request: &Request<T>, method: &'static str) -> Option<RequestTrace> {
        Some(self.shared.telemetry.as_ref()?.request(request.metadata(), SERVICE_NAME, method))
    }

    /// The same service, answering unpinned requests with `pin` (a version header value).
    pub fn with_default(&self, pin: &str) -> Self {
        Self { shared: Arc::clone(&self.shared), default_pin: Some(pin.into()) }
    }

    fn resolve<T>(&self, request: &Request<T>) -> Result<Arc<ModelVersion>, Status> {
        let pin = request.metadata().get(self.shared.version_header.as_str()).map(|v| v.to_str());
        let pin = match pin {
            Some(Err(_)) => {
                let status = Status::invalid_argument(format!("metadata `{}` is not ASCII", self.shared.version_header));
                self.shared.metrics.unrouted(status.code());
                return Err(status);
            }
            Some(Ok(v)) if !v.trim().is_empty() => Some(v),
            Some(Ok(_)) | None => self.default_pin.as_deref(),
        };
        let routing = self.shared.models.routing();
        routing.resolve(pin).map(Arc::clone).inspect_err(|status| self.shared.metrics.unrouted(status.code()))
    }

    /// One image, start to finish; with the cache on, also where the answer came from.
    async fn extract(
        &self,
        version: &Arc<ModelVersion>,
        request: ExtractRealtimeRequest,
        deadline: Option<Instant>,
        admit: Admit,
        priority: Priority,
        trace: Option<ImageTrace>,
    ) -> Result<(ExtractRealtimeResponse, Option<Source>), Status> {
        let declared = match request.image_format() {
            ImageFormat::Unknown => None,
            ImageFormat::Jpeg => Some(Format::Jpeg),
            ImageFormat::Png => Some(Format::Png),
        };
        let limits = self.shared.limits;
        // The cheap checks before taking a queue slot.
        preprocess::check_format(&request.image_data, declared, &limits).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(fault) = self.shared.chaos.get(&version.name) {
            if fault.latency_ms > 0 {
                tokio::time::sleep(fault.latency()).await;
            }
            if let Some(status) = fault.roll_error() {
                return Err(status);
            }
        }
        // The cache after the version is resolved (its file and settings are in the key) and
        // after chaos (a cached answer from a misbehaving canary is still late or failed),
        // before a queue slot: a hit takes none, and no pre-processing or inference.
        let mut image = request.image_data;
        let mut fill = None;
        if let Some(cache) = &self.shared.cache {
            let (bytes, key) = cache.key(image, version).await.map_err(|e| Status::internal(format!("hashing the image failed: {e}")))?;
            image = bytes;
            let traced_from = trace.as_ref().map(|_| SystemTime::now());
            let found = cache.get(&key, version).await;
            if let (Some(trace), Some(from)) = (&trace, traced_from) {
                trace.cache_lookup(from, found.as_ref().map_or(Source::Miss, |(_, source)| *source).header_value());
            }
            if let Some((features, source)) = found {
                return Ok((realtime_response(request.request_id, version, features.vector.clone(), features.score_map()), Some(source)));
            }
            fill = Some((cache, key));
        }
        let admission = match admit {
            Admit::Now => version.queue.try_admit(priority)?,
            Admit::Wait => version.queue.admit(priority).await?,
        };
        let turn = self.shared.preprocess_turn(admission.priority()).await?;
        let started = Instant::now();
        let traced_from = trace.as_ref().map(|_| SystemTime::now());
        let for_prepare = Arc::clone(version);
        let prepare = move || preprocess::prepare(&image, declared, &limits, &for_prepare.config.input);
        let prepared = match self.shared.bulk_preprocess.as_ref().filter(|_| admission.priority().index() > 0) {
            Some(pool) => pool.run(prepare).await.ok_or_else(|| Status::internal("pre-processing task failed"))?,
            None => tokio::task::spawn_blocking(prepare)
                .await
                .map_err(|e| Status::internal(format!("pre-processing task failed: {e}")))?,
        };
        drop(turn);
        if let (Some(trace), Some(from)) = (&trace, traced_from) {
            trace.preprocessed(from, prepared.as_ref().err().map(ToString::to_string).as_deref());
        }
        let prepared = prepared.map_err(|e| Status::invalid_argument(e.to_string()))?;
        version.metrics.preprocess_seconds.observe(started.elapsed().as_secs_f64());
        let quality = prepared.quality;
        let (reply, answer) = oneshot::channel();
        let trace = trace.map(ImageTrace::queued);
        version.queue.submit(Job { image: prepared, deadline, enqueued: Instant::now(), reply, admission, trace })?;
        let output = answer.await.map_err(|_| Status::internal(format!("{} stopped before answering", version.name)))??;

        let mut scores = std::collections::HashMap::with_capacity(2 + output.classes.len());
        scores.insert("blur".to_string(), quality.blur);
        scores.insert("brightness".to_string(), quality.brightness);
        for (i, score) in output.classes.iter().enumerate() {
            let key = version.class_keys.get(i).cloned().unwrap_or_else(|| format!("class/{i}"));
            scores.insert(key, *score);
        }
        let response = realtime_response(request.request_id, version, output.features, scores);
        match fill {
            Some((cache, key)) => {
                cache.fill(key, Features::new(response.feature_vector.clone(), &response.quality_scores));
                Ok((response, Some(Source::Miss)))
            }
            None => Ok((response, None)),
        }
    }

    /// `extract` under the request's deadline, counted in the metrics whatever happens
    /// (a dropped future counts as `cancelled`).
    async fn extract_counted(
        &self,
        version: &Arc<ModelVersion>,
        request: ExtractRealtimeRequest,
        deadline: Option<Instant>,
        admit: Admit,
        priority: Priority,
        trace: Option<ImageTrace>,
    ) -> Result<(ExtractRealtimeResponse, Option<Source>), Status> {
        let mut outcome = Outcome { metrics: &version.metrics, code: None };
        let work = self.extract(version, request, deadline, admit, priority, trace);
        let result = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), work).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!("deadline passed while {} was serving the request", version.name))),
            },
            None => work.await,
        };
        outcome.code = Some(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
        result
    }
}

/// Records the request's status when dropped; a request whose future is dropped before it
/// finished (the client went away) is `cancelled`.
struct Outcome<'a> {
    metrics: &'a VersionMetrics,
    code: Option<Code>,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.metrics.request(self.code.unwrap_or(Code::Cancelled));
    }
}

/// Parses `grpc-timeout` (1–8 digits and a unit among `H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn deadline_of<T>(request: &Request<T>, received: Instant) -> Option<Instant> {
    let timeout = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(timeout).map(|d| received + d)
}

/// Ends a call's span (if traced) with the call's status.
fn traced<T>(trace: Option<RequestTrace>, result: Result<T, Status>) -> Result<T, Status> {
    if let Some(trace) = trace {
        trace.finish(result.as_ref().map_or_else(Status::code, |_| Code::Ok));
    }
    result
}

#[tonic::async_trait]
impl FeatureExtractionService for Extractor {
    async fn extract_realtime(&self, request: Request<ExtractRealtimeRequest>) -> Result<Response<ExtractRealtimeResponse>, Status> {
        let trace = self.trace(&request, "ExtractRealtime");
        let result = self.realtime(request, trace.as_ref()).await;
        traced(trace, result)
    }

    async fn extract_batch(&self, request: Request<Streaming<ExtractRealtimeRequest>>) -> Result<Response<ExtractBatchResponse>, Status> {
        let trace = self.trace(&request, "ExtractBatch");
        let result = self.batch(request, trace.as_ref()).await;
        traced(trace, result)
    }
}

impl Extractor {
    async fn realtime(
        &self,
        request: Request<ExtractRealtimeRequest>,
        trace: Option<&RequestTrace>,
    ) -> Result<Response<ExtractRealtimeResponse>, Status> {
        let received = Instant::now();
        let deadline = deadline_of(&request, received);
        let version = self.resolve(&request)?;
        let priority = self.shared.priorities.of(request.metadata(), Rpc::Realtime);
        if let Some(trace) = trace {
            trace.served_by(&version.name);
        }
        let image = trace.and_then(RequestTrace::image);
        let (answer, source) = self.extract_counted(&version, request.into_inner(), deadline, Admit::Now, priority, image).await?;
        let mut response = Response::new(answer);
        if let Some(source) = source {
            response.metadata_mut().insert(cache::HEADER, MetadataValue::from_static(source.header_value()));
        }
        Ok(response)
    }

    async fn batch(
        &self,
        request: Request<Streaming<ExtractRealtimeRequest>>,
        trace: Option<&RequestTrace>,
    ) -> Result<Response<ExtractBatchResponse>, Status> {
        let received = Instant::now();
        let deadline = deadline_of(&request, received);
        let version = self.resolve(&request)?;
        // One level for the whole call, from its initial metadata.
        let priority = self.shared.priorities.of(request.metadata(), Rpc::Batch);
        if let Some(trace) = trace {
            trace.served_by(&version.name);
        }
        // Enough images in flight to fill batches, never more than the level admits.
        let window = (2 * version.queue.capacity_at(priority).min(64)).clamp(2, 128);
        let this = self.clone();
        let items = request.into_inner().map(move |message| {
            let this = this.clone();
            let version = Arc::clone(&version);
            let image = trace.and_then(RequestTrace::image);
            async move {
                let request = message?;
                let request_id = request.request_id.clone();
                let (result, hit) = match this.extract_counted(&version, request, deadline, Admit::Wait, priority, image).await {
                    Ok((response, source)) => (extract_batch_item::Result::Response(response), source.is_some_and(Source::is_hit)),
                    Err(status) => {
                        let error = ExtractError { request_id, code: status.code() as i32, message: status.message().to_string() };
                        (extract_batch_item::Result::Error(error), false)
                    }
                };
                Ok::<_, Status>((ExtractBatchItem { result: Some(result) }, hit))
            }
        });
        let items = items.buffered(window).try_collect::<Vec<_>>();
        let items = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), items)
                .await
                .map_err(|_| Status::deadline_exceeded("deadline passed before every image of the batch was served"))??,
            None => items.await?,
        };
        let hits = items.iter().filter(|(_, hit)| *hit).count();
        let mut response = Response::new(ExtractBatchResponse { items: items.into_iter().map(|(item, _)| item).collect() });
        if self.shared.cache.is_some() {
            response.metadata_mut().insert(cache::BATCH_HEADER, MetadataValue::from(hits as u64));
        }
        Ok(response)
    }
}

/// The answer for one image, computed now or found in the cache.
fn realtime_response(
    request_id: String,
    version: &ModelVersion,
    feature_vector: Vec<f32>,
    quality_scores: std::collections::HashMap<String, f32>,
) -> ExtractRealtimeResponse {
    ExtractRealtimeResponse {
        request_id,
        model_version: version.name.clone(),
        feature_vector,
        processed_at: Some(SystemTime::now().into()),
        quality_scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("-1m"), None);
    }
}
