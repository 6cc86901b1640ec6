//! A DNS message parser for payload snippets: the header, the first
//! question, and the A/AAAA/CNAME answers that fit in the snippet.
//!
//! The kernel copies at most 128 bytes, so running out of bytes is normal and
//! is reported with `truncated`, not as an error. Errors are for bytes that
//! cannot be a DNS message (reserved label types, compression loops, names
//! over 255 bytes, malformed answer lengths).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The fixed DNS header length.
pub const HEADER_LEN: usize = 12;

/// Longest name on the wire (RFC 1035 2.3.4), root byte included.
const MAX_NAME_WIRE_LEN: usize = 255;

/// Compression pointers followed in one name. Strictly decreasing targets
/// already guarantee termination; this bounds the work on hostile input.
const MAX_POINTERS: usize = 32;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

/// Why bytes are not a DNS message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("DNS message too short: {0} bytes, the header needs {HEADER_LEN}")]
    TooShort(usize),
    #[error("DNS over TCP length prefix {0} is shorter than a DNS header")]
    TcpLength(u16),
    #[error("reserved DNS opcode {0}")]
    ReservedOpcode(u8),
    #[error("reserved label type 0x{byte:02x} at offset {at}")]
    LabelType { byte: u8, at: usize },
    #[error("compression pointer at offset {at} to {target} does not point backwards (loop)")]
    PointerLoop { at: usize, target: usize },
    #[error("more than {MAX_POINTERS} compression pointers in the name at offset {0}")]
    TooManyPointers(usize),
    #[error("name at offset {0} is longer than {MAX_NAME_WIRE_LEN} bytes")]
    NameTooLong(usize),
    #[error("CNAME record at offset {at}: the name does not end at its rdata length {len}")]
    CnameLength { at: usize, len: u16 },
    #[error("{rtype} record at offset {at} has rdata length {len}, expected {expected}")]
    RdataLength {
        rtype: &'static str,
        at: usize,
        len: u16,
        expected: u16,
    },
}

/// One answer the parser understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// The canonical name, lowercase, without the trailing dot.
    Cname(String),
}

impl DnsAnswer {
    /// The address, for A and AAAA answers.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Self::A(ip) => Some((*ip).into()),
            Self::Aaaa(ip) => Some((*ip).into()),
            Self::Cname(_) => None,
        }
    }
}

impl fmt::Display for DnsAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A(ip) => ip.fmt(f),
            Self::Aaaa(ip) => ip.fmt(f),
            Self::Cname(name) => f.write_str(name),
        }
    }
}

/// The first question of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    /// Lowercase, without the trailing dot, the root as `.`; bytes outside
    /// printable ASCII, and `.` or `\` inside a label, as `\DDD`. When the
    /// snippet cuts the name, the whole labels before the cut.
    pub name: String,
    /// False when the snippet cut the name.
    pub name_complete: bool,
    /// None when the snippet ends before it.
    pub qtype: Option<u16>,
}

/// What a DNS message snippet says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub is_response: bool,
    pub opcode: u8,
    /// The header's 4-bit response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN).
    pub rcode: u8,
    /// The TC bit: the server truncated the message (not the snippet).
    pub tc: bool,
    pub qdcount: u16,
    pub ancount: u16,
    /// None when the message has no question.
    pub question: Option<DnsQuestion>,
    /// A, AAAA and CNAME answers, in message order; other types are skipped.
    pub answers: Vec<DnsAnswer>,
    /// Smallest TTL of the answers in `answers`.
    pub min_ttl: Option<u32>,
    /// The snippet ended before the question and all `ancount` answers.
    pub truncated: bool,
}

/// Parses a DNS message as carried over UDP (the snippet starts with the
/// DNS header).
pub fn parse_dns(msg: &[u8]) -> Result<DnsMessage, DnsError> {
    let header = msg.get(..HEADER_LEN).ok_or(DnsError::TooShort(msg.len()))?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let flags = word(2);
    let opcode = ((flags >> 11) & 0xf) as u8;
    // 0 QUERY, 1 IQUERY, 2 STATUS, 4 NOTIFY, 5 UPDATE, 6 DSO; the rest are
    // unassigned, so a snippet using them is more likely not DNS at all.
    if !matches!(opcode, 0 | 1 | 2 | 4 | 5 | 6) {
        return Err(DnsError::ReservedOpcode(opcode));
    }
    let mut out = DnsMessage {
        id: word(0),
        is_response: flags & 0x8000 != 0,
        opcode,
        rcode: (flags & 0xf) as u8,
        tc: flags & 0x0200 != 0,
        qdcount: word(4),
        ancount: word(6),
        question: None,
        answers: Vec::new(),
        min_ttl: None,
        truncated: false,
    };

    let mut pos = HEADER_LEN;
    for index in 0..out.qdcount {
        let (name, name_complete, end) = match read_name(msg, pos)? {
            Name::Done { name, end } => (name, true, Some(end)),
            Name::Cut { name } => (name, false, None),
        };
        let qtype = end.and_then(|end| be16(msg, end));
        if index == 0 {
            out.question = Some(DnsQuestion {
                name,
                name_complete,
                qtype,
            });
        }
        // qtype and qclass must both be there to go on to the next record.
        match end.filter(|end| end + 4 <= msg.len()) {
            Some(end) => pos = end + 4,
            None => {
                out.truncated = true;
                return Ok(out);
            }
        }
    }

    for _ in 0..out.ancount {
        match read_answer(msg, pos)? {
            Some((answer, ttl, next)) => {
                if let Some(answer) = answer {
                    out.answers.push(answer);
                    out.min_ttl = Some(out.min_ttl.map_or(ttl, |min| min.min(ttl)));
                }
                pos = next;
            }
            None => {
                out.truncated = true;
                break;
            }
        }
    }
    Ok(out)
}

/// Parses a DNS message as carried over TCP: a 2-byte length, then the
/// message (compression offsets count from the message, not the prefix).
pub fn parse_dns_tcp(snippet: &[u8]) -> Result<DnsMessage, DnsError> {
    let len = be16(snippet, 0).ok_or(DnsError::TooShort(snippet.len()))?;
    if usize::from(len) < HEADER_LEN {
        return Err(DnsError::TcpLength(len));
    }
    let end = snippet.len().min(2 + usize::from(len));
    parse_dns(snippet.get(2..end).unwrap_or_default())
}

/// One resource record at `pos`: the answer if it is a type we keep, its
/// TTL, and where the next record starts. None when the snippet ends first.
fn read_answer(
    msg: &[u8],
    pos: usize,
) -> Result<Option<(Option<DnsAnswer>, u32, usize)>, DnsError> {
    let Name::Done { end, .. } = read_name(msg, pos)? else {
        return Ok(None);
    };
    let Some(fixed) = msg.get(end..end + 10) else {
        return Ok(None);
    };
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let rdlength = u16::from_be_bytes([fixed[8], fixed[9]]);
    let start = end + 10;
    let next = start + usize::from(rdlength);
    let Some(rdata) = msg.get(start..next) else {
        return Ok(None);
    };
    let wrong_length = |rtype, expected| DnsError::RdataLength {
        rtype,
        at: pos,
        len: rdlength,
        expected,
    };
    let answer = match rtype {
        TYPE_A => {
            let octets: [u8; 4] = rdata.try_into().map_err(|_| wrong_length("A", 4))?;
            Some(DnsAnswer::A(octets.into()))
        }
        TYPE_AAAA => {
            let octets: [u8; 16] = rdata.try_into().map_err(|_| wrong_length("AAAA", 16))?;
            Some(DnsAnswer::Aaaa(octets.into()))
        }
        TYPE_CNAME => match read_name(msg, start)? {
            Name::Done { name, end } if end == next => Some(DnsAnswer::Cname(name)),
            // The whole rdata is in the snippet, so a name that ends
            // elsewhere (or runs off the snippet) means rdlength is wrong.
            _ => {
                return Err(DnsError::CnameLength {
                    at: pos,
                    len: rdlength,
                });
            }
        },
        _ => None,
    };
    Ok(Some((answer, ttl, next)))
}

enum Name {
    /// `end` is where the record continues after the name.
    Done { name: String, end: usize },
    /// The snippet ended inside the name.
    Cut { name: String },
}

fn read_name(msg: &[u8], start: usize) -> Result<Name, DnsError> {
    let mut name = String::new();
    let mut pos = start;
    let mut end = None;
    let mut wire_len = 0usize;
    let mut pointers = 0usize;
    // Each pointer must point before the previous one's target (the first,
    // before itself): encoders only refer to names written earlier, and
    // strictly decreasing targets cannot loop.
    let mut limit = usize::MAX;
    loop {
        let Some(&len) = msg.get(pos) else {
            return Ok(Name::Cut { name });
        };
        match len >> 6 {
            0 if len == 0 => {
                if name.is_empty() {
                    name.push('.');
                }
                return Ok(Name::Done {
                    name,
                    end: end.unwrap_or(pos + 1),
                });
            }
            0 => {
                let len = usize::from(len);
                wire_len += len + 1;
                if wire_len + 1 > MAX_NAME_WIRE_LEN {
                    return Err(DnsError::NameTooLong(start));
                }
                let Some(label) = msg.get(pos + 1..pos + 1 + len) else {
                    return Ok(Name::Cut { name });
                };
                if !name.is_empty() {
                    name.push('.');
                }
                push_label(&mut name, label);
                pos += 1 + len;
            }
            3 => {
                let Some(&low) = msg.get(pos + 1) else {
                    return Ok(Name::Cut { name });
                };
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target >= pos.min(limit) {
                    return Err(DnsError::PointerLoop { at: pos, target });
                }
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DnsError::TooManyPointers(start));
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return Err(DnsError::LabelType { byte: len, at: pos }),
        }
    }
}

fn push_label(name: &mut String, label: &[u8]) {
    for &byte in label {
        match byte {
            b'.' | b'\\' | ..=0x20 | 0x7f.. => {
                name.push_str(&format!("\\{byte:03}"));
            }
            _ => name.push(char::from(byte.to_ascii_lowercase())),
        }
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let pair = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([pair[0], pair[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header: id, flags, qd/an/ns/ar counts.
    fn header(id: u16, flags: u16, qd: u16, an: u16) -> Vec<u8> {
        let mut b = Vec::new();
        for word in [id, flags, qd, an, 0, 0] {
            b.extend_from_slice(&word.to_be_bytes());
        }
        b
    }

    fn name(b: &mut Vec<u8>, dotted: &str) {
        for label in dotted.split('.') {
            b.push(label.len() as u8);
            b.extend_from_slice(label.as_bytes());
        }
        b.push(0);
    }

    #[test]
    fn query_for_a() {
        let mut b = header(0xbeef, 0x0100, 1, 0);
        name(&mut b, "WWW.Example.COM");
        b.extend_from_slice(&[0, 1, 0, 1]);
        let m = parse_dns(&b).expect("valid query");
        assert_eq!(m.id, 0xbeef);
        assert!(!m.is_response);
        assert_eq!((m.opcode, m.rcode, m.tc, m.truncated), (0, 0, false, false));
        assert_eq!(
            m.question,
            Some(DnsQuestion {
                name: "www.example.com".into(),
                name_complete: true,
                qtype: Some(1),
            })
        );
        assert!(m.answers.is_empty());
    }

    #[test]
    fn labels_with_odd_bytes_are_escaped() {
        let mut b = header(1, 0x0100, 1, 0);
        b.extend_from_slice(&[
            4, b'a', b'.', 0x1b, b'\\', 3, b'c', b'o', b'm', 0, 0, 16, 0, 1,
        ]);
        let m = parse_dns(&b).expect("valid query");
        let q = m.question.expect("question");
        assert_eq!(q.name, "a\\046\\027\\092.com");
        assert_eq!(q.qtype, Some(16));
    }

    #[test]
    fn root_name_is_a_dot() {
        let mut b = header(1, 0x0100, 1, 0);
        b.extend_from_slice(&[0, 0, 2, 0, 1]);
        let q = parse_dns(&b).expect("valid").question.expect("question");
        assert_eq!(q.name, ".");
        assert_eq!(q.qtype, Some(2));
    }

    #[test]
    fn reserved_opcode_and_label_type_are_errors() {
        let b = header(1, 3 << 11, 0, 0);
        assert_eq!(parse_dns(&b), Err(DnsError::ReservedOpcode(3)));
        let mut b = header(1, 0x0100, 1, 0);
        b.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        assert_eq!(
            parse_dns(&b),
            Err(DnsError::LabelType { byte: 0x41, at: 12 })
        );
    }

    #[test]
    fn name_longer_than_255_is_an_error() {
        let mut b = header(1, 0x0100, 1, 0);
        for _ in 0..5 {
            b.push(63);
            b.extend_from_slice(&[b'a'; 63]);
        }
        b.push(0);
        assert_eq!(parse_dns(&b), Err(DnsError::NameTooLong(12)));
    }

    #[test]
    fn tcp_prefix_is_skipped_and_checked() {
        let mut m = header(7, 0x0100, 1, 0);
        name(&mut m, "a.b");
        m.extend_from_slice(&[0, 28, 0, 1]);
        let mut b = (m.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(&m);
        let parsed = parse_dns_tcp(&b).expect("valid");
        assert_eq!(parsed.id, 7);
        assert_eq!(parsed.question.and_then(|q| q.qtype), Some(28));
        assert_eq!(parse_dns_tcp(&[0, 5, 1, 2]), Err(DnsError::TcpLength(5)));
        assert_eq!(parse_dns_tcp(&[0]), Err(DnsError::TooShort(1)));
    }
}
