//! Writes `tests/fixtures/story.jsonl`: two minutes of a small cluster in the
//! story from DESIGN.md. For the first minute the frontend's DNS lookups to
//! kube-dns are dropped by a network policy, so its calls to the backend fail;
//! then a policy allowing DNS is applied and the edges turn healthy.
//!
//! `cargo run -p skymap-tests --bin make-story > tests/fixtures/story.jsonl`
//!
//! Deterministic: a fixed seed, a fixed start time, no clock reads. Tests
//! depend on its exact numbers: keep the output byte-identical.

use std::io::{self, BufWriter};

use skymap_proto::v1::{Dns, Protocol, TrafficDirection};
use skymap_tests::synth::{
    App, Conversation, FIN_PSH_ACK, MS, PSH_ACK, Pod, Recorder, Rng, SECOND, SYN, View,
    dns_request, dns_response, http_request, http_response, syn_ack, tcp, world, write_flows,
};

/// When the allow-DNS policy lands.
const FIX_AT: i64 = 60 * SECOND;
const DURATION: i64 = 120 * SECOND;

const FRONTEND_APP: App = App {
    namespace: "default",
    workload: "frontend",
    kind: "Deployment",
    labels: &["app=frontend"],
    service: "frontend",
};
const BACKEND_APP: App = App {
    namespace: "default",
    workload: "backend",
    kind: "StatefulSet",
    labels: &["app=backend"],
    service: "backend",
};
const COREDNS_APP: App = App {
    namespace: "kube-system",
    workload: "coredns",
    kind: "Deployment",
    labels: &["k8s-app=kube-dns"],
    service: "kube-dns",
};

const FRONTEND: [Pod; 2] = [
    Pod::new(
        &FRONTEND_APP,
        "frontend-6c9b7d8f4-k2x9p",
        "node-1",
        [10, 244, 1, 11],
    ),
    Pod::new(
        &FRONTEND_APP,
        "frontend-6c9b7d8f4-q7w4z",
        "node-1",
        [10, 244, 1, 12],
    ),
];
const BACKEND: [Pod; 2] = [
    Pod::new(&BACKEND_APP, "backend-0", "node-2", [10, 244, 2, 21]),
    Pod::new(&BACKEND_APP, "backend-1", "node-2", [10, 244, 2, 22]),
];
const KUBE_DNS: Pod = Pod::new(
    &COREDNS_APP,
    "coredns-5d78c9869d-x2v9q",
    "node-2",
    [10, 244, 2, 53],
);
const WORLD_IP: [u8; 4] = [93, 184, 216, 34];

/// This recording marks every record EGRESS, the server's side too.
const fn server_view(node: &'static str) -> View {
    View {
        direction: TrafficDirection::Egress,
        ..View::server(node)
    }
}

struct Story {
    rng: Rng,
    rec: Recorder,
}

impl Story {
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
        let talk = Conversation {
            client: client.endpoint(sport),
            server: KUBE_DNS.service_endpoint(53),
            protocol: Protocol::Udp,
        };
        let (at_client, at_dns) = (View::client(client.node), server_view(KUBE_DNS.node));
        if t < FIX_AT {
            let f = self.rec.dropped(t, &at_client, &talk);
            f.drop_reason = "NETFILTER_DROP".to_string();
            f.policy_reason = "default/frontend-egress".to_string();
            f.l7 = dns_request(query);
            return;
        }
        for view in [&at_client, &at_dns] {
            let f = self.rec.request(t, view, &talk);
            f.l7 = dns_request(query.clone());
        }
        let latency = 300_000 + self.rng.below(1_700_000) as i64;
        let nx = name.starts_with("backend.default.default.");
        let mut answer = query;
        answer.rcode = if nx { 3 } else { 0 };
        if !nx && qtype == 1 {
            answer.ips = vec!["10.96.12.7".to_string()];
            answer.ttl = 30;
        }
        for view in [&at_dns, &at_client] {
            let f = self.rec.reply(t + latency, view, &talk);
            f.bytes = 120;
            f.l7 = dns_response(answer.clone(), latency);
        }
    }

    /// A TCP connection with one HTTP request from `client` to `server:8080`.
    fn http_call(&mut self, t: i64, client: &Pod, server: &Pod) {
        let sport = 30_000 + self.rng.below(30_000) as u32;
        let talk = Conversation {
            client: client.endpoint(sport),
            server: server.service_endpoint(8080),
            protocol: Protocol::Tcp,
        };
        let handshake = 80_000 + self.rng.below(200_000) as i64;
        let slow = self.rng.below(20) == 0;
        let latency = if slow {
            180 * MS
        } else {
            8 * MS + self.rng.below(25) as i64 * MS
        };
        let code = if self.rng.below(50) == 0 { 503 } else { 200 };
        let path = ["/api/cart", "/api/products", "/api/checkout"][self.rng.below(3) as usize];
        for view in [View::client(client.node), server_view(server.node)] {
            self.rec.request(t, &view, &talk).l4 = tcp(SYN);
            self.rec.reply(t + handshake, &view, &talk).l4 = syn_ack(handshake);
            let f = self.rec.request(t + handshake + 50_000, &view, &talk);
            f.bytes = 420;
            f.l4 = tcp(PSH_ACK);
            f.l7 = http_request("GET", path);
            let f = self.rec.reply(t + handshake + latency, &view, &talk);
            f.bytes = 1_800;
            f.l4 = tcp(FIN_PSH_ACK);
            f.l7 = http_response("GET", path, code, latency);
        }
    }

    /// The backend calling out to the internet over TLS (only its side is seen).
    fn egress_to_world(&mut self, t: i64, client: &Pod) {
        let sport = 30_000 + self.rng.below(30_000) as u32;
        let talk = Conversation {
            client: client.endpoint(sport),
            server: world(WORLD_IP, 443),
            protocol: Protocol::Tcp,
        };
        let view = View::client(client.node);
        self.rec.request(t, &view, &talk).l4 = tcp(SYN);
        let handshake = 9 * MS + self.rng.below(6) as i64 * MS;
        self.rec.reply(t + handshake, &view, &talk).l4 = syn_ack(handshake);
    }
}

fn main() -> io::Result<()> {
    let mut story = Story {
        rng: Rng::new(0x5EED_CAFE_F00D_1234),
        rec: Recorder::default(),
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
    let flows = story.rec.finish();
    write_flows(&mut BufWriter::new(io::stdout().lock()), &flows)
}
