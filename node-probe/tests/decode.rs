//! Records built byte by byte as the kernel writes them (offsets from
//! `bpf/events.h`, not from the Rust mirrors), decoded, and their payload
//! snippets parsed; plus truncated and random records, which must give
//! errors and never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use skymap_node_probe::dns::{DnsAnswer, DnsError, DnsQuestion, parse_dns, parse_dns_tcp};
use skymap_node_probe::event::{
    DecodeError, Direction, EventBody, FlowRecord, Header, Tuple, decode,
};
use skymap_node_probe::http::{HttpLine, HttpVersion, Method, parse_http};

mod records;
use records::{
    EV_DROP, EV_FLOW_CLOSE, EV_FLOW_FLUSH, EV_FLOW_NEW, EV_PAYLOAD, EV_TCP_HANDSHAKE, KINDS,
    Record, mapped,
};

fn v4_tuple() -> Tuple {
    Tuple {
        saddr: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 5)),
        daddr: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
        sport: 51000,
        dport: 53,
        protocol: 17,
    }
}

fn flow_record(kind: u8) -> Vec<u8> {
    let mut r = Record::new(kind, 96);
    r.tuple(
        mapped([10, 244, 1, 5]),
        mapped([10, 96, 0, 10]),
        51000,
        53,
        17,
    );
    r.put(64, &5u64.to_le_bytes()); // packets
    r.put(72, &1234u64.to_le_bytes()); // bytes
    r.put(80, &[0x1b]); // FIN SYN PSH ACK
    r.put(88, &99_000u64.to_le_bytes()); // first_ns
    r.0
}

fn handshake_record() -> Vec<u8> {
    let mut r = Record::new(EV_TCP_HANDSHAKE, 80);
    let client: Ipv6Addr = "fd00::1".parse().expect("literal");
    let server: Ipv6Addr = "fd00::2".parse().expect("literal");
    r.tuple(client.octets(), server.octets(), 40000, 8080, 6);
    r.put(64, &1_000u64.to_le_bytes());
    r.put(72, &251_000u64.to_le_bytes());
    r.0
}

fn drop_record() -> Vec<u8> {
    let mut r = Record::new(EV_DROP, 80);
    r.put(1, &[2]); // DIR_UNKNOWN
    r.tuple(mapped([192, 168, 0, 1]), mapped([192, 168, 0, 2]), 1, 2, 6);
    r.put(64, &6u32.to_le_bytes()); // reason
    r.put(72, &0xffff_ffff_8123_4567u64.to_le_bytes());
    r.0
}

fn payload_record(snippet: &[u8], payload_len: u16) -> Vec<u8> {
    let mut r = Record::new(EV_PAYLOAD, 200);
    r.tuple(
        mapped([10, 244, 1, 5]),
        mapped([10, 96, 0, 10]),
        51000,
        53,
        17,
    );
    let len = snippet.len().min(128);
    r.put(64, &(len as u16).to_le_bytes());
    r.put(66, &payload_len.to_le_bytes());
    r.put(72, &snippet[..len]);
    r.0
}

fn expected_header(direction: Direction) -> Header {
    Header {
        direction,
        ifindex: 7,
        ts_ns: 123_456_789,
        netns_ino: 4_026_532_000,
        cpu: 3,
    }
}

#[test]
fn flow_events_of_each_kind() {
    let flow = FlowRecord {
        tuple: v4_tuple(),
        packets: 5,
        bytes: 1234,
        tcp_flags: 0x1b,
        first_ns: 99_000,
    };
    for (kind, body) in [
        (EV_FLOW_NEW, EventBody::FlowNew(flow)),
        (EV_FLOW_CLOSE, EventBody::FlowClose(flow)),
        (EV_FLOW_FLUSH, EventBody::FlowFlush(flow)),
    ] {
        let event = decode(&flow_record(kind)).expect("valid flow record");
        assert_eq!(event.header, expected_header(Direction::Egress));
        assert_eq!(event.body, body);
    }
}

#[test]
fn handshake_with_ipv6_tuple() {
    let event = decode(&handshake_record()).expect("valid handshake");
    assert_eq!(
        event.body,
        EventBody::Handshake {
            tuple: Tuple {
                saddr: "fd00::1".parse().expect("literal"),
                daddr: "fd00::2".parse().expect("literal"),
                sport: 40000,
                dport: 8080,
                protocol: 6,
            },
            syn_ns: 1_000,
            synack_ns: 251_000,
        }
    );
}

#[test]
fn drop_with_reason_and_location() {
    let event = decode(&drop_record()).expect("valid drop");
    assert_eq!(event.header, expected_header(Direction::Unknown));
    let EventBody::Drop {
        tuple,
        reason,
        location,
    } = event.body
    else {
        panic!("not a drop: {:?}", event.body);
    };
    assert_eq!(tuple.saddr, IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)));
    assert_eq!(reason, 6);
    assert_eq!(location, 0xffff_ffff_8123_4567);
}

#[test]
fn payload_keeps_only_the_valid_snippet_bytes() {
    let event = decode(&payload_record(b"GET / HTTP/1.1\r\n", 300)).expect("valid payload");
    assert_eq!(
        event.body,
        EventBody::Payload {
            tuple: v4_tuple(),
            snippet: b"GET / HTTP/1.1\r\n".to_vec(),
            payload_len: 300,
        }
    );
    let full = decode(&payload_record(&[0xab; 128], 1400)).expect("full snippet");
    let EventBody::Payload { snippet, .. } = full.body else {
        panic!("not a payload");
    };
    assert_eq!(snippet, vec![0xab; 128]);
}

#[test]
fn payload_length_fields_are_checked() {
    let mut record = payload_record(b"x", 1);
    record[64..66].copy_from_slice(&129u16.to_le_bytes());
    record[66..68].copy_from_slice(&500u16.to_le_bytes());
    assert_eq!(
        decode(&record),
        Err(DecodeError::SnippetTooLong { len: 129 })
    );
    record[64..66].copy_from_slice(&20u16.to_le_bytes());
    record[66..68].copy_from_slice(&10u16.to_le_bytes());
    assert_eq!(
        decode(&record),
        Err(DecodeError::SnippetBeyondPayload {
            len: 20,
            payload_len: 10
        })
    );
}

#[test]
fn every_truncation_of_every_kind_is_an_error() {
    let records = [
        flow_record(EV_FLOW_NEW),
        handshake_record(),
        flow_record(EV_FLOW_CLOSE),
        flow_record(EV_FLOW_FLUSH),
        payload_record(b"abc", 3),
        drop_record(),
    ];
    for (record, (kind, full_len)) in records.iter().zip(KINDS) {
        assert_eq!(record.len(), full_len);
        assert_eq!(record[0], kind);
        assert!(decode(record).is_ok(), "kind {kind} at full length");
        for len in 0..full_len {
            let err = decode(&record[..len]).expect_err("truncated record");
            if len < 24 {
                assert_eq!(err, DecodeError::NoHeader { got: len, need: 24 });
            } else {
                assert!(
                    matches!(err, DecodeError::Length { got, expected, .. }
                        if got == len && expected == full_len),
                    "kind {kind} len {len}: {err}"
                );
            }
        }
        let mut longer = record.clone();
        longer.extend_from_slice(&[0; 8]);
        assert!(decode(&longer).is_err(), "kind {kind} with 8 extra bytes");
    }
}

/// xorshift64: a reproducible stream of garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_records_never_panic() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut decoded = 0;
    for _ in 0..5_000 {
        let len = (rng.next() % 260) as usize;
        if decode(&rng.bytes(len)).is_ok() {
            decoded += 1;
        }
    }
    // A random buffer must hit kind 1..=6, version 1, direction 0..=2 and
    // the exact length: this seed never does.
    assert_eq!(decoded, 0);

    // With a valid header and length, the body is parsed; fixed-size kinds
    // must then always decode, whatever the body bytes.
    let mut payload_ok = 0;
    for i in 0..6_000 {
        let (kind, len) = KINDS[i % KINDS.len()];
        let mut record = rng.bytes(len);
        record[0] = kind;
        record[1] = (rng.next() % 3) as u8;
        record[2] = 1;
        if kind == EV_PAYLOAD {
            // Mostly plausible snippet lengths, some past the capacity.
            let len = (rng.next() % 161) as u16;
            record[64..66].copy_from_slice(&len.to_le_bytes());
        }
        match decode(&record) {
            Ok(_) if kind == EV_PAYLOAD => payload_ok += 1,
            Ok(_) => {}
            Err(err) => assert!(
                kind == EV_PAYLOAD
                    && matches!(
                        err,
                        DecodeError::SnippetTooLong { .. }
                            | DecodeError::SnippetBeyondPayload { .. }
                    ),
                "kind {kind}: {err}"
            ),
        }
        if kind == EV_PAYLOAD {
            // Whatever the snippet is, the parsers must not panic either.
            let snippet = &record[72..];
            let _ = parse_dns(snippet);
            let _ = parse_dns_tcp(snippet);
            let _ = parse_http(snippet);
        }
    }
    // len <= 128 (129 of 161) and len <= a random payload_len (almost
    // always): about 800 of the 1,000 payload records.
    assert!((700..=900).contains(&payload_ok), "{payload_ok}");
}

// ---- DNS fixtures -------------------------------------------------------

fn dns_header(id: u16, flags: u16, qd: u16, an: u16, ns: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, 0]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

fn push_name(b: &mut Vec<u8>, dotted: &str) {
    for label in dotted.split('.') {
        b.push(label.len() as u8);
        b.extend_from_slice(label.as_bytes());
    }
    b.push(0);
}

/// A resource record whose owner is a pointer to `owner`.
fn push_rr(b: &mut Vec<u8>, owner: u16, rtype: u16, ttl: u32, rdata: &[u8]) {
    b.extend_from_slice(&(0xc000 | owner).to_be_bytes());
    b.extend_from_slice(&rtype.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    b.extend_from_slice(rdata);
}

fn question(b: &mut Vec<u8>, name: &str, qtype: u16) {
    push_name(b, name);
    b.extend_from_slice(&qtype.to_be_bytes());
    b.extend_from_slice(&1u16.to_be_bytes());
}

#[test]
fn a_response_with_compressed_owner() {
    // dig kubernetes.default.svc.cluster.local A
    let mut b = dns_header(0x1234, 0x8180, 1, 1, 0);
    question(&mut b, "kubernetes.default.svc.cluster.local", 1);
    push_rr(&mut b, 12, 1, 30, &[10, 96, 0, 1]);
    // Through a payload event, the way the probe will see it.
    let event = decode(&payload_record(&b, b.len() as u16)).expect("payload");
    let EventBody::Payload { snippet, .. } = event.body else {
        panic!("not a payload");
    };
    let m = parse_dns(&snippet).expect("valid response");
    assert_eq!(m.id, 0x1234);
    assert!(m.is_response);
    assert_eq!(m.rcode, 0);
    assert_eq!(
        m.question,
        Some(DnsQuestion {
            name: "kubernetes.default.svc.cluster.local".into(),
            name_complete: true,
            qtype: Some(1),
        })
    );
    assert_eq!(m.answers, [DnsAnswer::A(Ipv4Addr::new(10, 96, 0, 1))]);
    assert_eq!(m.min_ttl, Some(30));
    assert!(!m.truncated);
}

#[test]
fn aaaa_response() {
    let mut b = dns_header(9, 0x8180, 1, 1, 0);
    question(&mut b, "ipv6.example", 28);
    let ip: Ipv6Addr = "2001:db8::53".parse().expect("literal");
    push_rr(&mut b, 12, 28, 300, &ip.octets());
    let m = parse_dns(&b).expect("valid");
    assert_eq!(m.question.and_then(|q| q.qtype), Some(28));
    assert_eq!(m.answers, [DnsAnswer::Aaaa(ip)]);
    assert_eq!(m.answers[0].to_string(), "2001:db8::53");
}

#[test]
fn nxdomain_and_servfail_rcodes() {
    // NXDOMAIN carries the zone's SOA in the authority section, which we skip.
    let mut b = dns_header(1, 0x8183, 1, 0, 1);
    question(&mut b, "nope.default.svc.cluster.local", 1);
    push_rr(&mut b, 17, 6, 5, &[0; 22]);
    let m = parse_dns(&b).expect("valid");
    assert_eq!((m.rcode, m.is_response, m.truncated), (3, true, false));
    assert!(m.answers.is_empty());
    assert_eq!(
        m.question.map(|q| q.name).as_deref(),
        Some("nope.default.svc.cluster.local")
    );

    let mut b = dns_header(2, 0x8182, 1, 0, 0);
    question(&mut b, "broken.example", 1);
    let m = parse_dns(&b).expect("valid");
    assert_eq!(m.rcode, 2);
}

#[test]
fn cname_chain_with_multiple_addresses() {
    let mut b = dns_header(77, 0x8180, 1, 4, 0);
    question(&mut b, "www.example.com", 1);
    // www.example.com CNAME edge.example.com: "edge" + pointer to example.com (offset 16).
    let mut rdata = vec![4];
    rdata.extend_from_slice(b"EDGE");
    rdata.extend_from_slice(&[0xc0, 16]);
    let cname_at = b.len() as u16;
    push_rr(&mut b, 12, 5, 600, &rdata);
    // The A records' owner points at the CNAME's rdata (offset cname_at + 12).
    push_rr(&mut b, cname_at + 12, 1, 60, &[93, 184, 216, 34]);
    push_rr(&mut b, cname_at + 12, 1, 45, &[93, 184, 216, 35]);
    // A TXT answer is skipped, not an error.
    push_rr(&mut b, 12, 16, 10, b"\x02hi");
    let m = parse_dns(&b).expect("valid");
    assert_eq!(
        m.answers,
        [
            DnsAnswer::Cname("edge.example.com".into()),
            DnsAnswer::A(Ipv4Addr::new(93, 184, 216, 34)),
            DnsAnswer::A(Ipv4Addr::new(93, 184, 216, 35)),
        ]
    );
    assert_eq!(m.min_ttl, Some(45));
    assert!(!m.truncated);
    let texts: Vec<String> = m.answers.iter().map(ToString::to_string).collect();
    assert_eq!(
        texts,
        ["edge.example.com", "93.184.216.34", "93.184.216.35"]
    );
}

#[test]
fn answers_cut_by_the_snippet_are_reported_truncated() {
    let mut b = dns_header(5, 0x8180, 1, 12, 0);
    question(&mut b, "many.example", 1);
    for i in 0..12u8 {
        push_rr(&mut b, 12, 1, 30, &[10, 0, 0, i]);
    }
    assert!(b.len() > 128);
    let m = parse_dns(&b[..128]).expect("valid prefix");
    // 12 + 18 question bytes, then 16 bytes per answer: 6 fit in 128.
    assert_eq!(m.answers.len(), 6);
    assert_eq!(m.answers[5], DnsAnswer::A(Ipv4Addr::new(10, 0, 0, 5)));
    assert!(m.truncated);
    assert_eq!(parse_dns(&b).expect("whole").answers.len(), 12);
}

#[test]
fn name_cut_by_the_128_byte_snippet() {
    let long = format!("{}.{}.svc.cluster.local", "a".repeat(60), "b".repeat(50));
    let mut b = dns_header(3, 0x0100, 1, 0, 0);
    question(&mut b, &long, 1);
    assert!(b.len() > 128);
    let event = decode(&payload_record(&b, b.len() as u16)).expect("payload");
    let EventBody::Payload {
        snippet,
        payload_len,
        ..
    } = event.body
    else {
        panic!("not a payload");
    };
    assert_eq!((snippet.len(), usize::from(payload_len)), (128, b.len()));
    let m = parse_dns(&snippet).expect("cut, not garbage");
    assert!(m.truncated);
    let q = m.question.expect("partial question");
    assert_eq!(q.name, format!("{}.{}.svc", "a".repeat(60), "b".repeat(50)));
    assert!(!q.name_complete);
    assert_eq!(q.qtype, None);
}

#[test]
fn qtype_cut_after_a_complete_name() {
    let mut b = dns_header(3, 0x0100, 1, 0, 0);
    question(&mut b, "x.example", 28);
    let m = parse_dns(&b[..b.len() - 3]).expect("cut");
    let q = m.question.expect("question");
    assert!(q.name_complete && m.truncated);
    assert_eq!(q.qtype, None);
    let m = parse_dns(&b[..b.len() - 2]).expect("cut in qclass");
    assert_eq!(m.question.and_then(|q| q.qtype), Some(28));
    assert!(m.truncated);
}

#[test]
fn pointer_loops_are_errors() {
    // The question name is a pointer to itself.
    let mut b = dns_header(1, 0x0100, 1, 0, 0);
    b.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        parse_dns(&b),
        Err(DnsError::PointerLoop { at: 12, target: 12 })
    );

    // Each pointer points backwards, yet they cycle: the answer owner at 22
    // is a label whose name goes on with a pointer at 26 back to 22. Only
    // the rule that each jump lands before the previous one catches it.
    let mut b = dns_header(1, 0x8180, 1, 1, 0);
    question(&mut b, "ab.c", 1); // 12..22
    b.extend_from_slice(&[3, b'x', b'y', b'z', 0xc0, 22, 0, 1, 0, 1]);
    assert_eq!(
        parse_dns(&b),
        Err(DnsError::PointerLoop { at: 26, target: 22 })
    );
}

#[test]
fn malformed_rdata_lengths_are_errors() {
    let mut b = dns_header(1, 0x8180, 1, 1, 0);
    question(&mut b, "a.b", 1);
    push_rr(&mut b, 12, 1, 1, &[1, 2, 3]);
    assert_eq!(
        parse_dns(&b),
        Err(DnsError::RdataLength {
            rtype: "A",
            at: 21,
            len: 3,
            expected: 4
        })
    );
}

#[test]
fn garbage_is_rejected_and_never_panics() {
    assert_eq!(parse_dns(b"hello"), Err(DnsError::TooShort(5)));
    // The start of a TLS ClientHello reads as a DNS header with opcode 0;
    // the first "label" byte 0xbb has the reserved type 0b10.
    let tls = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa, 0xbb,
    ];
    assert_eq!(
        parse_dns(&tls),
        Err(DnsError::LabelType { byte: 0xbb, at: 12 })
    );

    let mut rng = XorShift(0xdead_beef_0bad_f00d);
    let mut valid = Vec::new();
    question(&mut valid, "seed.example", 1);
    for _ in 0..20_000 {
        let len = (rng.next() % 140) as usize;
        let _ = parse_dns(&rng.bytes(len));
        // Mutate a real message a few bytes at a time to reach the deep paths.
        let mut m = dns_header(1, 0x8180, 1, 3, 0);
        m.extend_from_slice(&valid);
        push_rr(&mut m, 12, 5, 1, &[1, b'x', 0xc0, 12]);
        push_rr(&mut m, 30, 1, 1, &[1, 2, 3, 4]);
        push_rr(&mut m, 12, 28, 1, &[0; 16]);
        for _ in 0..(rng.next() % 4 + 1) {
            let at = (rng.next() as usize) % m.len();
            m[at] = rng.next() as u8;
        }
        let cut = (rng.next() as usize) % (m.len() + 1);
        let _ = parse_dns(&m[..cut]);
        let _ = parse_dns_tcp(&m[..cut]);
    }
}

// ---- HTTP ---------------------------------------------------------------

#[test]
fn http_request_and_response_lines() {
    assert_eq!(
        parse_http(b"GET /api/v1/users?id=7 HTTP/1.1\r\nHost: users\r\n\r\n"),
        Some(HttpLine::Request {
            method: Method::Get,
            path: "/api/v1/users?id=7".into(),
            path_complete: true,
            version: Some(HttpVersion::Http11),
        })
    );
    assert_eq!(
        parse_http(b"DELETE /items/3 HTTP/1.0\n"),
        Some(HttpLine::Request {
            method: Method::Delete,
            path: "/items/3".into(),
            path_complete: true,
            version: Some(HttpVersion::Http10),
        })
    );
    assert_eq!(
        parse_http(b"HTTP/1.1 503 Service Unavailable\r\n"),
        Some(HttpLine::Response {
            version: HttpVersion::Http11,
            code: 503,
            reason: "Service Unavailable".into(),
        })
    );
}

#[test]
fn http_lines_cut_by_the_snippet() {
    let path = format!("/search?q={}", "z".repeat(200));
    let line = format!("GET {path} HTTP/1.1\r\n");
    let event = decode(&payload_record(line.as_bytes(), line.len() as u16)).expect("payload");
    let EventBody::Payload { snippet, .. } = event.body else {
        panic!("not a payload");
    };
    assert_eq!(
        parse_http(&snippet),
        Some(HttpLine::Request {
            method: Method::Get,
            path: path[..124].to_string(),
            path_complete: false,
            version: None,
        })
    );
    assert_eq!(
        parse_http(b"HTTP/1.1 200 O"),
        Some(HttpLine::Response {
            version: HttpVersion::Http11,
            code: 200,
            reason: "O".into(),
        })
    );
    // Cut before the status code is known: nothing to report.
    assert_eq!(parse_http(b"HTTP/1.1 20"), None);
    assert_eq!(parse_http(b"HTTP/1."), None);
    assert_eq!(parse_http(b"PUT"), None);
}

#[test]
fn http_garbage_is_none() {
    let cases: [&[u8]; 12] = [
        b"",
        b"\x16\x03\x01\x02\x00",
        b"GET  / HTTP/1.1\r\n",
        b"GET /\r\n",
        b"GET / HTTP/1.1x\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.\x001\r\n",
        b"GE\x00T / HTTP/1.1\r\n",
        b"HTTP/1.1 099 Low\r\n",
        b"HTTP/1.1 2x0 OK\r\n",
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/1.1\x00200 OK\r\n",
    ];
    for case in cases {
        assert_eq!(
            parse_http(case),
            None,
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
    let mut rng = XorShift(42);
    let mut seen = 0;
    for i in 0..20_000 {
        let len = (rng.next() % 64) as usize;
        let mut b = rng.bytes(len);
        if i % 2 == 0 {
            // Real prefixes with random tails reach the inner branches.
            let prefix: &[u8] = if i % 4 == 0 { b"GET /" } else { b"HTTP/1.1 " };
            b.splice(0..0, prefix.iter().copied());
        }
        if parse_http(&b).is_some() {
            seen += 1;
        }
    }
    assert!(seen > 0);
}
