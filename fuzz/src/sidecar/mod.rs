//! The sidecar's inputs from outside the process: images from clients, configuration files
//! from operators, admin bodies from whoever can reach the loopback port.

mod admin;
mod config;
mod image;

pub use admin::admin_json;
pub use config::{config, model_config};
pub use image::image;
