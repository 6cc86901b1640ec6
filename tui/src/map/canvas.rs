//! The character grid and the painter that turns a [`Layout`] into it.
//!
//! Lines (edges and namespace frames) are collected as connection masks first, so
//! wherever lines meet the right join or crossing glyph comes out.

use super::EdgeHealth;
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

/// Lines before they become glyphs.
struct Lines {
    origin: (usize, usize),
    width: usize,
    mask: Vec<u8>,
    role: Vec<CellRole>,
}

impl Lines {
    fn link(&mut self, a: (usize, usize), b: (usize, usize), role: CellRole, ends: [bool; 2]) {
        let (da, db) = match (b.0 as isize - a.0 as isize, b.1 as isize - a.1 as isize) {
            (1, 0) => (E, W),
            (-1, 0) => (W, E),
            (0, 1) => (S, N),
            (0, -1) => (N, S),
            _ => return,
        };
        for ((x, y), bit, is_end) in
            [(a.0, a.1, da, ends[0]), (b.0, b.1, db, ends[1])].map(|(x, y, d, e)| ((x, y), d, e))
        {
            let (Some(x), Some(y)) = (x.checked_sub(self.origin.0), y.checked_sub(self.origin.1))
            else {
                continue;
            };
            if is_end || x >= self.width {
                continue;
            }
            let i = y * self.width + x;
            let Some(m) = self.mask.get_mut(i) else {
                continue;
            };
            *m |= bit;
            self.role[i] = strongest(self.role[i], role);
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
    let mut lines = Lines {
        origin: canvas.origin,
        width,
        mask: vec![0; width * height],
        role: vec![CellRole::Empty; width * height],
    };

    for frame in &layout.groups {
        let perimeter = perimeter(&frame.rect);
        for pair in perimeter.windows(2) {
            lines.link(pair[0], pair[1], CellRole::Group, [false, false]);
        }
    }
    let mut routes: Vec<_> = layout.routes.iter().collect();
    routes.sort_by_key(|r| r.health);
    for route in &routes {
        let cells = route.cells();
        let last = cells.len().saturating_sub(1);
        for (i, pair) in cells.windows(2).enumerate() {
            lines.link(
                pair[0],
                pair[1],
                CellRole::Edge(route.health),
                [i == 0, i + 1 == last],
            );
        }
    }
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

    for frame in &layout.groups {
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

    for b in &layout.boxes {
        let is_selected = selected == Some(b.id.as_str());
        draw_box(&mut canvas, &b.rect, glyphs, is_selected);
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

    for route in &layout.routes {
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

/// Cells around a rectangle's edge, clockwise from the top-left, closed.
fn perimeter(r: &Rect) -> Vec<(usize, usize)> {
    if r.w < 2 || r.h < 2 {
        return Vec::new();
    }
    let (x1, y1) = (r.x + r.w - 1, r.y + r.h - 1);
    let mut cells: Vec<(usize, usize)> = (r.x..=x1).map(|x| (x, r.y)).collect();
    cells.extend((r.y + 1..=y1).map(|y| (x1, y)));
    cells.extend((r.x..x1).rev().map(|x| (x, y1)));
    cells.extend((r.y..y1).rev().map(|y| (r.x, y)));
    cells
}

fn draw_box(canvas: &mut Canvas, r: &Rect, glyphs: Glyphs, selected: bool) {
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
    for x in r.x..=x1 {
        for y in r.y..=y1 {
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
