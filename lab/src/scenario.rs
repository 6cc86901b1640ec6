//! The scenario file: what the lab cluster holds, parsed and checked before
//! anything is created, and the address plan derived from it.
//!
//! ```yaml
//! name: story            # optional; default: the file's stem. A DNS label.
//! nodes: 3               # a count (node-1..node-N, at most 255) or a list of names
//! namespaces:            # every namespace used must be listed here
//!   - name: shop
//!     labels: {team: web}  # optional; kubernetes.io/metadata.name is always added
//! workloads:
//!   - name: frontend     # a DNS label of at most 57 characters (pods add -xxxxx)
//!     namespace: shop    # required, and listed above
//!     replicas: 2        # default 1
//!     labels: {app: frontend}   # default {app: <name>}
//!     nodes: [node-1, node-2]   # placement; default all nodes (see below)
//!     serve:             # optional: an HTTP server (container port "http"/TCP)
//!       port: 8080
//!       latency: 20ms    # optional: fixed, or {p50: 20ms, p99: 80ms}; default 0
//!       errors: 0.05     # optional: share answered with 500, 0..1; default 0
//!     dns: true          # optional: the cluster DNS server (container port "dns", UDP 53)
//!     calls:             # optional: HTTP calls to services
//!       - to: cart       # a service: NAME (same namespace) or NAME.NAMESPACE
//!         port: 8080     # a TCP port the service exposes
//!         rate: 5        # requests per second per replica, > 0
//!         path: /cart    # default /
//! services:
//!   - name: cart
//!     namespace: shop
//!     selector: {app: cart}     # must select at least one workload of the namespace
//!     ports: [{port: 8080, targetPort: 8080, protocol: TCP, name: http}]
//!                        # protocol TCP (default) or UDP; targetPort defaults to
//!                        # port and may name a container port; name is required
//!                        # when there are several ports
//!     clusterIP: 10.96.0.10     # optional, inside 10.96.0.0/16
//! policies:              # networking.k8s.io/v1 NetworkPolicy objects, as for kubectl
//!   - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {...}, spec: {...}}
//! ```
//!
//! Unknown fields are errors everywhere, policies included. Names are unique
//! per kind and namespace. At most one workload is the DNS server, and a
//! service must expose it on UDP 53. Policies need a name and a listed
//! namespace, and are checked as the API server would ([`crate::policy::validate`]).
//!
//! Every error names the file, the line and column of the offending value
//! and its field path, e.g.
//! `x.yaml:14:9: workloads[2].serve.errors: 1.5 is not between 0 and 1`.
//! Line numbers for checks made after parsing come from walking the file
//! again to the field's path with serde (the YAML parser reports where it
//! stands when a visitor fails), so values carry no spans.
//!
//! [`Scenario::plan`] assigns addresses, deterministically:
//! - replicas go round-robin over the workload's nodes, starting where the
//!   previous workload (in file order) stopped, so that small workloads spread;
//! - pods are named `<workload>-<suffix>`, with a 5-character suffix from the
//!   Kubernetes alphabet hashed from the workload name and replica index;
//! - node N (from 1, in order) owns 10.244.N.0/24: 10.244.N.1 is the node's
//!   own address on its pod side, pods get .2 upwards (at most 250 pods);
//! - services keep an explicit clusterIP; `kube-system/kube-dns` otherwise
//!   gets 10.96.0.10; the rest get the free addresses from 10.96.0.11 up,
//!   in file order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

pub use skymap_policy::{FieldPath, PathSegment};

use crate::policy::{
    self, Cluster, ContainerPort, Invalid, Labels, NAMESPACE_NAME_LABEL, Namespace, Protocol,
    check_label_name, check_port_name,
};

/// Most pods a node holds: its pod network is a /24.
pub const MAX_PODS_PER_NODE: usize = 250;
/// Most nodes: node N owns 10.244.N.0/24.
pub const MAX_NODES: usize = 255;
/// The conventional ClusterIP of `kube-system/kube-dns`.
pub const DNS_CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Characters of generated pod name suffixes (Kubernetes' own: no vowels,
/// no look-alikes).
pub const SUFFIX_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";
/// The name and protocol of the container port a `serve` workload listens on.
pub const HTTP_PORT_NAME: &str = "http";
/// The name of the DNS server's container port (UDP 53).
pub const DNS_PORT_NAME: &str = "dns";
/// The DNS port.
pub const DNS_PORT: u16 = 53;

const MAX_WORKLOAD_NAME: usize = 57;
const SERVICE_NET: u32 = 0x0a60_0000; // 10.96.0.0/16
const FIRST_DYNAMIC_SERVICE_HOST: u32 = 11;

/// Errors from reading a scenario or policy file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// `field` is a path like `workloads[2].serve.errors`, empty for the
    /// whole file; `line` and `column` count from 1.
    #[error("{file}{}: {}{message}", position(*.line, *.column), field_prefix(.field))]
    Invalid {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        field: String,
        message: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// A checked scenario. Only [`Scenario::from_yaml_str`] and
/// [`Scenario::load`] make one, so everything in it is consistent.
#[derive(Debug, Clone)]
pub struct Scenario {
    name: String,
    nodes: Vec<String>,
    namespaces: Vec<Namespace>,
    workloads: Vec<Workload>,
    services: Vec<Service>,
    policies: Vec<NetworkPolicy>,
}

/// A workload: `replicas` pods alike.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub replicas: u32,
    pub labels: Labels,
    /// The nodes its replicas go to, round-robin (all nodes by default).
    pub nodes: Vec<String>,
    pub serve: Option<Serve>,
    /// Whether its pods are the cluster DNS server on UDP 53.
    pub dns: bool,
    pub calls: Vec<Call>,
}

impl Workload {
    /// The named container ports of its pods: `http`/TCP for `serve`,
    /// `dns`/UDP 53 for `dns`.
    pub fn container_ports(&self) -> Vec<ContainerPort> {
        let mut ports = Vec::new();
        if let Some(serve) = &self.serve {
            ports.push(ContainerPort {
                name: HTTP_PORT_NAME.to_owned(),
                port: serve.port,
                protocol: Protocol::Tcp,
            });
        }
        if self.dns {
            ports.push(ContainerPort {
                name: DNS_PORT_NAME.to_owned(),
                port: DNS_PORT,
                protocol: Protocol::Udp,
            });
        }
        ports
    }
}

/// An HTTP server.
#[derive(Debug, Clone, PartialEq)]
pub struct Serve {
    pub port: u16,
    pub latency: Latency,
    /// The share of requests answered with 500, in 0..=1.
    pub errors: f64,
}

/// How long a server waits before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Fixed(Duration),
    /// A spread with these percentiles (`p99 >= p50`).
    Percentiles {
        p50: Duration,
        p99: Duration,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(Duration::ZERO)
    }
}

/// A client calling a service over HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub to: ServiceRef,
    /// A TCP port the service exposes.
    pub port: u16,
    /// Requests per second per replica (finite, > 0).
    pub rate: f64,
    pub path: String,
}

/// A service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// A service with its ClusterIP (explicit or assigned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub selector: Labels,
    pub ports: Vec<ServicePort>,
    pub cluster_ip: Ipv4Addr,
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub protocol: Protocol,
}

/// Where a service port sends traffic on its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A named container port of the pods.
    Name(String),
}

impl TargetPort {
    /// The port this target means on a pod with `ports`, if any.
    pub fn resolve(&self, ports: &[ContainerPort], protocol: Protocol) -> Option<u16> {
        match self {
            TargetPort::Number(port) => Some(*port),
            TargetPort::Name(name) => ports
                .iter()
                .find(|p| &p.name == name && p.protocol == protocol)
                .map(|p| p.port),
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Scenario::from_yaml_str(&text, &file)
    }

    /// Parses and checks a scenario; `file_name` is used in errors and for
    /// the default name (its stem).
    pub fn from_yaml_str(text: &str, file_name: &str) -> Result<Scenario, ScenarioError> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(file_name, &e))?;
        if value.is_null() {
            return Err(ScenarioError::Invalid {
                file: file_name.to_owned(),
                line: None,
                column: None,
                field: String::new(),
                message: "the file is empty".to_owned(),
            });
        }
        // Before the typed parse, whose error for a wrong kind is vague.
        let policies = value.get("policies").and_then(Value::as_sequence);
        for (i, policy) in policies.into_iter().flatten().enumerate() {
            check_type_meta(policy, &root().key("policies").index(i))
                .map_err(|problem| located(text, 0, file_name, problem))?;
        }
        let raw: RawScenario =
            serde_yaml_ng::from_str(text).map_err(|e| yaml_error(file_name, &e))?;
        let stem = Path::new(file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        build(raw, &stem, &value).map_err(|problem| located(text, 0, file_name, problem))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    pub fn namespaces(&self) -> &[Namespace] {
        &self.namespaces
    }

    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    pub fn policies(&self) -> &[NetworkPolicy] {
        &self.policies
    }

    /// Names every pod, places it on a node, assigns its address and
    /// resolves service endpoints. The same scenario always gives the same
    /// plan.
    pub fn plan(&self) -> Plan {
        let nodes: Vec<NodePlan> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                // At most MAX_NODES nodes, so the index fits in the octet.
                let index = u8::try_from(i + 1).unwrap_or(u8::MAX);
                NodePlan {
                    name: name.clone(),
                    index,
                    address: Ipv4Addr::new(10, 244, index, 1),
                    pod_subnet: Ipv4Addr::new(10, 244, index, 0),
                }
            })
            .collect();
        let mut next_host = vec![2u8; nodes.len()];
        let mut taken_names: BTreeSet<(String, String)> = BTreeSet::new();
        let mut pods = Vec::new();
        for (workload_index, replica, node) in placement(&self.workloads, &self.nodes) {
            let (Some(workload), Some(node_plan), Some(host)) = (
                self.workloads.get(workload_index),
                nodes.get(node),
                next_host.get_mut(node),
            ) else {
                continue;
            };
            let name = pod_name(&workload.name, replica, |candidate| {
                !taken_names.contains(&(workload.namespace.clone(), candidate.to_owned()))
            });
            taken_names.insert((workload.namespace.clone(), name.clone()));
            let ip = Ipv4Addr::new(10, 244, node_plan.index, *host);
            *host = host.saturating_add(1);
            pods.push(PodPlan {
                name,
                namespace: workload.namespace.clone(),
                workload: workload.name.clone(),
                workload_index,
                replica,
                node: node_plan.name.clone(),
                ip,
                labels: workload.labels.clone(),
                ports: workload.container_ports(),
            });
        }
        let services = self
            .services
            .iter()
            .map(|service| ServicePlan {
                name: service.name.clone(),
                namespace: service.namespace.clone(),
                cluster_ip: service.cluster_ip,
                ports: service
                    .ports
                    .iter()
                    .map(|port| ServicePortPlan {
                        name: port.name.clone(),
                        port: port.port,
                        protocol: port.protocol,
                        endpoints: endpoints(service, port, &pods),
                    })
                    .collect(),
            })
            .collect();
        let dns = self
            .dns_service()
            .and_then(|i| self.services.get(i))
            .map(|s| s.cluster_ip);
        Plan {
            nodes,
            namespaces: self.namespaces.clone(),
            pods,
            services,
            dns,
        }
    }

    /// The first service exposing a DNS workload on UDP 53.
    fn dns_service(&self) -> Option<usize> {
        self.services.iter().position(|service| {
            service.ports.iter().any(|port| {
                port.port == DNS_PORT
                    && port.protocol == Protocol::Udp
                    && self.workloads.iter().any(|w| {
                        w.dns
                            && service_selects(service, w)
                            && port
                                .target_port
                                .resolve(&w.container_ports(), Protocol::Udp)
                                == Some(DNS_PORT)
                    })
            })
        })
    }
}

/// Where every pod of a scenario goes, and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub nodes: Vec<NodePlan>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    /// The ClusterIP of the cluster DNS service, if the scenario has one.
    pub dns: Option<Ipv4Addr>,
}

/// A node: number `index` (from 1) owns `pod_subnet`/24 and has `address`
/// (`.1`) on its pod side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub index: u8,
    pub address: Ipv4Addr,
    pub pod_subnet: Ipv4Addr,
}

/// A pod: replica `replica` of the workload `workload_index` in the
/// scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub workload_index: usize,
    pub replica: u32,
    pub node: String,
    pub ip: Ipv4Addr,
    pub labels: Labels,
    pub ports: Vec<ContainerPort>,
}

/// A service and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    pub name: String,
    pub namespace: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePortPlan>,
}

/// A service port and the pod addresses behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortPlan {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub endpoints: Vec<Endpoint>,
}

/// One pod behind a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl Plan {
    /// The service `namespace/name`, if planned.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServicePlan> {
        self.services
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// The cluster as the policy code sees it.
    pub fn cluster(&self) -> Cluster {
        Cluster::from(self)
    }
}

impl From<&Plan> for Cluster {
    fn from(plan: &Plan) -> Cluster {
        Cluster {
            nodes: plan
                .nodes
                .iter()
                .map(|n| policy::Node {
                    name: n.name.clone(),
                    addresses: vec![n.address],
                })
                .collect(),
            namespaces: plan.namespaces.clone(),
            pods: plan
                .pods
                .iter()
                .map(|p| policy::Pod {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    labels: p.labels.clone(),
                    ip: p.ip,
                    node: p.node.clone(),
                    ports: p.ports.clone(),
                })
                .collect(),
        }
    }
}

fn endpoints(service: &Service, port: &ServicePort, pods: &[PodPlan]) -> Vec<Endpoint> {
    pods.iter()
        .filter(|pod| {
            pod.namespace == service.namespace && labels_contain(&pod.labels, &service.selector)
        })
        .filter_map(|pod| {
            let target = port.target_port.resolve(&pod.ports, port.protocol)?;
            Some(Endpoint {
                pod: pod.name.clone(),
                ip: pod.ip,
                port: target,
            })
        })
        .collect()
}

fn labels_contain(labels: &Labels, selector: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn service_selects(service: &Service, workload: &Workload) -> bool {
    service.namespace == workload.namespace && labels_contain(&workload.labels, &service.selector)
}

/// `(workload index, replica, node index)` for every pod, in file order.
/// Each workload's replicas go round-robin over its nodes, starting at the
/// running pod count so that consecutive small workloads spread out.
fn placement(
    workloads: &[Workload],
    nodes: &[String],
) -> impl Iterator<Item = (usize, u32, usize)> {
    let mut placed: usize = 0;
    workloads.iter().enumerate().flat_map(move |(w, workload)| {
        let targets: Vec<usize> = workload
            .nodes
            .iter()
            .filter_map(|name| nodes.iter().position(|n| n == name))
            .collect();
        let start = placed;
        placed = placed.wrapping_add(workload.replicas as usize);
        (0..workload.replicas).filter_map(move |r| {
            let slot = start.wrapping_add(r as usize).checked_rem(targets.len())?;
            targets.get(slot).map(|&node| (w, r, node))
        })
    })
}

/// `<workload>-<suffix>`, the suffix hashed from the workload name and the
/// replica (and a retry count while `free` refuses the name).
fn pod_name(workload: &str, replica: u32, mut free: impl FnMut(&str) -> bool) -> String {
    let mut attempt: u32 = 0;
    loop {
        let seed = if attempt == 0 {
            format!("{workload}/{replica}")
        } else {
            format!("{workload}/{replica}/{attempt}")
        };
        let mut hash = fnv1a(seed.as_bytes());
        let mut name = format!("{workload}-");
        for _ in 0..5 {
            let digit = usize::try_from(hash % 27).unwrap_or(0);
            name.push(char::from(SUFFIX_ALPHABET[digit]));
            hash /= 27;
        }
        if free(&name) || attempt == u32::MAX {
            return name;
        }
        attempt += 1;
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- the file as written ----

#[derive(Deserialize)]
#[serde(rename = "scenario", deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    nodes: RawNodes,
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    workloads: Vec<RawWorkload>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    policies: Vec<NetworkPolicy>,
}

#[derive(Deserialize)]
#[serde(rename = "namespace", deny_unknown_fields)]
struct RawNamespace {
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(rename = "workload", deny_unknown_fields)]
struct RawWorkload {
    name: String,
    namespace: String,
    replicas: Option<u32>,
    labels: Option<Labels>,
    nodes: Option<Vec<String>>,
    serve: Option<RawServe>,
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    calls: Vec<RawCall>,
}

#[derive(Deserialize)]
#[serde(rename = "serve", deny_unknown_fields)]
struct RawServe {
    port: Port,
    #[serde(default)]
    latency: Latency,
    #[serde(default)]
    errors: f64,
}

#[derive(Deserialize)]
#[serde(rename = "call", deny_unknown_fields)]
struct RawCall {
    to: String,
    port: Port,
    rate: f64,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename = "service", deny_unknown_fields)]
struct RawService {
    name: String,
    namespace: String,
    selector: Labels,
    ports: Vec<RawServicePort>,
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<Ipv4Addr>,
}

#[derive(Deserialize)]
#[serde(rename = "service port", deny_unknown_fields)]
struct RawServicePort {
    name: Option<String>,
    port: Port,
    #[serde(rename = "targetPort")]
    target_port: Option<TargetPort>,
    #[serde(default)]
    protocol: Protocol,
}

/// `nodes:` as a count or as names.
enum RawNodes {
    Count(u64),
    Names(Vec<String>),
}

impl<'de> Deserialize<'de> for RawNodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodesVisitor;
        impl<'de> Visitor<'de> for NodesVisitor {
            type Value = RawNodes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node count or a list of node names")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawNodes, E> {
                Ok(RawNodes::Count(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawNodes, E> {
                u64::try_from(n)
                    .map(RawNodes::Count)
                    .map_err(|_| E::custom(format!("{n} is not a node count")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawNodes, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(RawNodes::Names)
            }
        }
        deserializer.deserialize_any(NodesVisitor)
    }
}

/// A port number, checked while parsing so the error points at it.
struct Port(u16);

fn port_number<E: de::Error>(n: i128) -> Result<u16, E> {
    u16::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| E::custom(format!("{n} is not a port number (1-65535)")))
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535)")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Port, E> {
                port_number(n.into()).map(Port)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Port, E> {
                port_number(n.into()).map(Port)
            }
        }
        deserializer.deserialize_any(PortVisitor)
    }
}

impl<'de> Deserialize<'de> for TargetPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl Visitor<'_> for TargetVisitor {
            type Value = TargetPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number (1-65535) or a container port name")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<TargetPort, E> {
                port_number(n.into()).map(TargetPort::Number)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<TargetPort, E> {
                port_number(n.into()).map(TargetPort::Number)
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<TargetPort, E> {
                check_port_name(name).map_err(E::custom)?;
                Ok(TargetPort::Name(name.to_owned()))
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "latency", deny_unknown_fields)]
        struct Percentiles {
            p50: DurationText,
            p99: DurationText,
        }
        struct LatencyVisitor;
        impl<'de> Visitor<'de> for LatencyVisitor {
            type Value = Latency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 20ms, or {p50: 20ms, p99: 80ms}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Latency, E> {
                parse_duration(text).map(Latency::Fixed)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Latency, A::Error> {
                let p = Percentiles::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Latency::Percentiles {
                    p50: p.p50.0,
                    p99: p.p99.0,
                })
            }
        }
        deserializer.deserialize_any(LatencyVisitor)
    }
}

/// A duration written like `20ms` or `1.5s`.
struct DurationText(Duration);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 20ms or 1.5s")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationText, E> {
                parse_duration(text).map(DurationText)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

fn parse_duration<E: de::Error>(text: &str) -> Result<Duration, E> {
    humantime::parse_duration(text)
        .map_err(|e| E::custom(format!("{text:?} is not a duration like 20ms or 1.5s: {e}")))
}

// ---- checks ----

fn problem(path: &FieldPath, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.clone(),
        message: message.into(),
    }
}

fn root() -> FieldPath {
    FieldPath::default()
}

/// Checks the file as parsed and resolves defaults. `document` is the same
/// file as plain YAML, for the checks serde cannot make on policies.
fn build(raw: RawScenario, stem: &str, document: &Value) -> Result<Scenario, Invalid> {
    let name = match raw.name {
        Some(name) => {
            check_label_name(&name).map_err(|m| problem(&root().key("name"), m))?;
            name
        }
        None => {
            check_label_name(stem).map_err(|m| {
                problem(
                    &root().key("name"),
                    format!("the default (the file's stem) is not usable, set one: {m}"),
                )
            })?;
            stem.to_owned()
        }
    };
    let nodes = build_nodes(raw.nodes)?;
    let namespaces = build_namespaces(raw.namespaces)?;
    let namespace_names: BTreeSet<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
    let mut workloads = build_workloads(&raw.workloads, &nodes, &namespace_names)?;
    let services = build_services(raw.services, &workloads, &namespace_names)?;
    resolve_calls(&raw.workloads, &mut workloads, &services)?;
    check_dns(&workloads, &services)?;
    let written = document
        .get("policies")
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    check_policies(
        &raw.policies,
        written,
        &namespace_names,
        &root().key("policies"),
    )?;
    let scenario = Scenario {
        name,
        nodes,
        namespaces,
        workloads,
        services,
        policies: raw.policies,
    };
    check_capacity(&scenario)?;
    Ok(scenario)
}

fn build_nodes(raw: RawNodes) -> Result<Vec<String>, Invalid> {
    let path = root().key("nodes");
    let nodes: Vec<String> = match raw {
        RawNodes::Count(n) => {
            if n == 0 || n > MAX_NODES as u64 {
                return Err(problem(
                    &path,
                    format!("{n} is not a node count (1-{MAX_NODES})"),
                ));
            }
            (1..=n).map(|i| format!("node-{i}")).collect()
        }
        RawNodes::Names(names) => names,
    };
    if nodes.is_empty() || nodes.len() > MAX_NODES {
        return Err(problem(
            &path,
            format!("a scenario has 1 to {MAX_NODES} nodes"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, node) in nodes.iter().enumerate() {
        check_label_name(node).map_err(|m| problem(&path.index(i), m))?;
        if !seen.insert(node) {
            return Err(problem(
                &path.index(i),
                format!("node {node} is listed twice"),
            ));
        }
    }
    Ok(nodes)
}

fn build_namespaces(raw: Vec<RawNamespace>) -> Result<Vec<Namespace>, Invalid> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, ns) in raw.into_iter().enumerate() {
        let path = root().key("namespaces").index(i);
        check_label_name(&ns.name).map_err(|m| problem(&path.key("name"), m))?;
        if !seen.insert(ns.name.clone()) {
            return Err(problem(
                &path.key("name"),
                format!("namespace {} is listed twice", ns.name),
            ));
        }
        check_labels(&ns.labels, &path.key("labels"))?;
        if let Some(value) = ns.labels.get(NAMESPACE_NAME_LABEL)
            && value != &ns.name
        {
            return Err(problem(
                &path.key("labels").key(NAMESPACE_NAME_LABEL),
                format!(
                    "Kubernetes sets this label to the namespace's name, {}",
                    ns.name
                ),
            ));
        }
        out.push(Namespace {
            name: ns.name,
            labels: ns.labels,
        });
    }
    Ok(out)
}

/// Label keys and values as Kubernetes takes them: an optional DNS prefix
/// and `/`, then a name of up to 63 letters, digits, `-`, `_`, `.`.
fn check_labels(labels: &Labels, path: &FieldPath) -> Result<(), Invalid> {
    let name_ok = |s: &str, empty_ok: bool| {
        (empty_ok && s.is_empty())
            || (s.len() <= 63
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    };
    for (key, value) in labels {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        let prefix_ok = prefix.is_empty()
            || (prefix.len() <= 253 && prefix.split('.').all(|p| check_label_name(p).is_ok()));
        if !(name_ok(name, false) && prefix_ok && !key.starts_with('/')) {
            return Err(problem(
                &path.key(key),
                format!("{key:?} is not a label key"),
            ));
        }
        if !name_ok(value, true) {
            return Err(problem(
                &path.key(key),
                format!("{value:?} is not a label value (up to 63 letters, digits, '-', '_', '.')"),
            ));
        }
    }
    Ok(())
}

fn build_workloads(
    raw: &[RawWorkload],
    nodes: &[String],
    namespaces: &BTreeSet<&str>,
) -> Result<Vec<Workload>, Invalid> {
    let mut seen = BTreeSet::new();
    let mut dns_at: Option<usize> = None;
    let mut out = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let path = root().key("workloads").index(i);
        check_label_name(&w.name).map_err(|m| problem(&path.key("name"), m))?;
        if w.name.len() > MAX_WORKLOAD_NAME {
            return Err(problem(
                &path.key("name"),
                format!(
                    "at most {MAX_WORKLOAD_NAME} characters, so that pod names stay DNS labels"
                ),
            ));
        }
        check_namespace(&w.namespace, namespaces, &path.key("namespace"))?;
        if !seen.insert((w.namespace.as_str(), w.name.as_str())) {
            return Err(problem(
                &path.key("name"),
                format!(
                    "workload {} is listed twice in namespace {}",
                    w.name, w.namespace
                ),
            ));
        }
        let replicas = w.replicas.unwrap_or(1);
        if replicas == 0 {
            return Err(problem(&path.key("replicas"), "at least 1"));
        }
        let labels = match &w.labels {
            Some(labels) => labels.clone(),
            None => Labels::from([("app".to_owned(), w.name.clone())]),
        };
        check_labels(&labels, &path.key("labels"))?;
        let placement = match &w.nodes {
            None => nodes.to_vec(),
            Some(list) => {
                let path = path.key("nodes");
                if list.is_empty() {
                    return Err(problem(
                        &path,
                        "an empty placement; leave it out for all nodes",
                    ));
                }
                for (j, node) in list.iter().enumerate() {
                    if !nodes.contains(node) {
                        return Err(problem(
                            &path.index(j),
                            format!("unknown node {node} (nodes: {})", nodes.join(", ")),
                        ));
                    }
                    if list[..j].contains(node) {
                        return Err(problem(
                            &path.index(j),
                            format!("node {node} is listed twice"),
                        ));
                    }
                }
                list.clone()
            }
        };
        let serve = match &w.serve {
            None => None,
            Some(s) => {
                let path = path.key("serve");
                if !(0.0..=1.0).contains(&s.errors) {
                    return Err(problem(
                        &path.key("errors"),
                        format!("{} is not between 0 and 1", s.errors),
                    ));
                }
                if let Latency::Percentiles { p50, p99 } = s.latency
                    && p99 < p50
                {
                    return Err(problem(
                        &path.key("latency").key("p99"),
                        format!(
                            "p99 ({}) is below p50 ({})",
                            humantime::format_duration(p99),
                            humantime::format_duration(p50)
                        ),
                    ));
                }
                Some(Serve {
                    port: s.port.0,
                    latency: s.latency,
                    errors: s.errors,
                })
            }
        };
        if w.dns {
            if let Some(first) = dns_at {
                return Err(problem(
                    &path.key("dns"),
                    format!("workloads[{first}] is already the DNS server"),
                ));
            }
            dns_at = Some(i);
        }
        out.push(Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            replicas,
            labels,
            nodes: placement,
            serve,
            dns: w.dns,
            calls: Vec::new(),
        });
    }
    Ok(out)
}

fn check_namespace(
    namespace: &str,
    namespaces: &BTreeSet<&str>,
    path: &FieldPath,
) -> Result<(), Invalid> {
    if namespaces.contains(namespace) {
        Ok(())
    } else {
        Err(problem(
            path,
            format!("namespace {namespace} is not listed under namespaces"),
        ))
    }
}

fn build_services(
    raw: Vec<RawService>,
    workloads: &[Workload],
    namespaces: &BTreeSet<&str>,
) -> Result<Vec<Service>, Invalid> {
    let mut seen = BTreeSet::new();
    let mut explicit: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut services = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let path = root().key("services").index(i);
        check_label_name(&s.name).map_err(|m| problem(&path.key("name"), m))?;
        check_namespace(&s.namespace, namespaces, &path.key("namespace"))?;
        if !seen.insert((s.namespace.clone(), s.name.clone())) {
            return Err(problem(
                &path.key("name"),
                format!(
                    "service {} is listed twice in namespace {}",
                    s.name, s.namespace
                ),
            ));
        }
        if s.selector.is_empty() {
            return Err(problem(
                &path.key("selector"),
                "an empty selector selects nothing",
            ));
        }
        check_labels(&s.selector, &path.key("selector"))?;
        let ports = build_service_ports(s.ports, &path.key("ports"))?;
        if let Some(ip) = s.cluster_ip {
            let host = u32::from(ip).wrapping_sub(SERVICE_NET);
            if host == 0 || host >= 0xffff {
                return Err(problem(
                    &path.key("clusterIP"),
                    format!("{ip} is not a host address in the service range 10.96.0.0/16"),
                ));
            }
            if let Some(other) = explicit.insert(ip, i) {
                return Err(problem(
                    &path.key("clusterIP"),
                    format!("{ip} is already the clusterIP of services[{other}]"),
                ));
            }
        }
        let service = Service {
            name: s.name,
            namespace: s.namespace,
            selector: s.selector,
            ports,
            cluster_ip: s.cluster_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        let selected: Vec<&Workload> = workloads
            .iter()
            .filter(|w| service_selects(&service, w))
            .collect();
        if selected.is_empty() {
            return Err(problem(
                &path.key("selector"),
                format!("selects no workload in namespace {}", service.namespace),
            ));
        }
        for (j, port) in service.ports.iter().enumerate() {
            if let TargetPort::Name(name) = &port.target_port
                && !selected.iter().any(|w| {
                    port.target_port
                        .resolve(&w.container_ports(), port.protocol)
                        .is_some()
                })
            {
                return Err(problem(
                    &path.key("ports").index(j).key("targetPort"),
                    format!(
                        "no selected workload has a {} container port named {name:?} (a server has \"{HTTP_PORT_NAME}\"/TCP, the DNS server \"{DNS_PORT_NAME}\"/UDP)",
                        port.protocol
                    ),
                ));
            }
        }
        services.push((s.cluster_ip.is_some(), service));
    }
    assign_cluster_ips(services)
}

fn build_service_ports(
    raw: Vec<RawServicePort>,
    path: &FieldPath,
) -> Result<Vec<ServicePort>, Invalid> {
    if raw.is_empty() {
        return Err(problem(path, "a service needs at least one port"));
    }
    let several = raw.len() > 1;
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut out = Vec::new();
    for (j, p) in raw.into_iter().enumerate() {
        let path = path.index(j);
        match &p.name {
            Some(name) => {
                check_label_name(name).map_err(|m| problem(&path.key("name"), m))?;
                if !names.insert(name.clone()) {
                    return Err(problem(
                        &path.key("name"),
                        format!("port name {name} is used twice"),
                    ));
                }
            }
            None if several => {
                return Err(problem(
                    &path,
                    "a service with several ports must name each",
                ));
            }
            None => {}
        }
        if !numbers.insert((p.port.0, p.protocol)) {
            return Err(problem(
                &path.key("port"),
                format!("{}/{} is listed twice", p.port.0, p.protocol),
            ));
        }
        out.push(ServicePort {
            name: p.name,
            port: p.port.0,
            target_port: p.target_port.unwrap_or(TargetPort::Number(p.port.0)),
            protocol: p.protocol,
        });
    }
    Ok(out)
}

/// Explicit addresses stay; kube-system/kube-dns gets 10.96.0.10 if free;
/// the rest take free addresses from 10.96.0.11 up, in file order.
fn assign_cluster_ips(services: Vec<(bool, Service)>) -> Result<Vec<Service>, Invalid> {
    let mut taken: BTreeSet<Ipv4Addr> = services
        .iter()
        .filter(|(explicit, _)| *explicit)
        .map(|(_, s)| s.cluster_ip)
        .collect();
    let mut next = SERVICE_NET + FIRST_DYNAMIC_SERVICE_HOST;
    let mut out = Vec::with_capacity(services.len());
    for (i, (explicit, mut service)) in services.into_iter().enumerate() {
        if !explicit {
            let is_dns = service.namespace == "kube-system" && service.name == "kube-dns";
            if is_dns && taken.insert(DNS_CLUSTER_IP) {
                service.cluster_ip = DNS_CLUSTER_IP;
            } else {
                while taken.contains(&Ipv4Addr::from(next)) {
                    next += 1;
                }
                if next >= SERVICE_NET + 0xffff {
                    return Err(problem(
                        &root().key("services").index(i),
                        "the service range 10.96.0.0/16 is full",
                    ));
                }
                service.cluster_ip = Ipv4Addr::from(next);
                taken.insert(service.cluster_ip);
            }
        }
        out.push(service);
    }
    Ok(out)
}

fn resolve_calls(
    raw: &[RawWorkload],
    workloads: &mut [Workload],
    services: &[Service],
) -> Result<(), Invalid> {
    for (i, (raw, workload)) in raw.iter().zip(workloads.iter_mut()).enumerate() {
        for (j, call) in raw.calls.iter().enumerate() {
            let path = root().key("workloads").index(i).key("calls").index(j);
            let (name, namespace) = call
                .to
                .split_once('.')
                .unwrap_or((call.to.as_str(), workload.namespace.as_str()));
            let Some(service) = services
                .iter()
                .find(|s| s.name == name && s.namespace == namespace)
            else {
                return Err(problem(
                    &path.key("to"),
                    format!("unknown service {name} in namespace {namespace}"),
                ));
            };
            let port = call.port.0;
            if !service
                .ports
                .iter()
                .any(|p| p.port == port && p.protocol == Protocol::Tcp)
            {
                let exposed: Vec<String> = service
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.port, p.protocol))
                    .collect();
                return Err(problem(
                    &path.key("port"),
                    format!(
                        "service {name}.{namespace} does not expose {port}/TCP (it exposes {})",
                        exposed.join(", ")
                    ),
                ));
            }
            if !call.rate.is_finite() || call.rate <= 0.0 {
                return Err(problem(
                    &path.key("rate"),
                    format!("{} is not a rate (requests per second, above 0)", call.rate),
                ));
            }
            let http_path = call.path.clone().unwrap_or_else(|| "/".to_owned());
            if !http_path.starts_with('/')
                || http_path
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(problem(
                    &path.key("path"),
                    format!("{http_path:?} is not a URL path (starts with /, no spaces)"),
                ));
            }
            workload.calls.push(Call {
                to: ServiceRef {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                },
                port,
                rate: call.rate,
                path: http_path,
            });
        }
    }
    Ok(())
}

/// The DNS workload, if any, must be reachable through a service on UDP 53.
fn check_dns(workloads: &[Workload], services: &[Service]) -> Result<(), Invalid> {
    let Some(i) = workloads.iter().position(|w| w.dns) else {
        return Ok(());
    };
    let reachable = workloads.get(i).is_some_and(|w| {
        services.iter().any(|s| {
            service_selects(s, w)
                && s.ports.iter().any(|p| {
                    p.port == DNS_PORT
                        && p.protocol == Protocol::Udp
                        && p.target_port.resolve(&w.container_ports(), Protocol::Udp)
                            == Some(DNS_PORT)
                })
        })
    });
    if reachable {
        Ok(())
    } else {
        Err(problem(
            &root().key("workloads").index(i).key("dns"),
            "no service exposes this DNS server on 53/UDP",
        ))
    }
}

/// Checks policies beyond what their types enforce: apiVersion and kind
/// present, no unknown fields, API-server validation, listed namespaces
/// and unique names. `values` holds the same policies as plain YAML, `path`
/// where they sit in the file.
fn check_policies(
    policies: &[NetworkPolicy],
    values: &[Value],
    namespaces: &BTreeSet<&str>,
    path: &FieldPath,
) -> Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for (i, policy) in policies.iter().enumerate() {
        let path = path.index(i);
        if let Some(value) = values.get(i) {
            check_policy_value(policy, value, &path)?;
        }
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        check_namespace(
            namespace,
            namespaces,
            &path.key("metadata").key("namespace"),
        )?;
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        if !seen.insert((namespace, name)) {
            return Err(problem(
                &path.key("metadata").key("name"),
                format!("policy {name} is listed twice in namespace {namespace}"),
            ));
        }
    }
    Ok(())
}

fn path_key(path: &FieldPath) -> &str {
    match path.segments().last() {
        Some(PathSegment::Key(key)) => key,
        _ => "",
    }
}

/// apiVersion and kind of a written policy: present (kubectl wants them)
/// and right.
fn check_type_meta(value: &Value, path: &FieldPath) -> Result<(), Invalid> {
    for (field, expected) in [
        ("apiVersion", "networking.k8s.io/v1"),
        ("kind", "NetworkPolicy"),
    ] {
        match value.get(field) {
            None => {
                return Err(problem(
                    &path.key(field),
                    format!("missing (must be {expected})"),
                ));
            }
            Some(found) if found.as_str() != Some(expected) => {
                let found = serde_yaml_ng::to_string(found).unwrap_or_default();
                return Err(problem(
                    &path.key(field),
                    format!("{:?} is not {expected}", found.trim_end()),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// One policy: no field the type does not know (serde for k8s-openapi
/// ignores them, so a typo would silently widen a policy), and valid.
fn check_policy_value(
    policy: &NetworkPolicy,
    value: &Value,
    path: &FieldPath,
) -> Result<(), Invalid> {
    let known = serde_yaml_ng::to_value(policy)
        .map_err(|e| problem(path, format!("cannot re-read the policy: {e}")))?;
    if let Some(unknown) = unknown_field(value, &known, path) {
        let field = path_key(&unknown).to_owned();
        return Err(problem(&unknown, format!("unknown field `{field}`")));
    }
    policy::validate(policy).map_err(|invalid| problem(&path.join(&invalid.path), invalid.message))
}

/// The first non-null field of `written` that does not survive a round
/// trip through the typed policy (`known`).
fn unknown_field(written: &Value, known: &Value, path: &FieldPath) -> Option<FieldPath> {
    match (written, known) {
        (Value::Mapping(written), Value::Mapping(known)) => {
            written.iter().find_map(|(key, value)| {
                let name = key.as_str()?;
                if value.is_null() {
                    return None;
                }
                match known.get(key) {
                    None => Some(path.key(name)),
                    Some(known) => unknown_field(value, known, &path.key(name)),
                }
            })
        }
        (Value::Sequence(written), Value::Sequence(known)) => written
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(i, (w, k))| unknown_field(w, k, &path.index(i))),
        _ => None,
    }
}

fn check_capacity(scenario: &Scenario) -> Result<(), Invalid> {
    for (i, w) in scenario.workloads.iter().enumerate() {
        // Guards the walk below against absurd counts.
        if w.replicas as usize > MAX_PODS_PER_NODE * w.nodes.len() {
            return Err(capacity_problem(
                i,
                w.nodes.first().map_or("", String::as_str),
            ));
        }
    }
    let mut counts = vec![0usize; scenario.nodes.len()];
    for (w, _, node) in placement(&scenario.workloads, &scenario.nodes) {
        let Some(count) = counts.get_mut(node) else {
            continue;
        };
        *count += 1;
        if *count > MAX_PODS_PER_NODE {
            return Err(capacity_problem(
                w,
                scenario.nodes.get(node).map_or("", String::as_str),
            ));
        }
    }
    Ok(())
}

fn capacity_problem(workload: usize, node: &str) -> Invalid {
    problem(
        &root().key("workloads").index(workload).key("replicas"),
        format!(
            "node {node} would hold more than {MAX_PODS_PER_NODE} pods (its pod network is a /24)"
        ),
    )
}

// ---- policy files ----

/// Reads a policy file for `skymap lab apply`: one or more NetworkPolicy
/// documents separated by `---`, or a `List` of them. Checked like the
/// scenario's policies, except that no namespace list applies.
pub fn load_policies(path: impl AsRef<Path>) -> Result<Vec<NetworkPolicy>, ScenarioError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        file: file.clone(),
        source,
    })?;
    policies_from_yaml_str(&text, &file)
}

/// [`load_policies`] on text; `file_name` is used in errors.
pub fn policies_from_yaml_str(
    text: &str,
    file_name: &str,
) -> Result<Vec<NetworkPolicy>, ScenarioError> {
    let mut documents = Vec::new();
    // The iterator repeats a syntax error forever: stop at the first one.
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        documents.push(Value::deserialize(document).map_err(|e| yaml_error(file_name, &e))?);
    }
    let mut all = Vec::new();
    let mut seen = BTreeSet::new();
    for (doc, value) in documents.iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let fail = |problem: Invalid| located(text, doc, file_name, problem);
        let kind = value.get("kind").and_then(Value::as_str);
        // For a List, where its items sit.
        let (policies, items_path) = match kind {
            Some("List" | "NetworkPolicyList") => {
                let items = value.get("items").and_then(Value::as_sequence);
                for (i, item) in items.into_iter().flatten().enumerate() {
                    check_type_meta(item, &root().key("items").index(i)).map_err(fail)?;
                }
                #[derive(Deserialize)]
                #[serde(rename = "List")]
                struct List {
                    items: Vec<NetworkPolicy>,
                }
                let list: List = typed_document(text, doc, file_name)?;
                (list.items, Some(root().key("items")))
            }
            Some("NetworkPolicy") => {
                check_type_meta(value, &root()).map_err(fail)?;
                (vec![typed_document(text, doc, file_name)?], None)
            }
            Some(other) => {
                return Err(fail(problem(
                    &root().key("kind"),
                    format!("{other:?} is not NetworkPolicy or List"),
                )));
            }
            None => {
                return Err(fail(problem(
                    &root().key("kind"),
                    "missing (NetworkPolicy or List)",
                )));
            }
        };
        for (i, policy) in policies.into_iter().enumerate() {
            let (path, written) = match &items_path {
                Some(items) => (
                    items.index(i),
                    value.get("items").and_then(|items| items.get(i)),
                ),
                None => (root(), Some(value)),
            };
            if let Some(written) = written {
                check_policy_value(&policy, written, &path).map_err(fail)?;
            }
            let id = (
                policy.metadata.namespace.clone().unwrap_or_default(),
                policy.metadata.name.clone().unwrap_or_default(),
            );
            if !seen.insert(id.clone()) {
                return Err(fail(problem(
                    &path.key("metadata").key("name"),
                    format!("policy {} is in the file twice in namespace {}", id.1, id.0),
                )));
            }
            all.push(policy);
        }
    }
    if all.is_empty() {
        return Err(ScenarioError::Invalid {
            file: file_name.to_owned(),
            line: None,
            column: None,
            field: String::new(),
            message: "no NetworkPolicy in the file".to_owned(),
        });
    }
    Ok(all)
}

/// Document `doc` of `text` as `T`, with serde's located errors.
fn typed_document<T: for<'de> Deserialize<'de>>(
    text: &str,
    doc: usize,
    file_name: &str,
) -> Result<T, ScenarioError> {
    let document = serde_yaml_ng::Deserializer::from_str(text)
        .nth(doc)
        .ok_or_else(|| ScenarioError::Invalid {
            file: file_name.to_owned(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("document {} vanished on a second read", doc + 1),
        })?;
    T::deserialize(document).map_err(|e| yaml_error(file_name, &e))
}

// ---- locations ----

/// A parse error as ours. serde_yaml_ng writes `path: message at line L
/// column C`; the path and position become fields.
fn yaml_error(file: &str, err: &serde_yaml_ng::Error) -> ScenarioError {
    let location = err.location();
    let mut text = err.to_string();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(at) = text.find(&suffix) {
            text.replace_range(at..at + suffix.len(), "");
        }
    }
    let (field, message) = match text.split_once(": ") {
        Some((head, rest)) if looks_like_path(head) => (head.to_owned(), rest.to_owned()),
        _ => (String::new(), text),
    };
    ScenarioError::Invalid {
        file: file.to_owned(),
        line: location.as_ref().map(serde_yaml_ng::Location::line),
        column: location.as_ref().map(serde_yaml_ng::Location::column),
        field,
        message,
    }
}

fn looks_like_path(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '[' | ']' | '_' | '-' | '/' | '?')
        })
}

/// A check's problem as an error, with the line and column of the value at
/// its path in document `doc` (or of its nearest existing parent).
fn located(text: &str, doc: usize, file: &str, problem: Invalid) -> ScenarioError {
    let at = locate(text, doc, &problem.path);
    ScenarioError::Invalid {
        file: file.to_owned(),
        line: at.map(|(line, _)| line),
        column: at.map(|(_, column)| column),
        field: problem.path.to_string(),
        message: problem.message,
    }
}

fn locate(text: &str, doc: usize, path: &FieldPath) -> Option<(usize, usize)> {
    let document = serde_yaml_ng::Deserializer::from_str(text).nth(doc)?;
    let err = Locator(path.segments()).deserialize(document).err()?;
    err.location().map(|l| (l.line(), l.column()))
}

/// Walks a document to a path and fails there on purpose: the parser marks
/// the error with the position of what it was reading. A path ending in a
/// key points at the key (the field), one ending in an index at the item;
/// where the path ends early, it fails at the deepest value that exists.
struct Locator<'a>(&'a [PathSegment]);

/// Reads a mapping key: whether it is the wanted one. Fails on it (to mark
/// its position) when it is the path's last step.
#[derive(Clone, Copy)]
struct KeyLocator<'a> {
    wanted: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyLocator<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyLocator<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.wanted, self.last) {
            (true, true) => Err(E::custom(HERE)),
            (found, _) => Ok(found),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

const HERE: &str = "located";

impl<'de> DeserializeSeed<'de> for Locator<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locator<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((PathSegment::Key(wanted), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        let key = KeyLocator {
            wanted,
            last: rest.is_empty(),
        };
        while let Some(found) = map.next_key_seed(key)? {
            if found {
                return map.next_value_seed(Locator(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(HERE))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((PathSegment::Index(wanted), rest)) = self.0.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(HERE));
            }
        }
        seq.next_element_seed(Locator(rest))?;
        Err(de::Error::custom(HERE))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(HERE))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(HERE))
    }
}
