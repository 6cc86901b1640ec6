//! The demo recording (`tests/fixtures/demo.jsonl`): it is what the generator
//! writes, it reads back cleanly, and the relay's engine tells its story —
//! the frontend's DNS dropped for the first minute, then healthy edges.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use skymap_proto::jsonl::FlowReader;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    Flow, GraphEdge, GraphUpdate, L7Type, NodeKind, ObservationPoint, Protocol, Verdict, Zoom,
};
use skymap_relay::engine::{self, Engine};
use skymap_relay::metadata::Metadata;
use skymap_tests::demo::{DROP_POLICY, DROP_REASON, DURATION, FIX_AT, demo_flows};
use skymap_tests::synth::{
    QTYPE_AAAA, RCODE_NXDOMAIN, RCODE_SERVFAIL, SECOND, START_NS, write_flows,
};

const REGENERATE: &str = "cargo run -p skymap-tests --bin make-demo > tests/fixtures/demo.jsonl";

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.jsonl")
}

fn fixture() -> Vec<Flow> {
    let path = fixture_path();
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = FlowReader::new(BufReader::new(file), "demo.jsonl");
    let flows: Vec<Flow> = reader.by_ref().collect();
    let report = reader.into_report();
    assert_eq!(report.rejected, 0, "{:?}", report.errors);
    assert_eq!(report.flows, flows.len() as u64);
    flows
}

fn aggregate(flows: impl IntoIterator<Item = Flow>) -> GraphUpdate {
    let engine: Engine = engine::aggregate_flows(flows, Arc::new(Metadata::empty()));
    engine.graph_snapshot(Zoom::Workload, &[])
}

fn before_fix(flows: &[Flow]) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.time_ns < START_NS + FIX_AT)
        .cloned()
        .collect()
}

fn after_fix(flows: &[Flow]) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| f.time_ns >= START_NS + FIX_AT)
        .cloned()
        .collect()
}

fn edge<'a>(graph: &'a GraphUpdate, from: &str, to: &str, port: u32) -> Option<&'a GraphEdge> {
    let id = |name: &str| match name {
        "world" => name.to_string(),
        _ => format!("workload:{name}"),
    };
    let (from, to) = (id(from), id(to));
    graph
        .edges
        .iter()
        .find(|e| e.source == from && e.destination == to && e.port == port)
}

fn must<'a>(graph: &'a GraphUpdate, from: &str, to: &str, port: u32) -> &'a GraphEdge {
    edge(graph, from, to, port)
        .unwrap_or_else(|| panic!("no edge {from} -> {to}:{port} in the graph"))
}

fn workload(flow: &Flow, source: bool) -> (&str, &str) {
    let endpoint = if source {
        flow.source.as_ref()
    } else {
        flow.destination.as_ref()
    };
    endpoint
        .map(|e| {
            let name = e.workload.as_ref().map_or("", |w| w.name.as_str());
            (e.namespace.as_str(), name)
        })
        .unwrap_or_default()
}

fn dns(flow: &Flow) -> Option<&skymap_proto::v1::Dns> {
    match flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) {
        Some(Record::Dns(dns)) => Some(dns),
        _ => None,
    }
}

#[test]
fn fixture_is_what_the_generator_writes() {
    let mut generated = Vec::new();
    write_flows(&mut generated, &demo_flows()).expect("write to memory");
    let path = fixture_path();
    let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if committed != generated {
        let line = committed
            .split(|b| *b == b'\n')
            .zip(generated.split(|b| *b == b'\n'))
            .position(|(a, b)| a != b)
            .map_or_else(
                || "at the end".to_string(),
                |i| format!("at line {}", i + 1),
            );
        panic!(
            "{} differs from the generator's output (first {line}; {} vs {} bytes). \
             If the generator changed on purpose, regenerate it: {REGENERATE}",
            path.display(),
            committed.len(),
            generated.len(),
        );
    }
}

#[test]
fn the_recording_is_a_sorted_150_s_of_a_three_node_cluster() {
    let flows = fixture();
    let size = std::fs::metadata(fixture_path()).expect("fixture").len();
    assert!(size < 4_000_000, "demo.jsonl is {size} bytes");
    assert!(flows.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    let first = flows.first().expect("flows").time_ns;
    let last = flows.last().expect("flows").time_ns;
    assert!((START_NS..START_NS + SECOND).contains(&first));
    let end = START_NS + DURATION;
    assert!((end - 2 * SECOND..end + 2 * SECOND).contains(&last));
    let per_second = flows.len() as i64 / (DURATION / SECOND);
    assert!((20..=40).contains(&per_second), "{per_second} flows/s");
    for flow in &flows {
        assert_eq!(engine::validate(flow), Ok(()));
    }
    let nodes: BTreeSet<&str> = flows.iter().map(|f| f.node_name.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-1", "node-2", "node-3"]));

    let graph = aggregate(flows);
    let workloads: Vec<_> = graph
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Workload as i32)
        .collect();
    let namespaces: BTreeSet<&str> = workloads.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(workloads.len(), 15, "{workloads:#?}");
    assert_eq!(
        namespaces,
        BTreeSet::from(["data", "kube-system", "monitoring", "payments", "shop"])
    );
    let dns = workloads
        .iter()
        .find(|n| n.name == "kube-dns")
        .expect("kube-dns");
    assert_eq!(dns.namespace, "kube-system");
    assert!(dns.labels.contains(&"k8s-app=kube-dns".to_string()));
    let kinds: BTreeSet<&str> = workloads.iter().map(|n| n.workload_kind.as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["Deployment", "StatefulSet"]));
    assert!(graph.nodes.iter().any(|n| n.kind == NodeKind::World as i32));
}

#[test]
fn only_the_frontends_dns_is_dropped_and_only_before_the_fix() {
    let flows = fixture();
    let drops: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.verdict == Verdict::Dropped as i32)
        .collect();
    assert!(drops.len() >= 100, "{} drops", drops.len());
    for drop in &drops {
        assert_eq!(workload(drop, true), ("shop", "frontend"));
        assert_eq!(workload(drop, false), ("kube-system", "kube-dns"));
        let destination = drop.destination.as_ref().expect("destination");
        assert_eq!(
            (destination.port, destination.service.as_str()),
            (53, "kube-dns")
        );
        assert_eq!(drop.l4.unwrap_or_default().protocol, Protocol::Udp as i32);
        assert_eq!(drop.drop_reason, DROP_REASON);
        assert_eq!(drop.policy_reason, DROP_POLICY);
        assert_eq!(drop.observation_point, ObservationPoint::KernelDrop as i32);
        assert!(dns(drop).is_some());
        assert!(drop.time_ns < START_NS + FIX_AT);
    }

    // Meanwhile the others resolve fine.
    let answered_before = flows.iter().filter(|f| {
        f.time_ns < START_NS + FIX_AT
            && f.is_reply
            && workload(f, true).1 == "kube-dns"
            && dns(f).is_some_and(|d| d.rcode == 0 && !d.ips.is_empty())
    });
    assert!(answered_before.count() >= 5);

    let graph = aggregate(flows.iter().cloned());
    let frontend_dns = must(&graph, "shop/frontend", "kube-system/kube-dns", 53);
    let dropped = frontend_dns.drops.iter().find(|d| d.reason == DROP_REASON);
    assert_eq!(dropped.map(|d| d.packets), Some(drops.len() as u64));
    // After the fix the frontend's lookups are answered.
    assert!(
        frontend_dns
            .dns_rcodes
            .iter()
            .any(|r| r.rcode == 0 && r.count >= 10)
    );
}

#[test]
fn the_frontend_reaches_its_backends_only_after_the_fix() {
    let flows = fixture();
    let before = aggregate(before_fix(&flows));
    let all = aggregate(flows);
    for backend in ["cart", "catalog", "checkout", "recommendations"] {
        let to = format!("shop/{backend}");
        assert!(
            edge(&before, "shop/frontend", &to, 8080).is_none(),
            "frontend -> {backend} before the fix"
        );
        let after = must(&all, "shop/frontend", &to, 8080);
        assert!(after.first_seen_ns >= START_NS + FIX_AT);
        assert!(after.requests >= 10, "frontend -> {backend}: {after:?}");
    }
    // Not the whole shop was down: the recommendations kept reading the catalog.
    assert!(edge(&before, "shop/recommendations", "shop/catalog", 8080).is_some());
}

#[test]
fn users_get_503_before_the_fix_and_mostly_2xx_after() {
    let flows = fixture();
    let before = aggregate(before_fix(&flows));
    let users = must(&before, "world", "shop/frontend", 8080)
        .http
        .expect("http");
    assert!(users.server_error >= 50, "{users:?}");
    assert_eq!(users.success, 0, "{users:?}");

    let after = aggregate(after_fix(&flows));
    let users = must(&after, "world", "shop/frontend", 8080)
        .http
        .expect("http");
    assert!(users.success >= 100, "{users:?}");
    assert!(users.server_error * 20 < users.success, "{users:?}");
    // Before the fix the 503 comes after the frontend's 1 s deadline.
    let slow = must(&before, "world", "shop/frontend", 8080)
        .latency
        .expect("latency");
    let deadline = 1_000_000_000;
    assert!(
        (deadline..deadline * 6 / 5).contains(&slow.p50_ns),
        "{slow:?}"
    );
}

#[test]
fn healthy_edges_have_realistic_latency_and_some_errors() {
    let graph = aggregate(fixture());
    let ms = 1_000_000;

    let catalog = must(&graph, "shop/frontend", "shop/catalog", 8080)
        .latency
        .expect("latency");
    assert!((8 * ms..20 * ms).contains(&catalog.p50_ns), "{catalog:?}");
    assert!(catalog.p99_ns >= 3 * catalog.p50_ns, "{catalog:?}");

    let payments = must(&graph, "shop/checkout", "payments/payments-api", 8080);
    let latency = payments.latency.expect("latency");
    assert!((70 * ms..250 * ms).contains(&latency.p50_ns), "{latency:?}");
    assert!(latency.max_ns >= 300 * ms, "{latency:?}");
    let http = payments.http.expect("http");
    assert!(http.server_error >= 1, "{http:?}");
    assert!(http.server_error * 5 < http.success, "{http:?}");

    // The database and the gateway show connect latency only (no L7).
    let gateway = must(&graph, "payments/payments-api", "world", 443);
    assert!(gateway.latency.is_none_or(|l| l.count == 0));
    let connect = gateway.connect_latency.expect("connect latency");
    assert!((20 * ms..60 * ms).contains(&connect.p50_ns), "{connect:?}");
    let db = must(&graph, "shop/catalog", "data/postgres", 5432);
    assert!(
        db.connect_latency.expect("connect latency").p50_ns < ms,
        "{db:?}"
    );
}

#[test]
fn dns_has_search_path_misses_aaaa_and_a_servfail_hot_spot() {
    let flows = fixture();
    let graph = aggregate(flows.iter().cloned());
    let rcode = |edge: &GraphEdge, rcode: u32| {
        edge.dns_rcodes
            .iter()
            .find(|r| r.rcode == rcode)
            .map_or(0, |r| r.count)
    };
    // "postgres.data.svc.cluster.local" has four dots: ndots:5 tries the
    // search path first.
    let catalog = must(&graph, "shop/catalog", "kube-system/kube-dns", 53);
    assert!(rcode(catalog, RCODE_NXDOMAIN) >= 3, "{catalog:?}");
    let payments = must(&graph, "payments/payments-api", "kube-system/kube-dns", 53);
    assert!(rcode(payments, RCODE_SERVFAIL) >= 2, "{payments:?}");
    let upstream = must(&graph, "kube-system/kube-dns", "world", 53);
    assert!(rcode(upstream, RCODE_SERVFAIL) >= 2, "{upstream:?}");

    let servfail_times: Vec<i64> = flows
        .iter()
        .filter(|f| f.is_reply && dns(f).is_some_and(|d| d.rcode == RCODE_SERVFAIL))
        .map(|f| f.time_ns - START_NS)
        .collect();
    assert!(
        servfail_times
            .iter()
            .all(|t| (100 * SECOND..121 * SECOND).contains(t)),
        "SERVFAIL outside the hot spot"
    );
    let aaaa = flows.iter().filter(|f| {
        f.l7.as_ref()
            .is_some_and(|l| l.r#type == L7Type::Request as i32)
            && dns(f).is_some_and(|d| d.qtype == QTYPE_AAAA)
    });
    assert!(aaaa.count() >= 10);
}

#[test]
fn refused_connections_and_both_ends_are_counted_once() {
    let flows = fixture();
    let graph = aggregate(flows.iter().cloned());
    let kafka = must(&graph, "monitoring/prometheus", "data/kafka", 9308);
    assert!(kafka.refused >= 10, "{kafka:?}");
    assert_eq!(kafka.refused, kafka.connections);
    assert!(kafka.errors >= kafka.refused);

    // frontend -> catalog is reported by both nodes: each record is counted
    // once, and the server's copies show as seen at the destination.
    let records = flows
        .iter()
        .filter(|f| {
            let (client, server) = if f.is_reply {
                (false, true)
            } else {
                (true, false)
            };
            workload(f, client).1 == "frontend" && workload(f, server).1 == "catalog"
        })
        .count() as u64;
    let catalog = must(&graph, "shop/frontend", "shop/catalog", 8080);
    assert_eq!(catalog.flows * 2, records);
    assert_eq!(catalog.seen_at_source, catalog.flows);
    assert_eq!(catalog.seen_at_destination, catalog.flows);
}
