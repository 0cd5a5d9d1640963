//! The module runs a timer thread (delays, the sidecar poll). Marking the library
//! `nodelete` keeps its code mapped even if Envoy drops its last reference to it, so that
//! thread can never run unmapped code.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
