//! `switchyard-rehearse`: what a configuration will do, before it takes traffic.

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Rehearse a canary: run Switchyard's own decision core against a traffic scenario on a
/// virtual clock and report shares, health transitions, reaction times and users moved.
///
/// Exit status: 0 when every expectation in the scenario is met, 1 when one is not (a
/// pipeline gate), 2 when an input is wrong (the message says which and where).
#[derive(Parser, Debug)]
#[command(name = "switchyard-rehearse", version)]
struct Args {
    /// The plugin configuration: its JSON, or an Envoy / Istio YAML that embeds it (the
    /// first embedded JSON document with `routes` is used).
    #[arg(long)]
    config: PathBuf,
    /// The scenario (YAML or JSON); see `examples/rehearsal/`.
    #[arg(long)]
    scenario: PathBuf,
    /// A sidecar snapshot document (`GET /v1/snapshot`) answering the filter's polls.
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Or a schema registry directory (the sidecar's `schema.dir`): the filter's polls are
    /// answered with what a sidecar on it would serve — the revisions it accepts (default
    /// policy: BACKWARD, WIRE) and every model version the configuration names, healthy
    /// (the scenario says how each target behaves). Only read: its persisted state is
    /// used from a copy.
    #[arg(long, conflicts_with = "snapshot")]
    registry: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// For people.
    Text,
    /// The whole report, for tools.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("switchyard-rehearse: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    let config = plugin_config(&args.config)?;
    let scenario_text = read(&args.scenario)?;
    let mut scenario =
        switchyard_rehearse::Scenario::parse(&scenario_text).map_err(|e| anyhow::anyhow!("{}: {e}", args.scenario.display()))?;
    if let Some(log) = scenario.traffic.replay.clone() {
        let path = args.scenario.parent().unwrap_or(Path::new(".")).join(&log);
        let replay = switchyard_rehearse::replay::Replay::parse(&read(&path)?).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        scenario.attach_replay(replay);
    }
    let snapshot = match (&args.snapshot, &args.registry) {
        (Some(p), _) => Some(
            serde_json::from_str::<serde_json::Value>(&read(p)?)
                .with_context(|| format!("{}: not a JSON snapshot document", p.display()))?,
        ),
        (None, Some(dir)) => Some(registry_snapshot(dir, &config)?),
        (None, None) => None,
    };
    let report = switchyard_rehearse::rehearse(&config, &scenario, snapshot.as_ref()).map_err(|e| {
        let file = match e.input {
            "config" => args.config.display().to_string(),
            "snapshot" => args.snapshot.as_deref().or(args.registry.as_deref()).map(|p| p.display().to_string()).unwrap_or_default(),
            _ => args.scenario.display().to_string(),
        };
        anyhow::anyhow!("{file}: {e}")
    })?;
    match args.format {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(report.passed)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The plugin configuration's JSON, from a JSON file or from the Envoy / Istio YAML that
/// carries it as a string.
fn plugin_config(path: &Path) -> Result<String> {
    let text = read(path)?;
    if text.trim_start().starts_with('{') {
        return Ok(text);
    }
    let mut found = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc).with_context(|| format!("{}: not YAML", path.display()))?;
        found = switchyard_api::deployment::plugin_config(&value);
        if found.is_some() {
            break;
        }
    }
    match found {
        Some(json) => Ok(json),
        None => bail!("{}: neither a JSON plugin configuration nor a YAML file embedding one (a string holding a JSON object with `routes`)", path.display()),
    }
}

/// The snapshot a sidecar serving the registry directory `dir` would answer polls with.
fn registry_snapshot(dir: &Path, plugin: &str) -> Result<serde_json::Value> {
    use switchyard_schema::registry::{Registry, RegistryConfig};
    let serving = RegistryConfig { dir: Some(dir.to_owned()), ..Default::default() };
    // The registry writes what it accepts to its state directory: work on a copy of it.
    let copy = std::env::temp_dir().join(format!("switchyard-rehearse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let opened = copy_files(serving.state_dir().as_deref(), &copy)
        .and_then(|()| Registry::open(RegistryConfig { state_dir: Some(copy.clone()), ..serving }).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display())));
    let _ = std::fs::remove_dir_all(&copy);
    let registry = opened?;
    // As the sidecar logs them: the rehearsal goes on without what was refused.
    for r in registry.rejections() {
        eprintln!("switchyard-rehearse: {}: {r}", dir.display());
    }
    // Every model version the configuration names, healthy; a configuration that does not
    // parse is reported by the rehearsal itself, with its path.
    let healthy = switchyard_api::ModelHealth { healthy: true, revision: None };
    let models = switchyard_filter_core::config::Config::from_json(plugin.as_bytes())
        .map(|c| {
            c.routes
                .iter()
                .flat_map(|r| &r.targets)
                .filter_map(|t| t.model_version.clone())
                .map(|m| (m, healthy.clone()))
                .collect()
        })
        .unwrap_or_default();
    let snapshot = switchyard_api::SidecarSnapshot { generation: 1, schema: registry.state().snapshot(false), models };
    Ok(serde_json::to_value(snapshot)?)
}

/// Creates `to` with a copy of the files in `from`, if it exists.
fn copy_files(from: Option<&Path>, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let Some(from) = from.filter(|d| d.is_dir()) else { return Ok(()) };
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
