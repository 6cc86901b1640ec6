//! The recording `skymap demo` replays (`tests/fixtures/demo.jsonl`): 150 s of
//! a three-node shop, in the story from DESIGN.md — "It's not DNS. There's no
//! way it's DNS. It was DNS."
//!
//! A new egress policy (`shop/frontend-egress`) forgot DNS: for the first
//! [`FIX_AT`] the frontend's lookups to kube-dns are dropped, so it reaches
//! none of its backends and answers its users 503 when its 1 s deadline
//! passes. Then the allow-DNS rule lands, the frontend resolves, connects and
//! the pages turn 2xx. Meanwhile the rest of the cluster works as clusters
//! do: search-path NXDOMAINs, AAAA next to A, a SERVFAIL hot spot on the
//! payment gateway's name, a few 5xx, Prometheus scraping (and being refused
//! by a port nothing listens on), and some edges reported by both nodes.
//!
//! Requests are simulated end to end: a handler's downstream calls happen
//! inside its request, connections are pooled and resolve their name when
//! they are (re)opened, and every record a probe would see is written with
//! the delays of its place on the path.

use std::collections::BTreeMap;

use skymap_proto::v1::{Dns, Endpoint, Flow, L7Type, Layer7, Protocol};

use crate::synth::{
    App, Conversation, MS, PSH_ACK, Pod, QTYPE_A, QTYPE_AAAA, RCODE_NOERROR, RCODE_NXDOMAIN,
    RCODE_SERVFAIL, RST_ACK, Recorder, Rng, SECOND, SYN, SYN_ACK, US, View, dns_request,
    dns_response, http_request, http_response, syn_ack, tcp, world,
};

/// When the allow-DNS policy lands.
pub const FIX_AT: i64 = 60 * SECOND;
/// How long the recording lasts (the last replies may land a little later).
pub const DURATION: i64 = 150 * SECOND;
/// The policy that drops the frontend's DNS.
pub const DROP_POLICY: &str = "shop/frontend-egress";
pub const DROP_REASON: &str = "NETFILTER_DROP";

const SEED: u64 = 0xABBA_1001;
/// The payment gateway's DNS provider has trouble: upstream SERVFAILs.
const SERVFAIL_WINDOW: (i64, i64) = (100 * SECOND, 120 * SECOND);
/// The frontend's deadline for a backend call, DNS included.
const FRONTEND_DEADLINE: i64 = 1_000 * MS;

const fn deployment(
    namespace: &'static str,
    workload: &'static str,
    labels: &'static [&'static str],
) -> App {
    App {
        namespace,
        workload,
        kind: "Deployment",
        labels,
        service: workload,
    }
}

const fn stateful_set(
    namespace: &'static str,
    workload: &'static str,
    labels: &'static [&'static str],
) -> App {
    App {
        kind: "StatefulSet",
        ..deployment(namespace, workload, labels)
    }
}

const FRONTEND: App = deployment("shop", "frontend", &["app=frontend", "tier=web"]);
const CART: App = deployment("shop", "cart", &["app=cart", "tier=api"]);
const CHECKOUT: App = deployment("shop", "checkout", &["app=checkout", "tier=api"]);
const CATALOG: App = deployment("shop", "catalog", &["app=catalog", "tier=api"]);
const RECOMMENDATIONS: App = deployment(
    "shop",
    "recommendations",
    &["app=recommendations", "tier=api"],
);
const NOTIFICATIONS: App = deployment(
    "shop",
    "notifications",
    &["app=notifications", "tier=worker"],
);
const PAYMENTS_API: App = deployment("payments", "payments-api", &["app=payments-api"]);
const FRAUD_CHECK: App = deployment("payments", "fraud-check", &["app=fraud-check"]);
const POSTGRES: App = stateful_set("data", "postgres", &["app=postgres"]);
const REDIS: App = stateful_set("data", "redis", &["app=redis"]);
const KAFKA: App = stateful_set("data", "kafka", &["app=kafka"]);
const KUBE_DNS: App = deployment("kube-system", "kube-dns", &["k8s-app=kube-dns"]);
const PROMETHEUS: App = stateful_set("monitoring", "prometheus", &["app=prometheus"]);
const GRAFANA: App = deployment("monitoring", "grafana", &["app=grafana"]);
const KUBE_STATE_METRICS: App = deployment(
    "monitoring",
    "kube-state-metrics",
    &["app=kube-state-metrics"],
);

/// A pod on node-`node`, whose pod CIDR is 10.244.`node`.0/24.
const fn pod(app: &'static App, name: &'static str, node: u8, host: u8) -> Pod {
    const NODES: [&str; 4] = ["", "node-1", "node-2", "node-3"];
    Pod::new(app, name, NODES[node as usize], [10, 244, node, host])
}

const FRONTEND_PODS: &[Pod] = &[
    pod(&FRONTEND, "frontend-7f9c6d8b5-x2k4p", 1, 14),
    pod(&FRONTEND, "frontend-7f9c6d8b5-m8zqt", 2, 15),
    pod(&FRONTEND, "frontend-7f9c6d8b5-h5wvn", 3, 16),
];
const CART_PODS: &[Pod] = &[
    pod(&CART, "cart-5d8f7b9c4-q2lxs", 2, 19),
    pod(&CART, "cart-5d8f7b9c4-r7mtz", 3, 20),
];
const CHECKOUT_PODS: &[Pod] = &[
    pod(&CHECKOUT, "checkout-6b7c9d5f8-bn4wk", 1, 23),
    pod(&CHECKOUT, "checkout-6b7c9d5f8-t9dgr", 3, 24),
];
const CATALOG_PODS: &[Pod] = &[
    pod(&CATALOG, "catalog-84c5d9f7b-2zkqm", 1, 31),
    pod(&CATALOG, "catalog-84c5d9f7b-fj6vx", 2, 33),
    pod(&CATALOG, "catalog-84c5d9f7b-wp5ht", 3, 35),
];
const RECOMMENDATIONS_PODS: &[Pod] = &[
    pod(&RECOMMENDATIONS, "recommendations-9b6d7c8f5-lq4sn", 2, 40),
    pod(&RECOMMENDATIONS, "recommendations-9b6d7c8f5-v2hcx", 3, 41),
];
const NOTIFICATIONS_PODS: &[Pod] = &[pod(&NOTIFICATIONS, "notifications-5f4b8c7d9-kz8rn", 1, 45)];
const PAYMENTS_API_PODS: &[Pod] = &[
    pod(&PAYMENTS_API, "payments-api-6d9f5b8c7-c4mpx", 2, 48),
    pod(&PAYMENTS_API, "payments-api-6d9f5b8c7-s7vbl", 3, 49),
];
const FRAUD_CHECK_PODS: &[Pod] = &[pod(&FRAUD_CHECK, "fraud-check-7c8d6f9b4-g5jwz", 1, 52)];
const POSTGRES_PODS: &[Pod] = &[pod(&POSTGRES, "postgres-0", 3, 60)];
const REDIS_PODS: &[Pod] = &[pod(&REDIS, "redis-0", 1, 61)];
const KAFKA_PODS: &[Pod] = &[
    pod(&KAFKA, "kafka-0", 1, 71),
    pod(&KAFKA, "kafka-1", 2, 72),
    pod(&KAFKA, "kafka-2", 3, 73),
];
const KUBE_DNS_PODS: &[Pod] = &[
    pod(&KUBE_DNS, "kube-dns-6c8d7b9f5-8mzrx", 1, 2),
    pod(&KUBE_DNS, "kube-dns-6c8d7b9f5-tq2wn", 3, 3),
];
const PROMETHEUS_PODS: &[Pod] = &[pod(&PROMETHEUS, "prometheus-0", 2, 90)];
const GRAFANA_PODS: &[Pod] = &[pod(&GRAFANA, "grafana-8d5c7f6b9-j4lzt", 3, 95)];
const KUBE_STATE_METRICS_PODS: &[Pod] = &[pod(
    &KUBE_STATE_METRICS,
    "kube-state-metrics-5b9f8d7c6-n2rkp",
    2,
    93,
)];

/// Where users browse from.
const USERS: &[[u8; 4]] = &[
    [203, 0, 113, 7],
    [203, 0, 113, 23],
    [203, 0, 113, 45],
    [203, 0, 113, 88],
    [203, 0, 113, 142],
    [203, 0, 113, 201],
    [198, 51, 100, 12],
    [198, 51, 100, 77],
    [198, 51, 100, 164],
];
/// kube-dns forwards names outside the cluster here.
const UPSTREAM_RESOLVER: [u8; 4] = [192, 0, 2, 53];

/// Something clients connect to: a Service's pods, or addresses outside.
#[derive(Debug)]
struct Target {
    /// Empty for a destination outside the cluster.
    pods: &'static [Pod],
    /// Outside the cluster: its DNS name (with the final dot) and addresses.
    name: &'static str,
    world: &'static [[u8; 4]],
    /// DNS's A answer for a Service: its cluster IP.
    cluster_ip: &'static str,
    port: u32,
    /// Conversations with it are reported by the client's and the server's
    /// node (the others only by the client's, to keep the recording small).
    both_ends: bool,
    /// How long a pooled connection to it lives, at most.
    keep_alive: i64,
}

impl Target {
    /// The name DNS knows it by, fully qualified.
    fn fqdn(&self) -> String {
        match self.pods.first() {
            Some(pod) => format!(
                "{}.{}.svc.cluster.local.",
                pod.app.service, pod.app.namespace
            ),
            None => self.name.to_string(),
        }
    }

    /// Its Service's name: what a client in its namespace dials.
    fn short_name(&self) -> &'static str {
        self.pods.first().map_or(self.name, |pod| pod.app.service)
    }
}

const fn service(pods: &'static [Pod], cluster_ip: &'static str, port: u32) -> Target {
    Target {
        pods,
        name: "",
        world: &[],
        cluster_ip,
        port,
        both_ends: false,
        keep_alive: 60 * SECOND,
    }
}

const fn both_ends(target: Target) -> Target {
    Target {
        both_ends: true,
        ..target
    }
}

const CART_SVC: Target = service(CART_PODS, "10.96.33.7", 8080);
const CHECKOUT_SVC: Target = service(CHECKOUT_PODS, "10.96.41.12", 8080);
const CATALOG_SVC: Target = both_ends(service(CATALOG_PODS, "10.96.27.31", 8080));
const RECOMMENDATIONS_SVC: Target = service(RECOMMENDATIONS_PODS, "10.96.52.8", 8080);
const PAYMENTS_API_SVC: Target = both_ends(service(PAYMENTS_API_PODS, "10.96.88.14", 8080));
const FRAUD_CHECK_SVC: Target = service(FRAUD_CHECK_PODS, "10.96.90.3", 8080);
const POSTGRES_SVC: Target = service(POSTGRES_PODS, "10.96.120.5", 5432);
const REDIS_SVC: Target = service(REDIS_PODS, "10.96.121.9", 6379);
const KAFKA_SVC: Target = service(KAFKA_PODS, "10.96.122.17", 9092);
const KUBE_DNS_SVC: Target = service(KUBE_DNS_PODS, "10.96.0.10", 53);
const PROMETHEUS_SVC: Target = service(PROMETHEUS_PODS, "10.96.200.4", 9090);
/// The gateway closes idle connections quickly: payments-api resolves its
/// name often.
const GATEWAY: Target = Target {
    name: "api.paygateway.example.",
    world: &[[192, 0, 2, 80], [192, 0, 2, 81]],
    keep_alive: 12 * SECOND,
    ..service(&[], "", 443)
};
const MAIL_RELAY: Target = Target {
    name: "smtp.mailrelay.example.",
    world: &[[192, 0, 2, 25]],
    ..service(&[], "", 587)
};

/// Every name DNS can answer.
const KNOWN: &[&Target] = &[
    &CART_SVC,
    &CHECKOUT_SVC,
    &CATALOG_SVC,
    &RECOMMENDATIONS_SVC,
    &PAYMENTS_API_SVC,
    &FRAUD_CHECK_SVC,
    &POSTGRES_SVC,
    &REDIS_SVC,
    &KAFKA_SVC,
    &KUBE_DNS_SVC,
    &PROMETHEUS_SVC,
    &GATEWAY,
    &MAIL_RELAY,
];

/// What Prometheus scrapes (pods found by service discovery, no DNS).
/// Nothing listens on Kafka's exporter port: those connections are refused.
const SCRAPES: &[(&[Pod], u32, bool)] = &[
    (FRONTEND_PODS, 9102, true),
    (CATALOG_PODS, 9102, true),
    (PAYMENTS_API_PODS, 9102, true),
    (KUBE_DNS_PODS, 9153, true),
    (KUBE_STATE_METRICS_PODS, 8080, true),
    (KAFKA_PODS, 9308, false),
];

/// Workloads whose resolver asks AAAA next to A.
fn asks_aaaa(app: &App) -> bool {
    matches!(app.workload, "frontend" | "payments-api" | "grafana")
}

/// One conversation's two ends and the probes that report it.
#[derive(Debug)]
struct Path {
    talk: Conversation,
    rtt: i64,
    /// Each probe's view, with the one-way delay from the client to it.
    views: Vec<(View, i64)>,
}

impl Path {
    /// A path between two endpoints (each with its node, when a pod). The
    /// client's node reports it; the server's node too when asked, or when
    /// the client is outside (no probe there).
    fn new(
        (client, client_node): (Endpoint, Option<&'static str>),
        (server, server_node): (Endpoint, Option<&'static str>),
        protocol: Protocol,
        rtt: i64,
        both_ends: bool,
    ) -> Self {
        let mut views = Vec::with_capacity(2);
        if let Some(node) = client_node {
            views.push((View::client(node), 0));
        }
        if let Some(node) = server_node
            && (both_ends || client_node.is_none())
        {
            views.push((View::server(node), rtt / 2));
        }
        Self {
            talk: Conversation {
                client,
                server,
                protocol,
            },
            rtt,
            views,
        }
    }

    /// The path of a pooled connection.
    fn pooled(client: &Pod, target: &Target, conn: &Conn) -> Self {
        let server = match target.pods.get(conn.server) {
            Some(pod) => (pod.service_endpoint(target.port), Some(pod.node)),
            None => {
                let ip = target.world.get(conn.server).copied().unwrap_or_default();
                (world(ip, target.port), None)
            }
        };
        Self::new(
            (client.endpoint(conn.sport), Some(client.node)),
            server,
            Protocol::Tcp,
            conn.rtt,
            target.both_ends,
        )
    }
}

/// One direction's packets in an exchange.
#[derive(Debug)]
struct Leg {
    flags: u32,
    packets: u64,
    bytes: u64,
    l7: Option<Layer7>,
}

impl Leg {
    fn tcp(flags: u32) -> Self {
        Self::data(flags, 74)
    }

    fn data(flags: u32, bytes: u64) -> Self {
        Self {
            flags,
            packets: bytes / 1_448 + 1,
            bytes,
            l7: None,
        }
    }

    fn http_request(method: &str, url: &str, bytes: u64) -> Self {
        Self {
            l7: http_request(method, url),
            ..Self::data(PSH_ACK, bytes)
        }
    }

    fn http_response(method: &str, url: &str, code: u32, bytes: u64) -> Self {
        Self {
            l7: http_response(method, url, code, 0),
            ..Self::data(PSH_ACK, bytes)
        }
    }

    fn dns(l7: Option<Layer7>, bytes: u64) -> Self {
        Self {
            l7,
            ..Self::data(0, bytes)
        }
    }
}

/// A pooled connection from one client pod to one target.
#[derive(Debug, Clone, Copy)]
struct Conn {
    /// Index into the target's pods (or outside addresses).
    server: usize,
    sport: u32,
    rtt: i64,
    /// After this, the next request opens a new connection.
    until: i64,
}

/// What a server answered, and when its reply left.
#[derive(Debug, Clone, Copy)]
struct Answer {
    done: i64,
    code: u32,
    bytes: u64,
}

/// A request that got no answer: the client gave up at this time.
#[derive(Debug, Clone, Copy)]
struct GaveUp(i64);

/// The recording, in time order.
pub fn demo_flows() -> Vec<Flow> {
    let mut demo = Demo {
        rng: Rng::new(SEED),
        rec: Recorder::default(),
        pool: BTreeMap::new(),
    };
    demo.run();
    demo.rec.finish()
}

#[derive(Debug)]
struct Demo {
    rng: Rng,
    rec: Recorder,
    /// (client pod, target name) → connection.
    pool: BTreeMap<(&'static str, String), Conn>,
}

impl Demo {
    fn run(&mut self) {
        let mut tick = 0;
        while tick < DURATION {
            let second = tick % SECOND == 0;
            if self.rng.chance(0.38) {
                let at = tick + self.rng.between(0, 250 * MS);
                self.user_visit(at);
            }
            if second {
                self.background(tick);
            }
            tick += 250 * MS;
        }
    }

    /// The cluster's own rhythm, once a second.
    fn background(&mut self, t: i64) {
        let s = t / SECOND;
        if s % 15 == 0 {
            self.scrape_all(t);
        }
        if s % 10 == 3 {
            for pod in RECOMMENDATIONS_PODS {
                let at = t + self.rng.between(0, 900 * MS);
                self.refresh_recommendations(at, pod);
            }
        }
        if s % 10 == 7 {
            let at = t + self.rng.between(0, 500 * MS);
            self.grafana_dashboard(at);
        }
        if s % 5 == 1 {
            for pod in NOTIFICATIONS_PODS {
                let at = t + self.rng.between(0, 400 * MS);
                self.notifications_poll(at, pod);
            }
        }
        if s % 5 == 4 {
            let pod = self.rng.pick(PAYMENTS_API_PODS);
            let at = t + self.rng.between(0, 800 * MS);
            // A failed health check is only logged.
            let _ = self.gateway_call(at, pod, "GET", "/v1/health");
        }
    }

    // --- the users and the shop ---

    /// One page view from the internet: only the frontend's node sees it.
    fn user_visit(&mut self, t: i64) {
        let user = *self.rng.pick(USERS);
        let pod = self.rng.pick(FRONTEND_PODS);
        let rtt = self.rng.log_normal(30 * MS, 0.4);
        let sport = self.rng.between(49_152, 65_535) as u32;
        let path = Path::new(
            (world(user, sport), None),
            (pod.service_endpoint(8080), Some(pod.node)),
            Protocol::Tcp,
            rtt,
            false,
        );
        let mut sent = t;
        // Browsers keep connections open between pages.
        if self.rng.chance(0.3) {
            let stack = self.rng.log_normal(25 * US, 0.3);
            sent = self.round_trip(&path, t, stack, Leg::tcp(SYN), Some(Leg::tcp(SYN_ACK)));
        }
        let (method, url) = self.page();
        self.http_on(&path, sent, Some(pod), method, &url);
    }

    fn page(&mut self) -> (&'static str, String) {
        let product = 1_000 + self.rng.below(400);
        match self.rng.below(100) {
            0..28 => ("GET", "/".to_string()),
            28..60 => ("GET", format!("/product/{product}")),
            60..74 => ("GET", "/cart".to_string()),
            74..86 => ("POST", "/cart".to_string()),
            _ => ("POST", "/checkout".to_string()),
        }
    }

    /// The frontend renders a page from its backends; without them, 503.
    fn frontend(&mut self, t: i64, pod: &'static Pod, method: &str, url: &str) -> Answer {
        let session = format!("{:04x}", self.rng.below(0x10000));
        let product = url.strip_prefix("/product/").unwrap_or("");
        let recommendations = |query: String| {
            let url = format!("/api/recommendations?{query}");
            (&RECOMMENDATIONS_SVC, "GET", url)
        };
        let calls: Vec<(&Target, &str, String)> = match (method, url) {
            ("GET", "/") => vec![
                (&CATALOG_SVC, "GET", "/api/products?featured=true".into()),
                recommendations(format!("session={session}")),
            ],
            ("GET", "/cart") => vec![(&CART_SVC, "GET", format!("/api/cart/{session}"))],
            ("POST", "/cart") => vec![(&CART_SVC, "POST", format!("/api/cart/{session}/items"))],
            ("POST", _) => vec![(&CHECKOUT_SVC, "POST", "/api/checkout".into())],
            _ => vec![
                (&CATALOG_SVC, "GET", format!("/api/products/{product}")),
                recommendations(format!("product={product}")),
            ],
        };
        let mut at = t + self.rng.log_normal(MS, 0.4);
        let mut code = if method == "POST" { 201 } else { 200 };
        let mut bytes = 6_000;
        for (target, call_method, call_url) in calls {
            let name = target.short_name();
            match self.http(at, pod, target, name, call_method, &call_url) {
                Ok(answer) => {
                    at = answer.done;
                    bytes += answer.bytes;
                    // Recommendations are optional: the page renders without.
                    if answer.code >= 500 && name != "recommendations" {
                        code = 502;
                    }
                }
                Err(GaveUp(at)) => {
                    return Answer {
                        done: at + self.rng.log_normal(400 * US, 0.3),
                        code: 503,
                        bytes: 180,
                    };
                }
            }
        }
        Answer {
            done: at + self.rng.log_normal(2 * MS, 0.5),
            code,
            bytes: if code >= 500 { 180 } else { bytes },
        }
    }

    /// What a server pod does with one HTTP request arriving at `t`.
    fn serve(&mut self, t: i64, pod: &'static Pod, method: &str, url: &str) -> Answer {
        let ok = |done, bytes| Answer {
            done,
            code: if method == "POST" { 201 } else { 200 },
            bytes,
        };
        let fail = |done, code| Answer {
            done,
            code,
            bytes: 160,
        };
        if url == "/metrics" {
            let median = if pod.app.workload == "kube-state-metrics" {
                40 * MS
            } else {
                5 * MS
            };
            return ok(
                t + self.rng.log_normal(median, 0.4),
                12_000 + self.rng.below(60_000),
            );
        }
        match pod.app.workload {
            "catalog" => {
                let mut at = t + 200 * US;
                // A cache miss reads the database; the FQDN without its final
                // dot goes through the whole search path first.
                if self.rng.chance(0.35) {
                    let name = "postgres.data.svc.cluster.local";
                    let db = self.rng.log_normal(2 * MS, 0.5);
                    match self.tcp(at, pod, &POSTGRES_SVC, name, db, (220, 3_000)) {
                        Ok(done) => at = done,
                        Err(GaveUp(at)) => return fail(at, 500),
                    }
                }
                ok(
                    at + self.rng.log_normal(11 * MS, 0.82),
                    4_000 + self.rng.below(9_000),
                )
            }
            "recommendations" => {
                if self.rng.chance(0.015) {
                    return fail(t + self.rng.log_normal(3 * MS, 0.4), 503);
                }
                ok(
                    t + self.rng.log_normal(30 * MS, 0.5),
                    1_500 + self.rng.below(1_500),
                )
            }
            "cart" => {
                let (redis, at) = (self.rng.log_normal(500 * US, 0.4), t + 100 * US);
                match self.tcp(at, pod, &REDIS_SVC, "redis.data", redis, (90, 600)) {
                    Ok(done) => ok(done + self.rng.log_normal(3 * MS, 0.45), 900),
                    Err(GaveUp(at)) => fail(at, 500),
                }
            }
            "frontend" => self.frontend(t, pod, method, url),
            "checkout" => self.checkout(t, pod),
            "payments-api" => self.charge(t, pod),
            "fraud-check" => {
                let (redis, at) = (self.rng.log_normal(400 * US, 0.4), t + 100 * US);
                match self.tcp(at, pod, &REDIS_SVC, "redis.data", redis, (120, 400)) {
                    Ok(done) => ok(done + self.rng.log_normal(18 * MS, 0.4), 240),
                    Err(GaveUp(at)) => fail(at, 500),
                }
            }
            "prometheus" => ok(
                t + self.rng.log_normal(25 * MS, 0.7),
                6_000 + self.rng.below(30_000),
            ),
            _ => ok(t + self.rng.log_normal(5 * MS, 0.5), 400),
        }
    }

    fn checkout(&mut self, t: i64, pod: &'static Pod) -> Answer {
        let cart = format!("/api/cart/{:04x}", self.rng.below(0x10000));
        let steps = [
            (&CART_SVC, "cart", "GET", cart.as_str()),
            (
                &PAYMENTS_API_SVC,
                "payments-api.payments",
                "POST",
                "/v1/charges",
            ),
        ];
        let mut at = t + 500 * US;
        for (target, name, method, url) in steps {
            match self.http(at, pod, target, name, method, url) {
                Ok(answer) if answer.code < 500 => at = answer.done,
                Ok(Answer { done, .. }) | Err(GaveUp(done)) => {
                    return Answer {
                        done: done + MS,
                        code: 502,
                        bytes: 200,
                    };
                }
            }
        }
        let db = self.rng.log_normal(3 * MS, 0.5);
        if let Ok(done) = self.tcp(at, pod, &POSTGRES_SVC, "postgres.data", db, (600, 300)) {
            at = done;
        }
        let kafka = self.rng.log_normal(4 * MS, 0.6);
        if let Ok(done) = self.tcp(at, pod, &KAFKA_SVC, "kafka.data", kafka, (900, 120)) {
            at = done;
        }
        Answer {
            done: at + self.rng.log_normal(MS, 0.3),
            code: 201,
            bytes: 700,
        }
    }

    /// payments-api: score the charge, then ask the gateway.
    fn charge(&mut self, t: i64, pod: &'static Pod) -> Answer {
        let fail = |done| Answer {
            done,
            code: 503,
            bytes: 160,
        };
        let at = match self.http(
            t + 300 * US,
            pod,
            &FRAUD_CHECK_SVC,
            "fraud-check",
            "POST",
            "/v1/score",
        ) {
            Ok(answer) => answer.done,
            Err(GaveUp(at)) => return fail(at),
        };
        if self.rng.chance(0.025) {
            return fail(at + self.rng.log_normal(8 * MS, 0.5));
        }
        match self.gateway_call(at, pod, "POST", "/v1/charges") {
            Ok(done) => Answer {
                done: done + self.rng.log_normal(2 * MS, 0.3),
                code: 201,
                bytes: 520,
            },
            Err(GaveUp(at)) => fail(at + MS),
        }
    }

    /// payments-api → the gateway over TLS: only TCP is visible. Its client
    /// names the gateway fully qualified (no search path) and retries a
    /// failed lookup twice.
    fn gateway_call(
        &mut self,
        t: i64,
        pod: &'static Pod,
        method: &str,
        url: &str,
    ) -> Result<i64, GaveUp> {
        let gateway = if url == "/v1/health" {
            self.rng.log_normal(15 * MS, 0.3)
        } else {
            self.rng.log_normal(45 * MS, 0.85)
        };
        let bytes = if method == "POST" {
            (1_400, 900)
        } else {
            (300, 200)
        };
        let mut at = t;
        for backoff in [50 * MS, 150 * MS] {
            match self.tcp(at, pod, &GATEWAY, GATEWAY.name, gateway, bytes) {
                Err(GaveUp(gave_up)) => at = gave_up + backoff,
                done => return done,
            }
        }
        self.tcp(at, pod, &GATEWAY, GATEWAY.name, gateway, bytes)
    }

    // --- background traffic ---

    /// Recommendations rebuild their model from a few catalog pages.
    fn refresh_recommendations(&mut self, t: i64, pod: &'static Pod) {
        let mut at = t;
        for page in 1..=2 {
            let url = format!("/api/products?page={page}&limit=100");
            match self.http(at, pod, &CATALOG_SVC, "catalog.shop", "GET", &url) {
                Ok(answer) => at = answer.done + self.rng.log_normal(MS, 0.3),
                Err(_) => return,
            }
        }
    }

    fn grafana_dashboard(&mut self, t: i64) {
        let pod = &GRAFANA_PODS[0];
        let queries = [
            "/api/v1/query_range?query=rate(http_requests_total[1m])",
            "/api/v1/query_range?query=histogram_quantile(0.99,rate(http_duration_bucket[5m]))",
        ];
        let mut at = t;
        for url in queries {
            if let Ok(answer) = self.http(at, pod, &PROMETHEUS_SVC, "prometheus", "GET", url) {
                at = answer.done + 200 * US;
            }
        }
    }

    /// A consumer's fetch (a long poll), and now and then an email to send.
    fn notifications_poll(&mut self, t: i64, pod: &'static Pod) {
        let wait = self.rng.log_normal(480 * MS, 0.05);
        let Ok(at) = self.tcp(t, pod, &KAFKA_SVC, "kafka.data", wait, (140, 2_400)) else {
            return;
        };
        if self.rng.chance(0.3) {
            let smtp = self.rng.log_normal(120 * MS, 0.4);
            let _ = self.tcp(
                at + MS,
                pod,
                &MAIL_RELAY,
                "smtp.mailrelay.example",
                smtp,
                (4_200, 300),
            );
        }
    }

    /// Every scrape target in turn, spread over the interval.
    fn scrape_all(&mut self, t: i64) {
        let prometheus = &PROMETHEUS_PODS[0];
        let mut at = t;
        for (pods, port, listening) in SCRAPES {
            for pod in pods.iter() {
                at += self.rng.between(150 * MS, 200 * MS);
                let rtt = self.cluster_rtt(prometheus.node, pod.node);
                // One kept-alive connection per target; a refused one is new
                // every time.
                let sport = if *listening {
                    40_000 + u32::from(pod.ip[2]) * 256 + u32::from(pod.ip[3])
                } else {
                    self.rng.between(32_768, 60_999) as u32
                };
                let path = Path::new(
                    (prometheus.endpoint(sport), Some(prometheus.node)),
                    (pod.endpoint(*port), Some(pod.node)),
                    Protocol::Tcp,
                    rtt,
                    false,
                );
                if !*listening {
                    // The kernel answers a SYN to a closed port with RST.
                    self.round_trip(&path, at, 10 * US, Leg::tcp(SYN), Some(Leg::tcp(RST_ACK)));
                    continue;
                }
                self.http_on(&path, at, Some(pod), "GET", "/metrics");
            }
        }
    }

    // --- connections, requests and DNS ---

    /// An HTTP request from `client` to `target` (reached by `name`).
    fn http(
        &mut self,
        t: i64,
        client: &'static Pod,
        target: &Target,
        name: &str,
        method: &str,
        url: &str,
    ) -> Result<Answer, GaveUp> {
        let (path, ready, server) = self.connect(t, client, target, name)?;
        Ok(self.http_on(&path, ready, target.pods.get(server), method, url))
    }

    /// One HTTP request sent over `path` at `sent` and handled by `server`:
    /// the answer as the client receives it.
    fn http_on(
        &mut self,
        path: &Path,
        sent: i64,
        server: Option<&'static Pod>,
        method: &str,
        url: &str,
    ) -> Answer {
        let arrive = sent + path.rtt / 2;
        let answer = match server {
            Some(pod) => self.serve(arrive, pod, method, url),
            None => Answer {
                done: arrive + MS,
                code: 200,
                bytes: 200,
            },
        };
        let request = Leg::http_request(method, url, 300 + self.rng.below(500));
        let response = Leg::http_response(method, url, answer.code, answer.bytes);
        let back = self.round_trip(path, sent, answer.done - arrive, request, Some(response));
        Answer {
            done: back,
            ..answer
        }
    }

    /// A request without visible L7 (a database, a broker, TLS): one packet
    /// burst each way, the server busy for `server_time`.
    fn tcp(
        &mut self,
        t: i64,
        client: &'static Pod,
        target: &Target,
        name: &str,
        server_time: i64,
        (out, back): (u64, u64),
    ) -> Result<i64, GaveUp> {
        let (path, ready, _) = self.connect(t, client, target, name)?;
        let (out, back) = (Leg::data(PSH_ACK, out), Leg::data(PSH_ACK, back));
        Ok(self.round_trip(&path, ready, server_time, out, Some(back)))
    }

    /// The pooled connection to `target`, opening one (name lookup, then
    /// handshake) when there is none or it has aged out. Returns the path,
    /// when the client can send, and the server's index in the target.
    fn connect(
        &mut self,
        t: i64,
        client: &'static Pod,
        target: &Target,
        name: &str,
    ) -> Result<(Path, i64, usize), GaveUp> {
        let key = (client.name, target.fqdn());
        let mut ready = t;
        let conn = match self.pool.get(&key) {
            Some(conn) if conn.until > t => *conn,
            // Connections opened before the recording began: the frontend's
            // pods were just restarted with the new policy, everyone else's
            // pools are warm.
            None if client.app.workload != "frontend" => self.new_conn(t, client, target),
            _ => {
                ready = self.resolve(t, client, name)?;
                let conn = self.new_conn(ready, client, target);
                let path = Path::pooled(client, target, &conn);
                let stack = self.rng.log_normal(20 * US, 0.3);
                ready =
                    self.round_trip(&path, ready, stack, Leg::tcp(SYN), Some(Leg::tcp(SYN_ACK)));
                conn
            }
        };
        self.pool.insert(key, conn);
        let path = Path::pooled(client, target, &conn);
        Ok((path, ready + self.rng.log_normal(30 * US, 0.3), conn.server))
    }

    fn new_conn(&mut self, t: i64, client: &Pod, target: &Target) -> Conn {
        let count = target.pods.len().max(target.world.len()) as u64;
        let server = self.rng.below(count) as usize;
        let rtt = match target.pods.get(server) {
            Some(pod) => self.cluster_rtt(client.node, pod.node),
            None => self.rng.log_normal(35 * MS, 0.25),
        };
        Conn {
            server,
            sport: self.rng.between(32_768, 60_999) as u32,
            rtt,
            until: t + self.rng.between(target.keep_alive / 4, target.keep_alive),
        }
    }

    /// Resolves `name` as a pod's resolver does (ndots:5, search path of its
    /// namespace): when the answer arrived, or when the client gave up.
    fn resolve(&mut self, t: i64, client: &'static Pod, name: &str) -> Result<i64, GaveUp> {
        let dns = self.rng.pick(KUBE_DNS_PODS);
        let sport = self.rng.between(32_768, 60_999) as u32;
        let rtt = self.cluster_rtt(client.node, dns.node);
        let path = Path::new(
            (client.endpoint(sport), Some(client.node)),
            (dns.service_endpoint(53), Some(dns.node)),
            Protocol::Udp,
            rtt,
            false,
        );
        let qtypes: &[u32] = if asks_aaaa(client.app) {
            &[QTYPE_A, QTYPE_AAAA]
        } else {
            &[QTYPE_A]
        };
        let mut at = t;
        for candidate in search_list(name, client.app.namespace) {
            let queries: Vec<Dns> = qtypes
                .iter()
                .map(|&qtype| Dns {
                    query: candidate.clone(),
                    qtype,
                    id: self.rng.below(65_536) as u32,
                    ..Default::default()
                })
                .collect();
            if client.app.workload == "frontend" && at < FIX_AT {
                for query in queries {
                    let f = self.rec.dropped(at, &View::client(client.node), &path.talk);
                    f.drop_reason = DROP_REASON.to_string();
                    f.policy_reason = DROP_POLICY.to_string();
                    f.l7 = dns_request(query);
                }
                return Err(GaveUp(
                    t + FRONTEND_DEADLINE + self.rng.log_normal(5 * MS, 0.5),
                ));
            }
            let (rcode, ips) = self.lookup(&candidate, at);
            let mut done = at;
            for query in queries {
                let server_time = self.dns_server_time(at + rtt / 2, dns, &query, rcode);
                let mut answer = query.clone();
                answer.rcode = rcode;
                if rcode == RCODE_NOERROR && query.qtype == QTYPE_A {
                    answer.ips = ips.clone();
                    answer.ttl = 30;
                }
                let bytes = 60 + query.query.len() as u64;
                let out = Leg::dns(dns_request(query), bytes);
                let answer_bytes = bytes + 12 + 16 * answer.ips.len() as u64;
                let back = Leg::dns(dns_response(answer, 0), answer_bytes);
                done = done.max(self.round_trip(&path, at, server_time, out, Some(back)));
            }
            match rcode {
                RCODE_NOERROR => return Ok(done),
                RCODE_NXDOMAIN => at = done + 20 * US,
                _ => return Err(GaveUp(done)),
            }
        }
        Err(GaveUp(at))
    }

    /// The answer for one fully qualified name at `t`: rcode and A records.
    fn lookup(&mut self, fqdn: &str, t: i64) -> (u32, Vec<String>) {
        let Some(target) = KNOWN.iter().find(|target| target.fqdn() == fqdn) else {
            return (RCODE_NXDOMAIN, Vec::new());
        };
        if target.pods.is_empty() {
            let outage = (SERVFAIL_WINDOW.0..SERVFAIL_WINDOW.1).contains(&t);
            if fqdn == GATEWAY.name && outage && self.rng.chance(0.9) {
                return (RCODE_SERVFAIL, Vec::new());
            }
            let ips = target
                .world
                .iter()
                .map(|ip| std::net::Ipv4Addr::from(*ip).to_string());
            return (RCODE_NOERROR, ips.collect());
        }
        (RCODE_NOERROR, vec![target.cluster_ip.to_string()])
    }

    /// How long kube-dns takes; names outside the cluster are forwarded
    /// upstream (and that exchange is recorded at kube-dns's node).
    fn dns_server_time(&mut self, t: i64, dns: &'static Pod, query: &Dns, rcode: u32) -> i64 {
        if query.query.ends_with(".cluster.local.") {
            return self.rng.log_normal(250 * US, 0.6);
        }
        let sport = self.rng.between(32_768, 60_999) as u32;
        let rtt = self.rng.log_normal(1_200 * US, 0.3);
        let path = Path::new(
            (dns.endpoint(sport), Some(dns.node)),
            (world(UPSTREAM_RESOLVER, 53), None),
            Protocol::Udp,
            rtt,
            false,
        );
        let upstream = if rcode == RCODE_SERVFAIL {
            self.rng.log_normal(40 * MS, 0.4)
        } else {
            self.rng.log_normal(6 * MS, 0.7)
        };
        let mut forwarded = query.clone();
        forwarded.id = self.rng.below(65_536) as u32;
        let mut answer = forwarded.clone();
        answer.rcode = rcode;
        let bytes = 60 + query.query.len() as u64;
        let out = Leg::dns(dns_request(forwarded), bytes);
        let back = Leg::dns(dns_response(answer, 0), bytes + 40);
        let start = t + 80 * US;
        self.round_trip(&path, start, upstream, out, Some(back)) - t + 60 * US
    }

    fn cluster_rtt(&mut self, a: &str, b: &str) -> i64 {
        if a == b {
            self.rng.log_normal(45 * US, 0.3)
        } else {
            self.rng.log_normal(220 * US, 0.35)
        }
    }

    /// Records one request sent at `t` and (if any) its reply, at every
    /// probe on the path. Returns when the reply reaches the client.
    fn round_trip(
        &mut self,
        path: &Path,
        t: i64,
        server_time: i64,
        out: Leg,
        back: Option<Leg>,
    ) -> i64 {
        for (view, delay) in &path.views {
            let f = self.rec.request(t + delay, view, &path.talk);
            apply(f, &out, 0);
        }
        let arrived = t + path.rtt + server_time.max(0);
        if let Some(back) = back {
            for (view, delay) in path.views.iter().rev() {
                let at = arrived - delay;
                let f = self.rec.reply(at, view, &path.talk);
                apply(f, &back, at - (t + delay));
            }
        }
        arrived
    }
}

/// Puts a leg's packets on a record; `elapsed` is what this probe saw
/// between the request and this reply.
fn apply(flow: &mut Flow, leg: &Leg, elapsed: i64) {
    flow.packets = leg.packets;
    flow.bytes = leg.bytes;
    if flow
        .l4
        .is_some_and(|l4| l4.protocol == Protocol::Tcp as i32)
    {
        flow.l4 = if leg.flags == SYN_ACK {
            syn_ack(elapsed)
        } else {
            tcp(leg.flags)
        };
    }
    flow.l7 = leg.l7.clone();
    if let Some(l7) = flow.l7.as_mut()
        && l7.r#type == L7Type::Response as i32
    {
        l7.latency_ns = elapsed.max(0) as u64;
    }
}

/// The names a resolver with `search <ns>.svc.cluster.local svc.cluster.local
/// cluster.local` and `ndots:5` tries for `name`, in order.
fn search_list(name: &str, namespace: &str) -> Vec<String> {
    if name.ends_with('.') {
        return vec![name.to_string()];
    }
    let domains = [
        format!("{namespace}.svc.cluster.local"),
        "svc.cluster.local".to_string(),
        "cluster.local".to_string(),
    ];
    let mut list: Vec<String> = domains.iter().map(|d| format!("{name}.{d}.")).collect();
    let absolute = format!("{name}.");
    if name.matches('.').count() >= 5 {
        list.insert(0, absolute);
    } else {
        list.push(absolute);
    }
    list
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use skymap_relay::engine::pod_base_name;

    use super::*;

    const ALL_PODS: &[&[Pod]] = &[
        FRONTEND_PODS,
        CART_PODS,
        CHECKOUT_PODS,
        CATALOG_PODS,
        RECOMMENDATIONS_PODS,
        NOTIFICATIONS_PODS,
        PAYMENTS_API_PODS,
        FRAUD_CHECK_PODS,
        POSTGRES_PODS,
        REDIS_PODS,
        KAFKA_PODS,
        KUBE_DNS_PODS,
        PROMETHEUS_PODS,
        GRAFANA_PODS,
        KUBE_STATE_METRICS_PODS,
    ];

    #[test]
    fn search_list_follows_ndots_5() {
        assert_eq!(
            search_list("payments-api.payments", "shop"),
            [
                "payments-api.payments.shop.svc.cluster.local.",
                "payments-api.payments.svc.cluster.local.",
                "payments-api.payments.cluster.local.",
                "payments-api.payments.",
            ]
        );
        assert_eq!(
            search_list("api.paygateway.example.", "payments"),
            ["api.paygateway.example."]
        );
        let many_dots = search_list("a.b.c.d.e.f", "shop");
        assert_eq!(many_dots.len(), 4);
        assert_eq!(many_dots[0], "a.b.c.d.e.f.");
    }

    #[test]
    fn pods_are_named_and_placed_like_a_cluster_would() {
        let mut ips = BTreeSet::new();
        for pods in ALL_PODS {
            assert!((1..=3).contains(&pods.len()), "{pods:?}");
            for (i, pod) in pods.iter().enumerate() {
                let app = pod.app;
                match app.kind {
                    "Deployment" => {
                        assert_eq!(pod_base_name(pod.name), app.workload, "{}", pod.name);
                        assert_ne!(pod.name, app.workload);
                    }
                    "StatefulSet" => assert_eq!(pod.name, format!("{}-{i}", app.workload)),
                    kind => panic!("{}: unexpected kind {kind}", pod.name),
                }
                // Each node has its own pod CIDR: 10.244.<node>.0/24.
                let node = format!("node-{}", pod.ip[2]);
                assert_eq!((pod.ip[0], pod.ip[1], pod.node), (10, 244, node.as_str()));
                assert!(ips.insert(pod.ip), "{} reuses an address", pod.name);
            }
        }
        let workloads: BTreeSet<_> = ALL_PODS.iter().map(|p| p[0].app.workload).collect();
        assert_eq!(workloads.len(), ALL_PODS.len());
    }

    #[test]
    fn dns_names_match_the_services() {
        for target in KNOWN {
            match target.pods.first() {
                Some(pod) => {
                    let app = pod.app;
                    let fqdn = format!("{}.{}.svc.cluster.local.", app.service, app.namespace);
                    assert_eq!(target.fqdn(), fqdn);
                    assert!(target.name.is_empty());
                    assert!(target.cluster_ip.starts_with("10.96."));
                }
                None => {
                    assert!(target.name.ends_with('.'), "{}", target.name);
                    assert!(!target.world.is_empty(), "{}", target.name);
                }
            }
        }
    }
}
