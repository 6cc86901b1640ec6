//! Kubernetes NetworkPolicy semantics, shared by the lab (which enforces
//! policies) and the relay (which explains drops): [`validate`] checks a
//! policy the way the API server would, [`evaluate`] decides one flow, and
//! [`compile`] turns the policies into one nftables script per node.
//!
//! The cluster is plain data ([`Cluster`]: nodes, namespaces, pods with their
//! named container ports); the lab's plan and the relay's metadata convert
//! into it.
//!
//! Semantics follow Kubernetes: a pod is isolated for a direction iff some
//! policy in its namespace selects it and has that direction in its effective
//! `policyTypes` (unset or empty: `Ingress`, plus `Egress` when `egress` has
//! rules). A flow is allowed iff the egress side of its source and the
//! ingress side of its destination both allow it; rules across all policies
//! are a union. Peers are pod selectors (the policy's namespace), namespace
//! selectors, both (pods matching in matching namespaces) or `ipBlock`s
//! (matched on the address, pod addresses too). Named ports resolve against
//! the destination pod. Addresses of no pod only match `ipBlock`s. Ingress
//! from the destination pod's own node is always allowed. A namespace always
//! carries the label `kubernetes.io/metadata.name: <name>`, as in Kubernetes.
//! Flows are judged after DNAT: a ClusterIP is not a pod address.
//!
//! Invalid parts of a policy (which [`validate`] reports) allow nothing:
//! a bad CIDR, an unknown selector operator or protocol match no traffic.
//! SCTP ports never match: the lab has no SCTP.
//!
//! Both [`evaluate`] and [`compile`] work from one resolved form (per pod
//! and direction: the isolating policies, each with its allowed address
//! ranges and ports), so the kernel enforces what `evaluate` says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

pub mod explain;
mod path;
pub mod reasons;

pub use path::{FieldPath, PathSegment};

/// Labels of a namespace or pod.
pub type Labels = BTreeMap<String, String>;

/// The label Kubernetes puts on every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A transport protocol; `TCP` or `UDP` in files.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    fn parse(text: &str) -> Option<Protocol> {
        match text {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The nftables word for this protocol.
    fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// The cluster state that policies are judged against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
}

/// A node; `addresses` are its own addresses (ingress from them to its pods
/// is always allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<Ipv4Addr>,
}

/// A namespace and its labels (`kubernetes.io/metadata.name` is implied).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// A pod, with the named container ports that named policy ports refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Ipv4Addr,
    pub node: String,
    pub ports: Vec<ContainerPort>,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// One flow to judge, as the kernel sees it after DNAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowQuery {
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub protocol: Protocol,
    pub dst_port: u16,
}

/// A policy by namespace and name; displays as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A side of a flow: the egress of its source or the ingress of its
/// destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    fn policy_type(self) -> &'static str {
        match self {
            Direction::Egress => "Egress",
            Direction::Ingress => "Ingress",
        }
    }

    fn chain_prefix(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy_type())
    }
}

/// What one side of a flow says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SideDecision {
    /// No policy isolates this side (or its address is no pod's).
    NotIsolated,
    /// Ingress from the destination pod's own node: always allowed.
    FromLocalNode,
    /// Isolated, and these policies have a rule allowing the flow.
    Allowed { by: Vec<PolicyRef> },
    /// Isolated by these policies, and none of their rules allows the flow.
    Denied { isolated_by: Vec<PolicyRef> },
}

impl SideDecision {
    fn is_allowed(&self) -> bool {
        !matches!(self, SideDecision::Denied { .. })
    }
}

/// The verdict on a flow, with both sides so that a drop can be explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub egress: SideDecision,
    pub ingress: SideDecision,
}

impl Decision {
    /// Whether both sides allow the flow.
    pub fn is_allowed(&self) -> bool {
        self.egress.is_allowed() && self.ingress.is_allowed()
    }

    /// The side that drops the flow and the policies isolating it. Egress
    /// comes first: the packet meets the source's policies first.
    pub fn denied(&self) -> Option<(Direction, &[PolicyRef])> {
        match (&self.egress, &self.ingress) {
            (SideDecision::Denied { isolated_by }, _) => Some((Direction::Egress, isolated_by)),
            (_, SideDecision::Denied { isolated_by }) => Some((Direction::Ingress, isolated_by)),
            _ => None,
        }
    }
}

/// A problem [`validate`] found in a policy; `path` is relative to the
/// policy object, e.g. `spec.egress[0].to[1].ipBlock.cidr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: FieldPath,
    pub message: String,
}

/// Errors from [`compile`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{0:?} is not a usable nftables table name (1 to 64 letters, digits or _, starting with a letter)"
    )]
    TableName(String),
}

/// Checks a policy as the Kubernetes API server would, plus what the lab
/// needs (a name and a namespace). Stops at the first problem.
pub fn validate(policy: &NetworkPolicy) -> Result<(), Invalid> {
    let root = FieldPath::default();
    let meta = root.key("metadata");
    match policy.metadata.name.as_deref() {
        None => return Err(invalid(&meta.key("name"), "a policy needs a name")),
        Some(name) => check_subdomain(name).map_err(|m| invalid(&meta.key("name"), m))?,
    }
    match policy.metadata.namespace.as_deref() {
        None => {
            return Err(invalid(
                &meta.key("namespace"),
                "a policy needs a namespace (the lab has no current namespace to default to)",
            ));
        }
        Some(ns) => check_label_name(ns).map_err(|m| invalid(&meta.key("namespace"), m))?,
    }
    let spec_path = root.key("spec");
    let Some(spec) = &policy.spec else {
        return Err(invalid(&spec_path, "a policy needs a spec"));
    };
    if let Some(selector) = &spec.pod_selector {
        validate_selector(selector, &spec_path.key("podSelector"))?;
    }
    let mut seen = BTreeSet::new();
    for (i, kind) in spec.policy_types.iter().flatten().enumerate() {
        let path = spec_path.key("policyTypes").index(i);
        if kind != "Ingress" && kind != "Egress" {
            return Err(invalid(
                &path,
                format!("{kind:?} is not a policy type (Ingress or Egress)"),
            ));
        }
        if !seen.insert(kind) {
            return Err(invalid(&path, format!("{kind} is listed twice")));
        }
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let path = spec_path.key("ingress").index(i);
        validate_peers(rule.from.as_deref(), &path.key("from"))?;
        validate_ports(rule.ports.as_deref(), &path.key("ports"))?;
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let path = spec_path.key("egress").index(i);
        validate_peers(rule.to.as_deref(), &path.key("to"))?;
        validate_ports(rule.ports.as_deref(), &path.key("ports"))?;
    }
    Ok(())
}

fn invalid(path: &FieldPath, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.clone(),
        message: message.into(),
    }
}

fn validate_selector(selector: &LabelSelector, path: &FieldPath) -> Result<(), Invalid> {
    for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
        let path = path.key("matchExpressions").index(i);
        if req.key.is_empty() {
            return Err(invalid(&path.key("key"), "the key is empty"));
        }
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(invalid(
                    &path.key("values"),
                    format!("{} needs at least one value", req.operator),
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(invalid(
                    &path.key("values"),
                    format!("{} takes no values", req.operator),
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(invalid(
                    &path.key("operator"),
                    format!("{other:?} is not an operator (In, NotIn, Exists, DoesNotExist)"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_peers(peers: Option<&[NetworkPolicyPeer]>, path: &FieldPath) -> Result<(), Invalid> {
    for (i, peer) in peers.unwrap_or_default().iter().enumerate() {
        let path = path.index(i);
        let selects = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match &peer.ip_block {
            Some(_) if selects => {
                return Err(invalid(
                    &path,
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                ));
            }
            Some(block) => validate_ip_block(block, &path.key("ipBlock"))?,
            None if !selects => {
                return Err(invalid(
                    &path,
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ));
            }
            None => {}
        }
        if let Some(selector) = &peer.pod_selector {
            validate_selector(selector, &path.key("podSelector"))?;
        }
        if let Some(selector) = &peer.namespace_selector {
            validate_selector(selector, &path.key("namespaceSelector"))?;
        }
    }
    Ok(())
}

fn validate_ip_block(block: &IPBlock, path: &FieldPath) -> Result<(), Invalid> {
    let cidr = Cidr::parse(&block.cidr).map_err(|m| invalid(&path.key("cidr"), m))?;
    for (i, text) in block.except.iter().flatten().enumerate() {
        let path = path.key("except").index(i);
        let except = Cidr::parse(text).map_err(|m| invalid(&path, m))?;
        if !cidr.strictly_contains(&except) {
            return Err(invalid(
                &path,
                format!("{text} must be a strict subset of cidr {}", block.cidr),
            ));
        }
    }
    Ok(())
}

fn validate_ports(ports: Option<&[NetworkPolicyPort]>, path: &FieldPath) -> Result<(), Invalid> {
    for (i, entry) in ports.unwrap_or_default().iter().enumerate() {
        let path = path.index(i);
        if let Some(protocol) = &entry.protocol
            && !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP")
        {
            return Err(invalid(
                &path.key("protocol"),
                format!("{protocol:?} is not a protocol (TCP, UDP or SCTP)"),
            ));
        }
        match (&entry.port, entry.end_port) {
            (None, Some(_)) => {
                return Err(invalid(&path.key("endPort"), "endPort needs a port"));
            }
            (Some(IntOrString::String(_)), Some(_)) => {
                return Err(invalid(
                    &path.key("endPort"),
                    "endPort cannot be used with a named port",
                ));
            }
            (Some(IntOrString::Int(port)), end) => {
                if !(1..=65535).contains(port) {
                    return Err(invalid(
                        &path.key("port"),
                        format!("{port} is not a port number (1-65535)"),
                    ));
                }
                if let Some(end) = end
                    && !(*port..=65535).contains(&end)
                {
                    return Err(invalid(
                        &path.key("endPort"),
                        format!("{end} must be between port {port} and 65535"),
                    ));
                }
            }
            (Some(IntOrString::String(name)), None) => {
                check_port_name(name).map_err(|m| invalid(&path.key("port"), m))?;
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Checks a DNS label (RFC 1123), the shape of namespace and pod names.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (1-63 lowercase letters, digits or '-', starting and ending with a letter or digit)"
        ))
    }
}

/// Checks a DNS subdomain (RFC 1123), the shape of policy names.
fn check_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| check_label_name(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
        ))
    }
}

/// Checks an IANA service name, the shape of named ports.
pub fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a port name (1-15 lowercase letters, digits or '-', with a letter)"
        ))
    }
}

/// A parsed CIDR; IPv6 ones are kept only to be validated, since the lab's
/// traffic is IPv4 and they never match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cidr {
    V4 { net: u32, len: u8 },
    V6 { net: u128, len: u8 },
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let bad = || format!("{text:?} is not a CIDR like 10.0.0.0/8");
        let (addr, len) = text.split_once('/').ok_or_else(bad)?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if let Ok(v4) = addr.parse::<Ipv4Addr>() {
            if len > 32 {
                return Err(bad());
            }
            // Host bits are ignored, as Kubernetes has long done.
            let net = u32::from(v4) & mask32(len);
            return Ok(Cidr::V4 { net, len });
        }
        let v6 = addr.parse::<Ipv6Addr>().map_err(|_| bad())?;
        if len > 128 {
            return Err(bad());
        }
        let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
        Ok(Cidr::V6 {
            net: u128::from(v6) & mask,
            len,
        })
    }

    fn strictly_contains(&self, inner: &Cidr) -> bool {
        match (*self, *inner) {
            (Cidr::V4 { net, len }, Cidr::V4 { net: n2, len: l2 }) => {
                l2 > len && n2 & mask32(len) == net
            }
            (Cidr::V6 { net, len }, Cidr::V6 { net: n2, len: l2 }) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                l2 > len && n2 & mask == net
            }
            _ => false,
        }
    }

    /// The IPv4 addresses covered, as an inclusive range.
    fn v4_range(&self) -> Option<(u32, u32)> {
        match *self {
            Cidr::V4 { net, len } => Some((net, net | !mask32(len))),
            Cidr::V6 { .. } => None,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

/// Sorted, disjoint, non-adjacent inclusive ranges of addresses or ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet(Vec<(u32, u32)>);

impl RangeSet {
    fn single(lo: u32, hi: u32) -> RangeSet {
        RangeSet(vec![(lo, hi)])
    }

    fn insert(&mut self, lo: u32, hi: u32) {
        self.0.push((lo, hi));
        self.0.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for &(lo, hi) in &self.0 {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.0 = merged;
    }

    fn union(&mut self, other: &RangeSet) {
        for &(lo, hi) in &other.0 {
            self.insert(lo, hi);
        }
    }

    fn subtract(&mut self, cut_lo: u32, cut_hi: u32) {
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(lo, hi) in &self.0 {
            if hi < cut_lo || lo > cut_hi {
                kept.push((lo, hi));
                continue;
            }
            if lo < cut_lo {
                kept.push((lo, cut_lo - 1));
            }
            if hi > cut_hi {
                kept.push((cut_hi + 1, hi));
            }
        }
        self.0 = kept;
    }

    fn contains(&self, value: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&value))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The ports one allow entry admits for one protocol (`None`: all ports).
#[derive(Debug, Clone, PartialEq, Eq)]
struct L4 {
    protocol: Protocol,
    ports: Option<RangeSet>,
}

/// One resolved allow entry: remote addresses (`None`: any) and ports
/// (`None`: any protocol and port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allow {
    remotes: Option<RangeSet>,
    l4: Option<Vec<L4>>,
}

impl Allow {
    fn matches(&self, remote: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        let remote_ok = self
            .remotes
            .as_ref()
            .is_none_or(|set| set.contains(u32::from(remote)));
        let l4_ok = self.l4.as_ref().is_none_or(|l4| {
            l4.iter().any(|entry| {
                entry.protocol == protocol
                    && entry
                        .ports
                        .as_ref()
                        .is_none_or(|ports| ports.contains(u32::from(port)))
            })
        });
        remote_ok && l4_ok
    }
}

/// A policy isolating one pod in one direction, with what it allows.
#[derive(Debug)]
struct Isolating {
    policy: PolicyRef,
    allows: Vec<Allow>,
}

/// A rule's peers and ports, whichever its direction.
type Rule<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

/// A port entry of a rule before named ports are resolved.
enum PortMatch {
    Numbered(L4),
    Named { protocol: Protocol, name: String },
}

/// Decides one flow under Kubernetes semantics.
pub fn evaluate(cluster: &Cluster, policies: &[NetworkPolicy], flow: &FlowQuery) -> Decision {
    let egress = match pod_by_ip(cluster, flow.src_ip) {
        None => SideDecision::NotIsolated,
        Some(src) => side_decision(
            &isolation(cluster, policies, src, Direction::Egress),
            flow.dst_ip,
            flow,
        ),
    };
    let ingress = match pod_by_ip(cluster, flow.dst_ip) {
        None => SideDecision::NotIsolated,
        Some(dst) => {
            let isolating = isolation(cluster, policies, dst, Direction::Ingress);
            let from_own_node = cluster
                .nodes
                .iter()
                .any(|node| node.name == dst.node && node.addresses.contains(&flow.src_ip));
            if !isolating.is_empty() && from_own_node {
                SideDecision::FromLocalNode
            } else {
                side_decision(&isolating, flow.src_ip, flow)
            }
        }
    };
    Decision { egress, ingress }
}

fn side_decision(isolating: &[Isolating], remote: Ipv4Addr, flow: &FlowQuery) -> SideDecision {
    if isolating.is_empty() {
        return SideDecision::NotIsolated;
    }
    let by: Vec<PolicyRef> = isolating
        .iter()
        .filter(|iso| {
            iso.allows
                .iter()
                .any(|allow| allow.matches(remote, flow.protocol, flow.dst_port))
        })
        .map(|iso| iso.policy.clone())
        .collect();
    if by.is_empty() {
        SideDecision::Denied {
            isolated_by: isolating.iter().map(|iso| iso.policy.clone()).collect(),
        }
    } else {
        SideDecision::Allowed { by }
    }
}

fn pod_by_ip(cluster: &Cluster, ip: Ipv4Addr) -> Option<&Pod> {
    cluster.pods.iter().find(|pod| pod.ip == ip)
}

/// The policies isolating `pod` in `direction`, sorted by namespace and
/// name, each with its resolved allow entries.
fn isolation(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    pod: &Pod,
    direction: Direction,
) -> Vec<Isolating> {
    let mut out: Vec<Isolating> = policies
        .iter()
        .filter_map(|policy| {
            let spec = policy.spec.as_ref()?;
            let namespace = policy.metadata.namespace.as_deref()?;
            let selected = namespace == pod.namespace
                && spec
                    .pod_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &pod.labels));
            if !selected || !affects(spec, direction) {
                return None;
            }
            Some(Isolating {
                policy: PolicyRef {
                    namespace: namespace.to_owned(),
                    name: policy.metadata.name.clone().unwrap_or_default(),
                },
                allows: policy_allows(cluster, spec, namespace, pod, direction),
            })
        })
        .collect();
    out.sort_by(|a, b| a.policy.cmp(&b.policy));
    out
}

/// Whether `direction` is among the policy's effective policyTypes.
fn affects(spec: &NetworkPolicySpec, direction: Direction) -> bool {
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == direction.policy_type()),
        _ => match direction {
            Direction::Ingress => true,
            Direction::Egress => spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()),
        },
    }
}

fn policy_allows(
    cluster: &Cluster,
    spec: &NetworkPolicySpec,
    namespace: &str,
    pod: &Pod,
    direction: Direction,
) -> Vec<Allow> {
    let mut allows = Vec::new();
    for (peers, ports) in rules(spec, direction) {
        let remotes = rule_remotes(cluster, namespace, peers);
        let Some(ports) = ports.filter(|p| !p.is_empty()) else {
            allows.push(Allow { remotes, l4: None });
            continue;
        };
        let mut numbered = Vec::new();
        // Per resolved (protocol, port): the destination pods that have it.
        let mut named: BTreeMap<(Protocol, u16), RangeSet> = BTreeMap::new();
        for entry in ports.iter().filter_map(port_match) {
            match entry {
                PortMatch::Numbered(l4) => numbered.push(l4),
                // Ingress: the destination is the isolated pod itself.
                PortMatch::Named { protocol, name } if direction == Direction::Ingress => {
                    if let Some(port) = named_port(pod, &name, protocol) {
                        numbered.push(L4 {
                            protocol,
                            ports: Some(RangeSet::single(port.into(), port.into())),
                        });
                    }
                }
                // Egress: any destination pod in the peers having that port.
                PortMatch::Named { protocol, name } => {
                    for dest in &cluster.pods {
                        let ip = u32::from(dest.ip);
                        let in_peers = remotes.as_ref().is_none_or(|set| set.contains(ip));
                        if let (true, Some(port)) = (in_peers, named_port(dest, &name, protocol)) {
                            named.entry((protocol, port)).or_default().insert(ip, ip);
                        }
                    }
                }
            }
        }
        if !numbered.is_empty() {
            allows.push(Allow {
                remotes: remotes.clone(),
                l4: Some(numbered),
            });
        }
        for ((protocol, port), dests) in named {
            allows.push(Allow {
                remotes: Some(dests),
                l4: Some(vec![L4 {
                    protocol,
                    ports: Some(RangeSet::single(port.into(), port.into())),
                }]),
            });
        }
    }
    allows
}

/// The peers and ports of each of the policy's rules for `direction`.
fn rules(spec: &NetworkPolicySpec, direction: Direction) -> Vec<Rule<'_>> {
    match direction {
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect(),
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect(),
    }
}

fn named_port(pod: &Pod, name: &str, protocol: Protocol) -> Option<u16> {
    pod.ports
        .iter()
        .find(|p| p.name == name && p.protocol == protocol)
        .map(|p| p.port)
}

/// A port entry, or `None` when it can match nothing (SCTP, or invalid).
fn port_match(entry: &NetworkPolicyPort) -> Option<PortMatch> {
    let protocol = Protocol::parse(entry.protocol.as_deref().unwrap_or("TCP"))?;
    match (&entry.port, entry.end_port) {
        (None, None) => Some(PortMatch::Numbered(L4 {
            protocol,
            ports: None,
        })),
        (Some(IntOrString::Int(port)), end) => {
            let lo = u32::try_from(*port)
                .ok()
                .filter(|p| (1..=65535).contains(p))?;
            let hi = match end {
                None => lo,
                Some(end) => u32::try_from(end)
                    .ok()
                    .filter(|e| (lo..=65535).contains(e))?,
            };
            Some(PortMatch::Numbered(L4 {
                protocol,
                ports: Some(RangeSet::single(lo, hi)),
            }))
        }
        (Some(IntOrString::String(name)), None) => Some(PortMatch::Named {
            protocol,
            name: name.clone(),
        }),
        _ => None,
    }
}

/// The remote addresses a rule's peers allow; `None` means any address.
fn rule_remotes(
    cluster: &Cluster,
    namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
) -> Option<RangeSet> {
    let peers = peers.filter(|p| !p.is_empty())?;
    let mut set = RangeSet::default();
    for peer in peers {
        set.union(&peer_remotes(cluster, namespace, peer));
    }
    Some(set)
}

fn peer_remotes(cluster: &Cluster, namespace: &str, peer: &NetworkPolicyPeer) -> RangeSet {
    let mut set = RangeSet::default();
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(block), None, None) => {
            let Some((lo, hi)) = Cidr::parse(&block.cidr).ok().and_then(|c| c.v4_range()) else {
                return set;
            };
            set.insert(lo, hi);
            for except in block.except.iter().flatten() {
                match Cidr::parse(except).map(|c| c.v4_range()) {
                    Ok(Some((lo, hi))) => set.subtract(lo, hi),
                    Ok(None) => {}
                    // An unreadable exception could exclude anything: fail closed.
                    Err(_) => return RangeSet::default(),
                }
            }
        }
        (None, pods, namespaces) if pods.is_some() || namespaces.is_some() => {
            for pod in &cluster.pods {
                let ns_ok = match namespaces {
                    None => pod.namespace == namespace,
                    Some(sel) => selector_matches(sel, &namespace_labels(cluster, &pod.namespace)),
                };
                let pod_ok = pods
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &pod.labels));
                if ns_ok && pod_ok {
                    let ip = u32::from(pod.ip);
                    set.insert(ip, ip);
                }
            }
        }
        _ => {}
    }
    set
}

fn namespace_labels(cluster: &Cluster, name: &str) -> Labels {
    let mut labels = cluster
        .namespaces
        .iter()
        .find(|ns| ns.name == name)
        .map(|ns| ns.labels.clone())
        .unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned());
    labels
}

/// Label selector matching; an unknown operator matches nothing.
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|req| {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// One nftables script per node (every node in `cluster.nodes`, and any
/// node a pod names), for `nft -f`. Each script replaces the table
/// `inet <table>` as a whole, in one transaction, so loading it again or
/// loading the script for other policies swaps the rules atomically.
///
/// The table's `forward` chain accepts established traffic, then sends
/// packets from each egress-isolated pod of the node to its chain
/// `egress/<namespace>/<pod>` and packets to each ingress-isolated pod to
/// `ingress/<namespace>/<pod>`. Those chains `return` when a rule allows the
/// packet and end in `drop`. They return rather than accept so that a packet
/// between two pods of one node still meets the destination's ingress chain.
pub fn compile(
    cluster: &Cluster,
    policies: &[NetworkPolicy],
    table: &str,
) -> Result<BTreeMap<String, String>, CompileError> {
    let table_ok = table.len() <= 64
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !table_ok {
        return Err(CompileError::TableName(table.to_owned()));
    }
    let mut nodes: BTreeSet<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    nodes.extend(cluster.pods.iter().map(|p| p.node.as_str()));
    Ok(nodes
        .into_iter()
        .map(|node| (node.to_owned(), node_script(cluster, policies, table, node)))
        .collect())
}

fn node_script(cluster: &Cluster, policies: &[NetworkPolicy], table: &str, node: &str) -> String {
    let mut pods: Vec<&Pod> = cluster.pods.iter().filter(|p| p.node == node).collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut chain_names = BTreeSet::new();
    // Per direction: pod address -> chain name, and the chains' text.
    let mut jumps: BTreeMap<Direction, BTreeMap<Ipv4Addr, String>> = BTreeMap::new();
    let mut chains = String::new();
    for pod in pods {
        for direction in [Direction::Egress, Direction::Ingress] {
            let isolating = isolation(cluster, policies, pod, direction);
            let dir_jumps = jumps.entry(direction).or_default();
            if isolating.is_empty() || dir_jumps.contains_key(&pod.ip) {
                continue;
            }
            let name = chain_name(&mut chain_names, direction, pod);
            dir_jumps.insert(pod.ip, name.clone());
            write_chain(&mut chains, &name, pod, direction, &isolating);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# skymap lab: NetworkPolicies for node {}\n\
         table inet {table} {{}}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept",
        comment_text(node),
    );
    for (direction, field) in [(Direction::Egress, "saddr"), (Direction::Ingress, "daddr")] {
        let Some(map) = jumps.get(&direction).filter(|m| !m.is_empty()) else {
            continue;
        };
        let entries: Vec<String> = map
            .iter()
            .map(|(ip, chain)| format!("{ip} : jump {chain}"))
            .collect();
        let _ = writeln!(out, "\t\tip {field} vmap {{ {} }}", entries.join(", "));
    }
    out.push_str("\t}\n");
    out.push_str(&chains);
    out.push_str("}\n");
    out
}

fn write_chain(
    out: &mut String,
    name: &str,
    pod: &Pod,
    direction: Direction,
    isolating: &[Isolating],
) {
    let field = match direction {
        Direction::Egress => "daddr",
        Direction::Ingress => "saddr",
    };
    let _ = writeln!(
        out,
        "\tchain {name} {{\n\t\tcomment \"{}\"",
        comment_text(&format!("{direction} of {}/{}", pod.namespace, pod.name)),
    );
    for iso in isolating {
        let comment = comment_text(&format!("allowed by {}", iso.policy));
        for allow in &iso.allows {
            let remotes = match &allow.remotes {
                None => String::new(),
                Some(set) if set.is_empty() => continue,
                Some(set) => format!("ip {field} {} ", render_set(set, render_ips)),
            };
            match &allow.l4 {
                None => {
                    let _ = writeln!(out, "\t\t{remotes}return comment \"{comment}\"");
                }
                Some(l4) => {
                    for entry in l4 {
                        let ports = match &entry.ports {
                            None => format!("meta l4proto {}", entry.protocol.nft()),
                            Some(set) if set.is_empty() => continue,
                            Some(set) => format!(
                                "{} dport {}",
                                entry.protocol.nft(),
                                render_set(set, render_ports)
                            ),
                        };
                        let _ = writeln!(out, "\t\t{remotes}{ports} return comment \"{comment}\"");
                    }
                }
            }
        }
    }
    let names: Vec<String> = isolating.iter().map(|iso| iso.policy.to_string()).collect();
    let _ = writeln!(
        out,
        "\t\tcounter drop comment \"{}\"\n\t}}",
        comment_text(&format!("isolated by {}", names.join(", ")))
    );
}

/// A unique chain name `egress/<namespace>/<pod>` from characters nftables
/// takes in an unquoted name.
fn chain_name(taken: &mut BTreeSet<String>, direction: Direction, pod: &Pod) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(100)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let base = format!(
        "{}/{}/{}",
        direction.chain_prefix(),
        clean(&pod.namespace),
        clean(&pod.name)
    );
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}.{n}");
        n += 1;
    }
    name
}

/// Text safe inside an nftables comment (quoted, at most 128 bytes).
fn comment_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if out.len() > 128 {
        let mut end = 125;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

fn render_set(set: &RangeSet, render: impl Fn(u32, u32) -> String) -> String {
    let items: Vec<String> = set.0.iter().map(|&(lo, hi)| render(lo, hi)).collect();
    format!("{{ {} }}", items.join(", "))
}

fn render_ports(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// An address range as a single address, a prefix when it is one, or `a-b`.
fn render_ips(lo: u32, hi: u32) -> String {
    let size = u64::from(hi) - u64::from(lo) + 1;
    if size == 1 {
        Ipv4Addr::from(lo).to_string()
    } else if size.is_power_of_two() && u64::from(lo) % size == 0 {
        format!("{}/{}", Ipv4Addr::from(lo), 32 - size.trailing_zeros())
    } else {
        format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi))
    }
}
