//! Ring-buffer records built byte by byte as the kernel writes them (offsets
//! from `bpf/events.h`, not from the Rust mirrors), and DNS messages to put
//! in their payload snippets. Shared by tests/decode.rs, tests/assemble.rs
//! and benches/userspace.rs.
#![allow(dead_code)]

pub const EV_FLOW_NEW: u8 = 1;
pub const EV_TCP_HANDSHAKE: u8 = 2;
pub const EV_FLOW_CLOSE: u8 = 3;
pub const EV_FLOW_FLUSH: u8 = 4;
pub const EV_PAYLOAD: u8 = 5;
pub const EV_DROP: u8 = 6;

/// (kind, record length) for every kind.
pub const KINDS: [(u8, usize); 6] = [
    (EV_FLOW_NEW, 96),
    (EV_TCP_HANDSHAKE, 80),
    (EV_FLOW_CLOSE, 96),
    (EV_FLOW_FLUSH, 96),
    (EV_PAYLOAD, 200),
    (EV_DROP, 80),
];

/// `enum event_direction`.
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const DIR_UNKNOWN: u8 = 2;

/// An IPv4 address as the kernel stores it in a tuple: `::ffff:a.b.c.d`.
pub fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

/// Writes a record the way probe.bpf.c fills it: zeroed, then field by
/// field at the offsets of events.h.
pub struct Record(pub Vec<u8>);

impl Record {
    /// A header with fixed values (egress, ifindex 7, ts 123456789, netns
    /// 4026532000, CPU 3); [`Record::header`] changes them.
    pub fn new(kind: u8, len: usize) -> Self {
        let mut r = Record(vec![0; len]);
        r.put(0, &[kind, DIR_EGRESS, 1 /* version */]);
        r.put(4, &7u32.to_le_bytes()); // ifindex
        r.put(8, &123_456_789u64.to_le_bytes()); // ts_ns
        r.put(16, &4_026_532_000u32.to_le_bytes()); // netns_ino
        r.put(20, &3u32.to_le_bytes()); // cpu
        r
    }

    /// A record of `kind`, its length from [`KINDS`] (0 for an unknown kind).
    pub fn of(kind: u8) -> Self {
        let len = KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, len)| *len);
        Self::new(kind, len)
    }

    pub fn put(&mut self, at: usize, bytes: &[u8]) -> &mut Self {
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
        self
    }

    pub fn header(&mut self, direction: u8, ifindex: u32, ts_ns: u64, netns_ino: u32) -> &mut Self {
        self.put(1, &[direction]);
        self.put(4, &ifindex.to_le_bytes());
        self.put(8, &ts_ns.to_le_bytes());
        self.put(16, &netns_ino.to_le_bytes())
    }

    pub fn tuple(&mut self, saddr: [u8; 16], daddr: [u8; 16], sport: u16, dport: u16, proto: u8) {
        self.put(24, &saddr);
        self.put(40, &daddr);
        self.put(56, &sport.to_le_bytes());
        self.put(58, &dport.to_le_bytes());
        self.put(60, &[proto]);
    }

    /// The counters of a flow record (new, flush, close).
    pub fn counts(&mut self, packets: u64, bytes: u64, tcp_flags: u8, first_ns: u64) -> &mut Self {
        self.put(64, &packets.to_le_bytes());
        self.put(72, &bytes.to_le_bytes());
        self.put(80, &[tcp_flags]);
        self.put(88, &first_ns.to_le_bytes())
    }

    /// A payload record's snippet: its first 128 bytes, and the length of
    /// the whole payload.
    pub fn snippet(&mut self, bytes: &[u8], payload_len: u16) -> &mut Self {
        let len = bytes.len().min(128);
        self.put(64, &(len as u16).to_le_bytes());
        self.put(66, &payload_len.to_le_bytes());
        self.put(72, &bytes[..len])
    }
}

/// A DNS message: one question (type A), then A answers (their owner a
/// pointer to the question's name).
pub fn dns(id: u16, response: bool, rcode: u8, name: &str, answers: &[([u8; 4], u32)]) -> Vec<u8> {
    let flags: u16 = if response {
        0x8180 | u16::from(rcode)
    } else {
        0x0100
    };
    let mut m = Vec::new();
    for word in [id, flags, 1, answers.len() as u16, 0, 0] {
        m.extend_from_slice(&word.to_be_bytes());
    }
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]);
    for (addr, ttl) in answers {
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4]);
        m.extend_from_slice(addr);
    }
    m
}
