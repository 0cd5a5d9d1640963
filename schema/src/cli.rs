//! The `schema` command line, shaped like buf's: `schema breaking`, `schema validate`,
//! `schema ls`. The sidecar binary mounts [`SchemaArgs`] as a subcommand and calls [`run`].
//!
//! Exit codes: 0 clean; 100 breaking changes found / payload invalid (as `buf breaking`);
//! 1 bad input (unreadable or unparsable schema, unknown type…), with a message on stderr.

use crate::breaking::{check, Category, Finding};
use crate::compile;
use crate::registry::{Registry, RegistryConfig};
use crate::schema::Schema;
use crate::validate::{self, Policy, UnknownFields, Validation, WireTypeMismatch};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for breaking changes or invalid payloads (buf's convention).
pub const EXIT_FINDINGS: u8 = 100;

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    pub command: SchemaCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// Report breaking changes of NEW against OLD (`buf breaking NEW --against OLD`).
    Breaking(BreakingArgs),
    /// Validate an encoded message (or gRPC frames) against a schema.
    Validate(ValidateArgs),
    /// Describe a schema, or list a registry directory's subjects and revisions.
    Ls(LsArgs),
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum CategoryArg {
    #[default]
    Wire,
    WireJson,
}

impl From<CategoryArg> for Category {
    fn from(c: CategoryArg) -> Category {
        match c {
            CategoryArg::Wire => Category::Wire,
            CategoryArg::WireJson => Category::WireJson,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BreakingArgs {
    /// The new schema: a directory of .proto files or a binary FileDescriptorSet (.binpb).
    pub new: PathBuf,
    /// The old schema to compare against (same forms).
    #[arg(long)]
    pub against: PathBuf,
    #[arg(long, value_enum, default_value_t)]
    pub category: CategoryArg,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Also print Switchyard's warnings (value-changing changes the category allows).
    /// They never change the exit code.
    #[arg(long)]
    pub warnings: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The schema: a directory of .proto files or a binary FileDescriptorSet.
    pub schema: PathBuf,
    /// Full name of the message type, e.g. features.v1.ExtractRealtimeRequest.
    #[arg(long = "type")]
    pub message_type: String,
    /// The encoded payload file, or `-` for stdin.
    #[arg(long, default_value = "-")]
    pub payload: PathBuf,
    /// The payload is a gRPC body (5-byte length-prefixed frames).
    #[arg(long)]
    pub grpc_frames: bool,
    /// allow, warn or reject.
    #[arg(long, default_value = "warn")]
    pub unknown_fields: UnknownFields,
    /// A declared field with another wire type (the receiver would keep it as an unknown
    /// field and read the declared one as unset): warn or reject.
    #[arg(long, default_value = "reject")]
    pub wire_type_mismatch: WireTypeMismatch,
    #[arg(long, default_value_t = Policy::default().max_bytes)]
    pub max_bytes: usize,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// A schema (directory of .proto files or .binpb), or with --registry a watched directory.
    pub path: PathBuf,
    /// Treat PATH as a registry's watched directory and list its persisted subjects and
    /// revisions (read-only).
    #[arg(long)]
    pub registry: bool,
    /// The registry's state directory (default PATH/.switchyard).
    #[arg(long, requires = "registry")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Runs a `schema` subcommand, printing to stdout/stderr; bad input is reported on stderr
/// and exits 1.
pub fn run(args: SchemaArgs) -> ExitCode {
    match execute(args) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Runs a `schema` subcommand and returns its exit code (0 or [`EXIT_FINDINGS`]), or the
/// message for bad input.
pub fn execute(args: SchemaArgs) -> Result<u8, String> {
    match args.command {
        SchemaCommand::Breaking(a) => breaking(a),
        SchemaCommand::Validate(a) => validate_cmd(a),
        SchemaCommand::Ls(a) => ls(a),
    }
}

fn load(path: &Path) -> Result<Schema, String> {
    compile::load(path).map_err(|e| {
        if e.file.is_some() && path.is_dir() {
            format!("{}: {e}", path.display())
        } else {
            e.to_string()
        }
    })
}

fn breaking(args: BreakingArgs) -> Result<u8, String> {
    let new = load(&args.new)?;
    let old = load(&args.against)?;
    let report = check(&old, &new, args.category.into());
    let mut out = std::io::stdout().lock();
    let mut print = |f: &Finding, warning: bool| -> std::io::Result<()> {
        match args.format {
            Format::Text => {
                let prefix = if warning { "warning: " } else { "" };
                match &f.location {
                    Some(l) => writeln!(out, "{prefix}{}:{}:{}:{} ({})", l.file, l.line, l.column, f.message, f.rule),
                    None => writeln!(out, "{prefix}{}:{} ({})", f.element, f.message, f.rule),
                }
            }
            Format::Json => {
                let mut line = serde_json::json!({
                    "path": f.location.as_ref().map(|l| l.file.as_str()).unwrap_or(""),
                    "start_line": f.location.as_ref().map(|l| l.line).unwrap_or(0),
                    "start_column": f.location.as_ref().map(|l| l.column).unwrap_or(0),
                    "type": f.rule.id(),
                    "message": f.message,
                    "element": f.element,
                });
                if warning {
                    line["severity"] = "warning".into();
                }
                writeln!(out, "{line}")
            }
        }
    };
    let io = |e: std::io::Error| format!("writing output: {e}");
    for f in &report.findings {
        print(f, false).map_err(io)?;
    }
    if args.warnings {
        for f in &report.warnings {
            print(f, true).map_err(io)?;
        }
    }
    Ok(if report.is_breaking() { EXIT_FINDINGS } else { 0 })
}

fn validate_cmd(args: ValidateArgs) -> Result<u8, String> {
    let schema = load(&args.schema)?;
    let payload = if args.payload.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("reading stdin: {e}"))?;
        buf
    } else {
        std::fs::read(&args.payload).map_err(|e| format!("{}: {e}", args.payload.display()))?
    };
    let policy = Policy {
        unknown_fields: args.unknown_fields,
        wire_type_mismatch: args.wire_type_mismatch,
        max_bytes: args.max_bytes,
        ..Policy::default()
    };
    let descriptor = validate::find_message(schema.pool(), &args.message_type).map_err(|e| e.to_string())?;
    let result: Validation = if args.grpc_frames {
        validate::validate_grpc_frames(&descriptor, &payload, &policy)
    } else {
        validate::validate_message(&descriptor, &payload, &policy)
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&result).unwrap_or_default()),
        Format::Text => {
            for v in &result.violations {
                println!("{v}");
            }
            for v in &result.warnings {
                println!("warning: {v}");
            }
            if result.is_valid() {
                println!("valid {} ({} bytes)", args.message_type, payload.len());
            }
        }
    }
    Ok(if result.is_valid() { 0 } else { EXIT_FINDINGS })
}

fn ls(args: LsArgs) -> Result<u8, String> {
    if args.registry {
        return ls_registry(&args);
    }
    let schema = load(&args.path)?;
    let pool = schema.pool();
    let own: Vec<&str> = schema.own_files().collect();
    let subject = schema.default_subject().ok();
    let messages: Vec<String> = pool
        .all_messages()
        .filter(|m| own.contains(&m.parent_file().name()) && !m.is_map_entry())
        .map(|m| m.full_name().to_owned())
        .collect();
    let enums: Vec<String> = pool
        .all_enums()
        .filter(|e| own.contains(&e.parent_file().name()))
        .map(|e| e.full_name().to_owned())
        .collect();
    let rpcs: Vec<String> = pool
        .services()
        .filter(|s| own.contains(&s.parent_file().name()))
        .flat_map(|s| {
            s.methods()
                .map(|m| {
                    format!(
                        "{}({}{}) returns ({}{})",
                        m.full_name(),
                        if m.is_client_streaming() { "stream " } else { "" },
                        m.input().full_name(),
                        if m.is_server_streaming() { "stream " } else { "" },
                        m.output().full_name()
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "fingerprint": schema.fingerprint(),
                "subject": subject,
                "files": own,
                "editions": own
                    .iter()
                    .filter_map(|f| schema.edition(f).map(|e| (f.to_string(), e.name())))
                    .collect::<std::collections::BTreeMap<_, _>>(),
                "messages": messages,
                "enums": enums,
                "rpcs": rpcs,
            })
        ),
        Format::Text => {
            println!("fingerprint {}", schema.fingerprint());
            if let Some(s) = &subject {
                println!("subject     {s}");
            }
            for f in &own {
                match schema.edition(f) {
                    Some(edition) => println!("file        {f} (edition {})", edition.name()),
                    None => println!("file        {f}"),
                }
            }
            for r in &rpcs {
                println!("rpc         {r}");
            }
            for m in &messages {
                println!("message     {m}");
            }
            for e in &enums {
                println!("enum        {e}");
            }
        }
    }
    Ok(0)
}

/// Lists a registry's persisted state without touching it: with no watched directory the
/// registry only reads its state, and nothing is registered or written.
fn ls_registry(args: &LsArgs) -> Result<u8, String> {
    let state_dir = args.state_dir.clone().unwrap_or_else(|| args.path.join(".switchyard"));
    if !state_dir.join("registry.json").exists() {
        return Err(format!("{} holds no registry state (registry.json)", state_dir.display()));
    }
    let registry = Registry::open(RegistryConfig {
        dir: None,
        state_dir: Some(state_dir),
        ..RegistryConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let state = registry.state();
    match args.format {
        Format::Json => println!("{}", String::from_utf8_lossy(state.snapshot_json())),
        Format::Text => {
            println!("generation {}", state.generation);
            for s in state.subjects.values() {
                println!("{} (current {}, {} over {})", s.name, s.current().number, s.mode, s.category);
                for r in &s.revisions {
                    println!(
                        "  {:>3}  {}  {}{}",
                        r.number,
                        r.schema.fingerprint().short(),
                        r.source,
                        if r.forced { "  [forced]" } else { "" }
                    );
                }
            }
        }
    }
    Ok(0)
}
