//! Serving one listener's connections under `[limits]`, for the gRPC ports and the HTTP ones
//! alike: what bounds a client that opens connections or streams and then does nothing.
//!
//! * At most `max_connections` connections per listener are served; further ones wait in the
//!   kernel's accept backlog until one closes (nothing is read from them, nothing allocated).
//! * A connection with no request in flight for `idle_timeout_ms` is closed: HTTP/2 gets a
//!   GOAWAY, HTTP/1 is closed between requests, and one that never sent a request (not even
//!   the HTTP/2 preface) is closed too. After [`CLOSE_GRACE`] a peer that does not finish the
//!   close is dropped.
//! * A request whose body is still arriving but has received nothing for
//!   `stream_idle_timeout_ms` fails (its handler sees a body error: gRPC answers with a
//!   status, HTTP with 4xx), so idle streams do not keep a connection busy forever.
//! * HTTP/2 advertises `http2_max_concurrent_streams` (SETTINGS_MAX_CONCURRENT_STREAMS;
//!   a stream beyond it is refused with RST_STREAM(REFUSED_STREAM)) and
//!   `http2_max_header_list_size`.
//! * HTTP listeners (admin, snapshot, Confluent) answer at most
//!   `http_max_concurrent_requests` at a time each ([`shed`]); beyond it `503` at once.
//!
//! Handlers see the peer address as `ConnectInfo<SocketAddr>`, as with axum's own server.

use crate::config::LimitsConfig;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How long a connection being closed (idle) may take to finish the close before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What kind of traffic a listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// gRPC (HTTP/2): `TCP_NODELAY` on every connection.
    Grpc,
    /// HTTP/1 and HTTP/2 (admin, snapshot, Confluent).
    Http,
}

/// Serves `router` on `listener` until `stop` turns true, then closes every connection
/// gracefully (in-flight requests finish) and returns once all are closed.
pub async fn serve(listener: TcpListener, router: axum::Router, limits: LimitsConfig, kind: Kind, stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size);
    let builder = Arc::new(builder);
    let stopped = stopped(stop.clone());
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stopped => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        if kind == Kind::Grpc {
            let _ = tcp.set_nodelay(true);
        }
        let connection = Connection {
            builder: Arc::clone(&builder),
            router: router.clone(),
            limits: limits.clone(),
            peer,
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            connection.run(tcp).await;
            drop(permit);
        });
    }
    // New connections are refused from now on; every open one holds a slot until it is closed.
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// As axum's server: errors about one connection are skipped, others (out of file
/// descriptors) pause accepting for a second rather than spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    router: axum::Router,
    limits: LimitsConfig,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        let Connection { builder, router, limits, peer, stop } = self;
        let activity = Arc::new(Activity::new());
        let stream_idle = Duration::from_millis(limits.stream_idle_timeout_ms);
        let tracked = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let busy = tracked.begin();
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|body| Body::new(IdleBody::new(body, stream_idle)));
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Busy { body, _busy: busy })))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        tokio::pin!(conn);
        let idle = activity.idle_for(Duration::from_millis(limits.idle_timeout_ms));
        tokio::pin!(idle);
        let stopped = stopped(stop);
        tokio::pin!(stopped);
        let mut closing = false;
        let mut stopping = false;
        // Armed when an idle close starts.
        let grace = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = &mut idle, if !closing && !stopping => {
                    tracing::debug!(%peer, idle_timeout_ms = limits.idle_timeout_ms, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
                }
                () = &mut stopped, if !stopping => {
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
                () = &mut grace, if closing => {
                    tracing::debug!(%peer, "an idle connection did not finish closing; dropped");
                    return;
                }
            }
        }
    }
}

/// Requests in flight on one connection, and since when there have been none.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self { in_flight: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()), changed: Notify::new() }
    }

    /// A request starts; it ends when the guard (held by its response body) is dropped.
    fn begin(self: &Arc<Self>) -> BusyGuard {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.changed.notify_one();
        }
        BusyGuard(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                self.changed.notified().await;
                continue;
            }
            let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = since + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *activity.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent or dropped.
struct Busy {
    body: Body,
    _busy: BusyGuard,
}

impl HttpBody for Busy {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once nothing has arrived for `timeout` while more is due.
struct IdleBody {
    body: Incoming,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self { body, timeout, timer: None }
    }
}

/// The error a request body ends with when it stalls.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled: nothing received for {0:?} (limits.stream_idle_timeout_ms)")]
pub struct BodyStalled(Duration);

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Sheds load on an HTTP listener: at most `max` requests are handled at a time; one more is
/// answered `503 Service Unavailable` (with `Retry-After: 1`) at once, before its handler runs.
pub fn shed(router: axum::Router, max: usize) -> axum::Router {
    let slots = Arc::new(Semaphore::new(max));
    router.layer(axum::middleware::from_fn(move |request: Request<Body>, next: axum::middleware::Next| {
        let slot = Arc::clone(&slots).try_acquire_owned();
        async move {
            match slot {
                Ok(_slot) => next.run(request).await,
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!("overloaded: {max} requests in progress on this listener (limits.http_max_concurrent_requests); retry later\n"),
                )
                    .into_response(),
            }
        }
    }))
}
