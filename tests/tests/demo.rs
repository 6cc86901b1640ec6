//! The demo recording (`tests/fixtures/demo.jsonl`), captured from the lab
//! with `lab/capture-demo.sh` (`lab/scenarios/demo.yaml`, then allow-dns.yaml
//! a minute in): it reads back cleanly, and the relay's engine tells its
//! story — the frontend's DNS dropped by its egress policy, then the fix and
//! its backends — with the figures the scenario configured.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::Arc;

use skymap_proto::jsonl::FlowReader;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    Flow, GraphEdge, GraphUpdate, NodeKind, ObservationPoint, Protocol, Verdict, Zoom,
};
use skymap_relay::engine::{self, Engine};
use skymap_relay::metadata::Metadata;

const SECOND: i64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const RCODE_NOERROR: u32 = 0;
const RCODE_NXDOMAIN: u32 = 3;
const CAPTURE: &str = "sudo lab/capture-demo.sh";

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.jsonl")
}

fn fixture() -> Vec<Flow> {
    let path = fixture_path();
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = FlowReader::new(BufReader::new(file), "demo.jsonl");
    let flows: Vec<Flow> = reader.by_ref().collect();
    let report = reader.into_report();
    assert_eq!(
        report.rejected, 0,
        "{:?} (recapture: {CAPTURE})",
        report.errors
    );
    assert_eq!(report.flows, flows.len() as u64);
    flows
}

fn aggregate(flows: impl IntoIterator<Item = Flow>) -> GraphUpdate {
    let engine: Engine = engine::aggregate_flows(flows, Arc::new(Metadata::empty()));
    engine.graph_snapshot(Zoom::Workload, &[])
}

fn edge<'a>(graph: &'a GraphUpdate, from: &str, to: &str, port: u32) -> Option<&'a GraphEdge> {
    let (from, to) = (format!("workload:{from}"), format!("workload:{to}"));
    graph
        .edges
        .iter()
        .find(|e| e.source == from && e.destination == to && e.port == port)
}

fn must<'a>(graph: &'a GraphUpdate, from: &str, to: &str, port: u32) -> &'a GraphEdge {
    edge(graph, from, to, port).unwrap_or_else(|| {
        let ids: Vec<&str> = graph.edges.iter().map(|e| e.id.as_str()).collect();
        panic!("no edge {from} -> {to}:{port} in {ids:#?}")
    })
}

/// (namespace, workload) of a flow's source or destination.
fn workload(flow: &Flow, source: bool) -> (&str, &str) {
    let endpoint = if source {
        flow.source.as_ref()
    } else {
        flow.destination.as_ref()
    };
    let endpoint = endpoint.expect("endpoint");
    let name = endpoint.workload.as_ref().map_or("", |w| w.name.as_str());
    (endpoint.namespace.as_str(), name)
}

fn dns_rcode(flow: &Flow) -> Option<u32> {
    match flow.l7.as_ref()?.record.as_ref()? {
        Record::Dns(dns) if flow.is_reply => Some(dns.rcode),
        _ => None,
    }
}

/// When the fix landed: the first answer the frontend's lookups got.
fn fix_ns(flows: &[Flow]) -> i64 {
    flows
        .iter()
        .find(|f| workload(f, false) == ("shop", "frontend") && dns_rcode(f) == Some(RCODE_NOERROR))
        .map(|f| f.time_ns)
        .expect("the frontend's lookups are answered after the fix")
}

fn rcode_count(edge: &GraphEdge, rcode: u32) -> u64 {
    edge.dns_rcodes
        .iter()
        .find(|r| r.rcode == rcode)
        .map_or(0, |r| r.count)
}

#[test]
fn the_recording_is_a_sorted_150_s_of_the_demo_scenario() {
    let flows = fixture();
    let size = std::fs::metadata(fixture_path()).expect("fixture").len();
    assert!(size < 5_000_000, "demo.jsonl is {size} bytes");
    assert!(
        flows.windows(2).all(|w| w[0].time_ns <= w[1].time_ns),
        "sorted by time"
    );
    let span = flows.last().expect("flows").time_ns - flows.first().expect("flows").time_ns;
    assert!(
        (140 * SECOND..165 * SECOND).contains(&span),
        "{} s",
        span / SECOND
    );
    for flow in &flows {
        assert_eq!(engine::validate(flow), Ok(()));
    }
    let nodes: BTreeSet<&str> = flows.iter().map(|f| f.node_name.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node-1", "node-2", "node-3"]));

    let graph = aggregate(flows);
    let workloads: BTreeSet<(&str, &str)> = graph
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Workload as i32)
        .map(|n| (n.namespace.as_str(), n.name.as_str()))
        .collect();
    let expected = BTreeSet::from([
        ("users", "loadgen"),
        ("shop", "frontend"),
        ("shop", "catalog"),
        ("shop", "cart"),
        ("shop", "checkout"),
        ("shop", "recommendations"),
        ("payments", "payments-api"),
        ("monitoring", "prometheus"),
        ("kube-system", "kube-dns"),
    ]);
    assert_eq!(workloads, expected);
    let kinds: BTreeSet<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Workload as i32)
        .map(|n| n.workload_kind.as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["Deployment"]));
}

#[test]
fn only_the_frontends_dns_is_dropped_by_its_egress_policy_until_the_fix() {
    let flows = fixture();
    let fix = fix_ns(&flows);
    let start = flows[0].time_ns;
    assert!(
        (50 * SECOND..75 * SECOND).contains(&(fix - start)),
        "the fix lands {} s in",
        (fix - start) / SECOND
    );
    let drops: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.verdict == Verdict::Dropped as i32)
        .collect();
    assert!(drops.len() >= 25, "{} drops", drops.len());
    for drop in &drops {
        assert_eq!(workload(drop, true), ("shop", "frontend"));
        assert_eq!(workload(drop, false), ("kube-system", "kube-dns"));
        assert_eq!(drop.destination.as_ref().map(|d| d.port), Some(53));
        assert_eq!(drop.l4.unwrap_or_default().protocol, Protocol::Udp as i32);
        assert_eq!(drop.drop_reason, "NETFILTER_DROP");
        assert_eq!(drop.policy_reason, "shop/frontend-egress");
        assert_eq!(drop.observation_point, ObservationPoint::KernelDrop as i32);
        assert!(drop.time_ns < fix + SECOND, "a drop after the fix");
    }
    // The drops run from the start up to the fix.
    assert!(drops[0].time_ns - start < 5 * SECOND);
    assert!(fix - drops[drops.len() - 1].time_ns < 10 * SECOND);

    let graph = aggregate(flows.iter().cloned());
    let frontend_dns = must(&graph, "shop/frontend", "kube-system/kube-dns", 53);
    let dropped = frontend_dns
        .drops
        .iter()
        .find(|d| d.reason == "NETFILTER_DROP");
    assert_eq!(dropped.map(|d| d.packets), Some(drops.len() as u64));
    assert!(
        rcode_count(frontend_dns, RCODE_NOERROR) >= 10,
        "{frontend_dns:?}"
    );
}

#[test]
fn the_frontend_reaches_its_backends_only_after_the_fix() {
    let flows = fixture();
    let fix = fix_ns(&flows);
    let before = aggregate(flows.iter().filter(|f| f.time_ns < fix).cloned());
    let all = aggregate(flows.iter().cloned());
    for backend in ["cart", "catalog", "checkout"] {
        let to = format!("shop/{backend}");
        assert!(
            edge(&before, "shop/frontend", &to, 8080).is_none(),
            "frontend -> {backend} before the fix"
        );
        let after = must(&all, "shop/frontend", &to, 8080);
        assert!(after.requests >= 3, "frontend -> {backend}: {after:?}");
    }
    // The rest of the shop worked all along.
    let users = must(&before, "users/loadgen", "shop/frontend", 8080);
    assert!(users.requests >= 8, "{users:?}");
    assert!(edge(&before, "shop/catalog", "shop/recommendations", 8080).is_some());
}

#[test]
fn healthy_edges_have_the_configured_latency() {
    let graph = aggregate(fixture());
    // p50s from lab/scenarios/demo.yaml; measured at the veths, they can only
    // be later than configured, and a busy 2-CPU machine adds some.
    for (from, to, configured) in [
        ("users/loadgen", "shop/frontend", 15),
        ("shop/frontend", "shop/catalog", 20),
        ("shop/catalog", "shop/recommendations", 40),
    ] {
        let latency = must(&graph, from, to, 8080).latency.expect("latency");
        assert!(
            (configured * MS * 7 / 10..configured * MS * 2).contains(&latency.p50_ns),
            "{from} -> {to}: p50 {} ms, configured {configured} ms",
            latency.p50_ns / MS
        );
    }
    // cart answers 5% with 500.
    let cart = must(&graph, "shop/frontend", "shop/cart", 8080)
        .http
        .expect("http");
    assert!(cart.success > 0, "{cart:?}");
}

#[test]
fn search_path_misses_show_as_nxdomain() {
    let graph = aggregate(fixture());
    // loadgen asks for "frontend.shop" from namespace users: the first
    // search suffix misses, the second answers, once per lookup.
    let loadgen = must(&graph, "users/loadgen", "kube-system/kube-dns", 53);
    let (noerror, nxdomain) = (
        rcode_count(loadgen, RCODE_NOERROR),
        rcode_count(loadgen, RCODE_NXDOMAIN),
    );
    assert!(noerror >= 15, "{loadgen:?}");
    assert!(
        noerror.abs_diff(nxdomain) <= 2,
        "{noerror} NOERROR, {nxdomain} NXDOMAIN"
    );
    // The frontend's names are short and in its namespace: no misses.
    let frontend = must(&graph, "shop/frontend", "kube-system/kube-dns", 53);
    assert_eq!(rcode_count(frontend, RCODE_NXDOMAIN), 0, "{frontend:?}");
}

#[test]
fn both_ends_are_seen_and_counted_once() {
    let graph = aggregate(fixture());
    let users = must(&graph, "users/loadgen", "shop/frontend", 8080);
    assert!(
        users.seen_at_source > 0 && users.seen_at_destination > 0,
        "{users:?}"
    );
    assert_eq!(users.flows, users.seen_at_source, "{users:?}");
}
