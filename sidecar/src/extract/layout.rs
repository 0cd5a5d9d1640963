//! Where rows live on disk: one Hive-style directory per model version
//! (`model_version=orientation%2F1/`, what Spark, Trino and DuckDB prune on), immutable part
//! files in it, and hidden temporary files for the part being written.
//!
//! A part is written as `.part-….parquet.tmp` and renamed to `part-….parquet` once its footer
//! is on disk, so a committed name always holds a whole, readable file. Engines skip names
//! starting with `.` or `_`, so a part in progress never shows up in a query.

use std::path::{Path, PathBuf};

const KEY: &str = "model_version";
/// Hive's (and so Spark's and Trino's) directory name for a null partition value: rows of
/// images that failed before any model answered.
const NULL_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";
const TEMP_SUFFIX: &str = ".tmp";

/// The directory of a model version's rows (`None`: failed images).
pub(crate) fn partition_dir(root: &Path, model_version: Option<&str>) -> PathBuf {
    let value = model_version.map_or_else(|| NULL_VALUE.to_string(), escape);
    root.join(format!("{KEY}={value}"))
}

/// Whether `name` is a partition directory this layout writes.
pub(crate) fn is_partition_dir(name: &str) -> bool {
    name.starts_with(&format!("{KEY}="))
}

/// The committed name of the `seq`th part of run `run`, and its temporary name.
pub(crate) fn part_names(dir: &Path, run: &str, seq: u32) -> (PathBuf, PathBuf) {
    let name = format!("part-{run}-{seq:05}.parquet");
    (dir.join(format!(".{name}{TEMP_SUFFIX}")), dir.join(name))
}

/// A committed part: its rows count as extracted.
pub(crate) fn is_part(name: &str) -> bool {
    name.starts_with("part-") && name.ends_with(".parquet")
}

/// A part an interrupted run left unfinished: never committed, so never counted.
pub(crate) fn is_temp_part(name: &str) -> bool {
    name.starts_with(".part-") && name.ends_with(TEMP_SUFFIX)
}

/// Hive's path escaping (`FileUtils.escapePathName`): the characters that cannot appear in a
/// partition directory's value become `%XX`, as Spark and Trino expect to unescape them.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_ascii_control() || "\"#%'*/:=?\\\x7f{[]^".contains(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_values_are_escaped_the_hive_way() {
        let root = Path::new("/out");
        assert_eq!(partition_dir(root, Some("orientation/1")), Path::new("/out/model_version=orientation%2F1"));
        assert_eq!(partition_dir(root, Some("a=b:c")), Path::new("/out/model_version=a%3Db%3Ac"));
        assert_eq!(partition_dir(root, None), Path::new("/out/model_version=__HIVE_DEFAULT_PARTITION__"));
    }

    #[test]
    fn temporary_parts_are_hidden_and_not_parts() {
        let (temp, committed) = part_names(Path::new("/d"), "r1", 3);
        let (temp, committed) = (temp.file_name().unwrap().to_str().unwrap(), committed.file_name().unwrap().to_str().unwrap());
        assert_eq!(committed, "part-r1-00003.parquet");
        assert!(temp.starts_with('.') && is_temp_part(temp) && !is_part(temp));
        assert!(is_part(committed) && !is_temp_part(committed));
    }
}
