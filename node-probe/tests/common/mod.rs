//! Shared by the root tests: two network namespaces joined by a veth pair,
//! made by the test and removed on drop (also when an assertion fails),
//! reading the probe's events for a while, and small DNS and HTTP servers
//! and clients whose answers the tests know in advance.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skymap_node_probe::event::Event;
use skymap_node_probe::loader::Probe;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
/// How long a helper's socket waits before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Two namespaces and a veth pair; removed on drop.
pub struct Topology {
    pub client: String,
    pub server: String,
    pub server_if: String,
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 is installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Topology {
    /// `tag` keeps the names of tests running side by side apart.
    pub fn new(tag: &str) -> Self {
        let id = std::process::id();
        let t = Topology {
            client: format!("skymap-{tag}c{id}"),
            server: format!("skymap-{tag}s{id}"),
            server_if: format!("sk{tag}s{id}"),
        };
        let client_if = format!("sk{tag}c{id}");
        ip(&["netns", "add", &t.client]);
        ip(&["netns", "add", &t.server]);
        ip(&[
            "link",
            "add",
            &client_if,
            "type",
            "veth",
            "peer",
            "name",
            &t.server_if,
        ]);
        ip(&["link", "set", &client_if, "netns", &t.client]);
        ip(&["link", "set", &t.server_if, "netns", &t.server]);
        for (ns, dev, addr) in [
            (&t.client, &client_if, CLIENT_IP),
            (&t.server, &t.server_if, SERVER_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        t
    }

    pub fn path(name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair with them.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Reads the probe's events for `period`.
pub async fn collect(probe: &mut Probe, period: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    let deadline = Instant::now() + period;
    while Instant::now() < deadline {
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(200), probe.read()).await {
            let batch = batch.expect("reading the ring buffer");
            assert_eq!(batch.undecodable, 0, "{:?}", batch.first_error);
            events.extend(batch.events);
        }
    }
    events
}

/// A DNS query for `name`: recursion desired, one question, A, IN.
pub fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

/// Answers A for a name with an `exists` label, NXDOMAIN for anything else.
pub fn dns_answer(query: &[u8]) -> Vec<u8> {
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

/// Answers `count` DNS queries on `socket` (see [`dns_answer`]).
pub fn serve_dns(socket: UdpSocket, count: usize) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..count {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let _ = socket.send_to(&dns_answer(&buf[..n]), from);
        }
    })
}

/// A client socket for [`dns_lookup`], which gives up after [`PATIENCE`].
pub fn dns_client() -> UdpSocket {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("udp");
    socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
    socket
}

/// Asks `server` for `name`; returns the answer's rcode.
pub fn dns_lookup(socket: &UdpSocket, server: SocketAddr, id: u16, name: &str) -> u8 {
    socket.send_to(&dns_query(id, name), server).expect("query");
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("an answer");
    assert!(n >= 4, "a short answer");
    buf[3] & 0x0f
}

/// Serves `count` HTTP/1.1 requests, one per connection, each answered after
/// `delay` with the status its path names (`GET /404` gets 404; any other
/// path 200).
pub fn serve_http(listener: TcpListener, count: usize, delay: Duration) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = stream.set_read_timeout(Some(PATIENCE));
            let mut request = [0u8; 256];
            let n = stream.read(&mut request).unwrap_or(0);
            let status = std::str::from_utf8(&request[..n])
                .ok()
                .and_then(|r| r.strip_prefix("GET /"))
                .and_then(|r| r.get(..3))
                .and_then(|code| code.parse::<u16>().ok())
                .unwrap_or(200);
            std::thread::sleep(delay);
            let reply = format!("HTTP/1.1 {status} Test\r\nContent-Length: 0\r\n\r\n");
            let _ = stream.write_all(reply.as_bytes());
        }
    })
}

/// One request on a connection of its own; returns the reply's status.
pub fn http_get(server: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect_timeout(&server, PATIENCE).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// Runs an nftables command inside `namespace`.
pub fn nft(namespace: &str, rule: &str) {
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
