//! The whole path, kernel to relay, against what the test itself did (root;
//! CI runs it). Two namespaces the test builds; in the server's, an HTTP
//! server that waits before answering, a DNS server, and an nftables rule
//! that drops one port. The probe watches the server's interface; its flows
//! go through the assembler into the relay's engine, and the graph must
//! count exactly what the client did.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use skymap_node_probe::assemble::{Assembler, Attachment, Interface, Limits};
use skymap_node_probe::clock::boot_to_unix_ns;
use skymap_node_probe::loader::{LoadOptions, Probe};
use skymap_node_probe::netns::run_in;
use skymap_node_probe::preflight::{self, Facts};
use skymap_node_probe::reasons::DropReasons;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{GraphEdge, L7Type, Zoom};
use skymap_relay::engine::aggregate_flows;
use skymap_relay::metadata::Metadata;

mod common;
use common::{
    SERVER_IP, Topology, collect, dns_client, dns_lookup, http_get, nft, serve_dns, serve_http,
};

const OK_REQUESTS: usize = 4;
const FAILING_REQUESTS: usize = 1;
/// What the HTTP server waits before it answers.
const SERVER_DELAY: Duration = Duration::from_millis(40);
const LOOKUPS_EACH: usize = 3;
const KNOWN: &str = "exists.skymap.test";
const UNKNOWN: &str = "missing.skymap.test";
const BLOCKED_PORT: u16 = 9999;

fn edge<'a>(edges: &'a [GraphEdge], port: u32, what: &str) -> &'a GraphEdge {
    edges
        .iter()
        .find(|e| e.port == port)
        .unwrap_or_else(|| panic!("no {what} edge on port {port}: {edges:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_counts_exactly_what_the_client_did() {
    if let Err(e) = preflight::check(&Facts::gather()) {
        panic!("{e} (this test runs as root, as CI does)");
    }
    let topology = Topology::new("t");
    let server_ns = Topology::path(&topology.server);
    let client_ns = Topology::path(&topology.client);
    nft(&topology.server, "add table inet skymap");
    nft(
        &topology.server,
        "add chain inet skymap input { type filter hook input priority 0; }",
    );
    nft(
        &topology.server,
        &format!("add rule inet skymap input tcp dport {BLOCKED_PORT} drop"),
    );

    let mut probe = Probe::load(&LoadOptions::default()).expect("the programs load");
    probe
        .attach_in(&server_ns, &topology.server_if)
        .expect("attach in the server namespace");
    let ifindex = run_in(&server_ns, || {
        nix::net::if_::if_nametoindex(topology.server_if.as_str()).expect("ifindex")
    })
    .expect("enter");
    let reasons = DropReasons::from_kernel().expect("drop reasons");
    let mut assembler = Assembler::new(
        "node-t",
        reasons,
        boot_to_unix_ns().expect("clocks"),
        Limits::default(),
    );
    let server_ino = std::fs::metadata(&server_ns).expect("netns").ino() as u32;
    assembler.set_interface(
        server_ino,
        ifindex,
        Interface {
            name: topology.server_if.clone(),
            attachment: Attachment::InPod,
        },
    );

    // Servers, inside the server namespace.
    let (listener, dns) = run_in(&server_ns, || {
        (
            TcpListener::bind((SERVER_IP, 0)).expect("http"),
            UdpSocket::bind((SERVER_IP, 53)).expect("dns"),
        )
    })
    .expect("enter");
    let http_port = listener.local_addr().expect("addr").port();
    let http = serve_http(listener, OK_REQUESTS + FAILING_REQUESTS, SERVER_DELAY);
    let dns_server = serve_dns(dns, 2 * LOOKUPS_EACH);

    // The client's work, inside the client namespace.
    let blocked = run_in(&client_ns, || {
        let web = SocketAddr::from((SERVER_IP, http_port));
        for i in 0..OK_REQUESTS + FAILING_REQUESTS {
            let path = if i < FAILING_REQUESTS { "/503" } else { "/200" };
            http_get(web, path);
        }
        let socket = dns_client();
        let mut id = 0u16;
        for name in [KNOWN, UNKNOWN] {
            for _ in 0..LOOKUPS_EACH {
                id += 1;
                dns_lookup(&socket, SocketAddr::from((SERVER_IP, 53)), id, name);
            }
        }
        TcpStream::connect_timeout(
            &SocketAddr::from((SERVER_IP, BLOCKED_PORT)),
            Duration::from_millis(1500),
        )
        .is_err()
    })
    .expect("enter the client namespace");
    assert!(blocked, "the rule drops port {BLOCKED_PORT}");
    http.join().expect("http server");
    dns_server.join().expect("dns server");

    let events = collect(&mut probe, Duration::from_secs(2)).await;
    let mut flows = Vec::new();
    for event in &events {
        assembler.push_into(event, &mut flows);
    }
    // The names asked, as the flows carry them: each exactly as often as asked.
    for name in [KNOWN, UNKNOWN] {
        let asked = flows
            .iter()
            .filter_map(|f| f.l7.as_ref())
            .filter(|l7| l7.r#type == L7Type::Request as i32)
            .filter(|l7| matches!(&l7.record, Some(Record::Dns(d)) if d.query.trim_end_matches('.') == name))
            .count();
        assert_eq!(asked, LOOKUPS_EACH, "queries for {name}");
    }
    let engine = aggregate_flows(flows, Arc::new(Metadata::empty()));
    let graph = engine.graph_snapshot(Zoom::Workload, &[]);

    let web = edge(&graph.edges, u32::from(http_port), "HTTP");
    let requests = (OK_REQUESTS + FAILING_REQUESTS) as u64;
    assert_eq!(web.connections, requests, "{web:#?}");
    assert_eq!(web.requests, requests, "{web:#?}");
    let http_counts = web.http.expect("status classes");
    assert_eq!(http_counts.success, OK_REQUESTS as u64);
    assert_eq!(http_counts.server_error, FAILING_REQUESTS as u64);
    let latency = web.latency.expect("request latency");
    let delay = SERVER_DELAY.as_nanos() as u64;
    assert_eq!(latency.count, requests);
    assert!(
        latency.p50_ns >= delay && latency.p50_ns < 2 * delay,
        "p50 {} ms for a {} ms server",
        latency.p50_ns / 1_000_000,
        delay / 1_000_000
    );
    let connect = web.connect_latency.expect("connect latency");
    assert_eq!(connect.count, requests);
    assert!(connect.min_ns > 0);

    let lookups = edge(&graph.edges, 53, "DNS");
    assert_eq!(lookups.dns_queries, 2 * LOOKUPS_EACH as u64, "{lookups:#?}");
    let rcode = |code: u32| {
        lookups
            .dns_rcodes
            .iter()
            .find(|r| r.rcode == code)
            .map_or(0, |r| r.count)
    };
    assert_eq!(rcode(0), LOOKUPS_EACH as u64, "NOERROR");
    assert_eq!(rcode(3), LOOKUPS_EACH as u64, "NXDOMAIN");

    let dropped = edge(&graph.edges, u32::from(BLOCKED_PORT), "dropped");
    assert!(
        dropped.drops.iter().any(|d| d.reason == "NETFILTER_DROP"),
        "{dropped:#?}"
    );
    // One connect was attempted (its SYN passed the TC hook, retransmits
    // are not new attempts); it got no answer.
    assert_eq!(dropped.connections, 1, "{dropped:#?}");
    assert_eq!(dropped.requests, 0);
    assert!(dropped.connect_latency.is_none_or(|l| l.count == 0));

    drop(probe);
    drop(topology);
}
