//! The repository's configuration files as the tests read them: YAML documents as JSON
//! values, and Envoy's own verdict on a bootstrap (`envoy --mode validate`).

use crate::paths;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every document of a YAML file, as JSON values (empty documents are skipped).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let yaml = serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The files of `dir` (relative to the checkout) ending in `.ext`, in name order.
pub fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(paths::root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Fails unless the real Envoy accepts `config` (`envoy --mode validate`, which also runs
/// the filter's configuration check).
pub fn envoy_validate(config: &Path) {
    let out = Command::new(paths::envoy())
        .current_dir(paths::root())
        .args(["--mode", "validate", "-l", "warn", "-c"])
        .arg(config)
        .output()
        .expect("run envoy");
    assert!(
        out.status.success(),
        "envoy --mode validate {} failed:\n{}{}",
        config.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`envoy_validate`] for a bootstrap built in the test.
pub fn envoy_validate_bootstrap(bootstrap: &Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).expect("write bootstrap");
    envoy_validate(&path);
}
