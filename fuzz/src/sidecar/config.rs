//! `sidecar_config` and `sidecar_model_config`: the sidecar's configuration file (TOML or
//! YAML, `config::Config`) and a model's `config.toml` (`repository::ModelConfig`), as an
//! operator writes them.
//!
//! A refused file must say where (a line, or the key in backticks), since the operator has
//! only the message to go on; an accepted one must mean the same after being written out
//! and read back, so what the sidecar reports of its configuration can be trusted.

use switchyard_sidecar::config::Config;
use switchyard_sidecar::repository::ModelConfig;

/// The input as TOML and as YAML (each format's seeds exercise their own parser).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for (format, parsed) in [("TOML", Config::from_toml_str(text)), ("YAML", Config::from_yaml_str(text))] {
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                // serde_yaml leaves out the position of an error at the file's first byte.
                let at_start = format == "YAML" && serde_yaml::from_str::<Config>(text).err().and_then(|e| e.location()).is_some_and(|l| l.index() == 0);
                if !at_start {
                    located(&e.0, format);
                }
                continue;
            }
        };
        let verdict = config.validate().map_err(|e| e.0);
        if let Err(e) = &verdict {
            assert!(e.starts_with("invalid configuration: `"), "{format}: a validation error that names no key: {e}");
        }
        let written = match format {
            "TOML" => toml::to_string(&config).unwrap_or_else(|e| panic!("an accepted TOML config does not serialise: {e}")),
            _ => serde_yaml::to_string(&config).unwrap_or_else(|e| panic!("an accepted YAML config does not serialise: {e}")),
        };
        let reread = match format {
            "TOML" => Config::from_toml_str(&written),
            _ => Config::from_yaml_str(&written),
        }
        .unwrap_or_else(|e| panic!("{format} written from an accepted config does not parse: {e}\n{written}"));
        assert_eq!(as_json(&reread), as_json(&config), "{format}: the config changes when written and read back:\n{written}");
        assert_eq!(reread.validate().map_err(|e| e.0), verdict, "{format}: validation changes when written and read back");
    }
}

/// A model's `config.toml`: parsed and validated in one step (`ModelConfig::from_toml_str`).
pub fn model_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ModelConfig::from_toml_str(text) {
        Ok(config) => {
            let written = toml::to_string(&config).unwrap_or_else(|e| panic!("an accepted model config does not serialise: {e}"));
            let reread = ModelConfig::from_toml_str(&written).unwrap_or_else(|e| panic!("written from an accepted model config, refused: {e}\n{written}"));
            assert_eq!(reread, config, "the model config changes when written and read back:\n{written}");
            let i = &config.input;
            assert!((8..=4096).contains(&i.width) && (8..=4096).contains(&i.height), "accepted input {}x{}", i.width, i.height);
            assert!(i.resize_shorter.is_none_or(|s| s >= i.width.min(i.height)), "accepted resize_shorter {:?}", i.resize_shorter);
            assert!(i.std.iter().all(|s| s.is_finite() && *s > 0.0), "accepted std {:?}", i.std);
            assert!(i.mean.iter().all(|m| m.is_finite()), "accepted mean {:?}", i.mean);
        }
        Err(e) => located(&e, "TOML"),
    }
}

/// Says where: a line (parse errors, unknown or mistyped keys), a byte position (libyaml's
/// reader errors), a key in backticks (validation), or the whole file (a YAML file that is
/// not one mapping: serde_yaml has no position for that, and its message is the fix).
fn located(message: &str, format: &str) {
    let has_line = message.contains("line ") || message.contains("at position ");
    let has_key = message.split('`').count() >= 3;
    let whole_file = ["expected struct Config", "expected struct ModelConfig", "more than one document"].iter().any(|m| message.contains(m));
    assert!(has_line || has_key || whole_file, "{format}: a refusal that says neither line nor key: {message}");
}

fn as_json(config: &Config) -> serde_json::Value {
    serde_json::to_value(config).unwrap_or_else(|e| panic!("a config that is not JSON: {e}"))
}
