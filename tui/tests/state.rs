//! The explorer's state: graph updates folded in, the namespace tree, the
//! flow ring, and the drop and DNS summaries built from flows.

use std::time::Duration;

use skymap_proto::filter::FlowFilterSet;
use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    Dns, DropCount, Endpoint, Flow, FlowFilter, GraphEdge, GraphNode, GraphUpdate, L7Type,
    LatencySummary, Layer4, Layer7, NodeKind as WireKind, Protocol, Rates as WireRates, RcodeCount,
    Verdict, VerdictCount, Workload, Zoom,
};
use skymap_tui::state::{
    DnsSummary, DropSummary, FlowLog, Health, NamespaceFilter, NamespaceTree, NodeKind,
    ServiceGraph, health,
};

// ---------------------------------------------------------------- builders

fn workload(ns: &str, name: &str) -> GraphNode {
    GraphNode {
        id: format!("workload:{ns}/{name}"),
        kind: WireKind::Workload as i32,
        namespace: ns.to_string(),
        name: name.to_string(),
        workload_kind: "Deployment".to_string(),
        labels: vec![format!("app={name}")],
        node_name: String::new(),
        cpu: None,
    }
}

fn edge(source: &str, destination: &str, port: u32) -> GraphEdge {
    GraphEdge {
        id: format!("{source}->{destination}:{port}/TCP"),
        source: source.to_string(),
        destination: destination.to_string(),
        port,
        protocol: Protocol::Tcp as i32,
        flows: 10,
        ..Default::default()
    }
}

fn rates(flows_per_s: f64, drops_per_s: f64) -> Option<WireRates> {
    Some(WireRates {
        flows_per_s,
        drops_per_s,
        ..Default::default()
    })
}

fn rcode(rcode: u32, count: u64) -> RcodeCount {
    RcodeCount {
        rcode,
        name: String::new(),
        count,
    }
}

fn snapshot(time_ns: i64, zoom: Zoom, nodes: Vec<GraphNode>, edges: Vec<GraphEdge>) -> GraphUpdate {
    GraphUpdate {
        time_ns,
        full: true,
        zoom: zoom as i32,
        nodes,
        edges,
        ..Default::default()
    }
}

fn endpoint(ns: &str, workload: &str, ip: &str, port: u32) -> Endpoint {
    Endpoint {
        ip: ip_to_bytes(ip.parse().expect("valid IP")),
        port,
        namespace: ns.to_string(),
        pod_name: if workload.is_empty() {
            String::new()
        } else {
            format!("{workload}-abc12")
        },
        workload: (!workload.is_empty()).then(|| Workload {
            name: workload.to_string(),
            kind: "Deployment".to_string(),
        }),
        ..Default::default()
    }
}

fn drop_flow(time_ns: i64, src: Endpoint, dst: Endpoint, reason: &str) -> Flow {
    Flow {
        time_ns,
        verdict: Verdict::Dropped as i32,
        drop_reason: reason.to_string(),
        source: Some(src),
        destination: Some(dst),
        l4: Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn dns_flow(query: &str, qtype: u32, response: Option<(u32, u64)>, client: Endpoint) -> Flow {
    let server = endpoint("kube-system", "coredns", "10.96.0.10", 53);
    let (kind, rcode, latency_ns) = match response {
        Some((rcode, latency)) => (L7Type::Response, rcode, latency),
        None => (L7Type::Request, 0, 0),
    };
    let (source, destination) = if response.is_some() {
        (server, client)
    } else {
        (client, server)
    };
    Flow {
        time_ns: 1,
        verdict: Verdict::Forwarded as i32,
        source: Some(source),
        destination: Some(destination),
        is_reply: response.is_some(),
        l4: Some(Layer4 {
            protocol: Protocol::Udp as i32,
            ..Default::default()
        }),
        l7: Some(Layer7 {
            r#type: kind as i32,
            latency_ns,
            record: Some(Record::Dns(Dns {
                query: query.to_string(),
                qtype,
                rcode,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- graph

#[test]
fn snapshot_then_delta_then_removal() {
    let mut graph = ServiceGraph::new();
    let mut web_api = edge("workload:shop/web", "workload:shop/api", 8080);
    web_api.verdicts = vec![
        VerdictCount {
            verdict: Verdict::Forwarded as i32,
            count: 9,
        },
        VerdictCount {
            verdict: Verdict::Dropped as i32,
            count: 1,
        },
    ];
    web_api.drops = vec![DropCount {
        reason: "POLICY_DENIED".to_string(),
        packets: 3,
        flows: 1,
    }];
    web_api.latency = Some(LatencySummary {
        count: 4,
        p50_ns: 2_000_000,
        p95_ns: 9_000_000,
        ..Default::default()
    });
    web_api.dns_rcodes = vec![RcodeCount {
        rcode: 3,
        name: "whatever".to_string(),
        count: 2,
    }];
    graph.apply(snapshot(
        100,
        Zoom::Workload,
        vec![workload("shop", "web"), workload("shop", "api")],
        vec![web_api],
    ));
    assert_eq!(graph.time_ns(), 100);
    assert_eq!(graph.nodes().count(), 2);
    let e = graph
        .edge("workload:shop/web->workload:shop/api:8080/TCP")
        .expect("present");
    assert_eq!((e.forwarded, e.dropped, e.flows, e.port), (9, 1, 10, 8080));
    assert_eq!(e.protocol, "TCP");
    assert_eq!(e.drops, vec![("POLICY_DENIED".to_string(), 3, 1)]);
    assert_eq!(e.dns_rcodes, vec![("NXDOMAIN".to_string(), 2)]);
    assert_eq!(e.latency.expect("present").p95, Duration::from_millis(9));
    assert_eq!(e.connect_latency, None);
    let api = graph.node("workload:shop/api").expect("present");
    assert_eq!(api.kind, NodeKind::Workload);
    assert_eq!(api.labels, vec!["app=api".to_string()]);

    // Delta: a new node and edge, and an update to an existing edge.
    let mut updated = edge("workload:shop/web", "workload:shop/api", 8080);
    updated.flows = 25;
    graph.apply(GraphUpdate {
        time_ns: 200,
        zoom: Zoom::Workload as i32,
        nodes: vec![workload("shop", "db")],
        edges: vec![updated, edge("workload:shop/api", "workload:shop/db", 5432)],
        ..Default::default()
    });
    assert_eq!(graph.time_ns(), 200);
    assert_eq!(graph.nodes().count(), 3);
    assert_eq!(graph.edges().count(), 2);
    assert_eq!(
        graph
            .edge("workload:shop/web->workload:shop/api:8080/TCP")
            .expect("present")
            .flows,
        25
    );
    assert_eq!(graph.edges_from("workload:shop/api").count(), 1);
    assert_eq!(graph.edges_to("workload:shop/api").count(), 1);
    assert_eq!(graph.edges_to("workload:shop/web").count(), 0);

    // Removing db removes its edge too, even if the relay forgets to say so.
    graph.apply(GraphUpdate {
        time_ns: 300,
        zoom: Zoom::Workload as i32,
        removed_nodes: vec!["workload:shop/db".to_string()],
        ..Default::default()
    });
    assert_eq!(graph.nodes().count(), 2);
    assert!(graph.node("workload:shop/db").is_none());
    assert_eq!(graph.edges().count(), 1);

    graph.apply(GraphUpdate {
        time_ns: 400,
        zoom: Zoom::Workload as i32,
        removed_edges: vec!["workload:shop/web->workload:shop/api:8080/TCP".to_string()],
        ..Default::default()
    });
    assert_eq!(graph.edges().count(), 0);
    assert_eq!(graph.nodes().count(), 2);

    // A new snapshot replaces everything.
    graph.apply(snapshot(
        500,
        Zoom::Workload,
        vec![workload("other", "x")],
        vec![],
    ));
    assert_eq!(graph.namespaces(), vec!["other".to_string()]);
    assert_eq!(graph.nodes().count(), 1);
    assert_eq!(graph.ignored(), 0);
}

#[test]
fn delta_for_another_zoom_or_before_a_snapshot_is_ignored() {
    let mut graph = ServiceGraph::new();
    graph.apply(GraphUpdate {
        time_ns: 5,
        zoom: Zoom::Workload as i32,
        nodes: vec![workload("a", "b")],
        ..Default::default()
    });
    assert_eq!(graph.nodes().count(), 0);
    assert_eq!(graph.ignored(), 1);
    assert_eq!(graph.zoom(), None);

    graph.apply(snapshot(
        10,
        Zoom::Workload,
        vec![workload("shop", "web")],
        vec![],
    ));
    graph.apply(GraphUpdate {
        time_ns: 20,
        zoom: Zoom::Pod as i32,
        nodes: vec![workload("shop", "api")],
        removed_nodes: vec!["workload:shop/web".to_string()],
        ..Default::default()
    });
    assert_eq!(graph.ignored(), 2);
    assert_eq!(graph.time_ns(), 10);
    assert!(graph.node("workload:shop/web").is_some());
    assert!(graph.node("workload:shop/api").is_none());
    assert_eq!(graph.zoom(), Some(skymap_tui::state::Zoom::Workload));
}

#[test]
fn health_rules() {
    let base = || edge("workload:a/x", "workload:a/y", 80);
    let cases: Vec<(&str, GraphEdge, Health)> = vec![
        ("quiet", base(), Health::Ok),
        (
            "drops more than a minute ago (5m only)",
            GraphEdge {
                rate_5m: rates(1.0, 0.2),
                ..base()
            },
            Health::Ok,
        ),
        (
            "recent drops (1m)",
            GraphEdge {
                rate_1m: rates(1.0, 0.1),
                ..base()
            },
            Health::Dropped,
        ),
        (
            "old drops only",
            GraphEdge {
                verdicts: vec![VerdictCount {
                    verdict: Verdict::Dropped as i32,
                    count: 7,
                }],
                rate_5m: rates(1.0, 0.0),
                ..base()
            },
            Health::Ok,
        ),
        (
            "6% errors",
            GraphEdge {
                requests: 100,
                errors: 6,
                ..base()
            },
            Health::Error,
        ),
        (
            "exactly 5% errors",
            GraphEdge {
                requests: 100,
                errors: 5,
                ..base()
            },
            Health::Ok,
        ),
        (
            "errors without attempts",
            GraphEdge {
                errors: 1,
                ..base()
            },
            Health::Error,
        ),
        (
            "dns failures",
            GraphEdge {
                dns_queries: 10,
                errors: 1,
                ..base()
            },
            Health::Error,
        ),
        (
            "slow p95",
            GraphEdge {
                latency: Some(LatencySummary {
                    count: 1,
                    p95_ns: 501_000_000,
                    ..Default::default()
                }),
                ..base()
            },
            Health::Warning,
        ),
        (
            "p95 at the limit",
            GraphEdge {
                latency: Some(LatencySummary {
                    count: 1,
                    p95_ns: 500_000_000,
                    ..Default::default()
                }),
                ..base()
            },
            Health::Ok,
        ),
        (
            "drops beat errors beat latency",
            GraphEdge {
                requests: 10,
                errors: 10,
                rate_1m: rates(1.0, 1.0),
                latency: Some(LatencySummary {
                    count: 1,
                    p95_ns: 900_000_000,
                    ..Default::default()
                }),
                ..base()
            },
            Health::Dropped,
        ),
        (
            "DNS: search-path NXDOMAIN answers are not failures",
            GraphEdge {
                dns_queries: 30,
                errors: 20,
                dns_rcodes: vec![rcode(0, 10), rcode(3, 20)],
                ..base()
            },
            Health::Ok,
        ),
        (
            "DNS: SERVFAIL is",
            GraphEdge {
                dns_queries: 30,
                errors: 2,
                dns_rcodes: vec![rcode(0, 28), rcode(2, 2)],
                ..base()
            },
            Health::Error,
        ),
        (
            "HTTP: errors stopped a minute ago",
            GraphEdge {
                requests: 100,
                errors: 60,
                rate_1m: Some(WireRates {
                    requests_per_s: 2.0,
                    errors_per_s: 0.0,
                    ..Default::default()
                }),
                ..base()
            },
            Health::Ok,
        ),
        (
            "HTTP: recent errors",
            GraphEdge {
                requests: 1000,
                errors: 10,
                rate_1m: Some(WireRates {
                    requests_per_s: 2.0,
                    errors_per_s: 0.5,
                    ..Default::default()
                }),
                ..base()
            },
            Health::Error,
        ),
        (
            "refused connections, no requests",
            GraphEdge {
                connections: 4,
                refused: 4,
                errors: 4,
                ..base()
            },
            Health::Error,
        ),
    ];
    for (name, wire, expected) in cases {
        let mut graph = ServiceGraph::new();
        let id = wire.id.clone();
        graph.apply(snapshot(1, Zoom::Workload, vec![], vec![wire]));
        assert_eq!(
            health(graph.edge(&id).expect("present")),
            expected,
            "{name}"
        );
    }
}

#[test]
fn hostile_strings_come_out_sanitized() {
    let mut graph = ServiceGraph::new();
    let mut node = workload("shop", "evil\x1b]0;pwned\x07\x1b[2J");
    node.labels = vec!["app=\x1b[31mred".to_string()];
    let mut e = edge(&node.id, "world", 443);
    e.drops = vec![DropCount {
        reason: "X\x1b[2J".to_string(),
        packets: 1,
        flows: 1,
    }];
    e.services = vec!["svc\u{202E}".to_string()];
    graph.apply(snapshot(1, Zoom::Workload, vec![node], vec![e]));

    let n = graph.nodes().next().expect("present");
    assert_eq!(n.name, "evil\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J");
    assert_eq!(
        n.id,
        "workload:shop/evil\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J"
    );
    assert_eq!(n.labels, vec!["app=\u{FFFD}[31mred".to_string()]);
    let e = graph.edges().next().expect("present");
    assert_eq!(e.source, n.id);
    assert_eq!(e.drops[0].0, "X\u{FFFD}[2J");
    assert_eq!(e.services, vec!["svc\u{FFFD}".to_string()]);
    // Removal by the raw id finds the sanitized entry.
    graph.apply(GraphUpdate {
        time_ns: 2,
        zoom: Zoom::Workload as i32,
        removed_nodes: vec!["workload:shop/evil\x1b]0;pwned\x07\x1b[2J".to_string()],
        ..Default::default()
    });
    assert_eq!(graph.nodes().count(), 0);
    assert_eq!(graph.edges().count(), 0);

    let hostile = Endpoint {
        namespace: "ns\x1b".to_string(),
        pod_name: "p\x07".to_string(),
        ..Default::default()
    };
    let drops = DropSummary::from_flows(&[drop_flow(1, hostile.clone(), hostile, "R\x1b")]);
    let row = &drops.rows()[0];
    assert_eq!(
        (row.source.as_str(), row.reason.as_str()),
        ("ns\u{FFFD}/p\u{FFFD}", "R\u{FFFD}")
    );

    let dns = DnsSummary::from_flows(&[dns_flow(
        "a\x1b[2J.example.",
        1,
        None,
        endpoint("shop", "web", "10.0.0.1", 40000),
    )]);
    assert_eq!(dns.rows()[0].name, "a\u{FFFD}[2j.example");
}

// ---------------------------------------------------------------- tree

fn two_namespace_graph() -> ServiceGraph {
    let mut graph = ServiceGraph::new();
    let mut web_api = edge("workload:shop/web", "workload:shop/api", 8080);
    web_api.rate_1m = rates(2.0, 0.0);
    let mut api_db = edge("workload:shop/api", "workload:data/db", 5432);
    api_db.rate_1m = rates(0.5, 0.0);
    api_db.verdicts = vec![VerdictCount {
        verdict: Verdict::Dropped as i32,
        count: 3,
    }];
    let mut world = GraphNode {
        id: "world".to_string(),
        kind: WireKind::World as i32,
        ..Default::default()
    };
    world.name = "world".to_string();
    let mut svc = workload("shop", "api-svc");
    svc.id = "service:shop/api-svc".to_string();
    svc.kind = WireKind::Service as i32;
    graph.apply(snapshot(
        1,
        Zoom::Workload,
        vec![
            workload("shop", "web"),
            workload("shop", "api"),
            workload("data", "db"),
            workload("data", "cache"),
            world,
            svc,
        ],
        vec![web_api, api_db],
    ));
    graph
}

fn summary(rows: &[skymap_tui::state::TreeRow]) -> Vec<(usize, String, f64, bool, bool)> {
    rows.iter()
        .map(|r| {
            (
                r.depth,
                r.label.clone(),
                r.flows_per_s,
                r.has_drops,
                r.expanded,
            )
        })
        .collect()
}

#[test]
fn tree_rows_markers_collapse_and_filter() {
    let graph = two_namespace_graph();
    let mut tree = NamespaceTree::new();
    let rows = tree.rows(&graph, &NamespaceFilter::All);
    let row = |d: usize, l: &str, f: f64, drops: bool, e: bool| (d, l.to_string(), f, drops, e);
    assert_eq!(
        summary(&rows),
        vec![
            row(0, "data", 0.5, true, true),
            row(1, "cache", 0.0, false, false),
            row(1, "db", 0.5, true, false),
            row(0, "shop", 2.5, true, true),
            row(1, "api", 2.5, true, false),
            row(1, "web", 2.0, false, false),
        ]
    );
    assert_eq!(rows[0].id, "namespace:data");
    assert_eq!(rows[2].id, "workload:data/db");

    tree.collapse("data");
    assert!(!tree.is_expanded("data"));
    let rows = tree.rows(&graph, &NamespaceFilter::All);
    assert_eq!(
        rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        vec!["data", "shop", "api", "web"]
    );
    assert!(!rows[0].expanded);

    let rows = tree.rows(&graph, &NamespaceFilter::One("shop".to_string()));
    assert_eq!(
        rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        vec!["shop", "api", "web"]
    );
    let rows = tree.rows(&graph, &NamespaceFilter::One("data".to_string()));
    assert_eq!(
        rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        vec!["data"]
    );

    tree.expand("data");
    assert_eq!(
        tree.rows(&graph, &NamespaceFilter::One("data".to_string()))
            .len(),
        3
    );
    tree.toggle("shop");
    assert_eq!(tree.rows(&graph, &NamespaceFilter::All).len(), 4);
    assert!(
        tree.rows(&graph, &NamespaceFilter::One("nope".to_string()))
            .is_empty()
    );
}

// ---------------------------------------------------------------- flows

fn numbered(n: i64) -> Flow {
    let port = if n % 2 == 0 { 80 } else { 443 };
    Flow {
        time_ns: n,
        destination: Some(endpoint("shop", "api", "10.0.0.2", port)),
        ..Default::default()
    }
}

#[test]
fn flow_ring_evicts_oldest_and_filters_newest_first() {
    let mut log = FlowLog::new(3);
    for n in 1..=5 {
        log.push(numbered(n));
    }
    assert_eq!(log.len(), 3);
    assert_eq!(log.evicted(), 2);
    assert_eq!(
        log.iter().map(|f| f.time_ns).collect::<Vec<_>>(),
        vec![5, 4, 3]
    );

    let port_80 = FlowFilterSet::new(
        &[FlowFilter {
            destination_port: vec![80],
            ..Default::default()
        }],
        &[],
    )
    .expect("valid filter");
    assert_eq!(
        log.iter_filtered(&port_80)
            .map(|f| f.time_ns)
            .collect::<Vec<_>>(),
        vec![4]
    );
    let not_80 = FlowFilterSet::new(
        &[],
        &[FlowFilter {
            destination_port: vec![80],
            ..Default::default()
        }],
    )
    .expect("valid filter");
    assert_eq!(
        log.iter_filtered(&not_80)
            .map(|f| f.time_ns)
            .collect::<Vec<_>>(),
        vec![5, 3]
    );
    let all = FlowFilterSet::default();
    assert_eq!(log.iter_filtered(&all).count(), 3);

    log.record_lost(7);
    log.record_lost(3);
    assert_eq!(log.lost(), 10);

    let mut tiny = FlowLog::new(0);
    tiny.push(numbered(1));
    tiny.push(numbered(2));
    assert_eq!(tiny.iter().map(|f| f.time_ns).collect::<Vec<_>>(), vec![2]);
}

// ---------------------------------------------------------------- drops

#[test]
fn drops_grouped_by_path_and_reason_newest_first() {
    let web = || endpoint("shop", "web", "10.0.0.1", 40000);
    let api = || endpoint("shop", "api", "10.0.0.2", 8080);
    let outside = || endpoint("", "", "203.0.113.9", 443);
    let mut forwarded = drop_flow(99, web(), api(), "");
    forwarded.verdict = Verdict::Forwarded as i32;
    let flows = vec![
        drop_flow(10, web(), api(), "POLICY_DENIED"),
        drop_flow(30, web(), api(), "POLICY_DENIED"),
        drop_flow(20, web(), api(), "POLICY_DENIED"),
        drop_flow(25, web(), outside(), "NETFILTER_DROP"),
        drop_flow(15, web(), api(), ""),
        forwarded,
    ];
    let summary = DropSummary::from_flows(&flows);
    let rows: Vec<_> = summary
        .rows()
        .iter()
        .map(|r| {
            (
                r.source.as_str(),
                r.destination.as_str(),
                r.port,
                r.protocol.as_str(),
                r.reason.as_str(),
                r.count,
                r.newest_ns,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("shop/web", "shop/api", 8080, "TCP", "POLICY_DENIED", 3, 30),
            (
                "shop/web",
                "203.0.113.9",
                443,
                "TCP",
                "NETFILTER_DROP",
                1,
                25
            ),
            ("shop/web", "shop/api", 8080, "TCP", "UNKNOWN", 1, 15),
        ]
    );
    assert_eq!(summary.total(), 5);

    // From the log, too.
    let mut log = FlowLog::new(10);
    flows.into_iter().for_each(|f| log.push(f));
    assert_eq!(DropSummary::from_flows(log.iter()).rows().len(), 3);
}

// ---------------------------------------------------------------- dns

#[test]
fn dns_counts_rcodes_latency_and_search_paths() {
    let web = || endpoint("default", "web", "10.0.0.1", 40000);
    let job = || endpoint("batch", "job", "10.0.0.3", 40001);
    let ms = 1_000_000;
    let flows = vec![
        dns_flow("api.example.com.", 1, None, web()),
        dns_flow("API.example.com", 1, None, web()),
        dns_flow("api.example.com.", 1, Some((0, 4 * ms)), web()),
        dns_flow("api.example.com.", 1, Some((2, 10 * ms)), web()),
        dns_flow("api.example.com.", 1, Some((0, 2 * ms)), web()),
        dns_flow("api.example.com.", 28, Some((3, ms)), web()),
        // web (namespace default) resolving "backend.default" walks its search path.
        dns_flow(
            "backend.default.default.svc.cluster.local.",
            1,
            Some((3, ms)),
            web(),
        ),
        dns_flow(
            "backend.default.default.svc.cluster.local.",
            28,
            Some((3, ms)),
            web(),
        ),
        dns_flow(
            "backend.default.svc.cluster.local.",
            1,
            Some((0, ms)),
            web(),
        ),
        // job (namespace batch) resolving "backend".
        dns_flow("backend.batch.svc.cluster.local", 1, Some((3, ms)), job()),
        dns_flow("backend.svc.cluster.local", 1, Some((3, ms)), job()),
        dns_flow("backend.cluster.local", 1, Some((3, ms)), job()),
        // Not a search-path expansion.
        dns_flow("nope.example.org.", 1, Some((3, ms)), job()),
        // Not DNS at all.
        numbered(1),
    ];
    let summary = DnsSummary::from_flows(&flows);
    let row = |name: &str, qtype: &str| {
        summary
            .rows()
            .iter()
            .find(|r| r.name == name && r.qtype == qtype)
            .expect("present")
            .clone()
    };
    let a = row("api.example.com", "A");
    assert_eq!(a.queries, 2);
    assert_eq!(
        a.responses,
        vec![("NOERROR".to_string(), 2), ("SERVFAIL".to_string(), 1)]
    );
    assert_eq!((a.nxdomain, a.servfail), (0, 1));
    assert_eq!(a.latency_p50, Some(Duration::from_millis(4)));
    assert_eq!(a.latency_max, Some(Duration::from_millis(10)));
    let aaaa = row("api.example.com", "AAAA");
    assert_eq!((aaaa.queries, aaaa.nxdomain), (0, 1));
    assert_eq!(summary.rows().len(), 9);

    let groups: Vec<_> = summary
        .search_paths()
        .iter()
        .map(|g| {
            (
                g.client.as_str(),
                g.short_name.as_str(),
                g.nxdomain,
                g.expansions.clone(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (
                "batch/job",
                "backend",
                3,
                vec![
                    ("backend.batch.svc.cluster.local".to_string(), 1),
                    ("backend.cluster.local".to_string(), 1),
                    ("backend.svc.cluster.local".to_string(), 1),
                ]
            ),
            (
                "default/web",
                "backend.default",
                2,
                vec![("backend.default.default.svc.cluster.local".to_string(), 2)]
            ),
        ]
    );
}
