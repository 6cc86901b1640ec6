//! The probe attached inside a network namespace (root; CI runs it): two
//! namespaces made by the test, joined by a veth pair, a server in one and a
//! client in the other. No address of the host is used, nothing routes out,
//! and the namespaces go away at the end, also when an assertion fails.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

use skymap_node_probe::event::EventBody;
use skymap_node_probe::loader::{LoadOptions, Probe};
use skymap_node_probe::netns::run_in;
use skymap_node_probe::preflight::{self, Facts};
use skymap_node_probe::reasons::DropReasons;

mod common;
use common::{SERVER_IP, Topology, collect};

const CONNECTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_namespace_one_handshake_per_connect_and_the_refusal() {
    if let Err(e) = preflight::check(&Facts::gather()) {
        panic!("{e} (this test runs as root, as CI does)");
    }
    let reasons = DropReasons::from_kernel().expect("drop reasons");
    let topology = Topology::new("n");
    let server_ns = Topology::path(&topology.server);
    let client_ns = Topology::path(&topology.client);
    let server_inode = std::fs::metadata(&server_ns).expect("netns file").ino();

    let mut probe = Probe::load(&LoadOptions::default()).expect("the programs load");
    probe
        .attach_in(&server_ns, &topology.server_if)
        .expect("attach inside the server namespace");
    assert!(
        std::fs::read_to_string("/proc/net/dev")
            .expect("host interfaces")
            .lines()
            .all(|l| !l.contains(&topology.server_if)),
        "the interface is not in the host namespace"
    );

    let listener = run_in(&server_ns, || TcpListener::bind((SERVER_IP, 0)))
        .expect("enter")
        .expect("bind inside the namespace");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        for _ in 0..CONNECTS {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
        }
    });
    let closed = port.wrapping_add(1).max(1024);
    let refused = run_in(&client_ns, || {
        for _ in 0..CONNECTS {
            let mut stream =
                TcpStream::connect(SocketAddr::from((SERVER_IP, port))).expect("connect");
            stream
                .write_all(b"GET /netns HTTP/1.1\r\nHost: skymap\r\n\r\n")
                .expect("send");
            let mut reply = Vec::new();
            let _ = stream.read_to_end(&mut reply);
            assert!(reply.starts_with(b"HTTP/1.1 204"));
        }
        TcpStream::connect_timeout(
            &SocketAddr::from((SERVER_IP, closed)),
            Duration::from_secs(2),
        )
        .is_err()
    })
    .expect("enter the client namespace");
    assert!(refused, "nothing listens on {closed}");
    server.join().expect("server");

    let events = collect(&mut probe, Duration::from_secs(3)).await;

    let to_port = |p: u16| {
        move |e: &&skymap_node_probe::event::Event| {
            let t = e.body.tuple();
            t.dport == p || t.sport == p
        }
    };
    let served: Vec<_> = events.iter().filter(to_port(port)).collect();
    assert!(!served.is_empty());
    assert!(
        served
            .iter()
            .all(|e| e.header.netns_ino == server_inode as u32),
        "every event carries the server namespace's inode"
    );
    let handshakes = served
        .iter()
        .filter(|e| matches!(e.body, EventBody::Handshake { .. }))
        .count();
    assert_eq!(handshakes, CONNECTS, "one per connect at the server's veth");
    let requests = served
        .iter()
        .filter(|e| matches!(&e.body, EventBody::Payload { snippet, .. } if snippet.starts_with(b"GET /netns")))
        .count();
    assert_eq!(requests, CONNECTS);
    let drops: Vec<String> = events
        .iter()
        .filter(to_port(closed))
        .filter_map(|e| match &e.body {
            EventBody::Drop { reason, .. } => Some(reasons.name(*reason)),
            _ => None,
        })
        .collect();
    assert!(drops.iter().any(|r| r == "NO_SOCKET"), "{drops:?}");

    let names = [topology.client.clone(), topology.server.clone()];
    drop(probe);
    drop(topology);
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        names.iter().all(|n| !left.contains(n.as_str())),
        "left behind: {left}"
    );
}
