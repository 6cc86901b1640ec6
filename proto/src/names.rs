//! Names for the numbers on the wire: verdicts, protocols, TCP flags, DNS
//! types and response codes, and IP addresses as bytes.
//!
//! One place, so that every command prints the same words.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::v1::{L7Type, ObservationPoint, Protocol, TcpFlag, TrafficDirection, Verdict};

/// The address in an [`Endpoint`](crate::v1::Endpoint)'s `ip` bytes, if it has 4 or 16.
pub fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => {
            let octets: [u8; 4] = bytes.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        16 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}

/// The bytes for an address: 4 for IPv4, 16 for IPv6.
pub fn ip_to_bytes(ip: IpAddr) -> prost::bytes::Bytes {
    match ip {
        IpAddr::V4(v4) => prost::bytes::Bytes::copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => prost::bytes::Bytes::copy_from_slice(&v6.octets()),
    }
}

/// Hubble's word for a verdict (`FORWARDED`, `DROPPED`, ...).
pub fn verdict_name(verdict: i32) -> &'static str {
    match Verdict::try_from(verdict) {
        Ok(Verdict::Unknown) | Err(_) => "VERDICT_UNKNOWN",
        Ok(v) => v.as_str_name(),
    }
}

/// Parses a verdict word, case-insensitively.
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    Verdict::from_str_name(&text.to_ascii_uppercase()).filter(|v| *v != Verdict::Unknown)
}

/// `TCP`, `UDP`, `ICMPv4`, `ICMPv6`, `SCTP` (Hubble's spelling), or `unknown`.
pub fn protocol_name(protocol: i32) -> &'static str {
    match Protocol::try_from(protocol) {
        Ok(Protocol::Tcp) => "TCP",
        Ok(Protocol::Udp) => "UDP",
        Ok(Protocol::Icmpv4) => "ICMPv4",
        Ok(Protocol::Icmpv6) => "ICMPv6",
        Ok(Protocol::Sctp) => "SCTP",
        Ok(Protocol::Unknown) | Err(_) => "unknown",
    }
}

/// Parses `tcp`, `udp`, `icmpv4`, `icmpv6`, `sctp` (any case).
pub fn parse_protocol(text: &str) -> Option<Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "icmpv4" | "icmp" => Some(Protocol::Icmpv4),
        "icmpv6" => Some(Protocol::Icmpv6),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// TCP flag names in wire order.
pub const TCP_FLAGS: [(TcpFlag, &str); 8] = [
    (TcpFlag::Fin, "FIN"),
    (TcpFlag::Syn, "SYN"),
    (TcpFlag::Rst, "RST"),
    (TcpFlag::Psh, "PSH"),
    (TcpFlag::Ack, "ACK"),
    (TcpFlag::Urg, "URG"),
    (TcpFlag::Ece, "ECE"),
    (TcpFlag::Cwr, "CWR"),
];

/// The names of the flags set in `bits`, in wire order.
pub fn tcp_flag_names(bits: u32) -> Vec<&'static str> {
    TCP_FLAGS
        .iter()
        .filter(|(flag, _)| bits & (*flag as u32) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The bit of a TCP flag name (any case).
pub fn parse_tcp_flag(name: &str) -> Option<u32> {
    TCP_FLAGS
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(flag, _)| *flag as u32)
}

/// DNS response code names (RFC 1035, 2136, 6895).
pub fn rcode_name(rcode: u32) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        _ => "RCODE_OTHER",
    }
}

/// The rcode for a name from [`rcode_name`] (any case).
pub fn parse_rcode(name: &str) -> Option<u32> {
    (0..=10).find(|code| rcode_name(*code).eq_ignore_ascii_case(name))
}

const QTYPES: [(u32, &str); 12] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (255, "ANY"),
];

/// DNS query type name (`A`, `AAAA`, ...); `TYPE<n>` for others (RFC 3597).
pub fn qtype_name(qtype: u32) -> String {
    QTYPES
        .iter()
        .find(|(code, _)| *code == qtype)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("TYPE{qtype}"))
}

/// The number of a query type name, including the `TYPE<n>` form.
pub fn parse_qtype(name: &str) -> Option<u32> {
    if let Some((code, _)) = QTYPES.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)) {
        return Some(*code);
    }
    name.strip_prefix("TYPE")
        .or_else(|| name.strip_prefix("type"))
        .and_then(|n| n.parse().ok())
}

/// Hubble's spelling of an observation point (`TO_ENDPOINT`, ...).
pub fn observation_point_name(point: i32) -> &'static str {
    ObservationPoint::try_from(point)
        .unwrap_or(ObservationPoint::Unknown)
        .as_str_name()
}

/// `INGRESS`, `EGRESS` or `TRAFFIC_DIRECTION_UNKNOWN`.
pub fn traffic_direction_name(direction: i32) -> &'static str {
    TrafficDirection::try_from(direction)
        .unwrap_or(TrafficDirection::Unknown)
        .as_str_name()
}

/// `REQUEST`, `RESPONSE`, `SAMPLE` or `L7_TYPE_UNKNOWN`.
pub fn l7_type_name(kind: i32) -> &'static str {
    L7Type::try_from(kind)
        .unwrap_or(L7Type::Unknown)
        .as_str_name()
}

/// Removes control characters and escape sequences from text that came from
/// the network (DNS names, HTTP paths, pod names), so that printing it cannot
/// move the cursor, change colours or retitle the terminal. Each removed
/// character becomes `\u{FFFD}` so that tampering stays visible.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(needs_replacing) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| if needs_replacing(c) { '\u{FFFD}' } else { c })
            .collect(),
    )
}

fn needs_replacing(c: char) -> bool {
    // C0 and C1 controls (ESC, CSI, OSC, BEL, ...), DEL, and the bidi overrides
    // that can make text read differently from what it is.
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_bytes_round_trip_and_reject_odd_lengths() {
        for text in ["10.244.1.7", "fd00::1"] {
            let ip: IpAddr = text.parse().expect("valid");
            assert_eq!(ip_from_bytes(&ip_to_bytes(ip)), Some(ip));
        }
        assert_eq!(ip_from_bytes(&[1, 2, 3]), None);
        assert_eq!(ip_from_bytes(&[]), None);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(verdict_name(Verdict::Dropped as i32), "DROPPED");
        assert_eq!(verdict_name(99), "VERDICT_UNKNOWN");
        assert_eq!(parse_verdict("dropped"), Some(Verdict::Dropped));
        assert_eq!(parse_verdict("VERDICT_UNKNOWN"), None);
        assert_eq!(tcp_flag_names(0x12), vec!["SYN", "ACK"]);
        assert_eq!(parse_tcp_flag("rst"), Some(4));
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(parse_rcode("servfail"), Some(2));
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(99), "TYPE99");
        assert_eq!(parse_qtype("TYPE99"), Some(99));
        assert_eq!(parse_qtype("aaaa"), Some(28));
        assert_eq!(protocol_name(Protocol::Icmpv6 as i32), "ICMPv6");
        assert_eq!(parse_protocol("UDP"), Some(Protocol::Udp));
    }

    #[test]
    fn sanitize_removes_escapes_but_keeps_text() {
        assert_eq!(sanitize("frontend-7d9f"), "frontend-7d9f");
        let hostile = "evil\x1b]0;pwned\x07\x1b[2J.example.";
        let clean = sanitize(hostile);
        assert!(!clean.contains('\x1b') && !clean.contains('\x07'));
        assert!(clean.contains("evil") && clean.contains("pwned"));
        assert_eq!(sanitize("a\u{202E}b"), "a\u{FFFD}b");
    }
}
