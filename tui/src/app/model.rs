//! What the map shows: the service graph cut down to the chosen namespace,
//! without noise if asked, and one map edge per caller → callee pair (the
//! graph has one edge per port and protocol), each with a health and a short
//! label.
//!
//! Labels keep a fixed width while their figures change, so a new rate or
//! latency repaints the map without moving anything; only a change of shape
//! (nodes, pairs, label widths) asks for a new layout.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::map::{EdgeHealth, Layout, MapEdge, MapNode};
use crate::state::{Edge, Health, NamespaceFilter, NodeKind, ServiceGraph, error_ratio, health};

/// Suffix of the extra map node that stands for a world endpoint as a
/// caller when it is also called: internet clients then sit at the left of
/// the map and external services at the right, instead of one box that
/// closes a loop through the whole cluster.
pub const AS_CALLER: &str = "\u{0}caller";

/// The graph node a map node stands for.
pub fn graph_id(map_id: &str) -> &str {
    map_id.strip_suffix(AS_CALLER).unwrap_or(map_id)
}

/// The map's choices that change what is on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapOptions {
    pub namespaces: NamespaceFilter,
    /// Leave out host endpoints and DNS servers.
    pub hide_noise: bool,
    /// Show only this node and its neighbours.
    pub center: Option<String>,
}

/// All graph edges between one caller and one callee.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub from: String,
    pub to: String,
    pub edge_ids: Vec<String>,
    pub health: EdgeHealth,
    pub label: String,
}

/// The map's input, ready for [`crate::map::layout`].
#[derive(Debug, Clone, Default)]
pub struct MapModel {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    pub pairs: BTreeMap<(String, String), Pair>,
    /// Nodes left out as noise.
    pub hidden_noise: usize,
    /// Hash of everything that moves boxes and routes.
    pub shape: u64,
}

impl MapModel {
    pub fn pair(&self, from: &str, to: &str) -> Option<&Pair> {
        self.pairs.get(&(from.to_string(), to.to_string()))
    }

    /// The map node for graph node `id` as the caller of an edge.
    pub fn map_source(&self, id: &str) -> String {
        let caller = format!("{id}{AS_CALLER}");
        if self.nodes.iter().any(|n| n.id == caller) {
            caller
        } else {
            id.to_string()
        }
    }

    /// Updates the labels and colours of an existing layout of the same
    /// shape in place.
    pub fn restyle(&self, layout: &mut Layout) {
        for route in &mut layout.routes {
            if let Some(pair) = self.pairs.get(&(route.from.clone(), route.to.clone())) {
                route.health = pair.health;
                route.label = Some(pair.label.clone());
            }
        }
    }
}

/// Host endpoints, and DNS servers (anything answering on port 53): every
/// workload talks to them, so they crowd the map without telling much.
pub fn is_noise(graph: &ServiceGraph, id: &str) -> bool {
    let Some(node) = graph.node(id) else {
        return false;
    };
    node.kind == NodeKind::Host || graph.edges_to(id).any(|e| e.port == 53)
}

pub fn build(graph: &ServiceGraph, options: &MapOptions) -> MapModel {
    let mut hidden_noise = 0;
    let mut shown: BTreeSet<&str> = BTreeSet::new();
    for node in graph.nodes() {
        if options.hide_noise && is_noise(graph, &node.id) {
            hidden_noise += 1;
            continue;
        }
        shown.insert(node.id.as_str());
    }
    // One namespace: its nodes and whatever they talk to.
    if let NamespaceFilter::One(ns) = &options.namespaces {
        let inside = |id: &str| graph.node(id).is_some_and(|n| &n.namespace == ns);
        let mut keep: BTreeSet<&str> = shown.iter().copied().filter(|id| inside(id)).collect();
        for edge in graph.edges() {
            if inside(&edge.source) || inside(&edge.destination) {
                keep.insert(edge.source.as_str());
                keep.insert(edge.destination.as_str());
            }
        }
        shown.retain(|id| keep.contains(id));
    }
    if let Some(center) = options.center.as_deref()
        && shown.contains(center)
    {
        let mut keep = BTreeSet::from([center]);
        for edge in graph.edges_touching(center) {
            keep.insert(edge.source.as_str());
            keep.insert(edge.destination.as_str());
        }
        shown.retain(|id| keep.contains(id));
    }

    let mut grouped: BTreeMap<(String, String), Vec<&Edge>> = BTreeMap::new();
    for edge in graph.edges() {
        if shown.contains(edge.source.as_str()) && shown.contains(edge.destination.as_str()) {
            if let Some(center) = options.center.as_deref()
                && edge.source != center
                && edge.destination != center
            {
                continue;
            }
            grouped
                .entry((edge.source.clone(), edge.destination.clone()))
                .or_default()
                .push(edge);
        }
    }

    let callers: BTreeSet<&str> = grouped.keys().map(|(from, _)| from.as_str()).collect();
    let callees: BTreeSet<&str> = grouped.keys().map(|(_, to)| to.as_str()).collect();
    let split: BTreeSet<String> = callers
        .intersection(&callees)
        .filter(|id| graph.node(id).is_some_and(|n| n.kind == NodeKind::World))
        .map(|id| id.to_string())
        .collect();

    let zoomed_to_namespaces = graph.nodes().all(|n| n.kind != NodeKind::Workload)
        && graph.nodes().any(|n| n.kind == NodeKind::Namespace);
    let mut nodes: Vec<MapNode> = shown
        .iter()
        .filter_map(|id| graph.node(id))
        .map(|n| MapNode {
            id: n.id.clone(),
            label: if n.name.is_empty() {
                n.id.clone()
            } else {
                n.name.clone()
            },
            group: if zoomed_to_namespaces {
                String::new()
            } else {
                n.namespace.clone()
            },
            badge: None,
        })
        .collect();
    let callers_halves: Vec<MapNode> = nodes
        .iter()
        .filter(|n| split.contains(&n.id))
        .map(|n| MapNode {
            id: format!("{}{AS_CALLER}", n.id),
            ..n.clone()
        })
        .collect();
    nodes.extend(callers_halves);

    let mut pairs = BTreeMap::new();
    let mut edges = Vec::with_capacity(grouped.len());
    for ((from, to), members) in grouped {
        let from = if split.contains(&from) {
            format!("{from}{AS_CALLER}")
        } else {
            from
        };
        let pair = pair(&from, &to, &members);
        edges.push(MapEdge {
            from: from.clone(),
            to: to.clone(),
            label: Some(pair.label.clone()),
            health: pair.health,
        });
        pairs.insert((from, to), pair);
    }

    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for n in &nodes {
        (&n.id, &n.label, &n.group).hash(&mut hasher);
    }
    for e in &edges {
        let width = e.label.as_deref().map_or(0, |l| l.chars().count());
        (&e.from, &e.to, width, e.health == EdgeHealth::Dropped).hash(&mut hasher);
    }
    MapModel {
        nodes,
        edges,
        pairs,
        hidden_noise,
        shape: hasher.finish(),
    }
}

fn pair(from: &str, to: &str, members: &[&Edge]) -> Pair {
    let worst = members
        .iter()
        .map(|e| health(e))
        .min()
        .unwrap_or(Health::Ok);
    let health = match worst {
        Health::Dropped => EdgeHealth::Dropped,
        Health::Error => EdgeHealth::Error,
        Health::Warning => EdgeHealth::Warning,
        Health::Ok => EdgeHealth::Ok,
    };
    let label = if health == EdgeHealth::Dropped {
        let ports: BTreeSet<(u32, &str)> = members
            .iter()
            .filter(|e| e.dropped > 0 || e.rate_1m.drops_per_s > 0.0 || e.rate_5m.drops_per_s > 0.0)
            .map(|e| (e.port, e.protocol.as_str()))
            .collect();
        match ports.iter().next() {
            Some((port, proto)) if ports.len() == 1 => format!("DROPPED {port}/{proto}"),
            _ => format!("DROPPED {} ports", ports.len()),
        }
    } else {
        let rate: f64 = members.iter().map(|e| shown_rate(e)).sum();
        let p95 = members
            .iter()
            .filter_map(|e| e.latency.map(|l| l.p95))
            .max();
        let ratio = members
            .iter()
            .filter_map(|e| error_ratio(e))
            .fold(0.0_f64, f64::max);
        let mut label = format!(
            "{:>4}/s {:>5}",
            rate_text(rate),
            p95.map_or_else(|| "-".to_string(), latency_text)
        );
        if ratio >= 0.005 {
            label.push_str(&format!(" {:>2.0}%", (ratio * 100.0).clamp(1.0, 99.0)));
        }
        label
    };
    Pair {
        from: from.to_string(),
        to: to.to_string(),
        edge_ids: members.iter().map(|e| e.id.clone()).collect(),
        health,
        label,
    }
}

/// Requests per second where the edge carries requests, flows otherwise.
pub fn shown_rate(edge: &Edge) -> f64 {
    if edge.rate_1m.requests_per_s > 0.0 {
        edge.rate_1m.requests_per_s
    } else {
        edge.rate_1m.flows_per_s
    }
}

/// A rate in at most 4 characters: `0.4`, `12`, `340`, `1.2k`, `15k`.
pub fn rate_text(rate: f64) -> String {
    if !rate.is_finite() || rate <= 0.0 {
        "0".to_string()
    } else if rate < 10.0 {
        format!("{rate:.1}")
    } else if rate < 1000.0 {
        format!("{rate:.0}")
    } else if rate < 10_000.0 {
        format!("{:.1}k", rate / 1000.0)
    } else if rate < 1_000_000.0 {
        format!("{:.0}k", rate / 1000.0)
    } else {
        format!("{:.0}M", (rate / 1e6).min(999.0))
    }
}

/// A latency in at most 5 characters: `850us`, `4.5ms`, `45ms`, `1.2s`, `12s`.
pub fn latency_text(latency: Duration) -> String {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.0}us", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 10_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        format!("{:.0}s", (ms / 1000.0).min(9999.0))
    }
}

#[cfg(test)]
mod tests {
    use skymap_proto::v1::{self, GraphEdge, GraphNode, GraphUpdate};

    use super::*;

    fn node(id: &str, kind: v1::NodeKind, ns: &str, name: &str) -> GraphNode {
        GraphNode {
            id: id.to_string(),
            kind: kind as i32,
            namespace: ns.to_string(),
            name: name.to_string(),
            ..GraphNode::default()
        }
    }

    fn edge(from: &str, to: &str, port: u32) -> GraphEdge {
        GraphEdge {
            id: format!("{from}->{to}:{port}"),
            source: from.to_string(),
            destination: to.to_string(),
            port,
            flows: 1,
            ..GraphEdge::default()
        }
    }

    fn graph() -> ServiceGraph {
        let mut graph = ServiceGraph::new();
        graph.apply(GraphUpdate {
            time_ns: 1,
            full: true,
            zoom: v1::Zoom::Workload as i32,
            nodes: vec![
                node("world", v1::NodeKind::World, "", "world"),
                node("workload:shop/web", v1::NodeKind::Workload, "shop", "web"),
                node(
                    "workload:kube-system/dns",
                    v1::NodeKind::Workload,
                    "kube-system",
                    "dns",
                ),
            ],
            edges: vec![
                edge("world", "workload:shop/web", 443),
                edge("workload:shop/web", "world", 443),
                edge("workload:shop/web", "workload:kube-system/dns", 53),
                edge("workload:shop/web", "workload:kube-system/dns", 5353),
            ],
            ..GraphUpdate::default()
        });
        graph
    }

    #[test]
    fn world_that_calls_and_is_called_becomes_two_boxes() {
        let model = build(&graph(), &MapOptions::default());
        let ids: Vec<&str> = model.nodes.iter().map(|n| n.id.as_str()).collect();
        let caller = format!("world{AS_CALLER}");
        assert!(
            ids.contains(&"world") && ids.contains(&caller.as_str()),
            "{ids:?}"
        );
        assert!(model.pair(&caller, "workload:shop/web").is_some());
        assert!(model.pair("workload:shop/web", "world").is_some());
        assert_eq!(graph_id(&caller), "world");
        assert_eq!(model.map_source("world"), caller);
        assert_eq!(model.map_source("workload:shop/web"), "workload:shop/web");
        // Two ports between the same boxes are one map edge.
        let dns = model
            .pair("workload:shop/web", "workload:kube-system/dns")
            .expect("pair");
        assert_eq!(dns.edge_ids.len(), 2);
        assert_eq!(model.edges.len(), 3);
    }

    #[test]
    fn noise_and_namespaces_cut_the_map() {
        let g = graph();
        let quiet = build(
            &g,
            &MapOptions {
                hide_noise: true,
                ..MapOptions::default()
            },
        );
        assert_eq!(quiet.hidden_noise, 1, "the DNS server");
        assert!(
            quiet
                .nodes
                .iter()
                .all(|n| n.id != "workload:kube-system/dns")
        );

        let one = build(
            &g,
            &MapOptions {
                namespaces: NamespaceFilter::One("kube-system".to_string()),
                ..MapOptions::default()
            },
        );
        let ids: Vec<&str> = one.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["workload:kube-system/dns", "workload:shop/web"],
            "and its peers"
        );
        assert_ne!(one.shape, quiet.shape);
    }

    #[test]
    fn figures_fit_their_widths() {
        for (rate, text) in [
            (0.0, "0"),
            (0.44, "0.4"),
            (12.3, "12"),
            (1234.0, "1.2k"),
            (56_000.0, "56k"),
            (3e7, "30M"),
        ] {
            assert_eq!(rate_text(rate), text);
        }
        for (us, text) in [
            (850, "850us"),
            (4_500, "4.5ms"),
            (45_000, "45ms"),
            (1_200_000, "1.2s"),
            (42_000_000, "42s"),
        ] {
            assert_eq!(latency_text(Duration::from_micros(us)), text);
            assert!(text.len() <= 5);
        }
    }
}
