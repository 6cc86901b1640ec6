//! `skymap-relay`: the process probes stream to and clients read from.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use color_eyre::eyre::{Result, WrapErr};
use skymap_relay::engine::EngineConfig;
use skymap_relay::server::{self, RelayConfig};

/// Merges every node's flow stream into a live service graph and serves it
/// over gRPC (skymap.v1.Ingest for probes, skymap.v1.Observer for clients).
#[derive(Debug, Parser)]
#[command(name = "skymap-relay", version)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, default_value = "0.0.0.0:4245", env = "SKYMAP_RELAY_LISTEN")]
    listen: String,

    /// Kubernetes metadata file (`kubectl get pods,services,namespaces,nodes -A -o json`),
    /// re-read when it changes.
    #[arg(long, value_name = "FILE")]
    metadata: Option<PathBuf>,

    /// How often to check the metadata file for changes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    metadata_poll: Duration,

    /// Flows kept for `observe --last N` (about 100 bytes each).
    #[arg(long, default_value_t = 1_000_000)]
    history: usize,

    /// How often graph changes are published to watchers.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    tick: Duration,

    /// Edges and nodes idle for this long leave the graph.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    edge_expiry: Duration,

    /// Most edges kept per zoom level; flows for new edges beyond it are counted
    /// as loss stage `relay-graph-full`.
    #[arg(long, default_value_t = 100_000)]
    max_edges: usize,

    /// Do not keep the pod-level graph (saves memory on large clusters).
    #[arg(long)]
    no_pod_graph: bool,

    /// Largest gRPC message accepted, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,

    /// Log filter (tracing's env-filter syntax).
    #[arg(long, default_value = "info", env = "SKYMAP_LOG")]
    log: String,
}

/// mimalloc frees the decoded batches' many small allocations faster than
/// glibc (see the ingest benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<()> {
    color_eyre::install()?;
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .wrap_err_with(|| format!("--log {:?} is not a valid filter", args.log))?,
        )
        .with_writer(std::io::stderr)
        .init();

    let config = RelayConfig {
        engine: EngineConfig {
            history_capacity: args.history,
            pod_graph: !args.no_pod_graph,
            max_edges: args.max_edges,
            edge_expiry_ns: i64::try_from(args.edge_expiry.as_nanos()).unwrap_or(i64::MAX),
        },
        aggregator: skymap_relay::aggregator::AggregatorConfig {
            tick: args.tick,
            ..Default::default()
        },
        metadata_file: args.metadata.clone(),
        metadata_poll: args.metadata_poll,
        max_message_bytes: args.max_message_bytes,
        ..Default::default()
    };
    let relay = match server::start(&args.listen, config).await {
        Ok(relay) => relay,
        Err(e) => {
            // An expected failure (port taken, broken metadata file): one clear
            // line, not a backtrace.
            eprintln!("skymap-relay: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!("skymap-relay serving on {}", relay.addr);
    // Printed on stdout so scripts can wait for it.
    println!("listening on http://{}", relay.addr);

    relay
        .run_until(async {
            if let Err(e) = shutdown_signal().await {
                tracing::error!("cannot wait for signals: {e}");
            }
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
