//! `switchyard-sidecar serve`: wires the parts together and runs until SIGTERM.
//!
//! Start-up loads every selected model version before the ports open (a connection that
//! succeeds is served), then prints one JSON line to stdout with the bound addresses, for
//! scripts and tests: `{"event":"ready","grpc":"127.0.0.1:50051","admin":"127.0.0.1:9464"}`.

use crate::admin::{self, Admin};
use crate::cache::Cache;
use crate::chaos::Chaos;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::models::ModelSet;
use crate::onnx::Runtime;
use crate::reload::Reloader;
use crate::service::Extractor;
use crate::telemetry::Telemetry;
use crate::listener::{self, Kind};
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_proto::features::v1::feature_extraction_service_server::FeatureExtractionServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A configured sidecar, with room for more gRPC services and admin routes (the schema
/// registry mounts itself this way).
pub struct Sidecar {
    config: Config,
    models: Arc<ModelSet>,
    chaos: Arc<Chaos>,
    grpc: tonic::service::Routes,
    admin: axum::Router,
    extra_metrics: Vec<admin::ExtraMetrics>,
    /// More HTTP listeners: (name in the ready line, address, routes).
    http: Vec<(&'static str, SocketAddr, axum::Router)>,
}

impl Sidecar {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            models: Arc::new(ModelSet::default()),
            chaos: Arc::new(Chaos::default()),
            grpc: tonic::service::Routes::default(),
            admin: axum::Router::new(),
            extra_metrics: Vec::new(),
            http: Vec::new(),
        }
    }

    /// The configuration it will run with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves `routes` on one more HTTP listener, reported in the ready line as
    /// `"<name>": "<address>"`. Handlers see the peer address (`ConnectInfo<SocketAddr>`).
    pub fn with_http_listener(mut self, name: &'static str, listen: SocketAddr, routes: axum::Router) -> Self {
        self.http.push((name, listen, routes));
        self
    }

    /// Serves more gRPC services on the same port:
    /// `sidecar.with_grpc_routes(|routes| routes.add_service(MyServer::new(svc)))`.
    pub fn with_grpc_routes(mut self, add: impl FnOnce(tonic::service::Routes) -> tonic::service::Routes) -> Self {
        self.grpc = add(self.grpc);
        self
    }

    /// Serves more routes on the admin port (they must not clash with the sidecar's own).
    pub fn with_admin_routes(mut self, routes: axum::Router) -> Self {
        self.admin = self.admin.merge(routes);
        self
    }

    /// A handle on the served versions, usable before `run` (e.g. by an admin route that
    /// merges the per-version state into a larger snapshot).
    pub fn versions(&self) -> Versions {
        Versions { models: Arc::clone(&self.models), chaos: Arc::clone(&self.chaos) }
    }

    /// Appends more metric families to `/metrics` on every scrape.
    pub fn with_metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.extra_metrics.push(Arc::new(render));
        self
    }

    pub async fn run(self) -> Result<()> {
        let Sidecar { config, models, chaos, grpc, admin: extra_admin, extra_metrics, http } = self;
        config.validate()?;
        let config = Arc::new(config);
        let runtime_config = config.runtime.clone();
        let runtime = tokio::task::spawn_blocking(move || Runtime::init(&runtime_config))
            .await?
            .map_err(anyhow::Error::msg)?;
        let runtime = Arc::new(runtime);
        let mut metrics = Metrics::new();
        // The feature cache (`[cache]`): its metrics only when it is on.
        let cache_metrics = if config.cache.enabled { metrics.register_cache() } else { Default::default() };
        let cache = Cache::new(&config.cache, config.image_limits(), cache_metrics).map_err(anyhow::Error::msg)?.map(Arc::new);
        let metrics = Arc::new(metrics);
        let (health, health_service) = tonic_health::server::health_reporter();
        let reloader = Arc::new(Reloader::new(
            Arc::clone(&runtime),
            Arc::clone(&config),
            Arc::clone(&models),
            Arc::clone(&metrics),
            health.clone(),
        ));

        // Signal handlers and the watcher exist before anything can be observed from outside,
        // so a SIGHUP or a file change right after the ready line is never lost.
        let shutdown = shutdown_signal()?;
        crate::watch::reload_on_sighup(Arc::clone(&reloader))?;
        let _watcher = if config.repository.watch {
            let debounce = Duration::from_millis(config.repository.watch_debounce_ms);
            Some(crate::watch::spawn(&config.repository.path, debounce, Arc::clone(&reloader))?)
        } else {
            None
        };

        // Redis (if any) connects while the models load; one that does not answer is logged,
        // naming it, and the sidecar starts without it.
        let connecting = async {
            if let Some(cache) = &cache {
                cache.connect().await;
            }
        };
        let (report, ()) = tokio::join!(reloader.reload("startup"), connecting);
        if models.routing().versions.is_empty() && config.repository.required {
            let mut why: Vec<String> = report.errors.clone();
            why.extend(report.rejected.iter().map(|r| format!("{}: {}", r.name, r.error)));
            if why.is_empty() {
                why.push("the repository has no model directories with a config.toml".into());
            }
            bail!(
                "no model version could be loaded from {}:\n  {}",
                config.repository.path.display(),
                why.join("\n  ")
            );
        }

        // Request traces, only with an endpoint (built here, on the runtime its channel needs).
        let telemetry = match &config.tracing.otlp_endpoint {
            Some(endpoint) => Some(Arc::new(Telemetry::start(endpoint, &config.tracing)?)),
            None => None,
        };
        let extractor = Extractor::new(Arc::clone(&models), Arc::clone(&chaos), Arc::clone(&metrics), &config, telemetry.clone(), cache);
        // Room above the image cap for the other fields, so an oversized image still gets
        // the precise INVALID_ARGUMENT rather than tonic's generic length error.
        let max_message = config.max_image_bytes.saturating_mul(2).saturating_add(1 << 20);
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchyard_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        for (i, endpoint) in config.endpoints.iter().enumerate() {
            if let Err(status) = models.routing().resolve(Some(&endpoint.default_version)) {
                bail!("`endpoints[{i}].default_version`: {}", status.message());
            }
        }
        // One router per listener: the same services, a different default version.
        let router = |extractor: Extractor| {
            grpc.clone()
                .add_service(FeatureExtractionServiceServer::new(extractor).max_decoding_message_size(max_message))
                .add_service(health_service.clone())
                .add_service(reflection_v1.clone())
                .add_service(reflection_v1alpha.clone())
                .prepare()
                .into_axum_router()
        };
        let endpoint_routers: Vec<_> =
            config.endpoints.iter().map(|e| router(extractor.with_default(&e.default_version))).collect();
        let grpc_router = router(extractor);
        let admin_router = admin::router(Admin {
            models: Arc::clone(&models),
            chaos: Arc::clone(&chaos),
            metrics: Arc::clone(&metrics),
            reloader: Arc::clone(&reloader),
            extra_metrics,
        })
        .merge(extra_admin)
        .merge(crate::console::router(config.envoy_admin));

        let grpc_listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (`listen`)", config.listen))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {} (`admin_listen`)", config.admin_listen))?;
        let mut endpoint_listeners = Vec::new();
        for (i, endpoint) in config.endpoints.iter().enumerate() {
            let listener = TcpListener::bind(endpoint.listen)
                .await
                .with_context(|| format!("cannot listen on {} (`endpoints[{i}].listen`)", endpoint.listen))?;
            endpoint_listeners.push(listener);
        }
        let mut http_listeners = Vec::new();
        for (name, listen, routes) in http {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (`{name}.listen`)"))?;
            http_listeners.push((name, listener, routes));
        }
        let grpc_addr = grpc_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        // Every listener under `[limits]` (connections, idle timeouts, HTTP/2 settings); see
        // `listener`.
        let (stop_tx, stop_rx) = watch::channel(false);
        let serve_grpc = |listener: TcpListener, router: axum::Router| {
            tokio::spawn(listener::serve(listener, router, config.limits.clone(), Kind::Grpc, stop_rx.clone()))
        };
        let mut endpoints = Vec::new();
        let mut grpc_servers = vec![serve_grpc(grpc_listener, grpc_router)];
        for ((endpoint, listener), router) in config.endpoints.iter().zip(endpoint_listeners).zip(endpoint_routers) {
            endpoints.push(serde_json::json!({ "default_version": endpoint.default_version, "grpc": listener.local_addr()?.to_string() }));
            grpc_servers.push(serve_grpc(listener, router));
        }
        // HTTP servers hand the peer address to handlers that check it (Confluent writes), and
        // shed requests beyond `limits.http_max_concurrent_requests`.
        let serve_http = |listener: TcpListener, router: axum::Router| {
            let router = listener::shed(router, config.limits.http_max_concurrent_requests);
            tokio::spawn(listener::serve(listener, router, config.limits.clone(), Kind::Http, stop_rx.clone()))
        };
        let mut http_servers = vec![serve_http(admin_listener, admin_router)];
        let mut http_addrs = serde_json::Map::new();
        for (name, listener, routes) in http_listeners {
            http_addrs.insert(name.to_owned(), listener.local_addr()?.to_string().into());
            http_servers.push(serve_http(listener, routes));
        }
        tracing::info!(grpc = %grpc_addr, admin = %admin_addr, endpoints = endpoints.len(), "sidecar ready");
        let mut ready = serde_json::json!({
            "event": "ready",
            "grpc": grpc_addr.to_string(),
            "admin": admin_addr.to_string(),
            "endpoints": endpoints,
        });
        if let Some(fields) = ready.as_object_mut() {
            fields.extend(http_addrs);
        }
        println!("{ready}");

        let signal = shutdown.await;
        tracing::info!(signal, drain_timeout_ms = config.drain_timeout_ms, "draining: no new connections, finishing in-flight requests");
        health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        health.set_service_status(crate::service::SERVICE_NAME, tonic_health::ServingStatus::NotServing).await;
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(
            Duration::from_millis(config.drain_timeout_ms),
            futures::future::join_all(grpc_servers),
        )
        .await;
        match drained {
            Ok(results) => {
                for result in results {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "gRPC server task failed");
                    }
                }
                tracing::info!("drained; exiting");
            }
            Err(_) => tracing::warn!(drain_timeout_ms = config.drain_timeout_ms, "drain timeout reached; exiting with requests in flight"),
        }
        for server in http_servers {
            server.abort();
        }
        if let Some(telemetry) = telemetry {
            // Sends the spans still queued; it blocks, so not on a runtime worker.
            if let Err(e) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
                tracing::warn!(error = %e, "flushing request traces failed");
            }
        }
        Ok(())
    }
}

/// The served model versions, cheap to clone.
#[derive(Clone)]
pub struct Versions {
    models: Arc<ModelSet>,
    chaos: Arc<Chaos>,
}

impl Versions {
    /// What `GET /v1/models` returns.
    pub fn snapshot(&self) -> crate::models::ModelsSnapshot {
        self.models.snapshot(&self.chaos.list())
    }
}

/// Registers for SIGTERM and SIGINT now; the future resolves with the first one's name.
fn shutdown_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
