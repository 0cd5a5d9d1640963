//! The shared tier: a Redis that several sidecars read and fill, behind a circuit.
//!
//! Redis is an optimisation, so it may never fail or hold up a request:
//!
//! * every command has `cache.redis_timeout_ms`; past it, or on any error, the request goes
//!   on as a miss;
//! * the first failure opens the circuit: one warning line naming the Redis, the connection
//!   dropped, and requests skip Redis altogether (no waiting, no error) while one background
//!   task reconnects after 1 s, then 2 s, 4 s, … up to 30 s;
//! * a reconnection must also answer `PING`; the circuit closes on the first command that
//!   then succeeds, with one line saying Redis is back, and the back-off starts again at 1 s.
//!   A Redis that accepts connections but never answers commands costs one request's timeout
//!   per back-off period, and logs nothing more.
//!
//! Every failure counts in `cache_redis_errors_total{kind}`: `connect`, `timeout`, `command`,
//! or `corrupt` (a value that does not decode: a miss, the circuit stays closed).

use super::key::Key;
use super::value::Features;
use crate::metrics::CacheMetrics;
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Connecting happens off the request path, so it may take longer than a lookup.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys are namespaced, so the Redis can hold other things (and `redis-cli --scan` finds
/// these).
const KEY_PREFIX: &str = "switchyard:features:";

pub struct Shared {
    client: redis::Client,
    /// The URL with any password hidden, for logs.
    shown: String,
    timeout: Duration,
    ttl_seconds: u64,
    metrics: CacheMetrics,
    state: Mutex<State>,
    corrupt_logged: AtomicBool,
}

struct State {
    /// The connection, numbered; `None` while the circuit is open (or before the first
    /// connection): requests skip Redis.
    conn: Option<(u64, MultiplexedConnection)>,
    connections: u64,
    /// An outage was logged and no command has succeeded since.
    down: bool,
    reconnecting: bool,
    /// The wait before the next reconnection attempt.
    backoff: Duration,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Features),
    Miss,
    /// Redis is down (circuit open) or failed this time: neither hit nor miss.
    Unavailable,
}

impl Shared {
    /// A client for `url` (checked at config load); connects later (see [`Shared::connect`]).
    pub fn new(url: &str, timeout: Duration, ttl_seconds: u64, metrics: CacheMetrics) -> Result<Arc<Shared>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("`cache.redis`: {e}"))?;
        Ok(Arc::new(Shared {
            client,
            shown: crate::config::redact_url(url),
            timeout,
            ttl_seconds,
            metrics,
            state: Mutex::new(State { conn: None, connections: 0, down: false, reconnecting: false, backoff: FIRST_BACKOFF }),
            corrupt_logged: AtomicBool::new(false),
        }))
    }

    /// The first connection, at start-up: a Redis that does not answer is logged (naming it)
    /// and retried in the background; the sidecar serves without it meanwhile.
    pub async fn connect(self: &Arc<Self>) {
        match self.open().await {
            Ok(conn) => {
                self.install(conn);
                tracing::info!(redis = %self.shown, "feature cache: sharing through Redis");
            }
            Err(why) => self.failed(None, "connect", &why),
        }
    }

    /// A new connection that has answered `PING`.
    async fn open(&self) -> Result<MultiplexedConnection, String> {
        let wait = self.timeout.max(CONNECT_TIMEOUT);
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(wait)).set_response_timeout(Some(wait));
        let connecting = self.client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = match tokio::time::timeout(wait * 2, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no connection within {} ms", (wait * 2).as_millis())),
        };
        match tokio::time::timeout(wait, redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(format!("PING failed: {e}")),
            Err(_) => Err(format!("no answer to PING within {} ms", wait.as_millis())),
        }
    }

    fn install(&self, conn: MultiplexedConnection) {
        if let Ok(mut state) = self.state.lock() {
            state.connections += 1;
            state.conn = Some((state.connections, conn));
        }
    }

    /// The connection, unless the circuit is open.
    fn connection(&self) -> Option<(u64, MultiplexedConnection)> {
        self.state.lock().ok()?.conn.clone()
    }

    pub async fn get(self: &Arc<Self>, key: &Key) -> Lookup {
        let Some((id, mut conn)) = self.connection() else { return Lookup::Unavailable };
        let mut command = redis::cmd("GET");
        command.arg(redis_key(key));
        let get = command.query_async::<Option<Vec<u8>>>(&mut conn);
        let bytes = match tokio::time::timeout(self.timeout, get).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                self.failed(Some(id), "command", &e.to_string());
                return Lookup::Unavailable;
            }
            Err(_) => {
                self.failed(Some(id), "timeout", &format!("GET unanswered after {} ms", self.timeout.as_millis()));
                return Lookup::Unavailable;
            }
        };
        self.succeeded();
        let Some(bytes) = bytes else { return Lookup::Miss };
        match Features::decode(&bytes) {
            Ok(features) => Lookup::Hit(features),
            Err(e) => {
                // A data problem, not an outage: the entry is recomputed and overwritten.
                self.metrics.redis_error("corrupt");
                if !self.corrupt_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.shown, key = %redis_key(key), error = %e, "feature cache: a Redis value does not decode; treated as a miss (logged once)");
                }
                Lookup::Miss
            }
        }
    }

    /// Stores an entry in the background: the response never waits for it.
    pub fn put(self: &Arc<Self>, key: &Key, value: Vec<u8>) {
        let Some((id, mut conn)) = self.connection() else { return };
        let this = Arc::clone(self);
        let key = redis_key(key);
        tokio::spawn(async move {
            let mut command = redis::cmd("SET");
            command.arg(&key).arg(value).arg("EX").arg(this.ttl_seconds);
            let set = command.query_async::<()>(&mut conn);
            match tokio::time::timeout(this.timeout, set).await {
                Ok(Ok(())) => this.succeeded(),
                Ok(Err(e)) => this.failed(Some(id), "command", &e.to_string()),
                Err(_) => this.failed(Some(id), "timeout", &format!("SET unanswered after {} ms", this.timeout.as_millis())),
            }
        });
    }

    /// A command succeeded: closes the circuit if it was open.
    fn succeeded(&self) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.down {
            state.down = false;
            state.backoff = FIRST_BACKOFF;
            tracing::info!(redis = %self.shown, "feature cache: Redis answers again; sharing through it");
        }
    }

    /// A failure of connection `id` (`None`: connecting): counted, and unless that
    /// connection was already replaced, the circuit opens.
    fn failed(self: &Arc<Self>, id: Option<u64>, kind: &'static str, why: &str) {
        self.metrics.redis_error(kind);
        let Ok(mut state) = self.state.lock() else { return };
        if id.is_some() && state.conn.as_ref().map(|(n, _)| *n) != id {
            return;
        }
        state.conn = None;
        if !state.down {
            state.down = true;
            tracing::warn!(
                redis = %self.shown,
                error = why,
                retry_in_ms = state.backoff.as_millis() as u64,
                "feature cache: Redis is unavailable; serving without it (requests are not failed) and reconnecting in the background"
            );
        }
        if !state.reconnecting {
            state.reconnecting = true;
            tokio::spawn(Arc::clone(self).reconnect());
        }
    }

    /// Tries again after each back-off until a connection answers.
    async fn reconnect(self: Arc<Self>) {
        loop {
            let wait = match self.state.lock() {
                Ok(mut state) => {
                    let wait = state.backoff;
                    state.backoff = (wait * 2).min(MAX_BACKOFF);
                    wait
                }
                Err(_) => return,
            };
            tokio::time::sleep(wait).await;
            match self.open().await {
                Ok(conn) => {
                    self.install(conn);
                    if let Ok(mut state) = self.state.lock() {
                        state.reconnecting = false;
                    }
                    tracing::debug!(redis = %self.shown, "feature cache: reconnected to Redis");
                    return;
                }
                Err(why) => {
                    self.metrics.redis_error("connect");
                    tracing::debug!(redis = %self.shown, error = why, "feature cache: Redis still unavailable");
                }
            }
        }
    }
}

fn redis_key(key: &Key) -> String {
    format!("{KEY_PREFIX}{}", key.hex())
}
