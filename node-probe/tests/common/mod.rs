//! Shared by the root tests: two network namespaces joined by a veth pair,
//! made by the test and removed on drop (also when an assertion fails), and
//! reading the probe's events for a while.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use skymap_node_probe::event::Event;
use skymap_node_probe::loader::Probe;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);

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
