//! The whole path, kernel to relay, against what the test itself did (root;
//! CI runs it). Two namespaces the test builds; in the server's, an HTTP
//! server that waits before answering, a DNS server, and an nftables rule
//! that drops one port. The probe watches the server's interface; its flows
//! go through the assembler into the relay's engine, and the graph must
//! count exactly what the client did.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
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
use common::{SERVER_IP, Topology, collect};

const OK_REQUESTS: usize = 4;
const FAILING_REQUESTS: usize = 1;
/// What the HTTP server waits before it answers.
const SERVER_DELAY: Duration = Duration::from_millis(40);
const LOOKUPS_EACH: usize = 3;
const KNOWN: &str = "exists.skymap.test";
const UNKNOWN: &str = "missing.skymap.test";
const BLOCKED_PORT: u16 = 9999;

fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]); // root, A, IN
    q
}

/// Answers A for [`KNOWN`], NXDOMAIN for anything else.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let question_end = 12 + query[12..].iter().position(|&b| b == 0).unwrap_or(0) + 5;
    let question = &query[12..question_end.min(query.len())];
    let known = question.windows(6).any(|w| w == b"exists");
    let mut r = Vec::new();
    r.extend(&query[..2]);
    r.extend([0x81, if known { 0x80 } else { 0x83 }]); // QR RD RA, rcode
    r.extend([0, 1, 0, u8::from(known), 0, 0, 0, 0]);
    r.extend(question);
    if known {
        r.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 9, 8, 7]);
    }
    r
}

fn nft(namespace: &str, rule: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", namespace, "nft", rule])
        .output()
        .expect("nftables is installed");
    assert!(
        out.status.success(),
        "nft {rule}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
    let http = std::thread::spawn(move || {
        for _ in 0..OK_REQUESTS + FAILING_REQUESTS {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 256];
            let n = stream.read(&mut request).unwrap_or(0);
            std::thread::sleep(SERVER_DELAY);
            let reply: &[u8] = if request[..n].starts_with(b"GET /fail") {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = stream.write_all(reply);
        }
    });
    let dns_server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..2 * LOOKUPS_EACH {
            let Ok((n, from)) = dns.recv_from(&mut buf) else {
                return;
            };
            let _ = dns.send_to(&dns_answer(&buf[..n]), from);
        }
    });

    // The client's work, inside the client namespace.
    let blocked = run_in(&client_ns, || {
        for i in 0..OK_REQUESTS + FAILING_REQUESTS {
            let path = if i < FAILING_REQUESTS { "/fail" } else { "/ok" };
            let mut stream =
                TcpStream::connect(SocketAddr::from((SERVER_IP, http_port))).expect("connect");
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .expect("send");
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
        }
        let socket = UdpSocket::bind("0.0.0.0:0").expect("udp");
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut id = 0u16;
        for name in [KNOWN, UNKNOWN] {
            for _ in 0..LOOKUPS_EACH {
                id += 1;
                socket
                    .send_to(&dns_query(id, name), (SERVER_IP, 53))
                    .expect("query");
                let mut buf = [0u8; 512];
                socket.recv_from(&mut buf).expect("an answer");
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
