//! Rows → Parquet part files, one set per model version, each file rolled over at a row or
//! byte limit and committed by an atomic rename once its footer is written.
//!
//! Rows are kept in memory until a record batch's worth is there. Failed images (no model
//! version) wait for the vector width to be known — from a committed file of an earlier run
//! or this run's first answer — so that every file of the output has one `features` type and
//! the engines can read them as one table.

use super::layout;
use super::row::Row;
use super::table;
use anyhow::{Context, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows per row group: about 10 MB of 1280-float vectors, which the writer holds in memory
/// per open part; large enough for engines to read efficiently.
const ROW_GROUP_ROWS: usize = 2048;

/// When a part file is closed and the next one started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_rows_per_file: u64,
    pub max_bytes_per_file: u64,
    /// Rows handed to the Parquet writer at once.
    pub rows_per_batch: usize,
}

pub(crate) struct PartitionedWriter {
    root: PathBuf,
    limits: Limits,
    /// Names this run's files apart from every earlier run's.
    run: String,
    /// The model's vector width, once known.
    feature_len: Option<usize>,
    partitions: BTreeMap<Option<String>, Partition>,
    committed: Vec<PathBuf>,
}

#[derive(Default)]
struct Partition {
    pending: Vec<Row>,
    part: Option<Part>,
    next_seq: u32,
}

/// The file being written: under its temporary name until committed.
struct Part {
    writer: ArrowWriter<File>,
    temp: PathBuf,
    committed: PathBuf,
    rows: u64,
}

impl PartitionedWriter {
    pub(crate) fn new(root: &Path, limits: Limits, run: String, feature_len: Option<usize>) -> Self {
        PartitionedWriter { root: root.to_path_buf(), limits, run, feature_len, partitions: BTreeMap::new(), committed: Vec::new() }
    }

    pub(crate) fn push(&mut self, row: Row) -> Result<()> {
        if self.feature_len.is_none() {
            self.feature_len = row.features.as_ref().map(Vec::len);
        }
        let key = row.model_version.clone();
        let partition = self.partitions.entry(key.clone()).or_default();
        partition.pending.push(row);
        if partition.pending.len() >= self.limits.rows_per_batch {
            self.flush(&key)?;
        }
        Ok(())
    }

    /// Writes every pending row, commits every open part and returns the files this run
    /// committed. Failed rows whose width never became known are written with width 0.
    pub(crate) fn close(mut self) -> Result<Vec<PathBuf>> {
        let keys: Vec<Option<String>> = self.partitions.keys().cloned().collect();
        if self.feature_len.is_none() {
            self.feature_len = Some(0);
        }
        for key in &keys {
            self.flush(key)?;
        }
        for key in &keys {
            if let Some(part) = self.partitions.get_mut(key).and_then(|p| p.part.take()) {
                self.committed.push(part.commit()?);
            }
        }
        Ok(self.committed)
    }

    /// Writes a partition's pending rows, if their width is known, rolling to a new part when
    /// the current one reached a limit.
    fn flush(&mut self, key: &Option<String>) -> Result<()> {
        let Some(feature_len) = self.feature_len else { return Ok(()) };
        let dir = layout::partition_dir(&self.root, key.as_deref());
        let Some(partition) = self.partitions.get_mut(key) else { return Ok(()) };
        if partition.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut partition.pending);
        let batch = table::record_batch(&rows, feature_len)?;
        if partition.part.is_none() {
            partition.part = Some(Part::create(&dir, &self.run, partition.next_seq, feature_len)?);
            partition.next_seq += 1;
        }
        let Some(part) = partition.part.as_mut() else { return Ok(()) };
        part.writer.write(&batch).with_context(|| format!("writing {}", part.temp.display()))?;
        part.rows += rows.len() as u64;
        let bytes = part.writer.bytes_written() + part.writer.in_progress_size();
        if part.rows >= self.limits.max_rows_per_file || bytes as u64 >= self.limits.max_bytes_per_file {
            if let Some(full) = partition.part.take() {
                self.committed.push(full.commit()?);
            }
        }
        Ok(())
    }
}

impl Part {
    fn create(dir: &Path, run: &str, seq: u32, feature_len: usize) -> Result<Part> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (temp, committed) = layout::part_names(dir, run, seq);
        let file = File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_created_by(format!("switchyard-sidecar extract {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(file, table::schema(i32::try_from(feature_len)?), Some(properties))
            .with_context(|| format!("starting {}", temp.display()))?;
        Ok(Part { writer, temp, committed, rows: 0 })
    }

    /// Writes the footer, syncs the file and gives it its committed name.
    fn commit(self) -> Result<PathBuf> {
        let file = self.writer.into_inner().with_context(|| format!("finishing {}", self.temp.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.committed)
            .with_context(|| format!("renaming {} to {}", self.temp.display(), self.committed.display()))?;
        // The rename is durable once the directory entry is.
        if let Some(dir) = self.committed.parent() {
            File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
        }
        Ok(self.committed)
    }
}
