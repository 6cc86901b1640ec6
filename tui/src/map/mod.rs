//! The service map as a picture on a character grid.
//!
//! The input is a plain graph ([`MapNode`], [`MapEdge`]); [`layout`] places it once
//! per shape change (layers by call depth, barycenter ordering, namespace frames,
//! orthogonal edge routes) and [`render`] paints the result into a [`Canvas`] whose
//! cells carry a [`CellRole`] the TUI colours through the theme. [`focus`] cuts a big
//! graph down to one workload and its neighbours.
//!
//! - `layout`: cycle breaking, ranking, ordering and geometry.
//! - `route`: lanes in the routing channels and the cell paths of edges.
//! - `canvas`: the grid and the painter.
//! - `index`: routes filed by row and column, so a window costs its own size.

mod canvas;
mod index;
mod layout;
mod route;

pub use canvas::{Canvas, CellRole, Glyphs, render, render_window};
pub use layout::{GroupFrame, Layout, NodeBox, Rect, Route, layout};

/// A workload (or world/host endpoint) on the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapNode {
    /// Stable identity, e.g. `prod/frontend`; edges refer to it.
    pub id: String,
    /// What the box shows, e.g. `frontend`.
    pub label: String,
    /// Namespace; `""` for world/host, which get no frame.
    pub group: String,
    /// Short text under the label, e.g. `12/s`.
    pub badge: Option<String>,
}

/// How an edge is doing; drives glyphs and colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeHealth {
    Ok,
    Warning,
    Error,
    /// Flows were dropped: drawn dashed and with a `✗`/`x` marker, so it reads
    /// without colour.
    Dropped,
}

/// A caller → callee relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEdge {
    pub from: String,
    pub to: String,
    /// Short text on the edge, e.g. `53/UDP`.
    pub label: Option<String>,
    pub health: EdgeHealth,
}

/// Id of the node [`focus`] adds to stand for everything it left out.
pub const FOCUS_OTHERS_ID: &str = "\u{0}others";

/// The node `center`, its callers and callees, and the edges touching `center`.
///
/// Everything else is summarised by one node with id [`FOCUS_OTHERS_ID`] labelled
/// `+N more` (absent when nothing was left out). An unknown `center` gives an empty
/// graph.
pub fn focus(nodes: &[MapNode], edges: &[MapEdge], center: &str) -> (Vec<MapNode>, Vec<MapEdge>) {
    if !nodes.iter().any(|n| n.id == center) {
        return (Vec::new(), Vec::new());
    }
    let kept_edges: Vec<MapEdge> = edges
        .iter()
        .filter(|e| e.from == center || e.to == center)
        .cloned()
        .collect();
    let is_kept = |id: &str| id == center || kept_edges.iter().any(|e| e.from == id || e.to == id);
    let mut kept_nodes: Vec<MapNode> = nodes.iter().filter(|n| is_kept(&n.id)).cloned().collect();
    let hidden = nodes.len() - kept_nodes.len();
    if hidden > 0 {
        kept_nodes.push(MapNode {
            id: FOCUS_OTHERS_ID.to_string(),
            label: format!("+{hidden} more"),
            group: String::new(),
            badge: None,
        });
    }
    (kept_nodes, kept_edges)
}
