//! The service graph as `skymap graph` prints it: one JSON document (schema in
//! the README, "skymap graph -o json"), a Graphviz digraph, or a text list grouped by source.
//!
//! Nodes and edges are sorted by id so that the same graph always prints the
//! same bytes. Dot and text pass names through
//! [`sanitize`](skymap_proto::names::sanitize); JSON keeps them exact (JSON
//! escapes control characters itself).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;
use skymap_proto::names::{protocol_name, rcode_name, sanitize, verdict_name};
use skymap_proto::v1::{
    GraphEdge, GraphNode, GraphUpdate, HttpStatusCounts, LatencySummary, NodeKind, Rates, Verdict,
    Zoom,
};

use super::{duration, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Json,
    Dot,
    Text,
}

/// Writes a full graph snapshot in `format`.
pub fn render_graph(
    graph: &GraphUpdate,
    format: GraphFormat,
    out: &mut impl Write,
) -> io::Result<()> {
    let mut nodes: Vec<&GraphNode> = graph.nodes.iter().collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    let mut edges: Vec<&GraphEdge> = graph.edges.iter().collect();
    edges.sort_by(|a, b| a.id.cmp(&b.id));
    match format {
        GraphFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &JsonGraph::new(graph, &nodes, &edges))?;
            writeln!(out)
        }
        GraphFormat::Dot => out.write_all(dot(&nodes, &edges).as_bytes()),
        GraphFormat::Text => out.write_all(text(graph, &nodes, &edges).as_bytes()),
    }
}

fn zoom_name(zoom: i32) -> &'static str {
    match Zoom::try_from(zoom) {
        Ok(Zoom::Workload) => "workload",
        Ok(Zoom::Namespace) => "namespace",
        Ok(Zoom::Pod) => "pod",
        Err(_) => "unknown",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match NodeKind::try_from(kind) {
        Ok(NodeKind::Workload) => "workload",
        Ok(NodeKind::Pod) => "pod",
        Ok(NodeKind::Service) => "service",
        Ok(NodeKind::World) => "world",
        Ok(NodeKind::Host) => "host",
        Ok(NodeKind::Namespace) => "namespace",
        Ok(NodeKind::Unknown) | Err(_) => "unknown",
    }
}

/// Unix nanoseconds to RFC 3339; 0 means "not set".
fn time(ns: i64) -> Option<String> {
    (ns != 0).then(|| rfc3339(ns))
}

/// Dropped flows on an edge: the DROPPED verdict count, or the per-reason
/// flows when verdicts were not counted.
fn dropped(edge: &GraphEdge) -> u64 {
    let by_verdict: u64 = edge
        .verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Dropped as i32)
        .map(|v| v.count)
        .sum();
    if by_verdict > 0 {
        by_verdict
    } else {
        edge.drops.iter().map(|d| d.flows).sum()
    }
}

// ------------------------------------------------------------------ json

#[derive(Serialize)]
struct JsonGraph<'a> {
    time: Option<String>,
    zoom: &'static str,
    nodes: Vec<JsonNode<'a>>,
    edges: Vec<JsonEdge<'a>>,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: &'a str,
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    workload_kind: &'a str,
    labels: &'a [String],
    node_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu: Option<JsonCpu>,
}

/// A node's CPU, as the probes sampled it.
#[derive(Serialize)]
struct JsonCpu {
    cores: f64,
    /// 0 = no limit.
    limit_cores: f64,
    /// Share of throttled periods, 0..1.
    throttled: f64,
    pods: u32,
}

#[derive(Serialize)]
struct JsonEdge<'a> {
    id: &'a str,
    source: &'a str,
    destination: &'a str,
    port: u32,
    protocol: &'static str,
    flows: u64,
    connections: u64,
    requests: u64,
    dns_queries: u64,
    packets: u64,
    bytes: u64,
    verdicts: BTreeMap<&'static str, u64>,
    drops: Vec<JsonDrop<'a>>,
    http: Option<JsonHttp>,
    dns_rcodes: BTreeMap<String, u64>,
    latency_ms: Option<JsonLatency>,
    connect_latency_ms: Option<JsonLatency>,
    rate_1m: Option<JsonRates>,
    rate_5m: Option<JsonRates>,
    first_seen: Option<String>,
    last_seen: Option<String>,
    errors: u64,
    refused: u64,
    seen_at_source: u64,
    seen_at_destination: u64,
    services: &'a [String],
}

#[derive(Serialize)]
struct JsonDrop<'a> {
    reason: &'a str,
    packets: u64,
    flows: u64,
}

#[derive(Serialize)]
struct JsonHttp {
    #[serde(rename = "1xx")]
    info: u64,
    #[serde(rename = "2xx")]
    success: u64,
    #[serde(rename = "3xx")]
    redirect: u64,
    #[serde(rename = "4xx")]
    client_error: u64,
    #[serde(rename = "5xx")]
    server_error: u64,
}

#[derive(Serialize)]
struct JsonLatency {
    count: u64,
    min: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct JsonRates {
    flows_per_s: f64,
    requests_per_s: f64,
    bytes_per_s: f64,
    drops_per_s: f64,
    errors_per_s: f64,
}

/// Milliseconds, to the microsecond.
fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

impl<'a> JsonGraph<'a> {
    fn new(graph: &GraphUpdate, nodes: &[&'a GraphNode], edges: &[&'a GraphEdge]) -> Self {
        Self {
            time: time(graph.time_ns),
            zoom: zoom_name(graph.zoom),
            nodes: nodes
                .iter()
                .map(|n| JsonNode {
                    id: &n.id,
                    kind: kind_name(n.kind),
                    namespace: &n.namespace,
                    name: &n.name,
                    workload_kind: &n.workload_kind,
                    labels: &n.labels,
                    node_name: &n.node_name,
                    cpu: n.cpu.as_ref().map(|c| JsonCpu {
                        cores: c.cores,
                        limit_cores: c.limit_cores,
                        throttled: c.throttled,
                        pods: c.pods,
                    }),
                })
                .collect(),
            edges: edges.iter().map(|e| JsonEdge::new(e)).collect(),
        }
    }
}

impl<'a> JsonEdge<'a> {
    fn new(e: &'a GraphEdge) -> Self {
        let mut verdicts = BTreeMap::new();
        for v in &e.verdicts {
            *verdicts.entry(verdict_name(v.verdict)).or_insert(0) += v.count;
        }
        let mut dns_rcodes = BTreeMap::new();
        for r in &e.dns_rcodes {
            let name = match r.name.is_empty() {
                true => rcode_name(r.rcode).to_string(),
                false => r.name.clone(),
            };
            *dns_rcodes.entry(name).or_insert(0) += r.count;
        }
        let latency = |l: Option<&LatencySummary>| {
            l.filter(|l| l.count > 0).map(|l| JsonLatency {
                count: l.count,
                min: ms(l.min_ns),
                p50: ms(l.p50_ns),
                p95: ms(l.p95_ns),
                p99: ms(l.p99_ns),
                max: ms(l.max_ns),
                mean: ms(l.mean_ns),
            })
        };
        let rates = |r: Option<&Rates>| {
            r.map(|r| JsonRates {
                flows_per_s: r.flows_per_s,
                requests_per_s: r.requests_per_s,
                bytes_per_s: r.bytes_per_s,
                drops_per_s: r.drops_per_s,
                errors_per_s: r.errors_per_s,
            })
        };
        Self {
            id: &e.id,
            source: &e.source,
            destination: &e.destination,
            port: e.port,
            protocol: protocol_name(e.protocol),
            flows: e.flows,
            connections: e.connections,
            requests: e.requests,
            dns_queries: e.dns_queries,
            packets: e.packets,
            bytes: e.bytes,
            verdicts,
            drops: e
                .drops
                .iter()
                .map(|d| JsonDrop {
                    reason: &d.reason,
                    packets: d.packets,
                    flows: d.flows,
                })
                .collect(),
            http: e.http.map(|h: HttpStatusCounts| JsonHttp {
                info: h.info,
                success: h.success,
                redirect: h.redirect,
                client_error: h.client_error,
                server_error: h.server_error,
            }),
            dns_rcodes,
            latency_ms: latency(e.latency.as_ref()),
            connect_latency_ms: latency(e.connect_latency.as_ref()),
            rate_1m: rates(e.rate_1m.as_ref()),
            rate_5m: rates(e.rate_5m.as_ref()),
            first_seen: time(e.first_seen_ns),
            last_seen: time(e.last_seen_ns),
            errors: e.errors,
            refused: e.refused,
            seen_at_source: e.seen_at_source,
            seen_at_destination: e.seen_at_destination,
            services: &e.services,
        }
    }
}

// ------------------------------------------------------------------ dot

/// A DOT quoted string. Backslashes are doubled so Graphviz does not read
/// `\n`, `\N`, `\G` ... in names as its own escapes.
fn quote(text: &str) -> String {
    let clean = sanitize(text);
    let mut quoted = String::with_capacity(clean.len() + 2);
    quoted.push('"');
    for c in clean.chars() {
        if matches!(c, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// A label of several lines: each line quoted-escaped, joined with DOT's `\n`.
fn label_lines(lines: &[String]) -> String {
    let escaped: Vec<String> = lines
        .iter()
        .map(|line| {
            let q = quote(line);
            q[1..q.len() - 1].to_string()
        })
        .collect();
    format!("\"{}\"", escaped.join("\\n"))
}

fn node_label(node: &GraphNode) -> String {
    let is_namespace = node.kind == NodeKind::Namespace as i32;
    match (
        node.namespace.is_empty() || is_namespace,
        node.name.is_empty(),
    ) {
        (_, true) => node.id.clone(),
        (true, false) => node.name.clone(),
        (false, false) => format!("{}/{}", node.namespace, node.name),
    }
}

fn port_protocol(edge: &GraphEdge) -> String {
    match edge.port {
        0 => protocol_name(edge.protocol).to_string(),
        port => format!("{port}/{}", protocol_name(edge.protocol)),
    }
}

fn dot(nodes: &[&GraphNode], edges: &[&GraphEdge]) -> String {
    let mut out = String::from("digraph skymap {\n");
    out.push_str("  graph [rankdir=LR, fontname=\"Helvetica\"];\n");
    out.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    let node_line = |node: &GraphNode| {
        let shape = match NodeKind::try_from(node.kind) {
            Ok(NodeKind::World | NodeKind::Host) => ", shape=ellipse",
            _ => "",
        };
        format!(
            "{} [label={}{shape}];",
            quote(&node.id),
            quote(&node_label(node))
        )
    };
    let mut by_namespace: BTreeMap<&str, Vec<&GraphNode>> = BTreeMap::new();
    for node in nodes {
        if node.namespace.is_empty() || node.kind == NodeKind::Namespace as i32 {
            let _ = writeln!(out, "  {}", node_line(node));
        } else {
            by_namespace.entry(&node.namespace).or_default().push(node);
        }
    }
    for (namespace, members) in by_namespace {
        let _ = writeln!(
            out,
            "  subgraph {} {{",
            quote(&format!("cluster_{namespace}"))
        );
        let _ = writeln!(out, "    label={};", quote(namespace));
        for node in members {
            let _ = writeln!(out, "    {}", node_line(node));
        }
        out.push_str("  }\n");
    }
    for edge in edges {
        let mut lines = vec![port_protocol(edge), format!("flows {}", edge.flows)];
        if let Some(latency) = edge.latency.filter(|l| l.count > 0) {
            lines.push(format!("p95 {}", duration(latency.p95_ns)));
        }
        let drops = !edge.drops.is_empty() || dropped(edge) > 0;
        if drops {
            lines.push(format!("DROPPED {}", dropped(edge)));
        }
        let colour = if drops {
            ", color=red, fontcolor=red"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}{colour}];",
            quote(&edge.source),
            quote(&edge.destination),
            label_lines(&lines)
        );
    }
    out.push_str("}\n");
    out
}

// ------------------------------------------------------------------ text

fn text(graph: &GraphUpdate, nodes: &[&GraphNode], edges: &[&GraphEdge]) -> String {
    let names: HashMap<&str, String> = nodes
        .iter()
        .map(|n| (n.id.as_str(), node_label(n)))
        .collect();
    let name = |id: &str| sanitize(names.get(id).map_or(id, String::as_str)).into_owned();
    let mut out = String::new();
    let _ = write!(
        out,
        "{} nodes, {} edges ({} zoom)",
        nodes.len(),
        edges.len(),
        zoom_name(graph.zoom)
    );
    if let Some(at) = time(graph.time_ns) {
        let _ = write!(out, " at {at}");
    }
    out.push('\n');

    // Sources in name order; each source's edges by destination name.
    let mut groups: BTreeMap<String, Vec<(String, &GraphEdge)>> = BTreeMap::new();
    for edge in edges {
        groups
            .entry(name(&edge.source))
            .or_default()
            .push((name(&edge.destination), edge));
    }
    let width = |f: &dyn Fn(&(String, &GraphEdge)) -> usize| {
        groups.values().flatten().map(f).max().unwrap_or(0)
    };
    let destination_width = width(&|(dst, _)| dst.chars().count());
    let port_width = width(&|(_, e)| port_protocol(e).len());
    for (source, mut targets) in groups {
        targets.sort_by(|a, b| (&a.0, &a.1.id).cmp(&(&b.0, &b.1.id)));
        let _ = writeln!(out, "\n{source}");
        for (destination, edge) in targets {
            let mut line = format!(
                "  -> {destination:<destination_width$}  {:<port_width$}",
                port_protocol(edge)
            );
            for item in edge_items(edge) {
                line.push_str("  ");
                line.push_str(&item);
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// The figures of one edge, each a short phrase.
fn edge_items(edge: &GraphEdge) -> Vec<String> {
    let mut items = vec![format!("flows {}", edge.flows)];
    if edge.requests > 0 {
        items.push(format!("req {}", edge.requests));
    }
    if let Some(h) = edge.http {
        let classes: Vec<String> = [
            ("1xx", h.info),
            ("2xx", h.success),
            ("3xx", h.redirect),
            ("4xx", h.client_error),
            ("5xx", h.server_error),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
        if !classes.is_empty() {
            items.push(classes.join(" "));
        }
    }
    if edge.dns_queries > 0 {
        items.push(format!("dns {}", edge.dns_queries));
    }
    if !edge.dns_rcodes.is_empty() {
        let rcodes: Vec<String> = edge
            .dns_rcodes
            .iter()
            .map(|r| {
                let name = match r.name.is_empty() {
                    true => rcode_name(r.rcode).into(),
                    false => sanitize(&r.name),
                };
                format!("{name} {}", r.count)
            })
            .collect();
        items.push(rcodes.join(" "));
    }
    for v in &edge.verdicts {
        if v.count > 0
            && v.verdict != Verdict::Forwarded as i32
            && v.verdict != Verdict::Dropped as i32
        {
            items.push(format!("{} {}", verdict_name(v.verdict), v.count));
        }
    }
    if !edge.drops.is_empty() || dropped(edge) > 0 {
        let mut item = format!("DROPPED {}", dropped(edge));
        if !edge.drops.is_empty() {
            let reasons: Vec<String> = edge
                .drops
                .iter()
                .map(|d| {
                    format!(
                        "{} {} pkts, {} flows",
                        sanitize(&d.reason),
                        d.packets,
                        d.flows
                    )
                })
                .collect();
            let _ = write!(item, " ({})", reasons.join("; "));
        }
        items.push(item);
    }
    if edge.refused > 0 {
        items.push(format!("refused {}", edge.refused));
    }
    let percentiles = |prefix: &str, latency: Option<LatencySummary>| {
        let latency = latency.filter(|l| l.count > 0);
        let value = |pick: fn(&LatencySummary) -> u64| {
            latency
                .as_ref()
                .map_or("-".to_string(), |l| duration(pick(l)))
        };
        format!(
            "{prefix}p50 {} p95 {} p99 {}",
            value(|l| l.p50_ns),
            value(|l| l.p95_ns),
            value(|l| l.p99_ns)
        )
    };
    items.push(percentiles("", edge.latency));
    if edge.connect_latency.is_some_and(|l| l.count > 0) {
        items.push(percentiles("connect ", edge.connect_latency));
    }
    if let Some(rate) = edge.rate_1m.filter(|r| r.flows_per_s > 0.0) {
        items.push(format!("1m {:.1}/s", rate.flows_per_s));
    }
    if !edge.services.is_empty() {
        let services: Vec<_> = edge.services.iter().map(|s| sanitize(s)).collect();
        items.push(format!("via {}", services.join(",")));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use skymap_proto::v1::{DropCount, Protocol, RcodeCount, VerdictCount};

    // 2026-11-26T06:18:18.123Z
    const T: i64 = 1_795_673_898_123_000_000;

    fn node(id: &str, kind: NodeKind, namespace: &str, name: &str) -> GraphNode {
        GraphNode {
            id: id.into(),
            kind: kind as i32,
            namespace: namespace.into(),
            name: name.into(),
            workload_kind: if kind == NodeKind::Workload {
                "Deployment".into()
            } else {
                String::new()
            },
            labels: vec![format!("app={name}")],
            node_name: String::new(),
            cpu: None,
        }
    }

    fn latency(p50_ms: u64, p95_ms: u64, p99_ms: u64) -> LatencySummary {
        LatencySummary {
            count: 200,
            min_ns: 1_000_000,
            p50_ns: p50_ms * 1_000_000,
            p95_ns: p95_ms * 1_000_000,
            p99_ns: p99_ms * 1_000_000,
            max_ns: 120_000_000,
            mean_ns: 15_500_000,
        }
    }

    fn sample() -> GraphUpdate {
        let nodes = vec![
            node(
                "workload:kube-system/kube-dns",
                NodeKind::Workload,
                "kube-system",
                "kube-dns",
            ),
            node(
                "workload:default/frontend",
                NodeKind::Workload,
                "default",
                "frontend",
            ),
            node(
                "workload:default/backend",
                NodeKind::Workload,
                "default",
                "backend",
            ),
            node("world", NodeKind::World, "", "world"),
        ];
        let to_backend = GraphEdge {
            id: "workload:default/frontend->workload:default/backend:8080/TCP".into(),
            source: "workload:default/frontend".into(),
            destination: "workload:default/backend".into(),
            port: 8080,
            protocol: Protocol::Tcp as i32,
            flows: 400,
            connections: 40,
            requests: 200,
            packets: 4000,
            bytes: 512_000,
            verdicts: vec![VerdictCount {
                verdict: Verdict::Forwarded as i32,
                count: 400,
            }],
            http: Some(HttpStatusCounts {
                success: 190,
                server_error: 10,
                ..Default::default()
            }),
            latency: Some(latency(12, 40, 90)),
            connect_latency: Some(LatencySummary {
                count: 40,
                p50_ns: 300_000,
                p95_ns: 900_000,
                p99_ns: 1_200_000,
                ..Default::default()
            }),
            rate_1m: Some(Rates {
                flows_per_s: 3.2,
                requests_per_s: 1.6,
                bytes_per_s: 4096.0,
                ..Default::default()
            }),
            first_seen_ns: T - 60_000_000_000,
            last_seen_ns: T,
            errors: 10,
            seen_at_source: 400,
            seen_at_destination: 400,
            services: vec!["backend".into()],
            ..Default::default()
        };
        let to_dns = GraphEdge {
            id: "workload:default/frontend->workload:kube-system/kube-dns:53/UDP".into(),
            source: "workload:default/frontend".into(),
            destination: "workload:kube-system/kube-dns".into(),
            port: 53,
            protocol: Protocol::Udp as i32,
            flows: 120,
            dns_queries: 120,
            packets: 120,
            bytes: 9600,
            verdicts: vec![VerdictCount {
                verdict: Verdict::Dropped as i32,
                count: 120,
            }],
            drops: vec![DropCount {
                reason: "NETFILTER_DROP".into(),
                packets: 120,
                flows: 12,
            }],
            first_seen_ns: T - 1_000_000_000,
            last_seen_ns: T,
            ..Default::default()
        };
        let to_world = GraphEdge {
            id: "workload:default/backend->world:443/TCP".into(),
            source: "workload:default/backend".into(),
            destination: "world".into(),
            port: 443,
            protocol: Protocol::Tcp as i32,
            flows: 5,
            dns_rcodes: vec![],
            refused: 2,
            ..Default::default()
        };
        let dns_ok = GraphEdge {
            id: "workload:default/backend->workload:kube-system/kube-dns:53/UDP".into(),
            source: "workload:default/backend".into(),
            destination: "workload:kube-system/kube-dns".into(),
            port: 53,
            protocol: Protocol::Udp as i32,
            flows: 50,
            dns_queries: 50,
            dns_rcodes: vec![
                RcodeCount {
                    rcode: 0,
                    name: "NOERROR".into(),
                    count: 45,
                },
                RcodeCount {
                    rcode: 3,
                    name: String::new(),
                    count: 5,
                },
            ],
            latency: Some(LatencySummary {
                count: 50,
                min_ns: 200_000,
                p50_ns: 800_000,
                p95_ns: 2_100_000,
                p99_ns: 5_000_000,
                max_ns: 6_000_000,
                mean_ns: 1_000_000,
            }),
            ..Default::default()
        };
        GraphUpdate {
            time_ns: T,
            full: true,
            zoom: Zoom::Workload as i32,
            nodes,
            edges: vec![to_world, to_dns, to_backend, dns_ok],
            ..Default::default()
        }
    }

    fn render(graph: &GraphUpdate, format: GraphFormat) -> String {
        let mut out = Vec::new();
        render_graph(graph, format, &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn text_groups_by_source() {
        insta::assert_snapshot!(render(&sample(), GraphFormat::Text), @r#"
        4 nodes, 4 edges (workload zoom) at 2026-11-26T06:18:18.123Z

        default/backend
          -> kube-system/kube-dns  53/UDP    flows 50  dns 50  NOERROR 45 NXDOMAIN 5  p50 800µs p95 2.1ms p99 5.0ms
          -> world                 443/TCP   flows 5  refused 2  p50 - p95 - p99 -

        default/frontend
          -> default/backend       8080/TCP  flows 400  req 200  2xx 190 5xx 10  p50 12ms p95 40ms p99 90ms  connect p50 300µs p95 900µs p99 1.2ms  1m 3.2/s  via backend
          -> kube-system/kube-dns  53/UDP    flows 120  dns 120  DROPPED 120 (NETFILTER_DROP 120 pkts, 12 flows)  p50 - p95 - p99 -
        "#);
    }

    #[test]
    fn dot_is_a_clustered_digraph() {
        insta::assert_snapshot!(render(&sample(), GraphFormat::Dot), @r#"
        digraph skymap {
          graph [rankdir=LR, fontname="Helvetica"];
          node [shape=box, style=rounded, fontname="Helvetica"];
          edge [fontname="Helvetica", fontsize=10];
          "world" [label="world", shape=ellipse];
          subgraph "cluster_default" {
            label="default";
            "workload:default/backend" [label="default/backend"];
            "workload:default/frontend" [label="default/frontend"];
          }
          subgraph "cluster_kube-system" {
            label="kube-system";
            "workload:kube-system/kube-dns" [label="kube-system/kube-dns"];
          }
          "workload:default/backend" -> "workload:kube-system/kube-dns" [label="53/UDP\nflows 50\np95 2.1ms"];
          "workload:default/backend" -> "world" [label="443/TCP\nflows 5"];
          "workload:default/frontend" -> "workload:default/backend" [label="8080/TCP\nflows 400\np95 40ms"];
          "workload:default/frontend" -> "workload:kube-system/kube-dns" [label="53/UDP\nflows 120\nDROPPED 120", color=red, fontcolor=red];
        }
        "#);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let text = render(&sample(), GraphFormat::Json);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(value["time"], "2026-11-26T06:18:18.123Z");
        assert_eq!(value["zoom"], "workload");
        let ids: Vec<&str> = value["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| n["id"].as_str().expect("id"))
            .collect();
        assert_eq!(
            ids,
            [
                "workload:default/backend",
                "workload:default/frontend",
                "workload:kube-system/kube-dns",
                "world"
            ]
        );
        let node = &value["nodes"][0];
        assert_eq!(node["kind"], "workload");
        assert_eq!(node["workload_kind"], "Deployment");
        assert_eq!(node["labels"][0], "app=backend");
        assert_eq!(value["nodes"][3]["kind"], "world");

        let edges = value["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), 4);
        let edge_ids: Vec<&str> = edges
            .iter()
            .map(|e| e["id"].as_str().expect("id"))
            .collect();
        let mut sorted = edge_ids.clone();
        sorted.sort();
        assert_eq!(edge_ids, sorted);
        let backend = edges
            .iter()
            .find(|e| e["port"] == 8080)
            .expect("frontend->backend");
        assert_eq!(backend["protocol"], "TCP");
        assert_eq!(backend["flows"], 400);
        assert_eq!(backend["connections"], 40);
        assert_eq!(backend["requests"], 200);
        assert_eq!(backend["bytes"], 512_000);
        assert_eq!(backend["verdicts"]["FORWARDED"], 400);
        assert_eq!(backend["http"]["2xx"], 190);
        assert_eq!(backend["http"]["5xx"], 10);
        assert_eq!(backend["latency_ms"]["p95"], 40.0);
        assert_eq!(backend["latency_ms"]["mean"], 15.5);
        assert_eq!(backend["latency_ms"]["count"], 200);
        assert_eq!(backend["connect_latency_ms"]["p99"], 1.2);
        assert_eq!(backend["rate_1m"]["flows_per_s"], 3.2);
        assert!(backend["rate_5m"].is_null());
        assert_eq!(backend["first_seen"], "2026-11-26T06:17:18.123Z");
        assert_eq!(backend["last_seen"], "2026-11-26T06:18:18.123Z");
        assert_eq!(backend["errors"], 10);
        assert_eq!(backend["seen_at_destination"], 400);
        assert_eq!(backend["services"][0], "backend");
        let dns = edges
            .iter()
            .find(|e| {
                e["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("workload:default/frontend->workload:kube"))
            })
            .expect("frontend->dns");
        assert_eq!(dns["drops"][0]["reason"], "NETFILTER_DROP");
        assert_eq!(dns["drops"][0]["packets"], 120);
        assert_eq!(dns["drops"][0]["flows"], 12);
        assert_eq!(dns["verdicts"]["DROPPED"], 120);
        assert!(dns["latency_ms"].is_null() && dns["http"].is_null());
        let dns_ok = edges
            .iter()
            .find(|e| e["dns_queries"] == 50)
            .expect("backend->dns");
        assert_eq!(dns_ok["dns_rcodes"]["NOERROR"], 45);
        assert_eq!(dns_ok["dns_rcodes"]["NXDOMAIN"], 5);
        let world = edges.iter().find(|e| e["port"] == 443).expect("to world");
        assert!(world["first_seen"].is_null());
        assert_eq!(world["refused"], 2);
        // Same graph, same bytes, whatever the input order.
        let mut shuffled = sample();
        shuffled.nodes.reverse();
        shuffled.edges.reverse();
        assert_eq!(render(&shuffled, GraphFormat::Json), text);
    }

    #[test]
    fn dot_escapes_quotes_and_backslashes() {
        let mut graph = sample();
        graph.nodes.push(node(
            "workload:we\"ird/na\\me",
            NodeKind::Workload,
            "we\"ird",
            "na\\me",
        ));
        graph.edges.push(GraphEdge {
            id: "x".into(),
            source: "workload:we\"ird/na\\me".into(),
            destination: "world".into(),
            ..Default::default()
        });
        let dot = render(&graph, GraphFormat::Dot);
        assert!(dot.contains(r#"subgraph "cluster_we\"ird" {"#), "{dot}");
        assert!(
            dot.contains(r#"    "workload:we\"ird/na\\me" [label="we\"ird/na\\me"];"#),
            "{dot}"
        );
        assert!(
            dot.contains(r#"  "workload:we\"ird/na\\me" -> "world" [label="unknown\nflows 0"];"#),
            "{dot}"
        );
    }

    #[test]
    fn hostile_names_are_sanitized_in_dot_and_text() {
        let mut graph = sample();
        graph.nodes[1].name = "front\x1b]0;pwned\x07end\x1b[2J".into();
        graph.edges[1].drops[0].reason = "R\x1b[31m".into();
        graph.edges.push(GraphEdge {
            id: "y".into(),
            source: "evil\x1b[1A".into(),
            destination: "world".into(),
            services: vec!["svc\x1bc".into()],
            ..Default::default()
        });
        for format in [GraphFormat::Dot, GraphFormat::Text] {
            let out = render(&graph, format);
            assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
            assert!(out.contains("pwned"), "{out:?}");
        }
        // JSON escapes control characters instead.
        let json = render(&graph, GraphFormat::Json);
        assert!(!json.contains('\x1b') && json.contains("\\u001b"));
    }

    #[test]
    fn empty_graph() {
        let empty = GraphUpdate::default();
        assert_eq!(
            render(&empty, GraphFormat::Text),
            "0 nodes, 0 edges (workload zoom)\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(&render(&empty, GraphFormat::Json)).expect("json");
        assert!(value["time"].is_null());
        assert_eq!(value["nodes"], serde_json::json!([]));
        assert!(
            render(&empty, GraphFormat::Dot)
                .ends_with("edge [fontname=\"Helvetica\", fontsize=10];\n}\n")
        );
    }
}
