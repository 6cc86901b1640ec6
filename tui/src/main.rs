//! `skymap`: the terminal service-map explorer's commands.
//!
//! - [`filters`]: Hubble-style filter flags → `FlowFilter`s.
//! - [`output`]: flows as compact/json/table, the graph as json/dot/text.
//! - [`cmd`]: one module per command (observe, graph, replay).

mod cmd;
mod filters;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use color_eyre::eyre::Result;

use skymap_tui::conn;

use crate::filters::FilterArgs;

/// skymap: Kubernetes network flows and the service map, in a terminal.
#[derive(Debug, Parser)]
#[command(name = "skymap", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where flows come from: a running relay, or a recording read directly.
#[derive(Debug, Clone, clap::Args)]
struct Source {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,

    /// Read a recording (skymap's JSON lines, or `hubble observe -o json` output)
    /// instead of asking a relay (then --relay is not used). `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print flows, like `hubble observe`.
    Observe(ObserveArgs),
    /// Write flows to a file in skymap's recording format (JSON lines).
    Record(RecordArgs),
    /// Print the service graph now.
    Graph(GraphArgs),
    /// Feed a recording into a relay at its original pace (or faster).
    Replay(ReplayArgs),
    /// The relay's nodes (connected, unavailable), flow rates and losses.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    /// Print the status as one JSON object.
    #[arg(short, long, value_enum, default_value = "text")]
    output: StatusOutput,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusOutput {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FlowOutput {
    Compact,
    Json,
    Table,
}

#[derive(Debug, clap::Args)]
struct ObserveArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    filters: FilterArgs,
    /// Keep printing new flows as they arrive.
    #[arg(short, long)]
    follow: bool,
    /// The last N flows (cluster-wide). Default: 20 unless --follow, --since or --all.
    #[arg(long, value_name = "N")]
    last: Option<u64>,
    /// Every flow the relay (or file) has.
    #[arg(long, conflicts_with = "last")]
    all: bool,
    /// Flows since a time: a duration ago (30s, 5m, 1h) or RFC 3339 (2026-11-26T06:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Flows until a time, same forms as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "compact")]
    output: FlowOutput,
}

#[derive(Debug, clap::Args)]
struct RecordArgs {
    /// File to write (`-` for standard output).
    output: PathBuf,
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    #[command(flatten)]
    filters: FilterArgs,
    /// Keep recording new flows until interrupted (Ctrl-C).
    #[arg(short, long)]
    follow: bool,
    /// Start with the last N flows the relay has (default: all it has, unless --follow).
    #[arg(long, value_name = "N")]
    last: Option<u64>,
    /// Flows since a time: a duration ago or RFC 3339.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphOutput {
    Json,
    Dot,
    Text,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ZoomArg {
    Namespace,
    Workload,
    Pod,
}

#[derive(Debug, clap::Args)]
struct GraphArgs {
    #[command(flatten)]
    source: Source,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: GraphOutput,
    /// Level of detail.
    #[arg(long, value_enum, default_value = "workload")]
    zoom: ZoomArg,
    /// Only these namespaces (repeatable); default all.
    #[arg(short, long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// With --file: Kubernetes metadata to enrich the recording with.
    #[arg(long, value_name = "FILE", requires = "file")]
    metadata: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    /// Recording to replay (skymap's JSON lines or `hubble observe -o json` output).
    file: PathBuf,
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    /// Pace: 1 is the original pace, 10 ten times faster, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    speed: f64,
    /// Start again from the beginning at the end, until interrupted.
    #[arg(long = "loop")]
    repeat: bool,
    /// Keep the recorded timestamps instead of moving them to now.
    #[arg(long)]
    keep_time: bool,
    /// Flows per batch sent to the relay.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

fn main() -> ExitCode {
    if let Err(e) = color_eyre::install() {
        eprintln!("skymap: {e}");
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skymap: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            if cmd::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("skymap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Observe(args) => cmd::observe::run(args).await,
        Command::Record(args) => cmd::observe::record(args).await,
        Command::Graph(args) => cmd::graph::run(args).await,
        Command::Replay(args) => cmd::replay::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
    }
}
