//! Source positions of descriptor elements, from `source_code_info`.

use prost_reflect::{DescriptorPool, Kind};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A 1-based position in a `.proto` file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Start positions of every element that has source info, per file.
///
/// Descriptor sets built without source info (`buf build --exclude-source-info`) simply
/// yield no locations.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceIndex {
    files: Arc<HashMap<String, FileSpans>>,
}

#[derive(Clone, Debug, Default)]
struct FileSpans {
    spans: Spans,
    /// Map entry messages (source path) and where their map field starts.
    entries: Spans,
}

/// 1-based `(line, column)` by source path within one file.
type Spans = HashMap<Vec<i32>, (u32, u32)>;

impl SourceIndex {
    pub(crate) fn new(pool: &DescriptorPool) -> Self {
        let mut files = HashMap::new();
        for proto in pool.file_descriptor_protos() {
            let Some(info) = &proto.source_code_info else {
                continue;
            };
            let mut spans: Spans = HashMap::with_capacity(info.location.len());
            for loc in &info.location {
                if let (Some(&line), Some(&col)) = (loc.span.first(), loc.span.get(1)) {
                    // Several locations can share a path (repeated `reserved`; an option as a
                    // whole and its value): the earliest in the file is where it starts.
                    let at = (line as u32 + 1, col as u32 + 1);
                    spans.entry(loc.path.clone()).and_modify(|e| *e = (*e).min(at)).or_insert(at);
                }
            }
            files.insert(proto.name().to_owned(), FileSpans { spans, entries: Spans::new() });
        }
        // A map field's entry type is written nowhere: what is said of it (its key or value
        // type, its JSON form) is said at the `map<…>` field, as buf does.
        for message in pool.all_messages() {
            for field in message.fields().filter(|f| f.is_map()) {
                let (Kind::Message(entry), Some(file)) = (field.kind(), files.get_mut(field.parent_file().name())) else { continue };
                if let Some(&at) = file.spans.get(field.path()) {
                    file.entries.insert(entry.path().to_vec(), at);
                }
            }
        }
        SourceIndex {
            files: Arc::new(files),
        }
    }

    /// protox places a field's `default` option at its value; protoc and buf at the option's
    /// name. Given the file's text, moves each one back over `=` and blanks to the name.
    #[cfg(feature = "runtime")]
    pub(crate) fn place_defaults_at_names(&mut self, file: &str, text: &str) {
        // Source path numbers: `DescriptorProto.field` and `.extension`,
        // `FileDescriptorProto.extension`, `FieldDescriptorProto.default_value`.
        const FIELD: i32 = 2;
        const EXTENSION: i32 = 6;
        const FILE_EXTENSION: i32 = 7;
        const DEFAULT_VALUE: i32 = 7;
        let Some(f) = Arc::make_mut(&mut self.files).get_mut(file) else { return };
        let lines: Vec<&str> = text.lines().collect();
        for (path, at) in f.spans.iter_mut() {
            let n = path.len();
            let is_default = n >= 3 && path[n - 1] == DEFAULT_VALUE && matches!(path[n - 3], FIELD | EXTENSION | FILE_EXTENSION);
            let Some(line) = lines.get(at.0 as usize - 1).filter(|_| is_default) else { continue };
            let Some(before) = line.get(..at.1 as usize - 1) else { continue };
            let Some(before) = before.trim_end().strip_suffix('=').map(str::trim_end) else { continue };
            if let Some(name) = before.strip_suffix("default") {
                at.1 = name.len() as u32 + 1;
            }
        }
    }

    /// The element at `path`, or the closest enclosing element with a recorded position.
    /// Anything inside a map entry is placed at its map field.
    pub(crate) fn find(&self, file: &str, path: &[i32]) -> Option<Location> {
        let FileSpans { spans, entries } = self.files.get(file)?;
        if let Some(&(line, column)) = (2..=path.len()).find_map(|n| entries.get(&path[..n])) {
            return Some(Location { file: file.to_owned(), line, column });
        }
        let mut len = path.len();
        loop {
            if let Some(&(line, column)) = spans.get(&path[..len]) {
                return Some(Location {
                    file: file.to_owned(),
                    line,
                    column,
                });
            }
            if len == 0 {
                return None;
            }
            len -= 1;
        }
    }
}
