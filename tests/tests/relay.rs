//! The relay over real gRPC on loopback: fake nodes stream batches in, clients
//! watch the graph, read flows and status.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use skymap_proto::v1::ingest_client::IngestClient;
use skymap_proto::v1::observer_client::ObserverClient;
use skymap_proto::v1::{
    Endpoint, Flow, FlowBatch, FlowFilter, GetFlowsRequest, GetFlowsResponse, GetGraphRequest,
    GraphEdge, GraphUpdate, Layer4, LossCounter, NodeState, ObservationPoint, Protocol,
    StatusRequest, Verdict, WatchGraphRequest, Zoom, get_flows_response,
};
use skymap_relay::server::{self, RelayConfig, RelayHandle};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const FRONTEND: [u8; 4] = [10, 244, 1, 10];
const BACKEND: [u8; 4] = [10, 244, 2, 20];
const DNS: [u8; 4] = [10, 244, 3, 30];

const METADATA: &str = r#"{"apiVersion":"v1","kind":"List","items":[
 {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}},
 {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"kube-system"}},
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"frontend-7d9f8c6b5d-abcde","namespace":"default",
   "labels":{"app":"frontend","pod-template-hash":"7d9f8c6b5d"},
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"frontend-7d9f8c6b5d","uid":"u1","controller":true}]},
   "spec":{"nodeName":"node-a","containers":[{"name":"c"}]},
   "status":{"phase":"Running","podIP":"10.244.1.10","podIPs":[{"ip":"10.244.1.10"}]}},
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"backend-0","namespace":"default",
   "labels":{"app":"backend"},
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"StatefulSet","name":"backend","uid":"u2","controller":true}]},
   "spec":{"nodeName":"node-b","containers":[{"name":"c"}]},
   "status":{"phase":"Running","podIP":"10.244.2.20","podIPs":[{"ip":"10.244.2.20"}]}},
 {"apiVersion":"v1","kind":"Pod","metadata":{"name":"coredns-5d78c9869d-x2v9q","namespace":"kube-system",
   "labels":{"k8s-app":"kube-dns","pod-template-hash":"5d78c9869d"},
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"coredns-5d78c9869d","uid":"u3","controller":true}]},
   "spec":{"nodeName":"node-c","containers":[{"name":"c"}]},
   "status":{"phase":"Running","podIP":"10.244.3.30","podIPs":[{"ip":"10.244.3.30"}]}}
]}"#;

struct Relay {
    handle: RelayHandle,
    url: String,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_relay(tick: Duration) -> Relay {
    start_relay_with(tick, |_| {}).await
}

async fn start_relay_with(tick: Duration, tune: impl FnOnce(&mut RelayConfig)) -> Relay {
    let dir = std::env::temp_dir().join(format!(
        "skymap-relay-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let metadata = dir.join("metadata.json");
    std::fs::write(&metadata, METADATA).expect("write metadata");
    let mut config = RelayConfig {
        metadata_file: Some(metadata),
        ..Default::default()
    };
    config.aggregator.tick = tick;
    tune(&mut config);
    let handle = server::start("127.0.0.1:0", config)
        .await
        .expect("relay starts");
    let url = format!("http://{}", handle.addr);
    Relay {
        handle,
        url,
        _dir: TempDir(dir),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn observer(url: &str) -> ObserverClient<Channel> {
    ObserverClient::connect(url.to_string())
        .await
        .expect("connect observer")
}

fn now_ns() -> i64 {
    skymap_relay::aggregator::now_ns()
}

fn endpoint(ip: [u8; 4], port: u32) -> Option<Endpoint> {
    Some(Endpoint {
        ip: ip.to_vec().into(),
        port,
        ..Default::default()
    })
}

/// A TCP SYN from `src` to `dst:port`, observed at `point`.
fn syn(src: [u8; 4], dst: [u8; 4], port: u32, point: ObservationPoint, sport: u32) -> Flow {
    Flow {
        time_ns: now_ns(),
        verdict: Verdict::Forwarded as i32,
        source: endpoint(src, sport),
        destination: endpoint(dst, port),
        l4: Some(Layer4 {
            protocol: Protocol::Tcp as i32,
            tcp_flags: 0x02,
            ..Default::default()
        }),
        observation_point: point as i32,
        packets: 1,
        bytes: 60,
        ..Default::default()
    }
}

fn dropped_dns(sport: u32) -> Flow {
    Flow {
        time_ns: now_ns(),
        verdict: Verdict::Dropped as i32,
        drop_reason: "NETFILTER_DROP".to_string(),
        source: endpoint(FRONTEND, sport),
        destination: endpoint(DNS, 53),
        l4: Some(Layer4 {
            protocol: Protocol::Udp as i32,
            ..Default::default()
        }),
        observation_point: ObservationPoint::KernelDrop as i32,
        packets: 1,
        bytes: 80,
        ..Default::default()
    }
}

/// An open ingest stream for one node.
struct FakeNode {
    name: String,
    tx: mpsc::Sender<FlowBatch>,
    seq: u64,
    call: tokio::task::JoinHandle<
        Result<tonic::Response<skymap_proto::v1::IngestSummary>, tonic::Status>,
    >,
}

impl FakeNode {
    async fn connect(url: &str, name: &str) -> Self {
        let mut client = IngestClient::connect(url.to_string())
            .await
            .expect("connect ingest");
        let (tx, rx) = mpsc::channel(64);
        let call = tokio::spawn(async move { client.stream(ReceiverStream::new(rx)).await });
        Self {
            name: name.to_string(),
            tx,
            seq: 0,
            call,
        }
    }

    async fn send(&mut self, flows: Vec<Flow>, losses: Vec<LossCounter>) {
        self.seq += 1;
        let batch = FlowBatch {
            node_name: self.name.clone(),
            seq: self.seq,
            flows,
            losses,
            cpu: Vec::new(),
        };
        self.tx.send(batch).await.expect("stream open");
    }

    async fn close(self) -> skymap_proto::v1::IngestSummary {
        drop(self.tx);
        self.call
            .await
            .expect("task")
            .expect("relay accepted the stream")
            .into_inner()
    }
}

/// Applies graph updates (snapshot, then deltas) to a local picture.
#[derive(Default)]
struct Picture {
    edges: HashMap<String, GraphEdge>,
    nodes: HashMap<String, skymap_proto::v1::GraphNode>,
    updates: usize,
    full: usize,
}

impl Picture {
    fn apply(&mut self, update: GraphUpdate) {
        self.updates += 1;
        if update.full {
            self.full += 1;
            self.edges.clear();
            self.nodes.clear();
        }
        for node in update.nodes {
            self.nodes.insert(node.id.clone(), node);
        }
        for edge in update.edges {
            self.edges.insert(edge.id.clone(), edge);
        }
        for id in update.removed_edges {
            self.edges.remove(&id);
        }
        for id in update.removed_nodes {
            self.nodes.remove(&id);
        }
    }

    fn edge(&self, source: &str, destination: &str) -> Option<&GraphEdge> {
        self.edges
            .values()
            .find(|e| e.source == source && e.destination == destination)
    }
}

async fn status_of(url: &str) -> skymap_proto::v1::StatusResponse {
    observer(url)
        .await
        .get_status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// Polls until `check` holds, or fails after `limit`.
async fn eventually<T>(limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the relay has taken in `total` flows.
async fn until_total(url: &str, total: u64, limit: Duration) {
    eventually(limit, async || {
        (status_of(url).await.flows_total == total).then_some(())
    })
    .await;
}

/// A client whose HTTP/2 windows are `window` bytes, so that the transport
/// cannot absorb what it does not read and the relay's own buffer backs up.
async fn slow_reader(url: &str, window: u32) -> ObserverClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .initial_stream_window_size(Some(window))
        .initial_connection_window_size(Some(window))
        .connect()
        .await
        .expect("connect");
    ObserverClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_exact_counts_from_several_nodes_and_both_ends_count_once() {
    let relay = start_relay(Duration::from_millis(50)).await;
    let mut watch = observer(&relay.url)
        .await
        .watch_graph(WatchGraphRequest {
            zoom: Zoom::Workload as i32,
            namespaces: vec![],
        })
        .await
        .expect("watch")
        .into_inner();

    let mut node_a = FakeNode::connect(&relay.url, "node-a").await;
    let mut node_b = FakeNode::connect(&relay.url, "node-b").await;
    let mut node_c = FakeNode::connect(&relay.url, "node-c").await;
    // 40 connections frontend -> backend, each seen leaving node-a and
    // arriving at node-b; 7 DNS packets dropped by policy on node-a.
    for round in 0..4u32 {
        let ports = (0..10).map(|i| 40_000 + round * 10 + i);
        node_a
            .send(
                ports
                    .clone()
                    .map(|p| syn(FRONTEND, BACKEND, 8080, ObservationPoint::FromEndpoint, p))
                    .collect(),
                vec![],
            )
            .await;
        node_b
            .send(
                ports
                    .map(|p| syn(FRONTEND, BACKEND, 8080, ObservationPoint::ToEndpoint, p))
                    .collect(),
                vec![],
            )
            .await;
    }
    node_a
        .send(
            (0..7).map(|i| dropped_dns(50_000 + i % 3)).collect(),
            vec![],
        )
        .await;
    node_c.send(vec![], vec![]).await;

    let mut picture = Picture::default();
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = watch.next().await {
            picture.apply(update.expect("update"));
            let backend = picture.edge("workload:default/frontend", "workload:default/backend");
            let dns = picture.edge("workload:default/frontend", "workload:kube-system/coredns");
            if backend.is_some_and(|e| e.connections == 40 && e.seen_at_destination == 40)
                && dns.is_some_and(|e| e.drops.iter().map(|d| d.packets).sum::<u64>() == 7)
            {
                return;
            }
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "graph never reached the expected counts: {:#?}",
        picture.edges.values().collect::<Vec<_>>()
    );
    assert_eq!(picture.full, 1, "one snapshot, then deltas");
    assert!(picture.updates > 1);

    let backend = picture
        .edge("workload:default/frontend", "workload:default/backend")
        .expect("edge");
    assert_eq!(backend.port, 8080);
    assert_eq!(backend.protocol, Protocol::Tcp as i32);
    assert_eq!(backend.flows, 40, "both ends seen, each flow counted once");
    assert_eq!(backend.connections, 40);
    assert_eq!(backend.seen_at_source, 40);
    assert_eq!(backend.seen_at_destination, 40);
    assert_eq!(backend.packets, 40);
    assert_eq!(backend.bytes, 40 * 60);

    let dns = picture
        .edge("workload:default/frontend", "workload:kube-system/coredns")
        .expect("dns edge");
    assert_eq!(dns.port, 53);
    assert_eq!(dns.drops.len(), 1);
    assert_eq!(dns.drops[0].reason, "NETFILTER_DROP");
    assert_eq!(dns.drops[0].packets, 7);
    assert_eq!(dns.drops[0].flows, 3, "three distinct source ports");
    let dropped = dns
        .verdicts
        .iter()
        .find(|v| v.verdict == Verdict::Dropped as i32)
        .map(|v| v.count);
    assert_eq!(dropped, Some(7));

    let summary = node_a.close().await;
    assert_eq!(summary.batches, 5);
    assert_eq!(summary.flows, 47);
    node_b.close().await;
    node_c.close().await;
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_node_is_shown_unavailable_with_its_losses() {
    let relay = start_relay(Duration::from_millis(50)).await;
    let mut node = FakeNode::connect(&relay.url, "node-x").await;
    let losses = vec![LossCounter {
        node_name: String::new(),
        stage: "kernel-ringbuf".to_string(),
        count: 12,
    }];
    node.send(
        vec![syn(
            FRONTEND,
            BACKEND,
            8080,
            ObservationPoint::FromEndpoint,
            1,
        )],
        losses,
    )
    .await;
    let connected = eventually(Duration::from_secs(10), async || {
        let status = status_of(&relay.url).await;
        let node = status.nodes.iter().find(|n| n.name == "node-x")?.clone();
        (node.flows_total == 1).then_some(node)
    })
    .await;
    assert_eq!(connected.state, NodeState::Connected as i32);
    assert!(
        connected
            .losses
            .iter()
            .any(|l| l.stage == "kernel-ringbuf" && l.count == 12),
        "probe losses reported: {:?}",
        connected.losses
    );

    node.close().await;
    let gone = eventually(Duration::from_secs(10), async || {
        let status = status_of(&relay.url).await;
        let node = status.nodes.iter().find(|n| n.name == "node-x")?.clone();
        (node.state == NodeState::Unavailable as i32).then_some(node)
    })
    .await;
    assert!(
        gone.since_ns >= connected.since_ns,
        "unavailable since after connected"
    );
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_watcher_does_not_slow_ingest_and_catches_up_with_a_snapshot() {
    let relay = start_relay(Duration::from_millis(10)).await;
    // A watcher that never reads, with small HTTP/2 windows so that the
    // transport's buffers fill quickly and the relay's channel backs up.
    let stalled = slow_reader(&relay.url, 16 * 1024)
        .await
        .watch_graph(WatchGraphRequest::default())
        .await
        .expect("watch")
        .into_inner();

    const BATCHES: u32 = 400;
    const PER_BATCH: u32 = 500;
    const PORTS: u32 = 200;
    let mut node = FakeNode::connect(&relay.url, "node-a").await;
    let ingest = tokio::time::timeout(Duration::from_secs(60), async {
        for b in 0..BATCHES {
            // Many edges change every tick, so every delta is several KB.
            let flows = (0..PER_BATCH)
                .map(|i| {
                    let n = b * PER_BATCH + i;
                    syn(
                        FRONTEND,
                        BACKEND,
                        8000 + n % PORTS,
                        ObservationPoint::FromEndpoint,
                        n % 60_000,
                    )
                })
                .collect();
            node.send(flows, vec![]).await;
        }
        node.close().await
    })
    .await
    .expect("ingest finished although a watcher never read");
    let total = u64::from(BATCHES * PER_BATCH);
    assert_eq!(ingest.flows, total);
    until_total(&relay.url, total, Duration::from_secs(20)).await;

    // Once it reads again, the stalled watcher converges on the true counts:
    // it missed deltas, so it is sent a fresh snapshot.
    let mut picture = Picture::default();
    let mut stalled = stalled;
    let connections = |p: &Picture| p.edges.values().map(|e| e.connections).sum::<u64>();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = stalled.next().await {
            picture.apply(update.expect("update"));
            if picture.edges.len() == PORTS as usize && connections(&picture) == total {
                return;
            }
        }
    })
    .await
    .expect("stalled watcher converged");
    assert!(
        picture.full >= 2,
        "degraded to a snapshot, got {} full updates",
        picture.full
    );
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_n_is_cluster_wide_filtered_and_follow_sees_new_flows() {
    let relay = start_relay(Duration::from_millis(50)).await;
    let mut a = FakeNode::connect(&relay.url, "node-a").await;
    let mut b = FakeNode::connect(&relay.url, "node-b").await;
    // One batch at a time, so the arrival order (which the history keeps) is known.
    let arrived = async |total: u64| until_total(&relay.url, total, Duration::from_secs(10)).await;
    a.send(
        (0..30)
            .map(|i| {
                syn(
                    FRONTEND,
                    BACKEND,
                    8080,
                    ObservationPoint::FromEndpoint,
                    1000 + i,
                )
            })
            .collect(),
        vec![],
    )
    .await;
    arrived(30).await;
    b.send(
        (0..30)
            .map(|i| {
                syn(
                    FRONTEND,
                    BACKEND,
                    8080,
                    ObservationPoint::ToEndpoint,
                    2000 + i,
                )
            })
            .collect(),
        vec![],
    )
    .await;
    arrived(60).await;
    a.send((0..5).map(|i| dropped_dns(3000 + i)).collect(), vec![])
        .await;
    arrived(65).await;

    let mut client = observer(&relay.url).await;
    let collect = async |client: &mut ObserverClient<Channel>, req: GetFlowsRequest| -> Vec<Flow> {
        let mut stream = client.get_flows(req).await.expect("flows").into_inner();
        let mut flows = Vec::new();
        while let Some(item) = stream.next().await {
            if let Some(get_flows_response::Response::Flow(f)) = item.expect("item").response {
                flows.push(f);
            }
        }
        flows
    };

    let last = collect(
        &mut client,
        GetFlowsRequest {
            number: 40,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(last.len(), 40, "--last 40 across both nodes");
    assert_eq!(
        last.iter().filter(|f| f.node_name == "node-a").count(),
        5 + 5
    );
    assert_eq!(last.iter().filter(|f| f.node_name == "node-b").count(), 30);
    assert!(
        last[..5]
            .iter()
            .all(|f| f.node_name == "node-a" && f.verdict == Verdict::Forwarded as i32)
    );
    assert!(
        last[35..]
            .iter()
            .all(|f| f.verdict == Verdict::Dropped as i32),
        "newest last"
    );
    let enriched = &last[0];
    let source = enriched.source.as_ref().expect("source");
    assert_eq!(source.namespace, "default");
    assert_eq!(source.pod_name, "frontend-7d9f8c6b5d-abcde");

    let dropped = collect(
        &mut client,
        GetFlowsRequest {
            number: 1000,
            whitelist: vec![FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(dropped.len(), 5);
    assert!(dropped.iter().all(|f| f.drop_reason == "NETFILTER_DROP"));

    let bad = client
        .get_flows(GetFlowsRequest {
            whitelist: vec![FlowFilter {
                source_ip: vec!["10.0.0.300".to_string()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect_err("invalid filter refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let mut follow = client
        .get_flows(GetFlowsRequest {
            follow: true,
            whitelist: vec![FlowFilter {
                destination_port: vec![53],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    // Give the relay a moment to register the follower, then send more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.send(
        vec![syn(
            FRONTEND,
            BACKEND,
            8080,
            ObservationPoint::FromEndpoint,
            9,
        )],
        vec![],
    )
    .await;
    a.send(vec![dropped_dns(4242)], vec![]).await;
    let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("a followed flow arrives")
        .expect("stream open")
        .expect("ok");
    match next.response {
        Some(get_flows_response::Response::Flow(f)) => {
            assert_eq!(f.source.as_ref().map(|s| s.port), Some(4242));
        }
        other => panic!("expected a flow, got {other:?}"),
    }
    a.close().await;
    b.close().await;
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_or_counted_never_fatal() {
    let relay = start_relay(Duration::from_millis(50)).await;

    // A stream whose first batch names no node is refused.
    let mut nameless = FakeNode::connect(&relay.url, "").await;
    nameless.send(vec![dropped_dns(1)], vec![]).await;
    let refused = nameless.call.await.expect("task").expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Invalid flows are counted as rejected; valid ones in the same batch land.
    let mut node = FakeNode::connect(&relay.url, "node-bad").await;
    let mut odd_ip = dropped_dns(2);
    odd_ip.source = Some(Endpoint {
        ip: vec![1, 2, 3].into(),
        ..Default::default()
    });
    let mut odd_verdict = dropped_dns(3);
    odd_verdict.verdict = 42;
    node.send(vec![odd_ip, dropped_dns(4), odd_verdict], vec![])
        .await;
    node.close().await;
    let status = eventually(Duration::from_secs(10), async || {
        let status = status_of(&relay.url).await;
        let n = status.nodes.iter().find(|n| n.name == "node-bad")?.clone();
        (n.flows_total + n.rejected == 3).then_some(n)
    })
    .await;
    assert_eq!(status.rejected, 2);
    assert_eq!(status.flows_total, 1);

    // A batch larger than the relay's limit is refused, and the relay lives on.
    let mut big = FakeNode::connect(&relay.url, "node-big").await;
    let mut huge = dropped_dns(5);
    huge.interface = "x".repeat(17 * 1024 * 1024);
    big.send(vec![huge], vec![]).await;
    drop(big.tx);
    let too_big = big
        .call
        .await
        .expect("task")
        .expect_err("oversized refused");
    assert!(
        matches!(
            too_big.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::Internal
        ),
        "{too_big:?}"
    );
    assert!(
        status_of(&relay.url)
            .await
            .nodes
            .iter()
            .any(|n| n.name == "node-bad")
    );

    // Unknown zoom levels are refused, not guessed.
    let err = observer(&relay.url)
        .await
        .get_graph(GetGraphRequest {
            zoom: 9,
            namespaces: vec![],
        })
        .await
        .expect_err("bad zoom");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_port_is_a_clear_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = server::start(&addr, RelayConfig::default())
        .await
        .expect_err("port in use");
    let text = err.to_string();
    assert!(
        text.contains("cannot listen on") && text.contains(&addr),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let relay = start_relay(Duration::from_millis(50)).await;
    let channel = Channel::from_shared(relay.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "skymap.v1.Observer".to_string(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "skymap.v1.Ingest",
        "skymap.v1.Observer",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_falls_behind_is_told_what_it_lost() {
    let relay = start_relay_with(Duration::from_millis(50), |config| {
        config.aggregator.follower_buffer = 16;
    })
    .await;
    // Small HTTP/2 windows, so the transport cannot absorb what the client
    // does not read.
    let mut follow = slow_reader(&relay.url, 4 * 1024)
        .await
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(200)).await;

    const SENT: u64 = 5_000;
    let mut node = FakeNode::connect(&relay.url, "node-a").await;
    for chunk in 0..(SENT / 500) {
        let flows = (0..500)
            .map(|i| dropped_dns(10_000 + (chunk * 500 + i) as u32))
            .collect();
        node.send(flows, vec![]).await;
    }
    node.close().await;
    until_total(&relay.url, SENT, Duration::from_secs(10)).await;

    // Read what was buffered, then send one more flow: a loss is reported
    // just before the next flow the follower gets. Every flow is either
    // received or reported lost, exactly.
    let (mut received, mut lost) = (0u64, 0u64);
    let mut tally = |item: Result<GetFlowsResponse, tonic::Status>| -> Option<u32> {
        match item.expect("item").response {
            Some(get_flows_response::Response::Flow(f)) => {
                received += 1;
                f.source.map(|s| s.port)
            }
            Some(get_flows_response::Response::Lost(l)) => {
                lost += l.count;
                None
            }
            None => None,
        }
    };
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(500), follow.next()).await
    {
        tally(item);
    }
    let mut late = FakeNode::connect(&relay.url, "node-late").await;
    late.send(vec![dropped_dns(1)], vec![]).await;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("the last flow arrives")
            .expect("stream open");
        if tally(item) == Some(1) {
            break;
        }
    }
    assert!(
        lost > 0,
        "a follower that did not read lost flows (received {received})"
    );
    assert_eq!(
        received + lost,
        SENT + 1,
        "received {received}, lost {lost}"
    );
    late.close().await;
    relay.handle.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_until_bound_the_history() {
    let relay = start_relay(Duration::from_millis(50)).await;
    let mut node = FakeNode::connect(&relay.url, "node-a").await;
    let base = now_ns() - 600 * 1_000_000_000;
    let flows: Vec<Flow> = (0..10)
        .map(|i| {
            let mut f = dropped_dns(20_000 + i);
            f.time_ns = base + i64::from(i) * 60 * 1_000_000_000;
            f
        })
        .collect();
    node.send(flows, vec![]).await;
    until_total(&relay.url, 10, Duration::from_secs(10)).await;
    let mut client = observer(&relay.url).await;
    let minute = 60 * 1_000_000_000;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            since_ns: base + 3 * minute,
            until_ns: base + 6 * minute,
            ..Default::default()
        })
        .await
        .expect("flows")
        .into_inner();
    let mut ports = Vec::new();
    while let Some(item) = stream.next().await {
        if let Some(get_flows_response::Response::Flow(f)) = item.expect("item").response {
            ports.push(f.source.map(|s| s.port).unwrap_or_default());
        }
    }
    assert_eq!(ports, vec![20_003, 20_004, 20_005, 20_006]);
    node.close().await;
    relay.handle.shutdown().await.expect("clean shutdown");
}
