//! Loading schemas from disk: `.proto` trees compiled at run time with `protox`, or binary
//! descriptor sets.

use crate::schema::Schema;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Why a schema could not be loaded, with the position in the offending file when known.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadError {
    /// The file at fault, relative to the include root for `.proto` trees.
    pub file: Option<String>,
    /// 1-based.
    pub line: Option<u32>,
    /// 1-based.
    pub column: Option<u32>,
    pub message: String,
}

impl LoadError {
    fn plain(file: Option<String>, message: impl Into<String>) -> Self {
        LoadError {
            file,
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line, self.column) {
            (Some(file), Some(line), Some(col)) => write!(f, "{file}:{line}:{col}: {}", self.message),
            (Some(file), _, _) => write!(f, "{file}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads a schema from a directory of `.proto` files or from a binary descriptor set file.
pub fn load(path: &Path) -> Result<Schema, LoadError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| LoadError::plain(Some(path.display().to_string()), format!("cannot read: {e}")))?;
    if meta.is_dir() {
        compile_dir(path)
    } else {
        let bytes = std::fs::read(path)
            .map_err(|e| LoadError::plain(Some(path.display().to_string()), format!("cannot read: {e}")))?;
        Schema::decode(&bytes).map_err(|e| {
            LoadError::plain(
                Some(path.display().to_string()),
                format!("not a valid binary FileDescriptorSet: {e}"),
            )
        })
    }
}

/// Compiles every `.proto` file under `root` (hidden entries skipped), with `root` as the
/// include path and the well-known types built in.
pub fn compile_dir(root: &Path) -> Result<Schema, LoadError> {
    let mut files = Vec::new();
    collect_protos(root, root, &mut files)
        .map_err(|e| LoadError::plain(Some(root.display().to_string()), format!("cannot list: {e}")))?;
    if files.is_empty() {
        return Err(LoadError::plain(
            Some(root.display().to_string()),
            "no .proto files in this directory",
        ));
    }
    files.sort();
    // Protox's own resolver for `root` and the well-known types, keeping each file's text.
    let mut chain = ChainFileResolver::new();
    chain.add(IncludeFileResolver::new(root.to_owned()));
    chain.add(GoogleFileResolver::new());
    let texts = Rc::new(RefCell::new(HashMap::new()));
    let mut compiler = protox::Compiler::with_file_resolver(KeepingTexts { inner: chain, texts: texts.clone() });
    compiler.include_source_info(true).include_imports(true);
    for file in &files {
        compiler.open_file(root.join(file)).map_err(|e| from_protox(&e))?;
    }
    let own: std::collections::BTreeSet<String> = compiler
        .files()
        .filter(|f| !f.is_import())
        .map(|f| f.name().to_owned())
        .collect();
    let mut schema = Schema::from_pool(compiler.descriptor_pool(), own.clone())
        .map_err(|e| LoadError::plain(Some(root.display().to_string()), e.to_string()))?;
    let texts = texts.borrow();
    for name in &own {
        if let Some(text) = texts.get(name) {
            schema.correct_positions(name, text);
        }
    }
    Ok(schema)
}

/// A file resolver that keeps the text of every file it opens: positions are corrected
/// against exactly what was compiled, not a second read that an edit in between could change.
struct KeepingTexts<R> {
    inner: R,
    texts: Rc<RefCell<HashMap<String, String>>>,
}

impl<R: FileResolver> FileResolver for KeepingTexts<R> {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.inner.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let file = self.inner.open_file(name)?;
        if let Some(text) = file.source() {
            self.texts.borrow_mut().insert(name.to_owned(), text.to_owned());
        }
        Ok(file)
    }
}

fn collect_protos(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_protos(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// Turns a protox diagnostic into file, line and column: parse errors, unresolved imports
/// and duplicate symbols all carry a labelled span in their source.
pub(crate) fn from_protox(err: &protox::Error) -> LoadError {
    use miette::Diagnostic;
    let file = err.file().map(str::to_owned);
    let mut message = err.to_string();
    let mut position = None;
    if let (Some(source), Some(label)) = (err.source_code(), err.labels().and_then(|mut l| l.next())) {
        if let Ok(contents) = source.read_span(label.inner(), 0, 0) {
            position = Some((contents.line() as u32 + 1, contents.column() as u32 + 1));
        }
        if let Some(text) = label.label() {
            message = format!("{message} ({text})");
        }
    }
    if let Some(help) = err.help() {
        message = format!("{message}; {help}");
    }
    LoadError {
        file,
        line: position.map(|p| p.0),
        column: position.map(|p| p.1),
        message,
    }
}
