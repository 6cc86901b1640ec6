//! Kubernetes metadata: which pod, service or node an IP address belongs to.
//!
//! The relay learns it from a file in the shape
//! `kubectl get pods,services,namespaces,nodes -A -o json` prints (a `List` of
//! Pods, Services, Namespaces and Nodes; a single object or a `PodList` works
//! too), and [`watch_file`] reloads it when the file changes. An item that does
//! not parse as its kind is skipped with a [`MetadataWarning`]; the rest loads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tokio::sync::watch;

/// Labels that name a pod's workload when no owner does, most specific first.
pub const WORKLOAD_NAME_LABELS: [&str; 3] = ["app.kubernetes.io/name", "app", "k8s-app"];

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

/// A consistent picture of the cluster's addresses.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    endpoints: HashMap<IpAddr, Arc<EndpointInfo>>,
    /// Pods by their UID, which is how a pod's cgroup names it.
    pods_by_uid: HashMap<String, Arc<EndpointInfo>>,
    /// Namespace name → its labels ("key=value", sorted).
    namespaces: HashMap<String, Vec<String>>,
}

impl Metadata {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn lookup(&self, ip: &IpAddr) -> Option<&Arc<EndpointInfo>> {
        self.endpoints.get(ip)
    }

    pub fn insert(&mut self, ip: IpAddr, info: EndpointInfo) {
        self.endpoints.insert(ip, Arc::new(info));
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

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
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
         `kubectl get pods,services,namespaces,nodes -A -o json`"
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
            Some("Pod" | "Service" | "Namespace" | "Node") => {
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

/// The typed objects of a file, before they are joined up.
#[derive(Default)]
struct Objects {
    pods: Vec<(usize, Pod)>,
    services: Vec<(usize, Service)>,
    namespaces: Vec<(usize, Namespace)>,
    nodes: Vec<(usize, Node)>,
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
        let mut warn = |message: String| {
            warnings.push(MetadataWarning {
                item: index,
                message: format!("({what}): {message}"),
            })
        };
        match kind.as_deref() {
            Some("Pod") => match serde_json::from_value(item) {
                Ok(pod) => objects.pods.push((index, pod)),
                Err(e) => warn(e.to_string()),
            },
            Some("Service") => match serde_json::from_value(item) {
                Ok(service) => objects.services.push((index, service)),
                Err(e) => warn(e.to_string()),
            },
            Some("Namespace") => match serde_json::from_value(item) {
                Ok(namespace) => objects.namespaces.push((index, namespace)),
                Err(e) => warn(e.to_string()),
            },
            Some("Node") => match serde_json::from_value(item) {
                Ok(node) => objects.nodes.push((index, node)),
                Err(e) => warn(e.to_string()),
            },
            // Other kinds (Deployments, ConfigMaps, ...) carry no addresses.
            Some(_) => {}
            None => warn("no \"kind\"".to_string()),
        }
    }
    let metadata = join(objects, &mut warnings);
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

/// A service's `spec.selector`.
type Selector = BTreeMap<String, String>;

fn join(objects: Objects, warnings: &mut Vec<MetadataWarning>) -> Metadata {
    let mut md = Metadata::empty();
    let mut bad_address = |item: usize, what: String, field: &str, value: &str| {
        warnings.push(MetadataWarning {
            item,
            message: format!("({what}): {field}: invalid address {value:?}, skipped"),
        })
    };

    for (_, namespace) in &objects.namespaces {
        if let Some(name) = &namespace.metadata.name {
            md.set_namespace(name.clone(), labels_of(&namespace.metadata));
        }
    }

    for (index, node) in &objects.nodes {
        let Some(name) = &node.metadata.name else {
            continue;
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
            md.insert(
                ip,
                EndpointInfo {
                    kind: EndpointKind::Host,
                    namespace: String::new(),
                    name: name.clone(),
                    labels: labels_of(&node.metadata),
                    workload: None,
                    node_name: name.clone(),
                    services: Vec::new(),
                },
            );
        }
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
            md.insert(
                ip,
                EndpointInfo {
                    kind: EndpointKind::Service,
                    namespace: namespace.clone(),
                    name: name.clone(),
                    labels: labels_of(&service.metadata),
                    workload: None,
                    node_name: String::new(),
                    services: Vec::new(),
                },
            );
        }
    }

    for (index, pod) in &objects.pods {
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
        let ips: Vec<&String> = match status.and_then(|s| s.pod_ips.as_ref()) {
            Some(ips) if !ips.is_empty() => ips.iter().map(|p| &p.ip).collect(),
            _ => status.and_then(|s| s.pod_ip.as_ref()).into_iter().collect(),
        };
        if ips.is_empty() {
            continue;
        }
        let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut services: Vec<String> = selectors
            .get(namespace.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, selector)| selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
            .map(|(service, _)| (*service).to_string())
            .collect();
        services.sort();
        services.dedup();
        let info = EndpointInfo {
            kind: EndpointKind::Pod,
            namespace: namespace.clone(),
            name: name.clone(),
            labels: labels_of(&pod.metadata),
            workload: Some(workload_of(pod, name, &pod_labels)),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            services,
        };
        if let Some(uid) = pod.metadata.uid.clone().filter(|uid| !uid.is_empty()) {
            md.insert_pod_uid(uid, info.clone());
        }
        for text in ips {
            match text.parse::<IpAddr>() {
                Ok(ip) => md.insert(ip, info.clone()),
                Err(_) => bad_address(
                    *index,
                    format!("Pod {namespace}/{name}"),
                    "status.podIPs",
                    text,
                ),
            }
        }
    }
    md
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
    let name = WORKLOAD_NAME_LABELS
        .iter()
        .find_map(|key| labels.get(*key))
        .map_or(name, String::as_str);
    WorkloadRef {
        name: name.to_string(),
        kind: "Pod".to_string(),
    }
}

/// Polls `path` every `interval` (mtime + length, then a content hash) and
/// sends a new `Arc<Metadata>` on `tx` when it changed and parses. A parse
/// error is logged with `tracing::warn!` (naming file, line and column) and the
/// previous metadata stays. The file as it is at the first poll is taken to be
/// what the caller already loaded. Returns when `tx` is closed.
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
        if let Some(metadata) = fresh
            && tx.send(Arc::new(metadata)).is_err()
        {
            return;
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
