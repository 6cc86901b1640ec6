//! Writes `tests/fixtures/story.jsonl`: two minutes of a small cluster in the
//! story from DESIGN.md. For the first minute the frontend's DNS lookups to
//! kube-dns are dropped by a network policy, so its calls to the backend fail;
//! then a policy allowing DNS is applied and the edges turn healthy.
//!
//! `cargo run -p skymap-tests --bin make-story > tests/fixtures/story.jsonl`
//!
//! Deterministic: a fixed seed, a fixed start time, no clock reads.

use std::io::{self, BufWriter, Write};

use skymap_proto::v1::{
    Dns, Endpoint, Flow, Http, L7Type, Layer4, Layer7, ObservationPoint, Protocol,
    TrafficDirection, Verdict, Workload, layer7,
};

/// 2026-11-26T06:00:00Z.
const START_NS: i64 = 1_795_672_800_000_000_000;
const SECOND: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// When the allow-DNS policy lands.
const FIX_AT: i64 = 60 * SECOND;
const DURATION: i64 = 120 * SECOND;

#[derive(Clone)]
struct Pod {
    ip: [u8; 4],
    namespace: &'static str,
    name: &'static str,
    app_label: &'static str,
    workload: &'static str,
    kind: &'static str,
    node: &'static str,
}

const FRONTEND: [Pod; 2] = [
    pod(
        [10, 244, 1, 11],
        "default",
        "frontend-6c9b7d8f4-k2x9p",
        "app=frontend",
        "frontend",
        "Deployment",
        "node-1",
    ),
    pod(
        [10, 244, 1, 12],
        "default",
        "frontend-6c9b7d8f4-q7w4z",
        "app=frontend",
        "frontend",
        "Deployment",
        "node-1",
    ),
];
const BACKEND: [Pod; 2] = [
    pod(
        [10, 244, 2, 21],
        "default",
        "backend-0",
        "app=backend",
        "backend",
        "StatefulSet",
        "node-2",
    ),
    pod(
        [10, 244, 2, 22],
        "default",
        "backend-1",
        "app=backend",
        "backend",
        "StatefulSet",
        "node-2",
    ),
];
const KUBE_DNS: Pod = pod(
    [10, 244, 2, 53],
    "kube-system",
    "coredns-5d78c9869d-x2v9q",
    "k8s-app=kube-dns",
    "coredns",
    "Deployment",
    "node-2",
);
const WORLD_IP: [u8; 4] = [93, 184, 216, 34];

#[allow(clippy::too_many_arguments)]
const fn pod(
    ip: [u8; 4],
    namespace: &'static str,
    name: &'static str,
    app_label: &'static str,
    workload: &'static str,
    kind: &'static str,
    node: &'static str,
) -> Pod {
    Pod {
        ip,
        namespace,
        name,
        app_label,
        workload,
        kind,
        node,
    }
}

/// xorshift64*: small, seeded, good enough for traffic shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn endpoint(pod: &Pod, port: u32) -> Endpoint {
    Endpoint {
        ip: pod.ip.to_vec().into(),
        port,
        namespace: pod.namespace.to_string(),
        pod_name: pod.name.to_string(),
        labels: vec![pod.app_label.to_string()],
        workload: Some(Workload {
            name: pod.workload.to_string(),
            kind: pod.kind.to_string(),
        }),
        node_name: pod.node.to_string(),
        ..Default::default()
    }
}

fn world(port: u32) -> Endpoint {
    Endpoint {
        ip: WORLD_IP.to_vec().into(),
        port,
        reserved: "world".to_string(),
        ..Default::default()
    }
}

struct Story {
    rng: Rng,
    flows: Vec<Flow>,
}

impl Story {
    #[allow(clippy::too_many_arguments)]
    fn flow(
        &mut self,
        time: i64,
        node: &str,
        source: Endpoint,
        destination: Endpoint,
        protocol: Protocol,
        point: ObservationPoint,
        reply: bool,
        direction: TrafficDirection,
    ) -> &mut Flow {
        self.flows.push(Flow {
            time_ns: START_NS + time,
            node_name: node.to_string(),
            verdict: Verdict::Forwarded as i32,
            source: Some(source),
            destination: Some(destination),
            l4: Some(Layer4 {
                protocol: protocol as i32,
                ..Default::default()
            }),
            observation_point: point as i32,
            traffic_direction: direction as i32,
            is_reply: reply,
            packets: 1,
            bytes: 74,
            interface: String::new(),
            ..Default::default()
        });
        let last = self.flows.len() - 1;
        &mut self.flows[last]
    }

    /// A DNS lookup from `client`; dropped by policy before `FIX_AT`.
    fn dns_lookup(&mut self, t: i64, client: &Pod, name: &str, qtype: u32) {
        let sport = 30_000 + self.rng.below(30_000) as u32;
        let id = self.rng.below(65_536) as u32;
        let query = Dns {
            query: name.to_string(),
            qtype,
            id,
            ..Default::default()
        };
        let src = endpoint(client, sport);
        let mut dst = endpoint(&KUBE_DNS, 53);
        dst.service = "kube-dns".to_string();
        if t < FIX_AT {
            let f = self.flow(
                t,
                client.node,
                src,
                dst,
                Protocol::Udp,
                ObservationPoint::KernelDrop,
                false,
                TrafficDirection::Egress,
            );
            f.verdict = Verdict::Dropped as i32;
            f.drop_reason = "NETFILTER_DROP".to_string();
            f.policy_reason = "default/frontend-egress".to_string();
            f.l7 = Some(Layer7 {
                r#type: L7Type::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Dns(query)),
            });
            return;
        }
        for (node, point) in [
            (client.node, ObservationPoint::FromEndpoint),
            (KUBE_DNS.node, ObservationPoint::ToEndpoint),
        ] {
            let f = self.flow(
                t,
                node,
                src.clone(),
                dst.clone(),
                Protocol::Udp,
                point,
                false,
                TrafficDirection::Egress,
            );
            f.l7 = Some(Layer7 {
                r#type: L7Type::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Dns(query.clone())),
            });
        }
        let latency = 300_000 + self.rng.below(1_700_000) as i64;
        let nx = name.starts_with("backend.default.default.");
        let mut answer = query.clone();
        answer.rcode = if nx { 3 } else { 0 };
        if !nx && qtype == 1 {
            answer.ips = vec!["10.96.12.7".to_string()];
            answer.ttl = 30;
        }
        for (node, point) in [
            (KUBE_DNS.node, ObservationPoint::FromEndpoint),
            (client.node, ObservationPoint::ToEndpoint),
        ] {
            let f = self.flow(
                t + latency,
                node,
                dst.clone(),
                src.clone(),
                Protocol::Udp,
                point,
                true,
                TrafficDirection::Egress,
            );
            f.bytes = 120;
            f.l7 = Some(Layer7 {
                r#type: L7Type::Response as i32,
                latency_ns: latency as u64,
                record: Some(layer7::Record::Dns(answer.clone())),
            });
        }
    }

    /// A TCP connection with one HTTP request from `client` to `server:8080`.
    fn http_call(&mut self, t: i64, client: &Pod, server: &Pod) {
        let sport = 30_000 + self.rng.below(30_000) as u32;
        let src = endpoint(client, sport);
        let mut dst = endpoint(server, 8080);
        dst.service = "backend".to_string();
        let handshake = 80_000 + self.rng.below(200_000) as i64;
        let slow = self.rng.below(20) == 0;
        let latency = if slow {
            180 * MS
        } else {
            8 * MS + self.rng.below(25) as i64 * MS
        };
        let code = if self.rng.below(50) == 0 { 503 } else { 200 };
        let path = ["/api/cart", "/api/products", "/api/checkout"][self.rng.below(3) as usize];
        let both = [
            (
                client.node,
                ObservationPoint::FromEndpoint,
                ObservationPoint::ToEndpoint,
            ),
            (
                server.node,
                ObservationPoint::ToEndpoint,
                ObservationPoint::FromEndpoint,
            ),
        ];
        for (node, out, back) in both {
            let f = self.flow(
                t,
                node,
                src.clone(),
                dst.clone(),
                Protocol::Tcp,
                out,
                false,
                TrafficDirection::Egress,
            );
            f.l4 = Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: 0x02,
                ..Default::default()
            });
            let f = self.flow(
                t + handshake,
                node,
                dst.clone(),
                src.clone(),
                Protocol::Tcp,
                back,
                true,
                TrafficDirection::Egress,
            );
            f.l4 = Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: 0x12,
                handshake_ns: handshake as u64,
                ..Default::default()
            });
            let f = self.flow(
                t + handshake + 50_000,
                node,
                src.clone(),
                dst.clone(),
                Protocol::Tcp,
                out,
                false,
                TrafficDirection::Egress,
            );
            f.bytes = 420;
            f.l4 = Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: 0x18,
                ..Default::default()
            });
            f.l7 = Some(Layer7 {
                r#type: L7Type::Request as i32,
                latency_ns: 0,
                record: Some(layer7::Record::Http(Http {
                    method: "GET".into(),
                    url: path.into(),
                    code: 0,
                    protocol: "HTTP/1.1".into(),
                })),
            });
            let f = self.flow(
                t + handshake + latency,
                node,
                dst.clone(),
                src.clone(),
                Protocol::Tcp,
                back,
                true,
                TrafficDirection::Egress,
            );
            f.bytes = 1_800;
            f.l4 = Some(Layer4 {
                protocol: Protocol::Tcp as i32,
                tcp_flags: 0x19,
                ..Default::default()
            });
            f.l7 = Some(Layer7 {
                r#type: L7Type::Response as i32,
                latency_ns: latency as u64,
                record: Some(layer7::Record::Http(Http {
                    method: "GET".into(),
                    url: path.into(),
                    code,
                    protocol: "HTTP/1.1".into(),
                })),
            });
        }
    }

    /// The backend calling out to the internet over TLS (only its side is seen).
    fn egress_to_world(&mut self, t: i64, client: &Pod) {
        let sport = 30_000 + self.rng.below(30_000) as u32;
        let f = self.flow(
            t,
            client.node,
            endpoint(client, sport),
            world(443),
            Protocol::Tcp,
            ObservationPoint::FromEndpoint,
            false,
            TrafficDirection::Egress,
        );
        f.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: 0x02,
            ..Default::default()
        });
        let handshake = 9 * MS + self.rng.below(6) as i64 * MS;
        let f = self.flow(
            t + handshake,
            client.node,
            world(443),
            endpoint(client, sport),
            Protocol::Tcp,
            ObservationPoint::ToEndpoint,
            true,
            TrafficDirection::Egress,
        );
        f.l4 = Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: 0x12,
            handshake_ns: handshake as u64,
            ..Default::default()
        });
    }
}

fn main() -> io::Result<()> {
    let mut story = Story {
        rng: Rng(0x5EED_CAFE_F00D_1234),
        flows: Vec::new(),
    };
    let mut t = 0;
    while t < DURATION {
        for (i, client) in FRONTEND.iter().enumerate() {
            let at = t + i as i64 * 137 * MS;
            // "backend.default" goes through the search path first (ndots:5), as in
            // a pod: the first expansion is NXDOMAIN.
            story.dns_lookup(at, client, "backend.default.default.svc.cluster.local.", 1);
            story.dns_lookup(at + MS, client, "backend.default.svc.cluster.local.", 1);
            story.dns_lookup(
                at + 2 * MS,
                client,
                "backend.default.svc.cluster.local.",
                28,
            );
            if at >= FIX_AT {
                let server = &BACKEND[story.rng.below(2) as usize];
                story.http_call(at + 5 * MS, client, server);
            }
        }
        if t % (5 * SECOND) == 0 {
            let backend = &BACKEND[story.rng.below(2) as usize];
            story.egress_to_world(t + 300 * MS, backend);
        }
        t += SECOND;
    }
    story.flows.sort_by_key(|f| f.time_ns);
    let mut out = BufWriter::new(io::stdout().lock());
    for flow in &story.flows {
        skymap_proto::jsonl::write_flow(&mut out, flow)?;
    }
    out.flush()
}
