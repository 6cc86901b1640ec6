//! Live metadata from the Kubernetes API (`skymap-relay --kube`).
//!
//! One kube-rs reflector per kind (Namespaces, Pods, Services,
//! EndpointSlices, NetworkPolicies, Nodes) keeps a store of objects trimmed to
//! what the relay reads ([`Watched::trim`]). When any store changes, a new
//! [`Metadata`] is built from all of them through the file's code path
//! ([`Metadata::from_objects`]), at most once per [`DEBOUNCE`], inherits the
//! addresses' previous owners, and goes out on the watch channel the
//! aggregator applies.
//!
//! A kind the relay may not list or watch (RBAC) is reported once, with the
//! fix, and stays empty while its watcher retries with backoff; the other
//! kinds carry on. [`KubeStatus`] says where each kind stands.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::Api;
use ::kube::config::{InClusterError, KubeConfigOptions, KubeconfigError};
use ::kube::runtime::WatchStreamExt;
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::watcher::{self, Event, watcher};
use ::kube::{Client, Config, Resource};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, Namespace, Node, NodeStatus, Pod, PodSpec, PodStatus, Service, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::aggregator::now_ns;
use crate::metadata::{Metadata, Objects};

/// Shortest time between two rebuilds: a burst of pod changes (a rollout, the
/// first listing of each kind) makes one new metadata, not hundreds.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// Where the relay finds the API server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeOptions {
    /// A kubeconfig context (`--kube-context`). Without it: the in-cluster
    /// configuration inside a pod, else the kubeconfig's current context.
    pub context: Option<String>,
}

/// Why no Kubernetes client could be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("--kube-context {context}: {source}")]
    Context {
        context: String,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "--kube: in a pod (KUBERNETES_SERVICE_HOST is set) but the service account's \
         configuration does not load: {0}"
    )]
    InCluster(#[source] InClusterError),
    #[error("--kube: no usable kubeconfig ($KUBECONFIG or ~/.kube/config): {0}")]
    Kubeconfig(#[source] KubeconfigError),
    #[error("--kube: cannot make a Kubernetes client: {0}")]
    Client(#[source] ::kube::Error),
}

/// A client for the API server `options` point at.
pub async fn client(options: &KubeOptions) -> Result<Client, KubeError> {
    // kube's rustls needs a process-wide crypto provider; an error means one
    // is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match &options.context {
        Some(context) => {
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..KubeConfigOptions::default()
            };
            Config::from_kubeconfig(&options)
                .await
                .map_err(|source| KubeError::Context {
                    context: context.clone(),
                    source,
                })?
        }
        None if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            Config::incluster().map_err(KubeError::InCluster)?
        }
        None => Config::from_kubeconfig(&KubeConfigOptions::default())
            .await
            .map_err(KubeError::Kubeconfig)?,
    };
    Client::try_from(config).map_err(KubeError::Client)
}

/// A kind of object the relay watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespaces,
    Pods,
    Services,
    EndpointSlices,
    NetworkPolicies,
    Nodes,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Namespaces,
        Kind::Pods,
        Kind::Services,
        Kind::EndpointSlices,
        Kind::NetworkPolicies,
        Kind::Nodes,
    ];

    /// The resource as RBAC rules and API errors name it.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Namespaces => "namespaces",
            Kind::Pods => "pods",
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices.discovery.k8s.io",
            Kind::NetworkPolicies => "networkpolicies.networking.k8s.io",
            Kind::Nodes => "nodes",
        }
    }

    /// What the relay cannot do without this kind.
    fn loss(self) -> &'static str {
        match self {
            Kind::Namespaces => "namespace labels will be unknown",
            Kind::Pods => "flows will not be attributed to pods",
            Kind::Services => "service addresses and selectors will be unknown",
            Kind::EndpointSlices => "services without selectors will have no members",
            Kind::NetworkPolicies => "drops will not be explained",
            Kind::Nodes => "node addresses will be unknown",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.resource())
    }
}

/// Where one kind's watcher stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KindState {
    /// The first listing is in flight.
    #[default]
    Listing,
    /// Listed, and watched for changes.
    Synced,
    /// The API server forbids the relay to `verb` ("list", "watch") the
    /// kind; `user` is who the relay is to it, if it said.
    Forbidden {
        verb: &'static str,
        user: Option<String>,
    },
    /// Listing or watching fails otherwise; retrying with backoff.
    Failing { error: String },
}

impl fmt::Display for KindState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KindState::Listing => f.write_str("listing"),
            KindState::Synced => f.write_str("synced"),
            KindState::Forbidden { verb, .. } => write!(f, "forbidden ({verb})"),
            KindState::Failing { error } => write!(f, "failing: {error}"),
        }
    }
}

/// Every kind's [`KindState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeStatus {
    kinds: BTreeMap<Kind, KindState>,
}

impl Default for KubeStatus {
    fn default() -> Self {
        Self {
            kinds: Kind::ALL
                .into_iter()
                .map(|kind| (kind, KindState::Listing))
                .collect(),
        }
    }
}

impl KubeStatus {
    pub fn get(&self, kind: Kind) -> &KindState {
        self.kinds.get(&kind).unwrap_or(&KindState::Listing)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Kind, &KindState)> {
        self.kinds.iter().map(|(kind, state)| (*kind, state))
    }
}

/// "pods synced, networkpolicies.networking.k8s.io forbidden (list), ..."
impl fmt::Display for KubeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, state)) in self.iter().enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{kind} {state}")?;
        }
        Ok(())
    }
}

/// A kind of object the relay watches.
pub trait Watched {
    const KIND: Kind;

    /// Drops what the relay never reads before the object is stored:
    /// managed fields and annotations everywhere, most of specs and statuses.
    fn trim(&mut self);
}

fn trim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pods;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = self.spec.take().map(|spec| PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
        self.status = self.status.take().map(|status| PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            start_time: status.start_time,
            ..PodStatus::default()
        });
    }
}

impl Watched for Service {
    const KIND: Kind = Kind::Services;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = self.spec.take().map(|spec| ServiceSpec {
            selector: spec.selector,
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips,
            ..ServiceSpec::default()
        });
        self.status = None;
    }
}

impl Watched for Namespace {
    const KIND: Kind = Kind::Namespaces;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        self.status = None;
    }
}

impl Watched for Node {
    const KIND: Kind = Kind::Nodes;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.spec = None;
        self.status = self.status.take().map(|status| NodeStatus {
            addresses: status.addresses,
            ..NodeStatus::default()
        });
    }
}

impl Watched for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlices;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
        self.ports = None;
        for endpoint in self.endpoints.iter_mut().flatten() {
            *endpoint = Endpoint {
                addresses: std::mem::take(&mut endpoint.addresses),
                target_ref: endpoint.target_ref.take(),
                ..Endpoint::default()
            };
        }
    }
}

/// Policies are small and read whole.
impl Watched for NetworkPolicy {
    const KIND: Kind = Kind::NetworkPolicies;

    fn trim(&mut self) {
        trim_meta(&mut self.metadata);
    }
}

/// The reflectors' stores, one per kind.
#[derive(Clone)]
pub struct KubeStores {
    pub namespaces: Store<Namespace>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub network_policies: Store<NetworkPolicy>,
    pub nodes: Store<Node>,
}

impl fmt::Debug for KubeStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeStores")
            .field("namespaces", &self.namespaces.len())
            .field("pods", &self.pods.len())
            .field("services", &self.services.len())
            .field("endpoint_slices", &self.endpoint_slices.len())
            .field("network_policies", &self.network_policies.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// The writing ends of [`KubeStores`], for the reflectors (or a test) to fill.
#[derive(Debug)]
pub struct KubeWriters {
    pub namespaces: reflector::store::Writer<Namespace>,
    pub pods: reflector::store::Writer<Pod>,
    pub services: reflector::store::Writer<Service>,
    pub endpoint_slices: reflector::store::Writer<EndpointSlice>,
    pub network_policies: reflector::store::Writer<NetworkPolicy>,
    pub nodes: reflector::store::Writer<Node>,
}

impl KubeStores {
    /// Empty stores and their writers.
    pub fn new() -> (KubeStores, KubeWriters) {
        let (namespaces, namespaces_writer) = reflector::store();
        let (pods, pods_writer) = reflector::store();
        let (services, services_writer) = reflector::store();
        let (endpoint_slices, endpoint_slices_writer) = reflector::store();
        let (network_policies, network_policies_writer) = reflector::store();
        let (nodes, nodes_writer) = reflector::store();
        let stores = KubeStores {
            namespaces,
            pods,
            services,
            endpoint_slices,
            network_policies,
            nodes,
        };
        let writers = KubeWriters {
            namespaces: namespaces_writer,
            pods: pods_writer,
            services: services_writer,
            endpoint_slices: endpoint_slices_writer,
            network_policies: network_policies_writer,
            nodes: nodes_writer,
        };
        (stores, writers)
    }

    /// What the stores hold now.
    pub fn objects(&self) -> Objects {
        let mut objects = Objects::default();
        objects
            .add(self.namespaces.state())
            .add(self.pods.state())
            .add(self.services.state())
            .add(self.endpoint_slices.state())
            .add(self.network_policies.state())
            .add(self.nodes.state());
        objects
    }

    /// Metadata from the stores, carrying over the previous owners of
    /// addresses from `previous` as of `now_ns` (unix ns). The warnings name
    /// objects whose addresses do not parse.
    pub fn build(&self, previous: &Metadata, now_ns: i64) -> (Metadata, Vec<String>) {
        let (mut metadata, warnings) = Metadata::from_objects(&self.objects());
        metadata.inherit(previous, now_ns);
        (metadata, warnings.into_iter().map(|w| w.message).collect())
    }
}

/// A running Kubernetes metadata source.
#[derive(Debug)]
pub struct KubeSource {
    /// Fresh metadata after every (debounced) change; starts empty. The
    /// source stops once every receiver is gone.
    pub metadata: watch::Receiver<Arc<Metadata>>,
    pub status: watch::Receiver<KubeStatus>,
    pub stores: KubeStores,
}

/// Starts watching the cluster through `client`. The first metadata is sent
/// when the first kind has been listed; until then it is empty.
pub fn spawn(client: Client) -> KubeSource {
    let (stores, writers) = KubeStores::new();
    let (metadata_tx, metadata) = watch::channel(Arc::new(Metadata::empty()));
    let (status_tx, status) = watch::channel(KubeStatus::default());
    let shared = Shared {
        changed: Arc::new(Notify::new()),
        status: status_tx,
    };

    // Dropped with the rebuild task, which aborts them.
    let mut kinds = JoinSet::new();
    kinds.spawn(reflect(client.clone(), writers.namespaces, shared.clone()));
    kinds.spawn(reflect(client.clone(), writers.pods, shared.clone()));
    kinds.spawn(reflect(client.clone(), writers.services, shared.clone()));
    kinds.spawn(reflect(
        client.clone(),
        writers.endpoint_slices,
        shared.clone(),
    ));
    kinds.spawn(reflect(
        client.clone(),
        writers.network_policies,
        shared.clone(),
    ));
    kinds.spawn(reflect(client.clone(), writers.nodes, shared.clone()));

    tokio::spawn(rebuild(stores.clone(), shared.changed, metadata_tx, kinds));
    KubeSource {
        metadata,
        status,
        stores,
    }
}

/// What every kind's reflector shares with the rebuild task.
#[derive(Debug, Clone)]
struct Shared {
    /// Signalled when a store changed.
    changed: Arc<Notify>,
    status: watch::Sender<KubeStatus>,
}

/// Keeps one kind's store in step with the API server, retrying failures
/// with kube's default backoff, and reports where it stands.
async fn reflect<K>(client: Client, writer: reflector::store::Writer<K>, shared: Shared)
where
    K: Resource<DynamicType = ()> + Watched + Clone + DeserializeOwned + fmt::Debug,
    K: Send + Sync + 'static,
{
    let kind = K::KIND;
    let store = writer.as_reader();
    let events = watcher(Api::<K>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(K::trim)
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    let mut synced_once = false;
    while let Some(event) = events.next().await {
        let state = match event {
            // The store changes only once a listing is complete.
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                shared.changed.notify_one();
                KindState::Synced
            }
            Err(error) => match failure_state(&error) {
                Some(state) => state,
                None => continue,
            },
        };
        let before = shared.status.borrow().get(kind).clone();
        if state == before {
            continue;
        }
        report(kind, &before, &state, store.len(), synced_once);
        synced_once |= state == KindState::Synced;
        shared.status.send_modify(|status| {
            status.kinds.insert(kind, state);
        });
    }
}

/// The state a watcher error puts a kind in; `None` for a routine one.
fn failure_state(error: &watcher::Error) -> Option<KindState> {
    let (verb, api) = match error {
        watcher::Error::InitialListFailed(e) => ("list", e),
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => ("watch", e),
        // 410 Gone: the watch fell too far behind and the watcher lists
        // again, as it should.
        watcher::Error::WatchError(status) if status.code == 410 => return None,
        watcher::Error::WatchError(status) if status.code == 403 => {
            return Some(forbidden("watch", &status.message));
        }
        watcher::Error::WatchError(status) => {
            return Some(KindState::Failing {
                error: format!("cannot watch: {}", status.message),
            });
        }
        watcher::Error::NoResourceVersion => {
            return Some(KindState::Failing {
                error: error.to_string(),
            });
        }
    };
    Some(match api {
        ::kube::Error::Api(status) if status.code == 403 => forbidden(verb, &status.message),
        ::kube::Error::Api(status) => KindState::Failing {
            error: format!("cannot {verb}: {}", status.message),
        },
        other => KindState::Failing {
            error: format!("cannot {verb}: {}", with_causes(other)),
        },
    })
}

/// An error and its causes ("client error (Connect): tcp connect error:
/// Connection refused"): the cause is what tells an operator what to fix.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let shown = next.to_string();
        if !text.contains(&shown) {
            text = format!("{text}: {shown}");
        }
        cause = next.source();
    }
    text
}

/// A 403; the API server's message names the user as `User "NAME" cannot ...`.
fn forbidden(verb: &'static str, message: &str) -> KindState {
    let user = message
        .split_once("User \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(user, _)| user.to_string());
    KindState::Forbidden { verb, user }
}

/// What is wrong with a kind, what it costs and what to do; `None` while
/// it is fine.
fn problem(kind: Kind, state: &KindState) -> Option<String> {
    match state {
        KindState::Listing | KindState::Synced => None,
        KindState::Forbidden { verb, user } => {
            let denied = match user {
                Some(user) => format!("forbidden for {user}"),
                None => "forbidden".to_string(),
            };
            Some(format!(
                "cannot {verb} {kind} at the cluster scope: {denied}; grant it in the \
                 ClusterRole skymap-relay (deploy/10-rbac.yaml) — {}",
                kind.loss()
            ))
        }
        KindState::Failing { error } => Some(format!("{error}; retrying ({})", kind.loss())),
    }
}

impl KubeStatus {
    /// Every kind's state for `skymap status`.
    pub fn to_wire(&self) -> Vec<skymap_proto::v1::MetadataKind> {
        self.iter()
            .map(|(kind, state)| skymap_proto::v1::MetadataKind {
                resource: kind.resource().to_owned(),
                state: match state {
                    KindState::Listing => "listing",
                    KindState::Synced => "synced",
                    KindState::Forbidden { .. } => "forbidden",
                    KindState::Failing { .. } => "failing",
                }
                .to_owned(),
                detail: problem(kind, state).unwrap_or_default(),
            })
            .collect()
    }
}

/// Logs a kind's change of state: each kind's first sync and each new
/// problem once, and retries of the same problem only at debug level.
fn report(kind: Kind, before: &KindState, after: &KindState, objects: usize, synced_once: bool) {
    match after {
        KindState::Synced if synced_once => {
            tracing::info!("kubernetes: {kind} synced again ({objects} objects)");
        }
        KindState::Synced => tracing::info!("kubernetes: {kind} synced ({objects} objects)"),
        KindState::Forbidden { .. } if !matches!(before, KindState::Forbidden { .. }) => {
            tracing::warn!("{}", problem(kind, after).unwrap_or_default());
        }
        KindState::Failing { error } if !matches!(before, KindState::Failing { .. }) => {
            tracing::warn!("kubernetes: {kind}: {error}; retrying ({})", kind.loss());
        }
        _ => tracing::debug!("kubernetes: {kind} {after}"),
    }
}

/// Builds and sends new metadata whenever a store changed (at most once per
/// [`DEBOUNCE`]) and when a previous owner of an address is due to be
/// forgotten. Returns when every metadata receiver is gone; dropping `kinds`
/// then stops the reflectors.
async fn rebuild(
    stores: KubeStores,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<Metadata>>,
    kinds: JoinSet<()>,
) {
    let _kinds = kinds;
    let mut last: Option<Instant> = None;
    let mut logged: HashSet<String> = HashSet::new();
    loop {
        let expiry = tx.borrow().next_expiry_ns();
        let forget = async {
            match expiry {
                Some(at) => {
                    let wait = u64::try_from(at.saturating_sub(now_ns())).unwrap_or(0);
                    tokio::time::sleep(Duration::from_nanos(wait)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tx.closed() => return,
            () = changed.notified() => {}
            () = forget => {}
        }
        if let Some(last) = last {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep_until(last + DEBOUNCE) => {}
            }
        }
        last = Some(Instant::now());
        let previous = tx.borrow().clone();
        let from = stores.clone();
        // Joining a large cluster takes a while; keep it off the async workers.
        let built = tokio::task::spawn_blocking(move || from.build(&previous, now_ns())).await;
        let Ok((metadata, warnings)) = built else {
            return;
        };
        // The same bad object shows up in every build; say so once.
        let fresh: HashSet<String> = warnings.into_iter().collect();
        for warning in fresh.difference(&logged) {
            tracing::warn!("kubernetes: {warning}");
        }
        logged = fresh;
        tracing::debug!(
            "metadata rebuilt from the Kubernetes API: {} addresses, {} pods",
            metadata.len(),
            metadata.pods()
        );
        if tx.send(Arc::new(metadata)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use ::kube::core::Status;

    use super::*;

    fn status(code: u16, message: &str) -> Box<Status> {
        Box::new(Status::failure(message, "").with_code(code))
    }

    #[test]
    fn watcher_errors_become_states() {
        let denied = "pods is forbidden: User \"alice\" cannot watch resource \"pods\"";
        assert_eq!(
            failure_state(&watcher::Error::WatchError(status(403, denied))),
            Some(KindState::Forbidden {
                verb: "watch",
                user: Some("alice".into()),
            })
        );
        let list = ::kube::Error::Api(status(403, "forbidden, no user named"));
        assert_eq!(
            failure_state(&watcher::Error::InitialListFailed(list)),
            Some(KindState::Forbidden {
                verb: "list",
                user: None,
            })
        );
        // A watch that fell behind lists again: nothing to report.
        let gone = watcher::Error::WatchError(status(410, "too old resource version"));
        assert_eq!(failure_state(&gone), None);

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let service = ::kube::Error::Service(Box::new(refused));
        assert_eq!(
            failure_state(&watcher::Error::WatchStartFailed(service)),
            Some(KindState::Failing {
                error: "cannot watch: ServiceError: refused".into(),
            })
        );
    }
}
