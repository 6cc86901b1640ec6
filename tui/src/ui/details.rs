//! The details of the selected box or edge: the golden signals (traffic with
//! a sparkline, latency with a chart over time, errors, saturation), drops by
//! reason, and for a box the same figures per caller and per callee, so a
//! slow or failing caller stands out next to the others.

use std::collections::BTreeMap;
use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use skymap_themes::Role;

use crate::app::model::{graph_id, latency_text, rate_text, shown_rate};
use crate::app::series::{self, LatencyPoint};
use crate::app::{App, Pane, Selection};
use crate::map::{FOCUS_OTHERS_ID, Glyphs};
use crate::state::{Cpu, Edge, Health, error_ratio, health};

pub(super) fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = super::pane_block(app, Pane::Details, "details".to_string());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width < 10 || inner.height < 2 {
        return;
    }
    let Some(selection) = app.selection.clone() else {
        frame.render_widget(
            Paragraph::new("select a box with the arrow keys; ] walks its edges")
                .style(app.styles.get(Role::Muted))
                .wrap(ratatui::widgets::Wrap { trim: true }),
            inner,
        );
        return;
    };
    let (title, edges, clients, servers) = match &selection {
        Selection::Node(id) if id == FOCUS_OTHERS_ID => {
            frame.render_widget(
                Paragraph::new("everything not connected to the focused box (enter: show all)")
                    .style(app.styles.get(Role::Muted)),
                inner,
            );
            return;
        }
        Selection::Node(id) => {
            let id = graph_id(id);
            let incoming: Vec<&Edge> = app.graph.edges_to(id).collect();
            let title = node_title(app, id);
            let key = key_of(app, id);
            (title, incoming, Vec::new(), vec![key])
        }
        Selection::Pair(from, to) => {
            let from = graph_id(from);
            let edges: Vec<&Edge> = app
                .graph
                .edges_from(from)
                .filter(|e| e.destination == *to)
                .collect();
            let arrow = if app.glyphs == Glyphs::Ascii {
                "->"
            } else {
                "→"
            };
            let title = vec![
                Span::styled(name_of(app, from), app.styles.get(Role::Workload)),
                Span::raw(format!(" {arrow} ")),
                Span::styled(name_of(app, to), app.styles.get(Role::Workload)),
            ];
            (
                Line::from(title),
                edges,
                vec![key_of(app, from)],
                vec![key_of(app, to)],
            )
        }
    };

    let mut lines = vec![title];
    let selected_node = matches!(selection, Selection::Node(_));
    if selected_node {
        lines.push(Line::from(Span::styled(
            "as a server (all callers):",
            app.styles.get(Role::Muted),
        )));
    }
    let mut signals = Signals::of(&edges);
    // Saturation is the server's: the selected box, or the edge's callee.
    let server = match &selection {
        Selection::Node(id) | Selection::Pair(_, id) => graph_id(id),
    };
    signals.cpu = app.graph.node(server).and_then(|n| n.cpu);
    let now = app.graph.time_ns();
    let rates = app.series.rates(edges.iter().map(|e| e.id.as_str()), now);
    let latency_points = if selected_node {
        app.series.latency(None, &servers)
    } else {
        app.series.latency(Some(&clients), &servers)
    };

    lines.extend(signals.lines(app));
    if !selected_node {
        for policy in policies_for(app, &edges) {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<11}", "policy"), app.styles.get(Role::Header)),
                Span::styled(policy, app.styles.get(Role::Dropped)),
            ]));
        }
    }
    let head = lines.len() as u16;
    // Sparkline and chart sit after the headline figures, the breakdowns
    // below them.
    let mut rest: Vec<Line> = Vec::new();
    if let Selection::Node(id) = &selection {
        let id = graph_id(id);
        rest.extend(breakdown(
            app,
            "callers",
            app.graph.edges_to(id).collect(),
            true,
        ));
        rest.extend(breakdown(
            app,
            "calls out",
            app.graph.edges_from(id).collect(),
            false,
        ));
    } else {
        rest.extend(edge_facts(app, &edges));
    }

    let chart_height = if inner.height >= head + 10 { 5 } else { 0 };
    let spark_height = if inner.height >= head + 4 { 1 } else { 0 };
    let [head_area, spark_area, chart_area, rest_area] = Layout::vertical([
        Constraint::Length(head.min(inner.height)),
        Constraint::Length(spark_height),
        Constraint::Length(chart_height),
        Constraint::Min(0),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(lines), head_area);
    if spark_height > 0 {
        sparkline(frame, spark_area, app, &rates);
    }
    if chart_height > 0 {
        latency_chart(frame, chart_area, app, &latency_points);
    }
    frame.render_widget(
        Paragraph::new(rest).scroll((app.details_scroll, 0)),
        rest_area,
    );
}

fn node_title(app: &App, id: &str) -> Line<'static> {
    let Some(node) = app.graph.node(id) else {
        return Line::from(id.to_string());
    };
    let mut spans = vec![Span::styled(
        node.name.clone(),
        app.styles.get(Role::Workload),
    )];
    let mut facts = Vec::new();
    if !node.workload_kind.is_empty() {
        facts.push(node.workload_kind.clone());
    }
    if !node.namespace.is_empty() && node.namespace != node.name {
        facts.push(format!("in {}", node.namespace));
    }
    if !node.node_name.is_empty() {
        facts.push(format!("on {}", node.node_name));
    }
    if !facts.is_empty() {
        spans.push(Span::styled(
            format!("  {}", facts.join(" ")),
            app.styles.get(Role::Muted),
        ));
    }
    Line::from(spans)
}

fn name_of(app: &App, id: &str) -> String {
    app.graph
        .node(id)
        .map_or_else(|| id.to_string(), |n| n.name.clone())
}

fn key_of(app: &App, id: &str) -> String {
    app.graph
        .node(id)
        .map_or_else(String::new, series::graph_key)
}

/// The golden signals summed over some edges.
#[derive(Debug, Default)]
struct Signals {
    edges: usize,
    requests_per_s: f64,
    flows_per_s: f64,
    bytes_per_s: f64,
    drops_per_s: f64,
    requests: u64,
    http: [u64; 5],
    rcodes: BTreeMap<String, u64>,
    refused: u64,
    attempts: u64,
    errors: u64,
    dropped: u64,
    /// Worst percentiles over the edges (exact when there is one).
    p50: Option<Duration>,
    p95: Option<Duration>,
    p99: Option<Duration>,
    connect_p50: Option<Duration>,
    drops: BTreeMap<String, u64>,
    /// The server's CPU, when a probe reports it.
    cpu: Option<Cpu>,
}

impl Signals {
    fn of(edges: &[&Edge]) -> Self {
        let mut s = Signals {
            edges: edges.len(),
            ..Signals::default()
        };
        for e in edges {
            s.requests_per_s += e.rate_1m.requests_per_s;
            s.flows_per_s += e.rate_1m.flows_per_s;
            s.bytes_per_s += e.rate_1m.bytes_per_s;
            s.drops_per_s += e.rate_1m.drops_per_s;
            s.requests += e.requests;
            for (total, n) in s.http.iter_mut().zip(e.http) {
                *total += n;
            }
            for (name, n) in &e.dns_rcodes {
                *s.rcodes.entry(name.clone()).or_default() += n;
            }
            s.refused += e.refused;
            s.attempts += e.requests + e.dns_queries + e.connections;
            s.errors += e.errors;
            s.dropped += e.dropped;
            if let Some(l) = e.latency {
                s.p50 = s.p50.max(Some(l.p50));
                s.p95 = s.p95.max(Some(l.p95));
                s.p99 = s.p99.max(Some(l.p99));
            }
            if let Some(l) = e.connect_latency {
                s.connect_p50 = s.connect_p50.max(Some(l.p50));
            }
            for (reason, _, flows) in &e.drops {
                *s.drops.entry(reason.clone()).or_default() += flows;
            }
        }
        s
    }

    fn lines(&self, app: &App) -> Vec<Line<'static>> {
        let label = |text: &str| Span::styled(format!("{text:<11}"), app.styles.get(Role::Header));
        let text = |t: String| Span::styled(t, app.styles.get(Role::Text));
        let muted = |t: String| Span::styled(t, app.styles.get(Role::Muted));
        let mut lines = Vec::new();
        if self.edges == 0 {
            lines.push(Line::from(muted("no traffic in".to_string())));
            lines.extend(cpu_lines(self.cpu, app));
            return lines;
        }
        let traffic = if self.requests_per_s > 0.0 {
            format!(
                "{} req/s  {} flows/s",
                rate_text(self.requests_per_s),
                rate_text(self.flows_per_s)
            )
        } else {
            format!("{} flows/s", rate_text(self.flows_per_s))
        };
        lines.push(Line::from(vec![label("traffic"), text(traffic)]));

        let mut latency = vec![label("latency")];
        match (self.p50, self.p95, self.p99) {
            (Some(p50), Some(p95), Some(p99)) => {
                latency.push(text(format!("p50 {} ", latency_text(p50))));
                latency.push(Span::styled(
                    format!("p95 {} ", latency_text(p95)),
                    app.styles.get(latency_role(p95)),
                ));
                latency.push(text(format!("p99 {}", latency_text(p99))));
                if self.edges > 1 {
                    latency.push(muted(" (worst edge)".to_string()));
                }
            }
            _ => latency.push(muted("no request/response pairs".to_string())),
        }
        if let Some(connect) = self.connect_p50 {
            latency.push(muted(format!("  connect {}", latency_text(connect))));
        }
        lines.push(Line::from(latency));

        let mut errors = vec![label("errors")];
        let pct = if self.attempts > 0 {
            self.errors as f64 * 100.0 / self.attempts as f64
        } else {
            0.0
        };
        errors.push(Span::styled(
            format!("{} ({pct:.1}%)", self.errors),
            app.styles.get(if self.errors > 0 {
                Role::Error
            } else {
                Role::Ok
            }),
        ));
        if self.requests > 0 {
            errors.push(text(format!("  5xx {} 4xx {}", self.http[4], self.http[3])));
        }
        for (name, count) in &self.rcodes {
            if name != "NOERROR" {
                errors.push(Span::styled(
                    format!("  {name} {count}"),
                    app.styles.get(Role::Warning),
                ));
            }
        }
        if self.refused > 0 {
            errors.push(Span::styled(
                format!("  refused {}", self.refused),
                app.styles.get(Role::Error),
            ));
        }
        lines.push(Line::from(errors));

        lines.push(Line::from(vec![
            label("saturation"),
            text(format!("{}/s", bytes_text(self.bytes_per_s))),
            Span::styled(
                format!("  drops {}/s", rate_text(self.drops_per_s)),
                app.styles.get(if self.drops_per_s > 0.0 {
                    Role::Dropped
                } else {
                    Role::Muted
                }),
            ),
        ]));
        lines.extend(cpu_lines(self.cpu, app));
        if !self.drops.is_empty() {
            let mut spans = vec![label("drops")];
            for (reason, flows) in &self.drops {
                spans.push(Span::styled(
                    format!("DROPPED {reason} {flows}  "),
                    app.styles.get(Role::Dropped),
                ));
            }
            lines.push(Line::from(spans));
        }
        lines
    }
}

/// "cpu  0.42 of 1.00 cores (42%)", then "throttled 12%, 3 pods" below it
/// when there is either (the pane is narrow); in the warning colour from 90%
/// of the limit or 25% of periods throttled.
fn cpu_lines(cpu: Option<Cpu>, app: &App) -> Vec<Line<'static>> {
    let label = |text: &str| Span::styled(format!("{text:<11}"), app.styles.get(Role::Header));
    let Some(cpu) = cpu else {
        return vec![Line::from(vec![
            label("cpu"),
            Span::styled("not reported", app.styles.get(Role::Muted)),
        ])];
    };
    let cores = |milli: u64| format!("{:.2}", milli as f64 / 1000.0);
    let usage = match cpu.of_limit() {
        Some(share) => format!(
            "{} of {} cores ({:.0}%)",
            cores(cpu.millicores),
            cores(cpu.limit_millicores),
            share * 100.0
        ),
        None => format!("{} cores (no limit)", cores(cpu.millicores)),
    };
    let mut more = Vec::new();
    if cpu.throttled_permille > 0 {
        more.push(format!(
            "throttled {:.0}%",
            f64::from(cpu.throttled_permille) / 10.0
        ));
    }
    if cpu.pods > 1 {
        more.push(format!("{} pods", cpu.pods));
    }
    let hot = cpu.of_limit().is_some_and(|share| share >= 0.9) || cpu.throttled_permille >= 250;
    let style = app.styles.get(if hot { Role::Warning } else { Role::Text });
    let mut lines = vec![Line::from(vec![label("cpu"), Span::styled(usage, style)])];
    if !more.is_empty() {
        lines.push(Line::from(vec![
            label(""),
            Span::styled(more.join(", "), style),
        ]));
    }
    lines
}

fn latency_role(p95: Duration) -> Role {
    if p95 >= Duration::from_millis(500) {
        Role::LatencyBad
    } else if p95 >= Duration::from_millis(100) {
        Role::LatencyWarn
    } else {
        Role::LatencyGood
    }
}

/// Per peer: health in words, rate, p95, error share (as the map's health
/// counts it), in 42 columns.
fn breakdown(app: &App, title: &str, edges: Vec<&Edge>, by_source: bool) -> Vec<Line<'static>> {
    let mut peers: BTreeMap<String, Vec<&Edge>> = BTreeMap::new();
    for e in edges {
        let peer = if by_source { &e.source } else { &e.destination };
        peers.entry(peer.clone()).or_default().push(e);
    }
    let mut lines = vec![Line::from(Span::styled(
        format!(
            "{title:<13}{:<8}{:>8} {:>6} {:>5}",
            "state", "rate", "p95", "err%"
        ),
        app.styles.get(Role::Header),
    ))];
    if peers.is_empty() {
        lines.push(Line::from(Span::styled(
            "  none",
            app.styles.get(Role::Muted),
        )));
        return lines;
    }
    let mut rows: Vec<(String, Vec<&Edge>)> = peers.into_iter().collect();
    rows.sort_by(|a, b| {
        let rate = |edges: &[&Edge]| edges.iter().map(|e| shown_rate(e)).sum::<f64>();
        rate(&b.1).total_cmp(&rate(&a.1))
    });
    for (peer, edges) in rows {
        let dropped_why = (!by_source).then(|| drop_reasons(app, &edges)).flatten();
        let s = Signals::of(&edges);
        let worst = edges.iter().map(|e| health(e)).min().unwrap_or(Health::Ok);
        let (word, role) = match worst {
            Health::Dropped => ("DROPPED", Role::Dropped),
            Health::Error => ("errors", Role::Error),
            Health::Warning => ("slow", Role::Warning),
            Health::Ok => ("ok", Role::Ok),
        };
        let rate: f64 = edges.iter().map(|e| shown_rate(e)).sum();
        let pct = edges
            .iter()
            .filter_map(|e| error_ratio(e))
            .reduce(f64::max)
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}", r * 100.0));
        let name: String = name_of(app, &peer).chars().take(12).collect();
        lines.push(Line::from(vec![
            Span::styled(format!("{name:<13}"), app.styles.get(Role::Workload)),
            Span::styled(format!("{word:<8}"), app.styles.get(role)),
            Span::styled(
                format!(
                    "{:>6}/s {:>6} {:>5}",
                    rate_text(rate),
                    s.p95.map_or_else(|| "-".to_string(), latency_text),
                    pct,
                ),
                app.styles.get(Role::Text),
            ),
        ]));
        if let Some(why) = dropped_why {
            lines.push(Line::from(Span::styled(why, app.styles.get(Role::Dropped))));
        }
    }
    lines
}

/// For a callee the box's calls are dropped by: "  NETFILTER_DROP by
/// shop/frontend-egress", the reasons from the edges and the policies from
/// recent flows (`w` explains them); `None` when nothing was dropped lately.
fn drop_reasons(app: &App, edges: &[&Edge]) -> Option<String> {
    if !edges.iter().any(|e| health(e) == Health::Dropped) {
        return None;
    }
    let mut reasons: Vec<String> = Vec::new();
    for edge in edges {
        for (reason, _, _) in &edge.drops {
            let reason = skymap_proto::names::sanitize(reason).into_owned();
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
    }
    let policies = policies_for(app, edges);
    let by = if policies.is_empty() {
        String::new()
    } else {
        format!(" by {}", policies.join(", "))
    };
    Some(format!("  {}{by}", reasons.join(", ")))
}

/// For an edge: its ports, policy drops and where it was seen.
fn edge_facts(app: &App, edges: &[&Edge]) -> Vec<Line<'static>> {
    let muted = app.styles.get(Role::Muted);
    let ports: Vec<String> = edges
        .iter()
        .map(|e| format!("{}/{}", e.port, e.protocol))
        .collect();
    let services: Vec<String> = edges.iter().flat_map(|e| e.services.clone()).collect();
    let seen_src: u64 = edges.iter().map(|e| e.seen_at_source).sum();
    let seen_dst: u64 = edges.iter().map(|e| e.seen_at_destination).sum();
    let mut lines = vec![Line::from(Span::styled(
        format!("ports {}", ports.join(", ")),
        muted,
    ))];
    if !services.is_empty() {
        lines.push(Line::from(Span::styled(
            format!("via service {}", services.join(", ")),
            muted,
        )));
    }
    if seen_src + seen_dst > 0 {
        lines.push(Line::from(Span::styled(
            format!("seen at source {seen_src}, at destination {seen_dst}"),
            muted,
        )));
    }
    lines.push(Line::from(Span::styled(
        "enter: these flows",
        app.styles.get(Role::KeyHint),
    )));
    lines
}

/// Policies named by the recent dropped flows along these edges.
fn policies_for(app: &App, edges: &[&Edge]) -> Vec<String> {
    let Some(edge) = edges.first() else {
        return Vec::new();
    };
    let (from, to) = (key_of(app, &edge.source), key_of(app, &edge.destination));
    let mut found: Vec<String> = Vec::new();
    for flow in app.flows.iter() {
        if flow.policy_reason.is_empty() {
            continue;
        }
        if series::key_matches(&from, &series::flow_key(flow.source.as_ref()))
            && series::key_matches(&to, &series::flow_key(flow.destination.as_ref()))
        {
            let policy = skymap_proto::names::sanitize(&flow.policy_reason).into_owned();
            if !found.contains(&policy) {
                found.push(policy);
            }
        }
    }
    found
}

fn sparkline(frame: &mut Frame, area: Rect, app: &App, rates: &[f64]) {
    let [label, spark] =
        Layout::horizontal([Constraint::Length(11), Constraint::Min(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(Span::styled("rate 5 min", app.styles.get(Role::Muted))),
        label,
    );
    // Sparkline takes integers: scale so the peak uses the full height.
    let peak = rates.iter().copied().fold(0.0_f64, f64::max);
    let scale = if peak > 0.0 { 1000.0 / peak } else { 0.0 };
    let width = usize::from(spark.width);
    let start = rates.len().saturating_sub(width);
    let data: Vec<u64> = rates[start..]
        .iter()
        .map(|r| (r * scale).round() as u64)
        .collect();
    let mut widget = Sparkline::default()
        .data(&data)
        .max(1000)
        .style(app.styles.get(Role::Sparkline));
    if app.glyphs == Glyphs::Ascii {
        widget = widget.bar_set(ASCII_BARS);
    }
    frame.render_widget(widget, spark);
}

const ASCII_BARS: symbols::bar::Set<'static> = symbols::bar::Set {
    full: "#",
    seven_eighths: "#",
    three_quarters: "|",
    five_eighths: "|",
    half: ":",
    three_eighths: ":",
    one_quarter: ".",
    one_eighth: ".",
    empty: " ",
};

/// p50, p95 and p99 per 5-second slot, one column each, newest right.
fn latency_chart(frame: &mut Frame, area: Rect, app: &App, points: &[LatencyPoint]) {
    let muted = app.styles.get(Role::Muted);
    if points.is_empty() {
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(Span::styled("latency over time", muted)),
                Line::from(Span::styled(
                    "  no responses seen in the flow stream yet",
                    muted,
                )),
            ]),
            area,
        );
        return;
    }
    let axis = 7u16;
    let plot_w = usize::from(area.width.saturating_sub(axis + 1));
    let rows = usize::from(area.height.saturating_sub(1)).max(1);
    let shown = &points[points.len().saturating_sub(plot_w)..];
    let top = shown.iter().map(|p| p.p99_us).max().unwrap_or(1).max(1);
    let ascii = app.glyphs == Glyphs::Ascii;
    let marks: [(char, Style); 3] = [
        (
            if ascii { '^' } else { '▴' },
            app.styles.get(Role::LatencyBad),
        ),
        (
            if ascii { 'o' } else { '•' },
            app.styles.get(Role::LatencyWarn),
        ),
        (
            if ascii { '.' } else { '·' },
            app.styles.get(Role::LatencyGood),
        ),
    ];
    let mut grid = vec![vec![(' ', Style::default()); plot_w]; rows];
    for (x, point) in shown.iter().enumerate() {
        // Worst first, so a lower percentile on the same cell wins.
        for (value, (mark, style)) in [point.p99_us, point.p95_us, point.p50_us].iter().zip(marks) {
            let level = ((*value as f64 / top as f64) * (rows - 1) as f64).round() as usize;
            let y = rows - 1 - level.min(rows - 1);
            grid[y][x] = (mark, style);
        }
    }
    let mut lines: Vec<Line> = Vec::with_capacity(rows + 1);
    let top_text = latency_text(Duration::from_micros(top));
    for (y, row) in grid.into_iter().enumerate() {
        let axis_text = if y == 0 {
            format!("{top_text:>6}")
        } else if y == rows - 1 {
            format!("{:>6}", "0")
        } else {
            " ".repeat(6)
        };
        let bar = if ascii { "|" } else { "┤" };
        let mut spans = vec![Span::styled(format!("{axis_text}{bar}"), muted)];
        spans.extend(row.into_iter().map(|(c, s)| Span::styled(c.to_string(), s)));
        lines.push(Line::from(spans));
    }
    let (p99, p95, p50) = (marks[0].0, marks[1].0, marks[2].0);
    lines.push(Line::from(Span::styled(
        format!("{:>7}{p50} p50  {p95} p95  {p99} p99, per 5 s", ""),
        muted,
    )));
    frame.render_widget(Paragraph::new(lines), area);
}

/// Bytes in at most 6 characters: `812 B`, `12 KB`, `3.4 MB`.
fn bytes_text(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value < 10.0 && unit > 0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}
