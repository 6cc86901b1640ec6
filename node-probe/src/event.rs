//! The records the kernel programs put on the ring buffer, and [`decode`],
//! which turns one record's bytes into a typed [`Event`].
//!
//! The `Raw*` structs mirror `bpf/events.h` field by field; a test checks
//! their sizes and offsets against the C layout, and [`EventKind::record_len`]
//! takes its lengths from them. [`decode`] does not transmute into them (the
//! crate has no `unsafe`): it reads each field at its offset, little-endian.

use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr};

/// `SKYMAP_EVENT_VERSION`: the layout version every record carries.
pub const EVENT_VERSION: u8 = 1;

/// `SKYMAP_SNIPPET_LEN`: payload bytes a payload event can carry.
pub const SNIPPET_LEN: usize = 128;

/// `struct event_header` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHeader {
    pub kind: u8,
    pub direction: u8,
    pub version: u8,
    pub pad: u8,
    pub ifindex: u32,
    pub ts_ns: u64,
    pub netns_ino: u32,
    pub cpu: u32,
}

/// `struct flow_tuple` (40 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawTuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    pub pad: [u8; 3],
}

/// `struct flow_event` (96 bytes): new, close and flush events.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawFlowEvent {
    pub h: RawHeader,
    pub t: RawTuple,
    pub packets: u64,
    pub bytes: u64,
    pub tcp_flags: u8,
    pub pad: [u8; 7],
    pub first_ns: u64,
}

/// `struct handshake_event` (80 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawHandshakeEvent {
    pub h: RawHeader,
    pub t: RawTuple,
    pub syn_ns: u64,
    pub synack_ns: u64,
}

/// `struct payload_event` (200 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayloadEvent {
    pub h: RawHeader,
    pub t: RawTuple,
    pub len: u16,
    pub payload_len: u16,
    pub pad: [u8; 4],
    pub snippet: [u8; SNIPPET_LEN],
}

/// `struct drop_event` (80 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawDropEvent {
    pub h: RawHeader,
    pub t: RawTuple,
    pub reason: u32,
    pub pad: u32,
    pub location: u64,
}

/// `enum event_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    FlowNew = 1,
    TcpHandshake = 2,
    FlowClose = 3,
    FlowFlush = 4,
    Payload = 5,
    Drop = 6,
}

impl EventKind {
    /// The kind for the header's `kind` byte.
    pub fn from_u8(kind: u8) -> Option<Self> {
        Some(match kind {
            1 => Self::FlowNew,
            2 => Self::TcpHandshake,
            3 => Self::FlowClose,
            4 => Self::FlowFlush,
            5 => Self::Payload,
            6 => Self::Drop,
            _ => return None,
        })
    }

    /// The exact length of a record of this kind.
    pub fn record_len(self) -> usize {
        match self {
            Self::FlowNew | Self::FlowClose | Self::FlowFlush => size_of::<RawFlowEvent>(),
            Self::TcpHandshake => size_of::<RawHandshakeEvent>(),
            Self::Payload => size_of::<RawPayloadEvent>(),
            Self::Drop => size_of::<RawDropEvent>(),
        }
    }

    /// The C enumerator's name, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::FlowNew => "EV_FLOW_NEW",
            Self::TcpHandshake => "EV_TCP_HANDSHAKE",
            Self::FlowClose => "EV_FLOW_CLOSE",
            Self::FlowFlush => "EV_FLOW_FLUSH",
            Self::Payload => "EV_PAYLOAD",
            Self::Drop => "EV_DROP",
        }
    }
}

/// `enum event_direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Ingress,
    Egress,
    /// Seen by `kfree_skb`, not at a TC hook.
    Unknown,
}

/// Why a record could not be decoded. Each is counted as a decode loss.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record too short for an event header: {got} bytes, need {need}")]
    NoHeader { got: usize, need: usize },
    #[error("record version {got}, this probe reads version {expected}")]
    Version { got: u8, expected: u8 },
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown direction {0}")]
    UnknownDirection(u8),
    #[error("{kind} record is {got} bytes, expected {expected}")]
    Length {
        kind: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("payload snippet len {len} exceeds its capacity {SNIPPET_LEN}")]
    SnippetTooLong { len: u16 },
    #[error("payload snippet len {len} exceeds the payload length {payload_len}")]
    SnippetBeyondPayload { len: u16, payload_len: u16 },
}

/// The header fields every event has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub direction: Direction,
    /// Interface the packet was seen on; 0 when unknown.
    pub ifindex: u32,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub ts_ns: u64,
    /// Network namespace inode; 0 when unknown.
    pub netns_ino: u32,
    pub cpu: u32,
}

/// A 5-tuple as the packet carried it (source = sender of this packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IPv4-mapped addresses come out as [`IpAddr::V4`].
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6).
    pub protocol: u8,
}

/// The counters of a flow event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub tuple: Tuple,
    /// Since the flow's previous flow event.
    pub packets: u64,
    /// Since the flow's previous flow event.
    pub bytes: u64,
    /// OR of the TCP flags seen (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: u8,
    /// Monotonic time of the flow's first packet.
    pub first_ns: u64,
}

/// What a record says, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    FlowNew(FlowRecord),
    FlowClose(FlowRecord),
    FlowFlush(FlowRecord),
    /// `tuple` is the SYN's (client -> server).
    Handshake {
        tuple: Tuple,
        syn_ns: u64,
        synack_ns: u64,
    },
    /// The first bytes of a DNS message or HTTP/1.x exchange.
    Payload {
        tuple: Tuple,
        /// Only the valid bytes (at most [`SNIPPET_LEN`]).
        snippet: Vec<u8>,
        /// The packet's whole L4 payload length (capped at 65535).
        payload_len: u16,
    },
    Drop {
        tuple: Tuple,
        /// The running kernel's `enum skb_drop_reason` value.
        reason: u32,
        /// Kernel address that freed the skb.
        location: u64,
    },
}

impl EventBody {
    /// The 5-tuple every kind of record carries.
    pub fn tuple(&self) -> &Tuple {
        match self {
            EventBody::FlowNew(f) | EventBody::FlowClose(f) | EventBody::FlowFlush(f) => &f.tuple,
            EventBody::Handshake { tuple, .. }
            | EventBody::Payload { tuple, .. }
            | EventBody::Drop { tuple, .. } => tuple,
        }
    }
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: Header,
    pub body: EventBody,
}

/// Decodes one ring-buffer record. The length must be exactly the kind's
/// record length: anything else means the kernel and this code disagree on
/// the layout, and guessing would produce wrong flows.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header_len = size_of::<RawHeader>();
    if bytes.len() < header_len {
        return Err(DecodeError::NoHeader {
            got: bytes.len(),
            need: header_len,
        });
    }
    let mut r = Reader { bytes, pos: 0 };
    let kind_byte = r.u8()?;
    let direction_byte = r.u8()?;
    let version = r.u8()?;
    if version != EVENT_VERSION {
        return Err(DecodeError::Version {
            got: version,
            expected: EVENT_VERSION,
        });
    }
    let kind = EventKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    if bytes.len() != kind.record_len() {
        return Err(DecodeError::Length {
            kind: kind.name(),
            got: bytes.len(),
            expected: kind.record_len(),
        });
    }
    let direction = match direction_byte {
        0 => Direction::Ingress,
        1 => Direction::Egress,
        2 => Direction::Unknown,
        other => return Err(DecodeError::UnknownDirection(other)),
    };
    r.skip(1)?;
    let header = Header {
        direction,
        ifindex: r.u32()?,
        ts_ns: r.u64()?,
        netns_ino: r.u32()?,
        cpu: r.u32()?,
    };
    let tuple = r.tuple()?;
    let body = match kind {
        EventKind::FlowNew | EventKind::FlowClose | EventKind::FlowFlush => {
            let packets = r.u64()?;
            let bytes = r.u64()?;
            let tcp_flags = r.u8()?;
            r.skip(7)?;
            let flow = FlowRecord {
                tuple,
                packets,
                bytes,
                tcp_flags,
                first_ns: r.u64()?,
            };
            match kind {
                EventKind::FlowNew => EventBody::FlowNew(flow),
                EventKind::FlowClose => EventBody::FlowClose(flow),
                _ => EventBody::FlowFlush(flow),
            }
        }
        EventKind::TcpHandshake => EventBody::Handshake {
            tuple,
            syn_ns: r.u64()?,
            synack_ns: r.u64()?,
        },
        EventKind::Payload => {
            let len = r.u16()?;
            let payload_len = r.u16()?;
            if usize::from(len) > SNIPPET_LEN {
                return Err(DecodeError::SnippetTooLong { len });
            }
            if len > payload_len {
                return Err(DecodeError::SnippetBeyondPayload { len, payload_len });
            }
            r.skip(4)?;
            EventBody::Payload {
                tuple,
                snippet: r.take(usize::from(len))?.to_vec(),
                payload_len,
            }
        }
        EventKind::Drop => {
            let reason = r.u32()?;
            r.skip(4)?;
            EventBody::Drop {
                tuple,
                reason,
                location: r.u64()?,
            }
        }
    };
    Ok(Event { header, body })
}

/// Little-endian reads at a moving offset. The record length is checked
/// before reading, so running out here would be a bug in the offsets; it
/// still returns an error rather than panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.saturating_add(n);
        let slice = self.bytes.get(self.pos..end).ok_or(DecodeError::NoHeader {
            got: self.bytes.len(),
            need: end,
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let saddr = Ipv6Addr::from(self.array::<16>()?).to_canonical();
        let daddr = Ipv6Addr::from(self.array::<16>()?).to_canonical();
        let sport = self.u16()?;
        let dport = self.u16()?;
        let protocol = self.u8()?;
        self.skip(3)?;
        Ok(Tuple {
            saddr,
            daddr,
            sport,
            dport,
            protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;
    use std::net::Ipv4Addr;

    #[test]
    fn layout_matches_events_h() {
        assert_eq!(size_of::<RawHeader>(), 24);
        assert_eq!(offset_of!(RawHeader, kind), 0);
        assert_eq!(offset_of!(RawHeader, direction), 1);
        assert_eq!(offset_of!(RawHeader, version), 2);
        assert_eq!(offset_of!(RawHeader, pad), 3);
        assert_eq!(offset_of!(RawHeader, ifindex), 4);
        assert_eq!(offset_of!(RawHeader, ts_ns), 8);
        assert_eq!(offset_of!(RawHeader, netns_ino), 16);
        assert_eq!(offset_of!(RawHeader, cpu), 20);

        assert_eq!(size_of::<RawTuple>(), 40);
        assert_eq!(offset_of!(RawTuple, saddr), 0);
        assert_eq!(offset_of!(RawTuple, daddr), 16);
        assert_eq!(offset_of!(RawTuple, sport), 32);
        assert_eq!(offset_of!(RawTuple, dport), 34);
        assert_eq!(offset_of!(RawTuple, protocol), 36);
        assert_eq!(offset_of!(RawTuple, pad), 37);

        assert_eq!(size_of::<RawFlowEvent>(), 96);
        assert_eq!(offset_of!(RawFlowEvent, t), 24);
        assert_eq!(offset_of!(RawFlowEvent, packets), 64);
        assert_eq!(offset_of!(RawFlowEvent, bytes), 72);
        assert_eq!(offset_of!(RawFlowEvent, tcp_flags), 80);
        assert_eq!(offset_of!(RawFlowEvent, pad), 81);
        assert_eq!(offset_of!(RawFlowEvent, first_ns), 88);

        assert_eq!(size_of::<RawHandshakeEvent>(), 80);
        assert_eq!(offset_of!(RawHandshakeEvent, t), 24);
        assert_eq!(offset_of!(RawHandshakeEvent, syn_ns), 64);
        assert_eq!(offset_of!(RawHandshakeEvent, synack_ns), 72);

        assert_eq!(size_of::<RawPayloadEvent>(), 200);
        assert_eq!(offset_of!(RawPayloadEvent, t), 24);
        assert_eq!(offset_of!(RawPayloadEvent, len), 64);
        assert_eq!(offset_of!(RawPayloadEvent, payload_len), 66);
        assert_eq!(offset_of!(RawPayloadEvent, pad), 68);
        assert_eq!(offset_of!(RawPayloadEvent, snippet), 72);

        assert_eq!(size_of::<RawDropEvent>(), 80);
        assert_eq!(offset_of!(RawDropEvent, t), 24);
        assert_eq!(offset_of!(RawDropEvent, reason), 64);
        assert_eq!(offset_of!(RawDropEvent, pad), 68);
        assert_eq!(offset_of!(RawDropEvent, location), 72);
    }

    #[test]
    fn record_lengths_per_kind() {
        let lens: Vec<usize> = (1..=6)
            .filter_map(EventKind::from_u8)
            .map(EventKind::record_len)
            .collect();
        assert_eq!(lens, [96, 80, 96, 96, 200, 80]);
        assert_eq!(EventKind::from_u8(0), None);
        assert_eq!(EventKind::from_u8(7), None);
    }

    fn drop_record() -> Vec<u8> {
        let mut b = vec![0u8; 80];
        b[0] = 6; // EV_DROP
        b[1] = 2; // DIR_UNKNOWN
        b[2] = 1;
        b[4..8].copy_from_slice(&3u32.to_le_bytes());
        b[8..16].copy_from_slice(&1_000u64.to_le_bytes());
        b[16..20].copy_from_slice(&4026531840u32.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24 + 10..24 + 16].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        b[24 + 16..24 + 32].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        b[56..58].copy_from_slice(&40000u16.to_le_bytes());
        b[58..60].copy_from_slice(&80u16.to_le_bytes());
        b[60] = 6;
        b[64..68].copy_from_slice(&2u32.to_le_bytes());
        b[72..80].copy_from_slice(&0xffff_ffff_8100_1234u64.to_le_bytes());
        b
    }

    #[test]
    fn decodes_a_drop_with_mapped_and_native_addresses() {
        let event = decode(&drop_record()).expect("valid drop");
        assert_eq!(
            event.header,
            Header {
                direction: Direction::Unknown,
                ifindex: 3,
                ts_ns: 1_000,
                netns_ino: 4026531840,
                cpu: 1,
            }
        );
        let EventBody::Drop {
            tuple,
            reason,
            location,
        } = event.body
        else {
            panic!("not a drop: {:?}", event.body);
        };
        assert_eq!(tuple.saddr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(tuple.daddr, IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!((tuple.sport, tuple.dport, tuple.protocol), (40000, 80, 6));
        assert_eq!(reason, 2);
        assert_eq!(location, 0xffff_ffff_8100_1234);
    }

    #[test]
    fn header_errors_name_the_problem() {
        let mut b = drop_record();
        assert_eq!(
            decode(&b[..10]),
            Err(DecodeError::NoHeader { got: 10, need: 24 })
        );
        b[2] = 2;
        assert_eq!(
            decode(&b),
            Err(DecodeError::Version {
                got: 2,
                expected: 1
            })
        );
        b[2] = 1;
        b[1] = 3;
        assert_eq!(decode(&b), Err(DecodeError::UnknownDirection(3)));
        b[1] = 0;
        b[0] = 9;
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind(9)));
        b[0] = 6;
        b.push(0);
        let err = decode(&b).expect_err("one byte too long");
        assert_eq!(err.to_string(), "EV_DROP record is 81 bytes, expected 80");
    }
}
