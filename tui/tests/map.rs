//! The service-map layout engine: snapshots of small maps and properties of many
//! generated ones.

use skymap_tui::map::{
    CellRole, EdgeHealth, FOCUS_OTHERS_ID, Glyphs, Layout, MapEdge, MapNode, Rect, focus, layout,
    render, render_window,
};

fn node(id: &str, group: &str) -> MapNode {
    MapNode {
        id: id.to_string(),
        label: id.to_string(),
        group: group.to_string(),
        badge: None,
    }
}

fn edge(from: &str, to: &str) -> MapEdge {
    MapEdge {
        from: from.to_string(),
        to: to.to_string(),
        label: None,
        health: EdgeHealth::Ok,
    }
}

fn draw(nodes: &[MapNode], edges: &[MapEdge], glyphs: Glyphs) -> String {
    render(&layout(nodes, edges), glyphs, None).to_text()
}

fn dns_story() -> (Vec<MapNode>, Vec<MapEdge>) {
    let mut frontend = node("frontend", "shop");
    frontend.badge = Some("12/s".to_string());
    let nodes = vec![
        frontend,
        node("backend", "shop"),
        node("kube-dns", "kube-system"),
        node("world", ""),
    ];
    let edges = vec![
        MapEdge {
            label: Some("8080/TCP".into()),
            ..edge("frontend", "backend")
        },
        MapEdge {
            label: Some("53/UDP".into()),
            health: EdgeHealth::Dropped,
            ..edge("frontend", "kube-dns")
        },
        MapEdge {
            label: Some("443/TCP".into()),
            ..edge("backend", "world")
        },
    ];
    (nodes, edges)
}

/// Seeded xorshift, so generated graphs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const HEALTHS: [EdgeHealth; 4] = [
    EdgeHealth::Ok,
    EdgeHealth::Warning,
    EdgeHealth::Error,
    EdgeHealth::Dropped,
];

fn random_graph(
    rng: &mut Rng,
    max_nodes: usize,
    edges_per_node: usize,
) -> (Vec<MapNode>, Vec<MapEdge>) {
    let n = 1 + rng.below(max_nodes);
    let groups = [
        "",
        "prod",
        "kube-system",
        "a-very-long-namespace-name-indeed",
    ];
    let nodes: Vec<MapNode> = (0..n)
        .map(|i| {
            let mut m = node(&format!("n{i:04}"), groups[rng.below(groups.len())]);
            if rng.below(3) == 0 {
                m.badge = Some(format!("{}/s", rng.below(1000)));
            }
            if rng.below(10) == 0 {
                m.label = "a-label-far-longer-than-any-box-should-be".into();
            }
            m
        })
        .collect();
    let m = rng.below(n * edges_per_node + 1);
    let edges = (0..m)
        .map(|_| {
            let mut e = edge(&nodes[rng.below(n)].id, &nodes[rng.below(n)].id);
            e.health = HEALTHS[rng.below(4)];
            if rng.below(2) == 0 {
                e.label = Some(format!("{}/TCP", rng.below(65536)));
            }
            e
        })
        .collect();
    (nodes, edges)
}

/// Checks the geometric promises of a layout and of its picture.
fn check_geometry(l: &Layout, glyphs: Glyphs) {
    for (i, a) in l.boxes.iter().enumerate() {
        assert!(
            a.rect.x + a.rect.w <= l.width && a.rect.y + a.rect.h <= l.height,
            "{} outside",
            a.id
        );
        for b in &l.boxes[i + 1..] {
            assert!(!a.rect.overlaps(&b.rect), "{} overlaps {}", a.id, b.id);
        }
    }
    let canvas = render(l, glyphs, None);
    assert_eq!((canvas.width(), canvas.height()), (l.width, l.height));
    for r in &l.routes {
        let target = l.node(&r.to).expect("target box");
        let source = l.node(&r.from).expect("source box");
        let cells = r.cells();
        for pair in cells.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert_eq!(
                a.0.abs_diff(b.0) + a.1.abs_diff(b.1),
                1,
                "{}->{} path jumps",
                r.from,
                r.to
            );
        }
        let interior = |b: &skymap_tui::map::NodeBox, c: (usize, usize)| b.rect.contains(c.0, c.1);
        for &c in &cells {
            assert!(
                c.0 < l.width && c.1 < l.height,
                "{}->{} leaves the canvas",
                r.from,
                r.to
            );
            if c != r.attach() {
                assert!(
                    !l.boxes.iter().any(|b| interior(b, c)),
                    "{}->{} runs through a box at {c:?}",
                    r.from,
                    r.to
                );
            }
        }
        let (ax, ay) = r.arrow();
        let rect = target.rect;
        assert!(
            ay > rect.y && ay < rect.y + rect.h - 1,
            "{}->{} arrow off the box side",
            r.from,
            r.to
        );
        if r.reversed {
            assert_eq!(ax, rect.x + rect.w, "{}->{} reversed arrow", r.from, r.to);
            assert_eq!(
                canvas.get(ax, ay).map(|c| c.0),
                Some(if glyphs == Glyphs::Ascii { '<' } else { '◀' })
            );
        } else {
            assert_eq!(ax + 1, rect.x, "{}->{} arrow", r.from, r.to);
            assert_eq!(
                canvas.get(ax, ay).map(|c| c.0),
                Some(if glyphs == Glyphs::Ascii { '>' } else { '▶' })
            );
        }
        assert_eq!(
            canvas.get(ax, ay).map(|c| c.1),
            Some(CellRole::Arrow(r.health))
        );
        let (px, _) = r.attach();
        let side = if r.reversed {
            source.rect.x
        } else {
            source.rect.x + source.rect.w - 1
        };
        assert_eq!(
            px, side,
            "{}->{} attaches to its source's side",
            r.from, r.to
        );
    }
}

#[test]
fn chain_of_three_in_ascii_and_unicode() {
    let nodes = vec![node("c", ""), node("a", ""), node("b", "")];
    let edges = vec![edge("b", "c"), edge("a", "b")];
    insta::assert_snapshot!(draw(&nodes, &edges, Glyphs::Ascii), @r#"
+----+       +----+       +----+
| a  +------>| b  +------>| c  |
+----+       +----+       +----+
"#);
    insta::assert_snapshot!(draw(&nodes, &edges, Glyphs::Unicode), @r#"
┌────┐       ┌────┐       ┌────┐
│ a  ├──────▶│ b  ├──────▶│ c  │
└────┘       └────┘       └────┘
"#);
}

#[test]
fn dns_story_marks_the_dropped_edge() {
    let (nodes, edges) = dns_story();
    insta::assert_snapshot!(draw(&nodes, &edges, Glyphs::Unicode), @r#"
╭ shop ────────╮             ╭ kube-system ─╮              ┌───────┐
│ ┌──────────┐ │             │ ┌──────────┐ │         ┌───▶│ world │
│ │ frontend ├╌┼╌✗ 53/UDP╌╌╌╌┼▶│ kube-dns │ │         │    └───────┘
│ │   12/s   ├─┼─8080/TCP─┐  │ └──────────┘ │         │
│ └──────────┘ │          │  ╰──────────────╯         │
╰──────────────╯          │                           │
                          │  ╭ shop ────────╮         │
                          │  │ ┌─────────┐  │         │
                          └──┼▶│ backend ├──┼─443/TCP─┘
                             │ └─────────┘  │
                             ╰──────────────╯
"#);
    insta::assert_snapshot!(draw(&nodes, &edges, Glyphs::Ascii), @r#"
+ shop --------+             + kube-system -+              +-------+
| +----------+ |             | +----------+ |         +--->| world |
| | frontend +.+.x 53/UDP....+>| kube-dns | |         |    +-------+
| |   12/s   +-+-8080/TCP-+  | +----------+ |         |
| +----------+ |          |  +--------------+         |
+--------------+          |                           |
                          |  + shop --------+         |
                          |  | +---------+  |         |
                          +--+>| backend +--+-443/TCP-+
                             | +---------+  |
                             +--------------+
"#);
    let l = layout(&nodes, &edges);
    let canvas = render(&l, Glyphs::Unicode, None);
    let dropped = l
        .routes
        .iter()
        .find(|r| r.to == "kube-dns")
        .expect("route to kube-dns");
    assert_eq!(dropped.health, EdgeHealth::Dropped);
    let (lx, ly) = dropped.label_at.expect("label");
    assert_eq!(
        canvas.get(lx, ly),
        Some(('✗', CellRole::Label(EdgeHealth::Dropped)))
    );
    let dashed = dropped
        .cells()
        .iter()
        .filter(|&&(x, y)| canvas.get(x, y).map(|c| c.0) == Some('╌'))
        .count();
    assert!(
        dashed >= 3,
        "dropped edge is dashed, got {dashed} dashed cells"
    );
    check_geometry(&l, Glyphs::Unicode);
}

#[test]
fn cycle_lays_out_with_arrows_at_the_right_boxes() {
    let nodes = vec![node("a", ""), node("b", ""), node("c", "")];
    let edges = vec![
        edge("a", "b"),
        edge("b", "c"),
        edge("c", "a"),
        edge("a", "a"),
    ];
    let l = layout(&nodes, &edges);
    assert_eq!(
        l.routes.len(),
        3,
        "the self-loop gets a marker, not a route"
    );
    assert_eq!(l.routes.iter().filter(|r| r.reversed).count(), 1);
    let back = l
        .routes
        .iter()
        .find(|r| r.reversed)
        .expect("a reversed edge");
    assert_eq!((back.from.as_str(), back.to.as_str()), ("c", "a"));
    assert!(l.node("a").expect("a").self_loop);
    check_geometry(&l, Glyphs::Unicode);
    check_geometry(&l, Glyphs::Ascii);
    insta::assert_snapshot!(render(&l, Glyphs::Unicode, Some("b")).to_text(), @r#"
┌───↺┐         ┏━━━━┓         ┌────┐
│ a  ├────────▶┃ b  ┝────────▶│ c  │
│    │◀───┐    ┗━━━━┛    ┌────┤    │
└────┘    │              │    └────┘
          └──────────────┘
"#);
}

#[test]
fn generated_graphs_keep_boxes_apart_and_routes_sound() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..200 {
        let (nodes, edges) = random_graph(&mut rng, 40, 2);
        let l = layout(&nodes, &edges);
        assert_eq!(l.boxes.len(), nodes.len(), "round {round}");
        let loops = edges.iter().filter(|e| e.from == e.to).count();
        assert_eq!(l.routes.len(), edges.len() - loops, "round {round}");
        check_geometry(
            &l,
            if round % 2 == 0 {
                Glyphs::Unicode
            } else {
                Glyphs::Ascii
            },
        );
    }
}

#[test]
fn shuffled_input_gives_identical_pictures() {
    let mut rng = Rng(42);
    for _ in 0..20 {
        let (nodes, edges) = random_graph(&mut rng, 25, 2);
        let (mut n2, mut e2) = (nodes.clone(), edges.clone());
        for i in (1..n2.len()).rev() {
            n2.swap(i, rng.below(i + 1));
        }
        for i in (1..e2.len()).rev() {
            e2.swap(i, rng.below(i + 1));
        }
        assert_eq!(
            draw(&nodes, &edges, Glyphs::Unicode),
            draw(&n2, &e2, Glyphs::Unicode)
        );
    }
}

#[test]
fn thousand_nodes_two_thousand_edges_lay_out() {
    let mut rng = Rng(7);
    let nodes: Vec<MapNode> = (0..1000)
        .map(|i| node(&format!("w{i}"), ["", "a", "b"][i % 3]))
        .collect();
    let edges: Vec<MapEdge> = (0..2000)
        .map(|_| edge(&nodes[rng.below(1000)].id, &nodes[rng.below(1000)].id))
        .collect();
    let l = layout(&nodes, &edges);
    assert_eq!(l.boxes.len(), 1000);
    let loops = edges.iter().filter(|e| e.from == e.to).count();
    assert_eq!(l.routes.len(), 2000 - loops);
}

#[test]
fn empty_graph_and_single_node() {
    let l = layout(&[], &[]);
    assert_eq!((l.width, l.height), (0, 0));
    assert_eq!(render(&l, Glyphs::Unicode, None).to_text(), "");
    let mut one = node("checkout", "shop");
    one.badge = Some("3/s".into());
    insta::assert_snapshot!(draw(&[one], &[edge("checkout", "ghost")], Glyphs::Unicode), @r#"
╭ shop ────────╮
│ ┌──────────┐ │
│ │ checkout │ │
│ │   3/s    │ │
│ └──────────┘ │
╰──────────────╯
"#);
}

#[test]
fn focus_keeps_callers_and_callees_and_counts_the_rest() {
    let (nodes, mut edges) = dns_story();
    edges.push(edge("world", "kube-dns"));
    let (n, e) = focus(&nodes, &edges, "backend");
    let ids: Vec<&str> = n.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["frontend", "backend", "world", FOCUS_OTHERS_ID]);
    assert_eq!(n[3].label, "+1 more");
    assert_eq!(e.len(), 2);
    assert!(focus(&nodes, &edges, "nobody").0.is_empty());
}

#[test]
fn hostile_labels_are_sanitized_and_cut() {
    let mut evil = node("evil", "");
    evil.label = "\u{1b}[31mred\u{7}".into();
    let text = draw(&[evil, node("x", "")], &[edge("evil", "x")], Glyphs::Ascii);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("\u{FFFD}[31mred\u{FFFD}"), "{text}");
}

#[test]
fn a_window_shows_the_same_cells_as_the_whole_map() {
    let (nodes, edges) = dns_story();
    let l = layout(&nodes, &edges);
    let whole = render(&l, Glyphs::Unicode, Some("frontend"));
    let window = Rect {
        x: 10,
        y: 2,
        w: 30,
        h: 6,
    };
    let part = render_window(&l, Glyphs::Unicode, Some("frontend"), window);
    assert_eq!(
        (part.width(), part.height(), part.origin()),
        (30, 6, (10, 2))
    );
    for y in 0..6 {
        for x in 0..30 {
            assert_eq!(part.get(x, y), whole.get(x + 10, y + 2), "cell ({x}, {y})");
        }
    }
    insta::assert_snapshot!(part.to_text(), @r#"
nd ┝╌┼╌✗ 53/UDP╌╌╌╌┼▶│ kube-dn
   ┝─┼─8080/TCP─┐  │ └────────
━━━┛ │          │  ╰──────────
─────╯          │
                │  ╭ shop ────
                │  │ ┌────────
"#);
    // Past the map's edge the window is blank rather than out of bounds.
    let beyond = render_window(
        &l,
        Glyphs::Ascii,
        None,
        Rect {
            x: l.width - 3,
            y: 0,
            w: 10,
            h: 2,
        },
    );
    assert_eq!(beyond.get(9, 1), Some((' ', CellRole::Empty)));
}
