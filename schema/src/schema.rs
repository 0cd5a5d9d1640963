//! [`Schema`]: one loaded descriptor set, with what the checker and validator need
//! precomputed (fingerprint, source locations, which files are the schema's own).

use crate::editions::{lowering, Edition};
use crate::fingerprint::{CanonicalError, Fingerprint};
use crate::location::{Location, SourceIndex};
use crate::wire::{self, WireType};
use prost_reflect::DescriptorPool;
use std::collections::{BTreeMap, BTreeSet};

/// A compiled or decoded set of `.proto` files.
///
/// Cheap to share behind an `Arc`; immutable once built.
#[derive(Clone, Debug)]
pub struct Schema {
    pool: DescriptorPool,
    own_files: BTreeSet<String>,
    fingerprint: Fingerprint,
    sources: SourceIndex,
    /// Files written in an edition, lowered to proto2 in `pool` (see [`crate::editions`]).
    editions: BTreeMap<String, Edition>,
}

/// A descriptor set that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Malformed(#[from] CanonicalError),
    #[error("{}", describe_descriptor_error(.0))]
    Invalid(#[from] prost_reflect::DescriptorError),
    #[error("descriptor set holds no files")]
    Empty,
    #[error(transparent)]
    Editions(#[from] lowering::LoweringError),
}

fn describe_descriptor_error(err: &prost_reflect::DescriptorError) -> String {
    match (err.file(), err.line(), err.column()) {
        (Some(file), Some(line), Some(col)) => format!("{file}:{}:{}: {err}", line + 1, col + 1),
        (Some(file), _, _) => format!("{file}: {err}"),
        _ => err.to_string(),
    }
}

/// The schema's subject could not be inferred from its packages.
#[derive(Debug, thiserror::Error)]
#[error("cannot infer a subject: {0}")]
pub struct SubjectError(String);

// buf images mark imported files with `ImageFileExtension.is_import` (field 1) stored in
// field 8042 of each FileDescriptorProto.
const FILE_BUF_IMAGE: u32 = 8042;
const IMAGE_IS_IMPORT: u32 = 1;

impl Schema {
    /// Decodes a binary `FileDescriptorSet`, such as `buf build -o x.binpb` or
    /// `protoc --descriptor_set_out --include_imports` writes.
    ///
    /// Files that buf marks as imports are kept (the checker compares them too, as buf does)
    /// but are not the schema's *own* files; in a plain set without buf's markers, every
    /// file but the well-known types (`google/protobuf/…`) is. Well-known types that the set imports without
    /// containing them (`buf build --exclude-imports`) are supplied from the built-in copies.
    pub fn decode(encoded: &[u8]) -> Result<Schema, DecodeError> {
        Schema::decode_set(encoded, None)
    }

    /// [`Schema::decode`] with the schema's own files named (as compiled, or as stored).
    pub fn decode_with_own_files(encoded: &[u8], own_files: BTreeSet<String>) -> Result<Schema, DecodeError> {
        Schema::decode_set(encoded, Some(own_files))
    }

    fn decode_set(encoded: &[u8], own: Option<BTreeSet<String>>) -> Result<Schema, DecodeError> {
        let set = wire::fields(encoded).map_err(|e| CanonicalError::from_wire(e, "FileDescriptorSet"))?;
        let mut names = BTreeSet::new();
        let mut own_files = BTreeSet::new();
        let mut dependencies = BTreeSet::new();
        let mut marked = false;
        for file in set.iter().filter(|f| f.number == 1) {
            let name = crate::fingerprint::file_name(file.value).unwrap_or_default();
            let (marker, deps) = scan_file(file.value);
            dependencies.extend(deps);
            marked |= marker.is_some();
            if marker != Some(true) {
                own_files.insert(name.clone());
            }
            names.insert(name);
        }
        if names.is_empty() {
            return Err(DecodeError::Empty);
        }
        if !marked {
            // A plain FileDescriptorSet does not say which files are imports; the
            // well-known types never are the schema's own.
            own_files.retain(|f| !f.starts_with("google/protobuf/"));
        }
        let mut pool = DescriptorPool::new();
        // Supply well-known types the set refers to but does not carry (`buf build
        // --exclude-imports`); any other missing import is reported by the pool below.
        let global = DescriptorPool::global();
        let mut added = BTreeSet::new();
        for dep in dependencies.difference(&names) {
            add_with_dependencies(&mut pool, &global, dep, &names, &mut added)?;
        }
        let lowered = lowering::lower_set(encoded)?;
        pool.decode_file_descriptor_set(lowered.bytes.as_ref())?;
        let mut schema = Schema::from_pool(pool, own.unwrap_or(own_files))?;
        schema.editions = lowered.editions;
        Ok(schema)
    }

    /// Wraps a pool built elsewhere (for example by `protox`); `own_files` are the files
    /// that were compiled as the schema rather than pulled in as imports. The fingerprint
    /// covers every file in the pool, imports included.
    pub fn from_pool(pool: DescriptorPool, own_files: BTreeSet<String>) -> Result<Schema, DecodeError> {
        let fingerprint = Fingerprint::of_descriptor_set(&pool.encode_to_vec())?;
        Ok(Schema::assemble(pool, own_files, fingerprint))
    }

    fn assemble(pool: DescriptorPool, own_files: BTreeSet<String>, fingerprint: Fingerprint) -> Schema {
        let sources = SourceIndex::new(&pool);
        Schema {
            pool,
            own_files,
            fingerprint,
            sources,
            editions: BTreeMap::new(),
        }
    }

    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Files compiled as this schema (not imports), sorted by name.
    pub fn own_files(&self) -> impl Iterator<Item = &str> {
        self.own_files.iter().map(String::as_str)
    }

    /// Corrects source positions that protox records differently from protoc and buf,
    /// from the text of `file` (see `SourceIndex::place_defaults_at_names`).
    #[cfg(feature = "runtime")]
    pub(crate) fn correct_positions(&mut self, file: &str, text: &str) {
        self.sources.place_defaults_at_names(file, text);
    }

    /// The full descriptor set, imports and source info included, as
    /// `GetRevision` serves it and the filter's snapshot embeds it.
    ///
    /// Editions files are served as written (`syntax = "editions"`), not as the proto2 the
    /// pool holds them in.
    pub fn encode(&self) -> Vec<u8> {
        lowering::raise_set(&self.pool.encode_to_vec(), &self.editions)
    }

    /// The edition `file` is written in, if it is an editions file.
    pub fn edition(&self, file: &str) -> Option<Edition> {
        self.editions.get(file).copied()
    }

    /// The 1-based source position of the element at `path` in `file`, or of its nearest
    /// enclosing element that has one (map entries, for example, have none of their own).
    pub fn location(&self, file: &str, path: &[i32]) -> Option<Location> {
        self.sources.find(file, path)
    }

    /// The packages of the schema's own files.
    pub fn packages(&self) -> BTreeSet<&str> {
        self.pool
            .file_descriptor_protos()
            .filter(|p| self.own_files.contains(p.name()))
            .map(|p| p.package())
            .collect()
    }

    fn package_of(&self, file: &str) -> &str {
        self.pool
            .file_descriptor_protos()
            .find(|p| p.name() == file)
            .map(|p| p.package())
            .unwrap_or("")
    }

    /// The default subject: the proto package of the schema's own files. When they span
    /// several packages, the package declaring services wins if it is the only one; any
    /// other mix is ambiguous and must be named explicitly.
    pub fn default_subject(&self) -> Result<String, SubjectError> {
        let packages = self.packages();
        if packages.contains("") {
            return Err(SubjectError(
                "a file declares no package; give every file a package or name the subject \
                 explicitly (`<subject>@<label>` entry name)"
                    .into(),
            ));
        }
        if packages.len() == 1 {
            return Ok(packages.into_iter().next().unwrap_or_default().to_owned());
        }
        if packages.is_empty() {
            return Err(SubjectError("the schema has no files of its own".into()));
        }
        let with_services: BTreeSet<&str> = self
            .pool
            .services()
            .filter(|s| self.own_files.contains(s.parent_file().name()))
            .map(|s| self.package_of(s.parent_file().name()))
            .collect();
        if with_services.len() == 1 {
            return Ok(with_services.into_iter().next().unwrap_or_default().to_owned());
        }
        Err(SubjectError(format!(
            "its files declare packages {} and {} of them declare services; \
             name the subject explicitly (`<subject>@<label>` entry name)",
            packages.into_iter().collect::<Vec<_>>().join(", "),
            with_services.len()
        )))
    }
}

/// Reads a file's buf import marker (if it has buf image metadata) and its dependency
/// names, without a full decode.
fn scan_file(file: &[u8]) -> (Option<bool>, Vec<String>) {
    let Ok(fields) = wire::fields(file) else {
        return (None, Vec::new());
    };
    let mut is_import = None;
    let mut deps = Vec::new();
    for f in &fields {
        match (f.number, f.wire_type) {
            (3, WireType::Len) => deps.extend(std::str::from_utf8(f.value).ok().map(str::to_owned)),
            (FILE_BUF_IMAGE, WireType::Len) => {
                if let Ok(ext) = wire::fields(f.value) {
                    is_import = Some(
                        ext.iter()
                            .any(|e| e.number == IMAGE_IS_IMPORT && e.value.first() == Some(&1)),
                    );
                }
            }
            _ => {}
        }
    }
    (is_import, deps)
}

/// Adds `name` from `source` (and, first, what it imports) unless the set has it already.
fn add_with_dependencies(
    pool: &mut DescriptorPool,
    source: &DescriptorPool,
    name: &str,
    present: &BTreeSet<String>,
    added: &mut BTreeSet<String>,
) -> Result<(), DecodeError> {
    if present.contains(name) || added.contains(name) {
        return Ok(());
    }
    let Some(file) = source.get_file_by_name(name) else {
        return Ok(());
    };
    for dep in file.dependencies() {
        add_with_dependencies(pool, source, dep.name(), present, added)?;
    }
    pool.add_file_descriptor_proto(file.file_descriptor_proto().clone())?;
    added.insert(name.to_owned());
    Ok(())
}
