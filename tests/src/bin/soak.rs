//! `cargo xtask soak`: the churn soak and its report (`target/soak/report.json`) and plot
//! (`target/soak/soak.svg`). See `testbed::soak`.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;
use testbed::soak;

#[derive(Parser)]
#[command(name = "switchyard-soak", about = "Run the demo stack under load while its models, schemas, configuration and processes change; report")]
struct Args {
    /// Minutes of load (after a short calibration).
    #[arg(long, default_value_t = 20.0)]
    minutes: f64,
    /// Which build of the filter Envoy loads.
    #[arg(long, default_value = "wasm", value_parser = ["wasm", "native"])]
    filter: String,
    /// Share of the measured capacity offered as load.
    #[arg(long, default_value_t = soak::Options::default().load_share)]
    load_share: f64,
    /// Directory for report.json and soak.svg.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !(args.minutes > 0.0 && args.minutes <= 24.0 * 60.0) {
        bail!("--minutes {}: between 0 and 1440", args.minutes);
    }
    if !(args.load_share > 0.0 && args.load_share <= 2.0) {
        bail!("--load-share {}: between 0 and 2", args.load_share);
    }
    // The testbed reads the build from SWITCHYARD_FILTER (set before any thread exists).
    std::env::set_var("SWITCHYARD_FILTER", &args.filter);
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let options = soak::Options { duration: Duration::from_secs_f64(args.minutes * 60.0), load_share: args.load_share };
    let run = soak::run(&options).await?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let report_path = args.out.join("report.json");
    std::fs::write(&report_path, serde_json::to_vec_pretty(&run.report)?).with_context(|| format!("write {}", report_path.display()))?;
    let samples_path = args.out.join("samples.csv");
    std::fs::write(&samples_path, soak::report::samples_csv(&run.samples, run.started))?;
    std::fs::write(args.out.join("memory.csv"), soak::report::memory_csv(&run.memory))?;
    let plot_path = args.out.join("soak.svg");
    std::fs::write(&plot_path, soak::plot::svg(&run.report, &run.samples, &run.events, &run.memory, run.started))?;
    let r = &run.report;
    println!(
        "\nsoak: {} min, {} requests at {}/s ({:.0} % of {:.1}/s), {} unexpected failures, expected {:?}",
        r.minutes,
        r.requests,
        r.load_rps,
        args.load_share * 100.0,
        r.capacity_rps,
        r.unexpected_failures,
        r.failures.expected
    );
    println!(
        "latency ms: p50 {} p99 {}, steady p99 {}, p99 during swaps {} ({}×, {} answers)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.steady_p99, r.latency_ms.p99_during_swaps, r.latency_ms.p99_during_swaps_over_steady, r.latency_ms.during_swaps_samples
    );
    println!("RSS MB [after warm-up, end, max]: {:?}; growth %: {:?}; trend %: {:?}", r.rss_mb, r.rss_growth_pct, r.rss_trend_pct);
    println!("sidecar malloc in use MiB [after warm-up, end, max]: {:?}", r.sidecar_heap_in_use_mb);
    println!("report:  {}\nplot:    {}\nanswers: {}", report_path.display(), plot_path.display(), samples_path.display());
    let shortfalls = r.shortfalls();
    if !shortfalls.is_empty() {
        bail!("the soak missed its goals:\n- {}", shortfalls.join("\n- "));
    }
    Ok(())
}
