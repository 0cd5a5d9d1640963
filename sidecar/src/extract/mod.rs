//! `switchyard-sidecar extract`: bulk feature extraction into Parquet.
//!
//! Images from directories, globs and list files ([`source`]) are read and hashed, sent in
//! chunks through `ExtractBatch` at low priority ([`client`]), and written as rows
//! ([`row`], [`table`]) into part files partitioned by model version ([`writer`],
//! [`layout`]). A rerun into the same output skips the images its committed files hold
//! ([`ledger`]), so an interrupted run continues where it stopped, without duplicates.
//!
//! Ctrl-C (or SIGTERM) stops sending new chunks, lets the calls in flight finish, writes
//! their rows and commits every open file: everything written is readable. A second Ctrl-C
//! exits at once; the unfinished files are discarded by the next run.

mod client;
mod layout;
mod ledger;
mod progress;
mod row;
mod source;
mod table;
mod writer;

use crate::cli::ExtractArgs;
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a run ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every image has a row.
    Complete,
    /// Stopped by a signal; rerun to continue.
    Interrupted,
}

pub async fn run(args: &ExtractArgs) -> Result<Outcome> {
    let started = Instant::now();
    // Everything that can be wrong with the inputs is found before any image is sent.
    check_writable(&args.output)?;
    let sources = source::Sources { dirs: args.dirs.clone(), globs: args.globs.clone(), lists: args.lists.clone() };
    let images = source::collect(&sources)?;
    if !images.missing.is_empty() {
        let shown: Vec<&str> = images.missing.iter().take(10).map(String::as_str).collect();
        let more = images.missing.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        eprintln!("extract: {} listed paths do not exist (their rows will say so): {}{more}", images.missing.len(), shown.join(", "));
    }
    let ledger = ledger::Ledger::open(&args.output)?;
    for file in &ledger.discarded {
        eprintln!("extract: discarded {}, left unfinished by an interrupted run", file.display());
    }
    let todo: Vec<String> = images.paths.iter().filter(|p| !ledger.contains(p)).cloned().collect();
    let already = images.paths.len() - todo.len();
    eprintln!(
        "extract: {} images, {already} already in {} ({} files), {} to extract from {}",
        images.paths.len(),
        args.output.display(),
        ledger.files,
        todo.len(),
        args.target
    );
    let extractor = client::Extractor::connect(&args.target, &args.metadata()).await?;

    let stop = Stop::on_signals()?;
    let limits = writer::Limits {
        max_rows_per_file: args.max_rows_per_file.max(1),
        max_bytes_per_file: args.max_mib_per_file.max(1) << 20,
        rows_per_batch: args.batch_size.clamp(1, 1024),
    };
    let mut writer = writer::PartitionedWriter::new(&args.output, limits, run_id(), ledger.feature_len);
    let progress = progress::Progress::new(todo.len(), !args.no_progress);

    let chunks: Vec<Vec<String>> = todo.chunks(args.batch_size.max(1)).map(<[String]>::to_vec).collect();
    let mut calls = futures::stream::iter(chunks)
        .take_while(|_| std::future::ready(!stop.requested()))
        .map(|chunk| {
            let extractor = extractor.clone();
            async move { extractor.extract(chunk).await }
        })
        .buffered(args.concurrency.max(1));
    let (mut extracted, mut failed) = (0usize, 0usize);
    let mut error = None;
    while let Some(result) = calls.next().await {
        let rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                // The calls in flight still finish and their rows are kept.
                stop.request();
                error.get_or_insert(e);
                continue;
            }
        };
        let n = rows.len();
        let bad = rows.iter().filter(|r| r.error.is_some()).count();
        for row in rows {
            if let Err(e) = writer.push(row) {
                stop.request();
                error.get_or_insert(e);
            }
        }
        extracted += n;
        failed += bad;
        progress.advance(n, failed);
    }
    drop(calls);
    progress.finish();
    let files = writer.close().context("closing the output files")?;
    let seconds = started.elapsed().as_secs_f64();
    let interrupted = stop.requested() && error.is_none() && extracted < todo.len();
    println!(
        "{}",
        json!({
            "event": "extracted",
            "images": images.paths.len(),
            "already_extracted": already,
            "rows_written": extracted,
            "failed": failed,
            "remaining": todo.len() - extracted,
            "files": files,
            "interrupted": interrupted,
            "seconds": seconds,
            "images_per_s": extracted as f64 / seconds.max(1e-9),
        })
    );
    if let Some(e) = error {
        return Err(e.context(format!("extraction stopped after {extracted} of {} images; what was written is kept, rerun to continue", todo.len())));
    }
    if interrupted {
        eprintln!("extract: interrupted after {extracted} of {} images; every file written is complete, rerun to continue", todo.len());
        return Ok(Outcome::Interrupted);
    }
    Ok(Outcome::Complete)
}

/// Refuses an output directory that cannot take files, before any work: a probe file is
/// created and removed.
fn check_writable(output: &Path) -> Result<()> {
    let probe = output.join(".switchyard-extract-probe");
    let writable = std::fs::create_dir_all(output).and_then(|()| std::fs::write(&probe, b"")).and_then(|()| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        bail!("the output directory {} is not writable: {e}", output.display());
    }
    Ok(())
}

/// Names this run's part files: the start time in ms, unique across reruns.
fn run_id() -> String {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", since.as_millis(), std::process::id())
}

/// The first SIGINT or SIGTERM asks the run to stop; a second SIGINT exits at once.
#[derive(Clone)]
struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Installs the handlers now, so a signal from the start on is caught.
    fn on_signals() -> Result<Stop> {
        use tokio::signal::unix::{signal, SignalKind};
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let flag = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            flag.request();
            eprintln!("extract: stopping: finishing the calls in flight and closing the files (Ctrl-C again to abort)");
            interrupt.recv().await;
            eprintln!("extract: aborted; the next run discards the unfinished files");
            std::process::exit(130);
        });
        Ok(stop)
    }

    fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
