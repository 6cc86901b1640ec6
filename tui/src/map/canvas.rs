//! The character grid and the painter that turns a [`Layout`] into it.
//!
//! Lines (edges and namespace frames) are collected as connection masks first, so
//! wherever lines meet the right join or crossing glyph comes out.

use super::EdgeHealth;
use super::index::{RouteIndex, Run};
use super::layout::{DROPPED_WORD, Layout, MAX_LABEL, MAX_TEXT, Rect, text_width};

/// Which characters to draw with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glyphs {
    /// Box drawing and arrows.
    Unicode,
    /// `-|+>` only, for `--ascii` and poor terminals.
    Ascii,
}

/// What a cell shows, for the theme to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellRole {
    Empty,
    Border,
    Text,
    Group,
    Edge(EdgeHealth),
    Arrow(EdgeHealth),
    Label(EdgeHealth),
    /// Border and text of the selected node.
    Selected,
}

/// A painted map, or a window of one: `width × height` cells, row by row, whose
/// top-left cell is the map's cell [`Canvas::origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: usize,
    height: usize,
    origin: (usize, usize),
    cells: Vec<(char, CellRole)>,
}

impl Canvas {
    /// A blank canvas.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            origin: (0, 0),
            cells: vec![(' ', CellRole::Empty); width * height],
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The map cell shown at (0, 0).
    pub fn origin(&self) -> (usize, usize) {
        self.origin
    }

    /// The cell at (x, y) of the canvas (not of the map); `None` outside.
    pub fn get(&self, x: usize, y: usize) -> Option<(char, CellRole)> {
        (x < self.width && y < self.height).then(|| self.cells[y * self.width + x])
    }

    /// Row `y`, for painting a window of the map; empty outside the canvas.
    pub fn row(&self, y: usize) -> &[(char, CellRole)] {
        if y < self.height {
            &self.cells[y * self.width..(y + 1) * self.width]
        } else {
            &[]
        }
    }

    /// Rows joined by `\n`, trailing spaces trimmed.
    pub fn to_text(&self) -> String {
        (0..self.height)
            .map(|y| {
                self.row(y)
                    .iter()
                    .map(|c| c.0)
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Paints the map cell (x, y) if it falls inside the window.
    fn set(&mut self, x: usize, y: usize, ch: char, role: CellRole) {
        let (Some(x), Some(y)) = (x.checked_sub(self.origin.0), y.checked_sub(self.origin.1))
        else {
            return;
        };
        if x < self.width && y < self.height {
            self.cells[y * self.width + x] = (ch, role);
        }
    }

    fn text(&mut self, x: usize, y: usize, text: &str, role: CellRole) {
        for (i, ch) in text.chars().enumerate() {
            self.set(x + i, y, ch, role);
        }
    }
}

const N: u8 = 1;
const E: u8 = 2;
const S: u8 = 4;
const W: u8 = 8;

/// Lines before they become glyphs: connection masks of the window's cells.
struct Lines {
    origin: (usize, usize),
    width: usize,
    height: usize,
    mask: Vec<u8>,
    role: Vec<CellRole>,
}

impl Lines {
    fn new(window: &Rect) -> Self {
        Self {
            origin: (window.x, window.y),
            width: window.w,
            height: window.h,
            mask: vec![0; window.w * window.h],
            role: vec![CellRole::Empty; window.w * window.h],
        }
    }

    /// The part of `run` inside the window along an axis starting at `origin`
    /// and `len` long, in window coordinates.
    fn clip(run: &Run, origin: usize, len: usize) -> std::ops::Range<usize> {
        let lo = run.lo.max(origin);
        let hi = run.hi.saturating_add(1).min(origin.saturating_add(len));
        lo.saturating_sub(origin)..hi.saturating_sub(origin).max(lo.saturating_sub(origin))
    }

    /// Joins each cell of `run` to its neighbours along it; `fwd` and `back` are
    /// the bits towards higher and lower coordinates.
    fn each(&mut self, run: &Run, along_x: bool, at: usize, role: CellRole, [back, fwd]: [u8; 2]) {
        let (origin, len, cross_origin, cross_len) = if along_x {
            (self.origin.0, self.width, self.origin.1, self.height)
        } else {
            (self.origin.1, self.height, self.origin.0, self.width)
        };
        let Some(cross) = at.checked_sub(cross_origin).filter(|&c| c < cross_len) else {
            return;
        };
        for local in Self::clip(run, origin, len) {
            let pos = origin + local;
            if (pos == run.lo && run.lo_is_end) || (pos == run.hi && run.hi_is_end) {
                continue;
            }
            let mut bits = 0;
            if pos > run.lo {
                bits |= back;
            }
            if pos < run.hi {
                bits |= fwd;
            }
            let i = if along_x {
                cross * self.width + local
            } else {
                local * self.width + cross
            };
            if let (Some(m), Some(r)) = (self.mask.get_mut(i), self.role.get_mut(i)) {
                *m |= bits;
                *r = strongest(*r, role);
            }
        }
    }

    fn horizontal(&mut self, y: usize, run: &Run, role: CellRole) {
        self.each(run, true, y, role, [W, E]);
    }

    fn vertical(&mut self, x: usize, run: &Run, role: CellRole) {
        self.each(run, false, x, role, [N, S]);
    }

    /// A namespace frame's outline.
    fn frame(&mut self, r: &Rect) {
        if r.w < 2 || r.h < 2 {
            return;
        }
        let (x1, y1) = (r.x + r.w - 1, r.y + r.h - 1);
        let side = |lo, hi| Run {
            route: 0,
            lo,
            hi,
            lo_is_end: false,
            hi_is_end: false,
        };
        for y in [r.y, y1] {
            self.horizontal(y, &side(r.x, x1), CellRole::Group);
        }
        for x in [r.x, x1] {
            self.vertical(x, &side(r.y, y1), CellRole::Group);
        }
    }
}

/// Edge roles win over frames, and worse health over better.
fn strongest(old: CellRole, new: CellRole) -> CellRole {
    match (old, new) {
        (CellRole::Edge(a), CellRole::Edge(b)) => CellRole::Edge(a.max(b)),
        (CellRole::Edge(_), _) => old,
        _ => new,
    }
}

fn line_glyph(mask: u8, role: CellRole, glyphs: Glyphs) -> char {
    let dashed = role == CellRole::Edge(EdgeHealth::Dropped);
    let rounded = role == CellRole::Group;
    match glyphs {
        Glyphs::Ascii => match mask {
            0 => ' ',
            m if m & (N | S) == 0 => {
                if dashed {
                    '.'
                } else {
                    '-'
                }
            }
            m if m & (E | W) == 0 => {
                if dashed {
                    ':'
                } else {
                    '|'
                }
            }
            _ => '+',
        },
        Glyphs::Unicode => match mask {
            0 => ' ',
            m if m & (N | S) == 0 => {
                if dashed {
                    '╌'
                } else {
                    '─'
                }
            }
            m if m & (E | W) == 0 => {
                if dashed {
                    '╎'
                } else {
                    '│'
                }
            }
            m if m == E | S => {
                if rounded {
                    '╭'
                } else {
                    '┌'
                }
            }
            m if m == W | S => {
                if rounded {
                    '╮'
                } else {
                    '┐'
                }
            }
            m if m == N | E => {
                if rounded {
                    '╰'
                } else {
                    '└'
                }
            }
            m if m == N | W => {
                if rounded {
                    '╯'
                } else {
                    '┘'
                }
            }
            m if m == N | E | S => '├',
            m if m == N | W | S => '┤',
            m if m == E | W | S => '┬',
            m if m == N | E | W => '┴',
            _ => '┼',
        },
    }
}

/// The lines (namespace frames and edges) crossing `window`.
fn collect_lines(layout: &Layout, index: &RouteIndex, window: &Rect) -> Lines {
    let health = |route: usize| {
        layout
            .routes
            .get(route)
            .map_or(EdgeHealth::Ok, |r| r.health)
    };
    // Masks and roles combine the same in any order, so lines are collected by
    // row and column rather than route by route.
    let mut lines = Lines::new(window);
    for frame in layout.groups.iter().filter(|g| g.rect.overlaps(window)) {
        lines.frame(&frame.rect);
    }
    for y in window.y..window.y.saturating_add(window.h) {
        for run in index.row(y) {
            lines.horizontal(y, run, CellRole::Edge(health(run.route)));
        }
    }
    for x in window.x..window.x.saturating_add(window.w) {
        for run in index.col(x) {
            lines.vertical(x, run, CellRole::Edge(health(run.route)));
        }
    }
    lines
}

/// Cuts `text` to `width` cells, marking the cut.
fn fit(text: &str, width: usize, glyphs: Glyphs) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    let ellipsis = if glyphs == Glyphs::Ascii { '~' } else { '…' };
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push(ellipsis);
    }
    out
}

/// The whole map; `selected` names the node to highlight (heavy border in Unicode,
/// `#`/`=` in ASCII, so it shows without colour).
pub fn render(layout: &Layout, glyphs: Glyphs, selected: Option<&str>) -> Canvas {
    let whole = Rect {
        x: 0,
        y: 0,
        w: layout.width,
        h: layout.height,
    };
    render_window(layout, glyphs, selected, whole)
}

/// Like [`render`], but only the map cells inside `window`, so a frame of a large
/// map costs the screen's size, not the map's. Parts of the window beyond the map
/// stay empty.
pub fn render_window(
    layout: &Layout,
    glyphs: Glyphs,
    selected: Option<&str>,
    window: Rect,
) -> Canvas {
    let (width, height) = (window.w, window.h);
    let mut canvas = Canvas::new(width, height);
    canvas.origin = (window.x, window.y);
    if width == 0 || height == 0 {
        return canvas;
    }
    let y_end = window.y.saturating_add(height);
    let rebuilt;
    let index = if layout.index.fits(&layout.routes) {
        &layout.index
    } else {
        rebuilt = RouteIndex::new(&layout.routes);
        &rebuilt
    };
    let lines = collect_lines(layout, index, &window);
    for (i, (&mask, &role)) in lines.mask.iter().zip(&lines.role).enumerate() {
        if mask != 0 {
            canvas.set(
                window.x + i % width,
                window.y + i / width,
                line_glyph(mask, role, glyphs),
                role,
            );
        }
    }

    for frame in layout.groups.iter().filter(|g| g.rect.overlaps(&window)) {
        let name = fit(&frame.name, frame.rect.w.saturating_sub(4), glyphs);
        if !name.is_empty() {
            canvas.text(
                frame.rect.x + 1,
                frame.rect.y,
                &format!(" {name} "),
                CellRole::Group,
            );
        }
    }

    for b in layout.boxes.iter().filter(|b| b.rect.overlaps(&window)) {
        let is_selected = selected == Some(b.id.as_str());
        draw_box(&mut canvas, &b.rect, &window, glyphs, is_selected);
        let (text_role, border_role) = if is_selected {
            (CellRole::Selected, CellRole::Selected)
        } else {
            (CellRole::Text, CellRole::Border)
        };
        let inner = b.rect.w.saturating_sub(4).min(MAX_TEXT);
        let mut rows = vec![fit(&b.label, inner, glyphs)];
        rows.extend(b.badge.as_deref().map(|t| fit(t, inner, glyphs)));
        for (k, row) in rows.iter().enumerate() {
            let pad = (b.rect.w.saturating_sub(2) - text_width(row)) / 2;
            canvas.text(b.rect.x + 1 + pad, b.rect.y + 1 + k, row, text_role);
        }
        if b.self_loop {
            let mark = if glyphs == Glyphs::Ascii { '@' } else { '↺' };
            canvas.set(b.rect.x + b.rect.w - 2, b.rect.y, mark, border_role);
        }
    }

    // Later routes' marks cover earlier ones', as when painting every route.
    let mut marked: Vec<usize> = (window.y..y_end)
        .flat_map(|y| index.marks(y).iter().copied())
        .collect();
    marked.sort_unstable();
    marked.dedup();
    for route in marked.iter().filter_map(|&i| layout.routes.get(i)) {
        let (ax, ay) = route.arrow();
        let arrow = match (glyphs, route.reversed) {
            (Glyphs::Unicode, false) => '▶',
            (Glyphs::Unicode, true) => '◀',
            (Glyphs::Ascii, false) => '>',
            (Glyphs::Ascii, true) => '<',
        };
        canvas.set(ax, ay, arrow, CellRole::Arrow(route.health));
        let (px, py) = route.attach();
        // The line always leaves from the caller's box, whichever way it was laid out.
        let on_selected = selected == Some(route.from.as_str());
        let role = if on_selected {
            CellRole::Selected
        } else {
            CellRole::Border
        };
        let port = match (glyphs, route.reversed, on_selected) {
            (Glyphs::Ascii, _, _) => '+',
            (Glyphs::Unicode, false, false) => '├',
            (Glyphs::Unicode, false, true) => '┝',
            (Glyphs::Unicode, true, false) => '┤',
            (Glyphs::Unicode, true, true) => '┥',
        };
        canvas.set(px, py, port, role);
        if let Some((lx, ly)) = route.label_at {
            let marker = if glyphs == Glyphs::Ascii { "x" } else { "✗" };
            let text = match (&route.label, route.health) {
                (Some(l), EdgeHealth::Dropped) => format!("{marker} {l}"),
                (None, EdgeHealth::Dropped) => format!("{marker} {DROPPED_WORD}"),
                (Some(l), _) => l.clone(),
                (None, _) => String::new(),
            };
            canvas.text(
                lx,
                ly,
                &fit(&text, MAX_LABEL, glyphs),
                CellRole::Label(route.health),
            );
        }
    }
    canvas
}

fn draw_box(canvas: &mut Canvas, r: &Rect, window: &Rect, glyphs: Glyphs, selected: bool) {
    let [tl, tr, bl, br, h, v] = match (glyphs, selected) {
        (Glyphs::Unicode, false) => ['┌', '┐', '└', '┘', '─', '│'],
        (Glyphs::Unicode, true) => ['┏', '┓', '┗', '┛', '━', '┃'],
        (Glyphs::Ascii, false) => ['+', '+', '+', '+', '-', '|'],
        (Glyphs::Ascii, true) => ['#', '#', '#', '#', '=', '#'],
    };
    let role = if selected {
        CellRole::Selected
    } else {
        CellRole::Border
    };
    let (x1, y1) = (r.x + r.w - 1, r.y + r.h - 1);
    // Only the part inside the window: a box with hundreds of ports is tall.
    let xs = r.x.max(window.x)..=x1.min(window.x.saturating_add(window.w).saturating_sub(1));
    let ys = r.y.max(window.y)..=y1.min(window.y.saturating_add(window.h).saturating_sub(1));
    for x in xs {
        for y in ys.clone() {
            let ch = match (x == r.x, x == x1, y == r.y, y == y1) {
                (true, _, true, _) => tl,
                (_, true, true, _) => tr,
                (true, _, _, true) => bl,
                (_, true, _, true) => br,
                (_, _, true, _) | (_, _, _, true) => h,
                (true, _, _, _) | (_, true, _, _) => v,
                _ => ' ',
            };
            let role = if ch == ' ' { CellRole::Empty } else { role };
            canvas.set(x, y, ch, role);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MapEdge, MapNode, layout};

    /// Lines the slow way, as the painter once did: every cell of every route and
    /// frame, linked to the next.
    fn reference(l: &Layout) -> (Vec<u8>, Vec<CellRole>) {
        let mut lines = Lines::new(&Rect {
            x: 0,
            y: 0,
            w: l.width,
            h: l.height,
        });
        let mut link = |a: (usize, usize), b: (usize, usize), role, ends: [bool; 2]| {
            let bits = match (b.0 as isize - a.0 as isize, b.1 as isize - a.1 as isize) {
                (1, 0) => [E, W],
                (-1, 0) => [W, E],
                (0, 1) => [S, N],
                (0, -1) => [N, S],
                _ => return,
            };
            for ((x, y), bit, end) in [(a, bits[0], ends[0]), (b, bits[1], ends[1])] {
                let i = y * l.width + x;
                if !end && x < l.width {
                    lines.mask[i] |= bit;
                    lines.role[i] = strongest(lines.role[i], role);
                }
            }
        };
        for g in &l.groups {
            let r = g.rect;
            let (x1, y1) = (r.x + r.w - 1, r.y + r.h - 1);
            let mut ring: Vec<(usize, usize)> = (r.x..=x1).map(|x| (x, r.y)).collect();
            ring.extend((r.y + 1..=y1).map(|y| (x1, y)));
            ring.extend((r.x..x1).rev().map(|x| (x, y1)));
            ring.extend((r.y..y1).rev().map(|y| (r.x, y)));
            for p in ring.windows(2) {
                link(p[0], p[1], CellRole::Group, [false, false]);
            }
        }
        for route in &l.routes {
            let cells = route.cells();
            let last = cells.len().saturating_sub(1);
            for (i, p) in cells.windows(2).enumerate() {
                link(
                    p[0],
                    p[1],
                    CellRole::Edge(route.health),
                    [i == 0, i + 1 == last],
                );
            }
        }
        (lines.mask, lines.role)
    }

    #[test]
    fn indexed_lines_match_walking_every_route_cell() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut below = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n.max(1) as u64) as usize
        };
        let healths = [
            EdgeHealth::Ok,
            EdgeHealth::Warning,
            EdgeHealth::Error,
            EdgeHealth::Dropped,
        ];
        let mut windows = 0;
        for round in 0..40 {
            let n = 2 + below(60);
            let nodes: Vec<MapNode> = (0..n)
                .map(|i| MapNode {
                    id: format!("n{i}"),
                    label: format!("n{i}"),
                    group: ["", "a", "b"][below(3)].to_string(),
                    badge: None,
                })
                .collect();
            let edges: Vec<MapEdge> = (0..below(3 * n))
                .map(|_| MapEdge {
                    from: format!("n{}", below(n)),
                    to: format!("n{}", below(n)),
                    label: None,
                    health: healths[below(4)],
                })
                .collect();
            let l = layout(&nodes, &edges);
            let (mask, role) = reference(&l);
            for _ in 0..20 {
                let window = Rect {
                    x: below(l.width + 4),
                    y: below(l.height + 4),
                    w: 1 + below(50),
                    h: 1 + below(20),
                };
                let got = collect_lines(&l, &l.index, &window);
                for i in 0..window.w * window.h {
                    let (x, y) = (window.x + i % window.w, window.y + i / window.w);
                    let j = y * l.width + x;
                    let want = if x < l.width && y < l.height {
                        (mask[j], role[j])
                    } else {
                        (0, CellRole::Empty)
                    };
                    assert_eq!((got.mask[i], got.role[i]), want, "round {round} ({x}, {y})");
                }
                windows += 1;
            }
        }
        assert_eq!(windows, 800);
    }
}
