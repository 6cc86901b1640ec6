//! The namespace → workload → pod tree, with each row's flow rate and a drop
//! marker that reads without colour.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use tui_tree_widget::{Tree, TreeItem};

use skymap_themes::Role;

use crate::app::model::rate_text;
use crate::app::{App, Pane, series};
use crate::map::Glyphs;
use crate::state::{NamespaceTree, TreeRow};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &mut App) {
    let items = items(app);
    let title = match &app.namespaces {
        crate::state::NamespaceFilter::All => "namespaces".to_string(),
        crate::state::NamespaceFilter::One(ns) => format!("ns {ns} (0: all)"),
    };
    let block = super::pane_block(app, Pane::Tree, title);
    let ascii = app.glyphs == Glyphs::Ascii;
    let Ok(tree) = Tree::new(&items) else {
        // Identifiers are unique by construction (graph ids are keys).
        return;
    };
    let tree = tree
        .block(block)
        .highlight_style(app.styles.get(Role::Selection))
        .node_closed_symbol(if ascii { "+ " } else { "▸ " })
        .node_open_symbol(if ascii { "- " } else { "▾ " })
        .node_no_children_symbol("  ");
    frame.render_stateful_widget(tree, area, &mut app.tree);
}

fn items(app: &App) -> Vec<TreeItem<'static, String>> {
    // Every row, whatever is collapsed: the widget's own state decides what
    // is open.
    let rows = NamespaceTree::new().rows(&app.graph, &app.namespaces);
    let mut items: Vec<TreeItem<'static, String>> = Vec::new();
    let mut children: Vec<TreeItem<'static, String>> = Vec::new();
    let mut namespace: Option<TreeRow> = None;
    let mut flush = |namespace: Option<TreeRow>, children: Vec<TreeItem<'static, String>>| {
        if let Some(ns) = namespace {
            let text = row_text(app, &ns);
            if let Ok(item) = TreeItem::new(ns.id.clone(), text, children) {
                items.push(item);
            }
        }
    };
    for row in rows {
        if row.depth == 0 {
            flush(namespace.take(), std::mem::take(&mut children));
            namespace = Some(row);
            continue;
        }
        let pods = app
            .graph
            .node(&row.id)
            .and_then(|n| app.pods.get(&series::graph_key(n)));
        let pod_items: Vec<TreeItem<'static, String>> = pods
            .into_iter()
            .flatten()
            .map(|pod| {
                let ns = app.graph.node(&row.id).map_or("", |n| n.namespace.as_str());
                TreeItem::new_leaf(
                    format!("pod-row:{ns}/{pod}"),
                    Line::from(Span::styled(pod.clone(), app.styles.get(Role::Pod))),
                )
            })
            .collect();
        let text = row_text(app, &row);
        if let Ok(item) = TreeItem::new(row.id.clone(), text, pod_items) {
            children.push(item);
        }
    }
    flush(namespace, children);
    items
}

fn row_text(app: &App, row: &TreeRow) -> Line<'static> {
    let role = if row.depth == 0 {
        Role::Namespace
    } else {
        Role::Workload
    };
    let mut spans = vec![Span::styled(row.label.clone(), app.styles.get(role))];
    if row.flows_per_s > 0.0 {
        spans.push(Span::styled(
            format!(" {}/s", rate_text(row.flows_per_s)),
            app.styles.get(Role::Muted),
        ));
    }
    if row.has_drops {
        let marker = if app.glyphs == Glyphs::Ascii {
            " x drop"
        } else {
            " ✗ drop"
        };
        spans.push(Span::styled(marker, app.styles.get(Role::Dropped)));
    }
    Line::from(spans)
}
