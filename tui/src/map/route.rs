//! Routing edges through the channels between columns.
//!
//! Every segment crossing a channel that has to change rows gets its own vertical
//! lane, so verticals never overlap; lanes are ordered so fans out of (or into) one
//! box do not cross themselves, and so no line's first horizontal runs along
//! another's last one on the same row.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::layout::{Ranked, Route, label_width};

/// Lanes and widths of the channels, channel `k` lying right of layer `k`.
#[derive(Debug)]
pub(crate) struct Channels {
    pub width: Vec<usize>,
    /// Room reserved for labels at the left of each channel.
    pub label_w: Vec<usize>,
    /// Lane of each segment within its channel; `None` for straight segments.
    pub lane: Vec<Option<usize>>,
}

impl Channels {
    fn lane_x(&self, channel: usize, x0: usize, lane: usize) -> usize {
        x0 + self.label_w[channel] + 2 + 2 * lane
    }
}

/// Assigns lanes; needs the rows of the segments' ports.
pub(crate) fn lanes(r: &Ranked, depth: usize) -> Channels {
    let channels = depth.saturating_sub(1);
    let mut by_channel: Vec<Vec<usize>> = vec![Vec::new(); channels];
    let mut label_w = vec![0; channels];
    for (i, s) in r.segs.iter().enumerate() {
        let layer = r.elems[s.upper].layer;
        let Some(list) = by_channel.get_mut(layer) else {
            continue;
        };
        if r.chains[s.edge].first() == Some(&i) {
            label_w[layer] = label_w[layer].max(label_width(&r.edges[s.edge]));
        }
        if s.s_row != s.t_row {
            list.push(i);
        }
    }

    let mut lane = vec![None; r.segs.len()];
    let mut width = Vec::with_capacity(channels);
    for (channel, list) in by_channel.iter().enumerate() {
        // Fans: going down, the lowest start takes the leftmost lane; going up,
        // the highest start does.
        let rank_key = |s: usize| {
            let seg = &r.segs[s];
            if seg.t_row > seg.s_row {
                (0, Reverse(seg.s_row), seg.s_row, s)
            } else {
                (1, Reverse(0), seg.s_row, s)
            }
        };
        let mut ordered = list.clone();
        ordered.sort_by_key(|&s| rank_key(s));
        let priority: HashMap<usize, usize> =
            ordered.iter().enumerate().map(|(p, &s)| (s, p)).collect();

        // A segment must lie left of the one whose last row is its first row, or the
        // two horizontals would overlap. Rows are distinct per side, so each segment
        // has at most one such successor and one predecessor.
        let by_t_row: HashMap<usize, usize> = list.iter().map(|&s| (r.segs[s].t_row, s)).collect();
        let mut next: HashMap<usize, usize> = HashMap::new();
        let mut waiting: HashMap<usize, usize> = HashMap::new();
        for &s in list {
            if let Some(&t) = by_t_row.get(&r.segs[s].s_row)
                && t != s
            {
                next.insert(s, t);
                *waiting.entry(t).or_default() += 1;
            }
        }
        let mut ready: BTreeSet<(usize, usize)> = list
            .iter()
            .filter(|s| !waiting.contains_key(s))
            .map(|&s| (priority[&s], s))
            .collect();
        let mut left: BTreeSet<(usize, usize)> = list.iter().map(|&s| (priority[&s], s)).collect();
        let mut count = 0;
        while let Some(&first) = left.first() {
            // On a cycle of such constraints nothing is ready: give up on one.
            let (p, s) = ready.pop_first().unwrap_or(first);
            left.remove(&(p, s));
            lane[s] = Some(count);
            count += 1;
            if let Some(&t) = next.get(&s)
                && let Some(w) = waiting.get_mut(&t)
            {
                *w -= 1;
                if *w == 0 && left.contains(&(priority[&t], t)) {
                    ready.insert((priority[&t], t));
                }
            }
        }
        width.push(label_w[channel] + 3 + 2 * count);
    }
    Channels {
        width,
        label_w,
        lane,
    }
}

/// Cell paths of every edge.
pub(crate) fn paths(
    r: &Ranked,
    channels: &Channels,
    col_x: &[usize],
    col_w: &[usize],
    widths: &[usize],
) -> Vec<Route> {
    let box_x = |e: usize| col_x[r.elems[e].layer] + 2;
    let mut routes = Vec::with_capacity(r.edges.len());
    for (edge, chain) in r.chains.iter().enumerate() {
        let (Some(&first), Some(&last)) = (chain.first(), chain.last()) else {
            continue;
        };
        let reversed = r.reversed[edge];
        let start = &r.segs[first];
        let right_of_source = box_x(start.upper) + widths[start.upper];
        // Forward: from the border cell; reversed: from the arrow head right of it.
        let mut points = vec![if reversed {
            (right_of_source, start.s_row)
        } else {
            (right_of_source - 1, start.s_row)
        }];
        for &s in chain {
            let seg = &r.segs[s];
            let channel = r.elems[seg.upper].layer;
            let x0 = col_x[channel] + col_w[channel];
            if let Some(lane) = channels.lane[s] {
                let lx = channels.lane_x(channel, x0, lane);
                points.push((lx, seg.s_row));
                points.push((lx, seg.t_row));
            }
            let next_layer = channel + 1;
            if r.elems[seg.lower].node.is_some() {
                let bx = box_x(seg.lower);
                points.push(if reversed {
                    (bx, seg.t_row)
                } else {
                    (bx - 1, seg.t_row)
                });
            } else {
                points.push((col_x[next_layer], seg.t_row));
                points.push((col_x[next_layer] + col_w[next_layer] - 1, seg.t_row));
            }
        }
        let e = &r.edges[edge];
        let label_at = (label_width(e) > 0).then(|| {
            let channel = r.elems[start.upper].layer;
            (col_x[channel] + col_w[channel] + 1, start.s_row)
        });
        let (from, to) = (
            &r.nodes[r.elems[start.upper].node.unwrap_or(0)].id,
            &r.nodes[r.elems[r.segs[last].lower].node.unwrap_or(0)].id,
        );
        let (from, to) = if reversed { (to, from) } else { (from, to) };
        routes.push(Route {
            from: from.clone(),
            to: to.clone(),
            label: e.label.clone(),
            health: e.health,
            reversed,
            points: simplify(points),
            label_at,
        });
    }
    routes
}

/// Drops repeated points and points in the middle of a straight run.
fn simplify(points: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(points.len());
    for p in points {
        if out.last() == Some(&p) {
            continue;
        }
        if let [.., a, b] = out[..]
            && ((a.0 == b.0 && b.0 == p.0) || (a.1 == b.1 && b.1 == p.1))
        {
            out.pop();
        }
        out.push(p);
    }
    out
}
