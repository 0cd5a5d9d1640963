//! `switchyard-sidecar`: see `--help` and sidecar/README.md.

use clap::Parser;
use switchyard_sidecar::cli::{Cli, Command, LogFormat};
use switchyard_sidecar::registry;
use switchyard_sidecar::serve::Sidecar;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Command::Schema(args) = cli.command {
        return switchyard_schema::cli::run(args);
    }
    if let Command::Extract(args) = cli.command {
        return extract(&args);
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("switchyard-sidecar: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            if args.check {
                println!("ok");
                return Ok(());
            }
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let preprocess = config.runtime.preprocess_thread_count();
            // The blocking pool does image pre-processing (and the occasional reload): sized
            // to the CPUs so it does not crowd out the inference threads.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(cpus.min(4))
                .max_blocking_threads(preprocess + 1)
                .thread_name("sidecar")
                .build()?;
            // The registry loads (and starts watching) its directory before anything serves.
            let registry = match &config.schema {
                Some(schema) => Some(switchyard_schema::registry::Registry::open(schema.clone())?),
                None => None,
            };
            let _watch = match &registry {
                Some(r) if r.config().dir.is_some() => Some(runtime.block_on(async { r.watch() })?),
                _ => None,
            };
            let sidecar = registry::mount(Sidecar::new(config), registry.clone());
            let sidecar = switchyard_sidecar::confluent::mount(sidecar, registry)?;
            runtime.block_on(sidecar.run())
        }
        // Handled on their own: they have exit codes of their own.
        Command::Schema(_) | Command::Extract(_) => Ok(()),
    }
}

/// `extract`: exit 0 when every image has a row, 130 when a signal stopped it (rerun to
/// continue), 1 on an error.
fn extract(args: &switchyard_sidecar::cli::ExtractArgs) -> std::process::ExitCode {
    use switchyard_sidecar::extract::Outcome;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("extract")
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(switchyard_sidecar::extract::run(args)));
    match outcome {
        Ok(Outcome::Complete) => std::process::ExitCode::SUCCESS,
        Ok(Outcome::Interrupted) => std::process::ExitCode::from(130),
        Err(e) => {
            eprintln!("switchyard-sidecar extract: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: a log file or `kubectl logs` would show the
    // escape codes, and a grep for `field=value` would not match.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
