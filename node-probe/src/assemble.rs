//! Flow assembly: decoded kernel [`Event`]s become `skymap.v1` [`Flow`]
//! records shaped the way the relay counts them (see relay/src/stats.rs
//! `FlowFacts` and relay/src/dedup.rs).
//!
//! [`Assembler`] is pure and synchronous: no I/O, no clock reads. Its
//! state (who is the client of a connection, DNS queries and HTTP requests
//! awaiting their answers) lives in bounded tables; whatever they have to
//! give up is counted in [`AssembleStats`].
//!
//! The rules, each chosen for what the relay needs:
//!
//! - **Observation point.** A TC hook is an interface and a direction. On a
//!   pod's host-side veth (the default, [`Attachment::HostVeth`]) ingress is
//!   the pod sending, so `FROM_ENDPOINT`, and egress is the pod receiving,
//!   `TO_ENDPOINT`. Inside the pod ([`Attachment::InPod`], `--netns`) it is
//!   the other way round. On an uplink ingress is `FROM_NETWORK`, egress
//!   `TO_NETWORK`. Drops are `KERNEL_DROP`.
//! - **Client and server (`is_reply`).** A TCP SYN without ACK comes from the
//!   client, a SYN/ACK from the server; that is remembered per connection.
//!   DNS queries and HTTP requests come from the client, responses from the
//!   server. For a connection first seen some other way: if exactly one port
//!   is below 1024 that side is the server, else the sender of the first
//!   packet seen is the client. `is_reply` is true for server → client.
//! - **Traffic direction** follows the proto: relative to the local endpoint
//!   owning the connection, so every record of a connection seen at its
//!   client's end is `EGRESS`, at its server's end `INGRESS` (as the
//!   synthetic recordings do), whatever the packet's own direction.
//! - **Packets and bytes** are carried only by flow events (new, flush,
//!   close: deltas), so their sum over all records is exact. Handshake and
//!   L7 records carry 0. A flow event with no packets adds nothing (the
//!   close that follows a one-packet RST flow) and is skipped.
//! - **TCP flags.** A new-flow event has the first packet's flags. Flush and
//!   close events carry the OR over the flow's life; SYN is removed from
//!   them, since the new-flow record already reported it and the relay
//!   counts every non-reply SYN as a connection attempt.
//! - **Handshake.** `EV_TCP_HANDSHAKE` becomes its own SYN/ACK reply record
//!   with `l4.handshake_ns`, the record the relay takes connect latency from.
//! - **Refused.** The relay counts a reply with RST as refused: the RST/ACK
//!   answering a SYN is a new flow from the server, so it is a reply.
//! - **Pairing.** A response is paired with its request only at the same
//!   interface (`netns`, `ifindex`): one packet is seen at several hooks,
//!   and each hook's view must pair with itself. DNS pairs on (client,
//!   server, id), keeping the first query of a retry; HTTP/1.x answers in
//!   order, so a status line answers the oldest outstanding request of its
//!   connection (1xx does not complete it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use skymap_proto::names::ip_to_bytes;
use skymap_proto::v1::{
    Dns, Endpoint, Flow, Http, L7Type, Layer4, Layer7, LossCounter, ObservationPoint, Protocol,
    TcpFlag, TrafficDirection, Verdict, layer7,
};

use crate::dns::{DnsMessage, parse_dns, parse_dns_tcp};
use crate::event::{Direction, Event, EventBody, FlowRecord, Header, Tuple};
use crate::http::{HttpLine, parse_http};
use crate::reasons::DropReasons;

const SYN: u8 = TcpFlag::Syn as u8;
const ACK: u8 = TcpFlag::Ack as u8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;
const DNS_PORT: u16 = 53;
/// Ports below this are well-known: the side using one is the server.
const WELL_KNOWN_PORTS: u16 = 1024;

/// Table bounds and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections whose client is remembered.
    pub connections: usize,
    /// DNS queries awaiting a response.
    pub dns_queries: usize,
    /// Connections (per interface) with HTTP requests awaiting a response.
    pub http_connections: usize,
    /// Outstanding requests kept per connection (pipelining depth).
    pub http_pipeline: usize,
    /// A connection not seen for this long is forgotten.
    pub connection_idle_ns: u64,
    /// A DNS query unanswered for this long is given up.
    pub dns_timeout_ns: u64,
    /// A connection with requests but no traffic for this long is given up.
    pub http_timeout_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 65_536,
            dns_queries: 65_536,
            http_connections: 65_536,
            http_pipeline: 32,
            connection_idle_ns: 300_000_000_000,
            dns_timeout_ns: 30_000_000_000,
            http_timeout_ns: 300_000_000_000,
        }
    }
}

/// Where an interface sits, which decides what its TC directions mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attachment {
    /// A pod's veth, host side: ingress leaves the pod.
    #[default]
    HostVeth,
    /// The pod's own interface, inside its namespace: egress leaves the pod.
    InPod,
    /// The node's link to the network: ingress arrives from it.
    Uplink,
}

/// What the loader knows about an interface it attached to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub attachment: Attachment,
}

/// What the assembler produced and what it could not use. Cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssembleStats {
    pub events: u64,
    pub flows: u64,
    /// Flow events with no packets (nothing to account), skipped.
    pub empty_flow_events: u64,
    /// Payload snippets that were neither DNS nor HTTP/1.x.
    pub undecodable_payloads: u64,
    /// DNS responses with no pending query (id mismatch, duplicate, query
    /// not seen). Still emitted, without latency.
    pub unmatched_dns_responses: u64,
    /// HTTP status lines with no outstanding request. Still emitted,
    /// without latency.
    pub unmatched_http_responses: u64,
    /// Connections forgotten because the table was full.
    pub evicted_connections: u64,
    /// Pending DNS queries dropped because the table was full.
    pub evicted_dns_queries: u64,
    /// Outstanding HTTP requests dropped because a table or FIFO was full.
    pub evicted_http_requests: u64,
    /// DNS queries never answered within the timeout (not a loss: the
    /// query record went out; the server did not answer).
    pub expired_dns_queries: u64,
    /// HTTP requests never answered within the timeout.
    pub expired_http_requests: u64,
    /// Drops in network namespaces outside the probe's scope (another
    /// probe on the same kernel reports them); not a loss.
    pub foreign_drops: u64,
}

impl AssembleStats {
    /// The losses, as the probe reports them to the relay: state or data
    /// the assembler had to give up.
    pub fn loss_counters(&self) -> Vec<LossCounter> {
        let counter = |stage: &str, count: u64| LossCounter {
            node_name: String::new(),
            stage: stage.to_string(),
            count,
        };
        vec![
            counter("assemble-undecodable", self.undecodable_payloads),
            counter(
                "assemble-unmatched",
                self.unmatched_dns_responses + self.unmatched_http_responses,
            ),
            counter(
                "assemble-evicted",
                self.evicted_connections + self.evicted_dns_queries + self.evicted_http_requests,
            ),
        ]
    }
}

type Addr = (IpAddr, u16);

/// A connection regardless of direction: its two ends in sorted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    low: Addr,
    high: Addr,
    protocol: u8,
}

impl ConnKey {
    fn new(t: &Tuple) -> Self {
        let (a, b) = ((t.saddr, t.sport), (t.daddr, t.dport));
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        Self {
            low,
            high,
            protocol: t.protocol,
        }
    }
}

/// An interface: (netns inode, ifindex).
type Hook = (u32, u32);

/// A connection at one interface, oriented client → server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct HookConn {
    hook: Hook,
    client: Addr,
    server: Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DnsKey {
    conn: HookConn,
    id: u16,
}

#[derive(Debug, Clone, Copy)]
struct PendingQuery {
    ts_ns: u64,
}

#[derive(Debug, Clone)]
struct PendingRequest {
    ts_ns: u64,
    method: &'static str,
    url: String,
}

/// The assembler. One per probe; feed it events in ring-buffer order.
#[derive(Debug)]
pub struct Assembler {
    node: String,
    reasons: DropReasons,
    boot_to_unix_ns: i64,
    limits: Limits,
    interfaces: HashMap<Hook, Interface>,
    /// Connection → its client.
    clients: Bounded<ConnKey, Addr>,
    dns: Bounded<DnsKey, PendingQuery>,
    http: Bounded<HookConn, VecDeque<PendingRequest>>,
    /// When set, drops count only in these network namespaces.
    drop_scope: Option<std::collections::HashSet<u32>>,
    stats: AssembleStats,
}

impl Assembler {
    /// `boot_to_unix_ns` turns the kernel's `CLOCK_MONOTONIC` timestamps
    /// into Unix time: Unix ns = monotonic ns + offset.
    pub fn new(node: &str, reasons: DropReasons, boot_to_unix_ns: i64, limits: Limits) -> Self {
        Self {
            node: node.to_string(),
            reasons,
            boot_to_unix_ns,
            limits,
            interfaces: HashMap::new(),
            clients: Bounded::new(limits.connections),
            dns: Bounded::new(limits.dns_queries),
            http: Bounded::new(limits.http_connections),
            drop_scope: None,
            stats: AssembleStats::default(),
        }
    }

    /// Keeps drops only from these network namespaces (inode numbers), or
    /// from everywhere (`None`, the default). The drop tracepoint sees the
    /// whole kernel: on a real node that is the node, but where several
    /// probes share one kernel (a lab, a test) each must keep to its own.
    pub fn set_drop_scope(&mut self, namespaces: Option<std::collections::HashSet<u32>>) {
        self.drop_scope = namespaces;
    }

    /// Names an interface and says where it sits. Unknown interfaces are
    /// taken as pod veths (host side) with no name.
    pub fn set_interface(&mut self, netns_ino: u32, ifindex: u32, interface: Interface) {
        self.interfaces.insert((netns_ino, ifindex), interface);
    }

    pub fn remove_interface(&mut self, netns_ino: u32, ifindex: u32) {
        self.interfaces.remove(&(netns_ino, ifindex));
    }

    pub fn stats(&self) -> &AssembleStats {
        &self.stats
    }

    /// The flows one event makes (zero, or one).
    pub fn push(&mut self, event: &Event) -> Vec<Flow> {
        let mut out = Vec::new();
        self.push_into(event, &mut out);
        out
    }

    /// [`Assembler::push`], appending to `out`.
    pub fn push_into(&mut self, event: &Event, out: &mut Vec<Flow>) {
        self.stats.events += 1;
        let before = out.len();
        let h = &event.header;
        match &event.body {
            EventBody::FlowNew(r) => self.flow_event(h, r, true, out),
            EventBody::FlowFlush(r) | EventBody::FlowClose(r) => self.flow_event(h, r, false, out),
            EventBody::Handshake {
                tuple,
                syn_ns,
                synack_ns,
            } => self.handshake(h, tuple, *syn_ns, *synack_ns, out),
            EventBody::Payload { tuple, snippet, .. } => self.payload(h, tuple, snippet, out),
            EventBody::Drop { tuple, reason, .. } => self.drop(h, tuple, *reason, out),
        }
        self.stats.flows += (out.len() - before) as u64;
    }

    /// Gives up state older than its timeout. No flow is held back, so
    /// none comes out here: unanswered requests are only counted.
    pub fn expire(&mut self, now_mono_ns: u64) {
        let cutoff = |timeout: u64| now_mono_ns.saturating_sub(timeout);
        self.clients.expire(cutoff(self.limits.connection_idle_ns));
        self.stats.expired_dns_queries +=
            self.dns.expire(cutoff(self.limits.dns_timeout_ns)).len() as u64;
        let given_up = self.http.expire(cutoff(self.limits.http_timeout_ns));
        self.stats.expired_http_requests += given_up.iter().map(|q| q.len() as u64).sum::<u64>();
    }

    fn flow_event(&mut self, h: &Header, r: &FlowRecord, new: bool, out: &mut Vec<Flow>) {
        if r.packets == 0 {
            self.stats.empty_flow_events += 1;
            return;
        }
        let t = &r.tuple;
        let tcp = t.protocol == IPPROTO_TCP;
        let flags = if new { r.tcp_flags } else { r.tcp_flags & !SYN };
        let is_reply = self.orient(t, (new && tcp).then_some(flags), h.ts_ns, true);
        let mut flow = self.base(h, t, is_reply);
        if tcp && let Some(l4) = flow.l4.as_mut() {
            l4.tcp_flags = u32::from(flags);
        }
        flow.packets = r.packets;
        flow.bytes = r.bytes;
        out.push(flow);
    }

    fn handshake(
        &mut self,
        h: &Header,
        syn: &Tuple,
        syn_ns: u64,
        synack_ns: u64,
        out: &mut Vec<Flow>,
    ) {
        // The event's tuple is the SYN's; the record is the SYN/ACK's.
        self.orient(syn, Some(SYN), h.ts_ns, true);
        let synack = reversed(syn);
        let mut flow = self.base(h, &synack, true);
        flow.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: u32::from(SYN | ACK),
            handshake_ns: synack_ns.saturating_sub(syn_ns),
            ..Layer4::default()
        });
        out.push(flow);
    }

    fn payload(&mut self, h: &Header, t: &Tuple, snippet: &[u8], out: &mut Vec<Flow>) {
        let dns_port = t.sport == DNS_PORT || t.dport == DNS_PORT;
        let parsed = match t.protocol {
            IPPROTO_UDP => parse_dns(snippet).ok().map(Parsed::Dns),
            IPPROTO_TCP if dns_port => parse_dns_tcp(snippet).ok().map(Parsed::Dns),
            IPPROTO_TCP => parse_http(snippet).map(Parsed::Http),
            _ => None,
        };
        match parsed {
            Some(Parsed::Dns(msg)) => self.dns_message(h, t, &msg, out),
            Some(Parsed::Http(line)) => self.http_line(h, t, line, out),
            None => self.stats.undecodable_payloads += 1,
        }
    }

    fn dns_message(&mut self, h: &Header, t: &Tuple, msg: &DnsMessage, out: &mut Vec<Flow>) {
        let is_reply = msg.is_response;
        let key = DnsKey {
            conn: hook_conn(h, t, is_reply),
            id: msg.id,
        };
        let (query, qtype) = msg.question.as_ref().map_or((String::new(), 0), |q| {
            (q.name.clone(), q.qtype.unwrap_or(0))
        });
        let mut dns = Dns {
            query,
            qtype: u32::from(qtype),
            id: u32::from(msg.id),
            ..Dns::default()
        };
        let mut latency_ns = 0;
        let kind = if is_reply {
            match self.dns.remove(&key) {
                Some(q) => latency_ns = h.ts_ns.saturating_sub(q.ts_ns),
                None => self.stats.unmatched_dns_responses += 1,
            }
            dns.rcode = u32::from(msg.rcode);
            dns.ips = msg
                .answers
                .iter()
                .filter_map(|a| a.ip())
                .map(|ip| ip.to_string())
                .collect();
            dns.ttl = msg.min_ttl.unwrap_or(0);
            L7Type::Response
        } else {
            // A retry with the same id keeps the first query's time: the
            // client has been waiting since then.
            if !self.dns.contains(&key) {
                let pending = PendingQuery { ts_ns: h.ts_ns };
                if self.dns.insert(key, pending, h.ts_ns).is_some() {
                    self.stats.evicted_dns_queries += 1;
                }
            }
            L7Type::Request
        };
        let mut flow = self.base(h, t, is_reply);
        flow.l7 = Some(Layer7 {
            r#type: kind as i32,
            latency_ns,
            record: Some(layer7::Record::Dns(dns)),
        });
        out.push(flow);
    }

    fn http_line(&mut self, h: &Header, t: &Tuple, line: HttpLine, out: &mut Vec<Flow>) {
        let (is_reply, kind, http, latency_ns) = match line {
            HttpLine::Request {
                method,
                path,
                version,
                ..
            } => {
                let key = hook_conn(h, t, false);
                let request = PendingRequest {
                    ts_ns: h.ts_ns,
                    method: method.as_str(),
                    url: path.clone(),
                };
                self.enqueue(key, request, h.ts_ns);
                let http = Http {
                    method: method.as_str().to_string(),
                    url: path,
                    code: 0,
                    protocol: version.map_or("", |v| v.as_str()).to_string(),
                };
                (false, L7Type::Request, http, 0)
            }
            HttpLine::Response { version, code, .. } => {
                let key = hook_conn(h, t, true);
                let request = self.answer(&key, code, h.ts_ns);
                if request.is_none() {
                    self.stats.unmatched_http_responses += 1;
                }
                let (method, url, latency) = request
                    .map_or((String::new(), String::new(), 0), |r| {
                        (r.method.to_string(), r.url, h.ts_ns.saturating_sub(r.ts_ns))
                    });
                let http = Http {
                    method,
                    url,
                    code: u32::from(code),
                    protocol: version.as_str().to_string(),
                };
                (true, L7Type::Response, http, latency)
            }
        };
        let mut flow = self.base(h, t, is_reply);
        flow.l7 = Some(Layer7 {
            r#type: kind as i32,
            latency_ns,
            record: Some(layer7::Record::Http(http)),
        });
        out.push(flow);
    }

    fn enqueue(&mut self, key: HookConn, request: PendingRequest, ts_ns: u64) {
        let pipeline = self.limits.http_pipeline.max(1);
        if let Some(queue) = self.http.get_mut(&key, ts_ns) {
            if queue.len() >= pipeline {
                queue.pop_front();
                self.stats.evicted_http_requests += 1;
            }
            queue.push_back(request);
            return;
        }
        if let Some(evicted) = self.http.insert(key, VecDeque::from([request]), ts_ns) {
            self.stats.evicted_http_requests += evicted.len() as u64;
        }
    }

    /// The request a status line answers. A 1xx is interim: the request
    /// stays outstanding for its final status.
    fn answer(&mut self, key: &HookConn, code: u16, ts_ns: u64) -> Option<PendingRequest> {
        let queue = self.http.get_mut(key, ts_ns)?;
        if code < 200 {
            return queue.front().cloned();
        }
        let request = queue.pop_front();
        if queue.is_empty() {
            self.http.remove(key);
        }
        request
    }

    fn drop(&mut self, h: &Header, t: &Tuple, reason: u32, out: &mut Vec<Flow>) {
        if self
            .drop_scope
            .as_ref()
            .is_some_and(|scope| !scope.contains(&h.netns_ino))
        {
            self.stats.foreign_drops += 1;
            return;
        }
        // A drop says nothing about who opened the connection: use what is
        // known, without remembering a guess.
        let is_reply = self.orient(t, None, h.ts_ns, false);
        let mut flow = self.base(h, t, is_reply);
        flow.verdict = Verdict::Dropped as i32;
        flow.drop_reason = self.reasons.name(reason);
        flow.observation_point = ObservationPoint::KernelDrop as i32;
        flow.traffic_direction = TrafficDirection::Unknown as i32;
        flow.packets = 1;
        out.push(flow);
    }

    /// Whether a packet with tuple `t` travels server → client (see the
    /// module doc). `tcp_flags` is the packet's own flags, when known.
    fn orient(&mut self, t: &Tuple, tcp_flags: Option<u8>, ts_ns: u64, learn: bool) -> bool {
        let key = ConnKey::new(t);
        let source = (t.saddr, t.sport);
        let destination = (t.daddr, t.dport);
        let decided = match tcp_flags.map(|f| f & (SYN | ACK)) {
            Some(SYN) => Some(source),
            Some(f) if f == SYN | ACK => Some(destination),
            _ => None,
        };
        if let Some(client) = decided {
            self.remember(key, client, ts_ns);
            return client != source;
        }
        if let Some(client) = self.clients.get_mut(&key, ts_ns) {
            return *client != source;
        }
        let source_is_server = t.sport < WELL_KNOWN_PORTS && t.dport >= WELL_KNOWN_PORTS;
        if learn {
            let client = if source_is_server {
                destination
            } else {
                source
            };
            self.remember(key, client, ts_ns);
        }
        source_is_server
    }

    fn remember(&mut self, key: ConnKey, client: Addr, ts_ns: u64) {
        if let Some(known) = self.clients.get_mut(&key, ts_ns) {
            *known = client;
        } else if self.clients.insert(key, client, ts_ns).is_some() {
            self.stats.evicted_connections += 1;
        }
    }

    /// A forwarded record of a packet with tuple `t`, no counts, no flags.
    fn base(&self, h: &Header, t: &Tuple, is_reply: bool) -> Flow {
        let interface = self.interfaces.get(&(h.netns_ino, h.ifindex));
        let attachment = interface.map_or(Attachment::default(), |i| i.attachment);
        let point = observation_point(attachment, h.direction);
        Flow {
            time_ns: (h.ts_ns as i64).saturating_add(self.boot_to_unix_ns),
            node_name: self.node.clone(),
            verdict: Verdict::Forwarded as i32,
            source: Some(endpoint(t.saddr, t.sport)),
            destination: Some(endpoint(t.daddr, t.dport)),
            l4: Some(Layer4 {
                protocol: protocol(t.protocol) as i32,
                ..Layer4::default()
            }),
            observation_point: point as i32,
            traffic_direction: traffic_direction(point, is_reply) as i32,
            is_reply,
            interface: interface.map(|i| i.name.clone()).unwrap_or_default(),
            ..Flow::default()
        }
    }
}

enum Parsed {
    Dns(DnsMessage),
    Http(HttpLine),
}

fn reversed(t: &Tuple) -> Tuple {
    Tuple {
        saddr: t.daddr,
        daddr: t.saddr,
        sport: t.dport,
        dport: t.sport,
        protocol: t.protocol,
    }
}

/// The connection at this hook, client first. `is_reply`: the packet
/// travels server → client.
fn hook_conn(h: &Header, t: &Tuple, is_reply: bool) -> HookConn {
    let (source, destination) = ((t.saddr, t.sport), (t.daddr, t.dport));
    let (client, server) = if is_reply {
        (destination, source)
    } else {
        (source, destination)
    };
    HookConn {
        hook: (h.netns_ino, h.ifindex),
        client,
        server,
    }
}

fn endpoint(ip: IpAddr, port: u16) -> Endpoint {
    Endpoint {
        ip: ip_to_bytes(ip),
        port: u32::from(port),
        ..Endpoint::default()
    }
}

fn protocol(number: u8) -> Protocol {
    match number {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        IPPROTO_ICMP => Protocol::Icmpv4,
        IPPROTO_ICMPV6 => Protocol::Icmpv6,
        IPPROTO_SCTP => Protocol::Sctp,
        _ => Protocol::Unknown,
    }
}

/// What a TC direction means on an interface (see the module doc).
pub fn observation_point(attachment: Attachment, direction: Direction) -> ObservationPoint {
    use ObservationPoint::{FromEndpoint, FromNetwork, ToEndpoint, ToNetwork};
    match (attachment, direction) {
        (_, Direction::Unknown) => ObservationPoint::Unknown,
        (Attachment::HostVeth, Direction::Ingress) | (Attachment::InPod, Direction::Egress) => {
            FromEndpoint
        }
        (Attachment::HostVeth, Direction::Egress) | (Attachment::InPod, Direction::Ingress) => {
            ToEndpoint
        }
        (Attachment::Uplink, Direction::Ingress) => FromNetwork,
        (Attachment::Uplink, Direction::Egress) => ToNetwork,
    }
}

/// EGRESS at the client's end of a connection, INGRESS at the server's.
pub fn traffic_direction(point: ObservationPoint, is_reply: bool) -> TrafficDirection {
    use ObservationPoint::{FromEndpoint, FromNetwork, ToEndpoint, ToNetwork};
    // Leaving the local side (pod or node) or arriving at it.
    let leaving = match point {
        FromEndpoint | ToNetwork => true,
        ToEndpoint | FromNetwork => false,
        _ => return TrafficDirection::Unknown,
    };
    if leaving != is_reply {
        TrafficDirection::Egress
    } else {
        TrafficDirection::Ingress
    }
}

/// A map with a capacity that forgets its least recently touched entry when
/// full, and entries not touched since a cutoff on [`Bounded::expire`].
#[derive(Debug)]
struct Bounded<K, V> {
    capacity: usize,
    next_seq: u64,
    entries: HashMap<K, Slot<V>>,
    /// Touch order: sequence number → key.
    order: BTreeMap<u64, K>,
}

#[derive(Debug)]
struct Slot<V> {
    seq: u64,
    touched_ns: u64,
    value: V,
}

impl<K: Hash + Eq + Copy, V> Bounded<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_seq: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn get_mut(&mut self, key: &K, now_ns: u64) -> Option<&mut V> {
        let slot = self.entries.get_mut(key)?;
        self.order.remove(&slot.seq);
        slot.seq = self.next_seq;
        slot.touched_ns = slot.touched_ns.max(now_ns);
        self.order.insert(self.next_seq, *key);
        self.next_seq += 1;
        Some(&mut slot.value)
    }

    /// Inserts a new key (replacing an existing one's value). Returns the
    /// value it had to forget to make room.
    fn insert(&mut self, key: K, value: V, now_ns: u64) -> Option<V> {
        let replaced = self.remove(&key);
        let evicted = if replaced.is_none() && self.entries.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key);
        self.entries.insert(
            key,
            Slot {
                seq,
                touched_ns: now_ns,
                value,
            },
        );
        evicted
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.seq);
        Some(slot.value)
    }

    fn pop_oldest(&mut self) -> Option<V> {
        let (_, key) = self.order.pop_first()?;
        self.entries.remove(&key).map(|slot| slot.value)
    }

    /// Removes the entries last touched before `cutoff_ns`, oldest first.
    /// Timestamps from several CPUs are nearly but not exactly in order; an
    /// entry behind a newer one goes on a later call.
    fn expire(&mut self, cutoff_ns: u64) -> Vec<V> {
        let mut gone = Vec::new();
        while let Some((_, key)) = self.order.first_key_value() {
            let stale = self
                .entries
                .get(key)
                .is_none_or(|slot| slot.touched_ns < cutoff_ns);
            if !stale {
                break;
            }
            if let Some(value) = self.pop_oldest() {
                gone.push(value);
            }
        }
        gone
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn tuple(sport: u16, dport: u16, protocol: u8) -> Tuple {
        Tuple {
            saddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            daddr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            sport,
            dport,
            protocol,
        }
    }

    fn assembler() -> Assembler {
        Assembler::new("node-a", DropReasons::default(), 0, Limits::default())
    }

    #[test]
    fn hooks_map_to_observation_points() {
        use Direction::{Egress, Ingress, Unknown};
        use ObservationPoint as P;
        let cases = [
            (Attachment::HostVeth, Ingress, P::FromEndpoint),
            (Attachment::HostVeth, Egress, P::ToEndpoint),
            (Attachment::InPod, Egress, P::FromEndpoint),
            (Attachment::InPod, Ingress, P::ToEndpoint),
            (Attachment::Uplink, Ingress, P::FromNetwork),
            (Attachment::Uplink, Egress, P::ToNetwork),
            (Attachment::HostVeth, Unknown, P::Unknown),
        ];
        for (attachment, direction, want) in cases {
            assert_eq!(
                observation_point(attachment, direction),
                want,
                "{attachment:?} {direction:?}"
            );
        }
    }

    #[test]
    fn traffic_direction_is_the_connection_owners() {
        use ObservationPoint as P;
        use TrafficDirection::{Egress, Ingress, Unknown};
        // Client's end: its request leaves, the reply enters.
        assert_eq!(traffic_direction(P::FromEndpoint, false), Egress);
        assert_eq!(traffic_direction(P::ToEndpoint, true), Egress);
        // Server's end.
        assert_eq!(traffic_direction(P::ToEndpoint, false), Ingress);
        assert_eq!(traffic_direction(P::FromEndpoint, true), Ingress);
        assert_eq!(traffic_direction(P::FromNetwork, false), Ingress);
        assert_eq!(traffic_direction(P::ToNetwork, false), Egress);
        assert_eq!(traffic_direction(P::KernelDrop, false), Unknown);
    }

    #[test]
    fn syn_decides_the_client_then_is_remembered() {
        let mut a = assembler();
        // A SYN from a high port to a high port: the SYN's sender is the client.
        let syn = tuple(40_000, 50_051, IPPROTO_TCP);
        assert!(!a.orient(&syn, Some(SYN), 1, true));
        let back = reversed(&syn);
        assert!(a.orient(&back, None, 2, true));
        assert!(!a.orient(&syn, None, 3, true));
        // A SYN/ACK seen first names its destination the client.
        let synack = tuple(8080, 41_000, IPPROTO_TCP);
        assert!(a.orient(&synack, Some(SYN | ACK), 4, true));
        assert!(!a.orient(&reversed(&synack), None, 5, true));
    }

    #[test]
    fn without_syn_well_known_port_then_first_sender() {
        let mut a = assembler();
        // Mid-stream, the side on port 443 is the server.
        assert!(a.orient(&tuple(443, 50_000, IPPROTO_TCP), None, 1, true));
        // UDP between two high ports: the first sender is the client.
        let first = tuple(40_000, 5_353, IPPROTO_UDP);
        assert!(!a.orient(&reversed(&first), None, 2, true));
        assert!(a.orient(&first, None, 3, true));
        // Drops do not remember their guess.
        let unseen = tuple(2_000, 3_000, IPPROTO_UDP);
        assert!(!a.orient(&reversed(&unseen), None, 4, false));
        assert_eq!(a.clients.len(), 2);
    }

    #[test]
    fn bounded_evicts_least_recently_touched_and_expires() {
        let mut b: Bounded<u32, &str> = Bounded::new(2);
        assert_eq!(b.insert(1, "one", 10), None);
        assert_eq!(b.insert(2, "two", 20), None);
        // Touching 1 makes 2 the oldest.
        assert!(b.get_mut(&1, 30).is_some());
        assert_eq!(b.insert(3, "three", 40), Some("two"));
        assert_eq!(b.insert(3, "three again", 45), None);
        assert_eq!(b.len(), 2);
        assert_eq!(b.expire(41), vec!["one"]);
        assert_eq!(b.remove(&3), Some("three again"));
        assert_eq!(b.len(), 0);
        assert!(b.expire(u64::MAX).is_empty());
    }
}
