//! Building blocks for the synthetic recording (`story.jsonl`):
//! a seeded random source, pods and the endpoints they appear as, the
//! observation views of a node's probe, and a recorder that collects flow
//! records and writes them as JSON lines.
//!
//! Everything is deterministic: no clock reads, and floating point limited to
//! basic arithmetic (see [`exp`]) so that every platform writes the same bytes.

use std::io::{self, Write};

use skymap_proto::v1::{
    Dns, Endpoint, Flow, Http, L7Type, Layer4, Layer7, ObservationPoint, Protocol,
    TrafficDirection, Verdict, Workload, layer7,
};

/// 2026-11-26T06:00:00Z: when the recordings start.
pub const START_NS: i64 = 1_795_672_800_000_000_000;
pub const SECOND: i64 = 1_000_000_000;
pub const MS: i64 = 1_000_000;
pub const US: i64 = 1_000;

/// TCP flag sets as they appear in `Layer4::tcp_flags`.
pub const SYN: u32 = 0x02;
pub const SYN_ACK: u32 = 0x12;
pub const RST_ACK: u32 = 0x14;
pub const PSH_ACK: u32 = 0x18;
pub const FIN_PSH_ACK: u32 = 0x19;

/// DNS query types and response codes used by the recordings.
pub const QTYPE_A: u32 = 1;
pub const QTYPE_AAAA: u32 = 28;
pub const RCODE_NOERROR: u32 = 0;
pub const RCODE_SERVFAIL: u32 = 2;
pub const RCODE_NXDOMAIN: u32 = 3;

/// xorshift64*: small, seeded, good enough for traffic shapes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// `seed` must not be zero (xorshift would stay at zero).
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below(hi.saturating_sub(lo).max(0) as u64) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal deviate, approximated by the Irwin–Hall sum of 12
    /// uniforms (bounded at ±6, which suits latencies).
    pub fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
    }

    /// A log-normal duration: `median_ns` scaled by e^(sigma·N(0,1)), at least 1.
    /// The p99/p50 ratio is about e^(2.33·sigma).
    pub fn log_normal(&mut self, median_ns: i64, sigma: f64) -> i64 {
        ((median_ns as f64 * exp(sigma * self.normal())) as i64).max(1)
    }

    /// One element of a static table. `items` must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// e^x from +, -, * and / only: libm's `exp` may differ between platforms in
/// the last bit, which would change the recordings' bytes. Accurate to about
/// 1e-13 relative for |x| ≤ 10.
pub fn exp(x: f64) -> f64 {
    // e^x = (e^(x/1024))^1024, with a short Taylor series for the small power.
    let y = x / 1024.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=8 {
        term = term * y / f64::from(k);
        sum += term;
    }
    for _ in 0..10 {
        sum *= sum;
    }
    sum
}

/// What a workload's pods share.
#[derive(Debug)]
pub struct App {
    pub namespace: &'static str,
    pub workload: &'static str,
    /// Owner kind: "Deployment", "StatefulSet", "DaemonSet".
    pub kind: &'static str,
    /// As "key=value".
    pub labels: &'static [&'static str],
    /// The Service in front of the pods ("" for none).
    pub service: &'static str,
}

#[derive(Debug)]
pub struct Pod {
    pub app: &'static App,
    pub name: &'static str,
    pub node: &'static str,
    pub ip: [u8; 4],
}

impl Pod {
    pub const fn new(
        app: &'static App,
        name: &'static str,
        node: &'static str,
        ip: [u8; 4],
    ) -> Self {
        Self {
            app,
            name,
            node,
            ip,
        }
    }

    /// The pod as a flow endpoint.
    pub fn endpoint(&self, port: u32) -> Endpoint {
        Endpoint {
            ip: self.ip.to_vec().into(),
            port,
            namespace: self.app.namespace.to_string(),
            pod_name: self.name.to_string(),
            labels: self.app.labels.iter().map(|l| l.to_string()).collect(),
            workload: Some(Workload {
                name: self.app.workload.to_string(),
                kind: self.app.kind.to_string(),
            }),
            node_name: self.node.to_string(),
            ..Default::default()
        }
    }

    /// The pod reached through its Service.
    pub fn service_endpoint(&self, port: u32) -> Endpoint {
        Endpoint {
            service: self.app.service.to_string(),
            ..self.endpoint(port)
        }
    }
}

/// An address outside the cluster.
pub fn world(ip: [u8; 4], port: u32) -> Endpoint {
    Endpoint {
        ip: ip.to_vec().into(),
        port,
        reserved: "world".to_string(),
        ..Default::default()
    }
}

/// Where one node's probe sees a connection: `out` for the client's packets,
/// `back` for the server's replies.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub node: &'static str,
    pub out: ObservationPoint,
    pub back: ObservationPoint,
    pub direction: TrafficDirection,
}

impl View {
    /// At the client's node: requests leave its pod, replies enter it.
    pub const fn client(node: &'static str) -> Self {
        Self {
            node,
            out: ObservationPoint::FromEndpoint,
            back: ObservationPoint::ToEndpoint,
            direction: TrafficDirection::Egress,
        }
    }

    /// At the server's node: requests enter its pod, replies leave it.
    pub const fn server(node: &'static str) -> Self {
        Self {
            node,
            out: ObservationPoint::ToEndpoint,
            back: ObservationPoint::FromEndpoint,
            direction: TrafficDirection::Ingress,
        }
    }
}

/// The two ends of a conversation, and its protocol.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub client: Endpoint,
    pub server: Endpoint,
    pub protocol: Protocol,
}

/// Collects flow records.
#[derive(Debug, Default)]
pub struct Recorder {
    pub flows: Vec<Flow>,
}

impl Recorder {
    /// One forwarded record of one 74-byte packet at `time` (from the start),
    /// with only the protocol in `l4`.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        time: i64,
        view: &View,
        point: ObservationPoint,
        reply: bool,
        source: &Endpoint,
        destination: &Endpoint,
        protocol: Protocol,
    ) -> &mut Flow {
        self.flows.push(Flow {
            time_ns: START_NS + time,
            node_name: view.node.to_string(),
            verdict: Verdict::Forwarded as i32,
            source: Some(source.clone()),
            destination: Some(destination.clone()),
            l4: Some(Layer4 {
                protocol: protocol as i32,
                ..Default::default()
            }),
            observation_point: point as i32,
            traffic_direction: view.direction as i32,
            is_reply: reply,
            packets: 1,
            bytes: 74,
            ..Default::default()
        });
        let last = self.flows.len() - 1;
        &mut self.flows[last]
    }

    /// A client → server packet as `view` sees it.
    pub fn request(&mut self, time: i64, view: &View, talk: &Conversation) -> &mut Flow {
        let (client, server) = (&talk.client, &talk.server);
        self.push(time, view, view.out, false, client, server, talk.protocol)
    }

    /// A server → client packet as `view` sees it.
    pub fn reply(&mut self, time: i64, view: &View, talk: &Conversation) -> &mut Flow {
        let (client, server) = (&talk.client, &talk.server);
        self.push(time, view, view.back, true, server, client, talk.protocol)
    }

    /// A client → server packet dropped by the kernel of `view.node`; the
    /// caller sets the drop and policy reasons.
    pub fn dropped(&mut self, time: i64, view: &View, talk: &Conversation) -> &mut Flow {
        let (client, server) = (&talk.client, &talk.server);
        let point = ObservationPoint::KernelDrop;
        let flow = self.push(time, view, point, false, client, server, talk.protocol);
        flow.verdict = Verdict::Dropped as i32;
        flow
    }

    /// The records in time order (records at the same time keep their order).
    pub fn finish(mut self) -> Vec<Flow> {
        self.flows.sort_by_key(|f| f.time_ns);
        self.flows
    }
}

pub fn tcp(flags: u32) -> Option<Layer4> {
    Some(tcp_flags(flags))
}

fn tcp_flags(flags: u32) -> Layer4 {
    Layer4 {
        protocol: Protocol::Tcp as i32,
        tcp_flags: flags,
        ..Default::default()
    }
}

/// The SYN/ACK that completes a handshake started `handshake_ns` earlier.
pub fn syn_ack(handshake_ns: i64) -> Option<Layer4> {
    Some(Layer4 {
        handshake_ns: handshake_ns.max(0) as u64,
        ..tcp_flags(SYN_ACK)
    })
}

pub fn dns_request(query: Dns) -> Option<Layer7> {
    l7(L7Type::Request, 0, layer7::Record::Dns(query))
}

pub fn dns_response(answer: Dns, latency_ns: i64) -> Option<Layer7> {
    l7(L7Type::Response, latency_ns, layer7::Record::Dns(answer))
}

pub fn http_request(method: &str, url: &str) -> Option<Layer7> {
    l7(
        L7Type::Request,
        0,
        layer7::Record::Http(http(method, url, 0)),
    )
}

pub fn http_response(method: &str, url: &str, code: u32, latency_ns: i64) -> Option<Layer7> {
    l7(
        L7Type::Response,
        latency_ns,
        layer7::Record::Http(http(method, url, code)),
    )
}

fn http(method: &str, url: &str, code: u32) -> Http {
    Http {
        method: method.into(),
        url: url.into(),
        code,
        protocol: "HTTP/1.1".into(),
    }
}

fn l7(kind: L7Type, latency_ns: i64, record: layer7::Record) -> Option<Layer7> {
    Some(Layer7 {
        r#type: kind as i32,
        latency_ns: latency_ns.max(0) as u64,
        record: Some(record),
    })
}

/// Writes the flows as JSON lines.
pub fn write_flows(out: &mut impl Write, flows: &[Flow]) -> io::Result<()> {
    for flow in flows {
        skymap_proto::jsonl::write_flow(out, flow)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (1.0, std::f64::consts::E),
            (-2.0, 0.135_335_283_236_612_7),
            (4.5, 90.017_131_300_521_82),
        ] {
            let got = exp(x);
            assert!(
                (got - want).abs() / want < 1e-12,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert_eq!(Rng::new(7).below(0), 0);
    }

    #[test]
    fn log_normal_has_the_asked_median_and_tail() {
        let mut rng = Rng::new(0x1234_5678);
        let mut samples: Vec<i64> = (0..20_000).map(|_| rng.log_normal(12 * MS, 0.8)).collect();
        samples.sort_unstable();
        let p50 = samples[samples.len() / 2] as f64;
        let p99 = samples[samples.len() * 99 / 100] as f64;
        assert!((p50 / (12 * MS) as f64 - 1.0).abs() < 0.05, "p50 {p50}");
        // e^(2.33 * 0.8) ≈ 6.4; Irwin–Hall's tail is a little lighter.
        let ratio = p99 / p50;
        assert!((5.0..7.0).contains(&ratio), "p99/p50 {ratio}");
    }

    #[test]
    fn records_take_the_views_point_and_direction() {
        const APP: App = App {
            namespace: "shop",
            workload: "cart",
            kind: "Deployment",
            labels: &["app=cart"],
            service: "cart",
        };
        static CART: Pod = Pod::new(&APP, "cart-5d8f7b9c4-q2lxs", "node-2", [10, 244, 2, 7]);
        let talk = Conversation {
            client: world([203, 0, 113, 9], 40_000),
            server: CART.service_endpoint(8080),
            protocol: Protocol::Tcp,
        };
        let mut rec = Recorder::default();
        let view = View::server("node-2");
        rec.reply(5, &view, &talk);
        rec.request(3, &view, &talk);
        let flows = rec.finish();
        assert_eq!(flows[0].time_ns, START_NS + 3);
        assert!(!flows[0].is_reply);
        assert_eq!(
            flows[0].observation_point,
            ObservationPoint::ToEndpoint as i32
        );
        assert_eq!(flows[0].traffic_direction, TrafficDirection::Ingress as i32);
        assert!(flows[1].is_reply);
        let source = flows[1].source.as_ref().map(|e| e.service.as_str());
        assert_eq!(source, Some("cart"));
        assert_eq!(flows[1].node_name, "node-2");
    }
}
