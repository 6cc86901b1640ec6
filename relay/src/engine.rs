//! The relay's synchronous core: validates, enriches and counts probe
//! batches, keeps the graphs and the flow history, and answers snapshots,
//! deltas, flow queries and status. No I/O and no async: the aggregator task
//! owns one [`Engine`], and `skymap graph --file` and the benchmark use it
//! directly ([`aggregate_flows`]).
//!
//! Per flow, the hot path avoids allocation and string building: an address
//! resolves once (metadata lookup, endpoint template, graph nodes at every
//! zoom) and the result is cached per address, so a repeat costs one hash
//! lookup. Flows that arrive already enriched (replays) take a slower path
//! that merges their fields with metadata and caches by the merged result.
//! A batch is counted in passes (see `Engine::apply_pending`) so that the
//! cache misses of a large graph overlap. `benches/ingest.rs` measures it.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    CpuSample, Endpoint, Flow, FlowBatch, GraphEdge, GraphNode, GraphUpdate, L7Type, Layer7,
    LossCounter, NodeKind, NodeState, NodeStatus, ObservationPoint, Protocol, StatusResponse,
    TcpFlag, TrafficDirection, Verdict, Workload, Zoom,
};

use crate::cpu::{self, CpuTable, Target};
use crate::dedup::{Decision, IpKey, LocalIps, decide};
use crate::explain::PolicyNamer;
use crate::graph::{EdgeIx, Graph, NodeIx};
use crate::history::{CompactFlow, History, Interner, strip};
use crate::metadata::{EndpointInfo, EndpointKind, Metadata, WORKLOAD_NAME_LABELS};
use crate::metrics::{FlowCounts, RelayMetrics};
use crate::stats::{
    BUCKET_NS, DropFact, FlowFacts, L7Fact, RATE_1M_BUCKETS, RATE_BUCKETS, RateBucket, RateRing,
};

/// Longest string field accepted in a flow.
pub const MAX_STRING_BYTES: usize = 4096;
/// Reject reasons listed in an [`IngestOutcome`].
const MAX_ERRORS: usize = 5;
/// Addresses whose resolution is cached; the cache starts over when full.
const RESOLVE_CACHE_CAP: usize = 1_000_000;
/// Node names the engine tracks (probes, and nodes named in flows/metadata).
const MAX_NODES: usize = 65_536;
/// How far ahead of the last `advance` a flow's time may move the clock, so a
/// probe with a wrong clock cannot push every rate into the future.
const FUTURE_TOLERANCE_NS: i64 = 60_000_000_000;
/// Records' worth of buffer kept between batches.
const PENDING_KEEP: usize = 16_384;
/// Expiry runs at most this often.
const SWEEP_EVERY_NS: i64 = 1_000_000_000;
/// How long a server-side record whose client is not (yet) known to be
/// covered waits before it is counted: long enough for the client's node to
/// report the same flow when probes connect, or batches arrive, in a
/// different order than the packets flowed.
pub const HOLD_NS: i64 = 2_000_000_000;
/// Most records held at once; beyond it they count at once (best effort).
const MAX_HELD: usize = 1_000_000;

/// Loss stage for edges not created because a zoom level is full.
pub const LOSS_GRAPH_FULL: &str = "relay-graph-full";
/// Loss stage for gaps in a probe's batch sequence numbers.
pub const LOSS_BATCH_GAP: &str = "relay-batch-gap";
/// Loss stage for CPU samples of pods beyond what the relay tracks.
pub const LOSS_CPU_TABLE_FULL: &str = "relay-cpu-table-full";

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Flows kept for `GetFlows` (memory: about 112 bytes each when full).
    pub history_capacity: usize,
    /// Keep the pod zoom (one more edge update per flow).
    pub pod_graph: bool,
    /// Edges (and nodes) per zoom level; beyond it new edges are not created
    /// and are counted as loss stage "relay-graph-full".
    pub max_edges: usize,
    /// Idle edges and nodes are removed after this long.
    pub edge_expiry_ns: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            history_capacity: 1_000_000,
            pod_graph: true,
            max_edges: 100_000,
            edge_expiry_ns: 15 * 60 * 1_000_000_000,
        }
    }
}

/// What became of one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub rejected: u64,
    /// The first few reject reasons, e.g. "flow 3: source ip has 5 bytes".
    pub errors: Vec<String>,
}

/// The changes since the previous [`Engine::take_deltas`], per zoom level.
#[derive(Debug, Clone, Default)]
pub struct Deltas {
    pub workload: GraphUpdate,
    pub namespace: GraphUpdate,
    /// `None` when the pod zoom is off.
    pub pod: Option<GraphUpdate>,
}

/// A probe's node, or a node named by flows or metadata.
#[derive(Debug)]
struct ProbeNode {
    /// Shared with every retained flow of the node.
    name: Arc<String>,
    state: NodeState,
    since_ns: i64,
    /// Has connected or sent a batch: its pods' flows are reported by it.
    reports: bool,
    flows_total: u64,
    rejected: u64,
    rate: RateRing,
    /// Stage → count. Probe-reported stages hold the latest cumulative value;
    /// relay stages accumulate.
    losses: BTreeMap<String, u64>,
    last_seq: Option<u64>,
}

impl ProbeNode {
    fn new(name: Arc<String>) -> Self {
        Self {
            name,
            state: NodeState::Unknown,
            since_ns: 0,
            reports: false,
            flows_total: 0,
            rejected: 0,
            rate: RateRing::default(),
            losses: BTreeMap::new(),
            last_seq: None,
        }
    }

    /// Reporting now: its local flows will arrive from it.
    fn reporting(&self) -> bool {
        self.reports && self.state != NodeState::Unavailable
    }

    fn add_loss(&mut self, stage: &str, count: u64) {
        match self.losses.get_mut(stage) {
            Some(total) => *total = total.saturating_add(count),
            None => {
                self.losses.insert(stage.to_string(), count);
            }
        }
    }
}

/// What one record adds to the graph: now, or after [`HOLD_NS`].
#[derive(Debug)]
enum Prepared {
    Now(Pending),
    Hold(Held),
}

/// A server-side record waiting for [`HOLD_NS`] (see [`Engine::release_held`]).
#[derive(Debug)]
struct Held {
    pending: Pending,
    client_ip: IpKey,
    client_meta_node: Option<u32>,
    release_at_ns: i64,
}

/// A counted record waiting for its edges (see `Engine::apply_pending`).
#[derive(Debug)]
struct Pending {
    facts: FlowFacts,
    decision: Decision,
    /// The node whose loss counters a full graph is charged to.
    node: u32,
    port: u16,
    protocol: i32,
    /// (client, server) at workload and pod zoom.
    ends: [(NodeIx, NodeIx); 2],
    edges: [Option<EdgeIx>; 2],
}

/// An address resolved: its endpoint template and its node at each zoom.
#[derive(Debug, Clone)]
struct Resolved {
    template: Option<Arc<Endpoint>>,
    workload: NodeIx,
    /// `NodeIx::end()` when the pod zoom is off or full.
    pod: NodeIx,
    /// The node metadata (or the flow) says the endpoint runs on.
    meta_node: Option<u32>,
    /// The template's service, interned for the edges' cheap comparison.
    service: Option<Arc<str>>,
}

/// The synchronous core (see the module doc).
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    metadata: Arc<Metadata>,
    clock_ns: i64,
    last_advance_ns: i64,
    last_sweep_ns: i64,
    last_delta_bucket: Option<i64>,
    nodes: Vec<ProbeNode>,
    node_ids: FxHashMap<Arc<str>, u32>,
    workload: Graph,
    pod: Option<Graph>,
    history: History,
    interner: Interner,
    /// Every endpoint resolved since the caches were last reset; the maps
    /// below point into it, so the hot path copies a slot number rather than
    /// cloning `Arc`s.
    resolved: Vec<Resolved>,
    /// Bare endpoints (address and port only), by address.
    by_ip: FxHashMap<IpKey, u32>,
    /// Endpoints that came with fields of their own, by (template, address).
    by_template: FxHashMap<(usize, IpKey), u32>,
    local_ips: LocalIps,
    /// The batch's counted records between the two passes of `apply_pending`.
    pending: Vec<Pending>,
    /// Server-side records held until the client's side has had its chance.
    held: std::collections::VecDeque<Held>,
    flows_total: u64,
    /// Flows of batches without a node name, which no node can own.
    rejected_unowned: u64,
    /// The probes' newest CPU sample per pod.
    cpu: CpuTable,
    /// Accepted records by verdict and drops by reason, for `/metrics`.
    flow_counts: FlowCounts,
    /// Names the NetworkPolicies behind policy drops (`policy_reason`).
    policy_namer: PolicyNamer,
}

impl Engine {
    pub fn new(config: EngineConfig, metadata: Arc<Metadata>) -> Self {
        let pod = config
            .pod_graph
            .then(|| Graph::new(Zoom::Pod, config.max_edges));
        Self {
            workload: Graph::new(Zoom::Workload, config.max_edges),
            pod,
            history: History::new(config.history_capacity),
            config,
            metadata,
            clock_ns: 0,
            last_advance_ns: 0,
            last_sweep_ns: 0,
            last_delta_bucket: None,
            nodes: Vec::new(),
            node_ids: FxHashMap::default(),
            interner: Interner::new(),
            resolved: Vec::new(),
            by_ip: FxHashMap::default(),
            by_template: FxHashMap::default(),
            local_ips: LocalIps::new(LocalIps::DEFAULT_CAPACITY),
            pending: Vec::new(),
            held: std::collections::VecDeque::new(),
            flows_total: 0,
            rejected_unowned: 0,
            cpu: CpuTable::default(),
            flow_counts: FlowCounts::default(),
            policy_namer: PolicyNamer::default(),
        }
    }

    /// The metadata flows are enriched with now.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// New metadata applies to flows from now on; the graphs keep their nodes.
    pub fn set_metadata(&mut self, metadata: Arc<Metadata>) {
        self.metadata = metadata;
        self.forget_resolutions();
        self.policy_namer.clear();
    }

    fn forget_resolutions(&mut self) {
        self.by_ip.clear();
        self.by_template.clear();
        self.resolved.clear();
    }

    fn node_id(&mut self, name: &str) -> Option<u32> {
        if let Some(&id) = self.node_ids.get(name) {
            return Some(id);
        }
        if self.nodes.len() >= MAX_NODES {
            return None;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(ProbeNode::new(Arc::new(name.to_string())));
        self.node_ids.insert(Arc::from(name), id);
        Some(id)
    }

    /// Validates, enriches and aggregates one probe batch. `on_flow` (if
    /// given) sees each accepted, enriched flow; pass `None` when nobody
    /// follows, which saves rebuilding a proto flow per record. The batch's
    /// `losses` are the probe's cumulative counters: the latest value per
    /// (node, stage) is kept. `seq` gaps count as loss stage "relay-batch-gap".
    pub fn ingest_batch(
        &mut self,
        mut batch: FlowBatch,
        mut on_flow: Option<&mut dyn FnMut(&Flow)>,
    ) -> IngestOutcome {
        let mut outcome = IngestOutcome::default();
        let batch_node = match check_node_name(&batch.node_name) {
            Err(reason) => None.ok_or(reason),
            Ok(()) => self
                .node_id(&batch.node_name)
                .ok_or_else(|| format!("batch: more than {MAX_NODES} nodes")),
        };
        let node = match batch_node {
            Ok(node) => node,
            Err(reason) => {
                self.rejected_unowned += batch.flows.len() as u64;
                outcome.rejected = batch.flows.len() as u64;
                outcome.errors.push(reason);
                return outcome;
            }
        };
        self.note_batch(node, &batch);
        if !batch.cpu.is_empty() {
            self.ingest_cpu(node, &batch.cpu, &mut outcome.errors);
        }

        // Slots handed out during a batch must stay valid until its end, so
        // the resolution caches only start over between batches.
        if self.resolved.len() + 2 * batch.flows.len() > RESOLVE_CACHE_CAP {
            self.forget_resolutions();
        }
        // Reused between batches, so the steady state allocates nothing here.
        let mut pending = std::mem::take(&mut self.pending);
        pending.reserve(batch.flows.len());
        for (index, flow) in batch.flows.iter_mut().enumerate() {
            if let Err(reason) = validate(flow) {
                outcome.rejected += 1;
                if outcome.errors.len() < MAX_ERRORS {
                    outcome.errors.push(format!("flow {index}: {reason}"));
                }
                continue;
            }
            // Compacting costs interning; skip it when nothing would keep it.
            let keep = self.history.capacity() > 0 || on_flow.is_some();
            let (counted, compact) = self.ingest_flow(flow, node, keep);
            match counted {
                Some(Prepared::Now(p)) => pending.push(p),
                Some(Prepared::Hold(h)) if self.held.len() < MAX_HELD => self.held.push_back(h),
                Some(Prepared::Hold(h)) => pending.push(h.pending),
                None => {}
            }
            if let Some(compact) = compact {
                if let Some(on_flow) = on_flow.as_mut() {
                    on_flow(&compact.to_proto());
                }
                self.history.push(compact);
            }
            outcome.accepted += 1;
        }
        self.apply_pending(&mut pending);
        self.pending = pending;
        self.release_held(self.clock_ns);
        // One huge batch should not pin its buffer for good.
        self.pending.shrink_to(PENDING_KEEP);
        let probe = &mut self.nodes[node as usize];
        probe.rejected += outcome.rejected;
        outcome
    }

    fn note_batch(&mut self, node: u32, batch: &FlowBatch) {
        let probe = &mut self.nodes[node as usize];
        probe.reports = true;
        if probe.state == NodeState::Unknown {
            probe.state = NodeState::Connected;
            probe.since_ns = self.clock_ns;
        }
        // A sequence that goes back is a restarted probe, not a loss.
        if let Some(last) = probe.last_seq
            && batch.seq > last.saturating_add(1)
        {
            probe.add_loss(LOSS_BATCH_GAP, batch.seq - last - 1);
        }
        probe.last_seq = Some(batch.seq);
        for loss in &batch.losses {
            if loss.stage.is_empty() || loss.stage.len() > MAX_STRING_BYTES {
                continue;
            }
            match probe.losses.get_mut(&loss.stage) {
                Some(count) => *count = loss.count,
                None => {
                    probe.losses.insert(loss.stage.clone(), loss.count);
                }
            }
        }
    }

    fn observe_time(&mut self, time_ns: i64) {
        if self.last_advance_ns == 0
            || time_ns <= self.last_advance_ns.saturating_add(FUTURE_TOLERANCE_NS)
        {
            self.clock_ns = self.clock_ns.max(time_ns);
        }
    }

    /// Takes in one valid flow: returns what it adds to the graph and, if
    /// `keep`, the flow compacted for the history.
    fn ingest_flow(
        &mut self,
        flow: &mut Flow,
        batch_node: u32,
        keep: bool,
    ) -> (Option<Prepared>, Option<CompactFlow>) {
        if flow.time_ns <= 0 {
            flow.time_ns = self.clock_ns;
        }
        self.observe_time(flow.time_ns);
        let now = self.clock_ns;
        let flow_node = if flow.node_name.is_empty() {
            Some(batch_node)
        } else {
            self.node_id(&flow.node_name)
        };
        let node_name = match flow_node {
            Some(id) => self.nodes[id as usize].name.clone(),
            None => Arc::new(flow.node_name.clone()),
        };
        let flow_node = flow_node.unwrap_or(batch_node);
        self.policy_namer.fill(&self.metadata, flow);

        let source = self.endpoint(flow.source.as_ref(), &node_name, flow.time_ns);
        let destination = self.endpoint(flow.destination.as_ref(), &node_name, flow.time_ns);
        let pending = self.prepare(flow, flow_node, source, destination);

        let compact = keep.then(|| {
            let template = |slot: u32| self.resolved[slot as usize].template.clone();
            let (source, destination) = (template(source.1), template(destination.1));
            CompactFlow::new(flow, source, destination, node_name, &mut self.interner)
        });
        self.flows_total += 1;
        self.flow_counts.count(flow);
        let probe = &mut self.nodes[batch_node as usize];
        probe.flows_total += 1;
        let one = RateBucket {
            flows: 1,
            ..RateBucket::default()
        };
        probe.rate.add(flow.time_ns, now, &one);
        (pending, compact)
    }

    /// Resolves one side of a flow (see the module doc for the two paths):
    /// its address and its slot in `self.resolved`. Metadata is looked up as
    /// of `time_ns`, the flow's time.
    fn endpoint(
        &mut self,
        endpoint: Option<&Endpoint>,
        flow_node: &str,
        time_ns: i64,
    ) -> (IpKey, u32) {
        let ip = endpoint
            .and_then(|e| IpKey::from_bytes(&e.ip))
            .unwrap_or_default();
        if endpoint.is_none_or(is_bare) {
            if let Some(&slot) = self.by_ip.get(&ip) {
                return (ip, slot);
            }
            // An address that changed hands lately has an owner per time, so
            // it is not cached by address: the path below caches per owner.
            let addr = ip.to_ip();
            if !addr.is_some_and(|addr| self.metadata.changed_hands(&addr)) {
                let template = addr
                    .and_then(|addr| self.metadata.lookup(&addr))
                    .map(|info| template_from_info(info));
                let template = template.and_then(|t| self.interner.endpoint(t));
                let slot = self.resolve(template, ip);
                self.by_ip.insert(ip, slot);
                return (ip, slot);
            }
        }

        let mut template = endpoint.map(strip).unwrap_or_default();
        if let Some(info) = ip
            .to_ip()
            .and_then(|addr| self.metadata.lookup_at(&addr, time_ns))
        {
            fill_empty(&mut template, template_from_info(info));
        }
        // A "host" endpoint without a node is the observing node's own stack.
        if template.reserved == "host" && template.node_name.is_empty() {
            template.node_name = flow_node.to_string();
        }
        let template = self.interner.endpoint(template);
        let key = (template.as_ref().map_or(0, |t| Arc::as_ptr(t) as usize), ip);
        if let Some(&slot) = self.by_template.get(&key) {
            return (ip, slot);
        }
        // The slot holds the template, so its address is not reused while the
        // key exists.
        let slot = self.resolve(template, ip);
        self.by_template.insert(key, slot);
        (ip, slot)
    }

    /// Resolves an endpoint into a new slot of `self.resolved`.
    fn resolve(&mut self, template: Option<Arc<Endpoint>>, ip: IpKey) -> u32 {
        let now = self.clock_ns;
        let (workload_node, pod_node, group) = graph_nodes(template.as_deref(), &ip);
        let group: Arc<str> = Arc::from(group);
        let workload = self
            .workload
            .ensure_node(workload_node, group.clone(), now)
            .unwrap_or_else(NodeIx::end);
        let pod = match self.pod.as_mut() {
            Some(graph) => graph
                .ensure_node(pod_node, group, now)
                .unwrap_or_else(NodeIx::end),
            None => NodeIx::end(),
        };
        let meta_node = match template.as_deref() {
            Some(t) if !t.node_name.is_empty() => self.node_id(&t.node_name),
            _ => None,
        };
        let service = match template.as_deref() {
            Some(t) if !t.service.is_empty() => Some(self.interner.str(&t.service)),
            _ => None,
        };
        self.resolved.push(Resolved {
            template,
            workload,
            pod,
            meta_node,
            service,
        });
        (self.resolved.len() - 1) as u32
    }

    fn covered(&self, ip: &IpKey, resolved: &Resolved) -> bool {
        self.covered_by(ip, resolved.meta_node)
    }

    /// Counts held records whose time has come (all of them with
    /// `i64::MAX`): a record whose client has meanwhile turned out to be
    /// covered is the server-side copy of a flow the client's node reported,
    /// and only adds to `seen_at_destination`.
    pub fn release_held(&mut self, now_ns: i64) {
        if self.held.front().is_none_or(|h| h.release_at_ns > now_ns) {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        while let Some(held) = self.held.front() {
            if held.release_at_ns > now_ns {
                break;
            }
            let Some(mut held) = self.held.pop_front() else {
                break;
            };
            if self.covered_by(&held.client_ip, held.client_meta_node) {
                held.pending.decision = Decision::SeenAtDestination;
            }
            pending.push(held.pending);
        }
        self.apply_pending(&mut pending);
        self.pending = pending;
    }

    /// Records waiting to be counted (see [`HOLD_NS`]).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    fn covered_by(&self, ip: &IpKey, meta_node: Option<u32>) -> bool {
        let reporting = |id: u32| {
            self.nodes
                .get(id as usize)
                .is_some_and(ProbeNode::reporting)
        };
        self.local_ips.node_of(ip).is_some_and(reporting) || meta_node.is_some_and(reporting)
    }

    /// Dedup of one flow and what it will add to its edges (`None`: nothing).
    fn prepare(
        &mut self,
        flow: &Flow,
        flow_node: u32,
        source: (IpKey, u32),
        destination: (IpKey, u32),
    ) -> Option<Prepared> {
        let source = (source.0, &self.resolved[source.1 as usize]);
        let destination = (destination.0, &self.resolved[destination.1 as usize]);
        let point =
            ObservationPoint::try_from(flow.observation_point).unwrap_or(ObservationPoint::Unknown);
        match point {
            ObservationPoint::FromEndpoint => {
                self.local_ips.learn(source.0, flow_node);
            }
            ObservationPoint::ToEndpoint => {
                self.local_ips.learn(destination.0, flow_node);
            }
            _ => {}
        }
        let reply = flow.is_reply;
        let (client, server) = if reply {
            (destination, source)
        } else {
            (source, destination)
        };
        let endpoint_port = |e: &Option<Endpoint>| e.as_ref().map_or(0, |e| e.port as u16);
        let (client_port, server_port) = if reply {
            (
                endpoint_port(&flow.destination),
                endpoint_port(&flow.source),
            )
        } else {
            (
                endpoint_port(&flow.source),
                endpoint_port(&flow.destination),
            )
        };
        let verdict = Verdict::try_from(flow.verdict).unwrap_or(Verdict::Unknown);
        let dropped = verdict == Verdict::Dropped;
        let decision = decide(
            point,
            reply,
            dropped,
            self.covered(&client.0, client.1),
            self.covered(&server.0, server.1),
        );
        if decision == Decision::Skip {
            return None;
        }

        let l4 = flow.l4.unwrap_or_default();
        let tcp = l4.protocol == Protocol::Tcp as i32;
        let flags = l4.tcp_flags;
        let has = |flag: TcpFlag| flags & flag as u32 != 0;
        let drop = dropped.then(|| {
            let reason = if flow.drop_reason.is_empty() {
                "UNKNOWN"
            } else {
                &flow.drop_reason
            };
            let mut h = FxHasher::default();
            (client.0, server.0, client_port, server_port, l4.protocol).hash(&mut h);
            DropFact {
                reason: self.interner.str(reason),
                tuple_hash: h.finish(),
            }
        });
        let service = server.1.service.clone();
        let hold = decision == Decision::CountSeenAtDestination;
        let (client_ip, client_meta_node) = (client.0, client.1.meta_node);
        let facts = FlowFacts {
            time_ns: flow.time_ns,
            verdict,
            packets: flow.packets,
            bytes: flow.bytes,
            connection: tcp && !reply && has(TcpFlag::Syn) && !has(TcpFlag::Ack) && !dropped,
            refused: tcp && reply && has(TcpFlag::Rst),
            l7: l7_fact(flow.l7.as_ref()),
            handshake_ns: l4.handshake_ns,
            drop,
            service,
        };
        let pending = Pending {
            facts,
            decision,
            node: flow_node,
            port: server_port,
            protocol: l4.protocol,
            ends: [
                (client.1.workload, server.1.workload),
                (client.1.pod, server.1.pod),
            ],
            edges: [None, None],
        };
        Some(if hold {
            Prepared::Hold(Held {
                pending,
                client_ip,
                client_meta_node,
                release_at_ns: self.clock_ns.saturating_add(HOLD_NS),
            })
        } else {
            Prepared::Now(pending)
        })
    }

    /// Counts prepared records on their edges, in two passes: first every
    /// edge is found and the memory the counting will touch is read, then
    /// the counting. With tens of thousands of edges each record's edge is
    /// a cache miss; in the first pass the misses of different records do
    /// not depend on each other, so the CPU overlaps them instead of waiting
    /// for each in turn.
    fn apply_pending(&mut self, pending: &mut Vec<Pending>) {
        for p in pending.iter_mut() {
            let [workload, pod] = p.ends;
            p.edges[0] = self
                .workload
                .edge_index(workload.0, workload.1, p.port, p.protocol);
            if let Some(graph) = self.pod.as_mut() {
                p.edges[1] = graph.edge_index(pod.0, pod.1, p.port, p.protocol);
            }
        }
        let mut warm = 0u64;
        for p in pending.iter() {
            warm = warm.wrapping_add(self.workload.warm(p.edges[0], &p.facts));
            if let Some(graph) = self.pod.as_ref() {
                warm = warm.wrapping_add(graph.warm(p.edges[1], &p.facts));
            }
        }
        std::hint::black_box(warm);

        let now = self.clock_ns;
        for p in pending.iter() {
            let mut full = !apply(&mut self.workload, p.edges[0], p.decision, &p.facts, now);
            if let Some(graph) = self.pod.as_mut() {
                full |= !apply(graph, p.edges[1], p.decision, &p.facts, now);
            }
            if full {
                self.nodes[p.node as usize].add_loss(LOSS_GRAPH_FULL, 1);
            }
        }
        pending.clear();
    }

    /// Keeps a batch's CPU samples (refusing invalid ones, with a reason in
    /// `errors`) and writes the new totals onto the graphs.
    fn ingest_cpu(&mut self, node: u32, samples: &[CpuSample], errors: &mut Vec<String>) {
        if samples.len() > cpu::MAX_SAMPLES_PER_BATCH {
            errors.push(format!(
                "{} cpu samples in one batch (max {}), all refused",
                samples.len(),
                cpu::MAX_SAMPLES_PER_BATCH
            ));
            return;
        }
        for (index, sample) in samples.iter().enumerate() {
            let target = cpu::validate(sample).and_then(|()| {
                self.cpu_target(sample)
                    .ok_or_else(|| "no pod with this UID or address is known".to_string())
            });
            match target {
                Ok(target) => {
                    if !self
                        .cpu
                        .record(node, cpu::sample_key(sample), target, sample)
                    {
                        self.nodes[node as usize].add_loss(LOSS_CPU_TABLE_FULL, 1);
                    }
                }
                Err(reason) if errors.len() < MAX_ERRORS => {
                    errors.push(format!("cpu sample {index}: {reason}"));
                }
                Err(_) => {}
            }
        }
        self.apply_cpu();
    }

    /// The graph nodes a pod's CPU counts on: the pod its UID or an address
    /// names in the metadata, else (no metadata for it) the address's own
    /// pod-zoom node, as its flows show it.
    fn cpu_target(&self, sample: &CpuSample) -> Option<Target> {
        let by_uid = || {
            (!sample.pod_uid.is_empty())
                .then(|| self.metadata.pod_by_uid(&sample.pod_uid))
                .flatten()
        };
        let by_ip = || {
            sample.ips.iter().find_map(|bytes| {
                let ip = skymap_proto::names::ip_from_bytes(bytes)?;
                self.metadata
                    .lookup(&ip)
                    .filter(|info| info.kind == EndpointKind::Pod)
            })
        };
        if let Some(info) = by_uid().or_else(by_ip) {
            let template = template_from_info(info);
            let (workload, pod, _) = graph_nodes(Some(&template), &IpKey::default());
            return Some(Target {
                workload: Some(Arc::from(workload.id)),
                pod: Arc::from(pod.id),
            });
        }
        // An address the metadata gives to a host or service is not a pod.
        let first = sample.ips.first()?;
        let known = skymap_proto::names::ip_from_bytes(first)
            .is_some_and(|ip| self.metadata.lookup(&ip).is_some());
        let ip = IpKey::from_bytes(first).filter(|_| !known)?;
        let (_, pod, _) = graph_nodes(None, &ip);
        Some(Target {
            workload: None,
            pod: Arc::from(pod.id),
        })
    }

    fn apply_cpu(&mut self) {
        if !self.cpu.take_changed() {
            return;
        }
        let (workload, pod) = self.cpu.totals();
        self.workload.set_cpu(&workload);
        if let Some(graph) = self.pod.as_mut() {
            graph.set_cpu(&pod);
        }
    }

    pub fn node_connected(&mut self, node: &str, now_ns: i64) {
        if let Some(id) = self.node_id(node) {
            let probe = &mut self.nodes[id as usize];
            probe.state = NodeState::Connected;
            probe.since_ns = now_ns;
            probe.reports = true;
        }
    }

    /// While a node is away, the server side of its pods' flows counts again.
    pub fn node_disconnected(&mut self, node: &str, now_ns: i64) {
        if let Some(id) = self.node_id(node) {
            let probe = &mut self.nodes[id as usize];
            probe.state = NodeState::Unavailable;
            probe.since_ns = now_ns;
        }
    }

    /// Adds a relay-side loss (e.g. "relay-ingest-queue") for a node.
    pub fn add_loss(&mut self, node: &str, stage: &str, count: u64) {
        if let Some(id) = self.node_id(node) {
            self.nodes[id as usize].add_loss(stage, count);
        }
    }

    /// Advances the clock (the aggregator calls it every tick with the wall
    /// clock). The clock is max(latest flow time, last advance); rates and
    /// expiry read it. Expiry runs here, at most once a second.
    pub fn advance(&mut self, now_ns: i64) {
        self.last_advance_ns = self.last_advance_ns.max(now_ns);
        self.clock_ns = self.clock_ns.max(now_ns);
        self.release_held(self.clock_ns);
        if self.clock_ns - self.last_sweep_ns < SWEEP_EVERY_NS {
            return;
        }
        self.last_sweep_ns = self.clock_ns;
        let before = self.clock_ns.saturating_sub(self.config.edge_expiry_ns);
        let mut removed = self.workload.expire(before);
        if let Some(pod) = self.pod.as_mut() {
            removed += pod.expire(before);
        }
        if removed > 0 {
            // Node indices are reused after removal.
            self.forget_resolutions();
        }
        self.cpu
            .expire(self.clock_ns.saturating_sub(cpu::SAMPLE_TTL_NS));
        self.apply_cpu();
    }

    pub fn now_ns(&self) -> i64 {
        self.clock_ns
    }

    /// The full picture at a zoom level, optionally only nodes in
    /// `namespaces` (with the edges touching them and those edges' other ends).
    pub fn graph_snapshot(&self, zoom: Zoom, namespaces: &[String]) -> GraphUpdate {
        let now = self.clock_ns;
        let full = match zoom {
            Zoom::Workload => self.workload.snapshot(now),
            Zoom::Namespace => self.workload.namespace_snapshot(now, &self.metadata),
            Zoom::Pod => match &self.pod {
                Some(pod) => pod.snapshot(now),
                None => GraphUpdate {
                    time_ns: now,
                    full: true,
                    zoom: Zoom::Pod as i32,
                    ..GraphUpdate::default()
                },
            },
        };
        if namespaces.is_empty() {
            full
        } else {
            filter_update(&full, namespaces)
        }
    }

    /// Changes since the previous call at every zoom level: nodes and edges
    /// touched since, plus (when a 5 s rate bucket boundary has passed) every
    /// edge whose rates moved, plus expired ones in `removed_*`. Clears the
    /// change sets.
    pub fn take_deltas(&mut self) -> Deltas {
        let now = self.clock_ns;
        let bucket = now.div_euclid(BUCKET_NS);
        if let Some(last) = self.last_delta_bucket
            && bucket != last
        {
            // Everything with records in the window read last time moved.
            let since = (last - RATE_BUCKETS as i64 + 1).saturating_mul(BUCKET_NS);
            self.workload.mark_recent(since);
            if let Some(pod) = self.pod.as_mut() {
                pod.mark_recent(since);
            }
        }
        self.last_delta_bucket = Some(bucket);
        let (workload, scope) = self.workload.take_delta(now);
        let namespace = self.workload.namespace_delta(&scope, now, &self.metadata);
        let pod = self.pod.as_mut().map(|g| g.take_delta(now).0);
        Deltas {
            workload,
            namespace,
            pod,
        }
    }

    /// Like [`Engine::take_deltas`] when nobody watches: clears the change
    /// sets without building updates (a full delta of a large graph costs
    /// milliseconds). Watchers that arrive later start from a snapshot.
    pub fn discard_deltas(&mut self) {
        self.last_delta_bucket = Some(self.clock_ns.div_euclid(BUCKET_NS));
        self.workload.clear_delta();
        if let Some(pod) = self.pod.as_mut() {
            pod.clear_delta();
        }
    }

    /// The newest `number` flows passing `keep` (and `since_ns` ..= `until_ns`,
    /// 0 = unbounded), oldest first. `number == 0` means no count limit.
    pub fn flows(
        &self,
        number: usize,
        since_ns: i64,
        until_ns: i64,
        keep: &mut dyn FnMut(&Flow) -> bool,
    ) -> Vec<Flow> {
        let mut found = Vec::new();
        for compact in self.history.iter().rev() {
            let time = compact.time_ns();
            if (since_ns > 0 && time < since_ns) || (until_ns > 0 && time > until_ns) {
                continue;
            }
            let flow = compact.to_proto();
            if keep(&flow) {
                found.push(flow);
                if number > 0 && found.len() >= number {
                    break;
                }
            }
        }
        found.reverse();
        found
    }

    pub fn status(&self) -> StatusResponse {
        let now = self.clock_ns;
        let mut nodes: Vec<&ProbeNode> = self
            .nodes
            .iter()
            .filter(|n| n.reports || n.flows_total > 0 || n.rejected > 0 || !n.losses.is_empty())
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut status = StatusResponse {
            time_ns: now,
            flows_total: self.flows_total,
            history_len: self.history.len() as u64,
            history_capacity: self.history.capacity() as u64,
            rejected: self.rejected_unowned,
            graph_nodes: self.workload.node_count() as u64,
            graph_edges: self.workload.edge_count() as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..StatusResponse::default()
        };
        for node in nodes {
            let losses: Vec<LossCounter> = node
                .losses
                .iter()
                .map(|(stage, count)| LossCounter {
                    node_name: node.name.to_string(),
                    stage: stage.clone(),
                    count: *count,
                })
                .collect();
            let flows_per_s = node.rate.rates(now, RATE_1M_BUCKETS).flows_per_s;
            status.flows_per_s += flows_per_s;
            status.rejected += node.rejected;
            status.losses.extend(losses.iter().cloned());
            status.nodes.push(NodeStatus {
                name: node.name.to_string(),
                state: node.state as i32,
                since_ns: node.since_ns,
                flows_per_s,
                flows_total: node.flows_total,
                losses,
                rejected: node.rejected,
            });
        }
        status
    }

    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The figures `/metrics` shows (see [`crate::metrics`]).
    pub fn metrics(&self) -> RelayMetrics {
        RelayMetrics::collect(&self.status(), &self.flow_counts, self.workload.edges())
    }
}

/// Counts one record on one zoom's edge; false when the graph had no room.
fn apply(
    graph: &mut Graph,
    edge: Option<EdgeIx>,
    decision: Decision,
    facts: &FlowFacts,
    now_ns: i64,
) -> bool {
    let Some(edge) = edge.and_then(|ix| graph.edge_at_mut(ix)) else {
        return false;
    };
    edge.last_seen_ns = edge.last_seen_ns.max(facts.time_ns);
    match decision {
        Decision::Count => edge.stats.add(facts, now_ns),
        Decision::CountSeenAtSource => {
            edge.stats.seen_at_source += 1;
            edge.stats.add(facts, now_ns);
        }
        Decision::CountSeenAtDestination => {
            edge.stats.seen_at_destination += 1;
            edge.stats.add(facts, now_ns);
        }
        Decision::SeenAtDestination => edge.stats.seen_at_destination += 1,
        Decision::Skip => {}
    }
    true
}

fn l7_fact(l7: Option<&Layer7>) -> L7Fact {
    let Some(l7) = l7 else { return L7Fact::None };
    let kind = L7Type::try_from(l7.r#type).unwrap_or(L7Type::Unknown);
    match (kind, &l7.record) {
        (L7Type::Request, Some(Record::Http(_))) => L7Fact::HttpRequest,
        (L7Type::Response, Some(Record::Http(http))) => L7Fact::HttpResponse {
            code: http.code,
            latency_ns: l7.latency_ns,
        },
        (L7Type::Request, Some(Record::Dns(_))) => L7Fact::DnsQuery,
        (L7Type::Response, Some(Record::Dns(dns))) => L7Fact::DnsResponse {
            rcode: dns.rcode,
            latency_ns: l7.latency_ns,
        },
        _ => L7Fact::None,
    }
}

/// Only an address and a port: enrichment can come from metadata alone.
fn is_bare(endpoint: &Endpoint) -> bool {
    endpoint.namespace.is_empty()
        && endpoint.pod_name.is_empty()
        && endpoint.labels.is_empty()
        && endpoint.workload.is_none()
        && endpoint.service.is_empty()
        && endpoint.node_name.is_empty()
        && endpoint.reserved.is_empty()
}

/// The fields metadata gives an endpoint (no address or port).
fn template_from_info(info: &EndpointInfo) -> Endpoint {
    match info.kind {
        EndpointKind::Pod => Endpoint {
            namespace: info.namespace.clone(),
            pod_name: info.name.clone(),
            labels: info.labels.clone(),
            workload: info.workload.as_ref().map(|w| Workload {
                name: w.name.clone(),
                kind: w.kind.clone(),
            }),
            service: info.services.first().cloned().unwrap_or_default(),
            node_name: info.node_name.clone(),
            ..Endpoint::default()
        },
        EndpointKind::Service => Endpoint {
            namespace: info.namespace.clone(),
            service: info.name.clone(),
            ..Endpoint::default()
        },
        EndpointKind::Host => Endpoint {
            node_name: if info.node_name.is_empty() {
                info.name.clone()
            } else {
                info.node_name.clone()
            },
            reserved: "host".to_string(),
            ..Endpoint::default()
        },
    }
}

/// Fills the empty fields of `endpoint` from `from`; set fields stay.
fn fill_empty(endpoint: &mut Endpoint, from: Endpoint) {
    let take = |mine: &mut String, theirs: String| {
        if mine.is_empty() {
            *mine = theirs;
        }
    };
    take(&mut endpoint.namespace, from.namespace);
    take(&mut endpoint.pod_name, from.pod_name);
    take(&mut endpoint.service, from.service);
    take(&mut endpoint.node_name, from.node_name);
    take(&mut endpoint.reserved, from.reserved);
    if endpoint.labels.is_empty() {
        endpoint.labels = from.labels;
    }
    if endpoint.workload.is_none() {
        endpoint.workload = from.workload;
    }
}

/// Characters Kubernetes uses in generated name suffixes.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn is_generated(part: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&part.len()) && part.bytes().all(|b| SUFFIX_ALPHABET.contains(&b))
}

/// A pod's name without a ReplicaSet-style suffix: "web-7d9f8b6c5d-x2x4z" and
/// "web-x2x4z" give "web"; names that do not look generated stay as they are.
pub fn pod_base_name(pod: &str) -> &str {
    let Some((rest, last)) = pod.rsplit_once('-') else {
        return pod;
    };
    if rest.is_empty() || !is_generated(last, 5..=5) {
        return pod;
    }
    match rest.rsplit_once('-') {
        Some((base, hash)) if !base.is_empty() && is_generated(hash, 6..=10) => base,
        _ => rest,
    }
}

/// The workload a pod endpoint belongs to: its workload reference, else a
/// name label, else its name without a generated suffix. (name, kind).
fn workload_of(t: &Endpoint) -> Option<(String, String)> {
    if let Some(w) = &t.workload
        && !w.name.is_empty()
    {
        return Some((w.name.clone(), w.kind.clone()));
    }
    for key in WORKLOAD_NAME_LABELS {
        let value = t.labels.iter().find_map(|label| {
            label
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .filter(|v| !v.is_empty())
        });
        if let Some(value) = value {
            return Some((value.to_string(), String::new()));
        }
    }
    (!t.pod_name.is_empty()).then(|| (pod_base_name(&t.pod_name).to_string(), String::new()))
}

/// The endpoint's node at workload and pod zoom, and its namespace-zoom group.
fn graph_nodes(t: Option<&Endpoint>, ip: &IpKey) -> (GraphNode, GraphNode, String) {
    let world = || GraphNode {
        id: "world".into(),
        kind: NodeKind::World as i32,
        name: "world".into(),
        ..GraphNode::default()
    };
    let Some(t) = t.filter(|t| t.reserved != "world") else {
        let pod = match ip.to_ip() {
            Some(addr) => GraphNode {
                id: format!("world:{addr}"),
                name: addr.to_string(),
                ..world()
            },
            None => world(),
        };
        return (world(), pod, "world".into());
    };
    if t.reserved == "host" {
        let node = GraphNode {
            id: format!("host:{}", t.node_name),
            kind: NodeKind::Host as i32,
            name: t.node_name.clone(),
            node_name: t.node_name.clone(),
            ..GraphNode::default()
        };
        let group = node.id.clone();
        return (node.clone(), node, group);
    }
    let ns = &t.namespace;
    if !ns.is_empty() && t.pod_name.is_empty() && !t.service.is_empty() {
        let node = GraphNode {
            id: format!("service:{ns}/{}", t.service),
            kind: NodeKind::Service as i32,
            namespace: ns.clone(),
            name: t.service.clone(),
            ..GraphNode::default()
        };
        return (node.clone(), node, format!("namespace:{ns}"));
    }
    let Some((name, kind)) = workload_of(t).filter(|_| !ns.is_empty()) else {
        return graph_nodes(None, ip);
    };
    let workload = GraphNode {
        id: format!("workload:{ns}/{name}"),
        kind: NodeKind::Workload as i32,
        namespace: ns.clone(),
        name,
        workload_kind: kind,
        labels: t.labels.clone(),
        node_name: String::new(),
        cpu: None,
    };
    let pod = if t.pod_name.is_empty() {
        workload.clone()
    } else {
        GraphNode {
            id: format!("pod:{ns}/{}", t.pod_name),
            kind: NodeKind::Pod as i32,
            namespace: ns.clone(),
            name: t.pod_name.clone(),
            workload_kind: String::new(),
            labels: t.labels.clone(),
            node_name: t.node_name.clone(),
            cpu: None,
        }
    };
    (workload, pod, format!("namespace:{ns}"))
}

fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("batch has no node name".into());
    }
    check_len("batch node_name", name)
}

fn check_len(field: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_STRING_BYTES {
        return Err(format!(
            "{field} is {} bytes (max {MAX_STRING_BYTES})",
            value.len()
        ));
    }
    Ok(())
}

fn check_enum<T: TryFrom<i32>>(field: &str, value: i32) -> Result<(), String> {
    match T::try_from(value) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("unknown {field} {value}")),
    }
}

fn validate_endpoint(side: &str, e: &Endpoint) -> Result<(), String> {
    if !matches!(e.ip.len(), 0 | 4 | 16) {
        return Err(format!("{side} ip has {} bytes", e.ip.len()));
    }
    if e.port > u32::from(u16::MAX) {
        return Err(format!("{side} port {} is above 65535", e.port));
    }
    let labels = e.labels.iter().map(|l| ("label", l));
    let workload = e
        .workload
        .iter()
        .flat_map(|w| [("workload.name", &w.name), ("workload.kind", &w.kind)]);
    let fields = [
        ("namespace", &e.namespace),
        ("pod_name", &e.pod_name),
        ("service", &e.service),
        ("node_name", &e.node_name),
        ("reserved", &e.reserved),
    ];
    // The field's name is only formatted for a reject, not on every flow.
    for (name, value) in fields.into_iter().chain(labels).chain(workload) {
        if value.len() > MAX_STRING_BYTES {
            return check_len(&format!("{side}.{name}"), value);
        }
    }
    Ok(())
}

/// Why a flow cannot be accepted, if it cannot.
pub fn validate(flow: &Flow) -> Result<(), String> {
    check_len("node_name", &flow.node_name)?;
    check_len("drop_reason", &flow.drop_reason)?;
    check_len("policy_reason", &flow.policy_reason)?;
    check_len("interface", &flow.interface)?;
    check_enum::<Verdict>("verdict", flow.verdict)?;
    check_enum::<ObservationPoint>("observation point", flow.observation_point)?;
    check_enum::<TrafficDirection>("traffic direction", flow.traffic_direction)?;
    if let Some(e) = &flow.source {
        validate_endpoint("source", e)?;
    }
    if let Some(e) = &flow.destination {
        validate_endpoint("destination", e)?;
    }
    if let Some(l4) = &flow.l4 {
        check_enum::<Protocol>("protocol", l4.protocol)?;
    }
    if let Some(l7) = &flow.l7 {
        check_enum::<L7Type>("l7 type", l7.r#type)?;
        match &l7.record {
            Some(Record::Dns(dns)) => {
                check_len("dns.query", &dns.query)?;
                for ip in &dns.ips {
                    check_len("dns ip", ip)?;
                }
            }
            Some(Record::Http(http)) => {
                check_len("http.method", &http.method)?;
                check_len("http.url", &http.url)?;
                check_len("http.protocol", &http.protocol)?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Counts an offline set of flows (a recording) into a fresh engine, grouped
/// in batches by `flow.node_name` ("unknown" when empty).
pub fn aggregate_flows(flows: impl IntoIterator<Item = Flow>, metadata: Arc<Metadata>) -> Engine {
    aggregate_flows_with(EngineConfig::default(), flows, metadata)
}

/// [`aggregate_flows`] with a given configuration.
pub fn aggregate_flows_with(
    config: EngineConfig,
    flows: impl IntoIterator<Item = Flow>,
    metadata: Arc<Metadata>,
) -> Engine {
    const BATCH: usize = 1000;
    let mut engine = Engine::new(config, metadata);
    let mut batch = FlowBatch::default();
    for flow in flows {
        let node = if flow.node_name.is_empty() {
            "unknown"
        } else {
            flow.node_name.as_str()
        };
        if (batch.node_name != node || batch.flows.len() >= BATCH) && !batch.flows.is_empty() {
            engine.ingest_batch(std::mem::take(&mut batch), None);
        }
        if batch.node_name != node {
            batch.node_name = node.to_string();
        }
        batch.flows.push(flow);
    }
    if !batch.flows.is_empty() {
        engine.ingest_batch(batch, None);
    }
    // A recording is complete: nothing more will arrive for held records.
    engine.release_held(i64::MAX);
    engine
}

/// The namespace a graph node id belongs to, if any ("workload:NS/NAME",
/// "pod:NS/NAME", "service:NS/NAME", "namespace:NS").
fn id_namespace(id: &str) -> Option<&str> {
    if let Some(ns) = id.strip_prefix("namespace:") {
        return Some(ns);
    }
    ["workload:", "pod:", "service:"]
        .iter()
        .find_map(|prefix| id.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('/'))
        .map(|(ns, _)| ns)
}

/// An update reduced to `namespaces`: nodes in them, edges with at least
/// one end in them, and those edges' other ends. Removals are kept unless
/// clearly outside (removing an id a client never had is harmless).
pub fn filter_update(update: &GraphUpdate, namespaces: &[String]) -> GraphUpdate {
    let inside = |id: &str| id_namespace(id).is_some_and(|ns| namespaces.iter().any(|n| n == ns));
    let edges: Vec<GraphEdge> = update
        .edges
        .iter()
        .filter(|e| inside(&e.source) || inside(&e.destination))
        .cloned()
        .collect();
    let ends: FxHashSet<&str> = edges
        .iter()
        .flat_map(|e| [e.source.as_str(), e.destination.as_str()])
        .collect();
    let nodes = update
        .nodes
        .iter()
        .filter(|n| namespaces.contains(&n.namespace) || ends.contains(n.id.as_str()))
        .cloned()
        .collect();
    let maybe_inside = |id: &str| id_namespace(id).is_none() || inside(id);
    let removed_edges = update
        .removed_edges
        .iter()
        .filter(|id| {
            let ends = id
                .split_once("->")
                .and_then(|(source, rest)| rest.rsplit_once(':').map(|(dest, _)| (source, dest)));
            match ends {
                Some((source, destination)) => inside(source) || inside(destination),
                None => true,
            }
        })
        .cloned()
        .collect();
    GraphUpdate {
        time_ns: update.time_ns,
        full: update.full,
        zoom: update.zoom,
        nodes,
        edges,
        removed_nodes: update
            .removed_nodes
            .iter()
            .filter(|id| maybe_inside(id))
            .cloned()
            .collect(),
        removed_edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::WorkloadRef;
    use skymap_proto::v1::{Dns, Http, Layer4};

    const SECOND: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * SECOND;

    const FRONTEND_1: [u8; 4] = [10, 0, 0, 1];
    const FRONTEND_2: [u8; 4] = [10, 0, 0, 2];
    const CART: [u8; 4] = [10, 0, 1, 1];
    const DB: [u8; 4] = [10, 0, 2, 1];
    const DNS: [u8; 4] = [10, 0, 3, 1];
    const CART_SVC: [u8; 4] = [10, 96, 0, 10];
    const NODE_A: [u8; 4] = [192, 168, 1, 10];
    const OUTSIDE: [u8; 4] = [1, 2, 3, 4];

    const EDGE_FRONTEND_CART: &str = "workload:shop/frontend->workload:shop/cart:8080/TCP";

    fn pod(
        ns: &str,
        name: &str,
        workload: Option<(&str, &str)>,
        node: &str,
        labels: &[&str],
    ) -> EndpointInfo {
        EndpointInfo {
            kind: EndpointKind::Pod,
            namespace: ns.into(),
            name: name.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            workload: workload.map(|(name, kind)| WorkloadRef {
                name: name.into(),
                kind: kind.into(),
            }),
            node_name: node.into(),
            services: Vec::new(),
        }
    }

    fn metadata() -> Arc<Metadata> {
        let mut md = Metadata::empty();
        let ip = |b: [u8; 4]| std::net::IpAddr::from(b);
        let frontend = Some(("frontend", "Deployment"));
        md.insert(
            ip(FRONTEND_1),
            pod(
                "shop",
                "frontend-7d9f8b6c5d-x2x4z",
                frontend,
                "node-a",
                &["app=frontend", "pod-template-hash=1"],
            ),
        );
        md.insert(
            ip(FRONTEND_2),
            pod(
                "shop",
                "frontend-7d9f8b6c5d-b5b6c",
                frontend,
                "node-a",
                &["app=frontend", "pod-template-hash=2"],
            ),
        );
        let mut cart = pod(
            "shop",
            "cart-5c6b7d8f9-zzq2r",
            Some(("cart", "Deployment")),
            "node-b",
            &["app=cart"],
        );
        cart.services = vec!["cart".into()];
        md.insert(ip(CART), cart);
        md.insert(
            ip(DB),
            pod(
                "data",
                "db-0",
                Some(("db", "StatefulSet")),
                "node-b",
                &["app=db"],
            ),
        );
        md.insert(
            ip(DNS),
            pod(
                "kube-system",
                "coredns-5d78c9869d-abcde",
                None,
                "node-b",
                &["k8s-app=kube-dns"],
            ),
        );
        md.insert(
            ip(CART_SVC),
            EndpointInfo {
                kind: EndpointKind::Service,
                namespace: "shop".into(),
                name: "cart".into(),
                labels: Vec::new(),
                workload: None,
                node_name: String::new(),
                services: Vec::new(),
            },
        );
        md.insert(
            ip(NODE_A),
            EndpointInfo {
                kind: EndpointKind::Host,
                namespace: String::new(),
                name: "node-a".into(),
                labels: Vec::new(),
                workload: None,
                node_name: "node-a".into(),
                services: Vec::new(),
            },
        );
        md.set_namespace("shop".into(), vec!["team=web".into()]);
        Arc::new(md)
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig::default(), metadata())
    }

    /// A TCP request record from `src` to `dst`, seen leaving the client.
    fn tcp(src: [u8; 4], sport: u32, dst: [u8; 4], dport: u32) -> Flow {
        Flow {
            time_ns: T0,
            verdict: Verdict::Forwarded as i32,
            source: Some(Endpoint {
                ip: src.to_vec().into(),
                port: sport,
                ..Endpoint::default()
            }),
            destination: Some(Endpoint {
                ip: dst.to_vec().into(),
                port: dport,
                ..Endpoint::default()
            }),
            l4: Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: TcpFlag::Ack as u32,
                ..Layer4::default()
            }),
            observation_point: ObservationPoint::FromEndpoint as i32,
            packets: 1,
            bytes: 100,
            ..Flow::default()
        }
    }

    /// The reply to `request`, seen entering the client.
    fn reply_to(request: &Flow) -> Flow {
        Flow {
            source: request.destination.clone(),
            destination: request.source.clone(),
            is_reply: true,
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..request.clone()
        }
    }

    fn batch(node: &str, seq: u64, flows: Vec<Flow>) -> FlowBatch {
        FlowBatch {
            node_name: node.into(),
            seq,
            flows,
            ..FlowBatch::default()
        }
    }

    fn edge<'a>(update: &'a GraphUpdate, id: &str) -> &'a GraphEdge {
        match update.edges.iter().find(|e| e.id == id) {
            Some(edge) => edge,
            None => panic!(
                "no edge {id} in {:?}",
                update.edges.iter().map(|e| &e.id).collect::<Vec<_>>()
            ),
        }
    }

    fn edge_ids(update: &GraphUpdate) -> Vec<String> {
        let mut ids: Vec<String> = update.edges.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    }

    fn node<'a>(update: &'a GraphUpdate, id: &str) -> &'a GraphNode {
        match update.nodes.iter().find(|n| n.id == id) {
            Some(node) => node,
            None => panic!(
                "no node {id} in {:?}",
                update.nodes.iter().map(|n| &n.id).collect::<Vec<_>>()
            ),
        }
    }

    fn cpu_sample(
        uid: &str,
        ip: Option<[u8; 4]>,
        cores: f64,
        limit: f64,
        time_ns: i64,
    ) -> CpuSample {
        CpuSample {
            pod_uid: uid.into(),
            ips: ip.map(|ip| ip.to_vec()).into_iter().collect(),
            cores,
            limit_cores: limit,
            throttled: 0.0,
            time_ns,
            interval_ns: SECOND as u64,
        }
    }

    fn cpu_of(update: &GraphUpdate, id: &str) -> (f64, f64, u32) {
        let cpu = node(update, id).cpu.unwrap_or_default();
        (
            (cpu.cores * 1000.0).round() / 1000.0,
            cpu.limit_cores,
            cpu.pods,
        )
    }

    #[test]
    fn cpu_samples_add_up_per_workload_pod_and_namespace_then_expire() {
        let mut md = (*metadata()).clone();
        let frontend = Some(("frontend", "Deployment"));
        let first = pod(
            "shop",
            "frontend-7d9f8b6c5d-x2x4z",
            frontend,
            "node-a",
            &["app=frontend"],
        );
        md.insert_pod_uid("uid-frontend-1".into(), first);
        let mut engine = Engine::new(EngineConfig::default(), Arc::new(md));
        let traffic = vec![
            tcp(FRONTEND_1, 40000, CART, 8080),
            tcp(FRONTEND_2, 40001, CART, 8080),
            tcp(FRONTEND_1, 40002, OUTSIDE, 443),
        ];
        engine.ingest_batch(batch("node-a", 1, traffic), None);
        let mut samples = batch("node-a", 2, Vec::new());
        samples.cpu = vec![
            cpu_sample("uid-frontend-1", None, 0.5, 1.0, T0),
            cpu_sample("", Some(FRONTEND_2), 0.25, 1.0, T0),
            cpu_sample("", Some(CART), 0.1, 0.0, T0),
            cpu_sample("", Some(OUTSIDE), 2.0, 0.0, T0),
            cpu_sample("uid-nobody-knows", None, 1.0, 0.0, T0),
        ];
        let outcome = engine.ingest_batch(samples, None);
        assert_eq!(outcome.errors.len(), 1, "{:?}", outcome.errors);
        assert!(
            outcome.errors[0].starts_with("cpu sample 4: no pod"),
            "{:?}",
            outcome.errors
        );

        let workloads = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(cpu_of(&workloads, "workload:shop/frontend"), (0.75, 2.0, 2));
        assert_eq!(cpu_of(&workloads, "workload:shop/cart"), (0.1, 0.0, 1));
        // An address without metadata is only a pod-zoom node; "world" sums nothing.
        assert_eq!(node(&workloads, "world").cpu, None);
        let pods = engine.graph_snapshot(Zoom::Pod, &[]);
        assert_eq!(
            cpu_of(&pods, "pod:shop/frontend-7d9f8b6c5d-x2x4z"),
            (0.5, 1.0, 1)
        );
        assert_eq!(cpu_of(&pods, "world:1.2.3.4"), (2.0, 0.0, 1));
        let namespaces = engine.graph_snapshot(Zoom::Namespace, &[]);
        // Cart has no limit, so the namespace has none either.
        assert_eq!(cpu_of(&namespaces, "namespace:shop"), (0.85, 0.0, 3));

        // A new sample for one pod: the next delta carries its workload only.
        engine.take_deltas();
        let mut newer = batch("node-a", 3, Vec::new());
        newer.cpu = vec![cpu_sample("uid-frontend-1", None, 0.75, 1.0, T0 + SECOND)];
        engine.ingest_batch(newer, None);
        let delta = engine.take_deltas();
        let ids: Vec<&str> = delta.workload.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["workload:shop/frontend"]);
        assert_eq!(
            cpu_of(&delta.workload, "workload:shop/frontend"),
            (1.0, 2.0, 2)
        );
        assert_eq!(cpu_of(&delta.namespace, "namespace:shop"), (1.1, 0.0, 3));

        // Samples that stop coming no longer count.
        engine.advance(T0 + SECOND + cpu::SAMPLE_TTL_NS + 2 * SECOND);
        let delta = engine.take_deltas();
        assert_eq!(node(&delta.workload, "workload:shop/frontend").cpu, None);
        assert_eq!(node(&delta.workload, "workload:shop/cart").cpu, None);
    }

    #[test]
    fn exact_counts_per_edge() {
        let mut engine = engine();
        let mut syn = tcp(FRONTEND_1, 40000, CART, 8080);
        syn.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: TcpFlag::Syn as u32,
            ..Layer4::default()
        });
        let mut synack = reply_to(&syn);
        synack.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: (TcpFlag::Syn as u32) | (TcpFlag::Ack as u32),
            handshake_ns: 250_000,
            ..Layer4::default()
        });
        let mut data = tcp(FRONTEND_2, 40001, CART, 8080);
        data.packets = 10;
        data.bytes = 5000;
        let mut request = tcp(FRONTEND_1, 40000, CART, 8080);
        request.l7 = Some(Layer7 {
            r#type: L7Type::Request as i32,
            latency_ns: 0,
            record: Some(Record::Http(Http {
                method: "GET".into(),
                url: "/cart".into(),
                code: 0,
                protocol: "HTTP/1.1".into(),
            })),
        });
        let mut response = reply_to(&request);
        response.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 3_000_000,
            record: Some(Record::Http(Http {
                method: "GET".into(),
                url: "/cart".into(),
                code: 503,
                protocol: "HTTP/1.1".into(),
            })),
        });
        let mut error = tcp(FRONTEND_1, 40002, CART, 8080);
        error.verdict = Verdict::Error as i32;
        let mut refused = reply_to(&tcp(FRONTEND_1, 40003, CART, 8080));
        refused.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: (TcpFlag::Rst as u32) | (TcpFlag::Ack as u32),
            ..Layer4::default()
        });
        let mut query = tcp(FRONTEND_1, 5353, DNS, 53);
        query.l4 = Some(Layer4 {
            protocol: Protocol::Udp as i32,
            ..Layer4::default()
        });
        let mut answer = reply_to(&query);
        query.l7 = Some(Layer7 {
            r#type: L7Type::Request as i32,
            latency_ns: 0,
            record: Some(Record::Dns(Dns {
                query: "cart.shop.svc.cluster.local.".into(),
                qtype: 1,
                ..Dns::default()
            })),
        });
        answer.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 400_000,
            record: Some(Record::Dns(Dns {
                query: "cart.shop.svc.cluster.local.".into(),
                qtype: 1,
                rcode: 3,
                ..Dns::default()
            })),
        });

        let flows = vec![
            syn, synack, data, request, response, error, refused, query, answer,
        ];
        let outcome = engine.ingest_batch(batch("node-a", 1, flows), None);
        assert_eq!(
            outcome,
            IngestOutcome {
                accepted: 9,
                ..IngestOutcome::default()
            }
        );

        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(
            edge_ids(&graph),
            vec![
                "workload:shop/frontend->workload:kube-system/kube-dns:53/UDP".to_string(),
                EDGE_FRONTEND_CART.to_string(),
            ]
        );
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        assert_eq!(cart.source, "workload:shop/frontend");
        assert_eq!((cart.port, cart.protocol), (8080, Protocol::Tcp as i32));
        assert_eq!(cart.flows, 7);
        assert_eq!(cart.connections, 1);
        assert_eq!(cart.requests, 1);
        assert_eq!(cart.packets, 16);
        assert_eq!(cart.bytes, 5600);
        assert_eq!(cart.refused, 1);
        // 503 + ERROR verdict + refused.
        assert_eq!(cart.errors, 3);
        assert_eq!(cart.http.map(|h| h.server_error), Some(1));
        assert_eq!(
            cart.latency.map(|l| (l.count, l.min_ns)),
            Some((1, 3_000_000))
        );
        assert_eq!(
            cart.connect_latency.map(|l| (l.count, l.max_ns)),
            Some((1, 250_000))
        );
        let verdicts: Vec<(i32, u64)> =
            cart.verdicts.iter().map(|v| (v.verdict, v.count)).collect();
        assert_eq!(
            verdicts,
            vec![(Verdict::Forwarded as i32, 6), (Verdict::Error as i32, 1)]
        );
        assert_eq!(cart.services, vec!["cart".to_string()]);
        assert_eq!((cart.first_seen_ns, cart.last_seen_ns), (T0, T0));

        let dns = edge(
            &graph,
            "workload:shop/frontend->workload:kube-system/kube-dns:53/UDP",
        );
        assert_eq!((dns.flows, dns.dns_queries, dns.errors), (2, 1, 1));
        assert_eq!(
            dns.dns_rcodes
                .iter()
                .map(|r| (r.name.as_str(), r.count))
                .collect::<Vec<_>>(),
            vec![("NXDOMAIN", 1)]
        );

        let frontend = graph
            .nodes
            .iter()
            .find(|n| n.id == "workload:shop/frontend");
        let frontend = frontend.expect("frontend node");
        assert_eq!(frontend.workload_kind, "Deployment");
        assert_eq!(
            frontend.labels,
            vec!["app=frontend".to_string()],
            "only the shared labels"
        );
    }

    #[test]
    fn replies_count_on_the_client_to_server_edge() {
        let mut engine = engine();
        let reply = reply_to(&tcp(FRONTEND_1, 40000, CART, 8080));
        engine.ingest_batch(batch("node-a", 1, vec![reply]), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(edge_ids(&graph), vec![EDGE_FRONTEND_CART.to_string()]);
        assert_eq!(edge(&graph, EDGE_FRONTEND_CART).flows, 1);
    }

    #[test]
    fn a_flow_seen_at_both_ends_counts_once() {
        let mut engine = engine();
        engine.node_connected("node-a", T0);
        engine.node_connected("node-b", T0);
        let request = tcp(FRONTEND_1, 40000, CART, 8080);
        let at_server = Flow {
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..request.clone()
        };
        engine.ingest_batch(batch("node-a", 1, vec![request.clone()]), None);
        engine.ingest_batch(batch("node-b", 1, vec![at_server]), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        assert_eq!(
            (cart.flows, cart.seen_at_source, cart.seen_at_destination),
            (1, 1, 1)
        );

        // Sent, never received.
        engine.ingest_batch(batch("node-a", 2, vec![request]), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        assert_eq!(
            (cart.flows, cart.seen_at_source, cart.seen_at_destination),
            (2, 2, 1)
        );
        // Both records are in the history all the same.
        assert_eq!(engine.history_len(), 3);
    }

    #[test]
    fn the_server_side_counts_when_the_client_is_not_covered() {
        let mut engine = engine();
        engine.node_connected("node-b", T0);
        // From outside the cluster, and from a pod on a node without a probe.
        let from_world = Flow {
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..tcp(OUTSIDE, 40000, CART, 8080)
        };
        let from_frontend = Flow {
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..tcp(FRONTEND_1, 40000, CART, 8080)
        };
        engine.ingest_batch(
            batch("node-b", 1, vec![from_world, from_frontend.clone()]),
            None,
        );
        // Server-side records wait for the client's side to have its chance.
        assert_eq!(engine.held_len(), 2);
        engine.advance(T0 + HOLD_NS + 1);
        assert_eq!(engine.held_len(), 0);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(edge(&graph, "world->workload:shop/cart:8080/TCP").flows, 1);
        assert_eq!(edge(&graph, EDGE_FRONTEND_CART).flows, 1);

        // Once node-a has shown the frontend pod to be local, its records win.
        let mut learn = tcp(FRONTEND_1, 40001, DB, 5432);
        learn.observation_point = ObservationPoint::FromEndpoint as i32;
        engine.ingest_batch(batch("node-a", 1, vec![learn]), None);
        engine.ingest_batch(batch("node-b", 2, vec![from_frontend.clone()]), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        // Not counted again, but both server-side records were seen there.
        assert_eq!((cart.flows, cart.seen_at_destination), (1, 2));

        // While node-a is away, the server side counts again.
        engine.node_disconnected("node-a", T0 + 1);
        engine.ingest_batch(batch("node-b", 3, vec![from_frontend]), None);
        engine.release_held(i64::MAX);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(edge(&graph, EDGE_FRONTEND_CART).flows, 2);
    }

    #[test]
    fn the_server_side_arriving_first_is_still_counted_once() {
        // The server's node reports before the client's node has said
        // anything (probes connecting in a different order, or batches
        // overtaking each other): the record waits, and the client's report
        // of the same flow wins.
        let mut engine = engine();
        let server_side = Flow {
            observation_point: ObservationPoint::ToEndpoint as i32,
            ..tcp(FRONTEND_1, 40000, CART, 8080)
        };
        let client_side = Flow {
            observation_point: ObservationPoint::FromEndpoint as i32,
            ..tcp(FRONTEND_1, 40000, CART, 8080)
        };
        engine.ingest_batch(batch("node-b", 1, vec![server_side]), None);
        engine.ingest_batch(batch("node-a", 1, vec![client_side]), None);
        engine.advance(T0 + HOLD_NS + 1);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        assert_eq!(
            (cart.flows, cart.seen_at_source, cart.seen_at_destination),
            (1, 1, 1)
        );
    }

    #[test]
    fn drops_by_reason_with_packets_and_distinct_flows() {
        let mut engine = engine();
        let drop = |sport: u32, reason: &str, packets: u64| Flow {
            verdict: Verdict::Dropped as i32,
            drop_reason: reason.into(),
            packets,
            observation_point: ObservationPoint::KernelDrop as i32,
            ..tcp(FRONTEND_1, sport, DB, 5432)
        };
        let mut reply = reply_to(&drop(40000, "POLICY_DENIED", 1));
        reply.observation_point = ObservationPoint::KernelDrop as i32;
        let flows = vec![
            drop(40000, "POLICY_DENIED", 1),
            drop(40000, "POLICY_DENIED", 2),
            reply,
            drop(40001, "POLICY_DENIED", 0),
            drop(40002, "", 5),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let db = edge(&graph, "workload:shop/frontend->workload:data/db:5432/TCP");
        let drops: Vec<(&str, u64, u64)> = db
            .drops
            .iter()
            .map(|d| (d.reason.as_str(), d.packets, d.flows))
            .collect();
        // 1 + 2 + 1 (the reply) + max(0, 1); the reply is the same 5-tuple.
        assert_eq!(drops, vec![("POLICY_DENIED", 5, 2), ("UNKNOWN", 5, 1)]);
        assert_eq!(db.connections, 0);
        assert_eq!(db.rate_1m.map(|r| r.drops_per_s), Some(5.0 / 60.0));
    }

    #[test]
    fn rates_over_the_last_minute_and_five() {
        let mut engine = engine();
        let now = T0 + 4 * SECOND;
        engine.advance(now);
        // 120 flows in the 1-minute window (the current bucket and the 11 before).
        let start = (now / BUCKET_NS - 11) * BUCKET_NS;
        let flows: Vec<Flow> = (0..120)
            .map(|i| Flow {
                time_ns: start + i * SECOND / 2,
                ..tcp(FRONTEND_1, 40000, CART, 8080)
            })
            .collect();
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        let cart = edge(&graph, EDGE_FRONTEND_CART);
        assert_eq!(cart.rate_1m.map(|r| r.flows_per_s), Some(2.0));
        assert_eq!(cart.rate_5m.map(|r| r.flows_per_s), Some(0.4));
        assert_eq!(cart.rate_1m.map(|r| r.bytes_per_s), Some(200.0));
        let status = engine.status();
        assert_eq!(status.nodes[0].flows_per_s, 2.0);
        assert_eq!(status.flows_per_s, 2.0);
    }

    #[test]
    fn deltas_hold_exactly_the_touched_edges_then_nothing() {
        let mut engine = engine();
        let first = vec![
            tcp(FRONTEND_1, 40000, CART, 8080),
            tcp(FRONTEND_1, 40001, DB, 5432),
        ];
        engine.ingest_batch(batch("node-a", 1, first), None);
        let deltas = engine.take_deltas();
        assert_eq!(deltas.workload.edges.len(), 2);
        assert_eq!(deltas.workload.nodes.len(), 3);
        assert!(!deltas.workload.full);

        engine.ingest_batch(
            batch("node-a", 2, vec![tcp(FRONTEND_2, 40000, CART, 8080)]),
            None,
        );
        let deltas = engine.take_deltas();
        assert_eq!(
            edge_ids(&deltas.workload),
            vec![EDGE_FRONTEND_CART.to_string()]
        );
        assert_eq!(deltas.workload.edges[0].flows, 2);
        assert_eq!(
            edge_ids(&deltas.namespace),
            vec!["namespace:shop->namespace:shop:8080/TCP".to_string()]
        );
        let pod = deltas.pod.expect("pod zoom on");
        assert_eq!(
            edge_ids(&pod),
            vec![
                "pod:shop/frontend-7d9f8b6c5d-b5b6c->pod:shop/cart-5c6b7d8f9-zzq2r:8080/TCP"
                    .to_string()
            ]
        );
        let times = [
            deltas.workload.time_ns,
            deltas.namespace.time_ns,
            pod.time_ns,
        ];
        assert_eq!(times, [T0; 3]);

        let deltas = engine.take_deltas();
        assert!(deltas.workload.edges.is_empty() && deltas.workload.nodes.is_empty());
        assert!(deltas.namespace.edges.is_empty());
        assert!(deltas.pod.is_some_and(|p| p.edges.is_empty()));
    }

    #[test]
    fn discarded_deltas_are_not_sent_later() {
        let mut engine = engine();
        engine.ingest_batch(
            batch("node-a", 1, vec![tcp(FRONTEND_1, 1, CART, 8080)]),
            None,
        );
        engine.discard_deltas();
        let deltas = engine.take_deltas();
        assert!(deltas.workload.edges.is_empty() && deltas.workload.nodes.is_empty());
        assert!(deltas.namespace.edges.is_empty());
        engine.ingest_batch(batch("node-a", 2, vec![tcp(FRONTEND_1, 1, DB, 5432)]), None);
        assert_eq!(engine.take_deltas().workload.edges.len(), 1);
    }

    #[test]
    fn a_rate_bucket_boundary_resends_edges_with_recent_flows() {
        let mut engine = engine();
        engine.ingest_batch(
            batch("node-a", 1, vec![tcp(FRONTEND_1, 40000, CART, 8080)]),
            None,
        );
        engine.take_deltas();
        engine.advance(T0 + BUCKET_NS);
        let deltas = engine.take_deltas();
        assert_eq!(
            edge_ids(&deltas.workload),
            vec![EDGE_FRONTEND_CART.to_string()]
        );
        assert_eq!(deltas.namespace.edges.len(), 1);
        // Ten minutes on, the edge has left every window: nothing to resend.
        engine.advance(T0 + 600 * SECOND);
        engine.take_deltas();
        engine.advance(T0 + 605 * SECOND);
        assert!(engine.take_deltas().workload.edges.is_empty());
    }

    #[test]
    fn expiry_removes_idle_edges_and_reports_them() {
        let config = EngineConfig {
            edge_expiry_ns: 60 * SECOND,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, metadata());
        engine.advance(T0);
        engine.ingest_batch(
            batch("node-a", 1, vec![tcp(FRONTEND_1, 40000, CART, 8080)]),
            None,
        );
        let late = Flow {
            time_ns: T0 + 50 * SECOND,
            ..tcp(FRONTEND_1, 40001, DB, 5432)
        };
        engine.ingest_batch(batch("node-a", 2, vec![late]), None);
        engine.take_deltas();
        engine.advance(T0 + 70 * SECOND);
        let deltas = engine.take_deltas();
        assert_eq!(
            deltas.workload.removed_edges,
            vec![EDGE_FRONTEND_CART.to_string()]
        );
        assert_eq!(
            deltas.workload.removed_nodes,
            vec!["workload:shop/cart".to_string()]
        );
        assert_eq!(
            deltas.namespace.removed_edges,
            vec!["namespace:shop->namespace:shop:8080/TCP".to_string()]
        );
        let pod = deltas.pod.expect("pod zoom on");
        assert_eq!(pod.removed_edges.len(), 1);
        assert_eq!(engine.status().graph_edges, 1);
        // Resolution caches were reset: the address resolves to a live node again.
        engine.ingest_batch(
            batch(
                "node-a",
                3,
                vec![Flow {
                    time_ns: T0 + 71 * SECOND,
                    ..tcp(FRONTEND_1, 40000, CART, 8080)
                }],
            ),
            None,
        );
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(edge(&graph, EDGE_FRONTEND_CART).flows, 1);
    }

    #[test]
    fn namespace_zoom_merges_workload_edges() {
        let mut engine = engine();
        let mut to_cart = tcp(FRONTEND_1, 40000, CART, 8080);
        to_cart.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 1_000_000,
            record: Some(Record::Http(Http {
                code: 200,
                ..Http::default()
            })),
        });
        let mut to_service = tcp(FRONTEND_1, 40001, CART_SVC, 8080);
        to_service.l7 = Some(Layer7 {
            r#type: L7Type::Response as i32,
            latency_ns: 3_000_000,
            record: Some(Record::Http(Http {
                code: 200,
                ..Http::default()
            })),
        });
        let flows = vec![
            to_cart.clone(),
            to_cart,
            to_service,
            tcp(FRONTEND_1, 40002, DB, 5432),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);

        let workload = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(
            workload.edges.len(),
            3,
            "the service address is its own node"
        );
        assert!(
            workload
                .nodes
                .iter()
                .any(|n| n.id == "service:shop/cart" && n.kind == NodeKind::Service as i32)
        );

        let graph = engine.graph_snapshot(Zoom::Namespace, &[]);
        assert_eq!(graph.zoom, Zoom::Namespace as i32);
        assert_eq!(
            edge_ids(&graph),
            vec![
                "namespace:shop->namespace:data:5432/TCP".to_string(),
                "namespace:shop->namespace:shop:8080/TCP".to_string(),
            ]
        );
        let shop = edge(&graph, "namespace:shop->namespace:shop:8080/TCP");
        assert_eq!(shop.flows, 3);
        assert_eq!(shop.http.map(|h| h.success), Some(3));
        assert_eq!(
            shop.latency.map(|l| (l.count, l.min_ns, l.max_ns)),
            Some((3, 1_000_000, 3_000_000))
        );
        let node = graph
            .nodes
            .iter()
            .find(|n| n.id == "namespace:shop")
            .expect("shop");
        assert_eq!(
            (node.kind, node.labels.clone()),
            (NodeKind::Namespace as i32, vec!["team=web".to_string()])
        );
        assert_eq!(graph.nodes.len(), 2);
    }

    #[test]
    fn pod_zoom_names_pods_and_outside_addresses() {
        let mut engine = engine();
        let flows = vec![
            tcp(FRONTEND_1, 40000, CART, 8080),
            tcp(FRONTEND_2, 40000, OUTSIDE, 443),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let graph = engine.graph_snapshot(Zoom::Pod, &[]);
        assert_eq!(
            edge_ids(&graph),
            vec![
                "pod:shop/frontend-7d9f8b6c5d-b5b6c->world:1.2.3.4:443/TCP".to_string(),
                "pod:shop/frontend-7d9f8b6c5d-x2x4z->pod:shop/cart-5c6b7d8f9-zzq2r:8080/TCP"
                    .to_string(),
            ]
        );
        let pod = graph
            .nodes
            .iter()
            .find(|n| n.id == "pod:shop/cart-5c6b7d8f9-zzq2r")
            .expect("cart pod");
        assert_eq!(
            (pod.kind, pod.node_name.as_str()),
            (NodeKind::Pod as i32, "node-b")
        );
        let workload = engine.graph_snapshot(Zoom::Workload, &[]);
        assert!(
            workload
                .edges
                .iter()
                .any(|e| e.id == "workload:shop/frontend->world:443/TCP")
        );

        let off = Engine::new(
            EngineConfig {
                pod_graph: false,
                ..EngineConfig::default()
            },
            metadata(),
        );
        assert!(off.graph_snapshot(Zoom::Pod, &[]).edges.is_empty());
    }

    #[test]
    fn hosts_services_and_label_named_workloads() {
        let mut engine = engine();
        let mut from_host = tcp(NODE_A, 40000, FRONTEND_1, 8080);
        from_host.observation_point = ObservationPoint::ToEndpoint as i32;
        let flows = vec![
            from_host,
            tcp(FRONTEND_1, 5353, DNS, 53),
            tcp(FRONTEND_1, 40000, CART_SVC, 80),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(
            edge_ids(&graph),
            vec![
                "host:node-a->workload:shop/frontend:8080/TCP".to_string(),
                "workload:shop/frontend->service:shop/cart:80/TCP".to_string(),
                "workload:shop/frontend->workload:kube-system/kube-dns:53/TCP".to_string(),
            ]
        );
    }

    #[test]
    fn pod_names_lose_generated_suffixes_only() {
        let cases = [
            ("web-7d9f8b6c5d-x2x4z", "web"),
            ("fluent-bit-x2x4z", "fluent-bit"),
            ("my-app-7d9f8b6c5d-abcde", "my-app-7d9f8b6c5d-abcde"),
            ("db-0", "db-0"),
            ("redis", "redis"),
            ("-x2x4z", "-x2x4z"),
            ("api-server", "api-server"),
        ];
        for (pod, want) in cases {
            assert_eq!(pod_base_name(pod), want, "{pod}");
        }
    }

    #[test]
    fn enrichment_fills_only_empty_fields_and_keeps_replayed_ones() {
        let mut engine = engine();
        let mut replayed = tcp(FRONTEND_1, 40000, OUTSIDE, 443);
        replayed.node_name = "node-x".into();
        if let Some(source) = replayed.source.as_mut() {
            source.namespace = "replayed".into();
            source.labels = vec!["app=old".into()];
        }
        if let Some(destination) = replayed.destination.as_mut() {
            destination.reserved = "world".into();
        }
        let plain = tcp(FRONTEND_1, 40000, CART, 8080);
        let mut seen = Vec::new();
        let mut keep = |flow: &Flow| seen.push(flow.clone());
        engine.ingest_batch(batch("node-a", 1, vec![replayed, plain]), Some(&mut keep));
        assert_eq!(seen.len(), 2);

        let source = seen[0].source.clone().unwrap_or_default();
        assert_eq!(source.namespace, "replayed");
        assert_eq!(source.labels, vec!["app=old".to_string()]);
        assert_eq!(
            source.pod_name, "frontend-7d9f8b6c5d-x2x4z",
            "filled from metadata"
        );
        assert_eq!(
            source.workload.map(|w| w.name),
            Some("frontend".to_string())
        );
        assert_eq!(seen[0].node_name, "node-x");

        let destination = seen[1].destination.clone().unwrap_or_default();
        assert_eq!(destination.pod_name, "cart-5c6b7d8f9-zzq2r");
        assert_eq!(destination.service, "cart");
        assert_eq!(destination.node_name, "node-b");
        assert_eq!(
            (destination.ip, destination.port),
            (CART.to_vec().into(), 8080)
        );
        assert_eq!(seen[1].node_name, "node-a", "the batch names the node");

        // The history holds the same enriched flows.
        let history = engine.flows(0, 0, 0, &mut |_| true);
        assert_eq!(history, seen);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert!(
            graph
                .edges
                .iter()
                .any(|e| e.id == "workload:replayed/frontend->world:443/TCP")
        );
    }

    #[test]
    fn flows_are_the_newest_matching_oldest_first() {
        let mut engine = engine();
        let flows: Vec<Flow> = (1..=10)
            .map(|i| Flow {
                time_ns: T0 + i,
                ..tcp(FRONTEND_1, 40000 + i as u32, CART, 8080)
            })
            .collect();
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let times = |flows: Vec<Flow>| flows.iter().map(|f| f.time_ns - T0).collect::<Vec<_>>();
        assert_eq!(times(engine.flows(3, 0, 0, &mut |_| true)), vec![8, 9, 10]);
        assert_eq!(
            times(engine.flows(0, T0 + 4, T0 + 6, &mut |_| true)),
            vec![4, 5, 6]
        );
        let even = &mut |f: &Flow| f.time_ns % 2 == 0;
        assert_eq!(times(engine.flows(2, 0, T0 + 7, even)), vec![4, 6]);
    }

    #[test]
    fn history_evicts_beyond_its_capacity() {
        let config = EngineConfig {
            history_capacity: 5,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, metadata());
        let flows: Vec<Flow> = (1..=8)
            .map(|i| Flow {
                time_ns: T0 + i,
                ..tcp(FRONTEND_1, 1, CART, 8080)
            })
            .collect();
        engine.ingest_batch(batch("node-a", 1, flows), None);
        assert_eq!(engine.history_len(), 5);
        let first = engine
            .flows(0, 0, 0, &mut |_| true)
            .first()
            .map(|f| f.time_ns);
        assert_eq!(first, Some(T0 + 4));
        let status = engine.status();
        assert_eq!(
            (
                status.history_len,
                status.history_capacity,
                status.flows_total
            ),
            (5, 5, 8)
        );
    }

    #[test]
    fn validation_rejects_each_reason_without_panicking() {
        let good = || tcp(FRONTEND_1, 40000, CART, 8080);
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let mut bad = Vec::new();
        let mut f = good();
        if let Some(s) = f.source.as_mut() {
            s.ip = vec![1, 2, 3, 4, 5].into();
        }
        bad.push((f, "flow 0: source ip has 5 bytes"));
        let mut f = good();
        if let Some(d) = f.destination.as_mut() {
            d.port = 70_000;
        }
        bad.push((f, "flow 1: destination port 70000 is above 65535"));
        bad.push((
            Flow {
                verdict: 99,
                ..good()
            },
            "flow 2: unknown verdict 99",
        ));
        let mut f = good();
        f.l4 = Some(Layer4 {
            protocol: 42,
            ..Layer4::default()
        });
        bad.push((f, "flow 3: unknown protocol 42"));
        bad.push((
            Flow {
                observation_point: -1,
                ..good()
            },
            "flow 4: unknown observation point -1",
        ));
        let rest = [
            (
                Flow {
                    traffic_direction: 7,
                    ..good()
                },
                "unknown traffic direction 7",
            ),
            (
                Flow {
                    l7: Some(Layer7 {
                        r#type: 9,
                        ..Layer7::default()
                    }),
                    ..good()
                },
                "unknown l7 type 9",
            ),
            (
                Flow {
                    drop_reason: long.clone(),
                    ..good()
                },
                "drop_reason is 4097 bytes (max 4096)",
            ),
            (
                Flow {
                    source: Some(Endpoint {
                        labels: vec![long.clone()],
                        ..Endpoint::default()
                    }),
                    ..good()
                },
                "source.label is 4097 bytes (max 4096)",
            ),
            (
                Flow {
                    l7: Some(Layer7 {
                        r#type: 1,
                        latency_ns: 0,
                        record: Some(Record::Http(Http {
                            url: long.clone(),
                            ..Http::default()
                        })),
                    }),
                    ..good()
                },
                "http.url is 4097 bytes (max 4096)",
            ),
        ];
        for (flow, reason) in &rest {
            assert_eq!(validate(flow), Err(reason.to_string()));
        }
        let mut engine = engine();
        let mut flows: Vec<Flow> = bad.iter().map(|(f, _)| f.clone()).collect();
        flows.extend(rest.iter().map(|(f, _)| f.clone()));
        flows.push(good());
        let outcome = engine.ingest_batch(batch("node-a", 1, flows), None);
        assert_eq!((outcome.accepted, outcome.rejected), (1, 10));
        let want: Vec<String> = bad.iter().map(|(_, r)| r.to_string()).collect();
        assert_eq!(outcome.errors, want, "the first five reasons");
        assert_eq!(engine.status().rejected, 10);
        assert_eq!(engine.status().nodes[0].rejected, 10);

        let outcome = engine.ingest_batch(batch("", 1, vec![good(), good()]), None);
        assert_eq!(outcome.rejected, 2);
        assert_eq!(outcome.errors, vec!["batch has no node name".to_string()]);
        assert_eq!(engine.status().rejected, 12);
        assert_eq!(engine.history_len(), 1);
    }

    #[test]
    fn losses_probe_counters_replace_relay_counters_add_and_seq_gaps_count() {
        let mut engine = engine();
        let loss = |stage: &str, count: u64| LossCounter {
            node_name: String::new(),
            stage: stage.into(),
            count,
        };
        let mut first = batch("node-a", 1, Vec::new());
        first.losses = vec![loss("kernel-ringbuf", 10), loss("decode", 1)];
        engine.ingest_batch(first, None);
        let mut second = batch("node-a", 2, Vec::new());
        second.losses = vec![loss("kernel-ringbuf", 25)];
        engine.ingest_batch(second, None);
        // Batches 3 and 4 never arrived.
        engine.ingest_batch(batch("node-a", 5, Vec::new()), None);
        // A restarted probe starts over: not a gap.
        engine.ingest_batch(batch("node-a", 1, Vec::new()), None);
        engine.add_loss("node-a", "relay-ingest-queue", 3);
        engine.add_loss("node-a", "relay-ingest-queue", 4);

        let status = engine.status();
        let losses: Vec<(&str, &str, u64)> = status
            .losses
            .iter()
            .map(|l| (l.node_name.as_str(), l.stage.as_str(), l.count))
            .collect();
        assert_eq!(
            losses,
            vec![
                ("node-a", "decode", 1),
                ("node-a", "kernel-ringbuf", 25),
                ("node-a", LOSS_BATCH_GAP, 2),
                ("node-a", "relay-ingest-queue", 7),
            ]
        );
        assert_eq!(status.nodes.len(), 1);
        assert_eq!(status.nodes[0].losses.len(), 4);
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn node_states_in_status() {
        let mut engine = engine();
        engine.node_connected("node-a", T0);
        engine.node_connected("node-b", T0);
        engine.node_disconnected("node-b", T0 + 5);
        engine.ingest_batch(
            batch("node-a", 1, vec![tcp(FRONTEND_1, 1, CART, 8080)]),
            None,
        );
        let status = engine.status();
        let nodes: Vec<(&str, i32, i64, u64)> = status
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.state, n.since_ns, n.flows_total))
            .collect();
        assert_eq!(
            nodes,
            vec![
                ("node-a", NodeState::Connected as i32, T0, 1),
                ("node-b", NodeState::Unavailable as i32, T0 + 5, 0),
            ]
        );
        assert_eq!((status.graph_nodes, status.graph_edges), (2, 1));
    }

    #[test]
    fn a_full_graph_counts_its_losses() {
        let config = EngineConfig {
            max_edges: 1,
            pod_graph: false,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, metadata());
        let flows = vec![
            tcp(FRONTEND_1, 1, CART, 8080),
            tcp(FRONTEND_1, 1, CART, 9090),
            tcp(FRONTEND_1, 1, CART, 8080),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let status = engine.status();
        let full: Vec<u64> = status
            .losses
            .iter()
            .filter(|l| l.stage == LOSS_GRAPH_FULL)
            .map(|l| l.count)
            .collect();
        // max_edges also bounds nodes: cart never got a node, so all three failed.
        assert_eq!(full, vec![3]);
        assert_eq!(engine.history_len(), 3, "the flows are still kept");
    }

    #[test]
    fn time_is_stamped_and_the_clock_follows_flows() {
        let mut engine = engine();
        engine.ingest_batch(
            batch("node-a", 1, vec![tcp(FRONTEND_1, 1, CART, 8080)]),
            None,
        );
        assert_eq!(engine.now_ns(), T0);
        let undated = Flow {
            time_ns: 0,
            ..tcp(FRONTEND_1, 1, CART, 8080)
        };
        engine.ingest_batch(batch("node-a", 2, vec![undated]), None);
        assert_eq!(engine.flows(1, 0, 0, &mut |_| true)[0].time_ns, T0);
        engine.advance(T0 + SECOND);
        assert_eq!(engine.now_ns(), T0 + SECOND);
        // A flow far in the future does not drag the clock along.
        let future = Flow {
            time_ns: T0 + 3600 * SECOND,
            ..tcp(FRONTEND_1, 1, CART, 8080)
        };
        engine.ingest_batch(batch("node-a", 3, vec![future]), None);
        assert_eq!(engine.now_ns(), T0 + SECOND);
    }

    #[test]
    fn namespace_filters_keep_edges_touching_the_namespaces() {
        let mut engine = engine();
        let flows = vec![
            tcp(FRONTEND_1, 1, CART, 8080),
            tcp(FRONTEND_1, 1, DB, 5432),
            tcp(OUTSIDE, 1, DB, 5432),
        ];
        engine.ingest_batch(batch("node-a", 1, flows), None);
        let graph = engine.graph_snapshot(Zoom::Workload, &["data".to_string()]);
        assert_eq!(
            edge_ids(&graph),
            vec![
                "workload:shop/frontend->workload:data/db:5432/TCP".to_string(),
                "world->workload:data/db:5432/TCP".to_string(),
            ]
        );
        let mut nodes: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
        nodes.sort();
        assert_eq!(
            nodes,
            vec!["workload:data/db", "workload:shop/frontend", "world"]
        );

        let removal = GraphUpdate {
            removed_edges: vec![
                "workload:shop/frontend->workload:shop/cart:8080/TCP".into(),
                "world:fd00::1->workload:data/db:5432/TCP".into(),
            ],
            removed_nodes: vec![
                "workload:shop/cart".into(),
                "workload:data/db".into(),
                "world".into(),
            ],
            ..GraphUpdate::default()
        };
        let filtered = filter_update(&removal, &["data".to_string()]);
        assert_eq!(
            filtered.removed_edges,
            vec!["world:fd00::1->workload:data/db:5432/TCP".to_string()]
        );
        assert_eq!(
            filtered.removed_nodes,
            vec!["workload:data/db".to_string(), "world".to_string()]
        );
    }

    #[test]
    fn aggregate_flows_groups_by_node() {
        let flows = vec![
            Flow {
                node_name: "node-a".into(),
                ..tcp(FRONTEND_1, 1, CART, 8080)
            },
            Flow {
                node_name: "node-b".into(),
                ..tcp(FRONTEND_1, 2, CART, 8080)
            },
            tcp(FRONTEND_1, 3, CART, 8080),
        ];
        let engine = aggregate_flows(flows, metadata());
        let status = engine.status();
        let nodes: Vec<(&str, u64)> = status
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.flows_total))
            .collect();
        assert_eq!(nodes, vec![("node-a", 1), ("node-b", 1), ("unknown", 1)]);
        let graph = engine.graph_snapshot(Zoom::Workload, &[]);
        assert_eq!(edge(&graph, EDGE_FRONTEND_CART).flows, 3);
    }
}
