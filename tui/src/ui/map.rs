//! The service-map widget and keyboard navigation over a laid-out map.
//!
//! [`MapView`] paints the part of a [`Layout`] under a viewport into a ratatui
//! buffer, colouring each cell by its [`CellRole`] through [`MapStyles`]. The
//! navigation helpers ([`center_on`], [`scroll_into_view`], [`neighbour`],
//! [`first_node`], [`clamp_offset`]) are pure functions over the layout, so the
//! app keeps only an offset and a selected id.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect as Area;
use ratatui::style::Style;
use ratatui::widgets::Widget;

use crate::map::{CellRole, EdgeHealth, Glyphs, Layout, Rect, render_window};

/// Styles of one edge health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeStyles {
    pub line: Style,
    pub arrow: Style,
    pub label: Style,
}

/// One style per kind of map cell; the app fills it from the colour theme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapStyles {
    /// Box borders and the ports lines leave from.
    pub border: Style,
    /// Labels and badges inside boxes.
    pub text: Style,
    /// Namespace frames and their names.
    pub group: Style,
    /// Border and text of the selected box.
    pub selected: Style,
    pub ok: EdgeStyles,
    pub warning: EdgeStyles,
    pub error: EdgeStyles,
    pub dropped: EdgeStyles,
}

impl MapStyles {
    /// The styles of edges of one health.
    pub fn edge(&self, health: EdgeHealth) -> &EdgeStyles {
        match health {
            EdgeHealth::Ok => &self.ok,
            EdgeHealth::Warning => &self.warning,
            EdgeHealth::Error => &self.error,
            EdgeHealth::Dropped => &self.dropped,
        }
    }

    /// The style of a cell; empty cells get the plain style.
    pub fn style(&self, role: CellRole) -> Style {
        match role {
            CellRole::Empty => Style::default(),
            CellRole::Border => self.border,
            CellRole::Text => self.text,
            CellRole::Group => self.group,
            CellRole::Selected => self.selected,
            CellRole::Edge(h) => self.edge(h).line,
            CellRole::Arrow(h) => self.edge(h).arrow,
            CellRole::Label(h) => self.edge(h).label,
        }
    }
}

/// The map as a widget: the window of `layout` whose top-left map cell is
/// `offset`, painted into the widget's area.
///
/// Only drawn cells are written; empty map cells and the part of the area beyond
/// the map keep what the buffer had (blank after ratatui's per-frame reset).
#[derive(Debug, Clone, Copy)]
pub struct MapView<'a> {
    layout: &'a Layout,
    styles: &'a MapStyles,
    offset: (usize, usize),
    selected: Option<&'a str>,
    glyphs: Glyphs,
}

impl<'a> MapView<'a> {
    /// The map from its top-left corner, nothing selected, Unicode glyphs.
    pub fn new(layout: &'a Layout, styles: &'a MapStyles) -> Self {
        Self {
            layout,
            styles,
            offset: (0, 0),
            selected: None,
            glyphs: Glyphs::Unicode,
        }
    }

    /// The map cell shown at the area's top-left corner.
    pub fn offset(mut self, offset: (usize, usize)) -> Self {
        self.offset = offset;
        self
    }

    /// The node to highlight.
    pub fn selected(mut self, id: Option<&'a str>) -> Self {
        self.selected = id;
        self
    }

    pub fn glyphs(mut self, glyphs: Glyphs) -> Self {
        self.glyphs = glyphs;
        self
    }
}

impl Widget for MapView<'_> {
    fn render(self, area: Area, buf: &mut Buffer) {
        (&self).render(area, buf);
    }
}

impl Widget for &MapView<'_> {
    fn render(self, area: Area, buf: &mut Buffer) {
        // An area partly outside the buffer is cut rather than trusted.
        let area = area.intersection(buf.area);
        let (ox, oy) = self.offset;
        let window = Rect {
            x: ox,
            y: oy,
            w: usize::from(area.width).min(self.layout.width.saturating_sub(ox)),
            h: usize::from(area.height).min(self.layout.height.saturating_sub(oy)),
        };
        if window.w == 0 || window.h == 0 {
            return;
        }
        let canvas = render_window(self.layout, self.glyphs, self.selected, window);
        // Canvas first in each zip, so the counters never step past the area's
        // last cell (which may be `u16::MAX`).
        for (row, y) in (0..canvas.height()).map(|y| canvas.row(y)).zip(area.y..) {
            for (&(ch, role), x) in row.iter().zip(area.x..) {
                if role == CellRole::Empty {
                    continue;
                }
                if let Some(cell) = buf.cell_mut((x, y)) {
                    cell.set_char(ch).set_style(self.styles.style(role));
                }
            }
        }
    }
}

/// A direction for moving the selection on the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
}

/// The largest offset along one axis that still fills the view with map.
fn max_offset(map: usize, view: usize) -> usize {
    map.saturating_sub(view)
}

/// `offset` moved back so the view does not run past the map's right or bottom
/// edge (a map smaller than the view gets offset 0).
pub fn clamp_offset(
    layout: &Layout,
    offset: (usize, usize),
    view_w: usize,
    view_h: usize,
) -> (usize, usize) {
    (
        offset.0.min(max_offset(layout.width, view_w)),
        offset.1.min(max_offset(layout.height, view_h)),
    )
}

/// The offset that puts node `id`'s box in the middle of the view, clamped to the
/// map; `(0, 0)` for an unknown id.
pub fn center_on(layout: &Layout, id: &str, view_w: usize, view_h: usize) -> (usize, usize) {
    let Some(b) = layout.node(id) else {
        return (0, 0);
    };
    let cx = b.rect.x + b.rect.w / 2;
    let cy = b.rect.y + b.rect.h / 2;
    clamp_offset(
        layout,
        (cx.saturating_sub(view_w / 2), cy.saturating_sub(view_h / 2)),
        view_w,
        view_h,
    )
}

/// The smallest move of one axis's offset that shows `[start, start + len)`; a
/// span longer than the view shows its start.
fn scroll_axis(offset: usize, view: usize, start: usize, len: usize) -> usize {
    if start < offset || len > view {
        start
    } else if start + len > offset + view {
        start + len - view
    } else {
        offset
    }
}

/// `offset` moved as little as possible so node `id`'s whole box is in view (its
/// top-left part when it is bigger than the view), clamped to the map. An unknown
/// id only clamps.
pub fn scroll_into_view(
    layout: &Layout,
    id: &str,
    offset: (usize, usize),
    view_w: usize,
    view_h: usize,
) -> (usize, usize) {
    match layout.node(id) {
        Some(b) => scroll_to_rect(layout, b.rect, offset, view_w, view_h),
        None => clamp_offset(layout, offset, view_w, view_h),
    }
}

/// `offset` moved as little as possible so `rect` (any span of map cells, such
/// as an edge's label) is in view, clamped to the map.
pub fn scroll_to_rect(
    layout: &Layout,
    rect: Rect,
    offset: (usize, usize),
    view_w: usize,
    view_h: usize,
) -> (usize, usize) {
    let moved = (
        scroll_axis(offset.0, view_w, rect.x, rect.w),
        scroll_axis(offset.1, view_h, rect.y, rect.h),
    );
    clamp_offset(layout, moved, view_w, view_h)
}

/// How far apart two spans on one axis are: 0 when they share a cell, 1 when
/// they touch, and so on.
fn span_gap(a: usize, a_len: usize, b: usize, b_len: usize) -> usize {
    if b >= a + a_len {
        b - (a + a_len) + 1
    } else if a >= b + b_len {
        a - (b + b_len) + 1
    } else {
        0
    }
}

/// The box nearest `from_id` in `dir`, for arrow-key selection.
///
/// Candidates lie wholly beyond the box's side in that direction. Boxes sharing
/// rows (for left/right) or columns (for up/down) with it come first, nearest
/// first; otherwise the nearest by the gaps along both axes. Ties go to the box
/// whose centre is closest across, then to the smaller id. `None` when nothing
/// lies that way or `from_id` is unknown.
pub fn neighbour<'a>(layout: &'a Layout, from_id: &str, dir: Direction) -> Option<&'a str> {
    let from = layout.node(from_id)?.rect;
    // Twice the centre, to stay in whole cells.
    let centre2 = |r: &Rect| (2 * r.x + r.w, 2 * r.y + r.h);
    let (fcx, fcy) = centre2(&from);
    layout
        .boxes
        .iter()
        .filter_map(|b| {
            let r = b.rect;
            let (ahead, primary, cross, centre_off) = match dir {
                Direction::Right => (
                    r.x >= from.x + from.w,
                    r.x.saturating_sub(from.x + from.w),
                    span_gap(from.y, from.h, r.y, r.h),
                    centre2(&r).1.abs_diff(fcy),
                ),
                Direction::Left => (
                    r.x + r.w <= from.x,
                    from.x.saturating_sub(r.x + r.w),
                    span_gap(from.y, from.h, r.y, r.h),
                    centre2(&r).1.abs_diff(fcy),
                ),
                Direction::Down => (
                    r.y >= from.y + from.h,
                    r.y.saturating_sub(from.y + from.h),
                    span_gap(from.x, from.w, r.x, r.w),
                    centre2(&r).0.abs_diff(fcx),
                ),
                Direction::Up => (
                    r.y + r.h <= from.y,
                    from.y.saturating_sub(r.y + r.h),
                    span_gap(from.x, from.w, r.x, r.w),
                    centre2(&r).0.abs_diff(fcx),
                ),
            };
            ahead.then_some(((cross > 0, primary + cross, centre_off), b.id.as_str()))
        })
        .min()
        .map(|(_, id)| id)
}

/// The box nearest the map's top-left corner (ties: higher, then more left, then
/// smaller id); the natural first selection. `None` on an empty map.
pub fn first_node(layout: &Layout) -> Option<&str> {
    layout
        .boxes
        .iter()
        .min_by_key(|b| (b.rect.x + b.rect.y, b.rect.y, b.rect.x, b.id.as_str()))
        .map(|b| b.id.as_str())
}
