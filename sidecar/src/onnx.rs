//! ONNX Runtime through `ort`, loaded at run time from a `libonnxruntime` on disk (the venv's,
//! by default), so the binary carries no runtime and the runtime can be swapped for the GPU
//! build without a rebuild.

use crate::config::{Provider, RuntimeConfig};
use crate::repository::ModelConfig;
use ort::session::Session;
use std::path::{Path, PathBuf};

/// The loaded ONNX Runtime library and how sessions are built on it.
pub struct Runtime {
    env: ort::environment::Environment,
    config: RuntimeConfig,
    /// Starts sessions' pool threads at the sidecar's priority, not the niced builder's.
    spawner: crate::background::Spawner,
    pub library: PathBuf,
}

/// Where `libonnxruntime` is: the configured path, else `$ORT_DYLIB_PATH`, else the project
/// venv (`.venv/lib/python3*/site-packages/onnxruntime/capi/`) found from the current
/// directory or the executable's ancestors.
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    const HINT: &str = "set `runtime.onnxruntime`, `--onnxruntime` or ORT_DYLIB_PATH, or run `cargo xtask setup` to install it into .venv";
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("libonnxruntime not found at {} ({HINT})", path.display()))
        };
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("ORT_DYLIB_PATH={} does not exist ({HINT})", path.display()))
        };
    }
    let mut roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        roots.push(exe);
    }
    for root in roots {
        for dir in root.ancestors() {
            if let Some(found) = venv_library(&dir.join(".venv")) {
                return Ok(found);
            }
        }
    }
    Err(format!("libonnxruntime not found ({HINT})"))
}

fn venv_library(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut found: Vec<PathBuf> = lib
        .flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|dir| dir.flatten().map(|f| f.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.so" || n == "libonnxruntime.dylib")
        })
        .collect();
    found.sort();
    found.pop()
}

impl Runtime {
    pub fn init(config: &RuntimeConfig) -> Result<Self, String> {
        let library = locate_library(config.onnxruntime.as_deref())?;
        let env = ort::init_from(&library)
            .map_err(|e| format!("cannot load {}: {e}", library.display()))?
            .with_name("switchyard-sidecar")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", library.display()))?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        let spawner = crate::background::Spawner::start().map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Self { env, config: config.clone(), spawner, library })
    }

    /// Builds a session for `model_bytes` with the configured execution providers, trying
    /// each in order; returns the provider that took it. Its intra-op threads run at
    /// `threads_nice` (0: the sidecar's priority).
    pub fn session(&self, model_bytes: &[u8], name: &str, threads_nice: i32) -> Result<(Session, Provider), String> {
        let err = |e: ort::Error<_>| e.to_string();
        let mut builder = Session::builder(&self.env).map_err(|e| e.to_string())?;
        if self.config.intra_op_threads > 0 {
            builder = builder.with_intra_threads(self.config.intra_op_threads).map_err(err)?;
        }
        builder = builder.with_intra_op_spinning(self.config.intra_op_spinning).map_err(err)?;
        builder = builder.with_inter_threads(1).map_err(err)?;
        builder = builder.with_thread_manager(self.spawner.at_nice(threads_nice)).map_err(err)?;
        let mut provider = Provider::Cpu;
        for wanted in &self.config.execution_providers {
            let dispatch = match wanted {
                Provider::Cpu => break,
                Provider::Cuda => ort::ep::CUDA::default().build(),
                Provider::Tensorrt => ort::ep::TensorRT::default().build(),
            };
            match dispatch.register(&mut builder) {
                Ok(()) => {
                    provider = *wanted;
                    break;
                }
                Err(e) if self.config.require_provider => {
                    return Err(format!("execution provider `{wanted}` could not start and `runtime.require_provider` is set: {e}"));
                }
                Err(e) => {
                    tracing::warn!(model = name, provider = %wanted, error = %e, "execution provider could not start; trying the next one (CPU last)");
                }
            }
        }
        if !self.config.cpu_arena {
            builder = builder.with_memory_pattern(false).map_err(err)?;
            ort::ep::CPU::default().with_arena_allocator(false).build().register(&mut builder).map_err(|e| e.to_string())?;
        }
        let session = builder.commit_from_memory(model_bytes).map_err(|e| e.to_string())?;
        Ok((session, provider))
    }
}

/// One ONNX Runtime session with the buffers that feed it, used by one inference thread.
pub struct Engine {
    session: Session,
    config: ModelConfig,
    /// The batch input, reused: grows to the largest batch seen, never shrinks.
    input: Vec<f32>,
    image_len: usize,
}

/// One image's answer.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub features: Vec<f32>,
    pub classes: Vec<f32>,
}

impl Engine {
    /// Checks that the session has the inputs and outputs `config` names.
    pub fn new(session: Session, config: ModelConfig) -> Result<Self, String> {
        let inputs: Vec<String> = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        if !inputs.contains(&config.input.name) {
            return Err(format!("config.toml names input {:?}, the model has {inputs:?}", config.input.name));
        }
        for wanted in std::iter::once(&config.outputs.features).chain(config.outputs.classes.as_ref()) {
            if !outputs.contains(wanted) {
                return Err(format!("config.toml names output {wanted:?}, the model has {outputs:?}"));
            }
        }
        let image_len = config.input.width as usize * config.input.height as usize * 3;
        Ok(Self { session, config, input: Vec::new(), image_len })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs one batch of pre-processed images (RGB8 at the model's input size).
    pub fn run(&mut self, images: &[&[u8]]) -> Result<Vec<Output>, String> {
        let n = images.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.input.resize(n * self.image_len, 0.0);
        for (rgb, slot) in images.iter().zip(self.input.chunks_exact_mut(self.image_len)) {
            if rgb.len() != self.image_len {
                return Err(format!("pre-processed image has {} bytes, expected {}", rgb.len(), self.image_len));
            }
            crate::preprocess::normalise(rgb, &self.config.input, slot);
        }
        let i = &self.config.input;
        let shape = match i.layout {
            crate::repository::Layout::Nchw => [n, 3, i.height as usize, i.width as usize],
            crate::repository::Layout::Nhwc => [n, i.height as usize, i.width as usize, 3],
        };
        let tensor = ort::value::TensorRef::from_array_view((shape, &self.input[..n * self.image_len]))
            .map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.config.input.name.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let rows = |name: &str| -> Result<Vec<Vec<f32>>, String> {
            let value = outputs.get(name).ok_or_else(|| format!("the model produced no {name:?}"))?;
            let (_, data) = value.try_extract_tensor::<f32>().map_err(|e| format!("output {name:?}: {e}"))?;
            if data.len() % n != 0 {
                return Err(format!("output {name:?} has {} values for a batch of {n}", data.len()));
            }
            Ok(data.chunks_exact(data.len() / n).map(<[f32]>::to_vec).collect())
        };
        let features = rows(&self.config.outputs.features)?;
        let classes = match &self.config.outputs.classes {
            Some(name) => rows(name)?,
            None => vec![Vec::new(); n],
        };
        Ok(features.into_iter().zip(classes).map(|(features, classes)| Output { features, classes }).collect())
    }

    /// Runs a batch of grey images at batch size 1 and `max_batch`, so the first real
    /// request does not pay for ONNX Runtime's lazy initialisation.
    pub fn warm_up(&mut self, max_batch: usize) -> Result<(), String> {
        let grey = vec![128u8; self.image_len];
        for n in [1, max_batch] {
            let images: Vec<&[u8]> = (0..n).map(|_| grey.as_slice()).collect();
            self.run(&images)?;
        }
        Ok(())
    }
}
