//! The real `skymap-probe` binary against a real relay over gRPC (root; CI
//! runs it): the relay's graph counts exactly what the test's client did,
//! SIGINT and SIGKILL leave nothing attached or loaded, a bad flag fails
//! clearly before anything is attached, and a relay that comes up late gets
//! what happened before it was there.
//!
//! The probe runs in the host namespace and watches the server's end of the
//! test's veth pair through `--netns`, so it reaches the relay on loopback.
//! The tests share the kernel with each other, so they take turns.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skymap_node_probe::netns::run_in;
use skymap_node_probe::preflight::{self, Facts};
use skymap_proto::names::parse_rcode;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    FlowFilter, GetFlowsRequest, GetGraphRequest, GraphEdge, NodeState, NodeStatus, StatusRequest,
    Zoom, get_flows_response,
};
use skymap_relay::server::{self, RelayConfig, RelayHandle};
use tonic::transport::{Channel, Endpoint};

mod common;
use common::{
    PATIENCE, SERVER_IP, Topology, dns_client, dns_lookup, http_get, serve_dns, serve_http,
};

const NODE: &str = "test-node";
const CONNECTS: usize = 4;
/// The statuses asked for, one request each.
const STATUSES: [u16; 6] = [200, 200, 200, 404, 404, 503];
const KNOWN: &str = "exists.skymap.test";
const UNKNOWN: &str = "missing.skymap.test";
const KNOWN_LOOKUPS: usize = 3;
const UNKNOWN_LOOKUPS: usize = 2;
/// The probe loads four TC programs and the drop tracepoint; it links the
/// tracepoint and one interface's ingress and egress.
const PROGRAMS: usize = 5;
const LINKS: usize = 3;
/// What `Shipper` waits at most between reconnects.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The programs and traffic of one test must not be counted by another.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn check_root() {
    if let Err(e) = preflight::check(&Facts::gather()) {
        panic!("{e} (this test runs as root, as CI does)");
    }
}

/// A `skymap-probe` process, killed on drop; its stderr is collected as it
/// comes.
struct ProbeProcess {
    child: Child,
    stderr: Arc<Mutex<String>>,
    /// Copies stderr until the process is gone.
    reader: Option<JoinHandle<()>>,
}

impl ProbeProcess {
    /// Watching the server's interface, sending to `relay`.
    fn watching(topology: &Topology, relay: SocketAddr, extra: &[&str]) -> Self {
        let server_ns = Topology::path(&topology.server);
        let mut child = Command::new(env!("CARGO_BIN_EXE_skymap-probe"))
            .arg("--relay")
            .arg(format!("http://{relay}"))
            .args(["--node", NODE, "--iface", &topology.server_if])
            .arg("--netns")
            .arg(&server_ns)
            .args(extra)
            .env_remove("SKYMAP_RELAY")
            .env_remove("SKYMAP_NODE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skymap-probe starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let collected = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = collected.lock().unwrap_or_else(PoisonError::into_inner);
                all.push_str(&line);
                all.push('\n');
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Its exit status once it has exited, with all of its stderr read.
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().expect("wait for skymap-probe")?;
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Fails the test, with the probe's stderr, if it has exited.
    fn assert_running(&mut self, waiting_for: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "skymap-probe exited ({status}) while waiting for {waiting_for}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Waits until it has attached (it says so on stderr).
    fn wait_attached(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr().contains(", watching ") {
            self.assert_running("it to attach");
            assert!(
                Instant::now() < deadline,
                "skymap-probe did not attach in 10 s; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "skymap-probe still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn interrupt(&self) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// The ids of the BPF programs and links the process holds descriptors
    /// of, read from /proc: exactly this probe's, whatever else is loaded.
    fn bpf_objects(&self) -> (BTreeSet<u32>, BTreeSet<u32>) {
        let mut programs = BTreeSet::new();
        let mut links = BTreeSet::new();
        let dir = format!("/proc/{}/fdinfo", self.child.id());
        for entry in std::fs::read_dir(&dir).expect("fdinfo").flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in info.lines() {
                let mut fields = line.split_whitespace();
                let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
                    continue;
                };
                let Ok(id) = value.parse() else { continue };
                match key {
                    "prog_id:" => programs.insert(id),
                    "link_id:" => links.insert(id),
                    _ => false,
                };
            }
        }
        (programs, links)
    }
}

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which of `programs` and `links` the kernel still has.
fn still_loaded(programs: &BTreeSet<u32>, links: &BTreeSet<u32>) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let programs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .filter(|id| programs.contains(id))
        .collect();
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .filter(|id| links.contains(id))
        .collect();
    (programs, links)
}

/// Waits (the kernel frees after an RCU grace period) until none of them is
/// left.
fn assert_released(programs: &BTreeSet<u32>, links: &BTreeSet<u32>, after: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = still_loaded(programs, links);
        if left.0.is_empty() && left.1.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after {after}, still loaded: programs {:?}, links {:?}",
            left.0,
            left.1
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What tc shows on the interface that a probe could leave behind: filters
/// either way and a clsact qdisc. TCX links show in neither (their ids are
/// checked apart), but the netlink attachments of older kernels do.
fn tc_leftovers(topology: &Topology) -> String {
    let tc = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &topology.server, "tc"])
            .args(args)
            .output()
            .expect("tc runs");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dev = topology.server_if.as_str();
    let mut all = tc(&["filter", "show", "dev", dev, "ingress"]);
    all.push_str(&tc(&["filter", "show", "dev", dev, "egress"]));
    let qdiscs = tc(&["qdisc", "show", "dev", dev]);
    all.extend(qdiscs.lines().filter(|l| l.contains("clsact")));
    all
}

/// Turns IPv6 off in both namespaces, so that the new links' own chatter
/// (duplicate address detection, router solicitations) stops before the
/// probe attaches.
fn quiet(topology: &Topology) {
    for namespace in [&topology.client, &topology.server] {
        let out = Command::new("ip")
            .args(["netns", "exec", namespace, "sysctl", "-qw"])
            .arg("net.ipv6.conf.all.disable_ipv6=1")
            .output()
            .expect("sysctl runs");
        assert!(
            out.status.success(),
            "sysctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An address on loopback where nothing listens (yet).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

async fn start_relay(addr: &str) -> RelayHandle {
    server::start(addr, RelayConfig::default())
        .await
        .expect("the relay starts")
}

/// A client whose every call fails after a while instead of hanging.
async fn observer(relay: &RelayHandle) -> ObserverClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", relay.addr))
        .expect("url")
        .connect_timeout(PATIENCE)
        .timeout(2 * PATIENCE)
        .connect()
        .await
        .expect("observer");
    ObserverClient::new(channel)
}

async fn node_status(observer: &mut ObserverClient<Channel>) -> Option<NodeStatus> {
    let status = observer
        .get_status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    status.nodes.into_iter().find(|n| n.name == NODE)
}

/// Waits until the relay shows the probe's node connected; returns how long
/// that took.
async fn wait_connected(
    observer: &mut ObserverClient<Channel>,
    probe: &mut ProbeProcess,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let node = node_status(observer).await;
        if node
            .as_ref()
            .is_some_and(|n| n.state == NodeState::Connected as i32)
        {
            return start.elapsed();
        }
        probe.assert_running("the relay to show it connected");
        assert!(
            start.elapsed() < timeout,
            "the relay did not show {NODE} connected in {timeout:?} ({node:?}); stderr:\n{}",
            probe.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The edges to the server on `ports`, once their counters have not changed
/// for a while (or the deadline passed). At pod zoom, where an address
/// without metadata is a node of its own: drops elsewhere on the machine,
/// which the probe reports too, stay off these edges.
async fn settled_edges(observer: &mut ObserverClient<Channel>, ports: &[u16]) -> Vec<GraphEdge> {
    const STILL: Duration = Duration::from_millis(1500);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    let mut since = Instant::now();
    loop {
        let graph = observer
            .get_graph(GetGraphRequest {
                zoom: Zoom::Pod as i32,
                namespaces: Vec::new(),
            })
            .await
            .expect("graph")
            .into_inner();
        let edges: Vec<GraphEdge> = graph
            .edges
            .into_iter()
            .filter(|e| e.destination == format!("world:{SERVER_IP}"))
            .filter(|e| ports.iter().any(|&p| u32::from(p) == e.port))
            .collect();
        // Rates and times move on by themselves; counts only when flows come.
        let counts = edges
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {} {} {:?};",
                    e.id, e.flows, e.packets, e.connections, e.requests, e.dns_queries, e.drops
                )
            })
            .collect::<String>();
        let all_there = ports
            .iter()
            .all(|&p| edges.iter().any(|e| e.port == u32::from(p)));
        if counts != last {
            last = counts;
            since = Instant::now();
        } else if all_there && since.elapsed() >= STILL {
            return edges;
        }
        if Instant::now() > deadline {
            return edges;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edge(edges: &[GraphEdge], port: u16) -> &GraphEdge {
    let on_port: Vec<&GraphEdge> = edges.iter().filter(|e| e.port == u32::from(port)).collect();
    assert_eq!(on_port.len(), 1, "one edge on port {port}: {edges:#?}");
    on_port[0]
}

fn rcode_count(edge: &GraphEdge, name: &str) -> u64 {
    let code = parse_rcode(name).expect("a known rcode");
    edge.dns_rcodes
        .iter()
        .filter(|r| r.rcode == code)
        .map(|r| r.count)
        .sum()
}

/// Servers in the server namespace: one that accepts connections and says
/// nothing, HTTP, DNS on 53, and a port where nothing listens.
struct Servers {
    accept: u16,
    http: u16,
    closed: u16,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(topology: &Topology, http_requests: usize, lookups: usize) -> Self {
        let (accept, http, dns, closed) = run_in(&Topology::path(&topology.server), || {
            let closed = TcpListener::bind((SERVER_IP, 0)).expect("bind");
            (
                TcpListener::bind((SERVER_IP, 0)).expect("accept"),
                TcpListener::bind((SERVER_IP, 0)).expect("http"),
                UdpSocket::bind((SERVER_IP, 53)).expect("dns"),
                closed.local_addr().expect("addr").port(),
            )
        })
        .expect("enter the server namespace");
        let ports = (
            accept.local_addr().expect("addr").port(),
            http.local_addr().expect("addr").port(),
        );
        let acceptor = std::thread::spawn(move || {
            for _ in 0..CONNECTS {
                if accept.accept().is_err() {
                    return;
                }
            }
        });
        Self {
            accept: ports.0,
            http: ports.1,
            closed,
            threads: vec![
                acceptor,
                serve_http(http, http_requests, Duration::ZERO),
                serve_dns(dns, lookups),
            ],
        }
    }

    fn join(self) {
        for thread in self.threads {
            thread.join().expect("server");
        }
    }
}

/// From the client namespace: plain connects, DNS lookups, and, if `http`,
/// the HTTP requests and a connect to the closed port.
async fn client_work(topology: &Topology, servers: &Servers, http: bool) {
    let client_ns = Topology::path(&topology.client);
    let (accept, web, closed) = (servers.accept, servers.http, servers.closed);
    tokio::task::spawn_blocking(move || {
        run_in(&client_ns, || {
            for _ in 0..CONNECTS {
                TcpStream::connect_timeout(&SocketAddr::from((SERVER_IP, accept)), PATIENCE)
                    .expect("connect");
            }
            let socket = dns_client();
            let dns = SocketAddr::from((SERVER_IP, 53));
            let mut id = 0;
            for (name, count, rcode) in [(KNOWN, KNOWN_LOOKUPS, 0), (UNKNOWN, UNKNOWN_LOOKUPS, 3)] {
                for _ in 0..count {
                    id += 1;
                    assert_eq!(dns_lookup(&socket, dns, id, name), rcode, "{name}");
                }
            }
            if http {
                for status in STATUSES {
                    let got = http_get(SocketAddr::from((SERVER_IP, web)), &format!("/{status}"));
                    assert_eq!(got, status);
                }
                let refused =
                    TcpStream::connect_timeout(&SocketAddr::from((SERVER_IP, closed)), PATIENCE)
                        .expect_err("closed");
                assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
            }
        })
        .expect("enter the client namespace")
    })
    .await
    .expect("client");
}

fn assert_connects_and_lookups(edges: &[GraphEdge], servers: &Servers) {
    let plain = edge(edges, servers.accept);
    assert_eq!(plain.connections, CONNECTS as u64, "{plain:#?}");
    assert_eq!(plain.requests, 0, "{plain:#?}");
    let connect = plain.connect_latency.expect("connect latency");
    assert_eq!(connect.count, CONNECTS as u64, "{plain:#?}");
    assert!(connect.min_ns > 0, "{connect:?}");

    let dns = edge(edges, 53);
    assert_eq!(
        dns.dns_queries,
        (KNOWN_LOOKUPS + UNKNOWN_LOOKUPS) as u64,
        "{dns:#?}"
    );
    assert_eq!(
        rcode_count(dns, "NOERROR"),
        KNOWN_LOOKUPS as u64,
        "{dns:#?}"
    );
    assert_eq!(
        rcode_count(dns, "NXDOMAIN"),
        UNKNOWN_LOOKUPS as u64,
        "{dns:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_counts_exactly_what_the_client_did_through_the_binary() {
    let _turn = TURN.lock().await;
    check_root();
    let topology = Topology::new("b1");
    quiet(&topology);
    let servers = Servers::start(&topology, STATUSES.len(), KNOWN_LOOKUPS + UNKNOWN_LOOKUPS);
    let relay = start_relay("127.0.0.1:0").await;
    let mut observer = observer(&relay).await;
    // Without CPU samples (which are batches of their own) only the probe's
    // announcement can show a quiet node connected.
    let mut probe = ProbeProcess::watching(&topology, relay.addr, &["--no-cpu"]);
    wait_connected(&mut observer, &mut probe, Duration::from_secs(10)).await;

    client_work(&topology, &servers, true).await;
    let ports = [servers.accept, servers.http, 53, servers.closed];
    let edges = settled_edges(&mut observer, &ports).await;
    probe.assert_running("the counts");
    assert_connects_and_lookups(&edges, &servers);

    let web = edge(&edges, servers.http);
    let requests = STATUSES.len() as u64;
    assert_eq!(web.connections, requests, "{web:#?}");
    assert_eq!(web.requests, requests, "{web:#?}");
    let by_class = web.http.expect("status classes");
    let count = |class: u16| STATUSES.iter().filter(|&&s| s / 100 == class).count() as u64;
    assert_eq!(by_class.success, count(2), "{web:#?}");
    assert_eq!(by_class.client_error, count(4), "{web:#?}");
    assert_eq!(by_class.server_error, count(5), "{web:#?}");
    assert_eq!(web.latency.map(|l| l.count), Some(requests), "{web:#?}");

    let refused = edge(&edges, servers.closed);
    assert_eq!(refused.connections, 1, "{refused:#?}");
    assert_eq!(refused.refused, 1, "{refused:#?}");
    let no_socket: Vec<_> = refused
        .drops
        .iter()
        .filter(|d| d.reason == "NO_SOCKET")
        .collect();
    assert_eq!(no_socket.len(), 1, "{refused:#?}");
    assert_eq!(no_socket[0].packets, 1, "{refused:#?}");

    servers.join();
    drop(probe);
    relay.shutdown().await.expect("relay shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_a_bad_flag_leave_nothing_behind() {
    let _turn = TURN.lock().await;
    check_root();
    let topology = Topology::new("b2");
    // No relay: the probe keeps what it sees and retries, and must still
    // stop promptly.
    let nowhere = free_port();

    // SIGINT: a clean exit that detaches everything.
    let mut probe = ProbeProcess::watching(&topology, nowhere, &[]);
    probe.wait_attached();
    let (programs, links) = probe.bpf_objects();
    assert_eq!(
        (programs.len(), links.len()),
        (PROGRAMS, LINKS),
        "programs {programs:?}, links {links:?}"
    );
    probe.interrupt();
    // It waits up to 2 s for the relay that is not there.
    let status = probe.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "SIGINT gave {status}; stderr:\n{}",
        probe.stderr()
    );
    assert_released(&programs, &links, "SIGINT");
    assert_eq!(tc_leftovers(&topology), "", "left after SIGINT");

    // SIGKILL: nothing runs in the probe, the kernel releases it all by
    // itself when its descriptors close.
    let mut probe = ProbeProcess::watching(&topology, nowhere, &[]);
    probe.wait_attached();
    let (programs, links) = probe.bpf_objects();
    assert_eq!((programs.len(), links.len()), (PROGRAMS, LINKS));
    probe.child.kill().expect("SIGKILL");
    let status = probe.wait_exit(Duration::from_secs(2));
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_released(&programs, &links, "SIGKILL");
    assert_eq!(tc_leftovers(&topology), "", "left after SIGKILL");

    // A ring buffer size the kernel cannot take: refused in one line (then
    // clap's pointer to --help) before anything is loaded.
    let mut probe = ProbeProcess::watching(&topology, nowhere, &["--ring-bytes", "1000"]);
    let status = probe.wait_exit(Duration::from_secs(5));
    let stderr = probe.stderr();
    assert!(!status.success(), "{status}; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{stderr}");
    assert!(
        errors[0].contains("--ring-bytes") && errors[0].contains("power of two"),
        "names the flag and what it takes:\n{stderr}"
    );
    assert!(!stderr.contains("watching"), "{stderr}");
    assert_eq!(tc_leftovers(&topology), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_comes_late_gets_what_happened_before() {
    let _turn = TURN.lock().await;
    check_root();
    let topology = Topology::new("b3");
    quiet(&topology);
    let servers = Servers::start(&topology, 0, KNOWN_LOOKUPS + UNKNOWN_LOOKUPS);
    let addr = free_port();
    let mut probe = ProbeProcess::watching(&topology, addr, &[]);
    probe.wait_attached();
    client_work(&topology, &servers, false).await;
    // Long enough for the reconnect backoff to have grown.
    tokio::time::sleep(Duration::from_secs(2)).await;
    probe.assert_running("the relay");

    let relay = start_relay(&addr.to_string()).await;
    let mut observer = observer(&relay).await;
    let waited = wait_connected(
        &mut observer,
        &mut probe,
        BACKOFF_CAP + Duration::from_secs(2),
    )
    .await;
    assert!(waited <= BACKOFF_CAP + Duration::from_secs(1), "{waited:?}");

    let edges = settled_edges(&mut observer, &[servers.accept, 53]).await;
    assert_connects_and_lookups(&edges, &servers);

    // Everything the probe produced is either at the relay or counted lost.
    let node = node_status(&mut observer).await.expect("the node");
    let lost: u64 = node.losses.iter().map(|l| l.count).sum();
    assert_eq!(lost, 0, "{:?}", node.losses);
    let mut flows = observer
        .get_flows(GetFlowsRequest {
            number: 1_000_000,
            whitelist: vec![FlowFilter {
                node_name: vec![NODE.to_string()],
                ..FlowFilter::default()
            }],
            ..GetFlowsRequest::default()
        })
        .await
        .expect("flows")
        .into_inner();
    let mut delivered = 0u64;
    while let Some(response) = flows.message().await.expect("a flow") {
        if let Some(get_flows_response::Response::Flow(_)) = response.response {
            delivered += 1;
        }
    }
    assert!(delivered > 0);
    assert_eq!(node.flows_total, delivered, "{node:?}");

    servers.join();
    drop(probe);
    relay.shutdown().await.expect("relay shutdown");
}
