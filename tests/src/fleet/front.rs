//! The front Envoy: what a Kubernetes Service (or a load balancer) is to the fleet. It
//! spreads requests over the hosts round robin, takes a host out when its gRPC health check
//! fails (the check goes through the host's Envoy to its sidecar) or when it answers
//! `UNAVAILABLE` three times running, retries a request a dead host refused on another host,
//! and says which host answered (`x-fleet-host`).

use super::net::Namespace;
use super::proxy::{self, Proxy};
use anyhow::Result;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// The response header naming the host that answered (`<address>:<port>`).
pub const HOST_HEADER: &str = "x-fleet-host";

pub async fn start(ns: &Namespace, hosts: &[SocketAddr]) -> Result<Proxy> {
    let routes = json!([{
        "match": {"prefix": "/"},
        "route": {
            "cluster": "hosts",
            "timeout": "0s",
            "retry_policy": {
                "retry_on": "unavailable,reset,connect-failure,refused-stream",
                "num_retries": 2,
                "retry_host_predicate": [{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
                }],
                "host_selection_retry_max_attempts": 3
            }
        },
        "response_headers_to_add": [{"header": {"key": HOST_HEADER, "value": "%UPSTREAM_REMOTE_ADDRESS%"}}]
    }]);
    let listener = proxy::listener("front", routes, vec![crate::envoy::router_filter_json()]);
    Proxy::start(ns, "front", vec![listener], vec![hosts_cluster(hosts)], 1).await
}

fn hosts_cluster(hosts: &[SocketAddr]) -> Value {
    let endpoints: Vec<Value> = hosts
        .iter()
        .map(|a| json!({"endpoint": {"address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}}}))
        .collect();
    json!({
        "name": "hosts",
        "type": "STATIC",
        "connect_timeout": "0.5s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": "hosts", "endpoints": [{"lb_endpoints": endpoints}]},
        "health_checks": [{
            "timeout": "0.25s",
            "interval": "0.25s",
            "no_traffic_interval": "0.25s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {}
        }],
        "outlier_detection": {
            "consecutive_5xx": 3,
            "interval": "0.5s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 50
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }
    })
}

/// Per-host counters and health flags from the front's `/clusters`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostView {
    pub rq_total: u64,
    /// Empty while healthy; e.g. `/failed_active_hc` or `/failed_outlier_check`.
    pub health_flags: String,
}

/// Reads the front's view of `host`.
pub fn view(front: &Proxy, host: SocketAddr) -> Option<HostView> {
    let body = front.get("/clusters").ok()?.body;
    let prefix = format!("hosts::{host}::");
    let mut v = HostView::default();
    let mut seen = false;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else { continue };
        seen = true;
        if let Some(n) = rest.strip_prefix("rq_total::") {
            v.rq_total = n.trim().parse().unwrap_or(0);
        } else if let Some(flags) = rest.strip_prefix("health_flags::") {
            v.health_flags = if flags.trim() == "healthy" { String::new() } else { flags.trim().to_owned() };
        }
    }
    seen.then_some(v)
}
