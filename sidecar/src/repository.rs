//! The model repository on disk, laid out like Triton's:
//!
//! ```text
//! <repo>/<model>/config.toml        how to feed the model and read its outputs (ModelConfig)
//! <repo>/<model>/SHA256SUMS         `sha256sum` lines for every `<version>/model.onnx`
//! <repo>/<model>/<version>/model.onnx
//! ```
//!
//! Nothing here loads a model; it only says what is on disk and whether a file is the one
//! its manifest vouches for.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MODEL_CONFIG: &str = "config.toml";
pub const MANIFEST: &str = "SHA256SUMS";
pub const MODEL_FILE: &str = "model.onnx";

/// How to turn an image into the model's input and its outputs into an answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub input: InputSpec,
    pub outputs: OutputSpec,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The graph input's name.
    pub name: String,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    pub channel_order: ChannelOrder,
    pub width: u32,
    pub height: u32,
    /// Resize the shorter side to this, then centre-crop `width`×`height`; unset: stretch
    /// the whole image to `width`×`height`.
    #[serde(default)]
    pub resize_shorter: Option<u32>,
    /// Per-channel mean and standard deviation applied to pixel values scaled to 0..1.
    #[serde(default = "imagenet_mean")]
    pub mean: [f32; 3],
    #[serde(default = "imagenet_std")]
    pub std: [f32; 3],
}

fn imagenet_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}
fn imagenet_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The output holding the feature vector (`[N, D]`).
    pub features: String,
    /// An optional output of class scores (`[N, C]`), reported as `class/<label>`.
    #[serde(default)]
    pub classes: Option<String>,
    /// Names of the `C` classes; unset: their indices.
    #[serde(default)]
    pub class_labels: Vec<String>,
}

impl ModelConfig {
    pub fn read(model_dir: &Path) -> Result<Self, String> {
        let path = model_dir.join(MODEL_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates a `config.toml`'s text; [`ModelConfig::read`] adds the path.
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        let config: ModelConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let i = &self.input;
        if !(8..=4096).contains(&i.width) || !(8..=4096).contains(&i.height) {
            return Err(format!("`input.width`/`input.height` must be in 8..=4096; got {}x{}", i.width, i.height));
        }
        if let Some(s) = i.resize_shorter {
            if s < i.width.min(i.height) {
                return Err(format!("`input.resize_shorter` ({s}) must be at least the crop's shorter side"));
            }
        }
        if i.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err("`input.std` values must be positive".into());
        }
        // TOML has `nan` and `inf`: either would turn every input value into NaN or ±inf.
        if i.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("`input.mean` values must be finite numbers; got {:?}", i.mean));
        }
        Ok(())
    }
}

/// `SHA256SUMS`: expected digests keyed by path relative to the model directory.
#[derive(Debug, Default, Clone)]
pub struct Manifest(BTreeMap<String, String>);

impl Manifest {
    pub fn read(model_dir: &Path) -> Result<Self, String> {
        let path = model_dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut sums = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(char::is_whitespace).and_then(|(hash, file)| {
                let file = file.trim_start().trim_start_matches('*');
                (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) && !file.is_empty())
                    .then(|| (file.trim_start_matches("./").to_string(), hash.to_ascii_lowercase()))
            });
            match parsed {
                Some((file, hash)) => {
                    sums.insert(file, hash);
                }
                None => return Err(format!("{}:{}: expected `<sha256>  <path>`", path.display(), n + 1)),
            }
        }
        Ok(Self(sums))
    }

    pub fn expected(&self, version: u64) -> Option<&str> {
        self.0.get(&format!("{version}/{MODEL_FILE}")).map(String::as_str)
    }
}

/// One model directory as found on disk.
#[derive(Debug)]
pub struct ModelOnDisk {
    pub name: String,
    pub dir: PathBuf,
    /// Version numbers that have a `model.onnx`, ascending.
    pub versions: Vec<u64>,
}

impl ModelOnDisk {
    pub fn model_file(&self, version: u64) -> PathBuf {
        self.dir.join(version.to_string()).join(MODEL_FILE)
    }
}

/// Lists the models (directories with a `config.toml`) and their numeric versions.
pub fn scan(repo: &Path) -> Result<Vec<ModelOnDisk>, String> {
    let entries = std::fs::read_dir(repo)
        .map_err(|e| format!("cannot read model repository {}: {e} (run `cargo xtask setup` to prepare it)", repo.display()))?;
    let mut models = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        if name.starts_with('.') || !dir.join(MODEL_CONFIG).is_file() {
            continue;
        }
        let mut versions: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .flatten()
            .filter_map(|v| v.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
            .filter(|v| dir.join(v.to_string()).join(MODEL_FILE).is_file())
            .collect();
        versions.sort_unstable();
        models.push(ModelOnDisk { name, dir, versions });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// Why a model file was not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("{file} is not listed in {MANIFEST}")]
    NotInManifest { file: String },
    #[error("checksum mismatch for {file}: {MANIFEST} says {expected}, file has {actual}")]
    ChecksumMismatch { file: String, expected: String, actual: String },
    #[error("{0}")]
    Unreadable(String),
    #[error("ONNX Runtime cannot load it: {0}")]
    Invalid(String),
    #[error("{0}")]
    Config(String),
}

impl Rejection {
    /// A short label for the `reason` of the load-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::NotInManifest { .. } => "not_in_manifest",
            Rejection::ChecksumMismatch { .. } => "checksum_mismatch",
            Rejection::Unreadable(_) => "unreadable",
            Rejection::Invalid(_) => "invalid_model",
            Rejection::Config(_) => "config",
        }
    }
}

/// Reads a model file and checks it against the manifest; returns its bytes and digest.
pub fn read_verified(model: &ModelOnDisk, manifest: &Manifest, version: u64) -> Result<(Vec<u8>, String), Rejection> {
    let path = model.model_file(version);
    let file = format!("{}/{version}/{MODEL_FILE}", model.name);
    let bytes = std::fs::read(&path).map_err(|e| Rejection::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    match manifest.expected(version) {
        None => Err(Rejection::NotInManifest { file }),
        Some(expected) if expected != actual => {
            Err(Rejection::ChecksumMismatch { file, expected: expected.to_string(), actual })
        }
        Some(_) => Ok((bytes, actual)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mean_that_is_not_a_number_is_refused() {
        let config = |mean: &str| format!("[input]\nname = \"x\"\nwidth = 8\nheight = 8\nmean = {mean}\n[outputs]\nfeatures = \"f\"\n");
        assert!(ModelConfig::from_toml_str(&config("[0.5, 0.5, 0.5]")).is_ok());
        for bad in ["[nan, 0.5, 0.5]", "[0.5, inf, 0.5]", "[0.5, 0.5, -inf]"] {
            let err = ModelConfig::from_toml_str(&config(bad)).unwrap_err();
            assert!(err.contains("`input.mean`"), "{bad}: {err}");
        }
    }

    #[test]
    fn manifest_reads_sha256sum_format() {
        let dir = tempfile::tempdir().unwrap();
        let h = "a".repeat(64);
        std::fs::write(dir.path().join(MANIFEST), format!("{h}  1/model.onnx\n{h} *./2/model.onnx\n")).unwrap();
        let m = Manifest::read(dir.path()).unwrap();
        assert_eq!(m.expected(1), Some(h.as_str()));
        assert_eq!(m.expected(2), Some(h.as_str()));
        assert_eq!(m.expected(3), None);
        std::fs::write(dir.path().join(MANIFEST), "nonsense\n").unwrap();
        assert!(Manifest::read(dir.path()).unwrap_err().contains(":1:"));
    }
}
