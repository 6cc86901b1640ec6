//! The service graph at one zoom level: nodes (workloads, pods, services,
//! world, hosts), directed client → server edges with their [`EdgeStats`],
//! the changes since the last delta, and expiry of idle parts.
//!
//! The workload and pod zooms are [`Graph`]s the engine updates per flow. The
//! namespace zoom is not stored: every workload node knows the namespace-zoom
//! node it folds into (its `group`), and [`Graph::namespace_snapshot`] /
//! [`Graph::namespace_delta`] merge workload edges with [`EdgeStats::merge`].

use std::sync::Arc;

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use rustc_hash::{FxHashMap, FxHashSet};
use skymap_proto::names::protocol_name;
use skymap_proto::v1::{CpuUsage, GraphEdge, GraphNode, GraphUpdate, NodeKind, Zoom};

use crate::metadata::Metadata;
use crate::stats::{EdgeStats, FlowFacts};

pub type NodeIx = NodeIndex<u32>;
pub type EdgeIx = EdgeIndex<u32>;

/// A node and what the graph needs to keep about it.
#[derive(Debug)]
pub struct NodeData {
    pub node: GraphNode,
    /// The id of the namespace-zoom node this one folds into.
    pub group: Arc<str>,
    /// Last time the engine resolved an endpoint to this node; a node expires
    /// once it has no edges and this is old.
    pub last_seen_ns: i64,
    dirty: bool,
}

/// An edge: client → server on one port and protocol. `repr(C)`: what
/// every record touches comes first (see [`EdgeStats`]).
#[derive(Debug)]
#[repr(C)]
pub struct EdgeData {
    dirty: bool,
    /// Latest record of any kind (counted or only seen), for expiry.
    pub last_seen_ns: i64,
    pub stats: EdgeStats,
    /// "SOURCE->DESTINATION:PORT/PROTOCOL".
    pub id: String,
    pub port: u16,
    pub protocol: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EdgeKey {
    source: NodeIx,
    destination: NodeIx,
    port: u16,
    protocol: i32,
}

/// An edge of the namespace zoom: the groups of a workload edge's ends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub source: Arc<str>,
    pub destination: Arc<str>,
    pub port: u16,
    pub protocol: i32,
}

/// What one delta of a graph touched, in namespace-zoom terms.
#[derive(Debug, Default)]
pub struct DeltaScope {
    edges: FxHashSet<GroupKey>,
    removed_edges: FxHashSet<GroupKey>,
    nodes: FxHashSet<Arc<str>>,
    removed_nodes: FxHashSet<Arc<str>>,
}

/// One zoom level's graph.
#[derive(Debug)]
pub struct Graph {
    zoom: Zoom,
    graph: StableGraph<NodeData, EdgeData>,
    node_ids: FxHashMap<Arc<str>, NodeIx>,
    edge_keys: FxHashMap<EdgeKey, EdgeIx>,
    /// Nodes and edges each; beyond it new ones are not created.
    limit: usize,
    dirty_nodes: Vec<NodeIx>,
    dirty_edges: Vec<EdgeIx>,
    removed_nodes: Vec<(String, Arc<str>)>,
    removed_edges: Vec<(String, GroupKey)>,
}

/// `"SOURCE->DESTINATION:PORT/PROTOCOL"`.
pub fn edge_id(source: &str, destination: &str, port: u16, protocol: i32) -> String {
    format!("{source}->{destination}:{port}/{}", protocol_name(protocol))
}

impl Graph {
    pub fn new(zoom: Zoom, limit: usize) -> Self {
        Self {
            zoom,
            graph: StableGraph::default(),
            node_ids: FxHashMap::default(),
            edge_keys: FxHashMap::default(),
            limit,
            dirty_nodes: Vec::new(),
            dirty_edges: Vec::new(),
            removed_nodes: Vec::new(),
            removed_edges: Vec::new(),
        }
    }

    pub fn zoom(&self) -> Zoom {
        self.zoom
    }

    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    pub fn node(&self, ix: NodeIx) -> Option<&NodeData> {
        self.graph.node_weight(ix)
    }

    pub fn edge(&self, ix: EdgeIx) -> Option<&EdgeData> {
        self.graph.edge_weight(ix)
    }

    /// Every edge with its source and destination nodes.
    pub fn edges(&self) -> impl Iterator<Item = (&NodeData, &NodeData, &EdgeData)> {
        self.graph.edge_indices().filter_map(|ix| {
            let (source, destination) = self.graph.edge_endpoints(ix)?;
            Some((
                self.graph.node_weight(source)?,
                self.graph.node_weight(destination)?,
                self.graph.edge_weight(ix)?,
            ))
        })
    }

    pub fn find_node(&self, id: &str) -> Option<NodeIx> {
        self.node_ids.get(id).copied()
    }

    /// The node with `node.id`, created if new (unless the graph is full:
    /// then `None`). For an existing node, only the labels shared with
    /// `node.labels` are kept, so a workload shows what all its pods have.
    pub fn ensure_node(&mut self, node: GraphNode, group: Arc<str>, now_ns: i64) -> Option<NodeIx> {
        if let Some(&ix) = self.node_ids.get(node.id.as_str()) {
            let data = self.graph.node_weight_mut(ix)?;
            data.last_seen_ns = data.last_seen_ns.max(now_ns);
            if data.node.labels != node.labels {
                data.node.labels.retain(|label| node.labels.contains(label));
                mark(&mut data.dirty, &mut self.dirty_nodes, ix);
            }
            return Some(ix);
        }
        if self.graph.node_count() >= self.limit {
            return None;
        }
        let id: Arc<str> = Arc::from(node.id.as_str());
        let ix = self.graph.add_node(NodeData {
            node,
            group,
            last_seen_ns: now_ns,
            dirty: true,
        });
        self.node_ids.insert(id, ix);
        self.dirty_nodes.push(ix);
        Some(ix)
    }

    /// The edge source → destination on `port`/`protocol`, created if new;
    /// `None` when the graph is full (or an end is not a node of this graph).
    pub fn edge_index(
        &mut self,
        source: NodeIx,
        destination: NodeIx,
        port: u16,
        protocol: i32,
    ) -> Option<EdgeIx> {
        let key = EdgeKey {
            source,
            destination,
            port,
            protocol,
        };
        match self.edge_keys.get(&key) {
            Some(&ix) => Some(ix),
            None => self.add_edge(key),
        }
    }

    /// An edge to count on; marks it changed for the next delta.
    pub fn edge_at_mut(&mut self, ix: EdgeIx) -> Option<&mut EdgeData> {
        let data = self.graph.edge_weight_mut(ix)?;
        mark(&mut data.dirty, &mut self.dirty_edges, ix);
        Some(data)
    }

    /// [`Graph::edge_index`] and [`Graph::edge_at_mut`] in one.
    pub fn edge_mut(
        &mut self,
        source: NodeIx,
        destination: NodeIx,
        port: u16,
        protocol: i32,
    ) -> Option<&mut EdgeData> {
        let ix = self.edge_index(source, destination, port, protocol)?;
        self.edge_at_mut(ix)
    }

    /// Reads what counting `facts` on edge `ix` will touch (see
    /// `Engine::apply_pending`).
    pub fn warm(&self, ix: Option<EdgeIx>, facts: &FlowFacts) -> u64 {
        ix.and_then(|ix| self.graph.edge_weight(ix))
            .map_or(0, |e| (e.dirty as u64) ^ e.stats.warm(facts))
    }

    fn add_edge(&mut self, key: EdgeKey) -> Option<EdgeIx> {
        if self.graph.edge_count() >= self.limit {
            return None;
        }
        let source = &self.graph.node_weight(key.source)?.node.id;
        let destination = &self.graph.node_weight(key.destination)?.node.id;
        let id = edge_id(source, destination, key.port, key.protocol);
        let ix = self.graph.add_edge(
            key.source,
            key.destination,
            EdgeData {
                id,
                port: key.port,
                protocol: key.protocol,
                stats: EdgeStats::default(),
                last_seen_ns: i64::MIN,
                dirty: false,
            },
        );
        self.edge_keys.insert(key, ix);
        Some(ix)
    }

    fn group_key(&self, ix: EdgeIx) -> Option<GroupKey> {
        let (source, destination) = self.graph.edge_endpoints(ix)?;
        let edge = self.graph.edge_weight(ix)?;
        Some(GroupKey {
            source: self.graph.node_weight(source)?.group.clone(),
            destination: self.graph.node_weight(destination)?.group.clone(),
            port: edge.port,
            protocol: edge.protocol,
        })
    }

    /// Removes edges with no record since `before_ns`, then nodes left
    /// without edges and not seen since then. Returns how many nodes went
    /// (node indices are reused, so callers caching them must forget them).
    /// Sets every node's CPU to its total in `totals` (none when absent);
    /// nodes whose figure changed go into the next delta.
    pub fn set_cpu(&mut self, totals: &FxHashMap<Arc<str>, CpuUsage>) {
        for (id, &ix) in &self.node_ids {
            let Some(data) = self.graph.node_weight_mut(ix) else {
                continue;
            };
            let cpu = totals.get(id);
            if data.node.cpu.as_ref() != cpu {
                data.node.cpu = cpu.copied();
                mark(&mut data.dirty, &mut self.dirty_nodes, ix);
            }
        }
    }

    pub fn expire(&mut self, before_ns: i64) -> usize {
        let idle: Vec<EdgeIx> = self
            .graph
            .edge_indices()
            .filter(|ix| {
                self.graph
                    .edge_weight(*ix)
                    .is_some_and(|e| e.last_seen_ns < before_ns)
            })
            .collect();
        for ix in idle {
            let group = self.group_key(ix);
            let Some((source, destination)) = self.graph.edge_endpoints(ix) else {
                continue;
            };
            if let (Some(edge), Some(group)) = (self.graph.remove_edge(ix), group) {
                self.edge_keys.remove(&EdgeKey {
                    source,
                    destination,
                    port: edge.port,
                    protocol: edge.protocol,
                });
                self.removed_edges.push((edge.id, group));
            }
        }
        let lonely: Vec<NodeIx> = self
            .graph
            .node_indices()
            .filter(|ix| {
                self.graph
                    .node_weight(*ix)
                    .is_some_and(|n| n.last_seen_ns < before_ns)
                    && self
                        .graph
                        .edges_directed(*ix, Direction::Outgoing)
                        .next()
                        .is_none()
                    && self
                        .graph
                        .edges_directed(*ix, Direction::Incoming)
                        .next()
                        .is_none()
            })
            .collect();
        for ix in &lonely {
            if let Some(node) = self.graph.remove_node(*ix) {
                self.node_ids.remove(node.node.id.as_str());
                self.removed_nodes.push((node.node.id, node.group));
            }
        }
        lonely.len()
    }

    /// Marks every edge with counted records since `since_ns` as changed: when
    /// the rate window slides, their rates move.
    pub fn mark_recent(&mut self, since_ns: i64) {
        for ix in self.graph.edge_indices().collect::<Vec<_>>() {
            if let Some(edge) = self.graph.edge_weight_mut(ix)
                && edge.stats.flows > 0
                && edge.stats.last_seen_ns >= since_ns
            {
                mark(&mut edge.dirty, &mut self.dirty_edges, ix);
            }
        }
    }

    fn proto_edge(&self, ix: EdgeIx, now_ns: i64) -> Option<GraphEdge> {
        let (source, destination) = self.graph.edge_endpoints(ix)?;
        let edge = self.graph.edge_weight(ix)?;
        Some(GraphEdge {
            id: edge.id.clone(),
            source: self.graph.node_weight(source)?.node.id.clone(),
            destination: self.graph.node_weight(destination)?.node.id.clone(),
            port: u32::from(edge.port),
            protocol: edge.protocol,
            ..edge.stats.to_proto(now_ns)
        })
    }

    /// The whole graph.
    pub fn snapshot(&self, now_ns: i64) -> GraphUpdate {
        GraphUpdate {
            time_ns: now_ns,
            full: true,
            zoom: self.zoom as i32,
            nodes: self.graph.node_weights().map(|n| n.node.clone()).collect(),
            edges: self
                .graph
                .edge_indices()
                .filter_map(|ix| self.proto_edge(ix, now_ns))
                .collect(),
            removed_nodes: Vec::new(),
            removed_edges: Vec::new(),
        }
    }

    /// What changed since the last call, and its scope in namespace-zoom
    /// terms; clears the change sets.
    pub fn take_delta(&mut self, now_ns: i64) -> (GraphUpdate, DeltaScope) {
        let mut scope = DeltaScope::default();
        let mut update = GraphUpdate {
            time_ns: now_ns,
            full: false,
            zoom: self.zoom as i32,
            ..GraphUpdate::default()
        };
        for ix in std::mem::take(&mut self.dirty_nodes) {
            if let Some(node) = self.graph.node_weight_mut(ix)
                && node.dirty
            {
                node.dirty = false;
                scope.nodes.insert(node.group.clone());
                update.nodes.push(node.node.clone());
            }
        }
        for ix in std::mem::take(&mut self.dirty_edges) {
            let Some(edge) = self.graph.edge_weight_mut(ix) else {
                continue;
            };
            if !edge.dirty {
                continue;
            }
            edge.dirty = false;
            if let Some(group) = self.group_key(ix) {
                scope.edges.insert(group);
            }
            if let Some(edge) = self.proto_edge(ix, now_ns) {
                update.edges.push(edge);
            }
        }
        // An id removed and created again in the same period is not removed.
        let current_nodes: FxHashSet<&str> = update.nodes.iter().map(|n| n.id.as_str()).collect();
        for (id, group) in std::mem::take(&mut self.removed_nodes) {
            if !current_nodes.contains(id.as_str()) && !self.node_ids.contains_key(id.as_str()) {
                update.removed_nodes.push(id);
            }
            scope.removed_nodes.insert(group);
        }
        let current_edges: FxHashSet<&str> = update.edges.iter().map(|e| e.id.as_str()).collect();
        let mut removed_edges = Vec::new();
        for (id, group) in std::mem::take(&mut self.removed_edges) {
            if !current_edges.contains(id.as_str()) {
                removed_edges.push(id);
            }
            scope.removed_edges.insert(group);
        }
        update.removed_edges = removed_edges;
        (update, scope)
    }

    /// Forgets the changes since the last delta without building one.
    pub fn clear_delta(&mut self) {
        for ix in std::mem::take(&mut self.dirty_nodes) {
            if let Some(node) = self.graph.node_weight_mut(ix) {
                node.dirty = false;
            }
        }
        for ix in std::mem::take(&mut self.dirty_edges) {
            if let Some(edge) = self.graph.edge_weight_mut(ix) {
                edge.dirty = false;
            }
        }
        self.removed_nodes.clear();
        self.removed_edges.clear();
    }

    /// Workload edges merged by group (only the groups in `only`, if given).
    fn merged_groups(&self, only: Option<&FxHashSet<GroupKey>>) -> FxHashMap<GroupKey, EdgeStats> {
        let mut merged: FxHashMap<GroupKey, EdgeStats> = FxHashMap::default();
        for ix in self.graph.edge_indices() {
            let (Some(key), Some(edge)) = (self.group_key(ix), self.graph.edge_weight(ix)) else {
                continue;
            };
            if only.is_some_and(|only| !only.contains(&key)) {
                continue;
            }
            merged.entry(key).or_default().merge(&edge.stats);
        }
        merged
    }

    /// The namespace-zoom node of `group`, built from one of its members.
    fn group_node(group: &str, member: &GraphNode, metadata: &Metadata) -> GraphNode {
        match group.strip_prefix("namespace:") {
            Some(namespace) => GraphNode {
                id: group.to_string(),
                kind: NodeKind::Namespace as i32,
                namespace: namespace.to_string(),
                name: namespace.to_string(),
                labels: metadata
                    .namespace_labels(namespace)
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
                ..GraphNode::default()
            },
            None => member.clone(),
        }
    }

    fn group_nodes(
        &self,
        only: Option<&FxHashSet<Arc<str>>>,
        metadata: &Metadata,
    ) -> Vec<GraphNode> {
        // A group's CPU is the sum of its members'.
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        let mut nodes: Vec<GraphNode> = Vec::new();
        for data in self.graph.node_weights() {
            if only.is_some_and(|only| !only.contains(&data.group)) {
                continue;
            }
            let at = *index.entry(&data.group).or_insert_with(|| {
                let mut group = Self::group_node(&data.group, &data.node, metadata);
                group.cpu = None;
                nodes.push(group);
                nodes.len() - 1
            });
            if let Some(cpu) = &data.node.cpu {
                crate::cpu::add(nodes[at].cpu.get_or_insert_default(), cpu);
            }
        }
        nodes
    }

    fn group_edges(merged: FxHashMap<GroupKey, EdgeStats>, now_ns: i64) -> Vec<GraphEdge> {
        merged
            .into_iter()
            .map(|(key, stats)| GraphEdge {
                id: edge_id(&key.source, &key.destination, key.port, key.protocol),
                source: key.source.to_string(),
                destination: key.destination.to_string(),
                port: u32::from(key.port),
                protocol: key.protocol,
                ..stats.to_proto(now_ns)
            })
            .collect()
    }

    /// The namespace zoom of this (workload) graph, in full.
    pub fn namespace_snapshot(&self, now_ns: i64, metadata: &Metadata) -> GraphUpdate {
        GraphUpdate {
            time_ns: now_ns,
            full: true,
            zoom: Zoom::Namespace as i32,
            nodes: self.group_nodes(None, metadata),
            edges: Self::group_edges(self.merged_groups(None), now_ns),
            removed_nodes: Vec::new(),
            removed_edges: Vec::new(),
        }
    }

    /// The namespace-zoom changes for a delta of this (workload) graph.
    pub fn namespace_delta(
        &self,
        scope: &DeltaScope,
        now_ns: i64,
        metadata: &Metadata,
    ) -> GraphUpdate {
        let mut update = GraphUpdate {
            time_ns: now_ns,
            full: false,
            zoom: Zoom::Namespace as i32,
            ..GraphUpdate::default()
        };
        if !scope.nodes.is_empty() {
            update.nodes = self.group_nodes(Some(&scope.nodes), metadata);
        }
        if !scope.removed_nodes.is_empty() {
            let alive: FxHashSet<&str> = self.graph.node_weights().map(|n| &*n.group).collect();
            update.removed_nodes = scope
                .removed_nodes
                .iter()
                .filter(|group| !alive.contains(&***group))
                .map(|group| group.to_string())
                .collect();
        }
        let mut wanted: FxHashSet<GroupKey> = scope.edges.clone();
        wanted.extend(scope.removed_edges.iter().cloned());
        if wanted.is_empty() {
            return update;
        }
        let merged = self.merged_groups(Some(&wanted));
        update.removed_edges = scope
            .removed_edges
            .iter()
            .filter(|key| !merged.contains_key(*key))
            .map(|key| edge_id(&key.source, &key.destination, key.port, key.protocol))
            .collect();
        // Edges that only lost a member changed too; those in `merged` are sent.
        update.edges = Self::group_edges(merged, now_ns);
        update
    }
}

fn mark<T: Copy>(dirty: &mut bool, list: &mut Vec<T>, ix: T) {
    if !*dirty {
        *dirty = true;
        list.push(ix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::L7Fact;
    use skymap_proto::v1::Verdict;

    fn workload(ns: &str, name: &str) -> GraphNode {
        GraphNode {
            id: format!("workload:{ns}/{name}"),
            kind: NodeKind::Workload as i32,
            namespace: ns.into(),
            name: name.into(),
            ..GraphNode::default()
        }
    }

    fn facts(time_ns: i64) -> FlowFacts {
        FlowFacts {
            time_ns,
            verdict: Verdict::Forwarded,
            packets: 1,
            bytes: 10,
            connection: false,
            refused: false,
            l7: L7Fact::None,
            handshake_ns: 0,
            drop: None,
            service: None,
        }
    }

    fn count(graph: &mut Graph, a: NodeIx, b: NodeIx, port: u16, t: i64) {
        let edge = graph.edge_mut(a, b, port, 1).expect("room");
        edge.stats.add(&facts(t), t);
        edge.last_seen_ns = edge.last_seen_ns.max(t);
    }

    fn group(ns: &str) -> Arc<str> {
        Arc::from(format!("namespace:{ns}"))
    }

    #[test]
    fn labels_are_those_all_pods_share() {
        let mut graph = Graph::new(Zoom::Workload, 10);
        let mut node = workload("a", "web");
        node.labels = vec!["app=web".into(), "pod-template-hash=1".into()];
        let ix = graph.ensure_node(node.clone(), group("a"), 1);
        node.labels = vec!["app=web".into(), "pod-template-hash=2".into()];
        assert_eq!(graph.ensure_node(node, group("a"), 2), ix);
        let labels = ix
            .and_then(|ix| graph.node(ix))
            .map(|n| n.node.labels.clone());
        assert_eq!(labels, Some(vec!["app=web".to_string()]));
    }

    #[test]
    fn deltas_hold_exactly_the_touched_edges_then_nothing() {
        let mut graph = Graph::new(Zoom::Workload, 10);
        let a = graph
            .ensure_node(workload("a", "web"), group("a"), 1)
            .expect("room");
        let b = graph
            .ensure_node(workload("b", "api"), group("b"), 1)
            .expect("room");
        let c = graph
            .ensure_node(workload("b", "db"), group("b"), 1)
            .expect("room");
        count(&mut graph, a, b, 80, 10);
        count(&mut graph, b, c, 5432, 10);
        let (first, _) = graph.take_delta(10);
        assert_eq!((first.nodes.len(), first.edges.len()), (3, 2));
        assert!(!first.full);

        count(&mut graph, a, b, 80, 20);
        count(&mut graph, a, b, 80, 21);
        let (second, scope) = graph.take_delta(21);
        assert!(second.nodes.is_empty());
        let ids: Vec<&str> = second.edges.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["workload:a/web->workload:b/api:80/TCP"]);
        assert_eq!(second.edges[0].flows, 3);
        assert_eq!(scope.edges.len(), 1);

        let (third, _) = graph.take_delta(22);
        assert!(third.nodes.is_empty() && third.edges.is_empty());
    }

    #[test]
    fn expiry_removes_idle_edges_and_lonely_nodes() {
        let mut graph = Graph::new(Zoom::Workload, 10);
        let a = graph
            .ensure_node(workload("a", "web"), group("a"), 1)
            .expect("room");
        let b = graph
            .ensure_node(workload("b", "api"), group("b"), 1)
            .expect("room");
        let c = graph
            .ensure_node(workload("b", "db"), group("b"), 1)
            .expect("room");
        count(&mut graph, a, b, 80, 10);
        count(&mut graph, b, c, 5432, 100);
        graph.take_delta(100);
        assert_eq!(graph.expire(50), 1, "web has no edge left");
        let (delta, _) = graph.take_delta(100);
        assert_eq!(
            delta.removed_edges,
            vec!["workload:a/web->workload:b/api:80/TCP"]
        );
        assert_eq!(delta.removed_nodes, vec!["workload:a/web"]);
        assert_eq!((graph.node_count(), graph.edge_count()), (2, 1));
        // The key index forgot the edge: the same pair makes a new one.
        let b = graph.find_node("workload:b/api").expect("still there");
        let c = graph.find_node("workload:b/db").expect("still there");
        count(&mut graph, b, c, 5432, 101);
        assert_eq!(graph.edge_count(), 1);
    }

    #[test]
    fn full_graph_refuses_new_edges() {
        let mut graph = Graph::new(Zoom::Workload, 2);
        let a = graph
            .ensure_node(workload("a", "web"), group("a"), 1)
            .expect("room");
        let b = graph
            .ensure_node(workload("b", "api"), group("b"), 1)
            .expect("room");
        assert!(
            graph
                .ensure_node(workload("b", "db"), group("b"), 1)
                .is_none()
        );
        assert!(graph.edge_mut(a, b, 1, 1).is_some());
        assert!(graph.edge_mut(a, b, 2, 1).is_some());
        assert!(graph.edge_mut(a, b, 3, 1).is_none());
        assert!(
            graph.edge_mut(a, b, 1, 1).is_some(),
            "existing edges still count"
        );
    }

    #[test]
    fn namespace_zoom_merges_workload_edges() {
        let mut graph = Graph::new(Zoom::Workload, 10);
        let web = graph
            .ensure_node(workload("a", "web"), group("a"), 1)
            .expect("room");
        let cron = graph
            .ensure_node(workload("a", "cron"), group("a"), 1)
            .expect("room");
        let api = graph
            .ensure_node(workload("b", "api"), group("b"), 1)
            .expect("room");
        count(&mut graph, web, api, 80, 10);
        count(&mut graph, web, api, 80, 11);
        count(&mut graph, cron, api, 80, 12);
        count(&mut graph, cron, api, 9090, 12);
        let metadata = Metadata::empty();
        let snapshot = graph.namespace_snapshot(12, &metadata);
        assert_eq!(snapshot.nodes.len(), 2);
        let mut edges: Vec<(String, u64)> = snapshot
            .edges
            .iter()
            .map(|e| (e.id.clone(), e.flows))
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            vec![
                ("namespace:a->namespace:b:80/TCP".to_string(), 3),
                ("namespace:a->namespace:b:9090/TCP".to_string(), 1),
            ]
        );

        let (_, scope) = graph.take_delta(12);
        let delta = graph.namespace_delta(&scope, 12, &metadata);
        assert_eq!((delta.nodes.len(), delta.edges.len()), (2, 2));
        count(&mut graph, cron, api, 9090, 13);
        let (_, scope) = graph.take_delta(13);
        let delta = graph.namespace_delta(&scope, 13, &metadata);
        assert_eq!(delta.edges.len(), 1);
        assert_eq!(delta.edges[0].flows, 2);

        graph.expire(13);
        let (_, scope) = graph.take_delta(13);
        let delta = graph.namespace_delta(&scope, 13, &metadata);
        assert_eq!(delta.removed_edges, vec!["namespace:a->namespace:b:80/TCP"]);
        assert!(delta.removed_nodes.is_empty(), "cron is still in a");
    }
}
