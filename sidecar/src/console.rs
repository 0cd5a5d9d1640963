//! The console at `/console` on the admin port: a page that rehearses configurations in
//! the browser (the rehearsal engine built with wasm-bindgen, see `build.rs`) and shows
//! the running canary. Everything it needs is built into this binary; the browser talks
//! to this one origin, which reads Envoy's admin for it.
//!
//! | path                          | what                                                  |
//! |-------------------------------|-------------------------------------------------------|
//! | `/console/`                   | the page                                              |
//! | `/console/pkg/…`              | the engine (wasm-bindgen output)                      |
//! | `/console/example/…`          | an example scenario and plugin configuration          |
//! | `/console/api/envoy/stats`    | Envoy's `switchyard`, gRPC and cluster stats (JSON)   |
//! | `/console/api/envoy/config`   | the plugin configuration Envoy runs (from config_dump) |

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../console/assets/index.html")),
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../console/assets/console.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../console/assets/console.css")),
    ("pkg/switchyard_console.js", "text/javascript; charset=utf-8", include_bytes!(concat!(env!("OUT_DIR"), "/console/switchyard_console.js"))),
    ("pkg/switchyard_console_bg.wasm", "application/wasm", include_bytes!(concat!(env!("OUT_DIR"), "/console/switchyard_console_bg.wasm"))),
    ("example/scenario.yaml", "text/yaml; charset=utf-8", include_bytes!("../../examples/rehearsal/slow-canary.yaml")),
    ("example/plugin.json", "application/json", include_bytes!("../../examples/rehearsal/plugin.json")),
];

pub fn router(envoy_admin: Option<SocketAddr>) -> Router {
    let mut r = Router::new().route("/console", get(|| async { Redirect::permanent("/console/") }));
    for (path, content_type, body) in ASSETS {
        let route = if *path == "index.html" { "/console/".to_string() } else { format!("/console/{path}") };
        r = r.route(&route, get(move || async move { ([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *body) }));
    }
    r.route("/console/api/envoy/stats", get(move || stats(envoy_admin)))
        .route("/console/api/envoy/config", get(move || config(envoy_admin)))
}

fn no_envoy() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "no envoy_admin in the sidecar's configuration"}))).into_response()
}

async fn stats(envoy: Option<SocketAddr>) -> Response {
    let Some(addr) = envoy else { return no_envoy() };
    // The filter's stats (either build's prefix), the gRPC stats filter's and the clusters'.
    let path = "/stats?format=json&filter=(switchyard|%5Ecluster%5C.)";
    match admin_get(addr, path).await {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, axum::Json(serde_json::json!({"error": format!("Envoy admin {addr}: {e}")}))).into_response(),
    }
}

async fn config(envoy: Option<SocketAddr>) -> Response {
    let Some(addr) = envoy else { return no_envoy() };
    let dump = match admin_get(addr, "/config_dump").await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_GATEWAY, axum::Json(serde_json::json!({"error": format!("Envoy admin {addr}: {e}")}))).into_response(),
    };
    let found = serde_json::from_slice::<serde_json::Value>(&dump).ok().and_then(|v| switchyard_api::deployment::plugin_config(&v));
    match found {
        Some(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "no Switchyard configuration in Envoy's config_dump"}))).into_response(),
    }
}

/// A GET to Envoy's admin (loopback HTTP/1.1), with a deadline.
async fn admin_get(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(3), async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 3 s"))?
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// The body of an HTTP/1.1 response, de-chunked; an error unless the status is 200.
fn parse_response(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("headers are not text"))?;
    let body = &raw[end + 4..];
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(invalid(&format!("answered {status}")));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| invalid("truncated chunk"))?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("bad chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| invalid("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| invalid("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_bodies_are_read() {
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap(), b"hi");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), b"abcde");
        assert!(parse_response(b"HTTP/1.1 503 x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nabc").is_err());
    }
}
