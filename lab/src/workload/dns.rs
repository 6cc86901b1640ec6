//! The kube-dns workload: a UDP DNS server authoritative for `cluster.local`,
//! answering from a zone the lab builds from its services and may replace
//! at any time; plus the small wire codec the client uses for its queries.
//!
//! Answers: A records (TTL [`TTL_SECS`]) for names in the zone; NOERROR with
//! no answers for other types, and for names that exist only as a parent
//! of a service name (`shop.svc.cluster.local`); NXDOMAIN for any other name
//! under `cluster.local`; REFUSED outside it or for a class other than IN/ANY;
//! NOTIMP for opcodes other than QUERY; FORMERR for anything unparsable.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use super::{Counters, WorkloadError};

/// The TTL of every answer: short, because services change under the lab.
pub const TTL_SECS: u32 = 5;
/// The zone this server is authoritative for.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

pub const NOERROR: u8 = 0;
pub const FORMERR: u8 = 1;
pub const SERVFAIL: u8 = 2;
pub const NXDOMAIN: u8 = 3;
pub const NOTIMP: u8 = 4;
pub const REFUSED: u8 = 5;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

/// Classic DNS over UDP: answers that do not fit are cut and flagged TC.
const MAX_UDP_RESPONSE: usize = 512;
const HEADER_LEN: usize = 12;
const A_RECORD_LEN: usize = 16;
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

/// The name an rcode is counted under: "NOERROR", ..., or "RCODE_OTHER".
pub fn rcode_name(rcode: u8) -> String {
    // The relay's names, so counters and skymap's figures compare by name.
    skymap_proto::names::rcode_name(u32::from(rcode)).to_string()
}

/// A name in the zone: lowercase, no final dot, labels of `a-z0-9-`, under
/// `cluster.local`. Checked when parsed, so a bad zone file names its line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ZoneName(String);

impl ZoneName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ZoneName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let lower = name.to_ascii_lowercase();
        let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
        if trimmed.len() > MAX_NAME_LEN - 2 {
            return Err(format!("zone name {name:?} is longer than 253 characters"));
        }
        if !trimmed.ends_with(&format!(".{CLUSTER_DOMAIN}")) {
            return Err(format!("zone name {name:?} is not under {CLUSTER_DOMAIN}"));
        }
        for label in trimmed.split('.') {
            let valid_chars = label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if label.is_empty() || label.len() > MAX_LABEL_LEN || !valid_chars {
                return Err(format!(
                    "zone name {name:?} has an invalid label {label:?} (1-63 of a-z, 0-9, '-')"
                ));
            }
        }
        Ok(Self(trimmed.to_owned()))
    }
}

// Lets the map be searched by `&str`; a ZoneName orders exactly as its string.
impl std::borrow::Borrow<str> for ZoneName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<ZoneName> for String {
    fn from(name: ZoneName) -> String {
        name.0
    }
}

/// The records the server answers from: full name → IPv4 addresses. In JSON,
/// an object such as `{"cart.shop.svc.cluster.local": ["10.96.0.12"]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ZoneRecords {
    names: BTreeMap<ZoneName, Vec<Ipv4Addr>>,
}

/// What the zone says about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name has these addresses.
    Found(Vec<Ipv4Addr>),
    /// The name has no records but names below it do (`svc.cluster.local`).
    EmptyNonTerminal,
    /// The name is under `cluster.local` and does not exist.
    NotFound,
    /// The name is outside `cluster.local`.
    OutOfZone,
}

impl ZoneRecords {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the addresses of a full name (replacing any it had).
    pub fn insert(&mut self, name: &str, addrs: Vec<Ipv4Addr>) -> Result<(), WorkloadError> {
        let name =
            ZoneName::try_from(name.to_owned()).map_err(|reason| WorkloadError::Invalid {
                field: "zone name".into(),
                reason,
            })?;
        self.names.insert(name, addrs);
        Ok(())
    }

    /// Sets the addresses of `SERVICE.NAMESPACE.svc.cluster.local`.
    pub fn insert_service(
        &mut self,
        service: &str,
        namespace: &str,
        addrs: Vec<Ipv4Addr>,
    ) -> Result<(), WorkloadError> {
        self.insert(
            &format!("{service}.{namespace}.svc.{CLUSTER_DOMAIN}"),
            addrs,
        )
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Parses a zone from JSON; `origin` (a file name) prefixes any error.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, WorkloadError> {
        serde_json::from_str(text).map_err(|e| WorkloadError::parse(origin, &e))
    }

    /// Reads a zone file (JSON, as [`ZoneRecords::from_json`]).
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            context: format!("reading zone file {}", path.display()),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Looks up a name given lowercase without the final dot.
    pub fn lookup(&self, name: &str) -> Lookup {
        if name != CLUSTER_DOMAIN && !name.ends_with(&format!(".{CLUSTER_DOMAIN}")) {
            return Lookup::OutOfZone;
        }
        if let Some(addrs) = self.names.get(name) {
            return Lookup::Found(addrs.clone());
        }
        let suffix = format!(".{name}");
        if self.names.keys().any(|n| n.as_str().ends_with(&suffix)) {
            Lookup::EmptyNonTerminal
        } else {
            Lookup::NotFound
        }
    }
}

/// A shared, replaceable zone: the server reads the current records for each
/// query, and whoever holds a clone may swap them at any time.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    current: Arc<RwLock<Arc<ZoneRecords>>>,
}

impl Zone {
    pub fn new(records: ZoneRecords) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(records))),
        }
    }

    /// Replaces every record; queries from now on see the new zone.
    pub fn replace(&self, records: ZoneRecords) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(records);
    }

    /// The records as they are now (a cheap shared copy).
    pub fn records(&self) -> Arc<ZoneRecords> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&guard)
    }
}

/// A server's reply to one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response datagram.
    pub response: Vec<u8>,
    pub rcode: u8,
    /// The question's name (lowercase, no final dot) if it could be parsed.
    pub name: Option<String>,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Lowercase, without the final dot; odd bytes escaped as `\DDD`.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// A parsed response, as far as the client cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub id: u16,
    pub rcode: u8,
    /// The server cut the answer to fit (TC bit).
    pub truncated: bool,
    /// Addresses of the A records in the answer section, in order.
    pub addrs: Vec<Ipv4Addr>,
}

/// Why a datagram could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("message ends at byte {0}, inside a field")]
    Truncated(usize),
    #[error("bad name at byte {0}")]
    BadName(usize),
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("expected a query, got a response")]
    NotAQuery,
    #[error("expected a response, got a query")]
    NotAResponse,
    #[error("opcode {0} is not QUERY")]
    Opcode(u8),
    #[error("{0} questions, not 1")]
    QuestionCount(u16),
    #[error("cannot encode name {0:?}")]
    Unencodable(String),
}

fn be16(packet: &[u8], at: usize) -> Result<u16, DnsError> {
    match packet.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(DnsError::Truncated(packet.len())),
    }
}

/// Reads a possibly compressed name starting at `start`. Returns the labels
/// (bytes as sent) and the offset just after the name where it started.
fn read_name(packet: &[u8], start: usize) -> Result<(Vec<Vec<u8>>, usize), DnsError> {
    let mut labels = Vec::new();
    let mut pos = start;
    let mut resume = None;
    let mut wire_len = 1; // the root label
    loop {
        let len = *packet.get(pos).ok_or(DnsError::Truncated(packet.len()))?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Ok((labels, resume.unwrap_or(pos + 1)));
            }
            0x00 => {
                let len = usize::from(len);
                let label = packet
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(DnsError::Truncated(packet.len()))?;
                wire_len += len + 1;
                if wire_len > MAX_NAME_LEN {
                    return Err(DnsError::NameTooLong);
                }
                labels.push(label.to_vec());
                pos += 1 + len;
            }
            0xC0 => {
                let low = *packet
                    .get(pos + 1)
                    .ok_or(DnsError::Truncated(packet.len()))?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                // Pointers may only go backwards, so jumps cannot cycle; a
                // cycle through labels is caught by the length limit.
                if target >= pos {
                    return Err(DnsError::BadName(pos));
                }
                resume.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::BadName(pos)),
        }
    }
}

/// The counting key of a name: lowercase labels joined by dots, bytes other
/// than letters, digits, '-' and '_' written as `\DDD`.
fn name_key(labels: &[Vec<u8>]) -> String {
    let mut key = String::new();
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                key.push(char::from(b.to_ascii_lowercase()));
            } else {
                key.push_str(&format!("\\{b:03}"));
            }
        }
    }
    key
}

fn write_name(out: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for label in labels {
        // Labels come from a parsed message or a checked name: ≤ 63 bytes.
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
}

struct Header {
    id: u16,
    opcode: u8,
    recursion_desired: bool,
    authoritative: bool,
    truncated: bool,
    rcode: u8,
    questions: u16,
    answers: u16,
}

fn write_header(out: &mut Vec<u8>, h: &Header) {
    out.extend_from_slice(&h.id.to_be_bytes());
    let mut flags = 0x80 | ((h.opcode & 0x0F) << 3);
    if h.authoritative {
        flags |= 0x04;
    }
    if h.truncated {
        flags |= 0x02;
    }
    if h.recursion_desired {
        flags |= 0x01;
    }
    out.push(flags);
    out.push(h.rcode & 0x0F);
    out.extend_from_slice(&h.questions.to_be_bytes());
    out.extend_from_slice(&h.answers.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
}

fn bare_reply(id: u16, opcode: u8, recursion_desired: bool, rcode: u8) -> Reply {
    let mut response = Vec::with_capacity(HEADER_LEN);
    write_header(
        &mut response,
        &Header {
            id,
            opcode,
            recursion_desired,
            authoritative: false,
            truncated: false,
            rcode,
            questions: 0,
            answers: 0,
        },
    );
    Reply {
        response,
        rcode,
        name: None,
    }
}

/// Answers one datagram from `zone`; `None` means it must not be answered
/// (shorter than an ID, or itself a response). Never panics on any input.
pub fn handle_packet(packet: &[u8], zone: &ZoneRecords) -> Option<Reply> {
    let id = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    let flags = packet.get(2).copied().unwrap_or(0);
    if flags & 0x80 != 0 {
        return None;
    }
    let opcode = (flags >> 3) & 0x0F;
    let rd = flags & 0x01 != 0;
    if packet.len() < HEADER_LEN {
        return Some(bare_reply(id, opcode, rd, FORMERR));
    }
    if opcode != 0 {
        return Some(bare_reply(id, opcode, rd, NOTIMP));
    }
    if be16(packet, 4) != Ok(1) {
        return Some(bare_reply(id, opcode, rd, FORMERR));
    }
    let Ok((labels, after)) = read_name(packet, HEADER_LEN) else {
        return Some(bare_reply(id, opcode, rd, FORMERR));
    };
    let (Ok(qtype), Ok(qclass)) = (be16(packet, after), be16(packet, after + 2)) else {
        return Some(bare_reply(id, opcode, rd, FORMERR));
    };
    let name = name_key(&labels);
    let (rcode, addrs) = if qclass != CLASS_IN && qclass != CLASS_ANY {
        (REFUSED, Vec::new())
    } else {
        match zone.lookup(&name) {
            Lookup::Found(addrs) if qtype == TYPE_A => (NOERROR, addrs),
            Lookup::Found(_) | Lookup::EmptyNonTerminal => (NOERROR, Vec::new()),
            Lookup::NotFound => (NXDOMAIN, Vec::new()),
            Lookup::OutOfZone => (REFUSED, Vec::new()),
        }
    };
    let mut question = Vec::new();
    write_name(&mut question, &labels);
    question.extend_from_slice(&qtype.to_be_bytes());
    question.extend_from_slice(&qclass.to_be_bytes());
    let room = MAX_UDP_RESPONSE.saturating_sub(HEADER_LEN + question.len()) / A_RECORD_LEN;
    let fitting = addrs.len().min(room);
    let mut response = Vec::with_capacity(HEADER_LEN + question.len() + fitting * A_RECORD_LEN);
    write_header(
        &mut response,
        &Header {
            id,
            opcode,
            recursion_desired: rd,
            authoritative: rcode != REFUSED,
            truncated: fitting < addrs.len(),
            rcode,
            questions: 1,
            answers: fitting as u16,
        },
    );
    response.extend_from_slice(&question);
    for addr in &addrs[..fitting] {
        // The owner is the question's name, which starts right after the header.
        response.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        response.extend_from_slice(&TYPE_A.to_be_bytes());
        response.extend_from_slice(&CLASS_IN.to_be_bytes());
        response.extend_from_slice(&TTL_SECS.to_be_bytes());
        response.extend_from_slice(&4u16.to_be_bytes());
        response.extend_from_slice(&addr.octets());
    }
    Some(Reply {
        response,
        rcode,
        name: Some(name),
    })
}

/// Builds a query (RD set, one question, class IN). `name` may end with '.'.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<Vec<u8>> = trimmed.split('.').map(|l| l.as_bytes().to_vec()).collect();
    let wire_len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if trimmed.is_empty()
        || wire_len > MAX_NAME_LEN
        || labels
            .iter()
            .any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN)
    {
        return Err(DnsError::Unencodable(name.to_owned()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + wire_len + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    write_name(&mut out, &labels);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// Reads a query the way the server does (for tools and tests that watch
/// queries go by).
pub fn parse_query(packet: &[u8]) -> Result<Query, DnsError> {
    let id = be16(packet, 0)?;
    let flags = be16(packet, 2)?;
    if flags & 0x8000 != 0 {
        return Err(DnsError::NotAQuery);
    }
    let opcode = ((flags >> 11) & 0x0F) as u8;
    if opcode != 0 {
        return Err(DnsError::Opcode(opcode));
    }
    let questions = be16(packet, 4)?;
    if questions != 1 {
        return Err(DnsError::QuestionCount(questions));
    }
    let (labels, after) = read_name(packet, HEADER_LEN)?;
    Ok(Query {
        id,
        name: name_key(&labels),
        qtype: be16(packet, after)?,
        qclass: be16(packet, after + 2)?,
    })
}

/// Reads a response: its ID, rcode and the A records of the answer section.
pub fn parse_response(packet: &[u8]) -> Result<Response, DnsError> {
    let id = be16(packet, 0)?;
    let flags = be16(packet, 2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotAResponse);
    }
    let questions = be16(packet, 4)?;
    let answers = be16(packet, 6)?;
    let mut pos = HEADER_LEN;
    for _ in 0..questions {
        let (_, after) = read_name(packet, pos)?;
        pos = after + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..answers {
        let (_, after) = read_name(packet, pos)?;
        let rtype = be16(packet, after)?;
        let rclass = be16(packet, after + 2)?;
        let rdlen = usize::from(be16(packet, after + 8)?);
        let rdata_at = after + 10;
        let rdata = packet
            .get(rdata_at..rdata_at + rdlen)
            .ok_or(DnsError::Truncated(packet.len()))?;
        if let (TYPE_A, CLASS_IN, &[a, b, c, d]) = (rtype, rclass, rdata) {
            addrs.push(Ipv4Addr::new(a, b, c, d));
        }
        pos = rdata_at + rdlen;
    }
    Ok(Response {
        id,
        rcode: (flags & 0x0F) as u8,
        truncated: flags & 0x0200 != 0,
        addrs,
    })
}

/// Serves DNS on `socket` until `stop` completes, answering from the zone as
/// it is at each query. Counts into [`super::DnsServerCounters`].
pub async fn serve_dns(
    socket: UdpSocket,
    zone: Zone,
    counters: Counters,
    stop: impl Future<Output = ()>,
) {
    // Large enough for any UDP datagram, so nothing arrives cut short.
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(stop);
    loop {
        let received = tokio::select! {
            biased;
            () = &mut stop => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, peer) = match received {
            Ok(got) => got,
            Err(_) => {
                counters.dns_server(|c| c.recv_errors += 1);
                // A socket that keeps failing must not spin a core.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        counters.dns_server(|c| c.queries_received += 1);
        let datagram = buf.get(..len).unwrap_or_default();
        let Some(reply) = handle_packet(datagram, &zone.records()) else {
            counters.dns_server(|c| c.datagrams_dropped += 1);
            continue;
        };
        let rcode = rcode_name(reply.rcode);
        let sent = socket.send_to(&reply.response, peer).await;
        counters.dns_server(|c| {
            match sent {
                Ok(_) => *c.responses_by_rcode.entry(rcode.clone()).or_default() += 1,
                Err(_) => c.send_errors += 1,
            }
            if let Some(name) = &reply.name {
                c.count_query(name, &rcode);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> ZoneRecords {
        let mut z = ZoneRecords::new();
        z.insert_service("cart", "shop", vec![Ipv4Addr::new(10, 96, 0, 12)])
            .expect("insert service");
        z
    }

    #[test]
    fn answers_a_record_with_ttl_and_compressed_owner() {
        let query =
            encode_query(0x1234, "Cart.Shop.svc.cluster.local.", TYPE_A).expect("encode query");
        let reply = handle_packet(&query, &zone()).expect("handle packet");
        assert_eq!(reply.rcode, NOERROR);
        assert_eq!(reply.name.as_deref(), Some("cart.shop.svc.cluster.local"));
        let r = &reply.response;
        assert_eq!(&r[..4], &[0x12, 0x34, 0x85, 0x00]); // QR, AA, RD; NOERROR
        let tail = &r[r.len() - 16..];
        assert_eq!(
            tail,
            &[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 96, 0, 12]
        );
        // The question is echoed as the client wrote it.
        assert_eq!(&r[12..17], b"\x04Cart");
        let parsed = parse_response(r).expect("parse response");
        assert_eq!(parsed.addrs, vec![Ipv4Addr::new(10, 96, 0, 12)]);
    }

    #[test]
    fn empty_non_terminal_is_nodata_not_nxdomain() {
        let query = encode_query(1, "shop.svc.cluster.local", TYPE_A).expect("encode query");
        let reply = handle_packet(&query, &zone()).expect("handle packet");
        assert_eq!(reply.rcode, NOERROR);
        assert!(
            parse_response(&reply.response)
                .expect("parse response")
                .addrs
                .is_empty()
        );
    }

    #[test]
    fn too_many_addresses_are_cut_to_512_bytes_with_tc() {
        let mut z = ZoneRecords::new();
        let addrs: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        z.insert_service("big", "ns", addrs)
            .expect("insert service");
        let query = encode_query(1, "big.ns.svc.cluster.local", TYPE_A).expect("encode query");
        let reply = handle_packet(&query, &z).expect("handle packet");
        assert!(reply.response.len() <= 512);
        let parsed = parse_response(&reply.response).expect("parse response");
        assert!(parsed.truncated);
        // 12 header + 30 name + 4 = 46; (512 - 46) / 16 = 29 records.
        assert_eq!(parsed.addrs.len(), 29);
    }

    #[test]
    fn pointer_loops_are_formerr() {
        // Header with one question whose name is a pointer to itself.
        let mut packet = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        packet.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(
            handle_packet(&packet, &zone())
                .expect("handle packet")
                .rcode,
            FORMERR
        );
    }

    #[test]
    fn zone_names_are_checked() {
        let mut z = ZoneRecords::new();
        assert!(z.insert("cart.shop.example.com", vec![]).is_err());
        assert!(z.insert("ca_rt.shop.svc.cluster.local", vec![]).is_err());
        assert!(z.insert("CART.shop.svc.cluster.local.", vec![]).is_ok());
        assert_eq!(
            z.lookup("cart.shop.svc.cluster.local"),
            Lookup::Found(vec![])
        );
    }
}
