//! The bounded ring of recent flows, kept compact.
//!
//! A proto [`Flow`] is several hundred bytes spread over a dozen allocations;
//! a [`CompactFlow`] is 112 bytes in one slot. What makes that possible:
//! - endpoint details (namespace, pod, labels, workload, ...) live in an
//!   `Arc<Endpoint>` template without address or port, shared by every flow
//!   of that endpoint (the engine derives one per metadata entry);
//! - everything textual and rare (drop and policy reasons, interface, the L7
//!   record) lives in one `Arc<Rare>` interned by content, so identical DNS
//!   questions or HTTP requests share memory. The per-flow parts of an L7
//!   record (latency, DNS id and TTL) stay inline;
//! - numbers that usually fit in a byte or 32 bits are stored so; the rare
//!   flow with a larger value carries all its numbers in its `Rare`.
//!
//! Converting back with [`CompactFlow::to_proto`] gives the flow exactly as it
//! was stored (tested on a fully populated flow).

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use skymap_proto::v1::layer7::Record;
use skymap_proto::v1::{Endpoint, Flow, Layer4, Layer7};

use crate::dedup::IpKey;

/// Entries per intern cache. A full cache starts over: values already handed
/// out stay valid and shared, new ones just stop sharing with old ones.
pub const INTERN_CAP: usize = 65_536;

/// The shared, rarely varying text of a flow (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rare {
    drop_reason: String,
    policy_reason: String,
    interface: String,
    /// The L7 record; a DNS record's id and TTL are zero here (kept inline).
    record: Option<Record>,
    wide: Option<Wide>,
}

/// All of a flow's numbers, for the rare flow where one does not fit the
/// compact slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Wide {
    packets: u64,
    bytes: u64,
    handshake_ns: u64,
    tcp_flags: u32,
    icmp_type: u32,
    icmp_code: u32,
}

/// A borrowed view of the fields that go into a [`Rare`], so that a cache hit
/// costs a hash and a comparison, no allocation.
struct RareView<'a> {
    drop_reason: &'a str,
    policy_reason: &'a str,
    interface: &'a str,
    record: Option<&'a Record>,
    wide: Option<Wide>,
}

impl RareView<'_> {
    fn is_empty(&self) -> bool {
        self.drop_reason.is_empty()
            && self.policy_reason.is_empty()
            && self.interface.is_empty()
            && self.record.is_none()
            && self.wide.is_none()
    }

    fn hash64(&self) -> u64 {
        let mut h = FxHasher::default();
        self.drop_reason.hash(&mut h);
        self.policy_reason.hash(&mut h);
        self.interface.hash(&mut h);
        match self.record {
            None => 0u8.hash(&mut h),
            Some(Record::Dns(dns)) => {
                1u8.hash(&mut h);
                dns.query.hash(&mut h);
                dns.qtype.hash(&mut h);
                dns.rcode.hash(&mut h);
                dns.ips.hash(&mut h);
            }
            Some(Record::Http(http)) => {
                2u8.hash(&mut h);
                http.method.hash(&mut h);
                http.url.hash(&mut h);
                http.code.hash(&mut h);
                http.protocol.hash(&mut h);
            }
        }
        self.wide.hash(&mut h);
        h.finish()
    }

    fn matches(&self, rare: &Rare) -> bool {
        let record = match (self.record, &rare.record) {
            (None, None) => true,
            (Some(Record::Dns(a)), Some(Record::Dns(b))) => {
                same(&a.query, &b.query)
                    && a.qtype == b.qtype
                    && a.rcode == b.rcode
                    && a.ips.len() == b.ips.len()
                    && a.ips.iter().zip(&b.ips).all(|(x, y)| same(x, y))
            }
            (Some(Record::Http(a)), Some(Record::Http(b))) => {
                a.code == b.code
                    && same(&a.method, &b.method)
                    && same(&a.url, &b.url)
                    && same(&a.protocol, &b.protocol)
            }
            _ => false,
        };
        record
            && self.wide == rare.wide
            && same(self.drop_reason, &rare.drop_reason)
            && same(self.policy_reason, &rare.policy_reason)
            && same(self.interface, &rare.interface)
    }

    fn to_rare(&self) -> Rare {
        let record = self.record.map(|record| match record {
            Record::Dns(dns) => {
                let mut dns = dns.clone();
                dns.id = 0;
                dns.ttl = 0;
                Record::Dns(dns)
            }
            Record::Http(http) => Record::Http(http.clone()),
        });
        Rare {
            drop_reason: self.drop_reason.to_string(),
            policy_reason: self.policy_reason.to_string(),
            interface: self.interface.to_string(),
            record,
            wide: self.wide,
        }
    }
}

/// String equality that settles unequal lengths and empty strings (most of
/// a flow's optional text) without calling `memcmp`.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// Bounded intern caches for the shared parts of compact flows.
#[derive(Debug, Default)]
pub struct Interner {
    strings: FxHashSet<Arc<str>>,
    rares: FxHashMap<u64, Arc<Rare>>,
    endpoints: FxHashMap<u64, Arc<Endpoint>>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shared copy of `text`.
    pub fn str(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return shared.clone();
        }
        if self.strings.len() >= INTERN_CAP {
            self.strings.clear();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    /// A shared copy of an endpoint template (an [`Endpoint`] whose `ip` and
    /// `port` are unset); `None` for a template with nothing in it.
    pub fn endpoint(&mut self, template: Endpoint) -> Option<Arc<Endpoint>> {
        if template == Endpoint::default() {
            return None;
        }
        let mut h = FxHasher::default();
        template.hash(&mut h);
        let key = h.finish();
        if let Some(shared) = self.endpoints.get(&key)
            && **shared == template
        {
            return Some(shared.clone());
        }
        if self.endpoints.len() >= INTERN_CAP {
            self.endpoints.clear();
        }
        let shared = Arc::new(template);
        // On a hash collision the older entry stays; this one just isn't shared.
        self.endpoints.entry(key).or_insert_with(|| shared.clone());
        Some(shared)
    }

    fn rare(&mut self, view: &RareView<'_>) -> Arc<Rare> {
        let key = view.hash64();
        if let Some(shared) = self.rares.get(&key)
            && view.matches(shared)
        {
            return shared.clone();
        }
        if self.rares.len() >= INTERN_CAP {
            self.rares.clear();
        }
        let shared = Arc::new(view.to_rare());
        self.rares.entry(key).or_insert_with(|| shared.clone());
        shared
    }
}

const HAS_SOURCE: u8 = 1;
const HAS_DESTINATION: u8 = 1 << 1;
const HAS_L4: u8 = 1 << 2;
const HAS_L7: u8 = 1 << 3;
const IS_REPLY: u8 = 1 << 4;
/// `aux_ns` holds the TCP handshake time rather than the L7 latency.
const AUX_IS_HANDSHAKE: u8 = 1 << 5;

/// The size of one history slot.
pub const COMPACT_FLOW_BYTES: usize = size_of::<CompactFlow>();

/// One retained flow (see the module doc for the layout's reasons).
#[derive(Debug, Clone)]
pub struct CompactFlow {
    time_ns: i64,
    /// L7 latency, or the handshake time when `AUX_IS_HANDSHAKE` is set.
    aux_ns: u64,
    source: Option<Arc<Endpoint>>,
    destination: Option<Arc<Endpoint>>,
    /// A thin pointer (`Arc<str>` would take 16 bytes).
    node: Arc<String>,
    rare: Option<Arc<Rare>>,
    packets: u32,
    bytes: u32,
    dns_id: u32,
    dns_ttl: u32,
    source_ip: IpKey,
    destination_ip: IpKey,
    source_port: u16,
    destination_port: u16,
    verdict: u8,
    protocol: u8,
    observation_point: u8,
    traffic_direction: u8,
    l7_type: u8,
    tcp_flags: u8,
    icmp_type: u8,
    icmp_code: u8,
    bits: u8,
}

fn small(value: i32) -> u8 {
    u8::try_from(value).unwrap_or(u8::MAX)
}

/// An endpoint without its address and port: what flows to the same pod share.
pub(crate) fn strip(endpoint: &Endpoint) -> Endpoint {
    Endpoint {
        ip: prost::bytes::Bytes::new(),
        port: 0,
        ..endpoint.clone()
    }
}

impl CompactFlow {
    /// Compacts a flow whose endpoints have already been reduced to shared
    /// templates (`source` / `destination`: the endpoint without ip and port,
    /// `None` when it has nothing else). The flow's own endpoint fields other
    /// than ip and port are not read. `node` replaces `flow.node_name`.
    ///
    /// The flow must have passed the engine's validation: ports above 65535,
    /// addresses of other lengths and enum values above 255 do not survive.
    pub fn new(
        flow: &Flow,
        source: Option<Arc<Endpoint>>,
        destination: Option<Arc<Endpoint>>,
        node: Arc<String>,
        interner: &mut Interner,
    ) -> Self {
        let mut bits = 0;
        let l4 = flow.l4.unwrap_or_default();
        let l7 = flow.l7.as_ref();
        let latency_ns = l7.map_or(0, |l7| l7.latency_ns);
        let dns = match l7.and_then(|l7| l7.record.as_ref()) {
            Some(Record::Dns(dns)) => Some(dns),
            _ => None,
        };
        let needs_wide = flow.packets > u64::from(u32::MAX)
            || flow.bytes > u64::from(u32::MAX)
            || l4.tcp_flags > 0xff
            || l4.icmp_type > 0xff
            || l4.icmp_code > 0xff
            || (l4.handshake_ns != 0 && latency_ns != 0);
        let wide = needs_wide.then_some(Wide {
            packets: flow.packets,
            bytes: flow.bytes,
            handshake_ns: l4.handshake_ns,
            tcp_flags: l4.tcp_flags,
            icmp_type: l4.icmp_type,
            icmp_code: l4.icmp_code,
        });
        let view = RareView {
            drop_reason: &flow.drop_reason,
            policy_reason: &flow.policy_reason,
            interface: &flow.interface,
            record: l7.and_then(|l7| l7.record.as_ref()),
            wide,
        };
        let rare = (!view.is_empty()).then(|| interner.rare(&view));

        let aux_ns = if !needs_wide && l4.handshake_ns != 0 {
            bits |= AUX_IS_HANDSHAKE;
            l4.handshake_ns
        } else {
            latency_ns
        };
        let (packets, bytes, tcp_flags, icmp_type, icmp_code) = if needs_wide {
            (0, 0, 0, 0, 0)
        } else {
            // All fit: checked by needs_wide.
            (
                flow.packets as u32,
                flow.bytes as u32,
                l4.tcp_flags as u8,
                l4.icmp_type as u8,
                l4.icmp_code as u8,
            )
        };
        let endpoint_parts = |endpoint: Option<&Endpoint>, has: u8, bits: &mut u8| {
            let Some(endpoint) = endpoint else {
                return (IpKey::default(), 0);
            };
            *bits |= has;
            let ip = IpKey::from_bytes(&endpoint.ip).unwrap_or_default();
            (ip, u16::try_from(endpoint.port).unwrap_or(u16::MAX))
        };
        let (source_ip, source_port) = endpoint_parts(flow.source.as_ref(), HAS_SOURCE, &mut bits);
        let (destination_ip, destination_port) =
            endpoint_parts(flow.destination.as_ref(), HAS_DESTINATION, &mut bits);
        if flow.l4.is_some() {
            bits |= HAS_L4;
        }
        if l7.is_some() {
            bits |= HAS_L7;
        }
        if flow.is_reply {
            bits |= IS_REPLY;
        }
        CompactFlow {
            time_ns: flow.time_ns,
            aux_ns,
            source: if flow.source.is_some() { source } else { None },
            destination: if flow.destination.is_some() {
                destination
            } else {
                None
            },
            node,
            rare,
            packets,
            bytes,
            dns_id: dns.map_or(0, |d| d.id),
            dns_ttl: dns.map_or(0, |d| d.ttl),
            source_ip,
            destination_ip,
            source_port,
            destination_port,
            verdict: small(flow.verdict),
            protocol: small(l4.protocol),
            observation_point: small(flow.observation_point),
            traffic_direction: small(flow.traffic_direction),
            l7_type: small(l7.map_or(0, |l7| l7.r#type)),
            tcp_flags,
            icmp_type,
            icmp_code,
            bits,
        }
    }

    /// Compacts a flow as it is, interning its endpoints by content.
    pub fn from_flow(flow: &Flow, interner: &mut Interner) -> Self {
        let source = flow
            .source
            .as_ref()
            .and_then(|e| interner.endpoint(strip(e)));
        let destination = flow
            .destination
            .as_ref()
            .and_then(|e| interner.endpoint(strip(e)));
        let node = Arc::new(flow.node_name.clone());
        Self::new(flow, source, destination, node, interner)
    }

    pub fn time_ns(&self) -> i64 {
        self.time_ns
    }

    pub fn node(&self) -> &Arc<String> {
        &self.node
    }

    /// The flow as it was stored.
    pub fn to_proto(&self) -> Flow {
        let wide = self.rare.as_ref().and_then(|r| r.wide);
        let (packets, bytes, tcp_flags, icmp_type, icmp_code) = match wide {
            Some(w) => (w.packets, w.bytes, w.tcp_flags, w.icmp_type, w.icmp_code),
            None => (
                u64::from(self.packets),
                u64::from(self.bytes),
                u32::from(self.tcp_flags),
                u32::from(self.icmp_type),
                u32::from(self.icmp_code),
            ),
        };
        let handshake_is_aux = self.bits & AUX_IS_HANDSHAKE != 0;
        let handshake_ns = match wide {
            Some(w) => w.handshake_ns,
            None if handshake_is_aux => self.aux_ns,
            None => 0,
        };
        let latency_ns = if handshake_is_aux { 0 } else { self.aux_ns };
        let endpoint = |has: u8, template: &Option<Arc<Endpoint>>, ip: &IpKey, port: u16| {
            (self.bits & has != 0).then(|| {
                let mut endpoint = template.as_deref().cloned().unwrap_or_default();
                endpoint.ip = prost::bytes::Bytes::copy_from_slice(ip.as_bytes());
                endpoint.port = u32::from(port);
                endpoint
            })
        };
        let rare = self.rare.as_deref();
        let text = |pick: fn(&Rare) -> &String| rare.map(pick).cloned().unwrap_or_default();
        let l7 = (self.bits & HAS_L7 != 0).then(|| Layer7 {
            r#type: i32::from(self.l7_type),
            latency_ns,
            record: rare
                .and_then(|r| r.record.clone())
                .map(|record| match record {
                    Record::Dns(mut dns) => {
                        dns.id = self.dns_id;
                        dns.ttl = self.dns_ttl;
                        Record::Dns(dns)
                    }
                    http => http,
                }),
        });
        Flow {
            time_ns: self.time_ns,
            node_name: self.node.to_string(),
            verdict: i32::from(self.verdict),
            drop_reason: text(|r| &r.drop_reason),
            policy_reason: text(|r| &r.policy_reason),
            source: endpoint(HAS_SOURCE, &self.source, &self.source_ip, self.source_port),
            destination: endpoint(
                HAS_DESTINATION,
                &self.destination,
                &self.destination_ip,
                self.destination_port,
            ),
            l4: (self.bits & HAS_L4 != 0).then_some(Layer4 {
                protocol: i32::from(self.protocol),
                tcp_flags,
                icmp_type,
                icmp_code,
                handshake_ns,
            }),
            l7,
            observation_point: i32::from(self.observation_point),
            traffic_direction: i32::from(self.traffic_direction),
            is_reply: self.bits & IS_REPLY != 0,
            packets,
            bytes,
            interface: text(|r| &r.interface),
        }
    }
}

/// The newest flows, oldest first; the oldest is evicted when full.
#[derive(Debug)]
pub struct History {
    ring: VecDeque<CompactFlow>,
    capacity: usize,
}

impl History {
    /// Memory grows with use, in steps, up to exactly `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            capacity,
        }
    }

    pub fn push(&mut self, flow: CompactFlow) {
        if self.capacity == 0 {
            return;
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        } else if self.ring.len() == self.ring.capacity() {
            // Doubling, but never past the configured capacity, so that a full
            // ring costs exactly capacity × slot size.
            let step = self
                .ring
                .len()
                .max(1024)
                .min(self.capacity - self.ring.len());
            self.ring.reserve_exact(step);
        }
        self.ring.push_back(flow);
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Oldest first; `.rev()` for newest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &CompactFlow> {
        self.ring.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skymap_proto::v1::{Dns, Http, Workload};

    fn full_flow() -> Flow {
        let endpoint = |ip: Vec<u8>, port: u32, pod: &str| Endpoint {
            ip: ip.into(),
            port,
            namespace: "shop".into(),
            pod_name: pod.into(),
            labels: vec!["app=cart".into(), "tier=backend".into()],
            workload: Some(Workload {
                name: "cart".into(),
                kind: "Deployment".into(),
            }),
            service: "cart".into(),
            node_name: "node-a".into(),
            reserved: String::new(),
        };
        Flow {
            time_ns: 1_700_000_000_123_456_789,
            node_name: "node-a".into(),
            verdict: 2,
            drop_reason: "POLICY_DENIED".into(),
            policy_reason: "shop/deny-all".into(),
            source: Some(endpoint(vec![10, 0, 0, 1], 43512, "cart-7d9f8b6c5d-x2x4z")),
            destination: Some(endpoint(
                vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                8080,
                "db-0",
            )),
            l4: Some(Layer4 {
                protocol: 1,
                tcp_flags: 0x12,
                icmp_type: 3,
                icmp_code: 1,
                handshake_ns: 1_500,
            }),
            l7: Some(Layer7 {
                r#type: 2,
                latency_ns: 0,
                record: Some(Record::Dns(Dns {
                    query: "db.shop.svc.cluster.local.".into(),
                    qtype: 28,
                    rcode: 3,
                    ips: vec!["fd00::7".into()],
                    id: 4242,
                    ttl: 30,
                })),
            }),
            observation_point: 7,
            traffic_direction: 2,
            is_reply: true,
            packets: 3,
            bytes: 1234,
            interface: "lxc1234".into(),
        }
    }

    #[test]
    fn compact_flow_fits_the_budget() {
        assert!(size_of::<CompactFlow>() <= 112);
    }

    #[test]
    fn round_trips_a_fully_populated_flow() {
        let mut interner = Interner::new();
        let flow = full_flow();
        assert_eq!(
            CompactFlow::from_flow(&flow, &mut interner).to_proto(),
            flow
        );
    }

    #[test]
    fn round_trips_wide_numbers_and_latency_with_handshake() {
        let mut interner = Interner::new();
        let mut flow = full_flow();
        flow.packets = u64::MAX;
        flow.bytes = 1 << 40;
        flow.l4 = Some(Layer4 {
            protocol: 1,
            tcp_flags: 0x1ff,
            icmp_type: 300,
            icmp_code: 70_000,
            handshake_ns: 9,
        });
        if let Some(l7) = flow.l7.as_mut() {
            l7.latency_ns = 77;
        }
        assert_eq!(
            CompactFlow::from_flow(&flow, &mut interner).to_proto(),
            flow
        );
    }

    #[test]
    fn round_trips_sparse_flows() {
        let mut interner = Interner::new();
        let http = Flow {
            time_ns: 5,
            source: Some(Endpoint::default()),
            l7: Some(Layer7 {
                r#type: 1,
                latency_ns: 12,
                record: Some(Record::Http(Http {
                    method: "GET".into(),
                    url: "/cart?id=1".into(),
                    code: 0,
                    protocol: "HTTP/1.1".into(),
                })),
            }),
            ..Flow::default()
        };
        for flow in [Flow::default(), http] {
            assert_eq!(
                CompactFlow::from_flow(&flow, &mut interner).to_proto(),
                flow
            );
        }
    }

    #[test]
    fn identical_records_share_memory() {
        let mut interner = Interner::new();
        let a = full_flow();
        let mut b = full_flow();
        if let Some(Record::Dns(dns)) = b.l7.as_mut().and_then(|l7| l7.record.as_mut()) {
            dns.id = 1;
            dns.ttl = 29;
        }
        let ca = CompactFlow::from_flow(&a, &mut interner);
        let cb = CompactFlow::from_flow(&b, &mut interner);
        let (ra, rb) = (ca.rare.as_ref(), cb.rare.as_ref());
        assert!(ra.zip(rb).is_some_and(|(x, y)| Arc::ptr_eq(x, y)));
        assert!(
            ca.source
                .as_ref()
                .zip(cb.source.as_ref())
                .is_some_and(|(x, y)| Arc::ptr_eq(x, y))
        );
        assert_eq!(cb.to_proto(), b);
    }

    #[test]
    fn evicts_the_oldest_when_full() {
        let mut interner = Interner::new();
        let mut history = History::new(3);
        for time_ns in 1..=5 {
            let flow = Flow {
                time_ns,
                ..Flow::default()
            };
            history.push(CompactFlow::from_flow(&flow, &mut interner));
        }
        let times: Vec<i64> = history.iter().map(CompactFlow::time_ns).collect();
        assert_eq!(times, vec![3, 4, 5]);
        assert_eq!((history.len(), history.capacity()), (3, 3));

        let mut none = History::new(0);
        none.push(CompactFlow::from_flow(&Flow::default(), &mut interner));
        assert!(none.is_empty());
    }
}
