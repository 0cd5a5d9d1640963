//! What earlier runs into the same output already extracted: the `path` of every row of
//! every committed part. The data is the ledger — there is no manifest that a crash could
//! leave out of step with the files — and reading one string column is cheap next to
//! running the model.
//!
//! Parts an interrupted run never committed are deleted here: their images were not counted
//! as done, so this run extracts them again, once.

use super::layout;
use super::table;
use anyhow::{bail, Context, Result};
use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub(crate) struct Ledger {
    done: HashSet<String>,
    /// The vector width of the committed files, so this run writes the same.
    pub feature_len: Option<usize>,
    pub files: usize,
    /// Temporary parts of interrupted runs, deleted.
    pub discarded: Vec<PathBuf>,
}

impl Ledger {
    pub(crate) fn open(root: &Path) -> Result<Ledger> {
        let mut ledger = Ledger::default();
        for dir in read_dir_sorted(root)? {
            if !dir.is_dir() || !dir.file_name().and_then(|n| n.to_str()).is_some_and(layout::is_partition_dir) {
                continue;
            }
            for file in read_dir_sorted(&dir)? {
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else { continue };
                if layout::is_temp_part(name) {
                    std::fs::remove_file(&file).with_context(|| format!("removing the unfinished part {}", file.display()))?;
                    ledger.discarded.push(file);
                } else if layout::is_part(name) {
                    ledger.read_part(&file)?;
                }
            }
        }
        Ok(ledger)
    }

    pub(crate) fn contains(&self, path: &str) -> bool {
        self.done.contains(path)
    }

    fn read_part(&mut self, file: &Path) -> Result<()> {
        let mut open = || -> Result<()> {
            let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(file)?)?;
            let width = table::feature_len(builder.schema());
            match (self.feature_len, width) {
                (Some(known), Some(w)) if known != w && w != 0 && known != 0 => {
                    bail!("its vectors have {w} floats, other parts' {known}: one output directory holds one model's vectors")
                }
                (None | Some(0), Some(w)) => self.feature_len = Some(w),
                _ => {}
            }
            let Some(index) = builder.schema().index_of("path").ok() else { bail!("it has no `path` column") };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let paths = batch.column(0).as_any().downcast_ref::<StringArray>().context("`path` is not a string column")?;
                self.done.extend(paths.iter().flatten().map(str::to_owned));
            }
            Ok(())
        };
        open().with_context(|| format!("reading the committed part {} to resume", file.display()))?;
        self.files += 1;
        Ok(())
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut paths = entries.map(|e| e.map(|e| e.path())).collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}
