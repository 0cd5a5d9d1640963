//! Loading schemas from disk: `.proto` trees compiled at run time with `protox`, or binary
//! descriptor sets.

use crate::editions::{descriptor, language, lowering, source, source::Edits, Edition};
use std::collections::BTreeSet;
use crate::schema::{DecodeError, Schema};
use protox::file::{File, FileResolver, GoogleFileResolver, IncludeFileResolver};
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
    // Files under `root` read here, so editions files reach protox lowered to proto2 text
    // it parses (see `crate::editions`); the well-known types from protox.
    let compilation = Compilation::default();
    let mut compiler = protox::Compiler::with_file_resolver(SourceTree {
        root: root.to_owned(),
        include: IncludeFileResolver::new(root.to_owned()),
        compilation: compilation.clone(),
    });
    compiler.include_source_info(true).include_imports(true);
    for file in &files {
        compiler.open_file(root.join(file)).map_err(|e| compilation.error(&e))?;
    }
    let own: BTreeSet<String> = compiler
        .files()
        .filter(|f| !f.is_import())
        .map(|f| f.name().to_owned())
        .collect();
    compilation.finish(&compiler.descriptor_pool(), own, &root.display().to_string())
}

/// What one compilation's resolvers saw: each file's text as written, the editions files
/// handed to protox lowered, and the first file refused before protox saw it. Shared by
/// the `.proto` tree ([`compile_dir`]) and registry documents (Confluent's API).
#[derive(Clone, Default)]
pub(crate) struct Compilation(Rc<RefCell<Opened>>);

#[derive(Default)]
struct Opened {
    texts: HashMap<String, String>,
    /// Lowered editions files, with the column edits of those lowered from text.
    lowered: HashMap<String, (Edition, Option<Edits>)>,
    /// The text protox parsed for each file lowered from text (its positions are in it).
    lowered_texts: HashMap<String, String>,
    refused: Option<LoadError>,
}

impl Compilation {
    /// A file for protox from its source text; an editions file is lowered.
    pub(crate) fn open_text(&self, name: &str, text: &str) -> Result<File, protox::Error> {
        let mut opened = self.0.borrow_mut();
        opened.texts.insert(name.to_owned(), text.to_owned());
        match source::lower(text) {
            Ok(None) => File::from_source(name, text),
            Ok(Some(lowered)) => {
                opened.lowered.insert(name.to_owned(), (lowered.edition, Some(lowered.edits)));
                let file = File::from_source(name, &lowered.text);
                opened.lowered_texts.insert(name.to_owned(), lowered.text);
                file
            }
            Err(e) => {
                let err = LoadError {
                    file: Some(name.to_owned()),
                    line: Some(e.line),
                    column: Some(e.column),
                    message: e.message,
                };
                Err(self.refuse(&mut opened, err))
            }
        }
    }

    /// A file for protox from an encoded `FileDescriptorProto` (protoc's or buf's, or a file
    /// of a loaded [`Schema`], already lowered if `lowered` names its edition). Options,
    /// features included, are kept byte for byte.
    pub(crate) fn open_descriptor(&self, name: &str, encoded: &[u8], lowered: Option<Edition>) -> Result<File, protox::Error> {
        let mut opened = self.0.borrow_mut();
        let (bytes, edition) = match lowered {
            Some(edition) => (encoded.to_vec(), Some(edition)),
            None => match lowering::lower_file_bytes(encoded) {
                Ok(Some((bytes, edition))) => (bytes, Some(edition)),
                Ok(None) => (encoded.to_vec(), None),
                Err(e) => {
                    let err = LoadError { file: Some(name.to_owned()), line: None, column: None, message: e.message };
                    return Err(self.refuse(&mut opened, err));
                }
            },
        };
        if let Some(edition) = edition {
            opened.lowered.insert(name.to_owned(), (edition, None));
        }
        File::decode_file_descriptor_proto(bytes.as_slice()).map_err(protox::Error::new)
    }

    fn refuse(&self, opened: &mut Opened, err: LoadError) -> protox::Error {
        opened.refused.get_or_insert(err.clone());
        protox::Error::new(err)
    }

    /// Why compiling stopped: a refusal of ours, or protox's error at the position as written.
    pub(crate) fn error(&self, err: &protox::Error) -> LoadError {
        let opened = self.0.borrow();
        if let Some(refused) = &opened.refused {
            return refused.clone();
        }
        let mut err = from_protox(err);
        if let (Some(file), Some(line), Some(column)) = (&err.file, err.line, err.column) {
            if let (Some((_, Some(edits))), Some(lowered), Some(original)) =
                (opened.lowered.get(file), opened.lowered_texts.get(file), opened.texts.get(file))
            {
                let (line, column) = source::original_shown_position(original, lowered, edits, line, column);
                (err.line, err.column) = (Some(line), Some(column));
            }
        }
        err
    }

    /// The schema protox compiled: lowered files raised back to their edition (at their
    /// positions as written), then decoded as any descriptor set is. `context` names the
    /// input in errors without a file of their own.
    pub(crate) fn finish(&self, pool: &prost_reflect::DescriptorPool, own: BTreeSet<String>, context: &str) -> Result<Schema, LoadError> {
        let opened = self.0.borrow();
        let encoded = pool.encode_to_vec();
        let encoded = if opened.lowered.is_empty() {
            encoded
        } else {
            let relocated = lowering::map_files(&encoded, |name, file| match opened.lowered.get(name) {
                Some((_, Some(edits))) => Some(lowering::renumber_utf8_none(&source::relocate(file, edits))),
                _ => None,
            });
            let editions = opened.lowered.iter().map(|(name, (edition, _))| (name.clone(), *edition)).collect();
            lowering::raise_set(&relocated, &editions)
        };
        let mut schema = Schema::decode_with_own_files(&encoded, own.clone()).map_err(|e| match e {
            DecodeError::Editions(e) => {
                // The position is source info's (lines end at `\n`): shown as every other
                // refusal is, in the text as written.
                let position = match (e.position, opened.texts.get(&e.file)) {
                    (Some((line, column)), Some(text)) => Some(source::info_shown_position(text, line, column)),
                    (position, _) => position,
                };
                LoadError { file: Some(e.file), line: position.map(|p| p.0), column: position.map(|p| p.1), message: e.message }
            }
            e => LoadError::plain(Some(context.to_owned()), e.to_string()),
        })?;
        for name in &own {
            if let Some(text) = opened.texts.get(name) {
                schema.correct_positions(name, text);
            }
        }
        Ok(schema)
    }
}

/// The built-in files: descriptor.proto as the current protobuf release declares it (see
/// `editions::descriptor`), Google's language feature files (`editions::language`), the
/// other well-known types from protox.
pub(crate) fn well_known(name: &str) -> Result<File, protox::Error> {
    if name == descriptor::NAME {
        return Ok(File::from_file_descriptor_proto(descriptor::descriptor_proto()));
    }
    if let Some(file) = language::file(name) {
        return Ok(File::from_file_descriptor_proto(file));
    }
    GoogleFileResolver::new().open_file(name)
}

/// The resolver for a `.proto` tree: reads each file itself (positions are corrected
/// against exactly what was compiled, not a second read that an edit in between could
/// change) and hands it to protox through the [`Compilation`].
struct SourceTree {
    root: PathBuf,
    include: IncludeFileResolver,
    compilation: Compilation,
}

/// protox's own limit on a source file.
const MAX_FILE_LEN: u64 = i32::MAX as u64;

impl FileResolver for SourceTree {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        self.include.resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let path = self.root.join(name);
        let text = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_FILE_LEN => {
                return Err(protox::Error::new(LoadError::plain(Some(name.to_owned()), "file too large")))
            }
            Ok(_) => std::fs::read(&path).map_err(protox::Error::new)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return well_known(name),
            Err(e) => return Err(protox::Error::new(e)),
        };
        match String::from_utf8(text) {
            Ok(text) => self.compilation.open_text(name, &text),
            Err(_) => {
                let err = LoadError::plain(Some(name.to_owned()), "not valid UTF-8");
                let mut opened = self.compilation.0.borrow_mut();
                Err(self.compilation.refuse(&mut opened, err))
            }
        }
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
