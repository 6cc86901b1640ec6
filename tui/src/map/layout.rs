//! Placing the graph: cycle breaking, layers by call depth, barycenter ordering with
//! namespaces kept together, and the geometry of boxes, frames and channels.
//!
//! Edges spanning several layers get one virtual element per intermediate layer, so
//! ordering and routing only ever deal with neighbouring layers.

use std::collections::HashMap;

use skymap_proto::names::sanitize;

use super::index::RouteIndex;
use super::route;
use super::{EdgeHealth, MapEdge, MapNode};

/// Longest label or badge shown in a box; longer text is cut with an ellipsis.
pub(crate) const MAX_TEXT: usize = 24;
/// Longest edge label, marker included.
pub(crate) const MAX_LABEL: usize = 16;
/// Barycenter iterations; each is one sweep down and one up.
const SWEEPS: usize = 4;

/// A rectangle on the grid, in cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Rect {
    /// Whether the two rectangles share a cell.
    pub fn overlaps(&self, other: &Rect) -> bool {
        self.x < other.x + other.w
            && other.x < self.x + self.w
            && self.y < other.y + other.h
            && other.y < self.y + self.h
    }

    /// Whether the cell lies inside.
    pub fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }
}

/// A node's box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBox {
    pub id: String,
    /// Sanitized, not yet truncated: the painter cuts it to the box.
    pub label: String,
    pub badge: Option<String>,
    pub group: String,
    pub rect: Rect,
    /// Column, 0 = callers.
    pub layer: usize,
    /// The node calls itself; drawn as a marker on the box.
    pub self_loop: bool,
}

/// A namespace frame around consecutive boxes of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFrame {
    pub name: String,
    pub rect: Rect,
}

/// One edge's route: an orthogonal line from its caller to its callee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub from: String,
    pub to: String,
    pub label: Option<String>,
    pub health: EdgeHealth,
    /// The edge pointed right-to-left and was turned around to break a cycle: the
    /// arrow is at the start of `points`, pointing left.
    pub reversed: bool,
    /// Corners of the line from left to right, consecutive ones sharing a row or a
    /// column. One end is the cell on a box border the line attaches to, the other
    /// the arrow head's cell; [`Route::cells`] lists every cell.
    pub points: Vec<(usize, usize)>,
    /// First cell of the label text, when there is a label to show.
    pub label_at: Option<(usize, usize)>,
}

impl Route {
    /// The arrow head's cell.
    pub fn arrow(&self) -> (usize, usize) {
        let end = if self.reversed {
            self.points.first()
        } else {
            self.points.last()
        };
        end.copied().unwrap_or((0, 0))
    }

    /// The cell on the source box's border the line leaves from.
    pub fn attach(&self) -> (usize, usize) {
        let end = if self.reversed {
            self.points.last()
        } else {
            self.points.first()
        };
        end.copied().unwrap_or((0, 0))
    }

    /// Every cell of the line, in order from left to right.
    pub fn cells(&self) -> Vec<(usize, usize)> {
        let mut cells: Vec<(usize, usize)> = self.points.first().copied().into_iter().collect();
        for &(px, py) in self.points.iter().skip(1) {
            let Some(&(mut x, mut y)) = cells.last() else {
                break;
            };
            while (x, y) != (px, py) {
                // Corners share a row or a column; should one not, this walks an L.
                if x != px {
                    x = if px > x { x + 1 } else { x - 1 };
                } else {
                    y = if py > y { y + 1 } else { y - 1 };
                }
                cells.push((x, y));
            }
        }
        cells
    }
}

/// The placed map: everything the painter needs, in cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Sorted by id.
    pub boxes: Vec<NodeBox>,
    pub groups: Vec<GroupFrame>,
    /// Sorted by (from, to, label); self-loops have no route.
    pub routes: Vec<Route>,
    pub width: usize,
    pub height: usize,
    /// Edge crossings between neighbouring layers after ordering.
    pub crossings: usize,
    /// The routes filed by row and column, for painting windows; see
    /// [`Layout::reindex`].
    pub(crate) index: RouteIndex,
}

impl Layout {
    /// Refiles the routes after their geometry (`points`, `label_at`) was edited;
    /// [`layout`] does it itself, and health or label changes need none. The
    /// painter notices a different number of routes and copes, only slower.
    pub fn reindex(&mut self) {
        self.index = RouteIndex::new(&self.routes);
    }

    /// The box of node `id`.
    pub fn node(&self, id: &str) -> Option<&NodeBox> {
        self.boxes
            .binary_search_by(|b| b.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.boxes.get(i))
    }
}

/// One entry of a layer: a real node or a point an edge passes through.
#[derive(Debug, Clone)]
pub(crate) struct Elem {
    pub node: Option<usize>,
    pub layer: usize,
    /// Index of the named group; `None` keeps the element on its own.
    pub group: Option<usize>,
    pub y: usize,
    pub h: usize,
}

/// A piece of an edge between neighbouring layers.
#[derive(Debug, Clone)]
pub(crate) struct Seg {
    pub edge: usize,
    pub upper: usize,
    pub lower: usize,
    pub s_row: usize,
    pub t_row: usize,
}

/// The graph after cycle breaking and ranking, before ordering.
#[derive(Debug)]
pub(crate) struct Ranked {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    pub reversed: Vec<bool>,
    pub self_loop: Vec<bool>,
    pub elems: Vec<Elem>,
    pub segs: Vec<Seg>,
    /// Per edge, its segments in left-to-right order.
    pub chains: Vec<Vec<usize>>,
    pub layers: Vec<Vec<usize>>,
}

/// Lays the graph out; the same graph in any input order gives the same layout.
///
/// Edges whose ends are not among `nodes` are skipped; duplicate node ids keep the
/// first after sorting.
pub fn layout(nodes: &[MapNode], edges: &[MapEdge]) -> Layout {
    let mut ranked = rank(nodes, edges);
    let crossings = order(&mut ranked);
    place(ranked, crossings)
}

fn clean(text: &str) -> String {
    sanitize(text).into_owned()
}

/// Sorts, breaks cycles, ranks, and threads long edges through virtual elements.
pub(crate) fn rank(nodes: &[MapNode], edges: &[MapEdge]) -> Ranked {
    let mut nodes: Vec<MapNode> = nodes
        .iter()
        .map(|n| MapNode {
            id: n.id.clone(),
            label: clean(&n.label),
            group: clean(&n.group),
            badge: n.badge.as_deref().map(clean),
        })
        .collect();
    nodes.sort_by(|a, b| {
        (&a.id, &a.group, &a.label, &a.badge).cmp(&(&b.id, &b.group, &b.label, &b.badge))
    });
    nodes.dedup_by(|a, b| a.id == b.id);
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();

    let mut self_loop = vec![false; nodes.len()];
    let mut kept: Vec<(usize, usize, MapEdge)> = Vec::new();
    for e in edges {
        let (Some(&u), Some(&v)) = (index.get(e.from.as_str()), index.get(e.to.as_str())) else {
            continue;
        };
        if u == v {
            self_loop[u] = true;
            continue;
        }
        let edge = MapEdge {
            label: e.label.as_deref().map(clean),
            ..e.clone()
        };
        kept.push((u, v, edge));
    }
    kept.sort_by(|a, b| {
        (a.0, a.1, &a.2.label, a.2.health).cmp(&(b.0, b.1, &b.2.label, b.2.health))
    });
    let ends: Vec<(usize, usize)> = kept.iter().map(|k| (k.0, k.1)).collect();
    let edges: Vec<MapEdge> = kept.into_iter().map(|k| k.2).collect();
    drop(index);

    let reversed = break_cycles(nodes.len(), &ends);
    let dag: Vec<(usize, usize)> = ends
        .iter()
        .zip(&reversed)
        .map(|(&(u, v), &r)| if r { (v, u) } else { (u, v) })
        .collect();
    let ranks = longest_path(nodes.len(), &dag);

    let groups = group_index(&nodes);
    let mut elems: Vec<Elem> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Elem {
            node: Some(i),
            layer: ranks[i],
            group: groups.get(&n.group).copied(),
            y: 0,
            h: 0,
        })
        .collect();
    let mut segs = Vec::new();
    let mut chains = Vec::with_capacity(dag.len());
    for (edge, &(u, v)) in dag.iter().enumerate() {
        let mut chain = Vec::new();
        let mut prev = u;
        for layer in ranks[u] + 1..=ranks[v] {
            let next = if layer == ranks[v] {
                v
            } else {
                elems.push(Elem {
                    node: None,
                    layer,
                    group: None,
                    y: 0,
                    h: 1,
                });
                elems.len() - 1
            };
            chain.push(segs.len());
            segs.push(Seg {
                edge,
                upper: prev,
                lower: next,
                s_row: 0,
                t_row: 0,
            });
            prev = next;
        }
        chains.push(chain);
    }

    let depth = ranks.iter().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth];
    for (i, e) in elems.iter().enumerate() {
        if let Some(layer) = layers.get_mut(e.layer) {
            layer.push(i);
        }
    }
    // Start from (namespace, id); virtual elements follow in creation order.
    for layer in &mut layers {
        layer.sort_by(|&a, &b| {
            let key = |i: usize| elems[i].node.map(|n| (&nodes[n].group, &nodes[n].id));
            match (key(a), key(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.cmp(&b),
            }
        });
    }

    Ranked {
        nodes,
        edges,
        reversed,
        self_loop,
        elems,
        segs,
        chains,
        layers,
    }
}

/// Named groups, numbered in name order; `""` is not a group.
fn group_index(nodes: &[MapNode]) -> HashMap<String, usize> {
    let mut names: Vec<&str> = nodes
        .iter()
        .map(|n| n.group.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .enumerate()
        .map(|(i, g)| (g.to_string(), i))
        .collect()
}

/// Marks the edges to turn around so the rest is acyclic: the edges pointing
/// backwards in a greedy feedback-arc-set order (Eades, Lin and Smyth): sinks go
/// to the back, sources to the front, and otherwise the node with the most
/// outgoing over incoming edges (the smaller index on ties) to the front.
///
/// Reversing only DFS back edges would also do, but a DFS snakes through every
/// cycle and leaves paths as long as the graph: a mesh of five tiers with a few
/// calls back up came out 200+ columns deep. This order keeps it near five.
fn break_cycles(n: usize, ends: &[(usize, usize)]) -> Vec<bool> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut inc: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(u, v) in ends {
        out[u].push(v);
        inc[v].push(u);
    }
    let mut outdeg: Vec<usize> = out.iter().map(Vec::len).collect();
    let mut indeg: Vec<usize> = inc.iter().map(Vec::len).collect();
    let mut removed = vec![false; n];
    let mut front: Vec<usize> = Vec::with_capacity(n);
    let mut back: Vec<usize> = Vec::new();
    // Candidates are re-checked when popped, as degrees keep falling.
    let mut sinks: Vec<usize> = (0..n).rev().filter(|&i| outdeg[i] == 0).collect();
    let mut sources: Vec<usize> = (0..n).rev().filter(|&i| indeg[i] == 0).collect();
    let mut left = n;
    while left > 0 {
        let next = if let Some(u) = sinks.pop() {
            if removed[u] || outdeg[u] != 0 {
                continue;
            }
            back.push(u);
            u
        } else if let Some(u) = sources.pop() {
            if removed[u] || indeg[u] != 0 {
                continue;
            }
            front.push(u);
            u
        } else {
            let Some(u) = (0..n)
                .filter(|&i| !removed[i])
                .max_by_key(|&i| (outdeg[i] as isize - indeg[i] as isize, std::cmp::Reverse(i)))
            else {
                break;
            };
            front.push(u);
            u
        };
        removed[next] = true;
        left -= 1;
        for &v in &out[next] {
            indeg[v] -= 1;
            if indeg[v] == 0 && !removed[v] {
                sources.push(v);
            }
        }
        for &w in &inc[next] {
            outdeg[w] -= 1;
            if outdeg[w] == 0 && !removed[w] {
                sinks.push(w);
            }
        }
    }
    let mut pos = vec![0usize; n];
    for (i, &u) in front.iter().chain(back.iter().rev()).enumerate() {
        pos[u] = i;
    }
    ends.iter().map(|&(u, v)| pos[u] > pos[v]).collect()
}

/// Layer of each node: the longest path to it from a source.
fn longest_path(n: usize, dag: &[(usize, usize)]) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for &(u, v) in dag {
        out[u].push(v);
        indegree[v] += 1;
    }
    let mut rank = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    while let Some(u) = ready.pop() {
        for &v in &out[u] {
            rank[v] = rank[v].max(rank[u] + 1);
            indegree[v] -= 1;
            if indegree[v] == 0 {
                ready.push(v);
            }
        }
    }
    rank
}

/// Positions of every element within its layer.
fn positions(r: &Ranked) -> Vec<usize> {
    let mut pos = vec![0; r.elems.len()];
    for layer in &r.layers {
        for (i, &e) in layer.iter().enumerate() {
            pos[e] = i;
        }
    }
    pos
}

/// Total edge crossings between neighbouring layers of the current order.
pub(crate) fn crossings(r: &Ranked) -> usize {
    let pos = positions(r);
    let mut by_layer: Vec<Vec<(usize, usize)>> = vec![Vec::new(); r.layers.len()];
    for s in &r.segs {
        by_layer[r.elems[s.upper].layer].push((pos[s.upper], pos[s.lower]));
    }
    let mut total = 0;
    for (layer, pairs) in by_layer.iter_mut().enumerate() {
        let width = r.layers.get(layer + 1).map_or(0, Vec::len);
        pairs.sort_unstable();
        // Inversions among lower ends, counted with a Fenwick tree.
        let mut tree = vec![0usize; width + 1];
        for (seen, &(_, b)) in pairs.iter().enumerate() {
            let mut not_above = 0;
            let mut i = b + 1;
            while i > 0 {
                not_above += tree[i];
                i &= i - 1;
            }
            total += seen - not_above;
            let mut i = b + 1;
            while i <= width {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// Barycenter sweeps, keeping namespaces contiguous; keeps the best order seen and
/// returns its crossing count.
pub(crate) fn order(r: &mut Ranked) -> usize {
    let mut ups: Vec<Vec<usize>> = vec![Vec::new(); r.elems.len()];
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); r.elems.len()];
    for s in &r.segs {
        downs[s.upper].push(s.lower);
        ups[s.lower].push(s.upper);
    }
    let mut best = crossings(r);
    let mut best_layers = r.layers.clone();
    let mut pos = positions(r);
    for _ in 0..SWEEPS {
        if best == 0 {
            break;
        }
        for layer in 1..r.layers.len() {
            sweep(r, &mut pos, layer, &ups);
        }
        for layer in (0..r.layers.len().saturating_sub(1)).rev() {
            sweep(r, &mut pos, layer, &downs);
        }
        let now = crossings(r);
        if now < best {
            best = now;
            best_layers = r.layers.clone();
        }
    }
    r.layers = best_layers;
    best
}

/// (group barycenter, group or element, own barycenter, old position, element).
type SortKey = (f64, (u8, usize), f64, usize, usize);

/// Reorders one layer by the barycenters of each element's neighbours in `nbrs`.
fn sweep(r: &mut Ranked, pos: &mut [usize], layer: usize, nbrs: &[Vec<usize>]) {
    let bary = |e: usize| -> f64 {
        let list = &nbrs[e];
        if list.is_empty() {
            pos[e] as f64
        } else {
            list.iter().map(|&n| pos[n] as f64).sum::<f64>() / list.len() as f64
        }
    };
    let mut group_sum: HashMap<usize, (f64, usize)> = HashMap::new();
    let mut keyed: Vec<SortKey> = Vec::with_capacity(r.layers[layer].len());
    for &e in &r.layers[layer] {
        let b = bary(e);
        let group = r.elems[e].group;
        if let Some(g) = group {
            let entry = group_sum.entry(g).or_insert((0.0, 0));
            entry.0 += b;
            entry.1 += 1;
        }
        let tie = group.map_or((1, e), |g| (0, g));
        keyed.push((b, tie, b, pos[e], e));
    }
    for k in &mut keyed {
        if k.1.0 == 0
            && let Some(&(sum, n)) = group_sum.get(&k.1.1)
        {
            k.0 = sum / n as f64;
        }
    }
    keyed.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    r.layers[layer] = keyed.iter().map(|k| k.4).collect();
    for (i, &e) in r.layers[layer].iter().enumerate() {
        pos[e] = i;
    }
}

pub(crate) fn text_width(text: &str) -> usize {
    text.chars().count()
}

/// Display width of an edge's label with its dropped marker, capped.
pub(crate) fn label_width(edge: &MapEdge) -> usize {
    let marker = if edge.health == EdgeHealth::Dropped {
        2
    } else {
        0
    };
    let text = match (&edge.label, edge.health) {
        (Some(l), _) => text_width(l),
        (None, EdgeHealth::Dropped) => text_width(DROPPED_WORD),
        (None, _) => return 0,
    };
    (marker + text).min(MAX_LABEL)
}

/// What a dropped edge without a label says.
pub(crate) const DROPPED_WORD: &str = "dropped";

/// Box sizes, vertical stacking, ports, lanes, then x positions and routes.
fn place(mut r: Ranked, crossings: usize) -> Layout {
    let mut outs = vec![0usize; r.elems.len()];
    let mut ins = vec![0usize; r.elems.len()];
    for s in &r.segs {
        outs[s.upper] += 1;
        ins[s.lower] += 1;
    }
    let mut widths = vec![1usize; r.elems.len()];
    for (i, e) in r.elems.iter_mut().enumerate() {
        if let Some(n) = e.node {
            let node = &r.nodes[n];
            let badge = node.badge.as_deref().map_or(0, text_width);
            widths[i] = (text_width(&node.label).max(badge).min(MAX_TEXT) + 4).max(6);
            e.h = (3 + usize::from(node.badge.is_some())).max(2 + outs[i].max(ins[i]));
        }
    }

    // Vertical stacking, column by column, with frames around namespace runs.
    let mut groups_at: Vec<(usize, usize, usize, usize)> = Vec::new(); // (layer, group, top, bottom)
    let mut height = 0;
    for layer in &r.layers {
        let mut cursor = 0;
        let mut i = 0;
        while i < layer.len() {
            let group = r.elems[layer[i]].group;
            let mut j = i;
            while j < layer.len() && group.is_some() && r.elems[layer[j]].group == group {
                j += 1;
            }
            if let Some(g) = group {
                let top = cursor;
                cursor += 1;
                for (k, &e) in layer[i..j].iter().enumerate() {
                    if k > 0 {
                        cursor += 1;
                    }
                    r.elems[e].y = cursor;
                    cursor += r.elems[e].h;
                }
                groups_at.push((r.elems[layer[i]].layer, g, top, cursor));
                cursor += 2;
                i = j;
            } else {
                let e = layer[i];
                r.elems[e].y = cursor;
                cursor += r.elems[e].h + 1;
                i += 1;
            }
        }
        height = height.max(cursor.saturating_sub(1));
    }

    assign_ports(&mut r);

    let depth = r.layers.len();
    let col_w: Vec<usize> = r
        .layers
        .iter()
        .map(|l| {
            l.iter()
                .filter(|&&e| r.elems[e].node.is_some())
                .map(|&e| widths[e] + 4)
                .max()
                .unwrap_or(2)
        })
        .collect();
    let channels = route::lanes(&r, depth);
    let mut col_x = Vec::with_capacity(depth);
    let mut x = 0;
    for (layer, w) in col_w.iter().enumerate() {
        col_x.push(x);
        x += w + channels.width.get(layer).copied().unwrap_or(0);
    }
    let width = x;

    let mut boxes: Vec<NodeBox> = r
        .elems
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let n = e.node?;
            let node = &r.nodes[n];
            Some(NodeBox {
                id: node.id.clone(),
                label: node.label.clone(),
                badge: node.badge.clone(),
                group: node.group.clone(),
                rect: Rect {
                    x: col_x[e.layer] + 2,
                    y: e.y,
                    w: widths[i],
                    h: e.h,
                },
                layer: e.layer,
                self_loop: r.self_loop[n],
            })
        })
        .collect();
    boxes.sort_by(|a, b| a.id.cmp(&b.id));

    let mut names: Vec<(String, usize)> = group_index(&r.nodes).into_iter().collect();
    names.sort_by_key(|(_, i)| *i);
    let names: Vec<String> = names.into_iter().map(|(k, _)| k).collect();
    let groups = groups_at
        .into_iter()
        .map(|(layer, g, top, bottom)| GroupFrame {
            name: names.get(g).cloned().unwrap_or_default(),
            rect: Rect {
                x: col_x[layer],
                y: top,
                w: col_w[layer],
                h: bottom - top + 1,
            },
        })
        .collect();

    let routes = route::paths(&r, &channels, &col_x, &col_w, &widths);
    let index = RouteIndex::new(&routes);
    Layout {
        boxes,
        groups,
        routes,
        width,
        height,
        crossings,
        index,
    }
}

/// Gives each segment a distinct row on each box side, ordered by where the other
/// end sits so lines leaving one box do not cross each other.
fn assign_ports(r: &mut Ranked) {
    let mut outs: Vec<Vec<usize>> = vec![Vec::new(); r.elems.len()];
    let mut ins: Vec<Vec<usize>> = vec![Vec::new(); r.elems.len()];
    for (i, s) in r.segs.iter().enumerate() {
        outs[s.upper].push(i);
        ins[s.lower].push(i);
    }
    for (e, list) in outs.iter_mut().enumerate() {
        list.sort_by_key(|&s| (r.elems[r.segs[s].lower].y, r.segs[s].lower, s));
        for (k, &s) in list.iter().enumerate() {
            r.segs[s].s_row = port_row(&r.elems[e], k);
        }
    }
    for (e, list) in ins.iter_mut().enumerate() {
        list.sort_by_key(|&s| (r.elems[r.segs[s].upper].y, r.segs[s].upper, s));
        for (k, &s) in list.iter().enumerate() {
            r.segs[s].t_row = port_row(&r.elems[e], k);
        }
    }
}

fn port_row(e: &Elem, k: usize) -> usize {
    if e.node.is_some() { e.y + 1 + k } else { e.y }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(nodes: &[(&str, &str)], edges: &[(&str, &str)]) -> (Vec<MapNode>, Vec<MapEdge>) {
        let nodes = nodes
            .iter()
            .map(|&(id, group)| MapNode {
                id: id.into(),
                label: id.into(),
                group: group.into(),
                badge: None,
            })
            .collect();
        let edges = edges
            .iter()
            .map(|&(from, to)| MapEdge {
                from: from.into(),
                to: to.into(),
                label: None,
                health: EdgeHealth::Ok,
            })
            .collect();
        (nodes, edges)
    }

    fn layer_ids(r: &Ranked) -> Vec<Vec<String>> {
        r.layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&e| {
                        r.elems[e]
                            .node
                            .map_or("*".into(), |n| r.nodes[n].id.clone())
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn barycenter_sweeps_remove_crossings() {
        // Sorted by id the second layer is (w, x, y, z) while a..d call z..w: every
        // pair of edges crosses.
        let (nodes, edges) = graph(
            &[
                ("a", ""),
                ("b", ""),
                ("c", ""),
                ("d", ""),
                ("w", ""),
                ("x", ""),
                ("y", ""),
                ("z", ""),
            ],
            &[("a", "z"), ("b", "y"), ("c", "x"), ("d", "w")],
        );
        let mut r = rank(&nodes, &edges);
        assert_eq!(crossings(&r), 6);
        assert_eq!(order(&mut r), 0);
        assert_eq!(crossings(&r), 0);
        assert_eq!(layout(&nodes, &edges).crossings, 0);
    }

    #[test]
    fn namespaces_stay_together_while_ordering() {
        // b1 and b2 share a namespace but their callers sit at opposite ends, which
        // alone would pull them apart around `mid`.
        let (nodes, edges) = graph(
            &[
                ("a1", ""),
                ("a2", ""),
                ("a3", ""),
                ("b1", "ns"),
                ("b2", "ns"),
                ("mid", ""),
            ],
            &[("a1", "b1"), ("a2", "mid"), ("a3", "b2")],
        );
        let mut r = rank(&nodes, &edges);
        order(&mut r);
        let second = &layer_ids(&r)[1];
        let at = |id: &str| second.iter().position(|x| x == id).unwrap_or(usize::MAX);
        assert_eq!(at("b1").abs_diff(at("b2")), 1, "{second:?}");
    }

    #[test]
    fn cycles_are_broken_by_reversing_back_edges_only() {
        let (nodes, edges) = graph(
            &[("a", ""), ("b", ""), ("c", ""), ("src", "")],
            &[("a", "b"), ("b", "c"), ("c", "a"), ("src", "a")],
        );
        let r = rank(&nodes, &edges);
        // Edges sorted by (from, to): a->b, b->c, c->a, src->a; DFS from src.
        assert_eq!(r.reversed, [false, false, true, false]);
        // The turned edge a->c spans two layers, so it passes a virtual element.
        assert_eq!(
            layer_ids(&r),
            [vec!["src"], vec!["a"], vec!["b", "*"], vec!["c"]]
        );
    }

    #[test]
    fn calls_back_up_a_tier_do_not_deepen_the_map() {
        // a calls three b's, each b calls every c, and each c calls one b back.
        // A DFS from a snakes a, b1, c1, b2, c2, b3, c3 into seven columns.
        let mut calls = vec![("a", "b1"), ("a", "b2"), ("a", "b3")];
        for b in ["b1", "b2", "b3"] {
            calls.extend(["c1", "c2", "c3"].map(|c| (b, c)));
        }
        calls.extend([("c1", "b2"), ("c2", "b3"), ("c3", "b1")]);
        let ids = ["a", "b1", "b2", "b3", "c1", "c2", "c3"];
        let (nodes, edges) = graph(&ids.map(|id| (id, "")), &calls);
        let r = rank(&nodes, &edges);
        assert_eq!(
            layer_ids(&r),
            [vec!["a"], vec!["b1", "b2", "b3"], vec!["c1", "c2", "c3"]]
        );
        assert_eq!(r.reversed.iter().filter(|&&rev| rev).count(), 3);
        assert!(
            r.edges
                .iter()
                .zip(&r.reversed)
                .all(|(e, &rev)| rev == e.from.starts_with('c')),
            "only the calls back up are turned"
        );
    }

    #[test]
    fn long_edges_pass_through_one_virtual_element_per_layer() {
        let (nodes, edges) = graph(
            &[("a", ""), ("b", ""), ("c", ""), ("d", "")],
            &[("a", "b"), ("b", "c"), ("c", "d"), ("a", "d")],
        );
        let r = rank(&nodes, &edges);
        assert_eq!(r.elems.len(), 6);
        assert_eq!(
            r.chains.iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 3, 1, 1]
        );
    }

    #[test]
    fn unknown_ends_are_skipped_and_duplicates_merged() {
        let (mut nodes, edges) = graph(
            &[("a", ""), ("b", "")],
            &[("a", "b"), ("a", "ghost"), ("ghost", "b")],
        );
        nodes.push(nodes[0].clone());
        let l = layout(&nodes, &edges);
        assert_eq!(l.boxes.len(), 2);
        assert_eq!(l.routes.len(), 1);
    }
}
