//! `skymap-relay`: the process probes stream to and clients read from.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use color_eyre::eyre::{Result, WrapErr};
use skymap_relay::engine::EngineConfig;
use skymap_relay::kube::KubeOptions;
use skymap_relay::server::{self, RelayConfig};
use skymap_relay::tls::TlsConfig;

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

    /// Watch the Kubernetes API for metadata: the in-cluster configuration
    /// inside a pod, else the kubeconfig's current context. Instead of --metadata.
    #[arg(long, conflicts_with = "metadata")]
    kube: bool,

    /// With --kube (implied): use this kubeconfig context.
    #[arg(long, value_name = "NAME", conflicts_with = "metadata")]
    kube_context: Option<String>,

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

    /// Serve Prometheus metrics (GET /metrics) and GET /healthz over HTTP on
    /// this address, e.g. 0.0.0.0:9965. Off unless given.
    #[arg(long, value_name = "ADDR", env = "SKYMAP_METRICS_LISTEN")]
    metrics_listen: Option<String>,

    /// Serve gRPC over TLS with this PEM certificate chain (re-read when it
    /// changes; new connections get the new one).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Mutual TLS: probes must present a client certificate signed by this
    /// PEM CA to stream flows (the explorer needs none).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

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
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .wrap_err_with(|| format!("--log {:?} is not a valid filter", args.log))?;
    // kube logs every failed request of the watchers' retries; the relay
    // says once per kind what failed (and how to fix a forbidden one).
    if !args.log.contains("kube") {
        filter = filter
            .add_directive("kube_runtime::watcher=error".parse()?)
            .add_directive("kube_client::client::builder=off".parse()?);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        kube: (args.kube || args.kube_context.is_some()).then(|| KubeOptions {
            context: args.kube_context.clone(),
        }),
        max_message_bytes: args.max_message_bytes,
        metrics_listen: args.metrics_listen.clone(),
        tls: tls_config(&args),
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
    if let Some(metrics) = relay.metrics_addr {
        tracing::info!("metrics on http://{metrics}/metrics");
    }
    // Printed on stdout so scripts can wait for it.
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{}", relay.addr);

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

/// The TLS flags (clap makes sure a certificate comes with its key).
fn tls_config(args: &Args) -> Option<TlsConfig> {
    let (cert, key) = (args.tls_cert.clone()?, args.tls_key.clone()?);
    Some(TlsConfig {
        client_ca: args.tls_client_ca.clone(),
        ..TlsConfig::new(cert, key)
    })
}

async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
