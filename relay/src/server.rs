//! The relay's gRPC face: `skymap.v1.Ingest` for probes, `skymap.v1.Observer`
//! for clients, plus gRPC health and reflection (so `grpcurl -plaintext
//! HOST:PORT list` works).
//!
//! Handlers only translate between the wire and the aggregator's channels;
//! `tonic::Status` stays in this file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use skymap_proto::filter::FlowFilterSet;
use skymap_proto::v1::ingest_server::{Ingest, IngestServer};
use skymap_proto::v1::observer_server::{Observer, ObserverServer};
use skymap_proto::v1::{
    ExplainRequest, Explanation, FILE_DESCRIPTOR_SET, FlowBatch, GetFlowsRequest, GetFlowsResponse,
    GetGraphRequest, GraphUpdate, IngestSummary, StatusRequest, StatusResponse, WatchGraphRequest,
    Zoom, get_flows_response,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::aggregator::{self, AggregatorConfig, Command, IngestEvent, WATCHER_BUFFER};
use crate::engine::{Engine, EngineConfig};
use crate::kube::{self, KubeOptions, KubeStatus};
use crate::metadata::{self, Metadata};
use crate::tls::{self, ServerTls, TlsConfig, TlsStatus};

/// Everything `skymap-relay` can be told.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub engine: EngineConfig,
    pub aggregator: AggregatorConfig,
    /// Kubernetes metadata file, re-read when it changes.
    pub metadata_file: Option<PathBuf>,
    pub metadata_poll: Duration,
    /// Watch the Kubernetes API for metadata instead of a file.
    pub kube: Option<KubeOptions>,
    /// Fixed metadata when neither a file nor the API gives any (the demo's).
    pub metadata: Option<Arc<Metadata>>,
    /// Largest gRPC message accepted (a probe batch), in bytes.
    pub max_message_bytes: usize,
    /// Batches waiting for the aggregator before ingest pushes back on probes.
    pub ingest_queue: usize,
    /// Serve gRPC over TLS (and mutual TLS for probes); plain when `None`.
    pub tls: Option<TlsConfig>,
    /// Serve Prometheus `/metrics` and `/healthz` over HTTP here.
    pub metrics_listen: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            aggregator: AggregatorConfig::default(),
            metadata_file: None,
            metadata_poll: Duration::from_secs(2),
            kube: None,
            metadata: None,
            max_message_bytes: 16 * 1024 * 1024,
            ingest_queue: 1024,
            tls: None,
            metrics_listen: None,
        }
    }
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
    #[error("--metadata and --kube are two sources of the same metadata: give one")]
    TwoMetadataSources,
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Metrics(#[from] skymap_proto::metrics::MetricsError),
}

/// A relay running in this process (the `skymap-relay` binary, `skymap demo`,
/// tests).
#[derive(Debug)]
pub struct RelayHandle {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when asked for.
    pub metrics_addr: Option<SocketAddr>,
    /// Turning it true stops the aggregator (ending every client stream), the
    /// ingest handlers, and then the server.
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
    tls: Option<watch::Receiver<TlsStatus>>,
    kube: Option<watch::Receiver<KubeStatus>>,
}

/// How long a shutdown waits for connections to wind down before it cuts them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl RelayHandle {
    /// How each watched Kubernetes kind is doing, with `--kube`.
    pub fn kube_status(&self) -> Option<watch::Receiver<KubeStatus>> {
        self.kube.clone()
    }

    /// How certificate reloading is going, when serving TLS.
    pub fn tls_status(&self) -> Option<watch::Receiver<TlsStatus>> {
        self.tls.clone()
    }

    /// Stops serving and waits until the server has finished.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        self.stop.send_replace(true);
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(StartError::Task(join.to_string())),
            Err(_) => {
                tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Serves until `stop` completes (then shuts down cleanly) or the server
    /// fails.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Result<(), StartError> {
        tokio::select! {
            finished = &mut self.task => {
                return match finished {
                    Ok(result) => result,
                    Err(join) => Err(StartError::Task(join.to_string())),
                };
            }
            () = stop => {}
        }
        self.shutdown().await
    }
}

/// Binds `listen` and starts serving in the background.
pub async fn start(listen: &str, config: RelayConfig) -> Result<RelayHandle, StartError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    start_on(listener, config).await
}

/// Starts serving on an already bound listener.
pub async fn start_on(
    listener: TcpListener,
    config: RelayConfig,
) -> Result<RelayHandle, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: "listener".to_string(),
        source,
    })?;

    // The API's metadata arrives in the background: serving starts while
    // the first listing is in flight.
    let kube_source = match &config.kube {
        Some(_) if config.metadata_file.is_some() => return Err(StartError::TwoMetadataSources),
        Some(options) => {
            let source = kube::spawn(kube::client(options).await?);
            tracing::info!("metadata: watching the Kubernetes API");
            Some(source)
        }
        None => None,
    };
    let kube_status = kube_source.as_ref().map(|source| source.status.clone());

    // Load the metadata before serving, so a broken file stops the start
    // with its error instead of a relay that silently knows nothing.
    let metadata_rx = match &config.metadata_file {
        Some(path) => {
            let (md, warnings) = Metadata::load(path)?;
            for warning in &warnings {
                tracing::warn!("{}: {warning}", path.display());
            }
            tracing::info!("metadata: {} addresses from {}", md.len(), path.display());
            let (tx, rx) = watch::channel(Arc::new(md));
            tokio::spawn(metadata::watch_file(path.clone(), config.metadata_poll, tx));
            Some(rx)
        }
        None => kube_source.map(|source| source.metadata),
    };
    let initial = metadata_rx
        .as_ref()
        .map(|rx| rx.borrow().clone())
        .or_else(|| config.metadata.clone())
        .unwrap_or_else(|| Arc::new(Metadata::empty()));

    let engine = Engine::new(config.engine.clone(), initial);
    let (ingest_tx, ingest_rx) = mpsc::channel(config.ingest_queue);
    let (command_tx, command_rx) = mpsc::channel(256);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Before anything else runs: bad files stop the start with their error.
    let tls = config
        .tls
        .as_ref()
        .map(|tls| ServerTls::start(tls, stop_rx.clone()))
        .transpose()?;
    let metrics_addr = match &config.metrics_listen {
        Some(listen) => {
            Some(crate::metrics::start(listen, command_tx.clone(), stop_rx.clone()).await?)
        }
        None => None,
    };
    tokio::spawn(aggregator::run(
        engine,
        config.aggregator.clone(),
        ingest_rx,
        command_rx,
        metadata_rx,
        stop_rx.clone(),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<ObserverServer<ObserverService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;

    let ingest = IngestServer::new(IngestService {
        events: ingest_tx,
        stop: stop_rx.clone(),
        client_cert_required: tls.as_ref().is_some_and(ServerTls::client_cert_required),
    })
    .max_decoding_message_size(config.max_message_bytes);
    let observer = ObserverServer::new(ObserverService {
        commands: command_tx,
        kube: kube_status.clone(),
    })
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(usize::MAX);

    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(observer);
    let mut shutdown_rx = stop_tx.subscribe();
    let shutdown = async move {
        let _ = shutdown_rx.wait_for(|stop| *stop).await;
    };
    let tls_status = tls.as_ref().map(ServerTls::status);
    let task = tokio::spawn(async move {
        match tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(tls.incoming(listener, stop_rx), shutdown)
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                    .await
            }
        }
        .map_err(StartError::from)
    });
    Ok(RelayHandle {
        addr,
        metrics_addr,
        stop: stop_tx,
        task,
        tls: tls_status,
        kube: kube_status,
    })
}

/// `skymap.v1.Ingest`.
#[derive(Debug, Clone)]
pub struct IngestService {
    events: mpsc::Sender<IngestEvent>,
    stop: watch::Receiver<bool>,
    /// Mutual TLS: streams need a client certificate the handshake verified.
    client_cert_required: bool,
}

fn relay_stopping() -> Status {
    Status::unavailable("relay is shutting down")
}

/// What a probe without a client certificate hears under mutual TLS.
pub const CLIENT_CERT_REQUIRED: &str =
    "probes must present a client certificate signed by --tls-client-ca";

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn stream(
        &self,
        request: Request<Streaming<FlowBatch>>,
    ) -> Result<Response<IngestSummary>, Status> {
        // The handshake verified any certificate presented; none is the
        // only way to be here without a trusted one.
        if self.client_cert_required && request.peer_certs().is_none_or(|certs| certs.is_empty()) {
            return Err(Status::unauthenticated(CLIENT_CERT_REQUIRED));
        }
        let mut batches = request.into_inner();
        let mut summary = IngestSummary::default();
        let mut node: Option<String> = None;
        let mut stop = self.stop.clone();
        let result = loop {
            let next = tokio::select! {
                next = batches.next() => next,
                _ = stop.wait_for(|stop| *stop) => break Err(relay_stopping()),
            };
            let batch = match next {
                None => break Ok(()),
                Some(Err(status)) => break Err(status),
                Some(Ok(batch)) => batch,
            };
            let name = match &node {
                Some(name) => name.clone(),
                None => {
                    if batch.node_name.is_empty() {
                        break Err(Status::invalid_argument(
                            "the first batch of a stream must name its node (node_name)",
                        ));
                    }
                    let name = batch.node_name.clone();
                    if self
                        .events
                        .send(IngestEvent::Connected { node: name.clone() })
                        .await
                        .is_err()
                    {
                        return Err(relay_stopping());
                    }
                    node = Some(name.clone());
                    name
                }
            };
            if batch.node_name != name {
                break Err(Status::invalid_argument(format!(
                    "batch names node {:?} but this stream belongs to {name:?}",
                    batch.node_name
                )));
            }
            summary.batches += 1;
            summary.flows += batch.flows.len() as u64;
            // Waiting here pushes back on the probe (HTTP/2 flow control), whose
            // bounded send buffer then drops and counts: the relay never drops
            // silently.
            if self.events.send(IngestEvent::Batch(batch)).await.is_err() {
                return Err(relay_stopping());
            }
        };
        if let Some(node) = node {
            let _ = self.events.send(IngestEvent::Disconnected { node }).await;
        }
        result.map(|()| Response::new(summary))
    }
}

/// `skymap.v1.Observer`.
#[derive(Debug, Clone)]
pub struct ObserverService {
    commands: mpsc::Sender<Command>,
    /// With --kube: where each kind of object stands, for the status.
    kube: Option<watch::Receiver<KubeStatus>>,
}

impl ObserverService {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| relay_stopping())?;
        rx.await.map_err(|_| relay_stopping())
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn zoom_of(value: i32) -> Result<Zoom, Status> {
    Zoom::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("unknown zoom level {value}")))
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = ResponseStream<GetFlowsResponse>;
    type WatchGraphStream = ResponseStream<GraphUpdate>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        let filter = FlowFilterSet::new(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(format!("filter: {e}")))?;
        if req.since_ns < 0 || req.until_ns < 0 {
            return Err(Status::invalid_argument("since/until must not be negative"));
        }
        let number = usize::try_from(req.number).unwrap_or(usize::MAX);
        let reply = self
            .ask(|reply| Command::GetFlows {
                number,
                since_ns: req.since_ns,
                until_ns: req.until_ns,
                follow: req.follow,
                filter,
                reply,
            })
            .await?;
        let history = futures::stream::iter(reply.history.into_iter().map(|flow| {
            Ok(GetFlowsResponse {
                response: Some(get_flows_response::Response::Flow(flow)),
            })
        }));
        let stream: Self::GetFlowsStream = match reply.follow {
            Some(rx) => Box::pin(history.chain(ReceiverStream::new(rx))),
            None => Box::pin(history),
        };
        Ok(Response::new(stream))
    }

    async fn get_graph(
        &self,
        request: Request<GetGraphRequest>,
    ) -> Result<Response<GraphUpdate>, Status> {
        let req = request.into_inner();
        let zoom = zoom_of(req.zoom)?;
        let graph = self
            .ask(|reply| Command::GetGraph {
                zoom,
                namespaces: req.namespaces,
                reply,
            })
            .await?;
        Ok(Response::new(graph))
    }

    async fn watch_graph(
        &self,
        request: Request<WatchGraphRequest>,
    ) -> Result<Response<Self::WatchGraphStream>, Status> {
        let req = request.into_inner();
        let zoom = zoom_of(req.zoom)?;
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        self.commands
            .send(Command::WatchGraph {
                zoom,
                namespaces: req.namespaces,
                updates: tx,
            })
            .await
            .map_err(|_| relay_stopping())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let mut status = self.ask(|reply| Command::GetStatus { reply }).await?;
        if let Some(kube) = &self.kube {
            status.metadata_kinds = kube.borrow().to_wire();
        }
        Ok(Response::new(status))
    }

    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<Explanation>, Status> {
        let flow = request
            .into_inner()
            .flow
            .ok_or_else(|| Status::invalid_argument("explain needs a flow"))?;
        crate::engine::validate(&flow).map_err(Status::invalid_argument)?;
        let explanation = self
            .ask(|reply| Command::Explain {
                flow: Box::new(flow),
                reply,
            })
            .await?;
        Ok(Response::new(explanation))
    }
}
