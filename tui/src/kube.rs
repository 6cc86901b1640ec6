//! `skymap --context NAME`: reaching the relay through a kubeconfig context,
//! with no kubectl.
//!
//! [`connect`] loads the context, finds the Service `skymap-relay` in the
//! namespace skymap is installed in, picks a Ready pod behind it
//! (EndpointSlices first, the Service's selector otherwise) and its gRPC
//! port, and listens on 127.0.0.1: each local connection is carried to the
//! pod by the API server's `pods/portforward` ([`listen`] with a
//! [`Forward`]). The commands then talk to [`LocalForward::url`] as to any
//! relay.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::conn::error_chain;

/// The relay's Service (and Deployment) in the manifests.
pub const RELAY_SERVICE: &str = "skymap-relay";
/// Where the manifests install skymap.
pub const DEFAULT_NAMESPACE: &str = "skymap";
/// The Service port the relay's gRPC is published on: by name, else by number.
const GRPC_PORT_NAME: &str = "grpc";
const GRPC_PORT: i32 = 4245;

/// Bounds each API call: the client itself has no read timeout, so that the
/// port-forward's long-lived connections are not cut.
const API_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Resolving faster than this says nothing on stderr.
const PROGRESS_AFTER: Duration = Duration::from_millis(700);

/// What `skymap --context` was asked to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kubeconfig context.
    pub context: String,
    /// `--kubeconfig`; else `$KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace skymap is installed in.
    pub namespace: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no kubeconfig at {path}: pass --kubeconfig FILE or set KUBECONFIG")]
    NoKubeconfig { path: String },
    #[error("cannot read the kubeconfig {source_}: {reason}")]
    Kubeconfig { source_: String, reason: String },
    #[error("--context needs a context name; the kubeconfig {source_} has {available}")]
    EmptyContext { source_: String, available: String },
    #[error("no context {context:?} in the kubeconfig {source_}; it has {available}")]
    UnknownContext {
        context: String,
        source_: String,
        available: String,
    },
    #[error("context {context} in the kubeconfig {source_} cannot be used: {reason}")]
    BadContext {
        context: String,
        source_: String,
        reason: String,
    },
    #[error("context {context}: cannot get credentials: {reason}")]
    Credentials { context: String, reason: String },
    #[error("cannot reach the Kubernetes API server {server} (context {context}): {reason}")]
    Unreachable {
        server: String,
        context: String,
        reason: String,
    },
    #[error(
        "the Kubernetes API server {server} rejected the credentials of context {context} \
         (401 Unauthorized): log in again"
    )]
    Unauthorized { server: String, context: String },
    #[error(
        "context {context} is forbidden to {verb} {resource} in namespace {namespace} \
         (403 Forbidden); skymap --context needs: get services, list endpointslices and pods, \
         create pods/portforward"
    )]
    Forbidden {
        context: String,
        verb: &'static str,
        resource: &'static str,
        namespace: String,
    },
    #[error(
        "Service {RELAY_SERVICE} not found in namespace {namespace} (context {context}): \
         is skymap installed? kubectl apply -f deploy/ (or -n NAMESPACE if it is elsewhere)"
    )]
    NoService { namespace: String, context: String },
    #[error(
        "no Ready pod behind Service {RELAY_SERVICE} in namespace {namespace} \
         (context {context}): {detail}"
    )]
    NoReadyPod {
        namespace: String,
        context: String,
        detail: String,
    },
    #[error("Service {RELAY_SERVICE} in namespace {namespace} (context {context}): {detail}")]
    NoPort {
        namespace: String,
        context: String,
        detail: String,
    },
    #[error("{verb} {resource} in namespace {namespace} (context {context}) failed: {reason}")]
    Api {
        context: String,
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        reason: String,
    },
    #[error("cannot listen on 127.0.0.1 for the port-forward: {0}")]
    Listen(#[source] io::Error),
}

/// A Ready relay pod and the port its gRPC listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPod {
    pub name: String,
    pub port: u16,
}

/// An API server client scoped to the namespace skymap is installed in,
/// with what the error messages name.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    context: String,
    server: String,
    namespace: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("context", &self.context)
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster from an existing client (tests use a mock service);
    /// `context` and `server` only name it in errors.
    pub fn new(client: Client, context: &str, server: &str, namespace: &str) -> Self {
        Self {
            client,
            context: context.to_string(),
            server: server.to_string(),
            namespace: namespace.to_string(),
        }
    }

    /// Loads `target`'s context from the kubeconfig, as kubectl would.
    pub async fn from_kubeconfig(target: &Target) -> Result<Self, KubeError> {
        let (kubeconfig, source_) = read_kubeconfig(target)?;
        check_context(&kubeconfig, &target.context, &source_)?;
        let options = KubeConfigOptions {
            context: Some(target.context.clone()),
            ..KubeConfigOptions::default()
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::BadContext {
                context: target.context.clone(),
                source_: source_.clone(),
                reason: one_line(&error_chain(&e)),
            })?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| KubeError::BadContext {
            context: target.context.clone(),
            source_,
            reason: one_line(&error_chain(&e)),
        })?;
        Ok(Self::new(
            client,
            &target.context,
            server.trim_end_matches('/'),
            &target.namespace,
        ))
    }

    /// The Service `skymap-relay`, a Ready pod behind it and the pod's port
    /// for the Service's gRPC port.
    pub async fn find_relay(&self) -> Result<RelayPod, KubeError> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let service = self
            .call("get", "services", services.get_opt(RELAY_SERVICE))
            .await?
            .ok_or_else(|| KubeError::NoService {
                namespace: self.namespace.clone(),
                context: self.context.clone(),
            })?;
        let port = grpc_port(&service).map_err(|detail| self.no_port(detail))?;
        if let Some(found) = self.ready_in_slices(port).await? {
            return Ok(found);
        }
        self.ready_by_selector(&service, port).await
    }

    /// Opens a port-forward to `pod`. Errors the kubelet reports later (the
    /// relay not listening, the pod going away) land in `errors`.
    pub async fn open(
        &self,
        pod: &RelayPod,
        errors: &LastError,
    ) -> Result<DuplexStream, KubeError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut forwarder = self
            .call(
                "create",
                "pods/portforward",
                pods.portforward(&pod.name, &[pod.port]),
            )
            .await?;
        let stream = forwarder
            .take_stream(pod.port)
            .ok_or_else(|| self.no_port(format!("pod {} gave no stream", pod.name)))?;
        if let Some(failed) = forwarder.take_error(pod.port) {
            let errors = errors.clone();
            let name = pod.name.clone();
            tokio::spawn(async move {
                if let Some(message) = failed.await {
                    errors.set(format!(
                        "port-forward to pod {name}: {}",
                        one_line(&message)
                    ));
                }
            });
        }
        // The forwarder's task runs on its own and ends when the stream is
        // dropped (it closes the WebSocket) or the pod closes it.
        drop(forwarder);
        Ok(stream)
    }

    /// The Ready endpoint of the Service's EndpointSlices that sorts first,
    /// with the slice's port for `port`. None when the slices list no pod
    /// (or cannot be read): the selector decides then.
    async fn ready_in_slices(&self, port: &ServicePort) -> Result<Option<RelayPod>, KubeError> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let params =
            ListParams::default().labels(&format!("kubernetes.io/service-name={RELAY_SERVICE}"));
        let slices = match self.call("list", "endpointslices", api.list(&params)).await {
            Ok(list) => list.items,
            // Pods may still be allowed, and old clusters lack the API.
            Err(KubeError::Forbidden { .. } | KubeError::Api { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut endpoints: usize = 0;
        let mut ready: Vec<RelayPod> = Vec::new();
        for slice in &slices {
            // A slice with no endpoints has no ports either.
            let Some(number) = slice_port(slice, port) else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let Some(pod) = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone())
                else {
                    continue;
                };
                endpoints += 1;
                let conditions = endpoint.conditions.as_ref();
                // An unset `ready` means "unknown", which the API says to
                // treat as ready.
                let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                    && !conditions.and_then(|c| c.terminating).unwrap_or(false);
                if is_ready {
                    ready.push(RelayPod {
                        name: pod,
                        port: self.port_number(number)?,
                    });
                }
            }
        }
        if endpoints == 0 {
            // Nothing to choose from here; the selector says how many pods
            // there are and why none is Ready.
            return Ok(None);
        }
        ready.sort_by(|a, b| a.name.cmp(&b.name));
        match ready.into_iter().next() {
            Some(pod) => Ok(Some(pod)),
            None => Err(self.no_ready(format!(
                "its EndpointSlices list {}, none ready (kubectl -n {} get pods)",
                count_pods(endpoints),
                self.namespace
            ))),
        }
    }

    /// The Ready pod matching the Service's selector that sorts first, and
    /// its port for the Service's `targetPort` (named ones through the pod's
    /// container ports).
    async fn ready_by_selector(
        &self,
        service: &Service,
        port: &ServicePort,
    ) -> Result<RelayPod, KubeError> {
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.no_ready("it has no selector and no EndpointSlices".into()))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().labels(&label_selector(selector));
        let mut pods = self.call("list", "pods", api.list(&params)).await?.items;
        let total = pods.len();
        pods.retain(is_ready);
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let Some(pod) = pods.first() else {
            return Err(self.no_ready(format!(
                "{} {} its selector {}, none Ready (kubectl -n {} get pods)",
                count_pods(total),
                if total == 1 { "matches" } else { "match" },
                label_selector(selector),
                self.namespace
            )));
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let number = match &port.target_port {
            None => port.port,
            Some(IntOrString::Int(number)) => *number,
            Some(IntOrString::String(named)) => container_port(pod, named).ok_or_else(|| {
                self.no_port(format!(
                    "targetPort {named:?} is not a container port of pod {name}"
                ))
            })?,
        };
        Ok(RelayPod {
            name,
            port: self.port_number(number)?,
        })
    }

    /// Runs one API call with a deadline, naming what it was in the error.
    async fn call<T>(
        &self,
        verb: &'static str,
        resource: &'static str,
        call: impl Future<Output = kube::Result<T>>,
    ) -> Result<T, KubeError> {
        match tokio::time::timeout(API_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.api_error(verb, resource, error)),
            Err(_) => Err(KubeError::Unreachable {
                server: self.server.clone(),
                context: self.context.clone(),
                reason: format!(
                    "no answer to {verb} {resource} in {}s",
                    API_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    fn api_error(
        &self,
        verb: &'static str,
        resource: &'static str,
        error: kube::Error,
    ) -> KubeError {
        let context = self.context.clone();
        match error {
            kube::Error::Api(status) if status.code == 403 => KubeError::Forbidden {
                context,
                verb,
                resource,
                namespace: self.namespace.clone(),
            },
            kube::Error::Api(status) if status.code == 401 => KubeError::Unauthorized {
                server: self.server.clone(),
                context,
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => KubeError::Unreachable {
                server: self.server.clone(),
                context,
                reason: one_line(&error_chain(&error)),
            },
            kube::Error::Auth(_) => KubeError::Credentials {
                context,
                reason: one_line(&error_chain(&error)),
            },
            kube::Error::Api(status) => KubeError::Api {
                context,
                verb,
                resource,
                namespace: self.namespace.clone(),
                reason: one_line(&format!("{} ({})", status.message, status.code)),
            },
            other => KubeError::Api {
                context,
                verb,
                resource,
                namespace: self.namespace.clone(),
                reason: one_line(&error_chain(&other)),
            },
        }
    }

    fn port_number(&self, number: i32) -> Result<u16, KubeError> {
        u16::try_from(number)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.no_port(format!("port {number} is not a TCP port")))
    }

    fn no_port(&self, detail: String) -> KubeError {
        KubeError::NoPort {
            namespace: self.namespace.clone(),
            context: self.context.clone(),
            detail,
        }
    }

    fn no_ready(&self, detail: String) -> KubeError {
        KubeError::NoReadyPod {
            namespace: self.namespace.clone(),
            context: self.context.clone(),
            detail,
        }
    }
}

/// `skymap-relay.NS.svc`: the name to verify the relay's certificate
/// against when it serves TLS, since through the port-forward its address
/// is 127.0.0.1.
pub fn relay_dns_name(namespace: &str) -> String {
    format!("{RELAY_SERVICE}.{namespace}.svc")
}

/// The kubeconfig `target` names, and how to name it in messages.
fn read_kubeconfig(target: &Target) -> Result<(Kubeconfig, String), KubeError> {
    let source_ = match (&target.kubeconfig, std::env::var_os("KUBECONFIG")) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(paths)) if !paths.is_empty() => paths.to_string_lossy().into_owned(),
        (None, _) => "~/.kube/config".to_string(),
    };
    let read = match &target.kubeconfig {
        Some(path) => Kubeconfig::read_from(path),
        None => Kubeconfig::read(),
    };
    let kubeconfig = read.map_err(|e| match e {
        KubeconfigError::ReadConfig(io, path) if io.kind() == io::ErrorKind::NotFound => {
            KubeError::NoKubeconfig {
                path: path.display().to_string(),
            }
        }
        KubeconfigError::FindPath => KubeError::NoKubeconfig {
            path: source_.clone(),
        },
        // YAML errors go on to draw the offending line; the first line says it.
        other => KubeError::Kubeconfig {
            source_: source_.clone(),
            reason: one_line(error_chain(&other).lines().next().unwrap_or_default()),
        },
    })?;
    Ok((kubeconfig, source_))
}

/// Fails unless the kubeconfig has `context`, listing the ones it has.
fn check_context(kubeconfig: &Kubeconfig, context: &str, source_: &str) -> Result<(), KubeError> {
    if kubeconfig.contexts.iter().any(|c| c.name == context) && !context.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = kubeconfig
        .contexts
        .iter()
        .map(|c| match &kubeconfig.current_context {
            Some(current) if *current == c.name => format!("{} (current)", c.name),
            _ => c.name.clone(),
        })
        .collect();
    let available = if names.is_empty() {
        "no contexts".to_string()
    } else {
        format!("contexts: {}", names.join(", "))
    };
    if context.is_empty() {
        return Err(KubeError::EmptyContext {
            source_: source_.to_string(),
            available,
        });
    }
    Err(KubeError::UnknownContext {
        context: context.to_string(),
        source_: source_.to_string(),
        available,
    })
}

/// The Service port carrying the relay's gRPC: named `grpc`, else numbered
/// 4245, else the only one.
fn grpc_port(service: &Service) -> Result<&ServicePort, String> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some(GRPC_PORT_NAME))
        .or_else(|| ports.iter().find(|p| p.port == GRPC_PORT))
        .or(match ports {
            [only] => Some(only),
            _ => None,
        })
        .ok_or_else(|| format!("no port named {GRPC_PORT_NAME} or numbered {GRPC_PORT}"))
}

/// The slice's number for the Service port (slices name their ports as the
/// Service does, and carry the resolved target port).
fn slice_port(slice: &EndpointSlice, port: &ServicePort) -> Option<i32> {
    let wanted = port.name.as_deref().unwrap_or("");
    slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == wanted)
        .and_then(|p| p.port)
}

/// Ready and not being deleted.
fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn container_port(pod: &Pod, name: &str) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.as_deref().unwrap_or_default())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}

/// `a=1,b=2` from a Service selector.
fn label_selector(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// "1 pod", "2 pods".
fn count_pods(count: usize) -> String {
    format!("{count} pod{}", if count == 1 { "" } else { "s" })
}

/// Messages from the API server and YAML parsers can span lines; ours are
/// one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The most recent failure to forward a connection, for the error a command
/// prints when the relay cannot be reached through it.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    pub fn set(&self, message: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Opens the remote end for one local connection.
pub trait Forward: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn open(
        &self,
        errors: &LastError,
    ) -> impl Future<Output = Result<Self::Stream, KubeError>> + Send;
}

/// Port-forwards to a relay pod: the first connection uses the forward
/// opened while connecting; each later one finds a Ready pod afresh, so a
/// reconnect after the pod went away reaches its replacement.
#[derive(Debug)]
pub struct PodForward {
    cluster: Cluster,
    first: Mutex<Option<DuplexStream>>,
}

impl PodForward {
    pub fn new(cluster: Cluster, first: Option<DuplexStream>) -> Self {
        Self {
            cluster,
            first: Mutex::new(first),
        }
    }
}

impl Forward for PodForward {
    type Stream = DuplexStream;

    async fn open(&self, errors: &LastError) -> Result<DuplexStream, KubeError> {
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stream) = first {
            return Ok(stream);
        }
        let pod = self.cluster.find_relay().await?;
        self.cluster.open(&pod, errors).await
    }
}

/// The local end: 127.0.0.1:PORT, forwarding until dropped.
#[derive(Debug)]
pub struct LocalForward {
    addr: SocketAddr,
    errors: LastError,
    task: JoinHandle<()>,
}

impl LocalForward {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, for `--relay`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Why the last connection could not be forwarded, if one could not.
    pub fn last_error(&self) -> Option<String> {
        self.errors.get()
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection still being copied.
        self.task.abort();
    }
}

/// Listens on 127.0.0.1 (a free port) and carries each accepted connection
/// to a stream `forward` opens, both ways, until either side closes.
pub async fn listen<F: Forward>(forward: F, errors: LastError) -> Result<LocalForward, KubeError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(KubeError::Listen)?;
    let addr = listener.local_addr().map_err(KubeError::Listen)?;
    let forward = Arc::new(forward);
    let task_errors = errors.clone();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((local, _)) => {
                    connections.spawn(carry(forward.clone(), local, task_errors.clone()));
                }
                Err(e) => {
                    task_errors.set(format!("accepting a local connection: {e}"));
                    // Out of file descriptors and the like: give it a moment
                    // rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(LocalForward { addr, errors, task })
}

async fn carry<F: Forward>(forward: Arc<F>, mut local: TcpStream, errors: LastError) {
    let _ = local.set_nodelay(true);
    match forward.open(&errors).await {
        Ok(mut remote) => {
            if let Err(e) = tokio::io::copy_bidirectional(&mut local, &mut remote).await {
                errors.set(format!("forwarding a connection: {e}"));
            }
        }
        // Closing the local connection is all the client sees; the reason
        // is kept for the command's error.
        Err(e) => errors.set(e.to_string()),
    }
}

/// Finds the relay through `target`'s context and starts forwarding to it;
/// says so on stderr when that takes more than a moment.
pub async fn connect(target: &Target) -> Result<LocalForward, KubeError> {
    let work = async {
        let cluster = Cluster::from_kubeconfig(target).await?;
        let pod = cluster.find_relay().await?;
        let errors = LastError::default();
        // Opened now so that a missing permission or a broken pod is reported
        // before any command starts.
        let first = cluster.open(&pod, &errors).await?;
        listen(PodForward::new(cluster, Some(first)), errors).await
    };
    let mut work = std::pin::pin!(work);
    tokio::select! {
        done = &mut work => return done,
        () = tokio::time::sleep(PROGRESS_AFTER) => {
            eprintln!(
                "skymap: connecting to context {} (Service {RELAY_SERVICE} in namespace {}) …",
                target.context, target.namespace
            );
        }
    }
    work.await
}
