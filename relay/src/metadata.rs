//! Kubernetes metadata: which pod, service or node an IP address belongs to,
//! and the cluster as NetworkPolicy evaluation sees it.
//!
//! Two sources feed the same code path ([`Objects`] → [`Metadata::from_objects`]):
//! a file in the shape `kubectl get pods,services,namespaces,nodes,endpointslices,networkpolicies -A -o json`
//! prints (a `List`; a single object or a `PodList` works too), which
//! [`watch_file`] reloads when it changes, and the Kubernetes API
//! ([`crate::kube`]). An item that does not parse as its kind is skipped with
//! a [`MetadataWarning`]; the rest loads.
//!
//! Addresses change hands: a pod's IP can go to a new pod while flows of the
//! old one are still on their way. [`Metadata::inherit`] keeps the owners that
//! lost an address within [`OWNER_GRACE`], with the time they held it, and
//! [`Metadata::lookup_at`] answers by a flow's time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::DeserializeOwned;
use serde_json::Value;
use skymap_policy::{self as policy, Cluster};
use tokio::sync::watch;

use crate::aggregator::now_ns;

/// Labels that name a pod's workload when no owner does, most specific first:
/// the labels policy explanations name pods by, so both say the same.
pub const WORKLOAD_NAME_LABELS: [&str; 3] = policy::explain::IDENTITY_LABELS;

/// What kind of object owns an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointKind {
    Pod,
    /// A service's ClusterIP (traffic observed before DNAT).
    Service,
    /// A Kubernetes node's own address.
    Host,
}

/// The workload that owns a pod (Deployment, StatefulSet, DaemonSet, Job, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadRef {
    pub name: String,
    pub kind: String,
}

/// Everything the relay knows about one address, shared by every flow that
/// refers to it. A metadata reload makes new values; flows keep the ones that
/// were current when they were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub kind: EndpointKind,
    /// Empty for hosts.
    pub namespace: String,
    /// Pod name, service name or node name.
    pub name: String,
    /// "key=value", sorted.
    pub labels: Vec<String>,
    /// For pods.
    pub workload: Option<WorkloadRef>,
    /// For pods (where they run) and hosts (themselves).
    pub node_name: String,
    /// For pods: names of the services in the pod's namespace that select it, sorted.
    pub services: Vec<String>,
}

/// How long an address's previous owners are remembered: longer than flows
/// take to reach the relay, short enough that reused addresses are few.
pub const OWNER_GRACE: Duration = Duration::from_secs(5 * 60);

/// An owner that held an address during `[from_ns, until_ns)` (unix ns).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PastOwner {
    info: Arc<EndpointInfo>,
    from_ns: i64,
    until_ns: i64,
}

/// A consistent picture of the cluster's addresses.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    endpoints: HashMap<IpAddr, Arc<EndpointInfo>>,
    /// When each current owner got its address (unix ns), where known.
    since: HashMap<IpAddr, i64>,
    /// Owners that lost an address within [`OWNER_GRACE`], oldest first.
    past: HashMap<IpAddr, Vec<PastOwner>>,
    /// Pods by their UID, which is how a pod's cgroup names it.
    pods_by_uid: HashMap<String, Arc<EndpointInfo>>,
    /// Namespace name → its labels ("key=value", sorted).
    namespaces: HashMap<String, Vec<String>>,
    network_policies: Vec<NetworkPolicy>,
    policy_cluster: Cluster,
}

impl Metadata {
    pub fn empty() -> Self {
        Self::default()
    }

    /// The address's current owner.
    pub fn lookup(&self, ip: &IpAddr) -> Option<&Arc<EndpointInfo>> {
        self.endpoints.get(ip)
    }

    /// The owner of the address at `time_ns` (unix ns): a previous owner
    /// whose time with it covers `time_ns`, else the current owner.
    pub fn lookup_at(&self, ip: &IpAddr, time_ns: i64) -> Option<&Arc<EndpointInfo>> {
        let past = self.past.get(ip).and_then(|owners| {
            owners
                .iter()
                .rev()
                .find(|o| o.from_ns <= time_ns && time_ns < o.until_ns)
        });
        match past {
            Some(owner) => Some(&owner.info),
            None => self.endpoints.get(ip),
        }
    }

    /// Whether the address had another owner within [`OWNER_GRACE`], so that
    /// [`Metadata::lookup_at`] depends on the time.
    pub fn changed_hands(&self, ip: &IpAddr) -> bool {
        self.past.contains_key(ip)
    }

    /// Gives the address to `info`, since a time not known.
    pub fn insert(&mut self, ip: IpAddr, info: EndpointInfo) {
        self.endpoints.insert(ip, Arc::new(info));
        self.since.remove(&ip);
    }

    /// Like [`Metadata::insert`], for an owner that got the address at
    /// `since_ns` (unix ns).
    pub fn insert_since(&mut self, ip: IpAddr, info: EndpointInfo, since_ns: i64) {
        self.insert(ip, info);
        self.since.insert(ip, since_ns);
    }

    /// The pod with this UID (`metadata.uid`), if it has an address.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Arc<EndpointInfo>> {
        self.pods_by_uid.get(uid)
    }

    pub fn insert_pod_uid(&mut self, uid: String, info: EndpointInfo) {
        self.pods_by_uid.insert(uid, Arc::new(info));
    }

    pub fn set_namespace(&mut self, name: String, labels: Vec<String>) {
        self.namespaces.insert(name, labels);
    }

    pub fn namespace_labels(&self, name: &str) -> Option<&[String]> {
        self.namespaces.get(name).map(Vec::as_slice)
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    /// Every NetworkPolicy, sorted by namespace and name.
    pub fn network_policies(&self) -> &[NetworkPolicy] {
        &self.network_policies
    }

    /// Nodes, namespaces and pods (IPv4 only) as policy evaluation sees them.
    pub fn policy_cluster(&self) -> &Cluster {
        &self.policy_cluster
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Carries over, from the metadata this one replaces, the owners that
    /// lost their address at `now_ns` (unix ns) or within [`OWNER_GRACE`]
    /// before it. An owner's time with an address ends at `now_ns`, or when
    /// its successor got it if that was earlier.
    pub fn inherit(&mut self, previous: &Metadata, now_ns: i64) {
        let grace = i64::try_from(OWNER_GRACE.as_nanos()).unwrap_or(i64::MAX);
        let horizon = now_ns.saturating_sub(grace);
        for (ip, owners) in &previous.past {
            let fresh = owners.iter().filter(|o| o.until_ns > horizon).cloned();
            self.past.entry(*ip).or_default().extend(fresh);
        }
        for (ip, old) in &previous.endpoints {
            if self
                .endpoints
                .get(ip)
                .is_some_and(|new| same_owner(new, old))
            {
                continue;
            }
            self.past.entry(*ip).or_default().push(PastOwner {
                info: old.clone(),
                from_ns: previous.since.get(ip).copied().unwrap_or(i64::MIN),
                until_ns: now_ns,
            });
        }
        for (ip, owners) in &mut self.past {
            let successor = self
                .since
                .get(ip)
                .filter(|_| self.endpoints.contains_key(ip));
            if let Some(&start) = successor {
                for owner in owners.iter_mut().filter(|o| o.from_ns < start) {
                    owner.until_ns = owner.until_ns.min(start);
                }
            }
            owners.retain(|o| o.until_ns > horizon && o.from_ns < o.until_ns);
            owners.sort_by_key(|o| o.until_ns);
        }
        self.past.retain(|_, owners| !owners.is_empty());
    }

    /// When the earliest remembered previous owner is forgotten (unix ns),
    /// so a source can rebuild then.
    pub fn next_expiry_ns(&self) -> Option<i64> {
        let grace = i64::try_from(OWNER_GRACE.as_nanos()).unwrap_or(i64::MAX);
        self.past
            .values()
            .flatten()
            .map(|o| o.until_ns.saturating_add(grace))
            .min()
    }
}

/// The same pod, service or node (its details may have changed).
fn same_owner(a: &EndpointInfo, b: &EndpointInfo) -> bool {
    a.kind == b.kind && a.namespace == b.namespace && a.name == b.name
}

/// Why a metadata file could not be used at all.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: invalid JSON: {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: not a Kubernetes list or object ({found}); expected the output of \
         `kubectl get pods,services,namespaces,nodes,endpointslices,networkpolicies -A -o json`"
    )]
    NotAList { path: String, found: String },
}

/// An item that was skipped. `item` is its index in `items` (0-based, as jq
/// counts), so `jq '.items[7]'` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataWarning {
    pub item: usize,
    pub message: String,
}

impl fmt::Display for MetadataWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {} {}", self.item, self.message)
    }
}

impl Metadata {
    /// Builds metadata from the text of a `kubectl get -o json` file. `source`
    /// names the file in errors.
    pub fn from_json_str(
        text: &str,
        source: &str,
    ) -> Result<(Metadata, Vec<MetadataWarning>), MetadataError> {
        let root: Value = serde_json::from_str(text).map_err(|e| {
            let full = e.to_string();
            // serde_json appends " at line L column C"; we put those first.
            let message = full
                .rfind(" at line ")
                .map_or(full.as_str(), |at| &full[..at])
                .to_string();
            MetadataError::Json {
                path: source.to_string(),
                line: e.line(),
                column: e.column(),
                message,
            }
        })?;
        let (items, hint) = list_items(root).map_err(|found| MetadataError::NotAList {
            path: source.to_string(),
            found,
        })?;
        Ok(build(items, hint.as_deref()))
    }

    /// Reads and parses a metadata file.
    pub fn load(path: &Path) -> Result<(Metadata, Vec<MetadataWarning>), MetadataError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| MetadataError::Io {
            path: name.clone(),
            source,
        })?;
        Self::from_json_str(&text, &name)
    }

    /// How many distinct pods have an address here.
    pub fn pods(&self) -> usize {
        self.endpoints
            .values()
            .filter(|info| info.kind == EndpointKind::Pod)
            .map(|info| (info.namespace.as_str(), info.name.as_str()))
            .collect::<HashSet<_>>()
            .len()
    }
}

/// The items of a list (or the one object), and the kind a typed list such as
/// `PodList` implies for items that lack their own. Err describes what was found.
fn list_items(root: Value) -> Result<(Vec<Value>, Option<String>), String> {
    let Value::Object(mut object) = root else {
        return Err(format!("top level is {}", json_type(&root)));
    };
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string);
    match object.remove("items") {
        Some(Value::Array(items)) => {
            let hint = kind
                .as_deref()
                .and_then(|k| k.strip_suffix("List"))
                .filter(|k| !k.is_empty())
                .map(str::to_string);
            Ok((items, hint))
        }
        Some(other) => Err(format!("\"items\" is {}", json_type(&other))),
        None => match kind.as_deref() {
            Some("Pod" | "Service" | "Namespace" | "Node" | "EndpointSlice" | "NetworkPolicy") => {
                Ok((vec![Value::Object(object)], None))
            }
            Some(kind) => Err(format!("kind {kind:?} without \"items\"")),
            None => Err("an object without \"kind\" or \"items\"".to_string()),
        },
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Typed objects from a file or the API, before they are joined up. Each
/// carries its index in the file's `items`, which warnings name; objects
/// added with [`Objects::add`] are numbered in order.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pods: Vec<(usize, Arc<Pod>)>,
    services: Vec<(usize, Arc<Service>)>,
    namespaces: Vec<(usize, Arc<Namespace>)>,
    nodes: Vec<(usize, Arc<Node>)>,
    endpoint_slices: Vec<(usize, Arc<EndpointSlice>)>,
    network_policies: Vec<(usize, Arc<NetworkPolicy>)>,
}

/// A kind of object that [`Objects`] holds.
pub trait Listed: DeserializeOwned + Sized {
    #[doc(hidden)]
    fn list(objects: &mut Objects) -> &mut Vec<(usize, Arc<Self>)>;
}

macro_rules! listed {
    ($($kind:ty => $field:ident),* $(,)?) => {$(
        impl Listed for $kind {
            fn list(objects: &mut Objects) -> &mut Vec<(usize, Arc<Self>)> {
                &mut objects.$field
            }
        }
    )*};
}

listed! {
    Pod => pods,
    Service => services,
    Namespace => namespaces,
    Node => nodes,
    EndpointSlice => endpoint_slices,
    NetworkPolicy => network_policies,
}

impl Objects {
    /// Adds objects of one kind, e.g. a reflector store's state.
    pub fn add<K: Listed>(&mut self, objects: impl IntoIterator<Item = Arc<K>>) -> &mut Self {
        let list = K::list(self);
        let start = list.len();
        list.extend(objects.into_iter().enumerate().map(|(i, o)| (start + i, o)));
        self
    }

    /// Parses item `index` of a file as a `K`; Err is serde's message.
    fn parse<K: Listed>(&mut self, index: usize, item: Value) -> Result<(), String> {
        let object = serde_json::from_value(item).map_err(|e| e.to_string())?;
        K::list(self).push((index, Arc::new(object)));
        Ok(())
    }
}

impl Metadata {
    /// Joins typed objects up; the warnings name objects whose addresses
    /// do not parse.
    pub fn from_objects(objects: &Objects) -> (Metadata, Vec<MetadataWarning>) {
        let mut warnings = Vec::new();
        let metadata = join(objects, &mut warnings);
        (metadata, warnings)
    }
}

fn build(items: Vec<Value>, hint: Option<&str>) -> (Metadata, Vec<MetadataWarning>) {
    let mut warnings = Vec::new();
    let mut objects = Objects::default();
    for (index, item) in items.into_iter().enumerate() {
        let kind = item
            .get("kind")
            .and_then(Value::as_str)
            .or(hint)
            .map(str::to_string);
        let what = describe(&item, kind.as_deref());
        let parsed = match kind.as_deref() {
            Some("Pod") => objects.parse::<Pod>(index, item),
            Some("Service") => objects.parse::<Service>(index, item),
            Some("Namespace") => objects.parse::<Namespace>(index, item),
            Some("Node") => objects.parse::<Node>(index, item),
            Some("EndpointSlice") => objects.parse::<EndpointSlice>(index, item),
            Some("NetworkPolicy") => objects.parse::<NetworkPolicy>(index, item),
            // Other kinds (Deployments, ConfigMaps, ...) carry no addresses.
            Some(_) => Ok(()),
            None => Err("no \"kind\"".to_string()),
        };
        if let Err(message) = parsed {
            warnings.push(MetadataWarning {
                item: index,
                message: format!("({what}): {message}"),
            });
        }
    }
    let metadata = join(&objects, &mut warnings);
    (metadata, warnings)
}

/// "Pod default/x", for warnings, from whatever the raw item has.
fn describe(item: &Value, kind: Option<&str>) -> String {
    let field = |name: &str| {
        item.get("metadata")
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
    };
    let kind = kind.unwrap_or("object");
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        _ => kind.to_string(),
    }
}

/// "key=value" for each label, sorted by key (a BTreeMap iterates in order).
fn labels_of(meta: &ObjectMeta) -> Vec<String> {
    meta.labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// A Kubernetes time as unix ns.
fn unix_ns(time: &Time) -> i64 {
    i64::try_from(time.0.as_nanosecond()).unwrap_or(i64::MAX)
}

/// When an object came to be (`creationTimestamp`), as unix ns.
fn created_ns(meta: &ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(unix_ns)
}

/// A service's `spec.selector`.
type Selector = BTreeMap<String, String>;

/// The label an EndpointSlice names its service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What EndpointSlices say about the pods behind services, keyed by namespace.
#[derive(Default)]
struct SliceMembers<'a> {
    /// (namespace, pod name) → services it backs.
    by_pod: HashMap<(&'a str, &'a str), Vec<&'a str>>,
    /// (namespace, address) → services, for endpoints that name no pod.
    by_ip: HashMap<(&'a str, IpAddr), Vec<&'a str>>,
    /// (namespace, pod name) → its addresses, for pods whose status has none yet.
    addresses: HashMap<(&'a str, &'a str), Vec<&'a String>>,
}

impl<'a> SliceMembers<'a> {
    fn new(slices: &'a [(usize, Arc<EndpointSlice>)]) -> Self {
        let mut members = SliceMembers::default();
        for (_, slice) in slices {
            let (Some(namespace), Some(service)) = (
                slice.metadata.namespace.as_deref(),
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL)),
            ) else {
                continue;
            };
            for endpoint in slice.endpoints.iter().flatten() {
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.as_deref());
                if let Some(pod) = pod {
                    let key = (namespace, pod);
                    members.by_pod.entry(key).or_default().push(service);
                    members
                        .addresses
                        .entry(key)
                        .or_default()
                        .extend(&endpoint.addresses);
                    continue;
                }
                for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                    members
                        .by_ip
                        .entry((namespace, ip))
                        .or_default()
                        .push(service);
                }
            }
        }
        members
    }
}

fn join(objects: &Objects, warnings: &mut Vec<MetadataWarning>) -> Metadata {
    let mut md = Metadata::empty();
    let mut cluster = Cluster::default();
    let mut bad_address = |item: usize, what: String, field: &str, value: &str| {
        warnings.push(MetadataWarning {
            item,
            message: format!("({what}): {field}: invalid address {value:?}, skipped"),
        })
    };

    for (_, namespace) in &objects.namespaces {
        if let Some(name) = &namespace.metadata.name {
            md.set_namespace(name.clone(), labels_of(&namespace.metadata));
            cluster.namespaces.push(policy::Namespace {
                name: name.clone(),
                labels: namespace.metadata.labels.clone().unwrap_or_default(),
            });
        }
    }

    for (index, node) in &objects.nodes {
        let Some(name) = &node.metadata.name else {
            continue;
        };
        let mut policy_node = policy::Node {
            name: name.clone(),
            addresses: Vec::new(),
        };
        let addresses = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten());
        for address in addresses {
            if !matches!(address.type_.as_str(), "InternalIP" | "ExternalIP") {
                continue;
            }
            let Ok(ip) = address.address.parse::<IpAddr>() else {
                bad_address(
                    *index,
                    format!("Node {name}"),
                    "status.addresses",
                    &address.address,
                );
                continue;
            };
            if let IpAddr::V4(v4) = ip {
                policy_node.addresses.push(v4);
            }
            let info = EndpointInfo {
                kind: EndpointKind::Host,
                namespace: String::new(),
                name: name.clone(),
                labels: labels_of(&node.metadata),
                workload: None,
                node_name: name.clone(),
                services: Vec::new(),
            };
            insert_owner(&mut md, ip, info, created_ns(&node.metadata));
        }
        cluster.nodes.push(policy_node);
    }

    // Selectors per namespace, for matching pods below.
    let mut selectors: HashMap<&str, Vec<(&str, &Selector)>> = HashMap::new();
    for (index, service) in &objects.services {
        let (Some(name), Some(namespace)) = (&service.metadata.name, &service.metadata.namespace)
        else {
            continue;
        };
        let Some(spec) = &service.spec else { continue };
        if let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) {
            selectors
                .entry(namespace.as_str())
                .or_default()
                .push((name.as_str(), selector));
        }
        let ips: Vec<&String> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().collect(),
            _ => spec.cluster_ip.iter().collect(),
        };
        for text in ips {
            // Headless services say "None"; ExternalName ones have none.
            if text.is_empty() || text == "None" {
                continue;
            }
            let Ok(ip) = text.parse::<IpAddr>() else {
                bad_address(
                    *index,
                    format!("Service {namespace}/{name}"),
                    "spec.clusterIPs",
                    text,
                );
                continue;
            };
            let info = EndpointInfo {
                kind: EndpointKind::Service,
                namespace: namespace.clone(),
                name: name.clone(),
                labels: labels_of(&service.metadata),
                workload: None,
                node_name: String::new(),
                services: Vec::new(),
            };
            insert_owner(&mut md, ip, info, created_ns(&service.metadata));
        }
    }

    let slices = SliceMembers::new(&objects.endpoint_slices);
    // Oldest first, so that of two pods listed with one address the newer
    // one owns it, whatever order the source listed them in.
    let mut pods: Vec<&(usize, Arc<Pod>)> = objects.pods.iter().collect();
    pods.sort_by_cached_key(|(_, pod)| {
        let meta = &pod.metadata;
        (
            pod_started_ns(pod),
            meta.namespace.clone(),
            meta.name.clone(),
        )
    });
    for (index, pod) in pods {
        let Some(name) = &pod.metadata.name else {
            continue;
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let status = pod.status.as_ref();
        // A finished pod's address is free for a new pod to take.
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        // A host-network pod has the node's address, which the node claims.
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            continue;
        }
        let pod_key = (namespace.as_str(), name.as_str());
        let mut ips: Vec<&String> = match status.and_then(|s| s.pod_ips.as_ref()) {
            Some(ips) if !ips.is_empty() => ips.iter().map(|p| &p.ip).collect(),
            _ => status.and_then(|s| s.pod_ip.as_ref()).into_iter().collect(),
        };
        if ips.is_empty() {
            // The endpoints controller may have seen the address first.
            ips = slices.addresses.get(&pod_key).cloned().unwrap_or_default();
        }
        if ips.is_empty() {
            continue;
        }
        let mut parsed = Vec::with_capacity(ips.len());
        for text in ips {
            match text.parse::<IpAddr>() {
                Ok(ip) => parsed.push(ip),
                Err(_) => bad_address(
                    *index,
                    format!("Pod {namespace}/{name}"),
                    "status.podIPs",
                    text,
                ),
            }
        }
        let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
        let by_selector = selectors
            .get(namespace.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, selector)| selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
            .map(|(service, _)| *service);
        let by_slice = slices.by_pod.get(&pod_key).into_iter().flatten().copied();
        let by_slice_ip = parsed
            .iter()
            .filter_map(|ip| slices.by_ip.get(&(namespace.as_str(), *ip)))
            .flatten()
            .copied();
        let mut services: Vec<String> = by_selector
            .chain(by_slice)
            .chain(by_slice_ip)
            .map(str::to_string)
            .collect();
        services.sort();
        services.dedup();
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let info = EndpointInfo {
            kind: EndpointKind::Pod,
            namespace: namespace.clone(),
            name: name.clone(),
            labels: labels_of(&pod.metadata),
            workload: Some(workload_of(pod, name, &pod_labels)),
            node_name: node_name.clone(),
            services,
        };
        if let Some(uid) = pod.metadata.uid.clone().filter(|uid| !uid.is_empty()) {
            md.insert_pod_uid(uid, info.clone());
        }
        let ipv4 = parsed.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        if let Some(ip) = ipv4 {
            cluster.pods.push(policy::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
                labels: pod_labels,
                ip,
                node: node_name,
                ports: named_ports(pod),
            });
        }
        let since = pod_started_ns(pod);
        for ip in parsed {
            insert_owner(&mut md, ip, info.clone(), since);
        }
    }

    let mut policies: Vec<NetworkPolicy> = objects
        .network_policies
        .iter()
        .map(|(_, policy)| NetworkPolicy::clone(policy))
        .collect();
    policies.sort_by(|a, b| {
        let key = |p: &NetworkPolicy| (p.metadata.namespace.clone(), p.metadata.name.clone());
        key(a).cmp(&key(b))
    });
    md.network_policies = policies;

    cluster.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    cluster.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    cluster
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    md.policy_cluster = cluster;
    md
}

fn insert_owner(md: &mut Metadata, ip: IpAddr, info: EndpointInfo, since_ns: Option<i64>) {
    match since_ns {
        Some(since) => md.insert_since(ip, info, since),
        None => md.insert(ip, info),
    }
}

/// When a pod started (`status.startTime`, else `creationTimestamp`), as unix ns.
fn pod_started_ns(pod: &Pod) -> Option<i64> {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(unix_ns)
        .or_else(|| created_ns(&pod.metadata))
}

/// The pod's named container ports, which named policy ports refer to.
/// SCTP ports are left out: policy evaluation has no SCTP.
fn named_ports(pod: &Pod) -> Vec<policy::ContainerPort> {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| {
            let protocol = match port.protocol.as_deref() {
                None | Some("TCP") => policy::Protocol::Tcp,
                Some("UDP") => policy::Protocol::Udp,
                Some(_) => return None,
            };
            Some(policy::ContainerPort {
                name: port.name.clone().filter(|n| !n.is_empty())?,
                port: u16::try_from(port.container_port).ok()?,
                protocol,
            })
        })
        .collect()
}

/// The workload a pod belongs to: its controller (a Deployment seen through
/// its ReplicaSet), or, for a bare pod, its app label or its own name.
fn workload_of(pod: &Pod, name: &str, labels: &BTreeMap<String, String>) -> WorkloadRef {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
        // A static pod's "owner" is its Node; that is not a workload.
        .filter(|o| o.kind != "Node");
    if let Some(owner) = owner {
        if owner.kind == "ReplicaSet" {
            let hash = labels.get("pod-template-hash");
            if let Some((deployment, suffix)) = owner.name.rsplit_once('-')
                && hash.map(String::as_str) == Some(suffix)
            {
                return WorkloadRef {
                    name: deployment.to_string(),
                    kind: "Deployment".to_string(),
                };
            }
        }
        return WorkloadRef {
            name: owner.name.clone(),
            kind: owner.kind.clone(),
        };
    }
    let name = policy::explain::identity_label(labels).map_or(name, |(_, value)| value);
    WorkloadRef {
        name: name.to_string(),
        kind: "Pod".to_string(),
    }
}

/// Polls `path` every `interval` (mtime + length, then a content hash) and
/// sends a new `Arc<Metadata>` on `tx` when it changed and parses. A parse
/// error is logged with `tracing::warn!` (naming file, line and column) and the
/// previous metadata stays. The file as it is at the first poll is taken to be
/// what the caller already loaded. Each new metadata inherits the addresses'
/// previous owners from the last one sent. Returns when `tx` is closed.
pub async fn watch_file(path: PathBuf, interval: Duration, tx: watch::Sender<Arc<Metadata>>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watcher = FileWatcher::new(path);
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = ticker.tick() => {}
        }
        // Reading and parsing a big cluster's file takes a while; keep it off
        // the async workers.
        let polled = tokio::task::spawn_blocking(move || {
            let fresh = watcher.poll();
            (watcher, fresh)
        })
        .await;
        let Ok((back, fresh)) = polled else { return };
        watcher = back;
        if let Some(mut metadata) = fresh {
            metadata.inherit(&tx.borrow(), now_ns());
            if tx.send(Arc::new(metadata)).is_err() {
                return;
            }
        }
    }
}

/// What [`watch_file`] remembers about the file between polls.
struct FileWatcher {
    path: PathBuf,
    stamp: Option<(Option<SystemTime>, u64)>,
    hash: Option<u64>,
    first: bool,
    /// The last problem logged, so a file that stays broken is reported once.
    problem: Option<String>,
}

impl FileWatcher {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            stamp: None,
            hash: None,
            first: true,
            problem: None,
        }
    }

    fn report(&mut self, problem: String) {
        if self.problem.as_ref() != Some(&problem) {
            tracing::warn!("metadata not reloaded, keeping the previous one: {problem}");
            self.problem = Some(problem);
        }
    }

    /// New metadata if the file changed since the last poll and parses.
    fn poll(&mut self) -> Option<Metadata> {
        let first = std::mem::replace(&mut self.first, false);
        let name = self.path.display().to_string();
        let stat = match std::fs::metadata(&self.path) {
            Ok(stat) => stat,
            Err(e) => {
                self.stamp = None;
                self.report(format!("{name}: {e}"));
                return None;
            }
        };
        let stamp = (stat.modified().ok(), stat.len());
        if self.stamp == Some(stamp) {
            return None;
        }
        self.stamp = Some(stamp);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                self.report(format!("{name}: {e}"));
                return None;
            }
        };
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        if self.hash == Some(hash) {
            return None;
        }
        self.hash = Some(hash);
        if first {
            return None;
        }
        match Metadata::from_json_str(&text, &name) {
            Ok((metadata, warnings)) => {
                self.problem = None;
                for warning in warnings.iter().take(5) {
                    tracing::warn!("{name}: {warning}");
                }
                if warnings.len() > 5 {
                    tracing::warn!("{name}: {} more items skipped", warnings.len() - 5);
                }
                tracing::info!(
                    "metadata reloaded from {name}: {} addresses, {} pods",
                    metadata.len(),
                    metadata.pods()
                );
                Some(metadata)
            }
            Err(e) => {
                self.report(e.to_string());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/metadata.json"
    );

    fn fixture() -> Metadata {
        let (md, warnings) = Metadata::load(Path::new(FIXTURE)).expect("fixture loads");
        assert_eq!(warnings, []);
        md
    }

    fn at<'a>(md: &'a Metadata, ip: &str) -> &'a EndpointInfo {
        let ip: IpAddr = ip.parse().expect("test address");
        md.lookup(&ip).unwrap_or_else(|| panic!("{ip} not found"))
    }

    fn has(md: &Metadata, ip: &str) -> bool {
        md.lookup(&ip.parse().expect("test address")).is_some()
    }

    fn workload(name: &str, kind: &str) -> Option<WorkloadRef> {
        Some(WorkloadRef {
            name: name.into(),
            kind: kind.into(),
        })
    }

    #[test]
    fn fixture_maps_every_address() {
        let md = fixture();
        // 1 node + 6 service addresses + 8 pod addresses (7 pods, one dual-stack).
        assert_eq!(md.len(), 15);
        assert_eq!(md.pods(), 7);

        let coredns = at(&md, "10.244.0.3");
        // The UID (how a pod's cgroup names it) finds the same pod.
        assert_eq!(md.pod_by_uid("a1-4xk2p").map(|p| &**p), Some(coredns));
        assert_eq!(
            md.pod_by_uid("9f1c869d"),
            None,
            "an owner's UID is not a pod's"
        );
        assert_eq!(coredns.kind, EndpointKind::Pod);
        assert_eq!(
            (coredns.namespace.as_str(), coredns.name.as_str()),
            ("kube-system", "coredns-5d78c9869d-4xk2p")
        );
        assert_eq!(
            coredns.labels,
            ["k8s-app=kube-dns", "pod-template-hash=5d78c9869d"]
        );
        assert_eq!(coredns.workload, workload("coredns", "Deployment"));
        assert_eq!(coredns.node_name, "node-1");
        assert_eq!(coredns.services, ["kube-dns"]);
        assert_eq!(at(&md, "10.244.0.4").name, "coredns-5d78c9869d-9qzmw");

        let dns = at(&md, "10.96.0.10");
        assert_eq!(dns.kind, EndpointKind::Service);
        assert_eq!(
            (dns.namespace.as_str(), dns.name.as_str()),
            ("kube-system", "kube-dns")
        );
        assert_eq!(
            dns.labels,
            [
                "k8s-app=kube-dns",
                "kubernetes.io/cluster-service=true",
                "kubernetes.io/name=CoreDNS"
            ]
        );
        assert_eq!(dns.workload, None);

        // Dual-stack pod: both addresses, same pod. The same-named selector in
        // another namespace does not count.
        for ip in ["10.244.1.5", "fd00:10:244:1::5"] {
            let frontend = at(&md, ip);
            assert_eq!(frontend.name, "frontend-7d9f8c6b5-abcde");
            assert_eq!(frontend.workload, workload("frontend", "Deployment"));
            assert_eq!(frontend.services, ["frontend"]);
        }
        assert_eq!(at(&md, "fd00:10:96::a1").name, "frontend");

        let backend = at(&md, "10.244.2.9");
        assert_eq!(backend.workload, workload("backend", "StatefulSet"));
        assert_eq!(backend.services, ["backend", "backend-metrics"]);

        let fluent = at(&md, "10.244.1.20");
        assert_eq!(fluent.workload, workload("fluent-bit", "DaemonSet"));
        assert_eq!(fluent.services, Vec::<String>::new());

        // A bare pod is named by its app label; a ReplicaSet without the
        // pod-template-hash label stays a ReplicaSet.
        assert_eq!(
            at(&md, "10.244.1.40").workload,
            workload("debug-shell", "Pod")
        );
        assert_eq!(
            at(&md, "10.244.1.41").workload,
            workload("legacy", "ReplicaSet")
        );

        // The node owns its address, not the host-network kube-proxy pod.
        let node = at(&md, "172.18.0.2");
        assert_eq!(node.kind, EndpointKind::Host);
        assert_eq!(
            (node.name.as_str(), node.node_name.as_str()),
            ("node-1", "node-1")
        );
        assert_eq!(node.namespace, "");

        // Completed job pod: its address may already belong to someone else.
        assert!(!has(&md, "10.244.1.30"));
        // Headless service: no address.
        assert!(!md.is_empty());

        let mut namespaces: Vec<&str> = md.namespaces().collect();
        namespaces.sort();
        assert_eq!(namespaces, ["default", "kube-system", "shop"]);
        assert_eq!(
            md.namespace_labels("shop"),
            Some(
                &[
                    "kubernetes.io/metadata.name=shop".to_string(),
                    "team=payments".to_string()
                ][..]
            )
        );
    }

    #[test]
    fn truncated_file_names_file_and_line() {
        let text = std::fs::read_to_string(FIXTURE).expect("fixture");
        let cut = &text[..text.len() / 2];
        let expected_line = cut.lines().count();
        let error = Metadata::from_json_str(cut, "cluster.json").expect_err("truncated");
        match &error {
            MetadataError::Json { path, line, .. } => {
                assert_eq!(path, "cluster.json");
                assert_eq!(*line, expected_line);
            }
            other => panic!("unexpected {other:?}"),
        }
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("cluster.json:{expected_line}:")),
            "{shown}"
        );
        assert!(shown.contains("EOF while parsing"), "{shown}");
    }

    #[test]
    fn not_json_and_not_a_list_are_errors() {
        let error = Metadata::from_json_str("pods:\n  - name: x\n", "pods.yaml").expect_err("yaml");
        assert_eq!(
            error.to_string(),
            "pods.yaml:1:1: invalid JSON: expected value"
        );

        let error = Metadata::from_json_str("[1, 2]", "a.json").expect_err("array");
        assert!(
            matches!(&error, MetadataError::NotAList { found, .. } if found == "top level is an array")
        );
        let error =
            Metadata::from_json_str(r#"{"kind":"ConfigMap","data":{}}"#, "b.json").expect_err("cm");
        assert!(
            error.to_string().starts_with(
                "b.json: not a Kubernetes list or object (kind \"ConfigMap\" without \"items\")"
            ),
            "{error}"
        );
        let error =
            Metadata::from_json_str(r#"{"kind":"List","items":{}}"#, "c.json").expect_err("items");
        assert!(
            matches!(&error, MetadataError::NotAList { found, .. } if found == "\"items\" is an object")
        );

        let missing =
            Metadata::load(Path::new("/nonexistent/skymap/metadata.json")).expect_err("missing");
        assert!(matches!(missing, MetadataError::Io { .. }));
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/skymap/metadata.json: "),
            "{missing}"
        );
    }

    #[test]
    fn a_wrongly_typed_item_is_skipped_with_a_warning() {
        let text = r#"{"kind":"List","items":[
            {"kind":"Pod","metadata":{"name":"ok","namespace":"default"},"status":{"podIP":"10.0.0.1"}},
            {"kind":"Pod","metadata":{"name":"bad","namespace":"default"},"spec":{"hostNetwork":"yes"}},
            {"kind":"Service","metadata":{"name":"svc","namespace":"default"},"spec":{"clusterIP":"10.96.0.5"}},
            {"metadata":{"name":"kindless"}},
            {"kind":"Pod","metadata":{"name":"odd","namespace":"default"},"status":{"podIPs":[{"ip":"10.0.0"},{"ip":"10.0.0.9"}]}},
            {"kind":"ConfigMap","metadata":{"name":"ignored"}}
        ]}"#;
        let (md, warnings) = Metadata::from_json_str(text, "mixed.json").expect("loads");
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "item 1 (Pod default/bad): invalid type: string \"yes\", expected a boolean",
                "item 3 (object kindless): no \"kind\"",
                "item 4 (Pod default/odd): status.podIPs: invalid address \"10.0.0\", skipped",
            ]
        );
        assert_eq!(md.len(), 3);
        assert_eq!(at(&md, "10.0.0.1").name, "ok");
        assert_eq!(at(&md, "10.96.0.5").kind, EndpointKind::Service);
        assert_eq!(at(&md, "10.0.0.9").name, "odd");
    }

    #[test]
    fn empty_lists_typed_lists_and_single_objects() {
        let (md, warnings) =
            Metadata::from_json_str(r#"{"apiVersion":"v1","kind":"List","items":[]}"#, "e.json")
                .expect("empty");
        assert_eq!((md.len(), md.pods(), warnings.len()), (0, 0, 0));

        // API server lists leave `kind` off their items.
        let text = r#"{"kind":"PodList","items":[
            {"metadata":{"name":"web-1","namespace":"a","labels":{"app":"web"}},"status":{"phase":"Running","podIP":"10.1.0.7"}},
            {"metadata":{"name":"done","namespace":"a"},"status":{"phase":"Failed","podIP":"10.1.0.8"}},
            {"metadata":{"name":"pending","namespace":"a"},"status":{"phase":"Pending"}}
        ]}"#;
        let (md, warnings) = Metadata::from_json_str(text, "pods.json").expect("pod list");
        assert_eq!(warnings, []);
        assert_eq!(md.len(), 1);
        assert_eq!(at(&md, "10.1.0.7").workload, workload("web", "Pod"));

        let one = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n2"},"status":{"addresses":[{"type":"ExternalIP","address":"203.0.113.9"},{"type":"InternalIP","address":"fd00::9"},{"type":"Hostname","address":"n2"}]}}"#;
        let (md, _) = Metadata::from_json_str(one, "node.json").expect("node");
        assert_eq!(md.len(), 2);
        assert_eq!(at(&md, "fd00::9").kind, EndpointKind::Host);
        assert_eq!(at(&md, "203.0.113.9").node_name, "n2");
    }

    #[test]
    fn a_file_with_endpoint_slices_and_policies() {
        let text = r#"{"kind":"List","items":[
            {"kind":"Namespace","metadata":{"name":"shop","labels":{"team":"pay"}}},
            {"kind":"Node","metadata":{"name":"n1"},"status":{"addresses":[{"type":"InternalIP","address":"172.18.0.2"}]}},
            {"kind":"Pod","metadata":{"name":"db-0","namespace":"shop","labels":{"app":"db"}},
             "spec":{"nodeName":"n1","containers":[{"name":"db","ports":[{"name":"sql","containerPort":5432}]}]},
             "status":{"podIP":"10.1.0.7"}},
            {"kind":"Service","metadata":{"name":"legacy","namespace":"shop"},"spec":{"clusterIP":"10.96.0.9"}},
            {"kind":"EndpointSlice","metadata":{"name":"legacy-1","namespace":"shop","labels":{"kubernetes.io/service-name":"legacy"}},
             "addressType":"IPv4","endpoints":[{"addresses":["10.1.0.7"],"targetRef":{"kind":"Pod","name":"db-0"}}]},
            {"kind":"NetworkPolicy","metadata":{"name":"b","namespace":"shop"},"spec":{"podSelector":{}}},
            {"kind":"NetworkPolicy","metadata":{"name":"a","namespace":"shop"},"spec":{"podSelector":{"matchLabels":{"app":"db"}}}}
        ]}"#;
        let (md, warnings) = Metadata::from_json_str(text, "cluster.json").expect("loads");
        assert_eq!(warnings, []);
        assert_eq!(at(&md, "10.1.0.7").services, ["legacy"]);
        let names: Vec<_> = md
            .network_policies()
            .iter()
            .map(|p| p.metadata.name.as_deref())
            .collect();
        assert_eq!(names, [Some("a"), Some("b")]);
        let cluster = md.policy_cluster();
        assert_eq!(
            cluster.nodes,
            [policy::Node {
                name: "n1".into(),
                addresses: vec![std::net::Ipv4Addr::new(172, 18, 0, 2)],
            }]
        );
        assert_eq!(
            cluster.namespaces,
            [policy::Namespace {
                name: "shop".into(),
                labels: [("team".to_string(), "pay".to_string())].into(),
            }]
        );
        assert_eq!(
            cluster.pods,
            [policy::Pod {
                namespace: "shop".into(),
                name: "db-0".into(),
                labels: [("app".to_string(), "db".to_string())].into(),
                ip: std::net::Ipv4Addr::new(10, 1, 0, 7),
                node: "n1".into(),
                ports: vec![policy::ContainerPort {
                    name: "sql".into(),
                    port: 5432,
                    protocol: policy::Protocol::Tcp,
                }],
            }]
        );

        let one =
            r#"{"kind":"NetworkPolicy","metadata":{"name":"x","namespace":"shop"},"spec":{}}"#;
        let (md, _) = Metadata::from_json_str(one, "np.json").expect("one policy");
        assert_eq!(md.network_policies().len(), 1);
    }

    fn pod_info(name: &str, labels: &[&str]) -> EndpointInfo {
        EndpointInfo {
            kind: EndpointKind::Pod,
            namespace: "shop".into(),
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            workload: None,
            node_name: String::new(),
            services: Vec::new(),
        }
    }

    #[test]
    fn previous_owners_end_where_their_successors_start() {
        const S: i64 = 1_000_000_000;
        let ip: IpAddr = "10.1.0.5".parse().expect("address");
        let name_at = |md: &Metadata, t: i64| md.lookup_at(&ip, t).map(|i| i.name.clone());

        let mut first = Metadata::empty();
        first.insert_since(ip, pod_info("a", &["v=1"]), 100 * S);
        // Relabelled: the same pod, so nothing changed hands.
        let mut relabelled = Metadata::empty();
        relabelled.insert_since(ip, pod_info("a", &["v=2"]), 100 * S);
        relabelled.inherit(&first, 150 * S);
        assert!(!relabelled.changed_hands(&ip));

        // b took the address at 190 s; the relay noticed at 200 s.
        let mut second = Metadata::empty();
        second.insert_since(ip, pod_info("b", &[]), 190 * S);
        second.inherit(&relabelled, 200 * S);
        assert_eq!(name_at(&second, 99 * S).as_deref(), Some("b"));
        assert_eq!(name_at(&second, 100 * S).as_deref(), Some("a"));
        assert_eq!(name_at(&second, 190 * S - 1).as_deref(), Some("a"));
        assert_eq!(name_at(&second, 190 * S).as_deref(), Some("b"));

        // Then c, at 300 s, seen at once: a and b both stay remembered.
        let mut third = Metadata::empty();
        third.insert_since(ip, pod_info("c", &[]), 300 * S);
        third.inherit(&second, 300 * S);
        assert_eq!(name_at(&third, 150 * S).as_deref(), Some("a"));
        assert_eq!(name_at(&third, 250 * S).as_deref(), Some("b"));
        assert_eq!(name_at(&third, 301 * S).as_deref(), Some("c"));
        let grace = i64::try_from(OWNER_GRACE.as_nanos()).expect("grace");
        assert_eq!(third.next_expiry_ns(), Some(190 * S + grace));
    }

    fn scratch_dir() -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("skymap-md-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn one_pod(name: &str, ip: &str) -> String {
        format!(
            r#"{{"kind":"List","items":[{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"default"}},"status":{{"podIP":"{ip}"}}}}]}}"#
        )
    }

    #[tokio::test]
    async fn watch_file_picks_up_a_rewritten_file_and_ignores_a_broken_one() {
        let dir = scratch_dir();
        let path = dir.join("metadata.json");
        std::fs::write(&path, one_pod("first", "10.9.0.1")).expect("write");
        let (md, _) = Metadata::load(&path).expect("initial");
        let (tx, mut rx) = watch::channel(Arc::new(md));
        let task = tokio::spawn(watch_file(path.clone(), Duration::from_millis(20), tx));

        // Let the watcher take the file as it is now as its starting point.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rx.has_changed().expect("sender alive"));

        std::fs::write(&path, r#"{"kind":"List","items":[{"kind":"Pod""#).expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !rx.has_changed().expect("sender alive"),
            "broken file must not replace metadata"
        );
        assert_eq!(rx.borrow().pods(), 1);

        std::fs::write(&path, one_pod("second-pod", "10.9.0.2")).expect("write");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("reload within 10 s")
            .expect("sender alive");
        {
            let md = rx.borrow_and_update();
            assert_eq!(at(&md, "10.9.0.2").name, "second-pod");
            assert!(!has(&md, "10.9.0.1"));
        }

        // Dropping the last receiver ends the watcher.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("watcher stops")
            .expect("watcher did not panic");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
