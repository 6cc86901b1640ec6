//! Map frame benchmark: what laying out a big service map costs once, and what
//! painting one frame of it costs every time.
//!
//! A synthetic mesh, the same on every run: 1,000 workloads in 20 namespaces,
//! in five tiers (edge, frontends, services, data, infrastructure), with 10,000
//! edges: mostly one tier down, 10% skipping a tier, 5% from any tier to any
//! tier (calls back up, so there are cycles to break); about 80% healthy, the
//! rest warning, error and dropped; about half labelled with a port.
//!
//! Prints the `layout()` time (it runs off the frame path, in a background
//! thread) and, per viewport, the median and p99 of one frame: resetting a
//! 240×70 buffer and rendering [`MapView`] into it.
//!
//! Run: `cargo bench -p skymap-tui --bench map_frame`. `MAP_BENCH_FRAMES` sets
//! the frames timed per viewport (default 300); `MAP_BENCH_WILD_PERMILLE` the
//! any-tier-to-any-tier edges per thousand (default 50; 0 gives a pure
//! five-tier DAG).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ratatui::buffer::Buffer;
use ratatui::layout::Rect as Area;
use ratatui::widgets::Widget;
use skymap_tui::map::{EdgeHealth, Glyphs, Layout, MapEdge, MapNode, layout};
use skymap_tui::ui::map::{MapStyles, MapView, center_on, clamp_offset};

const WORKLOADS: usize = 1_000;
const NAMESPACES: usize = 20;
const EDGES: usize = 10_000;
const TIERS: usize = 5;
const VIEW_W: u16 = 240;
const VIEW_H: u16 = 70;

/// Seeded xorshift, so the graph is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `wild_permille`: edges per thousand that go from any tier to any tier.
fn mesh(wild_permille: usize) -> (Vec<MapNode>, Vec<MapEdge>) {
    let mut rng = Rng(0x5EED_0F5A_u64);
    let mut tiers: Vec<Vec<usize>> = vec![Vec::new(); TIERS];
    let nodes: Vec<MapNode> = (0..WORKLOADS)
        .map(|i| {
            // Few at the edge, most in the middle tiers.
            let tier = [0, 1, 1, 2, 2, 2, 3, 3, 4][rng.below(9)];
            tiers[tier].push(i);
            let ns = format!("ns-{:02}", i % NAMESPACES);
            MapNode {
                id: format!("{ns}/svc-{i:04}"),
                label: format!("svc-{i:04}"),
                group: ns,
                badge: (rng.below(3) == 0).then(|| format!("{}/s", rng.below(5_000))),
            }
        })
        .collect();
    let mut edges = Vec::with_capacity(EDGES);
    while edges.len() < EDGES {
        let t = rng.below(TIERS - 1);
        let roll = rng.below(1000);
        let target_tier = if roll < wild_permille {
            rng.below(TIERS)
        } else if roll < wild_permille + 100 {
            (t + 2).min(TIERS - 1)
        } else {
            t + 1
        };
        let (Some(&from), Some(&to)) = (
            tiers[t].get(rng.below(tiers[t].len())),
            tiers[target_tier].get(rng.below(tiers[target_tier].len())),
        ) else {
            continue;
        };
        let health = match rng.below(100) {
            0..80 => EdgeHealth::Ok,
            80..88 => EdgeHealth::Warning,
            88..95 => EdgeHealth::Error,
            _ => EdgeHealth::Dropped,
        };
        let label = (rng.below(2) == 0).then(|| {
            let port = [80, 443, 8080, 5432, 6379, 9090][rng.below(6)];
            format!("{port}/TCP")
        });
        edges.push(MapEdge {
            from: nodes[from].id.clone(),
            to: nodes[to].id.clone(),
            label,
            health,
        });
    }
    (nodes, edges)
}

/// The offset whose window holds the most route corners, on a grid of quarter
/// and half views: the busiest part of the map.
fn busiest(l: &Layout) -> (usize, usize) {
    let (tw, th) = (usize::from(VIEW_W) / 4, usize::from(VIEW_H) / 2);
    let (cols, rows) = (l.width / tw + 1, l.height / th + 1);
    let mut tiles = vec![0usize; cols * rows];
    for &(x, y) in l.routes.iter().flat_map(|r| r.points.iter()) {
        if let Some(t) = tiles.get_mut((y / th) * cols + x / tw) {
            *t += 1;
        }
    }
    let mut best = ((0, 0), 0);
    for ty in 0..rows.saturating_sub(1) {
        for tx in 0..cols.saturating_sub(3) {
            let inside: usize = (ty..ty + 2)
                .flat_map(|y| (tx..tx + 4).map(move |x| y * cols + x))
                .map(|i| tiles[i])
                .sum();
            if inside > best.1 {
                best = ((tx * tw, ty * th), inside);
            }
        }
    }
    best.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() {
    let frames: usize = std::env::var("MAP_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let wild: usize = std::env::var("MAP_BENCH_WILD_PERMILLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (nodes, edges) = mesh(wild);

    let started = Instant::now();
    let l = layout(&nodes, &edges);
    let took = started.elapsed();
    let cells: usize = l
        .routes
        .iter()
        .map(|r| {
            r.points
                .windows(2)
                .map(|p| p[0].0.abs_diff(p[1].0) + p[0].1.abs_diff(p[1].1))
                .sum::<usize>()
        })
        .sum();
    let columns = l.boxes.iter().map(|b| b.layer + 1).max().unwrap_or(0);
    let corners: usize = l.routes.iter().map(|r| r.points.len()).sum();
    println!(
        "layout: {:.1} ms for {} workloads, {} edges -> {columns} columns, map {}x{} cells, {} groups, {} routes ({corners} corners, {} cells), {} crossings",
        took.as_secs_f64() * 1e3,
        nodes.len(),
        edges.len(),
        l.width,
        l.height,
        l.groups.len(),
        l.routes.len(),
        cells,
        l.crossings
    );

    let styles = MapStyles::default();
    let (w, h) = (usize::from(VIEW_W), usize::from(VIEW_H));
    let selected = l.boxes.get(l.boxes.len() / 2).map(|b| b.id.as_str());
    let viewports = [
        ("top-left corner", (0, 0)),
        (
            "middle",
            clamp_offset(&l, (l.width / 2, l.height / 2), w, h),
        ),
        ("busiest", busiest(&l)),
        (
            "around selected",
            selected.map_or((0, 0), |id| center_on(&l, id, w, h)),
        ),
        (
            "bottom-right corner",
            clamp_offset(&l, (usize::MAX, usize::MAX), w, h),
        ),
    ];
    let mut buf = Buffer::empty(Area::new(0, 0, VIEW_W, VIEW_H));
    let mut worst = Duration::ZERO;
    for (name, offset) in viewports {
        let view = MapView::new(&l, &styles)
            .offset(offset)
            .selected(selected)
            .glyphs(Glyphs::Unicode);
        for _ in 0..10 {
            buf.reset();
            (&view).render(buf.area, &mut buf);
        }
        let mut times = Vec::with_capacity(frames);
        for _ in 0..frames {
            let t = Instant::now();
            buf.reset();
            (&view).render(buf.area, &mut buf);
            black_box(&buf);
            times.push(t.elapsed());
        }
        times.sort_unstable();
        let drawn = buf.content().iter().filter(|c| c.symbol() != " ").count();
        let (median, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        worst = worst.max(p99);
        println!(
            "frame {VIEW_W}x{VIEW_H} {name:<20} at {offset:?}: median {:.3} ms, p99 {:.3} ms ({drawn} cells drawn)",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }
    println!("worst frame p99: {:.3} ms", worst.as_secs_f64() * 1e3);
}
