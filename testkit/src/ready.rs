//! The ready line: a server of this project prints one JSON line with `"event": "ready"`
//! on stdout once it listens (`switchyard-sidecar serve` does, with its bound addresses),
//! so a test never guesses with sleeps or port polling.

use crate::process::Process;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits for `process`'s ready line (its stdout must be piped) and returns it. Fails with
/// the server's log (`log`) if it exits first or is not ready `within`.
pub fn wait(process: &mut Process, log: &Path, within: Duration) -> Result<Value, String> {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let Some(stdout) = process.take_stdout() else {
        return Err(format!("{}: stdout is not piped", process.name()));
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + within;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(ready) = serde_json::from_str::<Value>(&line).ok().filter(|v| v["event"] == "ready") {
                    return Ok(ready);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) | Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = process.exited() {
                    return Err(format!("{} exited ({status}) before it was ready; log:\n{}", process.name(), read_log()));
                }
                if Instant::now() > deadline {
                    return Err(format!("{} not ready after {within:?}; log:\n{}", process.name(), read_log()));
                }
            }
        }
    }
}

/// An address (`"127.0.0.1:50051"`) of the ready line.
pub fn address(v: &Value) -> Option<std::net::SocketAddr> {
    v.as_str()?.parse().ok()
}
