//! The soak's clients: open-loop traffic (a request leaves on schedule whatever happened to
//! earlier ones) with the mix a model service sees: user keys, A/B groups, declared and
//! undeclared schema revisions, `grpc-timeout` budgets and priorities. Every answer is kept.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_proto::features::v1::feature_extraction_service_client::FeatureExtractionServiceClient;
use switchyard_proto::features::v1::ExtractRealtimeRequest;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// A budget the mix makes too tight to be met on purpose (`grpc-timeout: 5m`).
pub const TIGHT_BUDGET: Duration = Duration::from_millis(5);
/// An ordinary budget: ample unless something is wrong.
const AMPLE_BUDGET: Duration = Duration::from_secs(20);
/// Client connections (Envoy's workers each take some).
const CONNECTIONS: usize = 4;

/// What kind of client sent a request: what the mix chose for it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Client {
    pub low_priority: bool,
    pub tight_budget: bool,
    /// The rotation of the page sent, which a model should recognise (0, 90, 180, 270).
    pub rotation: u32,
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent: Instant,
    pub done: Instant,
    pub client: Client,
    pub code: tonic::Code,
    pub message: String,
    /// The filter's `x-switchyard-decision`, when the request was routed.
    pub decision: String,
    /// The class the model gave the page (its label), on success.
    pub class: Option<String>,
    /// Times the call was retried because its connection closed before it was sent.
    pub retries: u32,
}

impl Sample {
    pub fn latency_ms(&self) -> f64 {
        (self.done - self.sent).as_secs_f64() * 1000.0
    }
}

pub struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    rate: Arc<AtomicU32>,
    /// The highest schema revision the registry has, which some clients declare.
    latest_revision: Arc<AtomicU64>,
    pacer: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts paused; [`Load::set_rate`] starts the traffic to Envoy at `url`.
    pub fn start(url: &str, pages: Vec<(u32, Vec<u8>)>) -> anyhow::Result<Load> {
        let channels: Vec<Channel> =
            (0..CONNECTIONS).map(|_| Ok(Channel::from_shared(url.to_owned())?.connect_lazy())).collect::<anyhow::Result<_>>()?;
        let (samples, rate, latest_revision) = (Arc::default(), Arc::default(), Arc::new(AtomicU64::new(2)));
        let pages = Arc::new(pages);
        let pacer = tokio::spawn(pace(channels, pages, Arc::clone(&samples), Arc::clone(&rate), Arc::clone(&latest_revision)));
        Ok(Load { samples, rate, latest_revision, pacer })
    }

    pub fn set_rate(&self, rps: u32) {
        self.rate.store(rps, Ordering::Relaxed);
    }

    pub fn set_latest_revision(&self, revision: u64) {
        self.latest_revision.store(revision, Ordering::Relaxed);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answers since `since` (by completion).
    pub fn completed_since(&self, since: Instant) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|s| s.done >= since).count()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.pacer.abort();
    }
}

/// Sends the mix at the current rate; each request in its own task.
async fn pace(
    channels: Vec<Channel>,
    pages: Arc<Vec<(u32, Vec<u8>)>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    rate: Arc<AtomicU32>,
    latest: Arc<AtomicU64>,
) {
    let mut next = tokio::time::Instant::now();
    for i in 0u64.. {
        let rps = rate.load(Ordering::Relaxed);
        if rps == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            next = tokio::time::Instant::now();
            continue;
        }
        next += Duration::from_secs(1) / rps;
        tokio::time::sleep_until(next).await;
        let Some(channel) = channels.get(i as usize % channels.len().max(1)).cloned() else { return };
        let request = Mix::of(i, latest.load(Ordering::Relaxed));
        let (pages, samples) = (Arc::clone(&pages), Arc::clone(&samples));
        tokio::spawn(async move {
            let sample = request.send(channel, &pages).await;
            samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
        });
    }
}

/// One request of the mix, drawn from its sequence number.
struct Mix {
    user: String,
    group: Option<&'static str>,
    revision: Option<String>,
    client: Client,
    budget: Option<Duration>,
}

impl Mix {
    fn of(i: u64, latest_revision: u64) -> Mix {
        let h = splitmix(i);
        let pick = |shift: u32, n: u64| (h >> shift) % n;
        let group = match pick(20, 20) {
            0 => Some("canary"),
            1 => Some("stable"),
            _ => None,
        };
        // 40 % declare nothing (most existing clients), then @1, @2 and the newest.
        let revision = match pick(28, 10) {
            0..=3 => None,
            4..=6 => Some("features.v1@1".to_owned()),
            7 | 8 => Some("features.v1@2".to_owned()),
            _ => Some(format!("features.v1@{latest_revision}")),
        };
        let tight = pick(40, 40) == 0;
        let budget = match pick(46, 20) {
            _ if tight => Some(TIGHT_BUDGET),
            0..=9 => Some(AMPLE_BUDGET),
            _ => None,
        };
        let client = Client { low_priority: pick(36, 5) == 0, tight_budget: tight, rotation: [0, 90, 180, 270][pick(52, 4) as usize] };
        Mix { user: format!("user-{}", pick(0, 100_000)), group, revision, client, budget }
    }

    fn request(&self, image: Vec<u8>) -> tonic::Request<ExtractRealtimeRequest> {
        let mut request = tonic::Request::new(ExtractRealtimeRequest { request_id: "soak".into(), image_data: image, ..Default::default() });
        let headers = [
            Some(("x-user-id", self.user.as_str())),
            self.group.map(|g| ("x-ab-group", g)),
            self.revision.as_deref().map(|r| ("x-schema-revision", r)),
            self.client.low_priority.then_some(("x-priority", "low")),
        ];
        for (k, v) in headers.into_iter().flatten() {
            if let Ok(v) = MetadataValue::try_from(v) {
                request.metadata_mut().insert(k, v);
            }
        }
        if let Some(budget) = self.budget {
            request.set_timeout(budget);
        }
        request
    }

    async fn send(self, channel: Channel, pages: &[(u32, Vec<u8>)]) -> Sample {
        let image = pages.iter().find(|(r, _)| *r == self.client.rotation).map(|(_, p)| p.clone()).unwrap_or_default();
        let mut client = FeatureExtractionServiceClient::new(channel).max_decoding_message_size(16 << 20);
        let sent = Instant::now();
        let decision = |m: &tonic::metadata::MetadataMap| {
            m.get("x-switchyard-decision").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
        };
        let mut retries = 0;
        let (code, message, decision, class) = loop {
            match client.extract_realtime(self.request(image.clone())).await {
                Ok(r) => {
                    let d = decision(r.metadata());
                    let r = r.into_inner();
                    let class = r
                        .quality_scores
                        .iter()
                        .filter_map(|(k, v)| Some((k.strip_prefix("class/")?, *v)))
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map(|(k, _)| k.to_owned());
                    break (tonic::Code::Ok, String::new(), d, class);
                }
                // A drained connection (a listener update, a hot restart) closed under a call
                // that had not left the client. gRPC's own clients retry such a call
                // transparently; tonic does not, so this client does, and counts it.
                Err(s) if never_sent(&s) && retries < 3 => retries += 1,
                Err(s) => break (s.code(), s.message().to_owned(), decision(s.metadata()), None),
            }
        };
        Sample { sent, done: Instant::now(), client: self.client, code, message, decision, class, retries }
    }
}

/// hyper's answer for a request its connection dropped before sending it.
fn never_sent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Cancelled && status.message() == "operation was canceled"
}

/// SplitMix64: a well-spread hash of the sequence number (the mix is the same every run).
fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Requests per second the stack sustains: closed loop, `in_flight` at a time, for `over`,
/// ordinary requests only (no tight budgets, no low priority).
pub async fn capacity(url: &str, page: Vec<u8>, in_flight: usize, over: Duration) -> anyhow::Result<f64> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (channel, done, page) = (channel.clone(), Arc::clone(&done), page.clone());
            tokio::spawn(async move {
                let mut client = FeatureExtractionServiceClient::new(channel);
                while started.elapsed() < over {
                    let mut request = tonic::Request::new(ExtractRealtimeRequest { image_data: page.clone(), ..Default::default() });
                    let user = format!("calibration-{}", fastrand_user(&done));
                    if let Ok(user) = MetadataValue::try_from(user) {
                        request.metadata_mut().insert("x-user-id", user);
                    }
                    if client.extract_realtime(request).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// A user key for the calibration's next request (spread like the mix's).
fn fastrand_user(done: &AtomicU64) -> u64 {
    splitmix(done.load(Ordering::Relaxed)) % 100_000
}
