//! Making each scheduled change, and checking that the stack took it as it should: a good
//! change is applied, a bad one is refused and what served before keeps serving.

use super::load::Load;
use super::schedule::Event;
use super::stack::Stack;
use crate::sidecar::revisions;
use anyhow::{bail, Result};
use serde_json::json;
use sha2::Digest;
use std::time::{Duration, Instant};

/// How long a change may take to show.
const WITHIN: Duration = Duration::from_secs(15);

/// What happened: `Ok(detail)` when the stack did what it should, `Err` otherwise.
pub type Outcome = Result<String>;

pub async fn apply(stack: &mut Stack, load: &Load, event: &Event) -> Outcome {
    match event {
        Event::ModelSwap(n) => model_swap(stack, *n).await,
        Event::ModelCorrupt => {
            let bytes = b"switchyard soak: this is not an ONNX model\n".repeat(64);
            model_refused(stack, &bytes, &sha256(&bytes), "corrupt file").await
        }
        Event::ModelChecksumMismatch => {
            let bytes = with_doc_string(&stack.canary_source()?, "switchyard soak: a mismatch");
            model_refused(stack, &bytes, &"0".repeat(64), "checksum mismatch").await
        }
        Event::SchemaCompatible(n) => schema_compatible(stack, load, *n).await,
        Event::SchemaBreaking => schema_breaking(stack).await,
        Event::ConfigChanged(weight) => {
            let config = with_canary_weight(&stack.plugin_config, *weight).to_string();
            if stack.envoy.push_listener(&config).await {
                stack.accepted_config = config;
                Ok(format!("canary weight {weight} % applied"))
            } else {
                bail!("Envoy refused a good configuration; its log ends:\n{}", stack.envoy.log_tail(10))
            }
        }
        Event::ConfigBroken => {
            let config = with_canary_weight(&stack.plugin_config, 10).to_string().replacen("\"weight\"", "\"wieght\"", 1);
            if stack.envoy.push_listener(&config).await {
                bail!("Envoy accepted a broken configuration (a `wieght` field)")
            }
            // A control plane that leaves a rejected configuration on offer turns the next
            // restart into an outage: the new process starts from it, refuses it and has no
            // listener (the first 20-minute soak lost 9 s of connections that way). So the
            // harness does what a careful control plane does: offer the last accepted one again.
            let accepted = stack.accepted_config.clone();
            if !stack.envoy.push_listener(&accepted).await {
                bail!("Envoy refused the last accepted configuration when it was offered again");
            }
            Ok("refused (`wieght`); the previous configuration keeps serving, and is offered again".into())
        }
        Event::ChaosLatency => stack.chaos(Some(json!({"latency_ms": 1500}))).map(|()| "canary +1500 ms".into()),
        Event::ChaosErrors => {
            stack.chaos(Some(json!({"error_rate": 0.5, "error_code": "UNAVAILABLE"}))).map(|()| "canary: 50 % UNAVAILABLE".into())
        }
        Event::ChaosOff => stack.chaos(None).map(|()| "cleared".into()),
        Event::SidecarRestart => {
            let began = Instant::now();
            stack.stop_sidecar()?;
            let drained = began.elapsed();
            stack.start_sidecar().await?;
            Ok(format!("drained and exited in {} ms, serving again after {} ms", drained.as_millis(), began.elapsed().as_millis()))
        }
        Event::EnvoyHotRestart => {
            let began = Instant::now();
            stack.hot_restart_envoy().await?;
            Ok(format!("epoch live after {} ms", began.elapsed().as_millis()))
        }
    }
}

async fn model_swap(stack: &Stack, n: u64) -> Outcome {
    let bytes = with_doc_string(&stack.canary_source()?, &format!("switchyard soak swap {n}"));
    let sha = sha256(&bytes);
    stack.write_canary(&bytes, &sha)?;
    let began = Instant::now();
    while began.elapsed() < WITHIN {
        if stack.canary_sha()?.as_deref() == Some(sha.as_str()) {
            return Ok(format!("serving {} after {} ms", &sha[..12], began.elapsed().as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the new canary file ({}) was not serving after {WITHIN:?}; /v1/models: {}", &sha[..12], stack.models()?)
}

/// Writes a file the sidecar must refuse; checks it did, and that the old file still serves.
async fn model_refused(stack: &Stack, bytes: &[u8], manifest_sha: &str, what: &str) -> Outcome {
    let serving = stack.canary_sha()?;
    stack.write_canary(bytes, manifest_sha)?;
    let began = Instant::now();
    while began.elapsed() < WITHIN {
        if let Some(reason) = stack.canary_rejection()? {
            let still = stack.canary_sha()?;
            if still != serving {
                bail!("after a {what} the canary serves {still:?}, not {serving:?}");
            }
            return Ok(format!("refused after {} ms ({reason}); the previous file keeps serving", began.elapsed().as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("a {what} was not refused within {WITHIN:?}; /v1/models: {}", stack.models()?)
}

async fn schema_compatible(stack: &Stack, load: &Load, n: u64) -> Outcome {
    stack.write_revision(&entry(n), &compatible(n));
    let began = Instant::now();
    while began.elapsed() < WITHIN {
        if stack.registry_revisions()?.contains(&n) {
            load.set_latest_revision(n);
            return Ok(format!("features.v1@{n} registered after {} ms", began.elapsed().as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("features.v1@{n} was not registered within {WITHIN:?}; the registry has {:?}", stack.registry_revisions()?)
}

async fn schema_breaking(stack: &Stack) -> Outcome {
    let revisions = stack.registry_revisions()?;
    let latest = revisions.iter().copied().max().unwrap_or(2);
    let rejected = stack.revisions_rejected()?;
    // Sorts right after the latest revision's entry.
    let name = format!("{}-breaking", entry(latest));
    let proto = compatible(latest).replacen("  ImageFormat image_format = 3;", "  string image_format = 3;", 1);
    stack.write_revision(&name, &proto);
    let began = Instant::now();
    while began.elapsed() < WITHIN {
        if stack.revisions_rejected()? > rejected {
            let now = stack.registry_revisions()?;
            stack.remove_revision(&name)?;
            if now != revisions {
                bail!("the registry refused the breaking revision but its revisions changed: {revisions:?} → {now:?}");
            }
            return Ok(format!("refused after {} ms; the registry keeps {revisions:?}", began.elapsed().as_millis()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the breaking revision was not refused within {WITHIN:?}; the registry has {:?}", stack.registry_revisions()?)
}

/// Registry entry for revision `n` (entries sort by name; 1 and 2 are there from the start).
fn entry(n: u64) -> String {
    format!("{n:03}-features")
}

/// Revision `n` ≥ 2 of `features.v1`: revision 2 plus one new optional field per revision.
fn compatible(n: u64) -> String {
    let mut proto = revisions::with_new_field();
    let anchor = "  string roi_hint = 15;\n";
    let added: String = (3..=n).map(|j| format!("  string soak_note_{j} = {};\n", 100 + j)).collect();
    proto = proto.replacen(anchor, &format!("{anchor}{added}"), 1);
    proto
}

/// The plugin configuration with the canary at `weight` % and stable at the rest.
fn with_canary_weight(config: &serde_json::Value, weight: u32) -> serde_json::Value {
    let mut config = config.clone();
    for route in config["routes"].as_array_mut().into_iter().flatten() {
        for target in route["targets"].as_array_mut().into_iter().flatten() {
            match target["name"].as_str() {
                Some("canary") => target["weight"] = weight.into(),
                Some("stable") => target["weight"] = (100 - weight).into(),
                _ => {}
            }
        }
    }
    config
}

/// A real model with its `doc_string` (ModelProto field 6) set: the same network in a file
/// with a new checksum, as a re-exported model would be.
fn with_doc_string(model: &[u8], doc: &str) -> Vec<u8> {
    let mut out = model.to_vec();
    out.push(6 << 3 | 2);
    let mut len = doc.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(doc.as_bytes());
    out
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}
