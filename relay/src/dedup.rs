//! Counting a flow seen at both ends once.
//!
//! Probes observe at `FROM_ENDPOINT` (leaving a local pod) and `TO_ENDPOINT`
//! (entering a local pod). When both the client's and the server's nodes run a
//! probe, one packet is reported twice. The client-side record always counts;
//! the server-side one counts only when the client's end is not instrumented
//! ("covered"), and otherwise only feeds `seen_at_destination`, so that
//! "sent but never received" shows as `seen_at_source > seen_at_destination`.
//!
//! [`decide`] is the whole rule, as a pure function. [`LocalIps`] remembers
//! which addresses the probes have shown to be local to some node.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;
use skymap_proto::v1::ObservationPoint;

/// What to do with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Count it on its edge.
    Count,
    /// Count it; it was seen at the client's end.
    CountSeenAtSource,
    /// Count it; it was seen at the server's end, and the client's end does
    /// not report.
    CountSeenAtDestination,
    /// The client's end reported (or will report) this flow: only note that
    /// it arrived.
    SeenAtDestination,
    /// Neither end's view: a network/host observation of traffic an endpoint
    /// probe already reports.
    Skip,
}

impl Decision {
    pub fn counts(self) -> bool {
        matches!(
            self,
            Decision::Count | Decision::CountSeenAtSource | Decision::CountSeenAtDestination
        )
    }
}

/// True for an observation taken at the server's end of the connection.
pub fn is_server_side(point: ObservationPoint, is_reply: bool) -> bool {
    matches!(
        (point, is_reply),
        (ObservationPoint::ToEndpoint, false) | (ObservationPoint::FromEndpoint, true)
    )
}

/// Decides how a record counts. `server_covered` is kept for symmetry and
/// for the network/host points; the client's side counts either way. `client_covered` / `server_covered` say
/// whether the client's and server's addresses are known to be local to a
/// node that reports flows. The client is the source of a request and the
/// destination of a reply.
pub fn decide(
    point: ObservationPoint,
    is_reply: bool,
    dropped: bool,
    client_covered: bool,
    server_covered: bool,
) -> Decision {
    use ObservationPoint::{FromEndpoint, KernelDrop, ToEndpoint};
    // A drop happens in one place only, so it can never be a duplicate.
    if dropped || point == KernelDrop {
        return Decision::Count;
    }
    let client_side = matches!(
        (point, is_reply),
        (FromEndpoint, false) | (ToEndpoint, true)
    );
    let server_side = is_server_side(point, is_reply);
    // Which end saw a record is noted whatever the coverage, so the two
    // tallies do not depend on the order in which probes connected.
    if client_side {
        Decision::CountSeenAtSource
    } else if server_side {
        if client_covered {
            Decision::SeenAtDestination
        } else {
            Decision::CountSeenAtDestination
        }
    } else if client_covered || server_covered {
        Decision::Skip
    } else {
        Decision::Count
    }
}

/// An address as a fixed-size key: the 4 or 16 bytes of an `Endpoint.ip`,
/// or none (`len == 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpKey {
    bytes: [u8; 16],
    len: u8,
}

impl Hash for IpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One wide word instead of a length-prefixed slice: cheaper with FxHash.
        state.write_u128(u128::from_ne_bytes(self.bytes));
        state.write_u8(self.len);
    }
}

impl IpKey {
    /// `None` when `bytes` is not 0, 4 or 16 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        // Fixed-size copies: no call to memcpy on the hot path.
        let mut key = IpKey::default();
        if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
            key.bytes[..4].copy_from_slice(&v4);
            key.len = 4;
        } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
            key.bytes = v6;
            key.len = 16;
        } else if !bytes.is_empty() {
            return None;
        }
        Some(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn to_ip(&self) -> Option<IpAddr> {
        match self.len {
            4 => {
                let [a, b, c, d, ..] = self.bytes;
                Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            }
            16 => Some(IpAddr::V6(Ipv6Addr::from(self.bytes))),
            _ => None,
        }
    }
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        let mut key = IpKey::default();
        match ip {
            IpAddr::V4(v4) => {
                key.bytes[..4].copy_from_slice(&v4.octets());
                key.len = 4;
            }
            IpAddr::V6(v6) => {
                key.bytes = v6.octets();
                key.len = 16;
            }
        }
        key
    }
}

/// Addresses the probes have shown to be local to a node (by an id the
/// engine assigns to node names).
///
/// Bounded: once `capacity` addresses are known it stops learning new ones
/// (already known ones still update). Addresses it cannot learn fall back on
/// metadata coverage, so the worst case is a flow counted at both ends, never
/// a flow not counted.
#[derive(Debug)]
pub struct LocalIps {
    map: FxHashMap<IpKey, u32>,
    capacity: usize,
}

impl LocalIps {
    pub const DEFAULT_CAPACITY: usize = 1_000_000;

    pub fn new(capacity: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            capacity,
        }
    }

    /// Notes that `ip` is local to `node`. Returns false when full.
    pub fn learn(&mut self, ip: IpKey, node: u32) -> bool {
        if ip.is_empty() {
            return true;
        }
        if let Some(known) = self.map.get_mut(&ip) {
            *known = node;
            return true;
        }
        if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(ip, node);
        true
    }

    pub fn node_of(&self, ip: &IpKey) -> Option<u32> {
        self.map.get(ip).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use ObservationPoint::*;

    #[test]
    fn decision_table() {
        // (point, reply, dropped, client covered, server covered) -> decision
        let table = [
            // Client side: always counted, and noted as seen at the source.
            (FromEndpoint, false, false, false, false, CountSeenAtSource),
            (FromEndpoint, false, false, true, false, CountSeenAtSource),
            (FromEndpoint, false, false, true, true, CountSeenAtSource),
            (ToEndpoint, true, false, true, true, CountSeenAtSource),
            (ToEndpoint, true, false, false, false, CountSeenAtSource),
            // Server side: counted only when the client is not covered.
            (
                ToEndpoint,
                false,
                false,
                false,
                true,
                CountSeenAtDestination,
            ),
            (ToEndpoint, false, false, true, true, SeenAtDestination),
            (FromEndpoint, true, false, true, false, SeenAtDestination),
            (
                FromEndpoint,
                true,
                false,
                false,
                true,
                CountSeenAtDestination,
            ),
            // Other points: only when neither end is covered.
            (FromNetwork, false, false, false, false, Count),
            (ToNetwork, false, false, true, false, Skip),
            (FromHost, true, false, false, true, Skip),
            (Unknown, false, false, false, false, Count),
            // Drops always count.
            (KernelDrop, false, false, true, true, Count),
            (ToEndpoint, false, true, true, true, Count),
            (ToNetwork, false, true, true, true, Count),
        ];
        for (point, reply, dropped, client, server, want) in table {
            assert_eq!(
                decide(point, reply, dropped, client, server),
                want,
                "{point:?} reply={reply} dropped={dropped} client={client} server={server}"
            );
        }
    }

    #[test]
    fn both_ends_seen_counts_once() {
        // One request seen leaving the client's node and entering the server's.
        let client_view = decide(FromEndpoint, false, false, true, true);
        let server_view = decide(ToEndpoint, false, false, true, true);
        let counted = [client_view, server_view]
            .iter()
            .filter(|d| d.counts())
            .count();
        assert_eq!(counted, 1);
        assert_eq!(
            (client_view, server_view),
            (CountSeenAtSource, SeenAtDestination)
        );
    }

    #[test]
    fn local_ips_stop_learning_when_full() {
        let mut local = LocalIps::new(2);
        let ip = |last: u8| IpKey::from_bytes(&[10, 0, 0, last]).expect("4 bytes");
        assert!(local.learn(ip(1), 0));
        assert!(local.learn(ip(2), 0));
        assert!(!local.learn(ip(3), 1));
        assert!(local.learn(ip(1), 1), "known addresses still move");
        assert_eq!(local.node_of(&ip(1)), Some(1));
        assert_eq!(local.node_of(&ip(3)), None);
        assert_eq!(local.len(), 2);
        assert!(local.learn(IpKey::default(), 0));
        assert_eq!(local.len(), 2, "empty addresses are not learned");
    }

    #[test]
    fn ip_keys_round_trip() {
        for text in ["10.1.2.3", "fd00::7"] {
            let ip: IpAddr = text.parse().expect("valid");
            let key = IpKey::from(ip);
            assert_eq!(key.to_ip(), Some(ip));
            assert_eq!(IpKey::from_bytes(key.as_bytes()), Some(key));
        }
        assert_eq!(IpKey::from_bytes(&[1, 2, 3]), None);
        assert_eq!(IpKey::from_bytes(&[]).map(|k| k.is_empty()), Some(true));
    }
}
