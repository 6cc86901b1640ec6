//! The header line: source, connection state, nodes, flows/s, losses, the
//! time of the data shown, and the paused marker.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use skymap_proto::v1::NodeState;
use skymap_themes::Role;
use tokio::time::Instant;

use crate::app::App;
use crate::live::ConnState;
use crate::map::Glyphs;
use crate::output::compact_time;
use crate::state::{NamespaceFilter, Zoom};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let styles = &app.styles;
    let sep = if app.glyphs == Glyphs::Ascii {
        " | "
    } else {
        " │ "
    };
    let muted = styles.get(Role::Muted);
    let mut spans = vec![
        Span::styled("skymap ", styles.get(Role::Title)),
        Span::styled(app.source.clone(), styles.get(Role::Text)),
        Span::raw(" "),
    ];
    let (state, role) = connection(&app.conn);
    spans.push(Span::styled(state, styles.get(role)));
    if app.is_paused() {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(" PAUSED ", styles.get(Role::Paused)));
    }

    if let Some(status) = &app.status {
        let connected = status
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Connected as i32)
            .count();
        spans.push(Span::styled(sep, muted));
        let role = if connected < status.nodes.len() {
            Role::Warning
        } else {
            Role::Text
        };
        spans.push(Span::styled(
            format!("nodes {connected}/{}", status.nodes.len()),
            styles.get(role),
        ));
        spans.push(Span::styled(sep, muted));
        spans.push(Span::styled(
            format!("{:.1} flows/s", status.flows_per_s),
            styles.get(Role::Text),
        ));
        let lost: u64 = status.losses.iter().map(|l| l.count).sum::<u64>() + app.lost;
        spans.push(Span::styled(sep, muted));
        spans.push(Span::styled(
            format!("lost {lost}"),
            styles.get(if lost > 0 { Role::Warning } else { Role::Muted }),
        ));
    } else if app.lost > 0 {
        spans.push(Span::styled(sep, muted));
        spans.push(Span::styled(
            format!("lost {}", app.lost),
            styles.get(Role::Warning),
        ));
    }
    if app.graph.time_ns() > 0 {
        spans.push(Span::styled(sep, muted));
        spans.push(Span::styled(compact_time(app.graph.time_ns()), muted));
    }
    spans.push(Span::styled(sep, muted));
    let ns = match &app.namespaces {
        NamespaceFilter::All => "all namespaces".to_string(),
        NamespaceFilter::One(ns) => format!("ns {ns}"),
    };
    let zoom = match app.zoom {
        Zoom::Namespace => "namespaces",
        Zoom::Workload => "workloads",
        Zoom::Pod => "pods",
    };
    spans.push(Span::styled(
        format!("{ns}, {zoom}"),
        styles.get(Role::Namespace),
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The link's state in words, with the role that colours it.
fn connection(state: &ConnState) -> (String, Role) {
    match state {
        ConnState::Connecting => ("connecting...".to_string(), Role::Warning),
        ConnState::Connected { .. } => ("connected".to_string(), Role::Ok),
        ConnState::Reconnecting {
            attempt, retry_at, ..
        } => {
            let wait = retry_at.saturating_duration_since(Instant::now());
            (
                format!(
                    "reconnecting in {}s (attempt {attempt})",
                    wait.as_secs_f64().ceil() as u64
                ),
                Role::Error,
            )
        }
    }
}
