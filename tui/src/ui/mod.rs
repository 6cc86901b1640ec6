//! Drawing: turns the explorer's [`App`] into ratatui widgets. Nothing here
//! changes what the app knows; `draw` only records the map area's size so
//! keys can scroll by a screenful.
//!
//! - [`map`]: the service-map widget over a precomputed layout, and navigation
//!   over it.
//! - [`style`]: the colour theme as ratatui styles.
//! - `header`, `tree`, `details`, [`tables`], `help`, `why`: the panes.

mod details;
mod header;
mod help;
pub mod map;
pub mod style;
pub mod tables;
mod tree;
mod why;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use skymap_themes::Role;

use crate::app::{App, Pane, PromptKind, Selection, View};
use crate::map::Glyphs;

/// Smallest terminal the explorer draws in; below it, a notice.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;

/// Paints one frame.
pub fn draw(frame: &mut Frame, app: &mut App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    header::draw(frame, top, app);
    footer(frame, bottom, app);

    // The tree sits beside the map; the tables get the whole width unless
    // the screen is wide or the tree has the keys.
    let tree_width = match area.width {
        _ if app.view != View::Map && area.width < 140 && app.pane != Pane::Tree => 0,
        w if w >= 140 => 30,
        w if w >= 120 => 26,
        w if w >= 100 => 22,
        _ if app.pane == Pane::Tree => 24,
        _ => 0,
    };
    let [tree_area, main] =
        Layout::horizontal([Constraint::Length(tree_width), Constraint::Min(1)]).areas(body);
    if tree_width > 0 {
        tree::draw(frame, tree_area, app);
    }

    match app.view {
        View::Map => {
            let (map_area, details_area) = split_details(main);
            draw_map(frame, map_area, app);
            details::draw(frame, details_area, app);
        }
        view => tables::draw(frame, main, app, view),
    }

    if let Some(why) = &app.why {
        why::draw(frame, area, app, why);
    }
    if app.help {
        help::draw(frame, area, app);
    }
}

/// Side by side on wide screens, stacked on narrow ones.
fn split_details(main: Rect) -> (Rect, Rect) {
    if main.width >= 110 {
        let details = (main.width / 3).clamp(44, 60);
        let [map, details] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(details)]).areas(main);
        (map, details)
    } else {
        let details = (main.height * 2 / 5).clamp(6, 14);
        let [map, details] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(details)]).areas(main);
        (map, details)
    }
}

fn draw_map(frame: &mut Frame, area: Rect, app: &mut App) {
    let block = pane_block(app, Pane::Main, map_title(app));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let size = (usize::from(inner.width), usize::from(inner.height));
    if app.map_area != size || app.wants_centering() {
        app.map_area = size;
        app.map_area_changed();
    }
    let styles = app.styles.clone();
    match &app.layout {
        Some(layout) if !layout.boxes.is_empty() => {
            let selected = app.selected_node();
            let view = map::MapView::new(layout, styles.map())
                .offset(app.offset)
                .selected(selected)
                .glyphs(app.glyphs);
            frame.render_widget(view, inner);
            if let Some(Selection::Pair(from, to)) = &app.selection {
                mark_route(frame, inner, app, from, to);
            }
        }
        _ => {
            let text = if app.graph.nodes().next().is_none() {
                waiting_text(app)
            } else {
                "nothing to show with these settings (0: all namespaces, x: noise, f: focus)"
                    .to_string()
            };
            frame.render_widget(Paragraph::new(text).style(styles.get(Role::Muted)), inner);
        }
    }
}

/// Paints the selected edge's line and label in the selection style (reverse
/// video without colour), so it stands out on the map.
fn mark_route(frame: &mut Frame, area: Rect, app: &App, from: &str, to: &str) {
    let Some(route) = app
        .layout
        .as_ref()
        .and_then(|l| l.routes.iter().find(|r| r.from == from && r.to == to))
    else {
        return;
    };
    let style = app.styles.get(Role::Selection);
    let (ox, oy) = app.offset;
    let mut cells = route.cells();
    if let (Some((lx, ly)), Some(label)) = (route.label_at, &route.label) {
        let marker = usize::from(route.health == crate::map::EdgeHealth::Dropped) * 2;
        cells.extend((0..label.chars().count() + marker).map(|i| (lx + i, ly)));
    }
    let buffer = frame.buffer_mut();
    for (x, y) in cells {
        let (Some(dx), Some(dy)) = (x.checked_sub(ox), y.checked_sub(oy)) else {
            continue;
        };
        if dx < usize::from(area.width) && dy < usize::from(area.height) {
            let cell = &mut buffer[(area.x + dx as u16, area.y + dy as u16)];
            cell.set_style(style);
        }
    }
}

fn waiting_text(app: &App) -> String {
    match &app.conn {
        crate::live::ConnState::Connected { .. } => "connected; no flows yet".to_string(),
        crate::live::ConnState::Connecting => format!("connecting to {} ...", app.source),
        crate::live::ConnState::Reconnecting { last_error, .. } => {
            format!("waiting for the relay: {last_error}")
        }
    }
}

fn map_title(app: &App) -> String {
    let mut title = "map".to_string();
    if let crate::state::NamespaceFilter::One(ns) = &app.namespaces {
        title.push_str(&format!(", ns {ns}"));
    }
    if let Some(center) = &app.center {
        let name = app
            .graph
            .node(center)
            .map_or(center.as_str(), |n| n.name.as_str());
        title.push_str(&format!(", focus {name}"));
    }
    if app.hide_noise {
        title.push_str(&format!(", {} hidden", app.model.hidden_noise));
    }
    title
}

/// A bordered pane whose border shows whether it has the keys.
pub(crate) fn pane_block(app: &App, pane: Pane, title: String) -> Block<'static> {
    let focused = app.pane == pane;
    let border = app.styles.get(if focused {
        Role::BorderFocused
    } else {
        Role::Border
    });
    let mut block = Block::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Span::styled(
            format!(" {title} "),
            app.styles.get(Role::Title),
        ));
    if app.glyphs == Glyphs::Ascii {
        block = block.border_set(ASCII_BORDER);
    }
    block
}

/// Borders of `+`, `-` and `|`, for `--ascii`.
pub(crate) const ASCII_BORDER: ratatui::symbols::border::Set<'static> =
    ratatui::symbols::border::Set {
        top_left: "+",
        top_right: "+",
        bottom_left: "+",
        bottom_right: "+",
        vertical_left: "|",
        vertical_right: "|",
        horizontal_top: "-",
        horizontal_bottom: "-",
    };

fn footer(frame: &mut Frame, area: Rect, app: &App) {
    let line = if let Some(prompt) = &app.prompt {
        let sigil = match prompt.kind {
            PromptKind::Command => ":",
            PromptKind::Filter => "/",
        };
        let width = usize::from(area.width.saturating_sub(1));
        let scroll = prompt.input.visual_scroll(width);
        let cursor = prompt.input.visual_cursor().saturating_sub(scroll);
        frame.set_cursor_position((area.x + 1 + cursor as u16, area.y));
        let visible: String = prompt.input.value().chars().skip(scroll).collect();
        Line::from(vec![
            Span::styled(sigil, app.styles.get(Role::KeyHint)),
            Span::raw(skymap_proto::names::sanitize(&visible).into_owned()),
        ])
    } else if let Some(flash) = &app.flash {
        let role = if flash.error {
            Role::Error
        } else {
            Role::Flash
        };
        Line::from(Span::styled(flash.text.clone(), app.styles.get(role)))
    } else {
        hints(app)
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(app: &App) -> Line<'static> {
    let key = app.styles.get(Role::KeyHint);
    let muted = app.styles.get(Role::Muted);
    let mut spans = Vec::new();
    let mut hint = |k: &str, what: &str| {
        spans.push(Span::styled(k.to_string(), key));
        spans.push(Span::styled(format!(" {what}  "), muted));
    };
    hint("?", "help");
    hint(":", "command");
    hint("/", "filter");
    if app.view == View::Map {
        hint("]", "edges");
        hint("enter", "drill in");
        hint("f", "focus");
        hint("x", "noise");
    } else {
        hint("esc", "back");
    }
    hint("tab", "pane");
    hint("p", "pause");
    hint("q", "quit");
    if !app.filter_text.is_empty() {
        spans.push(Span::styled(
            format!("filter: {}", app.filter_text),
            app.styles.get(Role::SearchMatch),
        ));
    }
    Line::from(spans)
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = format!(
        "terminal too small: {}x{} (need {MIN_WIDTH}x{MIN_HEIGHT})",
        area.width, area.height
    );
    frame.render_widget(
        Paragraph::new(text)
            .style(Style::default())
            .wrap(ratatui::widgets::Wrap { trim: true }),
        area,
    );
}

/// A drawn buffer as plain text, one line per row, trailing blanks cut: what
/// `skymap snapshot` prints and what the snapshot tests compare.
pub fn buffer_text(buffer: &ratatui::buffer::Buffer) -> String {
    let area = buffer.area;
    let mut text = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        let mut skip = 0usize;
        for x in area.left()..area.right() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buffer[(x, y)].symbol();
            line.push_str(symbol);
            skip = Span::raw(symbol).width().saturating_sub(1);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
