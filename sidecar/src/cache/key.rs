//! The cache key: everything a cached answer depends on, hashed.
//!
//! A feature vector and its quality scores are a function of the image's bytes, the model
//! file, the version's input and output settings (`config.toml`), the image limits the
//! image passed, and the sidecar's own pre-processing code. The key is a SHA-256 over all of
//! them, so a hot swap (a new file, a changed file under the same version number, a changed
//! `config.toml`) changes every key of that version: the old entries are never looked up
//! again, and age out (memory: by size; Redis: by `ttl_seconds`).

use crate::preprocess::Limits;
use crate::repository::{ChannelOrder, InputSpec, Layout, ModelConfig, OutputSpec};
use sha2::{Digest, Sha256};
use std::fmt;

/// Bumped whenever the pre-processing or the value's meaning changes in a way the inputs
/// below do not show (e.g. a new resize filter), so sidecars of different builds sharing a
/// Redis never serve each other's answers.
const SCHEME: u8 = 1;

/// A cache key (SHA-256).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of `image_sha256` (see [`image_digest`]) under a model version.
    pub fn new(image_sha256: &[u8; 32], model_sha256: &str, model: &ModelConfig, limits: &Limits) -> Key {
        let mut c = Canonical(Sha256::new());
        c.bytes(b"switchyard-sidecar feature cache");
        c.u64(u64::from(SCHEME));
        c.bytes(env!("CARGO_PKG_VERSION").as_bytes());
        c.bytes(image_sha256);
        c.bytes(model_sha256.as_bytes());
        c.model(model);
        // An image is served only within the limits; a larger limit elsewhere (a sidecar
        // sharing the Redis) must not answer for an image these limits refuse.
        let Limits { max_bytes: _, max_side, max_pixels } = *limits;
        c.u64(u64::from(max_side));
        c.u64(max_pixels);
        Key(c.0.finalize().into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// SHA-256 of the image's bytes.
pub fn image_digest(image: &[u8]) -> [u8; 32] {
    Sha256::digest(image).into()
}

/// An unambiguous encoding into the hash: every variable-length field carries its length,
/// every optional field a tag, so two different settings never hash the same bytes.
struct Canonical(Sha256);

impl Canonical {
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }

    fn u64(&mut self, n: u64) {
        self.0.update(n.to_le_bytes());
    }

    fn f32s(&mut self, values: &[f32]) {
        self.u64(values.len() as u64);
        for v in values {
            self.0.update(v.to_bits().to_le_bytes());
        }
    }

    fn optional(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.u64(0),
            Some(b) => {
                self.u64(1);
                self.bytes(b);
            }
        }
    }

    /// Every field of the version's settings, destructured without `..`: a new field does not
    /// compile until the key covers it.
    fn model(&mut self, model: &ModelConfig) {
        let ModelConfig { input, outputs } = model;
        let InputSpec { name, layout, channel_order, width, height, resize_shorter, mean, std } = input;
        self.bytes(name.as_bytes());
        self.bytes(match layout {
            Layout::Nchw => b"nchw",
            Layout::Nhwc => b"nhwc",
        });
        self.bytes(match channel_order {
            ChannelOrder::Rgb => b"rgb",
            ChannelOrder::Bgr => b"bgr",
        });
        self.u64(u64::from(*width));
        self.u64(u64::from(*height));
        self.optional(resize_shorter.map(u32::to_le_bytes).as_ref().map(|b| &b[..]));
        self.f32s(mean);
        self.f32s(std);
        let OutputSpec { features, classes, class_labels } = outputs;
        self.bytes(features.as_bytes());
        self.optional(classes.as_deref().map(str::as_bytes));
        self.u64(class_labels.len() as u64);
        for label in class_labels {
            self.bytes(label.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelConfig {
        ModelConfig::from_toml_str(
            "[input]\nname = \"x\"\nwidth = 224\nheight = 224\nresize_shorter = 256\n[outputs]\nfeatures = \"f\"\nclasses = \"c\"\nclass_labels = [\"0\", \"90\"]\n",
        )
        .unwrap()
    }

    const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_side: 4096, max_pixels: 1 << 24 };
    const SHA: &str = "aa00000000000000000000000000000000000000000000000000000000000000";

    fn key(image: &[u8], sha: &str, model: &ModelConfig, limits: &Limits) -> Key {
        Key::new(&image_digest(image), sha, model, limits)
    }

    #[test]
    fn the_same_inputs_give_the_same_key() {
        assert_eq!(key(b"image", SHA, &model(), &LIMITS), key(b"image", SHA, &model(), &LIMITS));
        assert_eq!(key(b"image", SHA, &model(), &LIMITS).hex().len(), 64);
        // The byte cap is checked before any lookup; it does not split the cache.
        assert_eq!(key(b"image", SHA, &model(), &LIMITS), key(b"image", SHA, &model(), &Limits { max_bytes: 7, ..LIMITS }));
    }

    #[test]
    fn the_key_changes_with_the_image_the_model_file_and_every_setting() {
        let base = key(b"image", SHA, &model(), &LIMITS);
        let mut variants: Vec<(&str, Key)> = vec![
            ("image", key(b"image2", SHA, &model(), &LIMITS)),
            ("model sha256", key(b"image", &SHA.replace("aa", "ab"), &model(), &LIMITS)),
            ("max_side", key(b"image", SHA, &model(), &Limits { max_side: 4095, ..LIMITS })),
            ("max_pixels", key(b"image", SHA, &model(), &Limits { max_pixels: 1, ..LIMITS })),
        ];
        type Change = fn(&mut ModelConfig);
        let changes: Vec<(&str, Change)> = vec![
            ("input.name", |m| m.input.name = "y".into()),
            ("input.layout", |m| m.input.layout = Layout::Nhwc),
            ("input.channel_order", |m| m.input.channel_order = ChannelOrder::Bgr),
            ("input.width", |m| m.input.width = 225),
            ("input.height", |m| m.input.height = 225),
            ("input.resize_shorter", |m| m.input.resize_shorter = None),
            ("input.resize_shorter value", |m| m.input.resize_shorter = Some(257)),
            ("input.mean", |m| m.input.mean[2] = 0.5),
            ("input.std", |m| m.input.std[0] = 0.5),
            ("outputs.features", |m| m.outputs.features = "g".into()),
            ("outputs.classes", |m| m.outputs.classes = None),
            ("outputs.classes name", |m| m.outputs.classes = Some("d".into())),
            ("outputs.class_labels", |m| m.outputs.class_labels.push("180".into())),
            ("outputs.class_labels order", |m| m.outputs.class_labels.reverse()),
            // Length prefixes: moving a character between fields is a change.
            ("outputs.class_labels split", |m| m.outputs.class_labels = vec!["09".into(), "0".into()]),
        ];
        for (what, change) in &changes {
            let mut m = model();
            change(&mut m);
            variants.push((what, key(b"image", SHA, &m, &LIMITS)));
        }
        for (what, k) in &variants {
            assert_ne!(*k, base, "{what} does not change the key");
        }
        for (i, (a, ka)) in variants.iter().enumerate() {
            for (b, kb) in &variants[i + 1..] {
                assert_ne!(ka, kb, "{a} and {b} give the same key");
            }
        }
    }
}
