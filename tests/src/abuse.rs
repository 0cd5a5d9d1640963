//! Abusive clients and what the abuse tests measure while they run.
//!
//! * Memory: a process's resident set (`/proc/<pid>/status`), and the linear memory of every
//!   Wasm VM in an Envoy ([`wasm_memory`]; Envoy's stats have no such figure).
//! * [`grpc_flood`]: unary gRPC calls as fast as a raw HTTP/2 client (the `h2` crate) can
//!   send them, each with its own user key, spread over several paths.
//! * [`OpenLoop`]: gRPC calls at a fixed rate whatever the server does, each one's latency
//!   counted from when it was due (no coordinated omission).
//! * [`IdleStreams`]: HTTP/2 connections whose streams send headers and then nothing; and
//!   [`refused_streams`], a hand-framed client that ignores the server's SETTINGS.
//! * [`http_flood`]: HTTP/1.1 keep-alive clients sending back-to-back requests.

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes as MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// A process's resident set size (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// A process's peak resident set size (`VmHWM`), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status (is the process gone?)"))
}

/// The Wasm VMs' linear memories in a process running V8 (Envoy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WasmMemory {
    /// How many linear memories (one per VM: Envoy's main thread and each worker's).
    pub vms: usize,
    /// Their sizes added up (each VM's `memory.size`, in bytes): a memory only ever grows,
    /// so this is the high-water mark of what the filters allocated.
    pub size: u64,
    /// Of that, the bytes resident (pages the VMs have touched).
    pub resident: u64,
}

/// V8 reserves 8 GiB of address space per 32-bit Wasm memory: the accessible part (read-write)
/// followed by a guard region (no access). Envoy 1.40's stats count VMs
/// (`wasm.envoy.wasm.runtime.v8.active`) but not their memory, so it is read from
/// `/proc/<pid>/smaps`: each read-write anonymous mapping immediately followed by a
/// no-access one, the two making up 8 GiB.
pub fn wasm_memory(pid: u32) -> WasmMemory {
    const RESERVATION: u64 = 8 << 30;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_else(|e| panic!("/proc/{pid}/smaps: {e}"));
    struct Map {
        start: u64,
        end: u64,
        perms: String,
        anonymous: bool,
        rss: u64,
    }
    let mut maps: Vec<Map> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|(a, _)| !a.is_empty() && a.bytes().all(|c| c.is_ascii_hexdigit())) {
            let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
            let perms = fields.next().unwrap_or("").to_owned();
            let path = fields.nth(3).unwrap_or("");
            maps.push(Map { start, end, perms, anonymous: path.is_empty(), rss: 0 });
        } else if first == "Rss:" {
            if let (Some(m), Some(kib)) = (maps.last_mut(), fields.next().and_then(|v| v.parse::<u64>().ok())) {
                m.rss = kib * 1024;
            }
        }
    }
    let mut memory = WasmMemory { vms: 0, size: 0, resident: 0 };
    for pair in maps.windows(2) {
        let (rw, guard) = (&pair[0], &pair[1]);
        if rw.anonymous
            && guard.anonymous
            && rw.perms == "rw-p"
            && guard.perms == "---p"
            && rw.end == guard.start
            && guard.end - rw.start == RESERVATION
        {
            memory.vms += 1;
            memory.size += rw.end - rw.start;
            memory.resident += rw.rss;
        }
    }
    memory
}

/// A `features.v1.ExtractRealtimeRequest` with only `request_id` set, as one gRPC frame.
pub fn grpc_frame(request_id: &str) -> Bytes {
    use prost::Message;
    let message = switchyard_proto::features::v1::ExtractRealtimeRequest { request_id: request_id.into(), ..Default::default() };
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

/// What a flood got back.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Calls answered, by `grpc-status` (`"0"` is OK; `"http <n>"` without one, `"reset"`
    /// or `"error"` when the stream or connection failed).
    pub statuses: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn total(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.get("0").copied().unwrap_or(0)
    }

    pub fn per_second(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, other: &FloodReport) {
        for (k, v) in &other.statuses {
            *self.statuses.entry(k.clone()).or_default() += v;
        }
    }
}

/// The calls of a [`grpc_flood`]: call `i` goes to `paths[i % paths.len()]` with
/// `key_header: <key_prefix><i>`, so every call carries a key no other call has.
#[derive(Clone, Debug)]
pub struct Keyed {
    pub paths: Vec<String>,
    pub key_header: String,
    pub key_prefix: String,
    /// Call `i` names `authorities[i % len]` as its `:authority` (virtual host); empty: the
    /// address it is sent to.
    pub authorities: Vec<String>,
}

/// Sends the calls numbered `keys` to `addr` over `connections` HTTP/2 connections, each
/// keeping `streams` calls in flight, and waits for every answer.
pub async fn grpc_flood(addr: SocketAddr, calls: &Keyed, keys: std::ops::Range<u64>, connections: usize, streams: usize) -> FloodReport {
    let started = Instant::now();
    let body = grpc_frame("flood");
    let mut tasks = Vec::new();
    for c in 0..connections as u64 {
        let calls = calls.clone();
        let body = body.clone();
        let keys = keys.clone();
        let step = connections as u64;
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            let _ = tcp.set_nodelay(true);
            let (send, conn) = h2::client::handshake(tcp).await.unwrap_or_else(|e| panic!("HTTP/2 handshake with {addr}: {e}"));
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut report = FloodReport::default();
            let mut next = keys.start + c;
            let mut in_flight = FuturesUnordered::new();
            loop {
                while in_flight.len() < streams && next < keys.end {
                    in_flight.push(call(send.clone(), addr, &calls, next, body.clone()));
                    next += step;
                }
                match in_flight.next().await {
                    Some(status) => *report.statuses.entry(status).or_default() += 1,
                    None => break,
                }
            }
            report
        }));
    }
    let mut report = FloodReport::default();
    for t in tasks {
        report.add(&t.await.expect("flood connection task"));
    }
    report.elapsed = started.elapsed();
    report
}

fn call(send: h2::client::SendRequest<Bytes>, addr: SocketAddr, calls: &Keyed, i: u64, body: Bytes) -> impl std::future::Future<Output = String> {
    let path = &calls.paths[(i % calls.paths.len() as u64) as usize];
    let authority = match calls.authorities.len() as u64 {
        0 => addr.to_string(),
        n => calls.authorities[(i % n) as usize].clone(),
    };
    let request = http::Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(calls.key_header.as_str(), format!("{}{i}", calls.key_prefix))
        .body(())
        .expect("request");
    async move {
        let Ok(mut send) = send.ready().await else { return "error".into() };
        let Ok((response, mut stream)) = send.send_request(request, false) else { return "error".into() };
        if stream.send_data(body, true).is_err() {
            return "reset".into();
        }
        let Ok(response) = response.await else { return "reset".into() };
        if let Some(status) = response.headers().get("grpc-status") {
            return status.to_str().unwrap_or("?").to_owned();
        }
        let http_status = response.status();
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            match data {
                Ok(d) => {
                    let _ = body.flow_control().release_capacity(d.len());
                }
                Err(_) => return "reset".into(),
            }
        }
        match body.trailers().await {
            Ok(Some(t)) => t.get("grpc-status").and_then(|s| s.to_str().ok()).unwrap_or("?").to_owned(),
            Ok(None) => format!("http {}", http_status.as_u16()),
            Err(_) => "reset".into(),
        }
    }
}

/// One call of an [`open_loop`] load.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was due, from the start of the load.
    pub due: Duration,
    /// From when it was due to its answer.
    pub latency: Duration,
    /// From when it was sent (the load generator may be late on a busy machine) to its answer.
    pub since_sent: Duration,
    pub code: tonic::Code,
}

/// `rate` calls a second for `duration`, each with `image`, over `connections` tonic
/// channels used in turn: a call leaves when due whatever happened to earlier ones.
pub struct OpenLoop {
    ends: tokio::time::Instant,
    sender: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<Sample>>>,
}

impl OpenLoop {
    pub async fn start(url: &str, rate: f64, duration: Duration, image: Vec<u8>, connections: usize) -> OpenLoop {
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            clients.push(crate::client::connect(url).await);
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let total = (duration.as_secs_f64() * rate) as u64;
        let start = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            let mut calls = Vec::with_capacity(total as usize);
            for i in 0..total {
                let due = interval.mul_f64(i as f64);
                tokio::time::sleep_until(start + due).await;
                let mut client = clients[i as usize % clients.len()].clone();
                let image = image.clone();
                calls.push(tokio::spawn(async move {
                    let sent = tokio::time::Instant::now();
                    let code = match crate::client::extract_image(&mut client, &[], image).await {
                        Ok(_) => tonic::Code::Ok,
                        Err(status) => status.code(),
                    };
                    let now = tokio::time::Instant::now();
                    Sample { due, latency: (now - start).saturating_sub(due), since_sent: now - sent, code }
                }));
            }
            calls
        });
        OpenLoop { ends: start + duration, sender }
    }

    /// When the last call is due.
    pub fn ends_at(&self) -> tokio::time::Instant {
        self.ends
    }

    /// Every call's sample, once all are answered.
    pub async fn finish(self) -> Vec<Sample> {
        let calls = self.sender.await.expect("open-loop sender");
        let mut samples = Vec::with_capacity(calls.len());
        for c in calls {
            samples.push(c.await.expect("open-loop call"));
        }
        samples
    }
}

/// The `p`-quantile (0..=1) of `values` (sorted here), or zero when empty.
pub fn quantile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let i = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
    values[i]
}

/// Sequential calls' latencies (`n` calls with `image` on one connection).
pub async fn closed_loop_latencies(url: &str, n: usize, image: &[u8]) -> Vec<Duration> {
    let mut client = crate::client::connect(url).await;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        crate::client::extract_image(&mut client, &[], image.to_vec()).await.unwrap_or_else(|s| panic!("unloaded call failed: {s:?}"));
        latencies.push(started.elapsed());
    }
    latencies
}

/// What one idle connection saw.
#[derive(Clone, Debug, Default)]
pub struct IdleConnection {
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS as the client last read it.
    pub max_streams: usize,
    /// Streams whose headers the client sent (the `h2` client holds back any beyond the
    /// server's limit).
    pub opened: usize,
    /// Streams the server refused (RST_STREAM(REFUSED_STREAM): sent before the client knew
    /// the server's limit, e.g. while the connection waited in the accept backlog).
    pub refused: usize,
    /// Streams the server ended otherwise (an answer or a reset) while their body was still due.
    pub ended: usize,
    /// When the first stream was ended, from the start of the attack.
    pub first_ended: Option<Duration>,
    /// When the server closed the connection, from the start of the attack.
    pub closed: Option<Duration>,
}

/// `connections` HTTP/2 connections each opening up to `streams` gRPC streams that send
/// their headers and then nothing; with `streams == 0`, connections that only do the
/// HTTP/2 handshake. Runs until dropped; [`IdleStreams::report`] says what each saw.
pub struct IdleStreams {
    connections: Vec<Arc<Mutex<IdleConnection>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl IdleStreams {
    pub async fn open(addr: SocketAddr, path: &str, connections: usize, streams: usize) -> IdleStreams {
        let started = Instant::now();
        let mut states = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let state = Arc::new(Mutex::new(IdleConnection::default()));
            states.push(state.clone());
            let path = path.to_owned();
            tasks.push(tokio::spawn(async move {
                let Ok(tcp) = TcpStream::connect(addr).await else { return };
                let Ok((send, conn)) = h2::client::handshake(tcp).await else { return };
                let closed = state.clone();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                    closed.lock().unwrap().closed = Some(started.elapsed());
                });
                // The server's SETTINGS first, so that the client knows its limit.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut held = Vec::new();
                let mut waiting = FuturesUnordered::new();
                let mut opened: usize = 0;
                // One handle throughout: `ready` waits only for the stream this handle sent last.
                let mut sender = Some(send.clone());
                for _ in 0..streams {
                    let request = http::Request::post(format!("http://{addr}{path}"))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(())
                        .expect("request");
                    // At the server's limit the client holds the last stream back (pending
                    // open) and waits for one to end: stop there, that one not sent.
                    let Some(handle) = sender.take() else { break };
                    let Ok(Ok(mut ready)) = tokio::time::timeout(Duration::from_millis(300), handle.ready()).await else {
                        opened = opened.saturating_sub(1);
                        break;
                    };
                    let Ok((response, stream)) = ready.send_request(request, false) else { break };
                    sender = Some(ready);
                    // Let the connection task open it (or find the limit reached).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    opened += 1;
                    // The send half stays open (and idle) for as long as the test holds it.
                    held.push(stream);
                    waiting.push(response);
                }
                {
                    let mut s = state.lock().unwrap();
                    s.max_streams = send.current_max_send_streams();
                    s.opened = opened;
                }
                while let Some(answer) = waiting.next().await {
                    let mut s = state.lock().unwrap();
                    match answer {
                        Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => s.refused += 1,
                        _ => {
                            s.ended += 1;
                            s.first_ended.get_or_insert(started.elapsed());
                        }
                    }
                    s.max_streams = send.current_max_send_streams();
                }
                let _ = driver.await;
                drop(held);
            }));
        }
        IdleStreams { connections: states, tasks, started }
    }

    /// What every connection saw so far.
    pub fn report(&self) -> Vec<IdleConnection> {
        self.connections.iter().map(|c| c.lock().unwrap().clone()).collect()
    }

    /// Time since the attack started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for IdleStreams {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a client that ignores the server's SETTINGS got.
#[derive(Clone, Debug, Default)]
pub struct RawOutcome {
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server advertised.
    pub max_streams: Option<u32>,
    /// Streams the server reset with REFUSED_STREAM.
    pub refused: usize,
    /// Streams reset with another code.
    pub other_resets: usize,
    /// A GOAWAY's error code, if the server sent one.
    pub goaway: Option<u32>,
}

/// Opens `streams` gRPC streams (headers, no body) on one connection at once, framed by hand
/// so that nothing holds them back whatever the server advertises, and reads what comes back
/// for `listen`.
pub async fn refused_streams(addr: SocketAddr, path: &str, streams: u32, listen: Duration) -> RawOutcome {
    let mut tcp = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    frame(&mut out, 0x4, 0, 0, &[]); // SETTINGS, none
    for i in 0..streams {
        let mut block = Vec::new();
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")] {
            // Literal header field without indexing, new name, no Huffman coding.
            block.push(0x00);
            hpack_string(&mut block, name.as_bytes());
            hpack_string(&mut block, value.as_bytes());
        }
        frame(&mut out, 0x1, 0x4, 2 * i + 1, &block); // HEADERS, END_HEADERS
    }
    tcp.write_all(&out).await.expect("write frames");
    let mut outcome = RawOutcome::default();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + listen;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x4 if flags & 0x1 == 0 => {
                    for setting in payload.chunks_exact(6) {
                        if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                            outcome.max_streams = Some(u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]));
                        }
                    }
                    let mut ack = Vec::new();
                    frame(&mut ack, 0x4, 0x1, 0, &[]);
                    let _ = tcp.write_all(&ack).await;
                }
                0x3 if payload.len() == 4 => {
                    if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) == 0x7 {
                        outcome.refused += 1;
                    } else {
                        outcome.other_resets += 1;
                    }
                }
                0x7 if payload.len() >= 8 => {
                    outcome.goaway = Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
                }
                _ => {}
            }
        }
    }
    outcome
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK string literal (no Huffman coding), lengths under 127.
fn hpack_string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "short strings only");
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// What an HTTP flood got back.
#[derive(Clone, Debug, Default)]
pub struct HttpFloodReport {
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connections that failed (refused, reset, closed early), each counted once.
    pub failures: u64,
    /// Each answer's latency, by status.
    pub latencies: BTreeMap<u16, Vec<Duration>>,
}

/// HTTP/1.1 keep-alive clients on `127.0.0.1:port`: for each `(method, path, clients)`,
/// `clients` connections sending that request (no body) back to back until `stop` is set (a
/// failed connection reconnects). They run on a thread of their own, like another process
/// would, so that the test's own clients are not queued behind them; joined, the thread
/// returns each request kind's report.
pub fn http_flood(port: u16, requests: &[(&str, &str, usize)], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<HttpFloodReport>> {
    let requests: Vec<(String, String, usize)> = requests.iter().map(|(m, p, n)| (m.to_string(), p.to_string(), *n)).collect();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("flood runtime");
        runtime.block_on(async move {
            let floods = requests.into_iter().map(|(method, path, clients)| flood_one(port, method, path, clients, stop.clone()));
            futures::future::join_all(floods).await
        })
    })
}

async fn flood_one(port: u16, method: String, path: String, clients: usize, stop: Arc<AtomicBool>) -> HttpFloodReport {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (method, path, stop) = (method.clone(), path.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = HttpFloodReport::default();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await else {
                    report.failures += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n");
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    if tcp.write_all(request.as_bytes()).await.is_err() {
                        report.failures += 1;
                        break;
                    }
                    match read_response(&mut tcp, &mut buf).await {
                        Some(status) => {
                            *report.statuses.entry(status).or_default() += 1;
                            report.latencies.entry(status).or_default().push(started.elapsed());
                        }
                        None => {
                            report.failures += 1;
                            break;
                        }
                    }
                }
            }
            report
        }));
    }
    let mut report = HttpFloodReport::default();
    for t in tasks {
        let r = t.await.expect("flood client");
        report.failures += r.failures;
        for (k, v) in r.statuses {
            *report.statuses.entry(k).or_default() += v;
        }
        for (k, v) in r.latencies {
            report.latencies.entry(k).or_default().extend(v);
        }
    }
    report
}

/// Reads one response with a `content-length` body; its status, or `None` when the
/// connection fails or closes, or the response has no length.
async fn read_response(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Option<u16> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())?;
            while buf.len() < end + 4 + length {
                let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + length);
            return Some(status);
        }
        let n = tcp.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A gRPC upstream that answers every call on any path at once (an `ExtractRealtimeResponse`
/// naming it, `grpc-status: 0`), with the `h2` crate: as little cost per call as a real
/// server can have, so that a load measures what is in front of it.
pub struct InstantUpstream {
    pub name: String,
    pub port: u16,
    calls: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl InstantUpstream {
    pub async fn start(name: &str) -> InstantUpstream {
        use prost::Message;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let message = switchyard_proto::features::v1::ExtractRealtimeResponse { model_version: name.into(), ..Default::default() }.encode_to_vec();
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(&message);
        let body = Bytes::from(framed);
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (body, counted) = (body.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                    while let Some(Ok((_request, mut respond))) = conn.accept().await {
                        counted.fetch_add(1, Ordering::Relaxed);
                        let head = http::Response::builder().status(200).header("content-type", "application/grpc").body(()).expect("response");
                        let Ok(mut stream) = respond.send_response(head, false) else { continue };
                        let _ = stream.send_data(body.clone(), false);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = stream.send_trailers(trailers);
                    }
                });
            }
        });
        InstantUpstream { name: name.to_owned(), port, calls, task }
    }

    /// Calls answered so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for InstantUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The local IPv4 addresses of this host's interfaces other than loopback (from
/// `/proc/net/fib_trie`'s host routes), for checking that a loopback-only port is not
/// reachable from them.
pub fn non_loopback_addresses() -> Vec<std::net::Ipv4Addr> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let mut out = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in trie.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ").and_then(|a| a.parse().ok()) {
            last = Some(addr);
        } else if t.contains("/32 host LOCAL") {
            if let Some(a) = last.filter(|a| !a.is_loopback() && !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

/// The local address a listening TCP socket on `port` is bound to, from `/proc/net/tcp`
/// (IPv4) and `/proc/net/tcp6`.
pub fn listening_addresses(port: u16) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, st (state) field 3; 0A is LISTEN.
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            if *state != "0A" || u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            if v6 {
                let mut bytes = [0u8; 16];
                for (i, word) in (0..4).map(|i| u32::from_str_radix(&addr[8 * i..8 * i + 8], 16).unwrap_or(0)).enumerate() {
                    bytes[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
                }
                out.push(std::net::IpAddr::from(bytes));
            } else if let Ok(word) = u32::from_str_radix(addr, 16) {
                out.push(std::net::IpAddr::from(word.to_le_bytes()));
            }
        }
    }
    out
}
