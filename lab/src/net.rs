//! The lab's network: nodes and pods as network namespaces, wired like a
//! routed CNI, and services as DNAT rules.
//!
//! - A **fabric** namespace holds a bridge; every node has a veth (`eth0`)
//!   into it with address `10.10.0.N/24`, and a route to every other node's
//!   pod CIDR `10.244.M.0/24` via that node.
//! - A **pod** is a namespace with `eth0` holding its `/32` address and a
//!   default route via `10.244.N.1`, which every pod-side veth of node N
//!   (`vethK` in the node's namespace) carries; the node routes each pod's /32
//!   to its veth. So traffic between pods, even on one node, crosses the
//!   node's forward hook, where policies apply and the probe watches.
//! - **Services** are DNAT rules in each pod's own namespace (output hook),
//!   as a socket-level load balancer does: packets leave the pod already
//!   addressed to a backend pod, so every observation point sees the same
//!   5-tuple and a policy drop lands on the edge to the real backend.
//!
//! Nothing connects to the host's namespace, so no lab packet can leave.
//! Every namespace is named `skymap-<lab id>-…`, so [`teardown`] finds them
//! all, also after a crash.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Why building or removing the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: cannot run {program}: {source} (is iproute2/nftables installed?)")]
    Spawn {
        what: String,
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {program} failed: {stderr}")]
    Failed {
        what: String,
        program: &'static str,
        stderr: String,
    },
    #[error("the lab needs root (network namespaces, veth links and nftables); run it with sudo")]
    NotRoot,
    #[error("lab id {0:?}: use 1-8 lowercase letters and digits")]
    BadId(String),
    #[error("node index {0} is out of range (1-250)")]
    BadNode(u8),
    #[error("pod {0} is placed on a node the plan does not have")]
    NoNode(String),
}

/// The node-to-node network.
pub const FABRIC_PREFIX: [u8; 3] = [10, 10, 0];

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    pub name: String,
    /// 1..=250: its fabric address and pod CIDR `10.244.index.0/24`.
    pub index: u8,
}

impl NodeNet {
    pub fn fabric_ip(&self) -> Ipv4Addr {
        let [a, b, c] = FABRIC_PREFIX;
        Ipv4Addr::new(a, b, c, self.index)
    }

    /// The address every pod of this node uses as its gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }
}

/// One pod's place in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// Unique in the lab, e.g. "shop/frontend-x2x4z".
    pub key: String,
    /// Index into the node list.
    pub node: usize,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A service port and where it leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNat {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    /// Backend pod addresses and ports.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct NetPlan {
    pub nodes: Vec<NodeNet>,
    pub pods: Vec<PodNet>,
    pub services: Vec<ServiceNat>,
}

/// The names of one lab's namespaces and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    id: String,
}

impl Names {
    pub fn new(id: &str) -> Result<Self, NetError> {
        let ok = (1..=8).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self { id: id.to_string() })
        } else {
            Err(NetError::BadId(id.to_string()))
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// What every namespace of this lab starts with.
    pub fn prefix(&self) -> String {
        format!("skymap-{}-", self.id)
    }

    pub fn fabric(&self) -> String {
        format!("{}fabric", self.prefix())
    }

    pub fn node(&self, node: &NodeNet) -> String {
        format!("{}node-{}", self.prefix(), node.index)
    }

    /// Pods by node and position in the plan: names stay short and valid
    /// whatever the pod is called, and a node's pods share a prefix.
    pub fn pod(&self, node: &NodeNet, index: usize) -> String {
        format!("{}n{}-p{index}", self.prefix(), node.index)
    }

    /// A glob for the namespaces of `node`'s pods (for the probe's
    /// `--pod-netns`).
    pub fn pods_glob(&self, node: &NodeNet) -> String {
        format!("/run/netns/{}n{}-p*", self.prefix(), node.index)
    }

    /// The pod's veth in its node's namespace (at most 15 bytes). The
    /// `veth` prefix tells the probe this is the host side of a pod's
    /// veth, where packets from the pod arrive (its ingress).
    pub fn pod_link(index: usize) -> String {
        format!("veth{index}")
    }

    pub fn path(netns: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(netns)
    }
}

/// Runs `program args`, feeding `input` on stdin when given.
fn run(
    what: &str,
    program: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), NetError> {
    let spawn = |source| NetError::Spawn {
        what: what.to_string(),
        program,
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn)?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).map_err(spawn)?;
    }
    let out = child.wait_with_output().map_err(spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Failed {
            what: what.to_string(),
            program,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip -batch -` in namespace `netns` (or here, for `None`).
fn ip_batch(what: &str, netns: Option<&str>, commands: &str) -> Result<(), NetError> {
    match netns {
        Some(ns) => run(what, "ip", &["-n", ns, "-batch", "-"], Some(commands)),
        None => run(what, "ip", &["-batch", "-"], Some(commands)),
    }
}

fn sysctls(what: &str, netns: &str, settings: &[&str]) -> Result<(), NetError> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-qw"];
    args.extend_from_slice(settings);
    run(what, "ip", &args, None)
}

/// Loads an nftables script in a namespace.
pub fn nft(what: &str, netns: &str, script: &str) -> Result<(), NetError> {
    run(
        what,
        "ip",
        &["netns", "exec", netns, "nft", "-f", "-"],
        Some(script),
    )
}

/// The DNAT table a pod's namespace gets for `services` (replaces any
/// previous one atomically).
pub fn service_nat_script(services: &[ServiceNat]) -> String {
    let mut script =
        String::from("table ip skymap_svc {}\ndelete table ip skymap_svc\ntable ip skymap_svc {\n");
    script.push_str("  chain output {\n    type nat hook output priority -100; policy accept;\n");
    for service in services.iter().filter(|s| !s.endpoints.is_empty()) {
        let backends: Vec<String> = service
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
            .collect();
        let _ = writeln!(
            script,
            "    ip daddr {} {} dport {} dnat ip to numgen random mod {} map {{ {} }}",
            service.ip,
            service.protocol.nft(),
            service.port,
            backends.len(),
            backends.join(", ")
        );
    }
    script.push_str("  }\n}\n");
    script
}

/// Whether this process can build the lab.
pub fn check_root() -> Result<(), NetError> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(NetError::NotRoot)
    }
}

/// Builds the network of `plan`, reporting each step to `progress`. On
/// failure everything made so far is removed before the error returns.
pub fn build(
    names: &Names,
    plan: &NetPlan,
    progress: &mut dyn FnMut(&str),
) -> Result<(), NetError> {
    check_root()?;
    let result = build_steps(names, plan, progress);
    if result.is_err() {
        teardown(names);
    }
    result
}

fn build_steps(
    names: &Names,
    plan: &NetPlan,
    progress: &mut dyn FnMut(&str),
) -> Result<(), NetError> {
    if let Some(bad) = plan.nodes.iter().find(|n| n.index == 0 || n.index > 250) {
        return Err(NetError::BadNode(bad.index));
    }
    progress(&format!(
        "namespaces: 1 fabric, {} nodes, {} pods",
        plan.nodes.len(),
        plan.pods.len()
    ));
    let fabric = names.fabric();
    let mut create = format!("netns add {fabric}\n");
    for node in &plan.nodes {
        let _ = writeln!(create, "netns add {}", names.node(node));
    }
    for (index, pod) in plan.pods.iter().enumerate() {
        let node = plan
            .nodes
            .get(pod.node)
            .ok_or(NetError::NoNode(pod.key.clone()))?;
        let _ = writeln!(create, "netns add {}", names.pod(node, index));
    }
    ip_batch("creating namespaces", None, &create)?;
    // IPv4 only: IPv6 would fill the probes' view with neighbour discovery
    // between the lab's own links (and every link is multicast off, for the
    // IGMP reports a link sends when it comes up, which nothing receives).
    let mut all = vec![fabric.clone()];
    all.extend(plan.nodes.iter().map(|n| names.node(n)));
    for (index, pod) in plan.pods.iter().enumerate() {
        if let Some(node) = plan.nodes.get(pod.node) {
            all.push(names.pod(node, index));
        }
    }
    for ns in &all {
        sysctls(
            "turning IPv6 off",
            ns,
            &[
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        )?;
    }

    progress("fabric: a bridge joining the nodes");
    let mut wiring =
        String::from("link set lo up\nlink add br0 type bridge\nlink set br0 multicast off up\n");
    for node in &plan.nodes {
        let ns = names.node(node);
        let _ = writeln!(
            wiring,
            "link add n{} type veth peer name eth0 netns {ns}",
            node.index
        );
        let _ = writeln!(
            wiring,
            "link set n{} master br0 multicast off up",
            node.index
        );
    }
    ip_batch("wiring the fabric", Some(&fabric), &wiring)?;

    for (n, node) in plan.nodes.iter().enumerate() {
        let ns = names.node(node);
        progress(&format!("{}: routes to the other nodes' pods", node.name));
        let mut setup = format!(
            "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 multicast off up\n",
            node.fabric_ip()
        );
        for other in plan.nodes.iter().filter(|o| o.index != node.index) {
            let _ = writeln!(
                setup,
                "route add 10.244.{}.0/24 via {}",
                other.index,
                other.fabric_ip()
            );
        }
        // Each pod: a veth pair, the gateway address on the node's end and
        // the pod's /32 routed to it.
        for (index, pod) in plan.pods.iter().enumerate().filter(|(_, p)| p.node == n) {
            let link = Names::pod_link(index);
            let _ = writeln!(
                setup,
                "link add {link} type veth peer name eth0 netns {}",
                names.pod(node, index)
            );
            let _ = writeln!(setup, "addr add {}/32 dev {link}", node.gateway());
            let _ = writeln!(setup, "link set {link} multicast off up");
            let _ = writeln!(setup, "route add {}/32 dev {link}", pod.ip);
        }
        ip_batch(&format!("setting up {}", node.name), Some(&ns), &setup)?;
        // Forwarding between pods and nodes; routes are symmetric, but the
        // pod-side veths share one address, which strict rp_filter dislikes.
        sysctls(
            &format!("setting up {}", node.name),
            &ns,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
        )?;
    }

    progress(&format!(
        "pods: addresses, routes and service DNAT for {}",
        plan.pods.len()
    ));
    let nat = service_nat_script(&plan.services);
    for (index, pod) in plan.pods.iter().enumerate() {
        let node = plan
            .nodes
            .get(pod.node)
            .ok_or(NetError::NoNode(pod.key.clone()))?;
        let ns = names.pod(node, index);
        let setup = format!(
            "link set lo up\naddr add {ip}/32 dev eth0\nlink set eth0 multicast off up\nroute add {gw} dev eth0 scope link\nroute add default via {gw} dev eth0\n",
            ip = pod.ip,
            gw = node.gateway()
        );
        ip_batch(&format!("setting up pod {}", pod.key), Some(&ns), &setup)?;
        nft(&format!("services in pod {}", pod.key), &ns, &nat)?;
    }
    Ok(())
}

/// The lab's namespaces that exist now.
pub fn existing(names: &Names) -> Vec<String> {
    let prefix = names.prefix();
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    found.sort();
    found
}

/// Removes every namespace of the lab (links and nftables tables go with
/// them) after killing the processes still inside. Best effort: it goes on
/// past failures and returns what it could not remove.
pub fn teardown(names: &Names) -> Vec<String> {
    let namespaces = existing(names);
    let inodes: Vec<u64> = namespaces
        .iter()
        .filter_map(|ns| std::fs::metadata(Names::path(ns)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .collect();
    kill_inside(&inodes);
    for ns in &namespaces {
        let _ = run("removing the lab", "ip", &["netns", "del", ns], None);
    }
    existing(names)
}

/// SIGKILLs every process whose network namespace is one of `inodes`.
fn kill_inside(inodes: &[u64]) {
    if inodes.is_empty() {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let inode = std::fs::read_link(entry.path().join("ns/net"))
            .ok()
            .and_then(|t| {
                let t = t.to_str()?.to_string();
                t.strip_prefix("net:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            });
        if inode.is_some_and(|i| inodes.contains(&i)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
