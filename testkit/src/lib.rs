//! The test support every crate of the workspace shares: where things are in the checkout
//! ([`paths`]), child processes that cannot outlive their test ([`process`]), the JSON
//! ready line servers print ([`ready`]), a plain HTTP/1.1 client for admin ports
//! ([`http`]), the rendered test pages ([`pages`]), a ConfigMap volume written the
//! way the kubelet writes one ([`configmap`]), and a private `redis-server` ([`redis`]).
//!
//! Tests fail, never skip, when something they need is missing: the messages say which
//! `cargo xtask` command provides it.

pub mod browser;
pub mod configmap;
pub mod http;
pub mod pages;
pub mod paths;
pub mod process;
pub mod ready;
pub mod redis;
