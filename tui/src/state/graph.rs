//! The live service graph: [`GraphUpdate`]s (a snapshot, then deltas) folded
//! into domain [`Node`]s and [`Edge`]s, and the [`health`] rule that colours
//! an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use skymap_proto::names::{protocol_name, rcode_name, sanitize};
use skymap_proto::v1::{self, GraphUpdate, Verdict};

/// Which level of detail the graph's nodes are at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zoom {
    Workload,
    Namespace,
    Pod,
}

impl Zoom {
    fn from_wire(zoom: i32) -> Option<Self> {
        match v1::Zoom::try_from(zoom).ok()? {
            v1::Zoom::Workload => Some(Self::Workload),
            v1::Zoom::Namespace => Some(Self::Namespace),
            v1::Zoom::Pod => Some(Self::Pod),
        }
    }

    /// The same level in the wire's terms, for requests to the relay.
    pub fn to_wire(self) -> v1::Zoom {
        match self {
            Self::Workload => v1::Zoom::Workload,
            Self::Namespace => v1::Zoom::Namespace,
            Self::Pod => v1::Zoom::Pod,
        }
    }
}

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Workload,
    Pod,
    Service,
    World,
    Host,
    Namespace,
    /// A kind this build does not know (newer relay, or unset).
    Unknown,
}

impl NodeKind {
    fn from_wire(kind: i32) -> Self {
        match v1::NodeKind::try_from(kind) {
            Ok(v1::NodeKind::Workload) => Self::Workload,
            Ok(v1::NodeKind::Pod) => Self::Pod,
            Ok(v1::NodeKind::Service) => Self::Service,
            Ok(v1::NodeKind::World) => Self::World,
            Ok(v1::NodeKind::Host) => Self::Host,
            Ok(v1::NodeKind::Namespace) => Self::Namespace,
            Ok(v1::NodeKind::Unknown) | Err(_) => Self::Unknown,
        }
    }
}

/// One box of the map. Every string is sanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub kind: NodeKind,
    pub namespace: String,
    pub name: String,
    pub workload_kind: String,
    /// `key=value`.
    pub labels: Vec<String>,
    pub node_name: String,
    /// CPU of the node's pods, when a probe reports it.
    pub cpu: Option<Cpu>,
}

/// CPU of a node's pods, as the probes sampled it, in whole units so a
/// hostile figure (NaN, negative, huge) cannot reach the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    pub millicores: u64,
    /// 0 = no limit.
    pub limit_millicores: u64,
    /// Share of CFS periods throttled, in per mille.
    pub throttled_permille: u16,
    pub pods: u32,
}

impl Cpu {
    fn from_wire(cpu: &v1::CpuUsage) -> Self {
        // Beyond a million cores a figure is garbage; NaN and infinities too.
        let milli = |cores: f64| {
            if cores.is_finite() {
                (cores.clamp(0.0, 1e6) * 1000.0).round() as u64
            } else {
                0
            }
        };
        Self {
            millicores: milli(cpu.cores),
            limit_millicores: milli(cpu.limit_cores),
            // clamp keeps NaN; `as` turns it into 0.
            throttled_permille: (cpu.throttled.clamp(0.0, 1.0) * 1000.0).round() as u16,
            pods: cpu.pods,
        }
    }

    /// Use as a share of the limit, 0..; `None` without a limit.
    pub fn of_limit(&self) -> Option<f64> {
        (self.limit_millicores > 0).then(|| self.millicores as f64 / self.limit_millicores as f64)
    }
}

impl Node {
    fn from_wire(node: v1::GraphNode) -> Self {
        Self {
            id: clean(&node.id),
            kind: NodeKind::from_wire(node.kind),
            namespace: clean(&node.namespace),
            name: clean(&node.name),
            workload_kind: clean(&node.workload_kind),
            labels: node.labels.iter().map(|l| clean(l)).collect(),
            node_name: clean(&node.node_name),
            cpu: node.cpu.as_ref().map(Cpu::from_wire),
        }
    }
}

/// A latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub min: Duration,
    pub p50: Duration,
    pub p95: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Latency {
    /// `None` when absent or empty, so a missing summary never reads as "0 ms".
    fn from_wire(summary: Option<v1::LatencySummary>) -> Option<Self> {
        let s = summary.filter(|s| s.count > 0)?;
        Some(Self {
            count: s.count,
            min: Duration::from_nanos(s.min_ns),
            p50: Duration::from_nanos(s.p50_ns),
            p95: Duration::from_nanos(s.p95_ns),
            p99: Duration::from_nanos(s.p99_ns),
            max: Duration::from_nanos(s.max_ns),
            mean: Duration::from_nanos(s.mean_ns),
        })
    }
}

/// Per-second rates over a window; all zero when the relay sent none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub flows_per_s: f64,
    pub requests_per_s: f64,
    pub bytes_per_s: f64,
    pub drops_per_s: f64,
    pub errors_per_s: f64,
}

impl Rates {
    fn from_wire(rates: Option<v1::Rates>) -> Self {
        rates.map_or_else(Self::default, |r| Self {
            flows_per_s: r.flows_per_s,
            requests_per_s: r.requests_per_s,
            bytes_per_s: r.bytes_per_s,
            drops_per_s: r.drops_per_s,
            errors_per_s: r.errors_per_s,
        })
    }
}

/// Traffic from one node to another on one port and protocol. See
/// `GraphEdge` in relay.proto for what each counter counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub id: String,
    pub source: String,
    pub destination: String,
    pub port: u32,
    /// `TCP`, `UDP`, ... (see `skymap_proto::names::protocol_name`).
    pub protocol: String,
    pub flows: u64,
    pub connections: u64,
    pub requests: u64,
    pub dns_queries: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Flows with a FORWARDED / DROPPED verdict.
    pub forwarded: u64,
    pub dropped: u64,
    /// `(reason, packets, flows)`.
    pub drops: Vec<(String, u64, u64)>,
    /// HTTP status classes 1xx, 2xx, 3xx, 4xx, 5xx.
    pub http: [u64; 5],
    /// `(rcode name, count)`.
    pub dns_rcodes: Vec<(String, u64)>,
    pub latency: Option<Latency>,
    pub connect_latency: Option<Latency>,
    pub rate_1m: Rates,
    pub rate_5m: Rates,
    pub errors: u64,
    pub refused: u64,
    pub seen_at_source: u64,
    pub seen_at_destination: u64,
    /// Unix nanoseconds.
    pub first_seen: i64,
    pub last_seen: i64,
    pub services: Vec<String>,
}

impl Edge {
    fn from_wire(edge: v1::GraphEdge) -> Self {
        let verdict_count = |wanted: Verdict| {
            edge.verdicts
                .iter()
                .filter(|v| v.verdict == wanted as i32)
                .map(|v| v.count)
                .sum()
        };
        let http = edge.http.unwrap_or_default();
        Self {
            id: clean(&edge.id),
            source: clean(&edge.source),
            destination: clean(&edge.destination),
            port: edge.port,
            protocol: protocol_name(edge.protocol).to_string(),
            flows: edge.flows,
            connections: edge.connections,
            requests: edge.requests,
            dns_queries: edge.dns_queries,
            packets: edge.packets,
            bytes: edge.bytes,
            forwarded: verdict_count(Verdict::Forwarded),
            dropped: verdict_count(Verdict::Dropped),
            drops: edge
                .drops
                .iter()
                .map(|d| (clean(&d.reason), d.packets, d.flows))
                .collect(),
            http: [
                http.info,
                http.success,
                http.redirect,
                http.client_error,
                http.server_error,
            ],
            dns_rcodes: edge
                .dns_rcodes
                .iter()
                .map(|r| {
                    // Our own word for a known code, so a hostile relay cannot
                    // relabel NXDOMAIN; its word only for codes we do not know.
                    let name = match rcode_name(r.rcode) {
                        "RCODE_OTHER" if !r.name.is_empty() => clean(&r.name),
                        known => known.to_string(),
                    };
                    (name, r.count)
                })
                .collect(),
            latency: Latency::from_wire(edge.latency),
            connect_latency: Latency::from_wire(edge.connect_latency),
            rate_1m: Rates::from_wire(edge.rate_1m),
            rate_5m: Rates::from_wire(edge.rate_5m),
            errors: edge.errors,
            refused: edge.refused,
            seen_at_source: edge.seen_at_source,
            seen_at_destination: edge.seen_at_destination,
            first_seen: edge.first_seen_ns,
            last_seen: edge.last_seen_ns,
            services: edge.services.iter().map(|s| clean(s)).collect(),
        }
    }
}

/// How an edge is doing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Dropped,
    Error,
    Warning,
    Ok,
}

/// Error share of attempts above which an edge is [`Health::Error`] (5 %).
const ERROR_RATIO: f64 = 0.05;
/// p95 latency above which an edge is [`Health::Warning`].
const SLOW_P95: Duration = Duration::from_millis(500);

/// The worst thing true of an edge now, checked in this order:
///
/// - `Dropped`: drops in the last minute (`rate_1m`). Older drops alone do
///   not count, so an edge turns healthy a minute after the fix; the tree
///   and the drops view still show that it dropped.
/// - `Error`: [`error_ratio`] above 5 %.
/// - `Warning`: request/response p95 latency above 500 ms.
/// - `Ok` otherwise.
pub fn health(edge: &Edge) -> Health {
    if edge.rate_1m.drops_per_s > 0.0 {
        return Health::Dropped;
    }
    if error_ratio(edge).is_some_and(|ratio| ratio > ERROR_RATIO) {
        return Health::Error;
    }
    if edge.latency.is_some_and(|l| l.p95 > SLOW_P95) {
        return Health::Warning;
    }
    Health::Ok
}

/// The share of attempts on an edge that failed, `None` when nothing was
/// attempted.
///
/// - DNS, once answers were seen: answers other than NOERROR and NXDOMAIN
///   (SERVFAIL, REFUSED, ...) per answer. NXDOMAIN is a real answer, and a short name's search-path
///   expansions produce several for every lookup that works.
/// - With requests in the last minute: the relay's 1-minute error rate per
///   request rate, so an edge recovers once its errors stop.
/// - Otherwise all errors (5xx, refused connections, ERROR verdicts) per
///   request and connection ever seen; any error with no attempt is 100 %.
pub fn error_ratio(edge: &Edge) -> Option<f64> {
    let answers: u64 = edge.dns_rcodes.iter().map(|(_, n)| n).sum();
    if answers > 0 {
        let failed: u64 = edge
            .dns_rcodes
            .iter()
            .filter(|(name, _)| name != "NOERROR" && name != "NXDOMAIN")
            .map(|(_, n)| n)
            .sum();
        return Some(failed as f64 / answers as f64);
    }
    if edge.rate_1m.requests_per_s > 0.0 {
        return Some((edge.rate_1m.errors_per_s / edge.rate_1m.requests_per_s).min(1.0));
    }
    let attempts = edge.requests + edge.dns_queries + edge.connections;
    if attempts > 0 {
        Some((edge.errors as f64 / attempts as f64).min(1.0))
    } else if edge.errors > 0 {
        Some(1.0)
    } else {
        None
    }
}

/// The graph as the relay last described it.
#[derive(Debug, Default)]
pub struct ServiceGraph {
    nodes: BTreeMap<String, Node>,
    edges: BTreeMap<String, Edge>,
    /// The wire zoom of the current snapshot; `None` until the first one.
    zoom: Option<i32>,
    time_ns: i64,
    ignored: u64,
}

impl ServiceGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds in one update. A snapshot (`full`) replaces everything; a delta
    /// removes, then upserts. A delta before any snapshot or for another zoom
    /// than the snapshot's describes some other graph, so it is ignored and
    /// counted (see [`ServiceGraph::ignored`]).
    pub fn apply(&mut self, update: GraphUpdate) {
        if update.full {
            self.nodes.clear();
            self.edges.clear();
            self.zoom = Some(update.zoom);
        } else if self.zoom != Some(update.zoom) {
            self.ignored += 1;
            return;
        }
        self.time_ns = update.time_ns;
        for id in &update.removed_edges {
            self.edges.remove(sanitize(id).as_ref());
        }
        for id in &update.removed_nodes {
            self.nodes.remove(sanitize(id).as_ref());
        }
        for node in update.nodes {
            let node = Node::from_wire(node);
            self.nodes.insert(node.id.clone(), node);
        }
        for edge in update.edges {
            let edge = Edge::from_wire(edge);
            self.edges.insert(edge.id.clone(), edge);
        }
        // An edge whose end is gone cannot be drawn; the relay should have
        // removed it too, but the map must not depend on that.
        if !update.removed_nodes.is_empty() {
            let nodes = &self.nodes;
            self.edges
                .retain(|_, e| nodes.contains_key(&e.source) && nodes.contains_key(&e.destination));
        }
    }

    /// The server's clock at the last applied update (Unix nanoseconds); frames
    /// are rendered against it, not the local clock.
    pub fn time_ns(&self) -> i64 {
        self.time_ns
    }

    /// The current snapshot's zoom, once one has arrived.
    pub fn zoom(&self) -> Option<Zoom> {
        self.zoom.and_then(Zoom::from_wire)
    }

    /// Deltas dropped because they did not belong to the current snapshot.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn edge(&self, id: &str) -> Option<&Edge> {
        self.edges.get(id)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    /// All edges, by id.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.values()
    }

    pub fn edges_from<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> {
        self.edges.values().filter(move |e| e.source == id)
    }

    pub fn edges_to<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> {
        self.edges.values().filter(move |e| e.destination == id)
    }

    /// Edges with `id` at either end, each once.
    pub fn edges_touching<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Edge> {
        self.edges
            .values()
            .filter(move |e| e.source == id || e.destination == id)
    }

    /// The namespaces of the nodes, sorted, without duplicates or "".
    pub fn namespaces(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .nodes
            .values()
            .map(|n| n.namespace.as_str())
            .filter(|ns| !ns.is_empty())
            .collect();
        set.into_iter().map(str::to_string).collect()
    }
}

fn clean(text: &str) -> String {
    sanitize(text).into_owned()
}
