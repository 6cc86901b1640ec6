//! Kernel events, built by hand, through the assembler: the flow records it
//! makes, what it counts as lost, and what the relay's engine counts from
//! those records.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use skymap_node_probe::assemble::{Assembler, Attachment, Interface, Limits};
use skymap_node_probe::event::{Direction, Event, EventBody, FlowRecord, Header, Tuple};
use skymap_node_probe::reasons::DropReasons;
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{
    Dns, Flow, GraphEdge, GraphUpdate, Http, L7Type, ObservationPoint, Protocol, TrafficDirection,
    Verdict, Zoom,
};
use skymap_relay::engine::aggregate_flows;
use skymap_relay::metadata::Metadata;

mod records;
use records::dns;

const BOOT: i64 = 1_795_672_800_000_000_000;
const CLIENT: [u8; 4] = [10, 244, 1, 5];
const SERVER: [u8; 4] = [10, 244, 2, 7];
const RESOLVER: [u8; 4] = [10, 96, 0, 10];
/// The client pod's veth, host side.
const VETH: u32 = 3;
const TCP: u8 = 6;
const UDP: u8 = 17;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const FORMAT: &str = r#"print fmt: "reason: %s", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 12, "NETFILTER_DROP" })"#;

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, protocol: u8) -> Tuple {
    Tuple {
        saddr: ip(src),
        daddr: ip(dst),
        sport,
        dport,
        protocol,
    }
}

fn back(t: Tuple) -> Tuple {
    Tuple {
        saddr: t.daddr,
        daddr: t.saddr,
        sport: t.dport,
        dport: t.sport,
        protocol: t.protocol,
    }
}

fn header(direction: Direction, ifindex: u32, ts_ns: u64) -> Header {
    Header {
        direction,
        ifindex,
        ts_ns,
        netns_ino: 4_026_531_840,
        cpu: 0,
    }
}

/// At the client's veth, the client's packets are ingress.
fn out(ts: u64) -> Header {
    header(Direction::Ingress, VETH, ts)
}

fn inn(ts: u64) -> Header {
    header(Direction::Egress, VETH, ts)
}

fn record(t: Tuple, packets: u64, bytes: u64, tcp_flags: u8) -> FlowRecord {
    FlowRecord {
        tuple: t,
        packets,
        bytes,
        tcp_flags,
        first_ns: 0,
    }
}

fn new(h: Header, t: Tuple, flags: u8) -> Event {
    Event {
        header: h,
        body: EventBody::FlowNew(record(t, 1, 74, flags)),
    }
}

fn close(h: Header, t: Tuple, packets: u64, flags: u8) -> Event {
    Event {
        header: h,
        body: EventBody::FlowClose(record(t, packets, packets * 100, flags)),
    }
}

fn handshake(h: Header, syn: Tuple, syn_ns: u64) -> Event {
    Event {
        header: h,
        body: EventBody::Handshake {
            tuple: syn,
            syn_ns,
            synack_ns: h.ts_ns,
        },
    }
}

fn payload(h: Header, t: Tuple, bytes: &[u8]) -> Event {
    Event {
        header: h,
        body: EventBody::Payload {
            tuple: t,
            snippet: bytes.to_vec(),
            payload_len: bytes.len() as u16,
        },
    }
}

fn drop(h: Header, t: Tuple, reason: u32) -> Event {
    Event {
        header: h,
        body: EventBody::Drop {
            tuple: t,
            reason,
            location: 0xffff_ffff_8100_0000,
        },
    }
}

fn assembler() -> Assembler {
    let reasons = DropReasons::from_tracefs_format(FORMAT).expect("format parses");
    let mut a = Assembler::new("node-1", reasons, BOOT, Limits::default());
    let veth = Interface {
        name: "veth1a2b".into(),
        attachment: Attachment::HostVeth,
    };
    a.set_interface(4_026_531_840, VETH, veth);
    a
}

fn run(a: &mut Assembler, events: &[Event]) -> Vec<Flow> {
    events.iter().flat_map(|e| a.push(e)).collect()
}

fn flags(f: &Flow) -> u32 {
    f.l4.map_or(0, |l4| l4.tcp_flags)
}

fn l7(f: &Flow) -> (i32, u64, Option<&Record>) {
    let l7 = f.l7.as_ref().expect("an L7 record");
    (l7.r#type, l7.latency_ns, l7.record.as_ref())
}

fn http_of(f: &Flow) -> &Http {
    match l7(f).2 {
        Some(Record::Http(http)) => http,
        other => panic!("not HTTP: {other:?}"),
    }
}

fn dns_of(f: &Flow) -> &Dns {
    match l7(f).2 {
        Some(Record::Dns(dns)) => dns,
        other => panic!("not DNS: {other:?}"),
    }
}

fn connect(sport: u16, t0: u64) -> (Tuple, Vec<Event>) {
    let syn = tuple(CLIENT, sport, SERVER, 8080, TCP);
    let events = vec![
        new(out(t0), syn, SYN),
        new(inn(t0 + 250_000), back(syn), SYN | ACK),
        handshake(inn(t0 + 250_000), syn, t0),
    ];
    (syn, events)
}

#[test]
fn tcp_connect_makes_client_side_records() {
    let mut a = assembler();
    let (syn, mut events) = connect(40_000, 1_000);
    events.push(close(out(9_000_000), syn, 5, SYN | ACK | PSH | FIN));
    events.push(close(inn(9_100_000), back(syn), 4, SYN | ACK | PSH | FIN));
    let flows = run(&mut a, &events);
    assert_eq!(flows.len(), 5);

    let first = &flows[0];
    assert_eq!(first.time_ns, BOOT + 1_000);
    assert_eq!(first.node_name, "node-1");
    assert_eq!(first.interface, "veth1a2b");
    assert_eq!(first.verdict, Verdict::Forwarded as i32);
    assert_eq!(
        first.source.as_ref().map(|e| (e.ip.to_vec(), e.port)),
        Some((CLIENT.to_vec(), 40_000))
    );
    assert_eq!(first.destination.as_ref().map(|e| e.port), Some(8080));
    assert_eq!(first.l4.map(|l4| l4.protocol), Some(Protocol::Tcp as i32));
    assert_eq!(flags(first), u32::from(SYN));
    assert!(!first.is_reply);
    assert_eq!(
        first.observation_point,
        ObservationPoint::FromEndpoint as i32
    );
    assert_eq!(first.traffic_direction, TrafficDirection::Egress as i32);
    assert_eq!((first.packets, first.bytes), (1, 74));

    // SYN/ACK flow, then the handshake record that carries the latency.
    for f in &flows[1..3] {
        assert!(f.is_reply);
        assert_eq!(flags(f), u32::from(SYN | ACK));
        assert_eq!(f.observation_point, ObservationPoint::ToEndpoint as i32);
        assert_eq!(f.traffic_direction, TrafficDirection::Egress as i32);
        assert_eq!(f.source.as_ref().map(|e| e.port), Some(8080));
    }
    assert_eq!(flows[1].l4.map(|l4| l4.handshake_ns), Some(0));
    assert_eq!(flows[2].l4.map(|l4| l4.handshake_ns), Some(250_000));
    assert_eq!((flows[2].packets, flows[2].bytes), (0, 0));

    // Closes: SYN already reported, so not repeated.
    assert!(!flows[3].is_reply);
    assert_eq!(flags(&flows[3]), u32::from(ACK | PSH | FIN));
    assert_eq!((flows[3].packets, flows[3].bytes), (5, 500));
    assert!(flows[4].is_reply);
    assert_eq!(flags(&flows[4]), u32::from(ACK | PSH | FIN));

    let total: u64 = flows.iter().map(|f| f.packets).sum();
    assert_eq!(total, 11);
    assert_eq!(a.stats().flows, 5);
}

#[test]
fn server_side_hook_sees_the_same_connection_as_ingress() {
    let mut a = assembler();
    // The server pod's veth: the SYN leaves the host towards the pod.
    let syn = tuple(CLIENT, 40_000, SERVER, 8080, TCP);
    let flows = run(
        &mut a,
        &[
            new(header(Direction::Egress, 9, 10), syn, SYN),
            new(header(Direction::Ingress, 9, 20), back(syn), SYN | ACK),
        ],
    );
    assert_eq!(
        flows[0].observation_point,
        ObservationPoint::ToEndpoint as i32
    );
    assert!(!flows[0].is_reply);
    assert_eq!(
        flows[1].observation_point,
        ObservationPoint::FromEndpoint as i32
    );
    assert!(flows[1].is_reply);
    for f in &flows {
        assert_eq!(f.traffic_direction, TrafficDirection::Ingress as i32);
        assert_eq!(f.interface, "");
    }
}

#[test]
fn refused_connect_is_one_rst_reply() {
    let mut a = assembler();
    let syn = tuple(CLIENT, 40_001, SERVER, 9999, TCP);
    let flows = run(
        &mut a,
        &[
            new(out(10), syn, SYN),
            new(inn(30), back(syn), RST | ACK),
            // The kernel closes the RST's flow and the SYN's, with nothing new.
            close(inn(30), back(syn), 0, RST | ACK),
            close(inn(30), syn, 0, SYN),
        ],
    );
    assert_eq!(flows.len(), 2);
    assert!(flows[1].is_reply);
    assert_eq!(flags(&flows[1]), u32::from(RST | ACK));
    assert_eq!(a.stats().empty_flow_events, 2);
}

#[test]
fn http_pipelined_requests_pair_in_order() {
    let mut a = assembler();
    let t = tuple(CLIENT, 40_000, SERVER, 8080, TCP);
    let flows = run(
        &mut a,
        &[
            payload(out(1_000), t, b"GET /cart HTTP/1.1\r\nHost: cart\r\n"),
            payload(out(2_000), t, b"POST /cart/items?id=7 HTTP/1.1\r\n"),
            payload(inn(3_500), back(t), b"HTTP/1.1 100 Continue\r\n"),
            payload(inn(4_000), back(t), b"HTTP/1.1 200 OK\r\n"),
            payload(inn(9_000), back(t), b"HTTP/1.1 503 Service Unavailable\r\n"),
            payload(inn(9_500), back(t), b"HTTP/1.1 200 OK\r\n"),
            payload(
                out(9_600),
                t,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            ),
        ],
    );
    assert_eq!(flows.len(), 6);
    let (kind, latency, _) = l7(&flows[0]);
    assert_eq!((kind, latency), (L7Type::Request as i32, 0));
    assert_eq!(
        http_of(&flows[0]),
        &Http {
            method: "GET".into(),
            url: "/cart".into(),
            code: 0,
            protocol: "HTTP/1.1".into(),
        }
    );
    assert!(!flows[0].is_reply);
    assert_eq!(http_of(&flows[1]).url, "/cart/items?id=7");

    // 100 Continue answers the oldest request without completing it.
    assert_eq!(l7(&flows[2]).1, 2_500);
    assert_eq!(http_of(&flows[2]).code, 100);
    let ok = &flows[3];
    assert!(ok.is_reply);
    assert_eq!(l7(ok).0, L7Type::Response as i32);
    assert_eq!(l7(ok).1, 3_000);
    assert_eq!(
        (
            http_of(ok).method.as_str(),
            http_of(ok).url.as_str(),
            http_of(ok).code
        ),
        ("GET", "/cart", 200)
    );
    let unavailable = &flows[4];
    assert_eq!(l7(unavailable).1, 7_000);
    assert_eq!(
        (
            http_of(unavailable).method.as_str(),
            http_of(unavailable).code
        ),
        ("POST", 503)
    );
    // Nothing left to answer.
    assert_eq!(l7(&flows[5]).1, 0);
    assert_eq!(http_of(&flows[5]).url, "");
    assert_eq!(a.stats().unmatched_http_responses, 1);
    assert_eq!(a.stats().undecodable_payloads, 1);
    assert!(flows.iter().all(|f| f.packets == 0 && f.bytes == 0));
}

#[test]
fn dns_queries_pair_by_id_per_hook() {
    let mut a = assembler();
    let q = tuple(CLIENT, 5_353, RESOLVER, 53, UDP);
    let name = "cart.shop.svc.cluster.local";
    let other = "example.com";
    // The resolver's veth on the same node sees the same packets.
    let at_resolver = |d, ts| header(d, 11, ts);
    let flows = run(
        &mut a,
        &[
            payload(out(1_000), q, &dns(0x1234, false, 0, name, &[])),
            payload(
                at_resolver(Direction::Egress, 1_100),
                q,
                &dns(0x1234, false, 0, name, &[]),
            ),
            payload(
                at_resolver(Direction::Ingress, 1_400),
                back(q),
                &dns(0x1234, true, 3, name, &[]),
            ),
            payload(inn(1_500), back(q), &dns(0x1234, true, 3, name, &[])),
            payload(out(2_000), q, &dns(0x2222, false, 0, other, &[])),
            payload(
                inn(2_700),
                back(q),
                &dns(
                    0x2222,
                    true,
                    0,
                    other,
                    &[([93, 184, 216, 34], 30), ([93, 184, 216, 35], 20)],
                ),
            ),
            // Wrong id, then a duplicate of an answered response.
            payload(inn(2_800), back(q), &dns(0x9999, true, 0, other, &[])),
            payload(
                inn(2_900),
                back(q),
                &dns(0x2222, true, 0, other, &[([93, 184, 216, 34], 30)]),
            ),
            payload(out(3_000), q, b"\x00\x01"),
        ],
    );
    assert_eq!(flows.len(), 8);
    let query = &flows[0];
    assert!(!query.is_reply);
    assert_eq!(l7(query).0, L7Type::Request as i32);
    assert_eq!(
        dns_of(query),
        &Dns {
            query: name.into(),
            qtype: 1,
            id: 0x1234,
            ..Dns::default()
        }
    );
    // Each hook pairs its own view.
    assert_eq!(
        flows[1].observation_point,
        ObservationPoint::ToEndpoint as i32
    );
    assert_eq!(l7(&flows[2]).1, 300);
    let nx = &flows[3];
    assert!(nx.is_reply);
    assert_eq!((l7(nx).0, l7(nx).1), (L7Type::Response as i32, 500));
    assert_eq!(dns_of(nx).rcode, 3);
    assert_eq!(nx.l4.map(|l4| l4.protocol), Some(Protocol::Udp as i32));

    let answer = &flows[5];
    assert_eq!(l7(answer).1, 700);
    assert_eq!(
        dns_of(answer),
        &Dns {
            query: other.into(),
            qtype: 1,
            rcode: 0,
            ips: vec!["93.184.216.34".into(), "93.184.216.35".into()],
            id: 0x2222,
            ttl: 20,
        }
    );
    assert_eq!((l7(&flows[6]).1, dns_of(&flows[6]).id), (0, 0x9999));
    assert_eq!(l7(&flows[7]).1, 0);
    assert_eq!(a.stats().unmatched_dns_responses, 2);
    assert_eq!(a.stats().undecodable_payloads, 1);
}

#[test]
fn drop_names_the_kernel_reason() {
    let mut a = assembler();
    let t = tuple(CLIENT, 40_002, SERVER, 8080, TCP);
    let other = tuple(CLIENT, 40_003, SERVER, 8080, TCP);
    let flows = run(
        &mut a,
        &[
            drop(header(Direction::Unknown, 0, 5_000), t, 12),
            new(out(5_500), other, SYN),
            drop(header(Direction::Unknown, 0, 6_000), back(other), 77),
        ],
    );
    assert_eq!(flows.len(), 3);
    let f = &flows[0];
    assert_eq!(f.verdict, Verdict::Dropped as i32);
    assert_eq!(f.drop_reason, "NETFILTER_DROP");
    assert_eq!(f.observation_point, ObservationPoint::KernelDrop as i32);
    assert_eq!((f.packets, f.time_ns), (1, BOOT + 5_000));
    assert!(!f.is_reply);
    // A connection whose SYN was seen: a drop of the server's packet is a reply.
    let reply = &flows[2];
    assert!(reply.is_reply);
    assert_eq!(reply.drop_reason, "REASON_77");
    assert_eq!(reply.source.as_ref().map(|e| e.port), Some(8080));
}

#[test]
fn tables_are_bounded_and_expire_counted() {
    let limits = Limits {
        connections: 2,
        dns_queries: 2,
        http_pipeline: 2,
        ..Limits::default()
    };
    let mut a = Assembler::new("node-1", DropReasons::default(), 0, limits);
    let q = tuple(CLIENT, 5_353, RESOLVER, 53, UDP);
    let mut events: Vec<Event> = (1..=3u16)
        .map(|id| payload(out(u64::from(id)), q, &dns(id, false, 0, "a.b", &[])))
        .collect();
    // Query 1 was evicted: its response is unmatched; 3 pairs.
    events.push(payload(inn(10), back(q), &dns(1, true, 0, "a.b", &[])));
    events.push(payload(inn(11), back(q), &dns(3, true, 0, "a.b", &[])));
    let t = tuple(CLIENT, 40_000, SERVER, 80, TCP);
    for ts in 20..23 {
        events.push(payload(out(ts), t, b"GET / HTTP/1.1\r\n"));
    }
    events.push(payload(inn(30), back(t), b"HTTP/1.1 204 No Content\r\n"));
    // Three connections through a table of two.
    for sport in 41_000..41_003 {
        events.push(new(out(40), tuple(CLIENT, sport, SERVER, 80, TCP), SYN));
    }
    let flows = run(&mut a, &events);
    assert_eq!(flows.len(), 12);
    // Query 3 left at 3, its response came at 11.
    assert_eq!(l7(&flows[4]).1, 8);
    // The first request was evicted: the 204 answers the second (ts 21).
    assert_eq!(l7(&flows[8]).1, 9);
    let s = *a.stats();
    assert_eq!(s.evicted_dns_queries, 1);
    assert_eq!(s.unmatched_dns_responses, 1);
    assert_eq!(s.evicted_http_requests, 1);
    assert_eq!(s.evicted_connections, 1);

    // Query 2 and the last request never get answers.
    a.expire(29_000_000_000);
    assert_eq!(
        (
            a.stats().expired_dns_queries,
            a.stats().expired_http_requests
        ),
        (0, 0)
    );
    a.expire(31_000_000_000);
    assert_eq!(a.stats().expired_dns_queries, 1);
    a.expire(301_000_000_000);
    assert_eq!(a.stats().expired_http_requests, 1);
    // An expired query's response is unmatched.
    let late = a.push(&payload(
        inn(301_000_000_001),
        back(q),
        &dns(2, true, 0, "a.b", &[]),
    ));
    assert_eq!(l7(&late[0]).1, 0);

    let losses: Vec<(String, u64)> = a
        .stats()
        .loss_counters()
        .into_iter()
        .map(|l| (l.stage, l.count))
        .collect();
    assert_eq!(
        losses,
        vec![
            ("assemble-undecodable".to_string(), 0),
            ("assemble-unmatched".to_string(), 2),
            ("assemble-evicted".to_string(), 3),
        ]
    );
}

fn edge(graph: &GraphUpdate, port: u32, protocol: Protocol) -> &GraphEdge {
    let found: Vec<&GraphEdge> = graph
        .edges
        .iter()
        .filter(|e| e.port == port && e.protocol == protocol as i32)
        .collect();
    match found.as_slice() {
        [edge] => edge,
        _ => panic!(
            "want one edge to {port}/{protocol:?}, have {:?}",
            graph.edges.iter().map(|e| &e.id).collect::<Vec<_>>()
        ),
    }
}

/// What the probe on the client's node would report for one connect with
/// two requests, two lookups, a refused connect and a policy drop, fed to
/// the relay's engine.
#[test]
fn relay_counts_what_the_assembler_makes() {
    let mut a = assembler();
    let (syn, mut events) = connect(40_000, 1_000_000);
    let t = syn;
    events.extend([
        payload(out(2_000_000), t, b"GET /cart HTTP/1.1\r\n"),
        payload(inn(5_000_000), back(t), b"HTTP/1.1 200 OK\r\n"),
        payload(out(6_000_000), t, b"DELETE /cart/1 HTTP/1.1\r\n"),
        payload(inn(8_000_000), back(t), b"HTTP/1.1 404 Not Found\r\n"),
        close(out(9_000_000), t, 6, SYN | ACK | PSH | FIN),
        close(inn(9_100_000), back(t), 5, SYN | ACK | PSH | FIN),
    ]);
    let q = tuple(CLIENT, 5_353, RESOLVER, 53, UDP);
    events.extend([
        new(out(10_000_000), q, 0),
        payload(
            out(10_000_000),
            q,
            &dns(7, false, 0, "cart.default.svc.cluster.local", &[]),
        ),
        new(inn(10_400_000), back(q), 0),
        payload(
            inn(10_400_000),
            back(q),
            &dns(7, true, 3, "cart.default.svc.cluster.local", &[]),
        ),
        payload(out(10_500_000), q, &dns(8, false, 0, "cart", &[])),
        payload(
            inn(10_800_000),
            back(q),
            &dns(8, true, 0, "cart", &[([10, 96, 0, 20], 30)]),
        ),
    ]);
    let refused = tuple(CLIENT, 40_001, SERVER, 9090, TCP);
    events.extend([
        new(out(11_000_000), refused, SYN),
        new(inn(11_100_000), back(refused), RST | ACK),
        close(inn(11_100_000), back(refused), 0, RST | ACK),
        close(inn(11_100_000), refused, 0, SYN),
    ]);
    let blocked = tuple(CLIENT, 40_002, SERVER, 5432, TCP);
    events.push(drop(header(Direction::Unknown, 0, 12_000_000), blocked, 12));

    let flows = run(&mut a, &events);
    let engine = aggregate_flows(flows, Arc::new(Metadata::empty()));
    let graph = engine.graph_snapshot(Zoom::Workload, &[]);

    let web = edge(&graph, 8080, Protocol::Tcp);
    assert_eq!(web.connections, 1);
    assert_eq!(web.requests, 2);
    assert_eq!(web.http.map(|h| (h.success, h.client_error)), Some((1, 1)));
    assert_eq!(
        web.latency.map(|l| (l.count, l.min_ns, l.max_ns)),
        Some((2, 2_000_000, 3_000_000))
    );
    assert_eq!(
        web.connect_latency.map(|l| (l.count, l.min_ns)),
        Some((1, 250_000))
    );
    assert_eq!((web.packets, web.refused), (13, 0));

    let lookups = edge(&graph, 53, Protocol::Udp);
    assert_eq!(lookups.dns_queries, 2);
    let rcodes: Vec<(u32, u64)> = lookups
        .dns_rcodes
        .iter()
        .map(|r| (r.rcode, r.count))
        .collect();
    assert_eq!(rcodes, vec![(0, 1), (3, 1)]);
    assert_eq!(
        lookups.latency.map(|l| (l.count, l.min_ns)),
        Some((2, 300_000))
    );

    let closed = edge(&graph, 9090, Protocol::Tcp);
    assert_eq!((closed.connections, closed.refused), (1, 1));

    let dropped = edge(&graph, 5432, Protocol::Tcp);
    let drops: Vec<(&str, u64, u64)> = dropped
        .drops
        .iter()
        .map(|d| (d.reason.as_str(), d.packets, d.flows))
        .collect();
    assert_eq!(drops, vec![("NETFILTER_DROP", 1, 1)]);
    assert_eq!(dropped.connections, 0);
    assert_eq!(graph.edges.len(), 4);
}
