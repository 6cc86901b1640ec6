//! The map widget (styles per cell, selection, clipping at any offset and size)
//! and keyboard navigation over a small known layout.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect as Area;
use ratatui::style::{Color, Style};
use ratatui::widgets::Widget;
use skymap_tui::map::{
    CellRole, EdgeHealth, Glyphs, Layout, MapEdge, MapNode, layout, render, render_window,
};
use skymap_tui::ui::map::{
    Direction, EdgeStyles, MapStyles, MapView, center_on, clamp_offset, first_node, neighbour,
    scroll_into_view,
};

fn node(id: &str) -> MapNode {
    MapNode {
        id: id.to_string(),
        label: id.to_string(),
        group: String::new(),
        badge: None,
    }
}

fn edge(from: &str, to: &str, health: EdgeHealth) -> MapEdge {
    MapEdge {
        from: from.to_string(),
        to: to.to_string(),
        label: None,
        health,
    }
}

/// The small map every test here uses:
///
/// ```text
///   ┌─────┐         ┌─────┐                      ┌───────┐
///   │ web ├────────▶│ api ├─────────────────────▶│ cache │
///   │     ├────┐    │     ├╌╌╌╌╌✗ dropped╌╌╌┐    └───────┘
///   └─────┘    │    └─────┘                 ╎
///              │                            ╎    ┌────┐
///              │    ┌───────┐               └╌╌╌▶│ db │
///              └───▶│ queue ├─────────────┐      └────┘
///                   └───────┘             │
///                                         │      ┌────────┐
///                                         └─────▶│ worker │
///                                                └────────┘
/// ```
fn shop() -> Layout {
    let nodes: Vec<MapNode> = ["api", "web", "db", "cache", "queue", "worker"]
        .into_iter()
        .map(node)
        .collect();
    let edges = vec![
        edge("web", "api", EdgeHealth::Ok),
        edge("api", "db", EdgeHealth::Dropped),
        edge("api", "cache", EdgeHealth::Ok),
        edge("web", "queue", EdgeHealth::Error),
        edge("queue", "worker", EdgeHealth::Ok),
    ];
    layout(&nodes, &edges)
}

fn fg(c: Color) -> Style {
    Style::default().fg(c)
}

/// Every kind of cell in its own colour.
fn styles() -> MapStyles {
    let edge = |line, arrow, label| EdgeStyles {
        line: fg(line),
        arrow: fg(arrow),
        label: fg(label),
    };
    MapStyles {
        border: fg(Color::Gray),
        text: fg(Color::White),
        group: fg(Color::Blue),
        selected: fg(Color::Yellow),
        ok: edge(Color::Green, Color::LightGreen, Color::Indexed(2)),
        warning: edge(Color::Indexed(3), Color::Indexed(11), Color::Indexed(4)),
        error: edge(Color::Indexed(1), Color::Indexed(9), Color::Indexed(5)),
        dropped: edge(Color::Red, Color::LightRed, Color::Magenta),
    }
}

fn paint(view: &MapView, w: u16, h: u16) -> Buffer {
    let mut buf = Buffer::empty(Area::new(0, 0, w, h));
    view.render(buf.area, &mut buf);
    buf
}

fn symbol(buf: &Buffer, x: u16, y: u16) -> &str {
    buf.cell((x, y)).map_or("?", |c| c.symbol())
}

fn cells_with(buf: &Buffer, colour: Color) -> Vec<(u16, u16, String)> {
    let area = buf.area;
    (0..area.height)
        .flat_map(|y| (0..area.width).map(move |x| (x, y)))
        .filter_map(|(x, y)| {
            let cell = buf.cell((x, y))?;
            (cell.fg == colour).then(|| (x, y, cell.symbol().to_string()))
        })
        .collect()
}

#[test]
fn the_dropped_edge_is_painted_in_the_dropped_styles() {
    let l = shop();
    let s = styles();
    let buf = paint(&MapView::new(&l, &s), 59, 11);
    let dropped = l
        .routes
        .iter()
        .find(|r| r.health == EdgeHealth::Dropped)
        .expect("the api -> db route");
    let on_route = dropped.cells();

    // Five dashes, the corner, two dashed verticals, the corner, three dashes.
    let lines = cells_with(&buf, Color::Red);
    assert_eq!(lines.len(), 15, "{lines:?}");
    for (x, y, sym) in &lines {
        assert!(
            on_route.contains(&(usize::from(*x), usize::from(*y))),
            "({x}, {y}) is off the route"
        );
        assert!(["╌", "╎", "┐", "└"].contains(&sym.as_str()), "{sym}");
    }
    let label: String = cells_with(&buf, Color::Magenta)
        .into_iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(label, "✗ dropped");
    let (ax, ay) = dropped.arrow();
    let arrow = buf.cell((ax as u16, ay as u16)).expect("arrow cell");
    assert_eq!((arrow.symbol(), arrow.fg), ("▶", Color::LightRed));

    // The healthy calls out of api are green, its port is a border.
    let healthy = l
        .routes
        .iter()
        .find(|r| r.to == "cache")
        .expect("api -> cache");
    let (px, py) = healthy.attach();
    let port = buf.cell((px as u16, py as u16)).expect("port cell");
    assert_eq!((port.symbol(), port.fg), ("├", Color::Gray));
    assert_eq!(buf.cell((30, 1)).map(|c| c.fg), Some(Color::Green));
}

#[test]
fn the_selected_node_uses_the_selected_style() {
    let l = shop();
    let s = styles();
    let buf = paint(&MapView::new(&l, &s).selected(Some("api")), 59, 11);
    let rect = l.node("api").expect("api").rect;
    let yellow = cells_with(&buf, Color::Yellow);
    // The whole border (2 × 7 + 2 × 2 cells, ports included) and the label.
    assert_eq!(yellow.len(), 18 + 3, "{yellow:?}");
    for (x, y, _) in &yellow {
        assert!(rect.contains(usize::from(*x), usize::from(*y)));
    }
    assert_eq!(symbol(&buf, 18, 0), "┏");
    assert_eq!(symbol(&buf, 24, 2), "┝", "the port of the dropped call");
    let web = buf.cell((2, 0)).expect("web's corner");
    assert_eq!((web.symbol(), web.fg), ("┌", Color::Gray));
    let text = buf.cell((4, 1)).expect("web's label");
    assert_eq!((text.symbol(), text.fg), ("w", Color::White));
}

#[test]
fn an_offset_puts_that_map_cell_at_the_areas_corner() {
    let l = shop();
    let s = styles();
    let db = l.node("db").expect("db").rect;
    let view = MapView::new(&l, &s).offset((db.x, db.y));
    let mut buf = Buffer::filled(Area::new(0, 0, 20, 8), ratatui::buffer::Cell::new("·"));
    let area = Area::new(3, 2, 12, 4);
    (&view).render(area, &mut buf);
    let corner = buf.cell((3, 2)).expect("corner");
    assert_eq!((corner.symbol(), corner.fg), ("┌", Color::Gray));
    assert_eq!(symbol(&buf, 3 + 5, 2), "┐");
    assert_eq!(symbol(&buf, 3 + 2, 3), "d");
    // Outside the area nothing changed, whatever the map has there.
    assert_eq!(symbol(&buf, 2, 3), "·");
    assert_eq!(symbol(&buf, 0, 0), "·");
    assert_eq!(symbol(&buf, 3, 6), "·");

    // Past the map's right and bottom edges the buffer keeps its cells.
    let mut buf = Buffer::filled(Area::new(0, 0, 20, 8), ratatui::buffer::Cell::new("·"));
    MapView::new(&l, &s)
        .offset((50, 6))
        .render(buf.area, &mut buf);
    assert_eq!(symbol(&buf, 0, 2), "─", "worker's top border");
    assert_eq!(symbol(&buf, 6, 2), "┐");
    assert_eq!(symbol(&buf, 15, 1), "·");
    assert_eq!(symbol(&buf, 0, 7), "·");
}

#[test]
fn tiny_areas_and_huge_offsets_do_not_panic() {
    let l = shop();
    let s = styles();
    let blank = Buffer::empty(Area::new(0, 0, 20, 8));
    for offset in [
        (usize::MAX, usize::MAX),
        (usize::MAX, 0),
        (0, usize::MAX),
        (l.width, l.height),
    ] {
        let mut buf = blank.clone();
        MapView::new(&l, &s)
            .offset(offset)
            .render(buf.area, &mut buf);
        assert_eq!(buf, blank, "{offset:?}");
    }
    let mut buf = blank.clone();
    MapView::new(&l, &s).render(Area::new(0, 0, 0, 0), &mut buf);
    MapView::new(&l, &s).render(Area::new(5, 5, 0, 3), &mut buf);
    assert_eq!(buf, blank);
    // An area larger than the buffer, or outside it, is cut to the buffer.
    MapView::new(&l, &s).render(Area::new(100, 100, 50, 50), &mut buf);
    assert_eq!(buf, blank);
    MapView::new(&l, &s)
        .offset((2, 0))
        .render(Area::new(0, 0, 500, 500), &mut buf);
    assert_eq!(symbol(&buf, 0, 0), "┌");

    let mut small = Buffer::empty(Area::new(0, 0, 2, 2));
    MapView::new(&l, &s)
        .offset((2, 0))
        .glyphs(Glyphs::Ascii)
        .render(small.area, &mut small);
    let picture: Vec<&str> = small.content().iter().map(|c| c.symbol()).collect();
    assert_eq!(picture, ["+", "-", "|", " "]);

    // An area ending at the last cell a terminal coordinate can name.
    let mut far = Buffer::empty(Area::new(u16::MAX - 3, u16::MAX - 2, 3, 2));
    MapView::new(&l, &s)
        .offset((2, 0))
        .render(far.area, &mut far);
    let picture: Vec<&str> = far.content().iter().map(|c| c.symbol()).collect();
    assert_eq!(picture, ["┌", "─", "─", "│", " ", "w"]);

    let empty = Layout::default();
    let mut buf = blank.clone();
    MapView::new(&empty, &s)
        .selected(Some("nobody"))
        .render(buf.area, &mut buf);
    assert_eq!(buf, blank);
}

#[test]
fn styles_follow_the_cell_role() {
    let s = styles();
    assert_eq!(s.style(CellRole::Empty), Style::default());
    assert_eq!(s.style(CellRole::Group), fg(Color::Blue));
    assert_eq!(
        s.style(CellRole::Label(EdgeHealth::Warning)),
        fg(Color::Indexed(4))
    );
    assert_eq!(
        s.style(CellRole::Arrow(EdgeHealth::Error)),
        fg(Color::Indexed(9))
    );
    assert_eq!(s.style(CellRole::Edge(EdgeHealth::Ok)), fg(Color::Green));
    assert_eq!(
        MapStyles::default().style(CellRole::Selected),
        Style::default()
    );
}

#[test]
fn arrow_keys_move_to_the_nearest_box_that_way() {
    let l = shop();
    let step = |from: &str, dir| neighbour(&l, from, dir);
    assert_eq!(first_node(&l), Some("web"));
    assert_eq!(step("web", Direction::Right), Some("api"));
    assert_eq!(step("api", Direction::Right), Some("cache"));
    assert_eq!(step("api", Direction::Down), Some("queue"));
    assert_eq!(step("queue", Direction::Up), Some("api"));
    assert_eq!(step("cache", Direction::Down), Some("db"));
    assert_eq!(step("worker", Direction::Up), Some("db"));
    // queue shares rows with db, api does not, though both are as far left.
    assert_eq!(step("db", Direction::Left), Some("queue"));
    // api shares rows with cache; queue is nearer but lower.
    assert_eq!(step("cache", Direction::Left), Some("api"));
    // Nothing below web in its column: the nearest box down and across.
    assert_eq!(step("web", Direction::Down), Some("queue"));
    assert_eq!(step("web", Direction::Left), None);
    assert_eq!(step("web", Direction::Up), None);
    assert_eq!(step("worker", Direction::Down), None);
    assert_eq!(step("cache", Direction::Right), None);
    assert_eq!(step("ghost", Direction::Right), None);
    assert_eq!(first_node(&Layout::default()), None);
}

#[test]
fn centring_and_scrolling_keep_the_node_in_view() {
    let l = shop();
    assert_eq!((l.width, l.height), (59, 11));
    // db's centre (50, 5) would put the view at (40, 3): one column past the end.
    assert_eq!(center_on(&l, "db", 20, 5), (39, 3));
    assert_eq!(center_on(&l, "web", 20, 5), (0, 0));
    assert_eq!(center_on(&l, "api", 10, 4), (16, 0));
    assert_eq!(center_on(&l, "db", 100, 50), (0, 0));
    assert_eq!(center_on(&l, "ghost", 20, 5), (0, 0));

    // worker is at x 47..57, y 8..11.
    assert_eq!(scroll_into_view(&l, "worker", (0, 0), 30, 6), (27, 5));
    assert_eq!(scroll_into_view(&l, "api", (10, 0), 30, 6), (10, 0));
    assert_eq!(scroll_into_view(&l, "web", (27, 5), 30, 6), (2, 0));
    // Bigger than the view: its top-left corner.
    assert_eq!(scroll_into_view(&l, "worker", (0, 0), 5, 2), (47, 8));
    assert_eq!(scroll_into_view(&l, "ghost", (500, 500), 30, 6), (29, 5));

    assert_eq!(clamp_offset(&l, (usize::MAX, usize::MAX), 20, 5), (39, 6));
    assert_eq!(clamp_offset(&l, (3, 4), 20, 5), (3, 4));
    assert_eq!(clamp_offset(&l, (3, 4), 80, 20), (0, 0));
}

/// Seeded xorshift, so the generated map is the same on every run.
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

#[test]
fn every_viewport_of_a_big_map_matches_the_whole_picture() {
    let mut rng = Rng(0xDEC0DE);
    let healths = [
        EdgeHealth::Ok,
        EdgeHealth::Warning,
        EdgeHealth::Error,
        EdgeHealth::Dropped,
    ];
    let nodes: Vec<MapNode> = (0..120)
        .map(|i| MapNode {
            group: ["", "prod", "kube-system"][i % 3].to_string(),
            badge: (i % 4 == 0).then(|| "7/s".to_string()),
            ..node(&format!("w{i:03}"))
        })
        .collect();
    let edges: Vec<MapEdge> = (0..500)
        .map(|_| MapEdge {
            label: (rng.below(2) == 0).then(|| format!("{}/TCP", rng.below(9000))),
            ..edge(
                &nodes[rng.below(120)].id,
                &nodes[rng.below(120)].id,
                healths[rng.below(4)],
            )
        })
        .collect();
    let l = layout(&nodes, &edges);
    let whole = render(&l, Glyphs::Unicode, Some("w007"));
    let s = MapStyles::default();
    let (w, h) = (37u16, 13u16);
    let mut checked = 0;
    for oy in (0..l.height).step_by(usize::from(h) - 3) {
        for ox in (0..l.width).step_by(usize::from(w) + 5) {
            let buf = paint(
                &MapView::new(&l, &s).offset((ox, oy)).selected(Some("w007")),
                w,
                h,
            );
            for y in 0..h {
                for x in 0..w {
                    let (mx, my) = (ox + usize::from(x), oy + usize::from(y));
                    let expected = match whole.get(mx, my) {
                        Some((ch, role)) if role != CellRole::Empty => ch.to_string(),
                        _ => " ".to_string(),
                    };
                    assert_eq!(symbol(&buf, x, y), expected, "map cell ({mx}, {my})");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 50_000, "{checked} cells checked");
    // The bare painter agrees on a window in the middle, roles included.
    let (x0, y0) = (l.width / 2, l.height / 2);
    let window = skymap_tui::map::Rect {
        x: x0,
        y: y0,
        w: 40,
        h: 10,
    };
    let part = render_window(&l, Glyphs::Unicode, Some("w007"), window);
    for y in 0..10 {
        for x in 0..40 {
            assert_eq!(part.get(x, y), whole.get(x0 + x, y0 + y), "({x}, {y})");
        }
    }
}
