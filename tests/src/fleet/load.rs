//! The load generator, in a namespace of its own: open-loop traffic through the front Envoy
//! (a request leaves on schedule whatever happened to earlier ones, so a slow canary does not
//! slow the traffic down), every answer recorded with who decided what; and single calls
//! straight to one host's Envoy, for what every host must agree on.
//!
//! Its tokio runtime is built on a thread inside the namespace, so its workers (which open
//! every socket) are there too. Work is handed to it with `spawn`, never `block_on`, which
//! would run on the caller's thread and namespace.

use super::front::HOST_HEADER;
use super::net::Namespace;
use super::proxy::LISTENER_PORT;
use anyhow::{Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use switchyard_proto::features::v1::feature_extraction_service_client::FeatureExtractionServiceClient;
use switchyard_proto::features::v1::ExtractRealtimeRequest;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;

/// Distinct `x-user-id` values the traffic draws from.
const USERS: u64 = 5000;

/// What one request got back.
#[derive(Clone, Debug)]
pub struct Sample {
    pub sent: Instant,
    pub done: Instant,
    /// The host that answered (index), from the front's `x-fleet-host`.
    pub host: Option<usize>,
    pub decision: Decision,
    pub code: tonic::Code,
}

/// The filter's decision as its exposed header says (`target=canary; reason=weight`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub target: Option<String>,
    pub reason: Option<String>,
}

impl Decision {
    fn of(metadata: &MetadataMap) -> Decision {
        let Some(value) = metadata.get("x-switchyard-decision").and_then(|v| v.to_str().ok()) else {
            return Decision::default();
        };
        let field = |key: &str| {
            value.split(';').find_map(|part| part.trim().strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        };
        Decision { target: field("target"), reason: field("reason") }
    }

    pub fn is(&self, target: &str) -> bool {
        self.target.as_deref() == Some(target)
    }

    pub fn because(&self, reason: &str) -> bool {
        self.reason.as_deref() == Some(reason)
    }
}

pub struct Load {
    runtime: Option<tokio::runtime::Runtime>,
    samples: Arc<Mutex<Vec<Sample>>>,
    rate: Arc<AtomicU32>,
    hosts: Vec<Ipv4Addr>,
}

impl Load {
    /// Starts the generator in `ns`, paused; [`Load::set_rate`] starts the traffic to `front`.
    /// `image` is every request's payload; `hosts` are the hosts' addresses, in order.
    pub fn start(ns: &Namespace, front: SocketAddr, hosts: Vec<Ipv4Addr>, image: Vec<u8>) -> Result<Load> {
        let runtime = ns
            .run(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().thread_name("fleet-load").build())??;
        let load = Load { runtime: Some(runtime), samples: Arc::default(), rate: Arc::default(), hosts };
        let (samples, rate, hosts) = (load.samples.clone(), load.rate.clone(), load.hosts.clone());
        let image = Arc::new(image);
        // The pacer runs until the runtime is dropped.
        drop(runtime_of(&load).spawn(async move {
            let channel = Channel::from_shared(format!("http://{front}")).expect("uri").connect_lazy();
            let client = FeatureExtractionServiceClient::new(channel).max_decoding_message_size(16 << 20);
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
                let (mut client, samples, image, hosts) = (client.clone(), samples.clone(), image.clone(), hosts.clone());
                let user = format!("user-{}", i.wrapping_mul(2_654_435_761) % USERS);
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let (metadata, code) = call(&mut client, &[("x-user-id", &user)], image.to_vec()).await;
                    let host = metadata
                        .get(HOST_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .and_then(|a| hosts.iter().position(|h| a.ip() == *h));
                    let sample = Sample { sent, done: Instant::now(), host, decision: Decision::of(&metadata), code };
                    samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                });
            }
        }));
        Ok(load)
    }

    /// Requests per second through the front (0 pauses).
    pub fn set_rate(&self, rps: u32) {
        self.rate.store(rps, Ordering::Relaxed);
    }

    /// Every answer so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the generator's runtime (in its namespace) and waits for it.
    pub async fn spawn<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> T {
        runtime_of(self).spawn(f).await.expect("a load task panicked")
    }

    /// Asks each host in turn, straight (not through the front), what it decides for each of
    /// `requests` (request metadata). The requests carry no image: the sidecar refuses them at
    /// once, and the filter's decision comes back all the same. Answers are per host, in order.
    pub async fn decide_on_every_host(&self, requests: Vec<Vec<(String, String)>>) -> Result<Vec<Vec<Decision>>> {
        let hosts = self.hosts.clone();
        self.spawn(async move {
            let mut all = Vec::new();
            for host in hosts {
                let channel = Channel::from_shared(format!("http://{host}:{LISTENER_PORT}"))?.connect().await.with_context(|| format!("connect to {host}"))?;
                let client = FeatureExtractionServiceClient::new(channel);
                let decisions = futures::future::join_all(requests.chunks(64).map(|chunk| {
                    let mut client = client.clone();
                    let chunk = chunk.to_vec();
                    async move {
                        let mut out = Vec::new();
                        for headers in chunk {
                            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                            out.push(Decision::of(&call(&mut client, &h, Vec::new()).await.0));
                        }
                        out
                    }
                }))
                .await;
                all.push(decisions.into_iter().flatten().collect());
            }
            Ok(all)
        })
        .await
    }

    /// One request straight to host `host`, without an image; its decision.
    pub async fn decide(&self, host: usize, headers: Vec<(String, String)>) -> Result<Decision> {
        let address = *self.hosts.get(host).context("no such host")?;
        self.spawn(async move {
            let channel = Channel::from_shared(format!("http://{address}:{LISTENER_PORT}"))?.connect().await?;
            let mut client = FeatureExtractionServiceClient::new(channel);
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Ok(Decision::of(&call(&mut client, &h, Vec::new()).await.0))
        })
        .await
    }
}

fn runtime_of(load: &Load) -> &tokio::runtime::Runtime {
    load.runtime.as_ref().expect("the runtime lives until drop")
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `ExtractRealtime` with `headers`; the response's (or the status's) metadata and its code.
async fn call(client: &mut FeatureExtractionServiceClient<Channel>, headers: &[(&str, &str)], image: Vec<u8>) -> (MetadataMap, tonic::Code) {
    let mut request = tonic::Request::new(ExtractRealtimeRequest { request_id: "fleet".into(), image_data: image, ..Default::default() });
    for (k, v) in headers {
        if let (Ok(key), Ok(value)) = (tonic::metadata::MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(*v)) {
            request.metadata_mut().insert(key, value);
        }
    }
    match client.extract_realtime(request).await {
        Ok(response) => (response.metadata().clone(), tonic::Code::Ok),
        Err(status) => (status.metadata().clone(), status.code()),
    }
}
