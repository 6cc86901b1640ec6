//! The namespace → workload tree beside the map, with a traffic and a drop
//! marker on every row. Only which namespaces are collapsed is kept here; the
//! rows are derived from the [`ServiceGraph`] on each frame.

use std::collections::BTreeSet;

use super::graph::{Edge, NodeKind, ServiceGraph};

/// Which namespaces the tree shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NamespaceFilter {
    #[default]
    All,
    One(String),
}

/// One line of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeRow {
    /// 0 for a namespace, 1 for a workload.
    pub depth: usize,
    /// `namespace:NS` for a namespace row, the node id for a workload row.
    pub id: String,
    pub label: String,
    /// Flows per second in and out over the last minute (edges inside a
    /// namespace count once on the namespace row).
    pub flows_per_s: f64,
    /// Some edge at this row has dropped flows.
    pub has_drops: bool,
    /// For namespace rows: the children follow. Always false for workloads.
    pub expanded: bool,
}

/// The tree's own state: namespaces start expanded and stay as the user left
/// them, even when they vanish from the graph for a while.
#[derive(Debug, Default)]
pub struct NamespaceTree {
    collapsed: BTreeSet<String>,
}

impl NamespaceTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn expand(&mut self, namespace: &str) {
        self.collapsed.remove(namespace);
    }

    pub fn collapse(&mut self, namespace: &str) {
        self.collapsed.insert(namespace.to_string());
    }

    pub fn toggle(&mut self, namespace: &str) {
        if !self.collapsed.remove(namespace) {
            self.collapsed.insert(namespace.to_string());
        }
    }

    pub fn is_expanded(&self, namespace: &str) -> bool {
        !self.collapsed.contains(namespace)
    }

    /// The visible rows: namespaces by name, each followed (when expanded) by
    /// its workload nodes (pod nodes at pod zoom) by name.
    pub fn rows(&self, graph: &ServiceGraph, filter: &NamespaceFilter) -> Vec<TreeRow> {
        let mut rows = Vec::new();
        for namespace in graph.namespaces() {
            if let NamespaceFilter::One(wanted) = filter
                && *wanted != namespace
            {
                continue;
            }
            let mut members: Vec<_> = graph
                .nodes()
                .filter(|n| n.namespace == namespace)
                .filter(|n| matches!(n.kind, NodeKind::Workload | NodeKind::Pod))
                .collect();
            members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));

            let in_namespace = |id: &str| graph.node(id).is_some_and(|n| n.namespace == namespace);
            let (flows_per_s, has_drops) = markers(
                graph
                    .edges()
                    .filter(|e| in_namespace(&e.source) || in_namespace(&e.destination)),
            );
            let expanded = self.is_expanded(&namespace);
            rows.push(TreeRow {
                depth: 0,
                id: format!("namespace:{namespace}"),
                label: namespace.clone(),
                flows_per_s,
                has_drops,
                expanded,
            });
            if !expanded {
                continue;
            }
            for node in members {
                let (flows_per_s, has_drops) = markers(graph.edges_touching(&node.id));
                rows.push(TreeRow {
                    depth: 1,
                    id: node.id.clone(),
                    label: node.name.clone(),
                    flows_per_s,
                    has_drops,
                    expanded: false,
                });
            }
        }
        rows
    }
}

/// Summed 1-minute flow rate, and whether any edge has dropped flows at all
/// (not only recently: the tree points at where to look, the map's colours
/// say how current it is).
fn markers<'a>(edges: impl Iterator<Item = &'a Edge>) -> (f64, bool) {
    edges.fold((0.0, false), |(rate, drops), e| {
        (
            rate + e.rate_1m.flows_per_s,
            drops || e.dropped > 0 || !e.drops.is_empty(),
        )
    })
}
