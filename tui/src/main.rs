//! `skymap`: the terminal service-map explorer's commands.
//!
//! - [`filters`]: Hubble-style filter flags → `FlowFilter`s.
//! - [`output`]: flows as compact/json/table, the graph as json/dot/text.
//! - [`cmd`]: one module per command (ui and demo, snapshot, observe, graph,
//!   replay, status, explain).

mod cmd;
mod filters;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use color_eyre::eyre::Result;

use skymap_tui::{conn, kube};

use crate::filters::FilterArgs;

/// skymap: Kubernetes network flows and the service map, in a terminal.
#[derive(Debug, Parser)]
#[command(name = "skymap", version, propagate_version = true)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: the explorer (as `skymap ui`).
    #[command(flatten)]
    ui: UiArgs,
    /// TLS to the relay, for every command that connects to one.
    #[command(flatten)]
    tls: skymap_proto::tls::ClientTls,
}

/// How the explorer looks.
#[derive(Debug, Clone, clap::Args)]
struct LookArgs {
    /// Draw with ASCII only: no box drawing, arrows or braille (automatic when
    /// the locale is not UTF-8).
    #[arg(long, conflicts_with = "unicode")]
    ascii: bool,
    /// Draw with Unicode even when the locale does not say UTF-8.
    #[arg(long)]
    unicode: bool,
    /// Colours: auto (from TERM, COLORTERM and NO_COLOR), always, never.
    #[arg(long, value_enum, default_value = "auto", value_name = "WHEN")]
    color: ColorWhen,
    /// Colour theme: dark, light, high-contrast, or a TOML file (a patch over
    /// dark). Default: $XDG_CONFIG_HOME/skymap/theme.toml if it exists, else dark.
    #[arg(long, value_name = "NAME|FILE")]
    theme: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, clap::Args)]
struct UiArgs {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in.
    #[arg(short = 'n', long = "namespace", visible_alias = "relay-namespace", value_name = "NS",
          default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,
    #[command(flatten)]
    look: LookArgs,
}

/// Reaching the relay through Kubernetes instead of `--relay`.
#[derive(Debug, Clone, clap::Args)]
struct ClusterArgs {
    /// Reach the relay through this kubeconfig context: port-forward to the
    /// Service skymap-relay (no kubectl needed).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// Kubeconfig for --context (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE", requires = "context")]
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
struct DemoArgs {
    /// Pace of the recording: 1 is real time, 4 four times faster.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    #[command(flatten)]
    look: LookArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SnapshotView {
    Map,
    Flows,
    Drops,
    Dns,
    Nodes,
}

#[derive(Debug, clap::Args)]
struct SnapshotArgs {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in (-n selects
    /// the namespace shown).
    #[arg(long, value_name = "NS", default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,
    /// Read a recording instead of asking a relay.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["demo", "context"])]
    file: Option<PathBuf>,
    /// Use the recording `skymap demo` plays.
    #[arg(long, conflicts_with = "context")]
    demo: bool,
    /// Which view to draw.
    #[arg(long, value_enum, default_value = "map")]
    view: SnapshotView,
    /// Select a box (NAME or NAMESPACE/NAME) or an edge (A->B) for the details pane.
    #[arg(long, value_name = "NAME")]
    select: Option<String>,
    /// Frame width in cells.
    #[arg(long, default_value_t = 160)]
    width: u16,
    /// Frame height in cells.
    #[arg(long, default_value_t = 48)]
    height: u16,
    /// With --file or --demo: the moment shown, in seconds after the first flow
    /// (default: the end).
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    at: Option<f64>,
    /// ASCII only.
    #[arg(long)]
    ascii: bool,
    /// Level of detail.
    #[arg(long, value_enum, default_value = "workload")]
    zoom: ZoomArg,
    /// Show one namespace (and what it talks to).
    #[arg(short, long = "namespace", value_name = "NS")]
    namespace: Option<String>,
    /// Filter flows as the explorer's `/` does (e.g. "verdict:DROPPED").
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
}

/// Where flows come from: a running relay, or a recording read directly.
#[derive(Debug, Clone, clap::Args)]
struct Source {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in (-n filters
    /// flows by namespace).
    #[arg(long, value_name = "NS", default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,

    /// Read a recording (skymap's JSON lines, or `hubble observe -o json` output)
    /// instead of asking a relay (then --relay is not used). `-` reads standard input.
    #[arg(long, value_name = "FILE", conflicts_with = "context")]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The explorer: the live service map of a relay (the default command).
    Ui(UiArgs),
    /// The explorer on a recorded incident, with a relay in this process: no
    /// cluster, no root, no setup.
    Demo(DemoArgs),
    /// Draw one frame of the explorer as plain text (for scripts, CI and bug
    /// reports).
    Snapshot(SnapshotArgs),
    /// Print flows, like `hubble observe`.
    Observe(ObserveArgs),
    /// Why flows were dropped: the NetworkPolicies that deny them and the
    /// policy that would allow them, or what the drop reason means.
    Explain(cmd::explain::ExplainArgs),
    /// Write flows to a file in skymap's recording format (JSON lines).
    Record(RecordArgs),
    /// Print the service graph now.
    Graph(GraphArgs),
    /// Feed a recording into a relay at its original pace (or faster).
    Replay(ReplayArgs),
    /// The relay's nodes (connected, unavailable), flow rates and losses.
    Status(StatusArgs),
    /// A real mini-cluster in network namespaces, with probes and a relay
    /// (root): up, status, apply, down.
    Lab(cmd::lab::LabArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Relay address: http://HOST:PORT or HOST:PORT.
    #[arg(long, env = "SKYMAP_RELAY", default_value = conn::DEFAULT_RELAY)]
    relay: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in.
    #[arg(short = 'n', long = "namespace", visible_alias = "relay-namespace", value_name = "NS",
          default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,
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
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in (-n filters
    /// flows by namespace).
    #[arg(long, value_name = "NS", default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,
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

impl From<ZoomArg> for skymap_tui::state::Zoom {
    fn from(zoom: ZoomArg) -> Self {
        match zoom {
            ZoomArg::Namespace => Self::Namespace,
            ZoomArg::Workload => Self::Workload,
            ZoomArg::Pod => Self::Pod,
        }
    }
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
    #[command(flatten)]
    cluster: ClusterArgs,
    /// With --context: the namespace skymap is installed in.
    #[arg(short = 'n', long = "namespace", visible_alias = "relay-namespace", value_name = "NS",
          default_value = kube::DEFAULT_NAMESPACE, requires = "context")]
    relay_namespace: String,
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
    install_hooks();
    let matches = Cli::command().get_matches();
    refuse_relay_with_context(&matches);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The lab's commands block and run their own runtimes where they need one.
    if matches!(cli.command, Some(Command::Lab(_)))
        && let Some(Command::Lab(args)) = cli.command.take()
    {
        return cmd::lab::run(args);
    }
    // Every connection to the relay uses these; the demo's relay is its own,
    // in this process, and plain.
    // Through --context the address is 127.0.0.1, so the name the relay's
    // certificate is checked against defaults to its Service's DNS name.
    let forwarded_name =
        cluster_relay(&mut cli).map(|(_, target)| kube::relay_dns_name(&target.namespace));
    if !matches!(cli.command, Some(Command::Demo(_)))
        && let Err(e) = conn::set_tls(skymap_proto::tls::ClientTls {
            server_name: cli.tls.server_name.clone().or(forwarded_name),
            ..cli.tls.clone()
        })
    {
        eprintln!("skymap: {e}");
        return ExitCode::FAILURE;
    }
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

async fn run(mut cli: Cli) -> Result<ExitCode> {
    // Before the command starts: the explorer owns the terminal once it runs.
    let forward = match cluster_relay(&mut cli) {
        Some((relay, target)) => Some(cmd::through_cluster(relay, &target).await?),
        None => None,
    };
    let outcome = dispatch(cli).await;
    cmd::explain_forward(outcome, forward.as_ref())
}

/// `--context` takes the place of SKYMAP_RELAY, but not of a `--relay` given
/// with it (clap's own conflicts count the environment as given).
fn refuse_relay_with_context(matches: &ArgMatches) {
    let args = matches.subcommand().map_or(matches, |(_, sub)| sub);
    let given = |id: &str| {
        args.ids().any(|i| i == id) && args.value_source(id) == Some(ValueSource::CommandLine)
    };
    if given("relay") && given("context") {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--context finds the relay through the cluster: it cannot be used with --relay",
            )
            .exit();
    }
}

/// `--context`: the command's relay address to replace, and what to reach.
fn cluster_relay(cli: &mut Cli) -> Option<(&mut String, kube::Target)> {
    let (relay, cluster, namespace) = match &mut cli.command {
        None => (&mut cli.ui.relay, &cli.ui.cluster, &cli.ui.relay_namespace),
        Some(Command::Ui(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Snapshot(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Record(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Replay(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Status(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Explain(a)) => (&mut a.relay, &a.cluster, &a.relay_namespace),
        Some(Command::Observe(ObserveArgs { source: s, .. }))
        | Some(Command::Graph(GraphArgs { source: s, .. })) => {
            (&mut s.relay, &s.cluster, &s.relay_namespace)
        }
        Some(Command::Demo(_) | Command::Lab(_)) => return None,
    };
    let target = kube::Target {
        context: cluster.context.clone()?,
        kubeconfig: cluster.kubeconfig.clone(),
        namespace: namespace.clone(),
    };
    Some((relay, target))
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let Some(command) = cli.command else {
        return cmd::ui::run(cli.ui).await;
    };
    match command {
        Command::Ui(args) => cmd::ui::run(args).await,
        Command::Demo(args) => cmd::ui::demo(args).await,
        Command::Snapshot(args) => cmd::snapshot::run(args).await,
        Command::Observe(args) => cmd::observe::run(args).await,
        Command::Explain(args) => cmd::explain::run(args).await,
        Command::Record(args) => cmd::observe::record(args).await,
        Command::Graph(args) => cmd::graph::run(args).await,
        Command::Replay(args) => cmd::replay::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        // Run by main() before the runtime starts.
        Command::Lab(_) => Ok(ExitCode::SUCCESS),
    }
}

/// color-eyre's reports, with the terminal restored first, so a panic in
/// the explorer prints on a sane screen. Installed before the terminal is
/// touched.
fn install_hooks() {
    let (panic_hook, eyre_hook) = color_eyre::config::HookBuilder::default().into_hooks();
    if let Err(e) = eyre_hook.install() {
        eprintln!("skymap: {e}");
    }
    std::panic::set_hook(Box::new(move |info| {
        skymap_tui::term::restore();
        eprintln!("{}", panic_hook.panic_report(info));
    }));
}
