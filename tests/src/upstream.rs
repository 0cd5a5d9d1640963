//! A real tonic `features.v1` server that says who answered (`model_version` is its
//! name) and counts every request it receives, whatever the method, so a test can
//! prove that a request never reached it. Its latency and failures can be set.

use http::HeaderMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_proto::features::v1::feature_extraction_service_server::{
    FeatureExtractionService, FeatureExtractionServiceServer,
};
use switchyard_proto::features::v1::{
    extract_batch_item, ExtractBatchItem, ExtractBatchResponse, ExtractRealtimeRequest,
    ExtractRealtimeResponse,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    by_path: Mutex<HashMap<String, u64>>,
    last_headers: Mutex<Option<HeaderMap>>,
    delay_ms: AtomicU64,
    /// gRPC code to fail with, or -1.
    fail_code: AtomicI32,
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    state: Arc<State>,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Starts the server on a free port of the current tokio runtime.
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, 0).await.expect("bind upstream")
    }

    /// Starts the server on `127.0.0.1:port` (0: any free port).
    pub async fn start_on(name: &str, port: u16) -> std::io::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let state = Arc::new(State { fail_code: AtomicI32::new(-1), ..State::default() });
        let counting = state.clone();
        let count = tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
            *counting.by_path.lock().unwrap().entry(req.uri().path().to_owned()).or_default() += 1;
            *counting.last_headers.lock().unwrap() = Some(req.headers().clone());
            req
        });
        let service = Echo { name: name.to_owned(), state: state.clone() };
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream_incoming(listener);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .layer(count)
                .add_service(FeatureExtractionServiceServer::new(service))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Upstream { name: name.to_owned(), port: addr.port(), state, _stop: stop })
    }

    /// Requests received, all methods.
    pub fn requests(&self) -> u64 {
        self.state.by_path.lock().unwrap().values().sum()
    }

    /// Requests received for one `:path`.
    pub fn requests_to(&self, path: &str) -> u64 {
        self.state.by_path.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Headers of the most recent request.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.state.last_headers.lock().unwrap().clone()
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every answer fails with this code (`None` restores success).
    pub fn set_failure(&self, code: Option<tonic::Code>) {
        self.state.fail_code.store(code.map_or(-1, |c| c as i32), Ordering::Relaxed);
    }
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((conn, l))
    })
}

struct Echo {
    name: String,
    state: Arc<State>,
}

#[tonic::async_trait]
impl FeatureExtractionService for Echo {
    async fn extract_realtime(
        &self,
        request: Request<ExtractRealtimeRequest>,
    ) -> Result<Response<ExtractRealtimeResponse>, Status> {
        let delay = self.state.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let code = self.state.fail_code.load(Ordering::Relaxed);
        if code >= 0 {
            return Err(Status::new(tonic::Code::from(code), format!("{} fails on purpose", self.name)));
        }
        let req = request.into_inner();
        Ok(Response::new(ExtractRealtimeResponse {
            request_id: req.request_id,
            model_version: self.name.clone(),
            ..Default::default()
        }))
    }

    async fn extract_batch(
        &self,
        request: Request<tonic::Streaming<ExtractRealtimeRequest>>,
    ) -> Result<Response<ExtractBatchResponse>, Status> {
        let mut stream = request.into_inner();
        let mut items = Vec::new();
        while let Some(req) = stream.message().await? {
            items.push(ExtractBatchItem {
                result: Some(extract_batch_item::Result::Response(ExtractRealtimeResponse {
                    request_id: req.request_id,
                    model_version: self.name.clone(),
                    ..Default::default()
                })),
            });
        }
        Ok(Response::new(ExtractBatchResponse { items }))
    }
}
