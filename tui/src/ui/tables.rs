//! The table views: flows (live tail), drops (by edge and reason, newest
//! first), DNS (by name and type, hot spots first, and search-path
//! expansions per client) and nodes (probes, their state and losses).

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use skymap_proto::v1::NodeState;
use skymap_themes::Role;

use crate::app::model::latency_text;
use crate::app::{App, Pane, View, series};
use crate::map::Glyphs;
use crate::output::{clock_time, duration, flows::table_row};

use crate::state::{DnsSummary, DropSummary, NamespaceFilter};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &mut App, view: View) {
    match view {
        View::Flows => flows(frame, area, app),
        View::Drops => drops(frame, area, app),
        View::Dns => dns(frame, area, app),
        View::Nodes => nodes(frame, area, app),
        View::Map => {}
    }
}

/// A table's column titles and widths.
struct Columns<'c> {
    header: &'c [&'static str],
    widths: &'c [Constraint],
}

/// A table with a header, the selected row kept in range and highlighted.
fn table(
    frame: &mut Frame,
    area: Rect,
    app: &mut App,
    view: View,
    title: String,
    columns: Columns<'_>,
    rows: Vec<Row<'_>>,
) {
    let Columns { header, widths } = columns;
    let count = rows.len();
    let scope = match &app.namespaces {
        NamespaceFilter::All => String::new(),
        NamespaceFilter::One(ns) => format!(", ns {ns}"),
    };
    let block = super::pane_block(app, Pane::Main, format!("{title}{scope} ({count})"));
    let selected = &mut app.rows[view as usize];
    *selected = (*selected).min(count.saturating_sub(1));
    let mut state = TableState::default();
    if count > 0 {
        state.select(Some(*selected));
    }
    let header =
        Row::new(header.iter().map(|h| Cell::from(*h))).style(app.styles.get(Role::Header));
    let highlight = app.styles.get(Role::Selection);
    let widget = Table::new(rows, widths.to_vec())
        .header(header)
        .block(block)
        .row_highlight_style(highlight)
        .column_spacing(1);
    frame.render_stateful_widget(widget, area, &mut state);
}

fn flows(frame: &mut Frame, area: Rect, app: &mut App) {
    let visible = app.visible_flows();
    // The log keeps the newest first already.
    let rows: Vec<Row> = visible
        .iter()
        .map(|flow| {
            let [_, node, source, destination, kind, verdict, mut tail] = table_row(flow);
            if app.glyphs == Glyphs::Ascii {
                // The only non-ASCII a summary has: "µs" in latencies.
                tail = tail.replace('µ', "u");
            }
            let time = clock_time(flow.time_ns);
            let role = verdict_role(&verdict);
            Row::new(vec![
                Cell::from(time),
                Cell::from(node),
                Cell::from(source),
                Cell::from(destination),
                Cell::from(kind),
                Cell::from(Span::styled(verdict, app.styles.get(role))),
                Cell::from(tail),
            ])
        })
        .collect();
    let mut title = "flows, newest first".to_string();
    if !app.filter_text.is_empty() {
        title.push_str(&format!(", /{}", app.filter_text));
    }
    if app.flows_follow_selection {
        title.push_str(", selection only (esc: all)");
    }
    if app.flows.lost() > 0 {
        title.push_str(&format!(", {} lost", app.flows.lost()));
    }
    let widths = [
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Fill(3),
    ];
    let header = [
        "TIME",
        "NODE",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ];
    table(
        frame,
        area,
        app,
        View::Flows,
        title,
        Columns {
            header: &header,
            widths: &widths,
        },
        rows,
    );
}

fn verdict_role(verdict: &str) -> Role {
    match verdict {
        "FORWARDED" => Role::Forwarded,
        "DROPPED" => Role::Dropped,
        "ERROR" => Role::Error,
        _ => Role::Audit,
    }
}

/// One line of the drops view.
#[derive(Debug, Clone, PartialEq)]
pub struct DropLine {
    pub source_id: String,
    pub destination_id: String,
    pub source: String,
    pub destination: String,
    pub port: String,
    pub reason: String,
    pub policy: String,
    pub flows: u64,
    pub newest_ns: i64,
}

/// Drops per edge and reason: counts from the graph (exact), the policy
/// and the newest time from recent dropped flows where the log has them.
pub fn drop_rows(app: &App) -> Vec<DropLine> {
    let recent = DropSummary::from_flows(app.flows.iter());
    let mut lines = Vec::new();
    for edge in app.graph.edges() {
        let (Some(src), Some(dst)) = (
            app.graph.node(&edge.source),
            app.graph.node(&edge.destination),
        ) else {
            continue;
        };
        let (src_key, dst_key) = (
            series::node_key(&src.namespace, &src.name),
            series::node_key(&dst.namespace, &dst.name),
        );
        for (reason, _packets, flows) in &edge.drops {
            let seen = recent.rows().iter().find(|r| {
                r.source == src_key
                    && r.destination == dst_key
                    && r.port == edge.port
                    && &r.reason == reason
            });
            lines.push(DropLine {
                source_id: edge.source.clone(),
                destination_id: edge.destination.clone(),
                source: src_key.clone(),
                destination: dst_key.clone(),
                port: format!("{}/{}", edge.port, edge.protocol),
                reason: reason.clone(),
                policy: seen.map_or_else(String::new, |r| r.policy.clone()),
                flows: *flows,
                newest_ns: seen.map_or(edge.last_seen, |r| r.newest_ns),
            });
        }
    }
    lines.sort_by(|a, b| b.newest_ns.cmp(&a.newest_ns).then(b.flows.cmp(&a.flows)));
    lines
}

fn drops(frame: &mut Frame, area: Rect, app: &mut App) {
    let lines = drop_rows(app);
    let dropped = app.styles.get(Role::Dropped);
    let rows: Vec<Row> = lines
        .into_iter()
        .map(|d| {
            Row::new(vec![
                Cell::from(clock_time(d.newest_ns)),
                Cell::from(d.source),
                Cell::from(d.destination),
                Cell::from(d.port),
                Cell::from(Span::styled(d.reason, dropped)),
                Cell::from(d.flows.to_string()),
                Cell::from(d.policy),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(12),
        Constraint::Fill(2),
        Constraint::Fill(2),
        Constraint::Length(9),
        Constraint::Min(14),
        Constraint::Length(6),
        Constraint::Fill(2),
    ];
    let header = [
        "NEWEST",
        "SOURCE",
        "DESTINATION",
        "PORT",
        "DROP REASON",
        "FLOWS",
        "POLICY",
    ];
    let title = "DROPPED flows by edge and reason, newest first (enter: the edge)".to_string();
    table(
        frame,
        area,
        app,
        View::Drops,
        title,
        Columns {
            header: &header,
            widths: &widths,
        },
        rows,
    );
}

fn dns(frame: &mut Frame, area: Rect, app: &mut App) {
    let summary = DnsSummary::from_flows(
        app.flows
            .iter()
            .filter(|f| app.filter.as_ref().is_none_or(|set| set.matches(f))),
    );
    let groups = summary.search_paths();
    let expansions_height = if groups.is_empty() {
        3
    } else {
        (groups.len() as u16 + 3).min(area.height / 3).max(4)
    };
    let [top, bottom] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(expansions_height)]).areas(area);

    let mut rows_data: Vec<_> = summary.rows().to_vec();
    // Hot spots first: SERVFAIL, then queries nobody answered (dropped or
    // lost), then volume; a frequent NXDOMAIN rises by volume, the one-off
    // search-path expansions sink (they have their own pane below).
    let unanswered = |r: &crate::state::DnsRow| {
        r.queries
            .saturating_sub(r.responses.iter().map(|(_, n)| n).sum::<u64>())
    };
    rows_data.sort_by(|a, b| {
        b.servfail
            .cmp(&a.servfail)
            .then(unanswered(b).cmp(&unanswered(a)))
            .then(b.queries.cmp(&a.queries))
            .then(a.name.cmp(&b.name))
    });
    let warn = app.styles.get(Role::Warning);
    let err = app.styles.get(Role::Error);
    let rows: Vec<Row> = rows_data
        .into_iter()
        .map(|r| {
            let answered: u64 = r.responses.iter().map(|(_, n)| n).sum();
            let noerror = r
                .responses
                .iter()
                .find(|(name, _)| name == "NOERROR")
                .map_or(0, |(_, n)| *n);
            let count_cell = |n: u64, style: Style| {
                Cell::from(Span::styled(
                    n.to_string(),
                    if n > 0 { style } else { Style::default() },
                ))
            };
            let missing = r.queries.saturating_sub(answered);
            Row::new(vec![
                Cell::from(r.name),
                Cell::from(r.qtype),
                Cell::from(r.queries.to_string()),
                Cell::from(answered.to_string()),
                count_cell(missing, err),
                Cell::from(noerror.to_string()),
                count_cell(r.nxdomain, warn),
                count_cell(r.servfail, err),
                Cell::from(r.latency_max.map_or_else(|| "-".to_string(), latency_text)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(3),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    let header = [
        "NAME",
        "TYPE",
        "QUERIES",
        "ANSWERS",
        "UNANSWERED",
        "NOERROR",
        "NXDOMAIN",
        "SERVFAIL",
        "MAX",
    ];
    let title = "DNS by name and type: SERVFAIL, then unanswered first".to_string();
    let columns = Columns {
        header: &header,
        widths: &widths,
    };
    table(frame, top, app, View::Dns, title, columns, rows);

    let block = super::pane_block(
        app,
        Pane::Details,
        "search-path expansions per client".to_string(),
    );
    let mut lines: Vec<Line> = Vec::new();
    if groups.is_empty() {
        lines.push(Line::from(Span::styled(
            "none: no NXDOMAIN answer to a name under the client's search path",
            app.styles.get(Role::Muted),
        )));
    }
    for g in groups {
        let tried: Vec<String> = g
            .expansions
            .iter()
            .map(|(name, n)| format!("{name} x{n}"))
            .collect();
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", g.client), app.styles.get(Role::Workload)),
            Span::styled(format!("{:?} ", g.short_name), app.styles.get(Role::Dns)),
            Span::styled(format!("{} NXDOMAIN: ", g.nxdomain), warn),
            Span::styled(tried.join(", "), app.styles.get(Role::Muted)),
        ]));
    }
    frame.render_widget(Paragraph::new(lines).block(block), bottom);
}

fn nodes(frame: &mut Frame, area: Rect, app: &mut App) {
    let now = app.status.as_ref().map_or(0, |s| s.time_ns);
    let rows: Vec<Row> = app
        .status
        .as_ref()
        .map(|s| s.nodes.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|n| {
            let (state, role) = match NodeState::try_from(n.state) {
                Ok(NodeState::Connected) => ("connected", Role::Ok),
                Ok(NodeState::Unavailable) => ("UNAVAILABLE", Role::Error),
                _ => ("unknown", Role::Warning),
            };
            let mut losses: BTreeMap<String, u64> = BTreeMap::new();
            for l in &n.losses {
                *losses
                    .entry(skymap_proto::names::sanitize(&l.stage).into_owned())
                    .or_default() += l.count;
            }
            let total: u64 = losses.values().sum();
            let detail: Vec<String> = losses.iter().map(|(s, c)| format!("{s} {c}")).collect();
            let since = u64::try_from(now - n.since_ns).unwrap_or(0);
            Row::new(vec![
                Cell::from(skymap_proto::names::sanitize(&n.name).into_owned()),
                Cell::from(Span::styled(state, app.styles.get(role))),
                Cell::from(duration(since)),
                Cell::from(format!("{:.1}", n.flows_per_s)),
                Cell::from(n.flows_total.to_string()),
                Cell::from(Span::styled(
                    total.to_string(),
                    app.styles.get(if total > 0 {
                        Role::Warning
                    } else {
                        Role::Muted
                    }),
                )),
                Cell::from(n.rejected.to_string()),
                Cell::from(detail.join(", ")),
            ])
        })
        .collect();
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(3),
    ];
    let header = [
        "NODE",
        "STATE",
        "FOR",
        "FLOWS/S",
        "FLOWS",
        "LOST",
        "REJECTED",
        "LOSSES BY STAGE",
    ];
    let title = if app.status.is_some() {
        "nodes".to_string()
    } else {
        "nodes (waiting for the relay's status)".to_string()
    };
    table(
        frame,
        area,
        app,
        View::Nodes,
        title,
        Columns {
            header: &header,
            widths: &widths,
        },
        rows,
    );
}
