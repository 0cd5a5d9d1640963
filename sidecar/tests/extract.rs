//! `switchyard-sidecar extract` against the real sidecar and the real model, read back by
//! engines nobody here wrote (DuckDB and pyarrow from PyPI, `tests/extract/read_parquet.py`):
//! one row per image with the vectors ExtractRealtime gives for the same bytes, failures as
//! rows, a resumed run after SIGINT and after SIGKILL with no duplicates, and bad inputs
//! named before any work.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Repo, Sidecar};
use switchyard_proto::features::v1::extract_realtime_request::ImageFormat;

/// The venv's Python with DuckDB and pyarrow; fails (never skips) when the set-up is missing.
fn python() -> PathBuf {
    let python = support::root().join(".venv/bin/python");
    assert!(python.exists(), "{} not found: run `cargo xtask setup`", python.display());
    let probe = Command::new(&python).args(["-c", "import duckdb, pyarrow"]).output().expect("run python");
    assert!(
        probe.status.success(),
        "duckdb and pyarrow are not installed in .venv (run `cargo xtask setup`, which installs xtask/requirements.txt): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

/// What DuckDB and pyarrow read from `out`.
fn read_back(out: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/extract/read_parquet.py");
    let run = Command::new(python()).arg(script).arg(out).output().expect("run read_parquet.py");
    assert!(run.status.success(), "read_parquet.py failed: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stdout)))
}

fn extract_command(target: &str, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-sidecar"));
    cmd.args(["extract", "--target", target, "--output"]).arg(out).args(args).arg("--no-progress");
    cmd
}

/// Runs `extract` to the end: (exit code, its summary line, stderr).
fn extract(target: &str, out: &Path, args: &[&str]) -> (i32, Value, String) {
    let Output { status, stdout, stderr } = extract_command(target, out, args).output().expect("run extract");
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let summary = String::from_utf8_lossy(&stdout).lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (status.code().unwrap_or(-1), summary, stderr)
}

fn start_sidecar() -> (Repo, Sidecar) {
    let repo = Repo::with(&[("orientation", &[1])]);
    let sidecar = Sidecar::start(repo.path(), &support::config(""));
    (repo, sidecar)
}

/// The prepared test images (8 pages, 16 benchmark photos), as (file name, bytes).
fn real_images() -> Vec<(String, Vec<u8>)> {
    let data = support::root().join("var/testdata");
    let mut images = Vec::new();
    for dir in ["pages", "bench"] {
        for entry in std::fs::read_dir(data.join(dir)).expect("var/testdata: run `cargo xtask setup`") {
            let path = entry.unwrap().path();
            images.push((path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()));
        }
    }
    images.sort();
    assert!(images.len() >= 20, "expected the prepared test images in {}", data.display());
    images
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("a vector").iter().map(|x| x.as_f64().expect("a float") as f32).collect()
}

/// Batched and single inference may round differently in the last bits.
fn assert_close(path: &str, engine: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{engine}: {path}: vector length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "{engine}: {path}: features[{i}] = {a}, ExtractRealtime says {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_becomes_parquet_that_duckdb_and_pyarrow_read_with_realtime_vectors_and_error_rows() {
    python();
    let (_repo, sidecar) = start_sidecar();
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    std::fs::create_dir_all(images.join("nested")).unwrap();
    let good = real_images();
    for (i, (name, bytes)) in good.iter().enumerate() {
        // Some in a subdirectory: the walk is recursive.
        let dir = if i % 3 == 0 { images.join("nested") } else { images.clone() };
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image\n").unwrap();
    std::fs::write(images.join("truncated.jpg"), &good[0].1[..200]).unwrap();
    // Unreadable even for root: a link to nothing.
    std::os::unix::fs::symlink(work.path().join("gone.jpg"), images.join("unreadable.jpg")).unwrap();
    let out = work.path().join("out");

    let target = format!("http://{}", sidecar.grpc);
    let started = Instant::now();
    let (code, summary, stderr) = extract(&target, &out, &["--dir", images.to_str().unwrap(), "--batch-size", "5"]);
    eprintln!("extract of {} files took {:.1} s: {summary}", good.len() + 3, started.elapsed().as_secs_f64());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["rows_written"], good.len() + 3, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    assert_eq!(summary["interrupted"], false);

    let read = read_back(&out);
    let rows = read["duckdb"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), good.len() + 3, "DuckDB row count");
    assert_eq!(read["pyarrow"]["num_rows"], good.len() + 3, "pyarrow row count");
    assert_eq!(read["pyarrow"]["features_type"], "fixed_size_list<item: float not null>[1280]");
    assert_eq!(read["pyarrow"]["model_versions"], serde_json::json!(["orientation/1"]));
    let by_path: HashMap<&str, &Value> = rows.iter().map(|r| (r["path"].as_str().unwrap(), r)).collect();

    // The failures are rows with a code and a message naming what is wrong.
    let failure = |name: &str| by_path.get(images.join(name).to_str().unwrap()).unwrap_or_else(|| panic!("no row for {name}"));
    let (notes, truncated, unreadable) = (failure("notes.txt"), failure("truncated.jpg"), failure("unreadable.jpg"));
    assert_eq!(notes["error_code"], tonic::Code::InvalidArgument as i32, "{notes}");
    assert_eq!(truncated["error_code"], tonic::Code::InvalidArgument as i32, "{truncated}");
    assert_eq!(unreadable["error_code"], tonic::Code::NotFound as i32, "{unreadable}");
    assert!(unreadable["error_message"].as_str().unwrap().contains("unreadable.jpg"), "{unreadable}");
    assert_eq!(unreadable["sha256"], Value::Null);
    assert_eq!(notes["sha256"], support::sha256(b"not an image\n"));
    for row in [notes, truncated, unreadable] {
        assert_eq!(row["features"], Value::Null, "{row}");
        assert_eq!(row["model_version"], Value::Null, "{row}");
    }

    // Every good image: its hash, its scores, and the vector ExtractRealtime gives for it.
    let mut client = sidecar.client();
    for (i, (name, bytes)) in good.iter().enumerate() {
        let path = if i % 3 == 0 { images.join("nested").join(name) } else { images.join(name) };
        let path = path.to_str().unwrap();
        let row = by_path.get(path).unwrap_or_else(|| panic!("no row for {path}"));
        assert_eq!(row["error_code"], Value::Null, "{row}");
        assert_eq!(row["sha256"], support::sha256(bytes));
        assert_eq!(row["model_version"], "orientation/1");
        assert_eq!(row["features_len"], 1280);
        let realtime = client.extract_realtime(support::request(bytes.clone(), ImageFormat::Unknown)).await.unwrap().into_inner();
        let mut names: Vec<&String> = realtime.quality_scores.keys().collect();
        names.sort();
        assert_eq!(row["quality_scores"], serde_json::json!(names), "{path}");
        assert_close(path, "duckdb", &f32s(&row["features"]), &realtime.feature_vector);
        assert_close(path, "pyarrow", &f32s(&read["pyarrow"]["features"][path]), &realtime.feature_vector);
    }
    let describe = read["duckdb"]["describe"].as_array().unwrap();
    eprintln!("DuckDB DESCRIBE: {}", serde_json::to_string(describe).unwrap());
    let types: HashMap<&str, &str> = describe.iter().map(|c| (c[0].as_str().unwrap(), c[1].as_str().unwrap())).collect();
    assert_eq!(types["features"], "FLOAT[]");
    assert_eq!(types["quality_scores"], "MAP(VARCHAR, FLOAT)");
    assert_eq!(types["processed_at"], "TIMESTAMP WITH TIME ZONE");
    assert_eq!(types["error_code"], "INTEGER");

    // The same command again has nothing left to do and writes nothing.
    let (code, summary, stderr) = extract(&target, &out, &["--dir", images.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["already_extracted"], good.len() + 3, "{summary}");
    assert_eq!(summary["rows_written"], 0, "{summary}");
    assert_eq!(summary["files"], serde_json::json!([]));
}

/// Lists every file of `out`, committed or not.
fn files(out: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for dir in std::fs::read_dir(out).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            all.extend(std::fs::read_dir(&dir).unwrap().map(|f| f.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    all.sort();
    all
}

/// Starts `extract` and kills it with `signal` once `committed` part files exist.
fn interrupt_after(cmd: &mut Command, out: &Path, committed: usize, signal: i32) -> (i32, Value, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start extract");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = out.is_dir() && files(out).iter().filter(|f| f.starts_with("part-")).count() >= committed;
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no {committed} committed files within 120 s: {:?}", out.is_dir().then(|| files(out)));
        assert!(child.try_wait().unwrap().is_none(), "extract ended before it was interrupted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = String::from_utf8_lossy(&output.stdout).lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), summary, stderr)
}

#[test]
fn an_interrupted_run_resumes_without_duplicates_after_sigint_and_after_sigkill() {
    python();
    let (_repo, sidecar) = start_sidecar();
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    // Enough images that a run is still going when it is interrupted.
    let good = real_images();
    const IMAGES: usize = 240;
    for i in 0..IMAGES {
        let (name, bytes) = &good[i % good.len()];
        std::fs::write(images.join(format!("{i:04}-{name}")), bytes).unwrap();
    }
    let out = work.path().join("out");
    let target = format!("http://{}", sidecar.grpc);
    let args = ["--dir", images.to_str().unwrap(), "--batch-size", "4", "--concurrency", "1", "--max-rows-per-file", "8"];

    // Ctrl-C: the calls in flight finish, every file is committed, exit 130.
    let (code, first, stderr) = interrupt_after(&mut extract_command(&target, &out, &args), &out, 2, libc::SIGINT);
    assert_eq!(code, 130, "{first}\n{stderr}");
    assert_eq!(first["interrupted"], true, "{first}");
    let written = first["rows_written"].as_u64().unwrap() as usize;
    assert!(written > 0 && written < IMAGES, "{first}");
    assert!(files(&out).iter().all(|f| f.starts_with("part-")), "a temporary file was left after SIGINT: {:?}", files(&out));
    let read = read_back(&out);
    assert_eq!(read["pyarrow"]["num_rows"], written, "rows readable after SIGINT");

    // SIGKILL: nothing is closed; what was committed stays readable, the rest is redone.
    let (code, second, _) = interrupt_after(&mut extract_command(&target, &out, &args), &out, files(&out).len() + 2, libc::SIGKILL);
    assert_eq!(code, -1, "killed");
    assert_eq!(second, Value::Null, "a killed run prints no summary");
    let read = read_back(&out);
    let committed_rows = read["pyarrow"]["num_rows"].as_u64().unwrap() as usize;
    assert!(committed_rows > written, "the killed run committed files");

    // The rerun: the unfinished file is discarded, only what is missing is extracted.
    let (code, third, stderr) = extract(&target, &out, &args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(third["already_extracted"], committed_rows, "{third}");
    assert_eq!(third["rows_written"].as_u64().unwrap() as usize, IMAGES - committed_rows, "{third}");
    let read = read_back(&out);
    let rows = read["duckdb"]["rows"].as_array().unwrap();
    let mut paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), IMAGES, "every image once");
    paths.dedup();
    assert_eq!(paths.len(), IMAGES, "no duplicates");
    assert!(rows.iter().all(|r| r["features_len"] == 1280 && r["error_code"].is_null()));
    assert!(files(&out).iter().all(|f| f.starts_with("part-")), "{:?}", files(&out));
}

#[test]
fn bad_inputs_are_named_and_nothing_written_is_lost() {
    python();
    let (_repo, sidecar) = start_sidecar();
    let target = format!("http://{}", sidecar.grpc);
    let work = tempfile::tempdir().unwrap();
    let good = real_images();
    std::fs::write(work.path().join("a.jpg"), &good[0].1).unwrap();
    std::fs::write(work.path().join("list.txt"), "a.jpg\nmissing-1.jpg\n# a comment\nsub/missing-2.png\n").unwrap();
    let out = work.path().join("out");
    let list = work.path().join("list.txt");
    let list = list.to_str().unwrap();

    // Missing listed paths are named on stderr and become NOT_FOUND rows.
    let (code, summary, stderr) = extract(&target, &out, &["--list", list]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("2 listed paths do not exist") && stderr.contains("missing-1.jpg") && stderr.contains("sub/missing-2.png"), "{stderr}");
    assert_eq!(summary["failed"], 2, "{summary}");
    let rows = read_back(&out)["duckdb"]["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    let missing: Vec<&Value> = rows.iter().filter(|r| r["error_code"] == tonic::Code::NotFound as i32).collect();
    assert_eq!(missing.len(), 2, "{rows:?}");
    assert!(missing.iter().all(|r| r["error_message"].as_str().unwrap().contains("missing-")), "{missing:?}");

    // A directory of non-images: one error row each, the run completes.
    let texts = work.path().join("texts");
    std::fs::create_dir_all(&texts).unwrap();
    for name in ["a.txt", "b.csv", "c.jpg"] {
        std::fs::write(texts.join(name), "x,y\n1,2\n").unwrap();
    }
    let (code, summary, stderr) = extract(&target, &out, &["--dir", texts.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary["rows_written"], 3, "{summary}");
    assert_eq!(summary["failed"], 3, "{summary}");
    let read = read_back(&out);
    assert_eq!(read["pyarrow"]["num_rows"], 6, "earlier rows kept");

    // An output directory that cannot take files is refused before anything else — even
    // before the (unreachable) model server is tried. /sys refuses even root.
    let blocker = work.path().join("a-file");
    std::fs::write(&blocker, "").unwrap();
    for unwritable in [PathBuf::from("/sys/kernel"), blocker.join("out")] {
        let (code, _, stderr) = extract("http://127.0.0.1:1", &unwritable, &["--list", list]);
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains(&format!("the output directory {} is not writable", unwritable.display())), "{stderr}");
    }

    // A model server that does not answer is named; nothing written before is touched.
    let (code, _, stderr) = extract("http://127.0.0.1:1", &out, &["--dir", texts.to_str().unwrap(), "--list", list]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot connect to the model server at http://127.0.0.1:1"), "{stderr}");
    // A missing image directory is named.
    let (code, _, stderr) = extract(&target, &out, &["--dir", "/nonexistent/images"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/images"), "{stderr}");
    assert_eq!(read_back(&out)["pyarrow"]["num_rows"], 6, "earlier rows kept");
}

/// The Spark example (examples/spark/extract_job.py) in Spark's local mode, with PyPI
/// `pyspark` on the machine's Java, against the same sidecar: its rows equal the Rust
/// command's, DuckDB reads its output, and Spark reads the Rust command's output.
#[test]
fn the_spark_example_writes_what_extract_writes_and_spark_reads_extracts_output() {
    let python = python();
    let probe = Command::new(&python).args(["-c", "import pyspark, pandas, grpc_tools"]).output().expect("run python");
    assert!(probe.status.success(), "pyspark is not installed in .venv (run `cargo xtask setup`): {}", String::from_utf8_lossy(&probe.stderr));
    let (_repo, sidecar) = start_sidecar();
    let work = tempfile::tempdir().unwrap();
    let images = work.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let good = real_images();
    let mut list = String::new();
    for (name, bytes) in &good {
        std::fs::write(images.join(name), bytes).unwrap();
        list += &format!("{}\n", images.join(name).display());
    }
    std::fs::write(images.join("notes.txt"), "not an image\n").unwrap();
    list += &format!("{}\n{}\n", images.join("notes.txt").display(), work.path().join("missing.jpg").display());
    let paths = work.path().join("paths.txt");
    std::fs::write(&paths, list).unwrap();

    let rust_out = work.path().join("rust-out");
    let (code, _, stderr) = extract(&format!("http://{}", sidecar.grpc), &rust_out, &["--list", paths.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let rust = read_back(&rust_out);

    let spark_out = work.path().join("spark-out");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/extract/spark_run.py");
    // To files, not pipes: Spark writes far more to stderr than a pipe holds unread.
    let (stdout, stderr) = (work.path().join("spark.out"), work.path().join("spark.err"));
    let started = Instant::now();
    let mut child = Command::new(&python)
        .arg(script)
        .arg(&rust_out)
        .arg("--")
        .args(["--paths", paths.to_str().unwrap(), "--targets", &sidecar.grpc.to_string(), "--output", spark_out.to_str().unwrap()])
        .args(["--batch-size", "8", "--partitions", "2"])
        .env("PYSPARK_PYTHON", &python)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start spark_run.py");
    // A couple of minutes at most (about one on two shared cores), or the test fails.
    let limit = Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Spark job took longer than {limit:?}: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "spark_run.py failed: {}", std::fs::read_to_string(&stderr).unwrap_or_default());
    let stdout = std::fs::read_to_string(&stdout).unwrap();
    let spark: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!(
        "Spark: job {:.1} s (session start {:.1} s, whole script {:.1} s, wall {:.1} s)",
        spark["job"]["seconds"].as_f64().unwrap(),
        spark["session_seconds"].as_f64().unwrap(),
        spark["total_seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );
    let total = good.len() + 2;
    assert_eq!(spark["job"]["rows"], total, "{}", spark["job"]);
    assert_eq!(spark["job"]["failed"], 2, "{}", spark["job"]);

    // The job's rows are the Rust command's rows.
    let rust_rows: HashMap<&str, &Value> = rust["duckdb"]["rows"].as_array().unwrap().iter().map(|r| (r["path"].as_str().unwrap(), r)).collect();
    let spark_rows = spark["spark_output"].as_object().unwrap();
    assert_eq!(spark_rows.len(), total);
    for (path, row) in spark_rows {
        let want = rust_rows.get(path.as_str()).unwrap_or_else(|| panic!("Spark wrote {path}, extract did not"));
        assert_eq!(row["error_code"], want["error_code"], "{path}");
        assert_eq!(row["model_version"], want["model_version"], "{path}");
        assert_eq!(row["sha256"], want["sha256"], "{path}");
        if want["error_code"].is_null() {
            assert_close(path, "spark job", &f32s(&row["features"]), &f32s(&want["features"]));
        }
    }
    // DuckDB reads the Spark job's output (model_version from its directories).
    let duck = read_back(&spark_out);
    assert_eq!(duck["duckdb"]["rows"].as_array().unwrap().len(), total);
    assert!(duck["duckdb"]["rows"].as_array().unwrap().iter().all(|r| r["error_code"].is_null() == (r["features_len"] == 1280)));
    assert_eq!(duck["pyarrow"]["model_versions"], serde_json::json!(["orientation/1"]));

    // Spark reads the Rust command's output: every row, the vectors as array<float>.
    let read = &spark["rust_output"];
    eprintln!("Spark reads extract's output as {}", read["schema"]);
    assert!(read["schema"].as_str().unwrap().contains("features:array<float>"), "{}", read["schema"]);
    let rows = read["rows"].as_object().unwrap();
    assert_eq!(rows.len(), total);
    for (path, row) in rows {
        let want = rust_rows[path.as_str()];
        assert_eq!(row["model_version"], want["model_version"], "{path}");
        if want["error_code"].is_null() {
            assert_eq!(f32s(&row["features"]), f32s(&want["features"]), "{path}");
        }
    }
}
