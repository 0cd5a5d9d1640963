//! Source positions of descriptor elements, from `source_code_info`.

use prost_reflect::DescriptorPool;
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
    files: Arc<HashMap<String, Spans>>,
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
            let mut spans = HashMap::with_capacity(info.location.len());
            for loc in &info.location {
                if let (Some(&line), Some(&col)) = (loc.span.first(), loc.span.get(1)) {
                    // Several locations can share a path (e.g. repeated `reserved`); the
                    // first is the earliest in the file.
                    spans
                        .entry(loc.path.clone())
                        .or_insert((line as u32 + 1, col as u32 + 1));
                }
            }
            files.insert(proto.name().to_owned(), spans);
        }
        SourceIndex {
            files: Arc::new(files),
        }
    }

    /// The element at `path`, or the closest enclosing element with a recorded position.
    pub(crate) fn find(&self, file: &str, path: &[i32]) -> Option<Location> {
        let spans = self.files.get(file)?;
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
