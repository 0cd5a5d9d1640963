//! Request traces over OTLP: the sidecar's part of a trace that starts at its caller.
//!
//! With `[tracing] otlp_endpoint` set, each features.v1 call gets a server span joined to the
//! caller's W3C `traceparent` (Envoy's span, behind the filter), and each image in it three
//! children: `preprocess` (decode and resize, including the wait for a pre-processing
//! thread), `queue` (enqueued until its batch starts) and `batch` (the batch it ran in, with
//! its size), whose child `inference` is the batch's run (normalised into the input tensor
//! and run by ONNX Runtime). A batch serves several requests but a span belongs to one
//! trace, so each request in a batch gets its own `batch` span: same times, same
//! `switchyard.batch.id`, which groups them across traces. With the feature cache on, a
//! `cache` span (`switchyard.cache`: `hit-memory`, `hit-redis`, `miss`) comes first; a hit
//! has no other.
//!
//! Spans leave through a batch span processor on a thread of its own; the request path only
//! hands finished spans to its queue and never waits on the network. A full queue drops spans.
//!
//! The types are public for the benchmark, which measures their cost per request apart from
//! the model's (`switchyard-sidecar-bench span-cost`).
//!
//! Without an endpoint nothing is built: the service holds `None` and the request path's only
//! cost is checking it. A request whose caller said "not sampled" gets one non-recording
//! span and no children.

use crate::config::TracingConfig;
use anyhow::{Context as _, Result};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tonic::metadata::MetadataMap;
use tonic::Code;

/// Attribute naming the model version that served a request (`orientation/1`).
pub(crate) const MODEL_VERSION: &str = "switchyard.model_version";
/// Attributes of a `batch` span: images in it, and an id shared by the requests it served.
pub(crate) const BATCH_SIZE: &str = "switchyard.batch.size";
pub(crate) const BATCH_ID: &str = "switchyard.batch.id";
/// Attribute of a `cache` span: `hit-memory`, `hit-redis` or `miss`.
pub(crate) const CACHE: &str = "switchyard.cache";

/// The installed exporter and the tracer the service uses.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Telemetry {
    /// Builds the OTLP exporter and its batch processor. Call it on the Tokio runtime: the
    /// exporter's gRPC channel runs there.
    pub fn start(endpoint: &str, config: &TracingConfig) -> Result<Telemetry> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .with_context(|| format!("cannot build the OTLP exporter for `tracing.otlp_endpoint` {endpoint}"))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.export_delay_ms))
            .with_max_queue_size(config.max_queued_spans)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batches).build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
            // The default resource also reads OTEL_RESOURCE_ATTRIBUTES (pod, node...).
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("switchyard-sidecar");
        tracing::info!(endpoint, service_name = config.service_name, sample_ratio = config.sample_ratio, "exporting request traces over OTLP");
        Ok(Telemetry { provider, tracer, propagator: TraceContextPropagator::new() })
    }

    /// The server span of one call to `service`/`method`, child of the caller's `traceparent`
    /// when it sent one.
    pub fn request(&self, metadata: &MetadataMap, service: &'static str, method: &'static str) -> RequestTrace {
        let caller = self.propagator.extract(&Metadata(metadata));
        let span = self
            .tracer
            .span_builder(format!("{service}/{method}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ])
            .start_with_context(&self.tracer, &caller);
        let sampled = span.is_recording();
        RequestTrace { tracer: self.tracer.clone(), cx: caller.with_span(span), sampled, code: None }
    }

    /// Sends what is queued and waits until it is sent (blocking: off the runtime's workers).
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing request traces failed");
        }
    }

    /// Sends what is queued and stops the export thread (blocking: call it off the runtime's
    /// workers). Spans dropped for a full queue are logged here.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing request traces at shutdown failed");
        }
    }
}

/// Reads `traceparent`/`tracestate` from gRPC request metadata.
struct Metadata<'a>(&'a MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A call's server span. Ends when dropped, with the gRPC status set by
/// [`RequestTrace::finish`]; a call dropped before finishing (the client went away) ends
/// `CANCELLED`.
pub struct RequestTrace {
    tracer: SdkTracer,
    /// The caller's context with this call's span in it: the parent of the per-image spans.
    cx: Context,
    sampled: bool,
    code: Option<Code>,
}

impl RequestTrace {
    pub fn served_by(&self, version: &str) {
        if self.sampled {
            self.cx.span().set_attribute(KeyValue::new(MODEL_VERSION, version.to_owned()));
        }
    }

    pub fn finish(mut self, code: Code) {
        self.code = Some(code);
    }

    /// The spans of one image of this call; `None` when the call is not sampled.
    pub fn image(&self) -> Option<ImageTrace> {
        self.sampled.then(|| ImageTrace { tracer: self.tracer.clone(), parent: self.cx.clone() })
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        // The server-side error codes of OpenTelemetry's gRPC conventions; the others (bad
        // input, not found, at capacity) are the caller's business, not a server fault.
        if matches!(code, Code::Unknown | Code::DeadlineExceeded | Code::Unimplemented | Code::Internal | Code::Unavailable | Code::DataLoss) {
            span.set_status(Status::error(format!("{code:?}")));
        }
        span.end();
    }
}

/// The spans of one image, under its call's span.
pub struct ImageTrace {
    tracer: SdkTracer,
    parent: Context,
}

impl ImageTrace {
    /// Records `preprocess`, which ran from `started` until now.
    pub fn preprocessed(&self, started: SystemTime, error: Option<&str>) {
        let mut span = self.tracer.span_builder("preprocess").with_start_time(started).start_with_context(&self.tracer, &self.parent);
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
    }

    /// Records `cache` (the feature cache's lookup, with the cache on), which ran from
    /// `started` until now; a hit is the image's only span.
    pub(crate) fn cache_lookup(&self, started: SystemTime, result: &'static str) {
        self.tracer
            .span_builder("cache")
            .with_start_time(started)
            .with_attributes([KeyValue::new(CACHE, result)])
            .start_with_context(&self.tracer, &self.parent)
            .end();
    }

    /// The image enters its version's queue now.
    pub fn queued(self) -> QueuedTrace {
        QueuedTrace { tracer: self.tracer, parent: self.parent, at: SystemTime::now() }
    }
}

/// A queued image's trace, carried in its [`crate::batch::Job`] to the inference thread.
pub struct QueuedTrace {
    tracer: SdkTracer,
    parent: Context,
    at: SystemTime,
}

/// One batch as its requests' spans show it.
pub struct BatchRun<'a> {
    pub id: u64,
    pub size: usize,
    pub started: SystemTime,
    pub inference: (SystemTime, SystemTime),
    pub ended: SystemTime,
    pub error: Option<&'a str>,
}

/// A process-wide batch id, drawn only for batches with a traced request.
pub fn next_batch_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl QueuedTrace {
    /// Records `queue` up to `started`, then `batch` and its `inference`.
    pub fn ran(&self, batch: &BatchRun<'_>) {
        self.queue_span(batch.started, None);
        let mut span = self
            .tracer
            .span_builder("batch")
            .with_start_time(batch.started)
            .with_attributes([KeyValue::new(BATCH_SIZE, batch.size as i64), KeyValue::new(BATCH_ID, batch.id as i64)])
            .start_with_context(&self.tracer, &self.parent);
        if let Some(error) = batch.error {
            span.set_status(Status::error(error.to_owned()));
        }
        let cx = self.parent.with_span(span);
        let mut inference =
            self.tracer.span_builder("inference").with_start_time(batch.inference.0).start_with_context(&self.tracer, &cx);
        if let Some(error) = batch.error {
            inference.set_status(Status::error(error.to_owned()));
        }
        inference.end_with_timestamp(batch.inference.1);
        cx.span().end_with_timestamp(batch.ended);
    }

    /// Records `queue` for an image dropped before inference, and why.
    pub(crate) fn dropped(&self, at: SystemTime, why: &str) {
        self.queue_span(at, Some(why));
    }

    fn queue_span(&self, until: SystemTime, error: Option<&str>) {
        let mut span = self.tracer.span_builder("queue").with_start_time(self.at).start_with_context(&self.tracer, &self.parent);
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end_with_timestamp(until);
    }
}
